//! Server side of the opening handshake: read the client's request (RFC 6455 §4.2.1), answer
//! it with `101 Switching Protocols` (§4.2.2) or an HTTP error.

use std::collections::HashSet;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

use super::headers::{self, Headers};
use super::{
    bounded, classify, head_window, reason_phrase, HandshakeLimits, HeadError, WEBSOCKET_VERSION,
};
use crate::extension::{Extension, ExtensionSyntaxError};
use response::write_reject;

mod response;

pub use response::{accept_response, reject_response, select_protocol, Accept};

/// A parsed HTTP request head. Nothing in it has been validated beyond HTTP syntax; see
/// [`validate_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, as sent (methods are case-sensitive).
    pub method: String,
    /// The request target, as sent: normally `/path?query`, or an absolute
    /// `http(s)://host/path?query` URI (RFC 6455 §4.1 item 3).
    pub target: String,
    /// The minor version of `HTTP/1.x`: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    /// The header fields, in wire order.
    pub headers: Headers,
}

impl Request {
    /// The path of the target, without the query; `/` if the target has none.
    /// For an absolute target, scheme and authority are dropped.
    ///
    /// ```
    /// # use duplex_proto::handshake::{Headers, Request};
    /// let r = Request { method: "GET".into(), target: "/chat?room=1".into(), version: 1,
    ///     headers: Headers::new() };
    /// assert_eq!(r.path(), "/chat");
    /// assert_eq!(r.query(), Some("room=1"));
    /// ```
    pub fn path(&self) -> &str {
        let resource = self.resource();
        let path = resource.split_once('?').map_or(resource, |(p, _)| p);
        if path.is_empty() {
            "/"
        } else {
            path
        }
    }

    /// The query of the target (after `?`, without it), if any.
    pub fn query(&self) -> Option<&str> {
        self.resource().split_once('?').map(|(_, q)| q)
    }

    /// The `Host` value (first line, trimmed), if present and UTF-8.
    pub fn host(&self) -> Option<&str> {
        self.headers.get_str("Host")
    }

    /// The `Origin` value, if present and UTF-8. Browsers always send it; a server that
    /// serves browsers should check it (RFC 6455 §10.2) and answer 403 if it is not trusted.
    pub fn origin(&self) -> Option<&str> {
        self.headers.get_str("Origin")
    }

    /// The subprotocols offered in `Sec-WebSocket-Protocol`, in the client's preference
    /// order, from every line of that header, trimmed. Elements that are not UTF-8 are
    /// skipped here; [`validate_request`] rejects any element that is not a token.
    pub fn protocols(&self) -> Vec<&str> {
        self.headers
            .list_items("Sec-WebSocket-Protocol")
            .filter_map(|p| std::str::from_utf8(p).ok())
            .collect()
    }

    /// The extensions offered in `Sec-WebSocket-Extensions` (all lines, in order); an
    /// absent header gives an empty list.
    pub fn extensions(&self) -> Result<Vec<Extension>, ExtensionSyntaxError> {
        headers::join_extension_lines(&self.headers, "Sec-WebSocket-Extensions")
    }

    /// The target with an `http://` or `https://` scheme and authority removed.
    fn resource(&self) -> &str {
        let t = self.target.as_str();
        match absolute_form_rest(t) {
            Some(rest) => rest.find(['/', '?']).map_or("", |i| &rest[i..]),
            None => t,
        }
    }
}

/// For `http://authority...` or `https://authority...` (scheme case-insensitive), what
/// follows the `//`.
fn absolute_form_rest(target: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        if head.eq_ignore_ascii_case(scheme) {
            target.get(scheme.len()..)
        } else {
            None
        }
    })
}

/// What a valid client handshake asks for: the inputs to [`accept_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOffer {
    /// The `Sec-WebSocket-Key` value as sent (base64 of 16 bytes).
    pub key: String,
    /// Offered subprotocols, in the client's preference order.
    pub protocols: Vec<String>,
    /// Offered extensions, in the client's preference order. Their parameters are not
    /// checked here: that is up to each extension.
    pub extensions: Vec<Extension>,
}

/// Why a client's handshake request is refused. Each variant names the rule the client
/// broke; [`status`](Self::status) gives the HTTP status to answer with and
/// [`to_response`](Self::to_response) a complete response.
///
/// Peer-supplied text kept in a variant is cut to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The head is larger than [`HandshakeLimits::max_head_bytes`] (431).
    #[error("request head is larger than {limit} bytes; send fewer or shorter header fields")]
    HeadTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The head has more than [`HandshakeLimits::max_headers`] header lines (431).
    #[error("request has more than {limit} header fields; send fewer header fields")]
    TooManyHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// The head is not valid HTTP/1.x syntax (400).
    #[error("request is not valid HTTP/1.1: {reason}; send a well-formed request head (RFC 9112)")]
    Malformed {
        /// What `httparse` found wrong.
        reason: &'static str,
    },
    /// The method is not GET (405, with `Allow: GET`).
    #[error("method {method:?} cannot open a WebSocket; the handshake must be a GET request (RFC 6455 §4.1 item 2)")]
    MethodNotGet {
        /// The method sent.
        method: String,
    },
    /// The request is HTTP/1.0 (400).
    #[error("HTTP/1.{minor} cannot upgrade to WebSocket; send the handshake as HTTP/1.1 (RFC 6455 §4.1 item 2)")]
    HttpVersionTooOld {
        /// The minor version sent.
        minor: u8,
    },
    /// The target is neither an absolute path nor an absolute http/https URI (400).
    #[error("request target {target:?} is neither an absolute path nor an http/https URI (RFC 6455 §4.1 item 3)")]
    InvalidTarget {
        /// The target sent.
        target: String,
    },
    /// A required header is absent (400); `name` says which.
    #[error("request has no {name} header, which a WebSocket handshake must send (RFC 6455 §4.1)")]
    MissingHeader {
        /// The missing header.
        name: &'static str,
    },
    /// A header that must appear once appears several times (400).
    #[error(
        "request has {count} {name} headers; send it exactly once (RFC 6455 §11.3, RFC 9112 §3.2)"
    )]
    DuplicateHeader {
        /// The repeated header.
        name: &'static str,
        /// How many times it appeared.
        count: usize,
    },
    /// `Host` is empty (400).
    #[error("Host header is empty; send the server's host name (RFC 6455 §4.1 item 4)")]
    EmptyHost,
    /// `Upgrade` does not list `websocket` (400).
    #[error("Upgrade header does not contain \"websocket\"; send `Upgrade: websocket` (RFC 6455 §4.1 item 5)")]
    UpgradeNotWebSocket,
    /// `Connection` does not list `Upgrade` (400).
    #[error("Connection header does not contain the token \"Upgrade\"; send `Connection: Upgrade` (RFC 6455 §4.1 item 6)")]
    ConnectionNotUpgrade,
    /// `Sec-WebSocket-Key` is not the padded base64 encoding of exactly 16 bytes (400).
    #[error("Sec-WebSocket-Key is not 16 bytes in padded base64; send 16 random bytes, base64-encoded (24 characters) (RFC 6455 §4.1 item 7)")]
    InvalidKey,
    /// `Sec-WebSocket-Version` is absent (426, with `Sec-WebSocket-Version: 13`).
    #[error("Sec-WebSocket-Version header is missing; this server speaks version 13: retry with `Sec-WebSocket-Version: 13` (RFC 6455 §4.1 item 9)")]
    MissingVersion,
    /// `Sec-WebSocket-Version` is not 13 (426, with `Sec-WebSocket-Version: 13`).
    #[error("WebSocket version {offered:?} is not supported; this server speaks version 13: retry with `Sec-WebSocket-Version: 13` (RFC 6455 §4.4)")]
    UnsupportedVersion {
        /// The version sent.
        offered: String,
    },
    /// `Sec-WebSocket-Protocol` is not a list of unique tokens (400).
    #[error("Sec-WebSocket-Protocol {reason}; send a comma-separated list of unique tokens (RFC 6455 §4.1 item 10)")]
    InvalidProtocols {
        /// What is wrong with the list.
        reason: &'static str,
    },
    /// `Sec-WebSocket-Extensions` does not follow the RFC 6455 §9.1 grammar (400).
    #[error("{error}; send a list that follows RFC 6455 §9.1")]
    InvalidExtensions {
        /// The syntax error.
        error: ExtensionSyntaxError,
    },
}

impl HandshakeError {
    /// The HTTP status to answer with: 431 for size limits, 405 for a non-GET method, 426 for
    /// a missing or unsupported `Sec-WebSocket-Version`, 400 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            Self::HeadTooLarge { .. } | Self::TooManyHeaders { .. } => 431,
            Self::MethodNotGet { .. } => 405,
            Self::MissingVersion | Self::UnsupportedVersion { .. } => 426,
            _ => 400,
        }
    }

    /// The standard reason phrase of [`status`](Self::status), e.g. `"Upgrade Required"`.
    /// The rule that was broken is the error's `Display` text.
    pub fn reason(&self) -> &'static str {
        reason_phrase(self.status())
    }

    /// A complete HTTP response refusing the handshake: [`status`](Self::status), the
    /// `Display` text as a `text/plain` body, `Connection: close`, plus `Allow: GET` for 405
    /// and `Upgrade: websocket` / `Sec-WebSocket-Version: 13` for 426 (RFC 6455 §4.2.2,
    /// RFC 9110 §15.5.6 and §15.5.22). Close the connection after writing it.
    pub fn to_response(&self) -> Vec<u8> {
        let body = format!("{self}\n");
        match self.status() {
            405 => write_reject(405, &body, "close", &[("Allow", "GET")]),
            426 => write_reject(
                426,
                &body,
                "Upgrade, close",
                &[
                    ("Upgrade", "websocket"),
                    ("Sec-WebSocket-Version", WEBSOCKET_VERSION),
                ],
            ),
            status => write_reject(status, &body, "close", &[]),
        }
    }
}

/// Reads a request head from the start of `buf`.
///
/// * `Ok(None)`: the head is incomplete but still within `limits`; read more and call again
///   with the whole buffer.
/// * `Ok(Some((request, consumed)))`: the head is `buf[..consumed]`. Keep `buf[consumed..]`:
///   a client may already have sent WebSocket frames behind its request.
/// * `Err`: answer with [`HandshakeError::to_response`] and close. Limits are enforced on
///   incomplete heads too: once `max_head_bytes` bytes are buffered without the head ending,
///   this is [`HandshakeError::HeadTooLarge`] (431).
///
/// Only the first `max_head_bytes` of `buf` are looked at, so a call costs at most that much
/// work however much the caller has buffered.
pub fn parse_request(
    buf: &[u8],
    limits: &HandshakeLimits,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    let (window, full) = head_window(buf, limits);
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Request::new(&mut slots);
    match parsed.parse(window) {
        Ok(httparse::Status::Complete(consumed)) => {
            let request = Request {
                method: parsed.method.unwrap_or_default().to_owned(),
                target: parsed.path.unwrap_or_default().to_owned(),
                version: parsed.version.unwrap_or_default(),
                headers: headers::collect(parsed.headers),
            };
            Ok(Some((request, consumed)))
        }
        Ok(httparse::Status::Partial) if full => Err(HandshakeError::HeadTooLarge {
            limit: limits.max_head_bytes,
        }),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(match classify(e) {
            HeadError::TooManyHeaders => HandshakeError::TooManyHeaders {
                limit: limits.max_headers,
            },
            HeadError::Malformed(reason) => HandshakeError::Malformed { reason },
        }),
    }
}

/// `Sec-WebSocket-Key` decoding: standard alphabet, canonical padding required, but non-zero
/// trailing bits tolerated — the RFC's own example key `AQIDBAUGBwgJCgsMDQ4PEC==` has them.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The value of a header that must appear exactly once.
fn single<'a>(h: &'a Headers, name: &'static str) -> Result<&'a [u8], HandshakeError> {
    let mut lines = h.get_all(name);
    match (lines.next(), lines.next()) {
        (None, _) => Err(HandshakeError::MissingHeader { name }),
        (Some(v), None) => Ok(v),
        (Some(_), Some(_)) => Err(HandshakeError::DuplicateHeader {
            name,
            count: h.count(name),
        }),
    }
}

/// Checks a parsed request against RFC 6455 §4.2.1 and returns what the client offers.
///
/// Rules are checked in this order, and the first broken one is returned: method is `GET`
/// (else 405), HTTP/1.1 or later, target form, exactly one non-empty `Host`, `Upgrade` lists
/// `websocket`, `Connection` lists `Upgrade` (both ASCII case-insensitive, across repeated
/// lines), `Sec-WebSocket-Version` is `13` (else 426 — checked before the key so that a client
/// speaking another version learns which one to use), exactly one `Sec-WebSocket-Key` that
/// decodes to 16 bytes, `Sec-WebSocket-Protocol` is a list of unique tokens, and
/// `Sec-WebSocket-Extensions` parses.
///
/// The method check comes first and answers 405 with `Allow: GET` rather than 400: the
/// target exists but only supports GET, which is exactly what 405 says (RFC 9110 §15.5.6).
///
/// Origin, path and subprotocol policy are the application's: check [`Request::origin`]
/// and [`Request::path`] before accepting.
pub fn validate_request(req: &Request) -> Result<ClientOffer, HandshakeError> {
    if req.method != "GET" {
        return Err(HandshakeError::MethodNotGet {
            method: bounded(req.method.as_bytes()),
        });
    }
    if req.version < 1 {
        return Err(HandshakeError::HttpVersionTooOld { minor: req.version });
    }
    let origin_form = req.target.starts_with('/');
    let absolute_form = absolute_form_rest(&req.target)
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with(['/', '?']));
    if !origin_form && !absolute_form {
        return Err(HandshakeError::InvalidTarget {
            target: bounded(req.target.as_bytes()),
        });
    }

    let h = &req.headers;
    if single(h, "Host")?.is_empty() {
        return Err(HandshakeError::EmptyHost);
    }
    if h.count("Upgrade") == 0 {
        return Err(HandshakeError::MissingHeader { name: "Upgrade" });
    }
    if !h.contains_token("Upgrade", "websocket") {
        return Err(HandshakeError::UpgradeNotWebSocket);
    }
    if h.count("Connection") == 0 {
        return Err(HandshakeError::MissingHeader { name: "Connection" });
    }
    if !h.contains_token("Connection", "Upgrade") {
        return Err(HandshakeError::ConnectionNotUpgrade);
    }

    let version = match single(h, "Sec-WebSocket-Version") {
        Err(HandshakeError::MissingHeader { .. }) => return Err(HandshakeError::MissingVersion),
        other => other?,
    };
    if version != WEBSOCKET_VERSION.as_bytes() {
        return Err(HandshakeError::UnsupportedVersion {
            offered: bounded(version),
        });
    }

    let key = single(h, "Sec-WebSocket-Key")?;
    // 16 bytes are always 24 characters in padded base64; checking first also bounds the
    // decode below.
    let decodes_to_16 = key.len() == 24 && KEY_BASE64.decode(key).is_ok_and(|k| k.len() == 16);
    if !decodes_to_16 {
        return Err(HandshakeError::InvalidKey);
    }
    // Base64 is ASCII, so this cannot fail; stay total anyway.
    let key = String::from_utf8(key.to_vec()).map_err(|_| HandshakeError::InvalidKey)?;

    let protocols = offered_protocols(h)?;
    let extensions = headers::parse_extension_lines(h, "Sec-WebSocket-Extensions")
        .map_err(|error| HandshakeError::InvalidExtensions { error })?
        .unwrap_or_default();

    Ok(ClientOffer {
        key,
        protocols,
        extensions,
    })
}

/// The `Sec-WebSocket-Protocol` list (`1#token`, unique values), or an empty list if absent.
fn offered_protocols(h: &Headers) -> Result<Vec<String>, HandshakeError> {
    const NAME: &str = "Sec-WebSocket-Protocol";
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for item in h.list_items(NAME) {
        if !headers::is_token(item) {
            return Err(HandshakeError::InvalidProtocols {
                reason: "contains an element that is not a token",
            });
        }
        if !seen.insert(item) {
            return Err(HandshakeError::InvalidProtocols {
                reason: "lists a subprotocol more than once",
            });
        }
        // Tokens are ASCII.
        out.push(String::from_utf8_lossy(item).into_owned());
    }
    if out.is_empty() && h.count(NAME) > 0 {
        return Err(HandshakeError::InvalidProtocols {
            reason: "is present but lists no subprotocol",
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn good_headers() -> Vec<String> {
        [
            "Host: server.example.com",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ]
        .map(String::from)
        .to_vec()
    }

    fn head(request_line: &str, headers: &[String]) -> Vec<u8> {
        let mut s = format!("{request_line}\r\n");
        for h in headers {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    /// The good request with every line named `name` removed and `add` appended.
    fn with(name: &str, add: &[&str]) -> Vec<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        let mut h: Vec<String> = good_headers()
            .into_iter()
            .filter(|l| !l.to_ascii_lowercase().starts_with(&prefix))
            .collect();
        h.extend(add.iter().map(|s| s.to_string()));
        h
    }

    fn parse(bytes: &[u8]) -> Request {
        match parse_request(bytes, &HandshakeLimits::default()) {
            Ok(Some((r, _))) => r,
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    fn check(request_line: &str, headers: &[String]) -> Result<ClientOffer, HandshakeError> {
        validate_request(&parse(&head(request_line, headers)))
    }

    fn good(headers: &[String]) -> Result<ClientOffer, HandshakeError> {
        check("GET /chat HTTP/1.1", headers)
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    // --- parse_request ---

    #[test]
    fn parses_rfc_example_request() {
        let mut hs = good_headers();
        hs.push("Origin: http://example.com".into());
        hs.push("Sec-WebSocket-Protocol: chat, superchat".into());
        let bytes = head("GET /chat HTTP/1.1", &hs);
        let (req, used) = parse_request(&bytes, &HandshakeLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(req.method, "GET");
        assert_eq!(req.version, 1);
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), None);
        assert_eq!(req.host(), Some("server.example.com"));
        assert_eq!(req.origin(), Some("http://example.com"));
        assert_eq!(req.protocols(), vec!["chat", "superchat"]);
        let offer = validate_request(&req).unwrap();
        assert_eq!(offer.key, KEY);
        assert_eq!(offer.protocols, vec!["chat", "superchat"]);
        assert!(offer.extensions.is_empty());
    }

    #[test]
    fn incomplete_head_needs_more_bytes() {
        let bytes = head("GET /chat HTTP/1.1", &good_headers());
        let limits = HandshakeLimits::default();
        for cut in 0..bytes.len() {
            assert_eq!(
                parse_request(&bytes[..cut], &limits),
                Ok(None),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bytes_after_head_are_not_consumed() {
        let mut bytes = head("GET /chat HTTP/1.1", &good_headers());
        let head_len = bytes.len();
        // A masked text frame the client sent right behind its request.
        bytes.extend_from_slice(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
        let (_, used) = parse_request(&bytes, &HandshakeLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(used, head_len);
        assert_eq!(bytes[used], 0x81);
    }

    #[test]
    fn head_larger_than_limit_is_431_even_when_incomplete() {
        let limits = HandshakeLimits {
            max_head_bytes: 64,
            ..HandshakeLimits::default()
        };
        let mut bytes = b"GET /chat HTTP/1.1\r\nCookie: ".to_vec();
        bytes.resize(64, b'a');
        let err = parse_request(&bytes, &limits).unwrap_err();
        assert_eq!(err, HandshakeError::HeadTooLarge { limit: 64 });
        assert_eq!(err.status(), 431);
        // One byte less is still "need more".
        assert_eq!(parse_request(&bytes[..63], &limits), Ok(None));
    }

    #[test]
    fn complete_head_larger_than_limit_is_431() {
        let bytes = head("GET /chat HTTP/1.1", &good_headers());
        let limits = HandshakeLimits {
            max_head_bytes: bytes.len() - 1,
            ..HandshakeLimits::default()
        };
        assert!(matches!(
            parse_request(&bytes, &limits),
            Err(HandshakeError::HeadTooLarge { .. })
        ));
        let exact = HandshakeLimits {
            max_head_bytes: bytes.len(),
            ..HandshakeLimits::default()
        };
        assert!(matches!(parse_request(&bytes, &exact), Ok(Some(_))));
    }

    #[test]
    fn more_than_max_headers_is_431() {
        let bytes = head("GET /chat HTTP/1.1", &good_headers());
        let limits = HandshakeLimits {
            max_headers: 4,
            ..HandshakeLimits::default()
        };
        let err = parse_request(&bytes, &limits).unwrap_err();
        assert_eq!(err, HandshakeError::TooManyHeaders { limit: 4 });
        assert_eq!(err.status(), 431);
        assert!(text(&err.to_response())
            .starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let exact = HandshakeLimits {
            max_headers: 5,
            ..HandshakeLimits::default()
        };
        assert!(matches!(parse_request(&bytes, &exact), Ok(Some(_))));
    }

    #[test]
    fn malformed_request_line_is_400() {
        let err =
            parse_request(b"GET /chat HTTP/9.9\r\n\r\n", &HandshakeLimits::default()).unwrap_err();
        assert!(matches!(err, HandshakeError::Malformed { .. }));
        assert_eq!(err.status(), 400);
        let err = parse_request(
            b"GET /chat HTTP/1.1\r\nBad Name: x\r\n\r\n",
            &Default::default(),
        )
        .unwrap_err();
        assert!(matches!(err, HandshakeError::Malformed { .. }));
    }

    // --- validate_request ---

    #[test]
    fn rejects_non_get_with_405_and_allow_header() {
        let err = check("POST /chat HTTP/1.1", &good_headers()).unwrap_err();
        assert_eq!(
            err,
            HandshakeError::MethodNotGet {
                method: "POST".into()
            }
        );
        assert_eq!(err.status(), 405);
        assert_eq!(err.reason(), "Method Not Allowed");
        let resp = text(&err.to_response());
        assert!(resp.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(resp.contains("\r\nAllow: GET\r\n"));
        // Methods are case-sensitive (RFC 9110 §9.1).
        assert!(check("get /chat HTTP/1.1", &good_headers()).is_err());
    }

    #[test]
    fn rejects_http_1_0_with_400() {
        let err = check("GET /chat HTTP/1.0", &good_headers()).unwrap_err();
        assert_eq!(err, HandshakeError::HttpVersionTooOld { minor: 0 });
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn accepts_absolute_form_target_and_splits_path_and_query() {
        let offer = check(
            "GET http://server.example.com/chat?x=1 HTTP/1.1",
            &good_headers(),
        );
        assert!(offer.is_ok());
        let req = parse(&head(
            "GET HTTPS://server.example.com/chat?x=1 HTTP/1.1",
            &good_headers(),
        ));
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), Some("x=1"));
        let req = parse(&head("GET http://h?q HTTP/1.1", &good_headers()));
        assert_eq!(req.path(), "/");
        assert_eq!(req.query(), Some("q"));
    }

    #[test]
    fn rejects_target_that_is_not_a_path_or_http_uri() {
        for target in ["*", "server.example.com:80", "ws://h/chat", "http:///chat"] {
            let err = check(&format!("GET {target} HTTP/1.1"), &good_headers()).unwrap_err();
            assert!(
                matches!(err, HandshakeError::InvalidTarget { .. }),
                "{target}: {err:?}"
            );
        }
    }

    #[test]
    fn rejects_missing_host() {
        let err = good(&with("Host", &[])).unwrap_err();
        assert_eq!(err, HandshakeError::MissingHeader { name: "Host" });
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("Host"));
    }

    #[test]
    fn rejects_duplicate_host() {
        let err = good(&with("Host", &["Host: a", "Host: b"])).unwrap_err();
        assert_eq!(
            err,
            HandshakeError::DuplicateHeader {
                name: "Host",
                count: 2
            }
        );
    }

    #[test]
    fn rejects_empty_host() {
        assert_eq!(
            good(&with("Host", &["Host:  "])),
            Err(HandshakeError::EmptyHost)
        );
    }

    #[test]
    fn rejects_missing_upgrade_naming_the_header() {
        let err = good(&with("Upgrade", &[])).unwrap_err();
        assert_eq!(err, HandshakeError::MissingHeader { name: "Upgrade" });
        assert_eq!(err.status(), 400);
        assert!(text(&err.to_response()).contains("no Upgrade header"));
    }

    #[test]
    fn upgrade_token_list_is_case_insensitive() {
        assert!(good(&with("Upgrade", &["upgrade: h2c, WebSocket"])).is_ok());
        assert!(good(&with("Upgrade", &["Upgrade: h2c", "Upgrade: WEBSOCKET"])).is_ok());
    }

    #[test]
    fn rejects_upgrade_without_websocket_token() {
        for v in ["Upgrade: h2c", "Upgrade: websockets", "Upgrade: "] {
            assert_eq!(
                good(&with("Upgrade", &[v])),
                Err(HandshakeError::UpgradeNotWebSocket),
                "{v}"
            );
        }
    }

    #[test]
    fn rejects_missing_connection_naming_the_header() {
        let err = good(&with("Connection", &[])).unwrap_err();
        assert_eq!(err, HandshakeError::MissingHeader { name: "Connection" });
    }

    #[test]
    fn connection_token_list_is_case_insensitive() {
        assert!(good(&with("Connection", &["Connection: keep-alive, Upgrade"])).is_ok());
        assert!(good(&with("Connection", &["connection: keep-alive,upgrade"])).is_ok());
        assert!(good(&with(
            "Connection",
            &["Connection: keep-alive", "Connection: UPGRADE"]
        ))
        .is_ok());
    }

    #[test]
    fn rejects_connection_without_upgrade_token() {
        for v in [
            "Connection: keep-alive",
            "Connection: Upgraded",
            "Connection: close",
        ] {
            assert_eq!(
                good(&with("Connection", &[v])),
                Err(HandshakeError::ConnectionNotUpgrade),
                "{v}"
            );
        }
    }

    #[test]
    fn rejects_missing_version_with_426_and_version_header() {
        let err = good(&with("Sec-WebSocket-Version", &[])).unwrap_err();
        assert_eq!(err, HandshakeError::MissingVersion);
        assert_eq!(err.status(), 426);
        let resp = text(&err.to_response());
        assert!(resp.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(resp.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(resp.contains("\r\nUpgrade: websocket\r\n"));
    }

    #[test]
    fn rejects_version_8_with_426_and_version_header() {
        let err = good(&with(
            "Sec-WebSocket-Version",
            &["Sec-WebSocket-Version: 8"],
        ))
        .unwrap_err();
        assert_eq!(
            err,
            HandshakeError::UnsupportedVersion {
                offered: "8".into()
            }
        );
        assert_eq!(err.status(), 426);
        assert!(text(&err.to_response()).contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn version_is_checked_before_key() {
        // An old-protocol client without Sec-WebSocket-Key still learns the version to use.
        let hs = with("Sec-WebSocket-Version", &[]);
        let hs: Vec<String> = hs
            .into_iter()
            .filter(|l| !l.starts_with("Sec-WebSocket-Key"))
            .collect();
        assert_eq!(good(&hs), Err(HandshakeError::MissingVersion));
    }

    #[test]
    fn rejects_duplicate_version_header() {
        let err = good(&with(
            "Sec-WebSocket-Version",
            &["Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13"],
        ))
        .unwrap_err();
        assert!(matches!(err, HandshakeError::DuplicateHeader { .. }));
    }

    #[test]
    fn rejects_missing_key() {
        assert_eq!(
            good(&with("Sec-WebSocket-Key", &[])),
            Err(HandshakeError::MissingHeader {
                name: "Sec-WebSocket-Key"
            })
        );
    }

    #[test]
    fn rejects_key_sent_twice() {
        let k = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
        assert!(matches!(
            good(&with("Sec-WebSocket-Key", &[k, k])),
            Err(HandshakeError::DuplicateHeader {
                name: "Sec-WebSocket-Key",
                count: 2
            })
        ));
    }

    #[test]
    fn rejects_key_that_is_not_base64_of_16_bytes() {
        for key in [
            "dGhlIHNhbXBsZSBub25j",         // 15 bytes
            "dGhlIHNhbXBsZSBub25jZSE=",     // 17 bytes
            "dGhlIHNhbXBsZSBub25jZQ",       // unpadded
            "dGhlIHNhbXBsZSBub25jZQ=!",     // not base64
            "dGhlIHNhbXBsZSBub25jZQ==dGhl", // trailing garbage
            "",
        ] {
            let line = format!("Sec-WebSocket-Key: {key}");
            assert_eq!(
                good(&with("Sec-WebSocket-Key", &[&line])),
                Err(HandshakeError::InvalidKey),
                "{key}"
            );
        }
    }

    #[test]
    fn accepts_rfc_example_key_with_nonzero_trailing_bits() {
        let line = "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEC==";
        let offer = good(&with("Sec-WebSocket-Key", &[line])).unwrap();
        assert_eq!(offer.key, "AQIDBAUGBwgJCgsMDQ4PEC==");
    }

    #[test]
    fn protocols_come_from_several_lines_trimmed_in_order() {
        let hs = with(
            "Sec-WebSocket-Protocol",
            &[
                "Sec-WebSocket-Protocol:  chat ,superchat",
                "sec-websocket-protocol: v2.chat",
            ],
        );
        let offer = good(&hs).unwrap();
        assert_eq!(offer.protocols, vec!["chat", "superchat", "v2.chat"]);
    }

    #[test]
    fn rejects_protocol_element_that_is_not_a_token() {
        let err = good(&with(
            "Sec-WebSocket-Protocol",
            &["Sec-WebSocket-Protocol: chat, super chat"],
        ))
        .unwrap_err();
        assert!(matches!(err, HandshakeError::InvalidProtocols { .. }));
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn rejects_duplicate_protocols() {
        let err = good(&with(
            "Sec-WebSocket-Protocol",
            &[
                "Sec-WebSocket-Protocol: chat",
                "Sec-WebSocket-Protocol: chat",
            ],
        ))
        .unwrap_err();
        assert!(matches!(err, HandshakeError::InvalidProtocols { .. }));
    }

    #[test]
    fn rejects_empty_protocol_header() {
        let err = good(&with(
            "Sec-WebSocket-Protocol",
            &["Sec-WebSocket-Protocol: , "],
        ))
        .unwrap_err();
        assert!(matches!(err, HandshakeError::InvalidProtocols { .. }));
    }

    #[test]
    fn extensions_from_several_lines_are_joined() {
        let hs = with(
            "Sec-WebSocket-Extensions",
            &[
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                "Sec-WebSocket-Extensions: x-foo",
            ],
        );
        let offer = good(&hs).unwrap();
        let names: Vec<_> = offer.extensions.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["permessage-deflate", "x-foo"]);
        assert_eq!(offer.extensions[0].params[0].name, "client_max_window_bits");
    }

    #[test]
    fn malformed_extensions_header_is_400() {
        for v in ["x; =3", "x y", "   "] {
            let line = format!("Sec-WebSocket-Extensions: {v}");
            let err = good(&with("Sec-WebSocket-Extensions", &[&line])).unwrap_err();
            assert!(
                matches!(err, HandshakeError::InvalidExtensions { .. }),
                "{v}"
            );
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn peer_text_in_errors_is_bounded() {
        let method = "X".repeat(1000);
        let err = check(&format!("{method} /chat HTTP/1.1"), &good_headers()).unwrap_err();
        assert!(err.to_string().len() < 300);
    }

    proptest::proptest! {
        #[test]
        fn parse_request_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let limits = HandshakeLimits { max_head_bytes: 256, max_headers: 8 };
            if let Ok(Some((req, used))) = parse_request(&bytes, &limits) {
                proptest::prop_assert!(used <= 256 && used <= bytes.len());
                let _ = req.path();
                let _ = req.query();
                let _ = req.protocols();
                let _ = req.extensions();
                if let Err(e) = validate_request(&req) {
                    let _ = e.to_response();
                }
            }
        }

        #[test]
        fn validate_never_panics_on_mutated_valid_request(
            mut bytes in proptest::strategy::Just(head("GET /chat HTTP/1.1", &good_headers())),
            edits in proptest::collection::vec((0usize..200, proptest::num::u8::ANY), 0..8),
        ) {
            for (at, b) in edits {
                if let Some(slot) = bytes.get_mut(at) {
                    *slot = b;
                }
            }
            if let Ok(Some((req, _))) = parse_request(&bytes, &HandshakeLimits::default()) {
                match validate_request(&req) {
                    // Whatever survived validation must produce a 101 the client accepts.
                    Ok(offer) => {
                        let wire = accept_response(&offer, &Accept::default());
                        proptest::prop_assert!(wire.is_ok());
                        let wire = wire.unwrap_or_default();
                        let parsed = crate::handshake::parse_response(&wire, &HandshakeLimits::default());
                        let resp = parsed.ok().flatten().map(|(r, _)| r);
                        let ok = resp.is_some_and(|r| {
                            crate::handshake::validate_response(&r, &offer.key, &[], &[]).is_ok()
                        });
                        proptest::prop_assert!(ok);
                    }
                    Err(e) => {
                        let _ = e.to_response();
                    }
                }
            }
        }
    }
}
