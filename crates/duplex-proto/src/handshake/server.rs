//! Server side of the opening handshake: read the client's request (RFC 6455 §4.2.1), answer
//! it with `101 Switching Protocols` (§4.2.2) or an HTTP error.

use std::collections::HashSet;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

use super::headers::{self, Headers};
use super::{
    accept_key, bounded, classify, head_window, reason_phrase, BuildError, HandshakeLimits,
    HeadError, WEBSOCKET_VERSION,
};
use crate::extension::{format_extensions, Extension, ExtensionSyntaxError};

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

/// What the server agrees to, for [`accept_response`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accept {
    /// The chosen subprotocol: one of [`ClientOffer::protocols`], or `None` (then no
    /// `Sec-WebSocket-Protocol` header is sent, RFC 6455 §4.2.2). See [`select_protocol`].
    pub protocol: Option<String>,
    /// The accepted extensions with the parameters the server answers with; each name must
    /// be one the client offered. Empty: no `Sec-WebSocket-Extensions` header.
    pub extensions: Vec<Extension>,
    /// Further header lines, e.g. `Set-Cookie`. Headers the 101 writes itself (`Upgrade`,
    /// `Connection`, `Sec-WebSocket-*`) and body framing headers are refused.
    pub headers: Vec<(String, String)>,
}

/// Headers [`accept_response`] writes itself, or that a 101 must not carry.
const ACCEPT_RESERVED: &[&str] = &[
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Version",
    "Content-Length",
    "Transfer-Encoding",
];

/// Builds the `101 Switching Protocols` response accepting `offer` (RFC 6455 §4.2.2 step 5).
///
/// CR/LF policy: application-supplied values are refused, never stripped or escaped. A
/// header name that is not a token, a value with CR, LF or another control character, a
/// subprotocol that is not a token or was not offered, or an extension that was not offered
/// or cannot be formatted as tokens gives a [`BuildError`] and no bytes.
///
/// ```
/// # use duplex_proto::handshake::{accept_response, Accept, ClientOffer};
/// let offer = ClientOffer { key: "dGhlIHNhbXBsZSBub25jZQ==".into(),
///     protocols: vec!["chat".into()], extensions: vec![] };
/// let accept = Accept { protocol: Some("chat".into()), ..Accept::default() };
/// let bytes = accept_response(&offer, &accept)?;
/// let text = String::from_utf8(bytes)?;
/// assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
/// assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn accept_response(offer: &ClientOffer, accept: &Accept) -> Result<Vec<u8>, BuildError> {
    if let Some(p) = &accept.protocol {
        if !headers::is_token(p.as_bytes()) {
            return Err(BuildError::InvalidProtocol {
                protocol: p.clone(),
            });
        }
        if !offer.protocols.contains(p) {
            return Err(BuildError::ProtocolNotOffered {
                protocol: p.clone(),
            });
        }
    }
    for ext in &accept.extensions {
        headers::check_extension(ext)?;
        if !offer.extensions.iter().any(|o| o.name == ext.name) {
            return Err(BuildError::ExtensionNotOffered {
                name: ext.name.clone(),
            });
        }
    }
    headers::check_extra_headers(&accept.headers, ACCEPT_RESERVED)?;

    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    headers::write_line(&mut out, "Upgrade", "websocket");
    headers::write_line(&mut out, "Connection", "Upgrade");
    headers::write_line(
        &mut out,
        "Sec-WebSocket-Accept",
        &accept_key(offer.key.as_bytes()),
    );
    if let Some(p) = &accept.protocol {
        headers::write_line(&mut out, "Sec-WebSocket-Protocol", p);
    }
    if !accept.extensions.is_empty() {
        headers::write_line(
            &mut out,
            "Sec-WebSocket-Extensions",
            &format_extensions(&accept.extensions),
        );
    }
    for (name, value) in &accept.headers {
        headers::write_line(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// Headers [`reject_response`] writes itself.
const REJECT_RESERVED: &[&str] = &["Connection", "Content-Length", "Transfer-Encoding"];

/// Builds a response refusing the handshake: `status` with `body` as its content,
/// `Content-Length`, `Connection: close`, `Content-Type: text/plain; charset=utf-8` unless
/// `extra_headers` sets its own `Content-Type`, then `extra_headers` (e.g. `Location` for a
/// redirect, `WWW-Authenticate` for 401, RFC 6455 §4.2.2 steps 2–3). Close the connection
/// after writing it.
///
/// `status` must be able to carry a body: 200..=599 except 204 and 304. Extra headers follow
/// the same refuse-don't-strip CR/LF policy as [`accept_response`]; `Connection`,
/// `Content-Length` and `Transfer-Encoding` are reserved.
///
/// ```
/// # use duplex_proto::handshake::reject_response;
/// let bytes = reject_response(403, "origin not allowed\n", &[])?;
/// assert!(bytes.starts_with(b"HTTP/1.1 403 Forbidden\r\n"));
/// assert!(bytes.ends_with(b"\r\n\r\norigin not allowed\n"));
/// # Ok::<(), duplex_proto::handshake::BuildError>(())
/// ```
pub fn reject_response(
    status: u16,
    reason_body: &str,
    extra_headers: &[(String, String)],
) -> Result<Vec<u8>, BuildError> {
    if !(200..=599).contains(&status) || status == 204 || status == 304 {
        return Err(BuildError::InvalidStatus { status });
    }
    headers::check_extra_headers(extra_headers, REJECT_RESERVED)?;
    let extra: Vec<(&str, &str)> = extra_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    Ok(write_reject(status, reason_body, "close", &extra))
}

/// Writes a rejection; `extra` has been validated (or is a constant).
fn write_reject(status: u16, body: &str, connection: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    headers::write_line(&mut out, "Connection", connection);
    if !extra
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))
    {
        headers::write_line(&mut out, "Content-Type", "text/plain; charset=utf-8");
    }
    headers::write_line(&mut out, "Content-Length", &body.len().to_string());
    for (name, value) in extra {
        headers::write_line(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// Chooses a subprotocol: the first entry of `supported` (the server's list, most preferred
/// first) that the client offered, compared exactly (case-sensitive, as clients compare the
/// echoed value). `None` if there is no overlap: then accept without a subprotocol or reject,
/// as the application prefers.
///
/// Server preference order is used, not the client's: the server is the side that knows
/// which protocol versions it serves best (e.g. the newest), and the choice then does not
/// change with the order a client happens to list its offers in. To honour the client's
/// order instead, iterate [`ClientOffer::protocols`] and pick the first one supported.
///
/// ```
/// # use duplex_proto::handshake::select_protocol;
/// let offered = vec!["v1.chat".to_string(), "v2.chat".to_string()];
/// assert_eq!(select_protocol(&offered, &["v2.chat", "v1.chat"]), Some("v2.chat"));
/// assert_eq!(select_protocol(&offered, &["v3.chat"]), None);
/// ```
pub fn select_protocol<'a>(offered: &[String], supported: &[&'a str]) -> Option<&'a str> {
    supported
        .iter()
        .copied()
        .find(|s| offered.iter().any(|o| o == s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extension::ExtensionParam;

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

    // --- responses ---

    fn offer(protocols: &[&str], extensions: &[&str]) -> ClientOffer {
        ClientOffer {
            key: KEY.into(),
            protocols: protocols.iter().map(|s| s.to_string()).collect(),
            extensions: extensions
                .iter()
                .map(|n| Extension {
                    name: n.to_string(),
                    params: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn accept_response_has_required_headers_in_rfc_example() {
        let resp = accept_response(&offer(&[], &[]), &Accept::default()).unwrap();
        assert_eq!(
            text(&resp),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn accept_response_writes_protocol_extensions_and_extra_headers() {
        let accept = Accept {
            protocol: Some("chat".into()),
            extensions: vec![Extension {
                name: "permessage-deflate".into(),
                params: vec![ExtensionParam {
                    name: "server_max_window_bits".into(),
                    value: Some("10".into()),
                }],
            }],
            headers: vec![("Set-Cookie".into(), "a=b".into())],
        };
        let resp =
            text(&accept_response(&offer(&["chat"], &["permessage-deflate"]), &accept).unwrap());
        assert!(resp.contains("\r\nSec-WebSocket-Protocol: chat\r\n"));
        assert!(resp.contains(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n"
        ));
        assert!(resp.ends_with("\r\nSet-Cookie: a=b\r\n\r\n"));
    }

    #[test]
    fn accept_response_rejects_crlf_in_extra_header() {
        let accept = Accept {
            headers: vec![("X-A".into(), "1\r\nSet-Cookie: evil=1".into())],
            ..Accept::default()
        };
        assert_eq!(
            accept_response(&offer(&[], &[]), &accept),
            Err(BuildError::InvalidHeaderValue { name: "X-A".into() })
        );
        let accept = Accept {
            headers: vec![("X-A\r\n".into(), "1".into())],
            ..Accept::default()
        };
        assert!(matches!(
            accept_response(&offer(&[], &[]), &accept),
            Err(BuildError::InvalidHeaderName { .. })
        ));
    }

    #[test]
    fn accept_response_rejects_reserved_extra_header() {
        let accept = Accept {
            headers: vec![("sec-websocket-accept".into(), "x".into())],
            ..Accept::default()
        };
        assert!(matches!(
            accept_response(&offer(&[], &[]), &accept),
            Err(BuildError::ReservedHeader { .. })
        ));
    }

    #[test]
    fn accept_response_rejects_unoffered_protocol() {
        let accept = Accept {
            protocol: Some("superchat".into()),
            ..Accept::default()
        };
        assert_eq!(
            accept_response(&offer(&["chat"], &[]), &accept),
            Err(BuildError::ProtocolNotOffered {
                protocol: "superchat".into()
            })
        );
        let accept = Accept {
            protocol: Some("chat\r\nX: y".into()),
            ..Accept::default()
        };
        assert!(matches!(
            accept_response(&offer(&["chat"], &[]), &accept),
            Err(BuildError::InvalidProtocol { .. })
        ));
    }

    #[test]
    fn accept_response_rejects_unoffered_extension() {
        let accept = Accept {
            extensions: vec![Extension {
                name: "x-other".into(),
                params: vec![],
            }],
            ..Accept::default()
        };
        assert_eq!(
            accept_response(&offer(&[], &["x-foo"]), &accept),
            Err(BuildError::ExtensionNotOffered {
                name: "x-other".into()
            })
        );
    }

    #[test]
    fn reject_response_has_body_length_and_connection_close() {
        let extra = [("WWW-Authenticate".to_string(), "Basic".to_string())];
        let resp = text(&reject_response(401, "log in first", &extra).unwrap());
        assert_eq!(
            resp,
            "HTTP/1.1 401 Unauthorized\r\n\
             Connection: close\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 12\r\n\
             WWW-Authenticate: Basic\r\n\r\n\
             log in first"
        );
    }

    #[test]
    fn reject_response_uses_app_content_type() {
        let extra = [("Content-Type".to_string(), "text/html".to_string())];
        let resp = text(&reject_response(404, "<p>no</p>", &extra).unwrap());
        assert_eq!(resp.matches("Content-Type").count(), 1);
        assert!(resp.contains("Content-Type: text/html\r\n"));
    }

    #[test]
    fn reject_response_rejects_crlf_and_reserved_headers() {
        let extra = [("Location".to_string(), "/a\r\n\r\n<html>".to_string())];
        assert!(matches!(
            reject_response(302, "", &extra),
            Err(BuildError::InvalidHeaderValue { .. })
        ));
        let extra = [("Content-Length".to_string(), "0".to_string())];
        assert!(matches!(
            reject_response(400, "", &extra),
            Err(BuildError::ReservedHeader { .. })
        ));
    }

    #[test]
    fn reject_response_rejects_status_that_cannot_carry_a_body() {
        for status in [0, 101, 204, 304, 600, 999] {
            assert_eq!(
                reject_response(status, "x", &[]),
                Err(BuildError::InvalidStatus { status })
            );
        }
    }

    #[test]
    fn error_response_body_is_the_error_text() {
        let err = HandshakeError::ConnectionNotUpgrade;
        let resp = text(&err.to_response());
        let body = format!("{err}\n");
        assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(resp.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(resp.ends_with(&format!("\r\n\r\n{body}")));
    }

    #[test]
    fn select_protocol_uses_server_preference_order() {
        let offered = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(select_protocol(&offered, &["c", "a"]), Some("c"));
        assert_eq!(select_protocol(&offered, &["x", "b"]), Some("b"));
    }

    #[test]
    fn select_protocol_is_case_sensitive_and_none_without_overlap() {
        let offered = vec!["Chat".to_string()];
        assert_eq!(select_protocol(&offered, &["chat"]), None);
        assert_eq!(select_protocol(&[], &["chat"]), None);
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
                if let Ok(offer) = validate_request(&req) {
                    proptest::prop_assert!(accept_response(&offer, &Accept::default()).is_ok());
                } else if let Err(e) = validate_request(&req) {
                    let _ = e.to_response();
                }
            }
        }
    }
}
