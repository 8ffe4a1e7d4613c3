//! HTTP header fields as they appear in a handshake head, and the checks applied to header
//! fields the application asks us to send.

use super::BuildError;
use crate::extension::{parse_extensions, Extension, ExtensionSyntaxError};

/// The header fields of a parsed request or response head, in wire order.
///
/// Names keep the spelling the peer used; every lookup compares names ASCII
/// case-insensitively (RFC 9110 §5.1). Values are raw bytes because HTTP allows non-UTF-8
/// `obs-text` in values; the `_str` helpers return only values that are valid UTF-8.
///
/// ```
/// use duplex_proto::handshake::Headers;
/// let mut h = Headers::new();
/// h.push("Connection", "keep-alive");
/// h.push("connection", "Upgrade");
/// assert_eq!(h.get("CONNECTION"), Some(&b"keep-alive"[..]));
/// assert_eq!(h.get_all("Connection").count(), 2);
/// assert!(h.contains_token("Connection", "upgrade"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, Vec<u8>)>,
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header line. Nothing is validated: this is for building test inputs and for
    /// the parsers, whose input `httparse` has already checked.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.entries.push((name.into(), value.into()));
    }

    /// Number of header lines (repeated names count once per line).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when there are no header lines.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every header line as `(name, value)`, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The value of the first line named `name`, with surrounding spaces and tabs trimmed.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.get_all(name).next()
    }

    /// Like [`get`](Self::get), but only if that value is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The values of every line named `name`, trimmed, in wire order.
    pub fn get_all<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| trim_ows(v))
    }

    /// How many lines are named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// The elements of a comma-separated list header (RFC 9110 §5.6.1), across every line named
    /// `name` as if they were joined with `,`. Elements are trimmed; empty ones are skipped.
    ///
    /// Commas inside quoted strings are not special-cased: use this only for headers whose
    /// elements are tokens (`Connection`, `Upgrade`, `Sec-WebSocket-Protocol`).
    pub fn list_items<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.get_all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim_ows)
            .filter(|item| !item.is_empty())
    }

    /// `true` if any element of the list header `name` equals `token`, compared ASCII
    /// case-insensitively (e.g. `Connection: keep-alive, Upgrade` contains `upgrade`).
    pub fn contains_token(&self, name: &str, token: &str) -> bool {
        self.list_items(name)
            .any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
    }
}

impl<N: Into<String>, V: Into<Vec<u8>>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Self {
            entries: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

/// Trims optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 §5.6.2 `token`: one or more `tchar`.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A value we may write on a header line: visible ASCII, SP, HTAB and non-ASCII (UTF-8 is
/// `obs-text` on the wire). CR, LF, NUL and the other controls are refused, since CR/LF
/// would end the line and let the value inject headers or a body.
pub(crate) fn is_safe_value(s: &str) -> bool {
    s.bytes()
        .all(|b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
}

/// Checks application-supplied header lines before they are written: names must be tokens,
/// values must be [safe](is_safe_value), and no name may be one of `reserved` (headers the
/// handshake writes itself, where a second copy would make the peer fail the handshake).
pub(crate) fn check_extra_headers(
    headers: &[(String, String)],
    reserved: &[&str],
) -> Result<(), BuildError> {
    for (name, value) in headers {
        if !is_token(name.as_bytes()) {
            return Err(BuildError::InvalidHeaderName { name: name.clone() });
        }
        if !is_safe_value(value) {
            return Err(BuildError::InvalidHeaderValue { name: name.clone() });
        }
        if reserved.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(BuildError::ReservedHeader { name: name.clone() });
        }
    }
    Ok(())
}

/// Checks that an extension can be written with [`format_extensions`] and read back: its
/// name, parameter names and parameter values must all be tokens.
///
/// [`format_extensions`]: crate::extension::format_extensions
pub(crate) fn check_extension(ext: &Extension) -> Result<(), BuildError> {
    let params_ok = ext.params.iter().all(|p| {
        is_token(p.name.as_bytes()) && p.value.as_ref().is_none_or(|v| is_token(v.as_bytes()))
    });
    if is_token(ext.name.as_bytes()) && params_ok {
        Ok(())
    } else {
        Err(BuildError::InvalidExtension {
            name: ext.name.clone(),
        })
    }
}

/// Checks a list of subprotocols to offer: each a token, no duplicates (RFC 6455 §4.1 item 10).
pub(crate) fn check_protocol_list(protocols: &[String]) -> Result<(), BuildError> {
    for (i, p) in protocols.iter().enumerate() {
        if !is_token(p.as_bytes()) {
            return Err(BuildError::InvalidProtocol {
                protocol: p.clone(),
            });
        }
        if protocols.iter().take(i).any(|q| q == p) {
            return Err(BuildError::DuplicateProtocol {
                protocol: p.clone(),
            });
        }
    }
    Ok(())
}

/// Appends `name: value\r\n`. Callers have validated both.
pub(crate) fn write_line(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Parses every `Sec-WebSocket-Extensions` line of `headers` as one list (RFC 6455 §9.1:
/// several lines mean the same as one line holding all values).
///
/// `Ok(None)` when the header is absent. A header that is present but lists no extension
/// is an error: the grammar is `1#extension`, and RFC 6455 §4.2.2 says the empty value is not
/// the same as an absent header.
pub(crate) fn parse_extension_lines(
    headers: &Headers,
    name: &str,
) -> Result<Option<Vec<Extension>>, ExtensionSyntaxError> {
    if headers.count(name) == 0 {
        return Ok(None);
    }
    let list = join_extension_lines(headers, name)?;
    if list.is_empty() {
        return Err(ExtensionSyntaxError {
            reason: "header is present but lists no extension",
        });
    }
    Ok(Some(list))
}

/// Parses and concatenates every line named `name` (absent header: empty list).
pub(crate) fn join_extension_lines(
    headers: &Headers,
    name: &str,
) -> Result<Vec<Extension>, ExtensionSyntaxError> {
    let mut all = Vec::new();
    for line in headers.get_all(name) {
        let text = std::str::from_utf8(line).map_err(|_| ExtensionSyntaxError {
            reason: "header value is not valid UTF-8",
        })?;
        all.extend(parse_extensions(text)?);
    }
    Ok(all)
}

/// Converts `httparse`'s borrowed headers into an owned [`Headers`]. The total size is bounded
/// by the head size the caller already limited.
pub(crate) fn collect(parsed: &[httparse::Header<'_>]) -> Headers {
    parsed
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extension::ExtensionParam;

    fn sample() -> Headers {
        [
            ("Host", "example.com"),
            ("connection", " keep-alive "),
            ("CONNECTION", "Upgrade"),
            ("X-Empty", ""),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn get_is_case_insensitive_and_returns_first_line() {
        let h = sample();
        assert_eq!(h.get("HOST"), Some(&b"example.com"[..]));
        assert_eq!(h.get("Connection"), Some(&b"keep-alive"[..]));
        assert_eq!(h.get_str("x-empty"), Some(""));
        assert_eq!(h.get("Missing"), None);
    }

    #[test]
    fn get_all_returns_every_line_in_order() {
        let h = sample();
        let all: Vec<_> = h.get_all("Connection").collect();
        assert_eq!(all, vec![&b"keep-alive"[..], &b"Upgrade"[..]]);
        assert_eq!(h.count("connection"), 2);
    }

    #[test]
    fn get_str_skips_non_utf8_values() {
        let mut h = Headers::new();
        h.push("X", vec![0xff, 0xfe]);
        assert!(h.get("X").is_some());
        assert_eq!(h.get_str("X"), None);
    }

    #[test]
    fn list_items_join_repeated_lines_trim_and_skip_empty() {
        let mut h = Headers::new();
        h.push("P", " a ,, b\t");
        h.push("p", ",c,");
        let items: Vec<_> = h.list_items("P").collect();
        assert_eq!(items, vec![&b"a"[..], &b"b"[..], &b"c"[..]]);
    }

    #[test]
    fn contains_token_is_case_insensitive_across_lines() {
        let h = sample();
        assert!(h.contains_token("Connection", "upgrade"));
        assert!(h.contains_token("Connection", "KEEP-ALIVE"));
        assert!(!h.contains_token("Connection", "close"));
        // A token must match a whole element, not a substring.
        let mut h = Headers::new();
        h.push("Connection", "Upgraded");
        assert!(!h.contains_token("Connection", "Upgrade"));
    }

    #[test]
    fn trim_ows_only_trims_spaces_and_tabs() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b"\x0ba"), b"\x0ba");
    }

    #[test]
    fn extra_headers_reject_cr_lf_in_value_and_name() {
        let bad_value = [("X-A".to_owned(), "ok\r\nInjected: 1".to_owned())];
        assert_eq!(
            check_extra_headers(&bad_value, &[]),
            Err(BuildError::InvalidHeaderValue { name: "X-A".into() })
        );
        let bad_name = [("X-A\r\nB".to_owned(), "v".to_owned())];
        assert!(matches!(
            check_extra_headers(&bad_name, &[]),
            Err(BuildError::InvalidHeaderName { .. })
        ));
        let nul = [("X".to_owned(), "a\0b".to_owned())];
        assert!(check_extra_headers(&nul, &[]).is_err());
    }

    #[test]
    fn extra_headers_allow_utf8_and_tabs_but_not_reserved_names() {
        let ok = [("X-Name".to_owned(), "caf\u{e9}\tbar".to_owned())];
        assert_eq!(check_extra_headers(&ok, &["Upgrade"]), Ok(()));
        let reserved = [("upgrade".to_owned(), "h2c".to_owned())];
        assert_eq!(
            check_extra_headers(&reserved, &["Upgrade"]),
            Err(BuildError::ReservedHeader {
                name: "upgrade".into()
            })
        );
    }

    #[test]
    fn extension_params_must_be_tokens() {
        let mut e = Extension {
            name: "x-ext".into(),
            params: vec![ExtensionParam {
                name: "a".into(),
                value: Some("1".into()),
            }],
        };
        assert_eq!(check_extension(&e), Ok(()));
        e.params[0].value = Some("1\r\nX: y".into());
        assert!(check_extension(&e).is_err());
        e.params[0].value = None;
        e.name = "bad name".into();
        assert!(check_extension(&e).is_err());
    }

    #[test]
    fn protocol_list_must_be_unique_tokens() {
        assert_eq!(check_protocol_list(&["a".into(), "b.v2".into()]), Ok(()));
        assert!(matches!(
            check_protocol_list(&["a".into(), "a".into()]),
            Err(BuildError::DuplicateProtocol { .. })
        ));
        assert!(matches!(
            check_protocol_list(&["a b".into()]),
            Err(BuildError::InvalidProtocol { .. })
        ));
        assert!(check_protocol_list(&[String::new()]).is_err());
    }
}
