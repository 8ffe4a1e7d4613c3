//! The server's answers: `101 Switching Protocols` accepting a [`ClientOffer`], or an HTTP
//! error refusing the handshake; and the subprotocol choice that goes into the 101.

use super::ClientOffer;
use crate::extension::{format_extensions, Extension};
use crate::handshake::headers;
use crate::handshake::{accept_key, reason_phrase, BuildError};

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
pub(super) fn write_reject(
    status: u16,
    body: &str,
    connection: &str,
    extra: &[(&str, &str)],
) -> Vec<u8> {
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
    use crate::handshake::HandshakeError;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

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
}
