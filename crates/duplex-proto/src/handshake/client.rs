//! Client side of the opening handshake: build the request (RFC 6455 §4.1), then check the
//! server's response against it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::headers::{self, Headers};
use super::{accept_key, bounded, classify, head_window, BuildError, HandshakeLimits, HeadError};
use crate::extension::{format_extensions, Extension, ExtensionSyntaxError};

/// What to ask the server for. Build the bytes with [`build_request`].
///
/// ```
/// use duplex_proto::handshake::{build_request, ClientRequest};
/// let mut req = ClientRequest::new("example.com:8080", "/chat?room=1");
/// req.protocols.push("chat".into());
/// let (bytes, key) = build_request(&req)?;
/// assert!(bytes.starts_with(b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8080\r\n"));
/// assert_eq!(key.len(), 24);
/// # Ok::<(), duplex_proto::handshake::BuildError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRequest {
    /// The `Host` value: the host, plus `:port` when the port is not the scheme's default
    /// (RFC 6455 §4.1 item 4). Visible ASCII only (use the punycode form of IDNs).
    pub host: String,
    /// The request target: path and optional query, starting with `/` (RFC 6455 §3
    /// /resource name/). Visible ASCII only, percent-encoded, no fragment. Empty means `/`.
    pub path_and_query: String,
    /// Subprotocols to offer, most preferred first; each a token, no duplicates.
    pub protocols: Vec<String>,
    /// Extensions to offer, most preferred first.
    pub extensions: Vec<Extension>,
    /// Further header lines, e.g. `Authorization` or `Cookie`. The ones the handshake writes
    /// itself (`Host`, `Upgrade`, `Connection`, `Origin`, `Sec-WebSocket-*`) and body framing
    /// headers are refused.
    pub headers: Vec<(String, String)>,
    /// The `Origin` header, which browsers send (RFC 6455 §4.1 item 8); `None` omits it.
    pub origin: Option<String>,
}

impl ClientRequest {
    /// A request for `path_and_query` on `host`, offering no subprotocol or extension.
    pub fn new(host: impl Into<String>, path_and_query: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            path_and_query: path_and_query.into(),
            ..Self::default()
        }
    }
}

/// Headers [`build_request`] writes itself, or that would give the GET a body.
const REQUEST_RESERVED: &[&str] = &[
    "Host",
    "Upgrade",
    "Connection",
    "Origin",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Accept",
    "Content-Length",
    "Transfer-Encoding",
];

/// Builds the handshake request with a fresh random `Sec-WebSocket-Key` (RFC 6455 §4.1
/// item 7) and returns the bytes to write and that key, which [`validate_response`] needs.
///
/// CR/LF policy: as on the server side, application-supplied values are refused, never
/// stripped or escaped — a host or target outside visible ASCII, a header name that is not a
/// token, a value containing CR, LF or another control character, a subprotocol that is not
/// a token or is repeated, or an extension that cannot be written as tokens gives a
/// [`BuildError`].
pub fn build_request(req: &ClientRequest) -> Result<(Vec<u8>, String), BuildError> {
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce);
    build_request_with_nonce(req, nonce)
}

/// [`build_request`] with a caller-chosen nonce, for callers that bring their own random
/// source. The nonce MUST be freshly random for each connection (RFC 6455 §4.1 item 7; §10.3
/// explains why predictable values help attacks on intermediaries).
pub fn build_request_with_nonce(
    req: &ClientRequest,
    nonce: [u8; 16],
) -> Result<(Vec<u8>, String), BuildError> {
    let visible = |s: &str| s.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if req.host.is_empty() || !visible(&req.host) {
        return Err(BuildError::InvalidHost {
            host: req.host.clone(),
        });
    }
    let target = if req.path_and_query.is_empty() {
        "/"
    } else {
        req.path_and_query.as_str()
    };
    if !target.starts_with('/') || !visible(target) || target.contains('#') {
        return Err(BuildError::InvalidTarget {
            target: req.path_and_query.clone(),
        });
    }
    if let Some(origin) = &req.origin {
        if !headers::is_safe_value(origin) {
            return Err(BuildError::InvalidHeaderValue {
                name: "Origin".into(),
            });
        }
    }
    headers::check_protocol_list(&req.protocols)?;
    for ext in &req.extensions {
        headers::check_extension(ext)?;
    }
    headers::check_extra_headers(&req.headers, REQUEST_RESERVED)?;

    let key = STANDARD.encode(nonce);
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    headers::write_line(&mut out, "Host", &req.host);
    headers::write_line(&mut out, "Upgrade", "websocket");
    headers::write_line(&mut out, "Connection", "Upgrade");
    headers::write_line(&mut out, "Sec-WebSocket-Key", &key);
    headers::write_line(&mut out, "Sec-WebSocket-Version", super::WEBSOCKET_VERSION);
    if let Some(origin) = &req.origin {
        headers::write_line(&mut out, "Origin", origin);
    }
    if !req.protocols.is_empty() {
        headers::write_line(
            &mut out,
            "Sec-WebSocket-Protocol",
            &req.protocols.join(", "),
        );
    }
    if !req.extensions.is_empty() {
        headers::write_line(
            &mut out,
            "Sec-WebSocket-Extensions",
            &format_extensions(&req.extensions),
        );
    }
    for (name, value) in &req.headers {
        headers::write_line(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    Ok((out, key))
}

/// A parsed HTTP response head. Nothing in it has been validated beyond HTTP syntax; see
/// [`validate_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The minor version of `HTTP/1.x`: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
    /// The status code.
    pub status: u16,
    /// The reason phrase (empty if the server sent none, or sent non-ASCII bytes in it).
    pub reason: String,
    /// The header fields, in wire order.
    pub headers: Headers,
}

/// What the server agreed to; the connection is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// The subprotocol in use (one the client offered), or `None`.
    pub protocol: Option<String>,
    /// The extensions in use, in the server's order, with the server's parameters. Their
    /// names were offered; checking the parameters is up to each extension.
    pub extensions: Vec<Extension>,
}

/// Why the server's response does not open a WebSocket connection. Each variant says what the
/// server did wrong; in every case the client must fail the connection (RFC 6455 §4.1).
///
/// Server-supplied text kept in a variant is cut to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientHandshakeError {
    /// The response head is larger than [`HandshakeLimits::max_head_bytes`].
    #[error("server's response head is larger than {limit} bytes")]
    HeadTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The response head has more than [`HandshakeLimits::max_headers`] header lines.
    #[error("server's response has more than {limit} header fields")]
    TooManyHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// The response head is not valid HTTP/1.x syntax.
    #[error("server's response is not valid HTTP/1.1: {reason}")]
    Malformed {
        /// What `httparse` found wrong.
        reason: &'static str,
    },
    /// The status is not 101: the server refused or redirected (RFC 6455 §4.1, response
    /// step 1). The [`Response`] headers (e.g. `Location`, `WWW-Authenticate`) tell why.
    #[error("server answered {status} {reason:?} instead of 101 Switching Protocols: it did not accept the WebSocket handshake")]
    NotSwitchingProtocols {
        /// The status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// A 101 in an HTTP/1.0 response, a version that has no protocol switching.
    #[error(
        "server sent 101 in an HTTP/1.{minor} response; switching protocols requires HTTP/1.1"
    )]
    HttpVersionTooOld {
        /// The minor version sent.
        minor: u8,
    },
    /// A header the 101 must carry is absent; `name` says which.
    #[error("server's 101 response has no {name} header, which RFC 6455 §4.2.2 requires")]
    MissingHeader {
        /// The missing header.
        name: &'static str,
    },
    /// A header that may appear only once in a response appears several times.
    #[error("server's response has {count} {name} headers; RFC 6455 §11.3 allows one")]
    DuplicateHeader {
        /// The repeated header.
        name: &'static str,
        /// How many times it appeared.
        count: usize,
    },
    /// `Upgrade` does not list `websocket` (RFC 6455 §4.1, response step 2).
    #[error("server's Upgrade header does not contain \"websocket\" (RFC 6455 §4.1)")]
    UpgradeNotWebSocket,
    /// `Connection` does not list `Upgrade` (RFC 6455 §4.1, response step 3).
    #[error("server's Connection header does not contain the token \"Upgrade\" (RFC 6455 §4.1)")]
    ConnectionNotUpgrade,
    /// `Sec-WebSocket-Accept` is not derived from our key (RFC 6455 §4.1, response step 4).
    #[error("server's Sec-WebSocket-Accept is {found:?} but our key requires {expected:?}: it did not answer this handshake")]
    AcceptMismatch {
        /// The value our key requires.
        expected: String,
        /// The value the server sent.
        found: String,
    },
    /// The server selected a subprotocol although none was offered (RFC 6455 §4.2.2).
    #[error("server selected subprotocol {protocol:?} but the client offered none")]
    ProtocolWithoutOffer {
        /// The subprotocol the server sent.
        protocol: String,
    },
    /// The server selected a subprotocol that was not offered (RFC 6455 §4.1, response
    /// step 6).
    #[error("server selected subprotocol {protocol:?}, which the client did not offer")]
    ProtocolNotOffered {
        /// The subprotocol the server sent.
        protocol: String,
    },
    /// `Sec-WebSocket-Extensions` does not follow the RFC 6455 §9.1 grammar.
    #[error("server's {error}")]
    MalformedExtensions {
        /// The syntax error.
        error: ExtensionSyntaxError,
    },
    /// The server accepted an extension that was not offered (RFC 6455 §4.1, response
    /// step 5).
    #[error("server accepted extension {name:?}, which the client did not offer")]
    ExtensionNotOffered {
        /// The extension's name.
        name: String,
    },
}

/// Reads a response head from the start of `buf`. Same contract as
/// [`parse_request`](super::parse_request): `Ok(None)` means read more; on success the head
/// is `buf[..consumed]` and `buf[consumed..]` may already hold the server's first frames;
/// limits apply to incomplete heads too.
pub fn parse_response(
    buf: &[u8],
    limits: &HandshakeLimits,
) -> Result<Option<(Response, usize)>, ClientHandshakeError> {
    let (window, full) = head_window(buf, limits);
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Response::new(&mut slots);
    match parsed.parse(window) {
        Ok(httparse::Status::Complete(consumed)) => {
            let response = Response {
                version: parsed.version.unwrap_or_default(),
                status: parsed.code.unwrap_or_default(),
                reason: parsed.reason.unwrap_or_default().to_owned(),
                headers: headers::collect(parsed.headers),
            };
            Ok(Some((response, consumed)))
        }
        Ok(httparse::Status::Partial) if full => Err(ClientHandshakeError::HeadTooLarge {
            limit: limits.max_head_bytes,
        }),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(match classify(e) {
            HeadError::TooManyHeaders => ClientHandshakeError::TooManyHeaders {
                limit: limits.max_headers,
            },
            HeadError::Malformed(reason) => ClientHandshakeError::Malformed { reason },
        }),
    }
}

/// Checks the server's response against the request we sent (RFC 6455 §4.1): `key` is the
/// one [`build_request`] returned, `offered_protocols` and `offered_extension_names` what
/// that request offered.
///
/// Checked in order: status 101 on HTTP/1.1; `Upgrade` lists `websocket` and `Connection`
/// lists `Upgrade` (ASCII case-insensitive); exactly one `Sec-WebSocket-Accept`, equal to
/// [`accept_key`]`(key)`; at most one `Sec-WebSocket-Protocol`, present only if we offered
/// some and then exactly equal to one of them; every extension named in
/// `Sec-WebSocket-Extensions` was offered (names compared exactly, so the caller can match
/// on them). Several `Sec-WebSocket-Extensions` lines are read as one list: RFC 6455 §4.2.2
/// allows splitting them although §11.3.2 says the header appears once.
///
/// ```
/// use duplex_proto::handshake::{parse_response, validate_response, HandshakeLimits};
/// let wire = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
///     Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
///     Sec-WebSocket-Protocol: chat\r\n\r\n";
/// let (resp, _) = parse_response(wire, &HandshakeLimits::default())?.expect("complete");
/// let n = validate_response(&resp, "dGhlIHNhbXBsZSBub25jZQ==", &["chat".into()], &[])?;
/// assert_eq!(n.protocol.as_deref(), Some("chat"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn validate_response(
    resp: &Response,
    key: &str,
    offered_protocols: &[String],
    offered_extension_names: &[&str],
) -> Result<Negotiated, ClientHandshakeError> {
    if resp.status != 101 {
        return Err(ClientHandshakeError::NotSwitchingProtocols {
            status: resp.status,
            reason: bounded(resp.reason.as_bytes()),
        });
    }
    if resp.version < 1 {
        return Err(ClientHandshakeError::HttpVersionTooOld {
            minor: resp.version,
        });
    }
    let h = &resp.headers;
    if h.count("Upgrade") == 0 {
        return Err(ClientHandshakeError::MissingHeader { name: "Upgrade" });
    }
    if !h.contains_token("Upgrade", "websocket") {
        return Err(ClientHandshakeError::UpgradeNotWebSocket);
    }
    if h.count("Connection") == 0 {
        return Err(ClientHandshakeError::MissingHeader { name: "Connection" });
    }
    if !h.contains_token("Connection", "Upgrade") {
        return Err(ClientHandshakeError::ConnectionNotUpgrade);
    }

    let accept =
        at_most_one(h, "Sec-WebSocket-Accept")?.ok_or(ClientHandshakeError::MissingHeader {
            name: "Sec-WebSocket-Accept",
        })?;
    let expected = accept_key(key.as_bytes());
    if accept != expected.as_bytes() {
        return Err(ClientHandshakeError::AcceptMismatch {
            expected,
            found: bounded(accept),
        });
    }

    let protocol = match at_most_one(h, "Sec-WebSocket-Protocol")? {
        None => None,
        Some(p) if offered_protocols.is_empty() => {
            return Err(ClientHandshakeError::ProtocolWithoutOffer {
                protocol: bounded(p),
            })
        }
        Some(p) => match offered_protocols.iter().find(|o| o.as_bytes() == p) {
            Some(o) => Some(o.clone()),
            None => {
                return Err(ClientHandshakeError::ProtocolNotOffered {
                    protocol: bounded(p),
                })
            }
        },
    };

    let extensions = headers::parse_extension_lines(h, "Sec-WebSocket-Extensions")
        .map_err(|error| ClientHandshakeError::MalformedExtensions { error })?
        .unwrap_or_default();
    if let Some(ext) = extensions
        .iter()
        .find(|e| !offered_extension_names.contains(&e.name.as_str()))
    {
        return Err(ClientHandshakeError::ExtensionNotOffered {
            name: bounded(ext.name.as_bytes()),
        });
    }

    Ok(Negotiated {
        protocol,
        extensions,
    })
}

/// The value of a header that may appear at most once in a response.
fn at_most_one<'a>(
    h: &'a Headers,
    name: &'static str,
) -> Result<Option<&'a [u8]>, ClientHandshakeError> {
    let mut lines = h.get_all(name);
    match (lines.next(), lines.next()) {
        (first, None) => Ok(first),
        (_, Some(_)) => Err(ClientHandshakeError::DuplicateHeader {
            name,
            count: h.count(name),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extension::ExtensionParam;
    use crate::handshake::server::{
        accept_response, parse_request, select_protocol, validate_request, Accept,
    };

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn response(status_line: &str, headers: &[&str]) -> Response {
        let mut s = format!("{status_line}\r\n");
        for h in headers {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        match parse_response(s.as_bytes(), &HandshakeLimits::default()) {
            Ok(Some((r, used))) => {
                assert_eq!(used, s.len());
                r
            }
            other => panic!("expected a complete response, got {other:?}"),
        }
    }

    fn ok_101(extra: &[&str]) -> Response {
        let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
        let mut h = vec!["Upgrade: websocket", "Connection: Upgrade", accept.as_str()];
        h.extend_from_slice(extra);
        response("HTTP/1.1 101 Switching Protocols", &h)
    }

    fn offered(ps: &[&str]) -> Vec<String> {
        ps.iter().map(|s| s.to_string()).collect()
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    // --- build_request ---

    #[test]
    fn build_request_writes_required_headers() {
        let mut req = ClientRequest::new("server.example.com", "/chat");
        req.origin = Some("http://example.com".into());
        req.protocols = offered(&["chat", "superchat"]);
        let (bytes, key) = build_request_with_nonce(&req, *b"the sample nonce").unwrap();
        assert_eq!(key, KEY);
        assert_eq!(
            text(&bytes),
            "GET /chat HTTP/1.1\r\n\
             Host: server.example.com\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Origin: http://example.com\r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\n\r\n"
        );
    }

    #[test]
    fn build_request_uses_a_fresh_16_byte_key_each_call() {
        let req = ClientRequest::new("h", "/");
        let (_, a) = build_request(&req).unwrap();
        let (_, b) = build_request(&req).unwrap();
        assert_ne!(a, b);
        assert_eq!(STANDARD.decode(&a).unwrap().len(), 16);
    }

    #[test]
    fn build_request_empty_target_means_root() {
        let (bytes, _) = build_request(&ClientRequest::new("h", "")).unwrap();
        assert!(bytes.starts_with(b"GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn build_request_rejects_crlf_in_header_name_and_value() {
        let mut req = ClientRequest::new("h", "/");
        req.headers = vec![("Cookie".into(), "a=1\r\nX-Evil: 1".into())];
        assert_eq!(
            build_request(&req),
            Err(BuildError::InvalidHeaderValue {
                name: "Cookie".into()
            })
        );
        req.headers = vec![("Cookie\n".into(), "a".into())];
        assert!(matches!(
            build_request(&req),
            Err(BuildError::InvalidHeaderName { .. })
        ));
        let mut req = ClientRequest::new("h", "/");
        req.origin = Some("http://a\r\nX: y".into());
        assert!(matches!(
            build_request(&req),
            Err(BuildError::InvalidHeaderValue { .. })
        ));
    }

    #[test]
    fn build_request_rejects_bad_host_and_target() {
        for host in ["", "a b", "a\r\nX: y", "h\u{e9}"] {
            assert!(
                matches!(
                    build_request(&ClientRequest::new(host, "/")),
                    Err(BuildError::InvalidHost { .. })
                ),
                "{host:?}"
            );
        }
        for target in ["chat", "/a b", "/a\r\n", "/a#frag", "/caf\u{e9}"] {
            assert!(
                matches!(
                    build_request(&ClientRequest::new("h", target)),
                    Err(BuildError::InvalidTarget { .. })
                ),
                "{target:?}"
            );
        }
    }

    #[test]
    fn build_request_rejects_reserved_headers() {
        let mut req = ClientRequest::new("h", "/");
        req.headers = vec![("sec-websocket-key".into(), "x".into())];
        assert!(matches!(
            build_request(&req),
            Err(BuildError::ReservedHeader { .. })
        ));
    }

    #[test]
    fn build_request_rejects_invalid_or_duplicate_protocols() {
        let mut req = ClientRequest::new("h", "/");
        req.protocols = offered(&["chat", "chat"]);
        assert!(matches!(
            build_request(&req),
            Err(BuildError::DuplicateProtocol { .. })
        ));
        req.protocols = offered(&["a,b"]);
        assert!(matches!(
            build_request(&req),
            Err(BuildError::InvalidProtocol { .. })
        ));
    }

    // --- parse_response ---

    #[test]
    fn incomplete_response_needs_more_bytes() {
        let wire = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n";
        assert_eq!(parse_response(wire, &HandshakeLimits::default()), Ok(None));
    }

    #[test]
    fn response_bytes_after_head_are_not_consumed() {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
        );
        let mut wire = head.clone().into_bytes();
        wire.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
        let (_, used) = parse_response(&wire, &HandshakeLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(used, head.len());
        assert_eq!(&wire[used..], &[0x81, 0x02, b'h', b'i']);
    }

    #[test]
    fn response_head_larger_than_limit_is_an_error_even_when_incomplete() {
        let limits = HandshakeLimits {
            max_head_bytes: 40,
            ..HandshakeLimits::default()
        };
        let mut wire = b"HTTP/1.1 101 Switching Protocols\r\nX: ".to_vec();
        wire.resize(40, b'a');
        assert_eq!(
            parse_response(&wire, &limits),
            Err(ClientHandshakeError::HeadTooLarge { limit: 40 })
        );
        assert_eq!(parse_response(&wire[..39], &limits), Ok(None));
    }

    #[test]
    fn response_with_too_many_headers_is_an_error() {
        let limits = HandshakeLimits {
            max_headers: 1,
            ..HandshakeLimits::default()
        };
        let wire = b"HTTP/1.1 101 Switching Protocols\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(
            parse_response(wire, &limits),
            Err(ClientHandshakeError::TooManyHeaders { limit: 1 })
        );
    }

    #[test]
    fn malformed_response_is_an_error() {
        assert!(matches!(
            parse_response(b"HTTP/1.1 1x1 Nope\r\n\r\n", &HandshakeLimits::default()),
            Err(ClientHandshakeError::Malformed { .. })
        ));
    }

    // --- validate_response ---

    #[test]
    fn client_accepts_rfc_example_response() {
        let n = validate_response(&ok_101(&[]), KEY, &[], &[]).unwrap();
        assert_eq!(n, Negotiated::default());
    }

    #[test]
    fn client_rejects_non_101_status_with_bounded_reason() {
        let r = response("HTTP/1.1 403 Forbidden", &["Content-Length: 0"]);
        assert_eq!(
            validate_response(&r, KEY, &[], &[]),
            Err(ClientHandshakeError::NotSwitchingProtocols {
                status: 403,
                reason: "Forbidden".into()
            })
        );
        let long = format!("HTTP/1.1 200 {}", "a".repeat(500));
        match validate_response(&response(&long, &[]), KEY, &[], &[]) {
            Err(ClientHandshakeError::NotSwitchingProtocols { status, reason }) => {
                assert_eq!(status, 200);
                assert!(reason.len() <= 64 + '…'.len_utf8());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_rejects_101_over_http_1_0() {
        let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
        let r = response(
            "HTTP/1.0 101 Switching Protocols",
            &["Upgrade: websocket", "Connection: Upgrade", &accept],
        );
        assert_eq!(
            validate_response(&r, KEY, &[], &[]),
            Err(ClientHandshakeError::HttpVersionTooOld { minor: 0 })
        );
    }

    #[test]
    fn client_rejects_missing_upgrade() {
        let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
        let r = response(
            "HTTP/1.1 101 Switching Protocols",
            &["Connection: Upgrade", &accept],
        );
        assert_eq!(
            validate_response(&r, KEY, &[], &[]),
            Err(ClientHandshakeError::MissingHeader { name: "Upgrade" })
        );
    }

    #[test]
    fn client_rejects_upgrade_without_websocket() {
        let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
        let r = response(
            "HTTP/1.1 101 Switching Protocols",
            &["Upgrade: h2c", "Connection: Upgrade", &accept],
        );
        assert_eq!(
            validate_response(&r, KEY, &[], &[]),
            Err(ClientHandshakeError::UpgradeNotWebSocket)
        );
    }

    #[test]
    fn client_upgrade_and_connection_tokens_are_case_insensitive() {
        let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
        let r = response(
            "HTTP/1.1 101 Switching Protocols",
            &[
                "upgrade: WebSocket",
                "CONNECTION: keep-alive, upgrade",
                &accept,
            ],
        );
        assert!(validate_response(&r, KEY, &[], &[]).is_ok());
    }

    #[test]
    fn client_rejects_connection_without_upgrade() {
        let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
        let r = response(
            "HTTP/1.1 101 Switching Protocols",
            &["Upgrade: websocket", "Connection: keep-alive", &accept],
        );
        assert_eq!(
            validate_response(&r, KEY, &[], &[]),
            Err(ClientHandshakeError::ConnectionNotUpgrade)
        );
        let r = response(
            "HTTP/1.1 101 Switching Protocols",
            &["Upgrade: websocket", &accept],
        );
        assert_eq!(
            validate_response(&r, KEY, &[], &[]),
            Err(ClientHandshakeError::MissingHeader { name: "Connection" })
        );
    }

    #[test]
    fn client_rejects_missing_accept() {
        let r = response(
            "HTTP/1.1 101 Switching Protocols",
            &["Upgrade: websocket", "Connection: Upgrade"],
        );
        assert_eq!(
            validate_response(&r, KEY, &[], &[]),
            Err(ClientHandshakeError::MissingHeader {
                name: "Sec-WebSocket-Accept"
            })
        );
    }

    #[test]
    fn client_rejects_wrong_accept() {
        let other_key = "AQIDBAUGBwgJCgsMDQ4PEA==";
        match validate_response(&ok_101(&[]), other_key, &[], &[]) {
            Err(ClientHandshakeError::AcceptMismatch { expected, found }) => {
                assert_eq!(expected, accept_key(other_key.as_bytes()));
                assert_eq!(found, ACCEPT);
            }
            other => panic!("{other:?}"),
        }
        // base64 is case-sensitive.
        let r = response(
            "HTTP/1.1 101 Switching Protocols",
            &[
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Accept: S3PPLMBITXAQ9KYGZZHZRBK+XOO=",
            ],
        );
        assert!(matches!(
            validate_response(&r, KEY, &[], &[]),
            Err(ClientHandshakeError::AcceptMismatch { .. })
        ));
    }

    #[test]
    fn client_rejects_duplicate_accept() {
        let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
        assert_eq!(
            validate_response(&ok_101(&[&accept]), KEY, &[], &[]),
            Err(ClientHandshakeError::DuplicateHeader {
                name: "Sec-WebSocket-Accept",
                count: 2
            })
        );
    }

    #[test]
    fn client_accepts_offered_subprotocol() {
        let r = ok_101(&["Sec-WebSocket-Protocol: superchat"]);
        let n = validate_response(&r, KEY, &offered(&["chat", "superchat"]), &[]).unwrap();
        assert_eq!(n.protocol.as_deref(), Some("superchat"));
    }

    #[test]
    fn client_rejects_unoffered_subprotocol() {
        let r = ok_101(&["Sec-WebSocket-Protocol: other"]);
        assert_eq!(
            validate_response(&r, KEY, &offered(&["chat"]), &[]),
            Err(ClientHandshakeError::ProtocolNotOffered {
                protocol: "other".into()
            })
        );
        // Exact match: a differently cased name is not what we offered.
        let r = ok_101(&["Sec-WebSocket-Protocol: Chat"]);
        assert!(validate_response(&r, KEY, &offered(&["chat"]), &[]).is_err());
        // A list is not a selection.
        let r = ok_101(&["Sec-WebSocket-Protocol: chat, superchat"]);
        assert!(validate_response(&r, KEY, &offered(&["chat", "superchat"]), &[]).is_err());
    }

    #[test]
    fn client_rejects_subprotocol_when_none_offered() {
        let r = ok_101(&["Sec-WebSocket-Protocol: chat"]);
        assert_eq!(
            validate_response(&r, KEY, &[], &[]),
            Err(ClientHandshakeError::ProtocolWithoutOffer {
                protocol: "chat".into()
            })
        );
    }

    #[test]
    fn client_rejects_duplicate_subprotocol_header() {
        let r = ok_101(&[
            "Sec-WebSocket-Protocol: chat",
            "Sec-WebSocket-Protocol: chat",
        ]);
        assert!(matches!(
            validate_response(&r, KEY, &offered(&["chat"]), &[]),
            Err(ClientHandshakeError::DuplicateHeader {
                name: "Sec-WebSocket-Protocol",
                ..
            })
        ));
    }

    #[test]
    fn client_accepts_offered_extensions_split_over_lines() {
        let r = ok_101(&[
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover",
            "Sec-WebSocket-Extensions: x-foo",
        ]);
        let n = validate_response(&r, KEY, &[], &["permessage-deflate", "x-foo"]).unwrap();
        assert_eq!(n.extensions.len(), 2);
        assert_eq!(n.extensions[0].params[0].name, "server_no_context_takeover");
    }

    #[test]
    fn client_rejects_unoffered_extension() {
        let r = ok_101(&["Sec-WebSocket-Extensions: x-bar"]);
        assert_eq!(
            validate_response(&r, KEY, &[], &["x-foo"]),
            Err(ClientHandshakeError::ExtensionNotOffered {
                name: "x-bar".into()
            })
        );
    }

    #[test]
    fn client_rejects_malformed_extensions() {
        for v in ["x; =3", ""] {
            let line = format!("Sec-WebSocket-Extensions: {v}");
            assert!(
                matches!(
                    validate_response(&ok_101(&[&line]), KEY, &[], &["x"]),
                    Err(ClientHandshakeError::MalformedExtensions { .. })
                ),
                "{v:?}"
            );
        }
    }

    // --- round trips ---

    #[test]
    fn built_request_parses_and_validates_on_server() {
        let mut req = ClientRequest::new("example.com:8080", "/chat?room=1");
        req.origin = Some("https://example.com".into());
        req.protocols = offered(&["v2.chat", "v1.chat"]);
        req.extensions = vec![Extension {
            name: "permessage-deflate".into(),
            params: vec![ExtensionParam {
                name: "client_max_window_bits".into(),
                value: None,
            }],
        }];
        req.headers = vec![("Authorization".into(), "Bearer t0k3n".into())];
        let (bytes, key) = build_request(&req).unwrap();

        let (parsed, used) = parse_request(&bytes, &HandshakeLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(parsed.path(), "/chat");
        assert_eq!(parsed.query(), Some("room=1"));
        assert_eq!(parsed.host(), Some("example.com:8080"));
        assert_eq!(parsed.origin(), Some("https://example.com"));
        assert_eq!(
            parsed.headers.get_str("authorization"),
            Some("Bearer t0k3n")
        );
        let offer = validate_request(&parsed).unwrap();
        assert_eq!(offer.key, key);
        assert_eq!(offer.protocols, req.protocols);
        assert_eq!(offer.extensions, req.extensions);
    }

    #[test]
    fn full_round_trip_accept_response_validates_on_client() {
        let mut req = ClientRequest::new("h", "/");
        req.protocols = offered(&["v1.chat", "v2.chat"]);
        req.extensions = vec![Extension {
            name: "permessage-deflate".into(),
            params: vec![],
        }];
        let (bytes, key) = build_request(&req).unwrap();
        let (parsed, _) = parse_request(&bytes, &HandshakeLimits::default())
            .unwrap()
            .unwrap();
        let offer = validate_request(&parsed).unwrap();

        let accept = Accept {
            protocol: select_protocol(&offer.protocols, &["v2.chat", "v1.chat"]).map(String::from),
            extensions: vec![Extension {
                name: "permessage-deflate".into(),
                params: vec![ExtensionParam {
                    name: "server_no_context_takeover".into(),
                    value: None,
                }],
            }],
            headers: vec![("Set-Cookie".into(), "sid=1".into())],
        };
        let mut wire = accept_response(&offer, &accept).unwrap();
        let head_len = wire.len();
        wire.extend_from_slice(&[0x81, 0x00]);

        let (resp, used) = parse_response(&wire, &HandshakeLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(used, head_len);
        assert_eq!(resp.headers.get_str("set-cookie"), Some("sid=1"));
        let n = validate_response(&resp, &key, &req.protocols, &["permessage-deflate"]).unwrap();
        assert_eq!(n.protocol.as_deref(), Some("v2.chat"));
        assert_eq!(n.extensions, accept.extensions);
    }

    proptest::proptest! {
        #[test]
        fn parse_response_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let limits = HandshakeLimits { max_head_bytes: 256, max_headers: 8 };
            if let Ok(Some((resp, used))) = parse_response(&bytes, &limits) {
                proptest::prop_assert!(used <= 256 && used <= bytes.len());
                let _ = validate_response(&resp, KEY, &offered(&["chat"]), &["x"]);
            }
        }
    }
}
