//! The opening handshake (RFC 6455 §4): an HTTP/1.1 `GET` with `Upgrade: websocket`, answered
//! by `101 Switching Protocols`.
//!
//! Like the rest of the crate this module does no I/O. Parsers take the bytes read so far and
//! say "need more", "here is the head and how many bytes it used", or why it is unacceptable;
//! builders return the bytes to write. Bytes after the head are never consumed: a client may
//! send its first frames right behind the request, and a server its first frames right behind
//! the 101, so the caller hands `buf[consumed..]` to the frame layer.
//!
//! Server side ([`server`]): [`parse_request`] → [`validate_request`] → either
//! [`accept_response`] or [`HandshakeError::to_response`] / [`reject_response`].
//!
//! ```
//! use duplex_proto::handshake::{accept_response, parse_request, validate_request, Accept,
//!     HandshakeLimits};
//!
//! let wire = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Version: 13\r\n\r\n";
//! let (request, consumed) = parse_request(wire, &HandshakeLimits::default())?
//!     .expect("the head is complete");
//! assert_eq!(consumed, wire.len());
//! let response = match validate_request(&request) {
//!     Ok(offer) => accept_response(&offer, &Accept::default())?,
//!     Err(refusal) => refusal.to_response(),
//! };
//! assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Client side ([`client`]): [`build_request`] → write → [`parse_response`] →
//! [`validate_response`] with the key `build_request` returned.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

pub mod client;
mod headers;
pub mod server;

pub use client::{
    build_request, build_request_with_nonce, parse_response, validate_response,
    ClientHandshakeError, ClientRequest, Negotiated, Response,
};
pub use headers::Headers;
pub use server::{
    accept_response, parse_request, reject_response, select_protocol, validate_request, Accept,
    ClientOffer, HandshakeError, Request,
};

/// The GUID a server appends to `Sec-WebSocket-Key` before hashing (RFC 6455 §1.3, §4.2.2).
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this crate speaks, as sent in `Sec-WebSocket-Version`.
pub const WEBSOCKET_VERSION: &str = "13";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
///
/// The key is used as sent (still base64-encoded, RFC 6455 §4.2.2 step 4).
///
/// ```
/// use duplex_proto::handshake::accept_key;
/// // The example of RFC 6455 §1.3 and §4.2.2.
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(sec_websocket_key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(sec_websocket_key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// Bounds on a handshake head, applied by [`parse_request`] and [`parse_response`] before
/// the head is complete so that a peer cannot make us buffer without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Largest request/response head accepted, in bytes, counting the request or status line,
    /// every header line and the blank line that ends the head.
    ///
    /// Default 16 KiB: a browser handshake with cookies is typically well under 4 KiB, and
    /// 16 KiB matches the header-size limit many HTTP servers and proxies use by default, so
    /// anything larger would likely be refused on the way anyway. It is also the most a
    /// connection can make us hold before the handshake is decided.
    pub max_head_bytes: usize,
    /// Largest number of header lines accepted.
    ///
    /// Default 64: a handshake needs about ten header fields and browsers send around twenty;
    /// 64 leaves room for proxies and applications while bounding the per-connection
    /// header table (each entry costs an allocation) at a small fixed size.
    pub max_headers: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// An application-supplied value cannot be written into a handshake message.
///
/// Returned by [`build_request`], [`accept_response`] and [`reject_response`]. These
/// functions refuse rather than strip or escape, so what goes on the wire is exactly what the
/// application asked for, or nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A header name is not an HTTP token (RFC 9110 §5.6.2).
    #[error(
        "header name {name:?} is not an HTTP token; use only letters, digits and !#$%&'*+-.^_`|~"
    )]
    InvalidHeaderName {
        /// The offending name.
        name: String,
    },
    /// A header value contains CR, LF, NUL or another control character other than tab.
    #[error("value of header {name:?} contains CR, LF or another control character, which would split the message; remove it")]
    InvalidHeaderValue {
        /// The header whose value was refused.
        name: String,
    },
    /// An extra header duplicates one the handshake writes itself.
    #[error("header {name:?} is written by the handshake itself; use the dedicated field instead of an extra header")]
    ReservedHeader {
        /// The offending name.
        name: String,
    },
    /// A subprotocol is not a token (RFC 6455 §4.1 item 10, §4.2.2).
    #[error("subprotocol {protocol:?} is not an HTTP token (RFC 6455 §4.1 item 10)")]
    InvalidProtocol {
        /// The offending subprotocol.
        protocol: String,
    },
    /// A subprotocol is offered twice (RFC 6455 §4.1 item 10 requires unique values).
    #[error(
        "subprotocol {protocol:?} is offered twice; RFC 6455 §4.1 item 10 requires unique values"
    )]
    DuplicateProtocol {
        /// The repeated subprotocol.
        protocol: String,
    },
    /// The server chose a subprotocol the client did not offer (RFC 6455 §4.2.2 step 4).
    #[error("subprotocol {protocol:?} was not offered by the client; choose one of its offers or none (RFC 6455 §4.2.2)")]
    ProtocolNotOffered {
        /// The chosen subprotocol.
        protocol: String,
    },
    /// An extension's name or parameters are not tokens (RFC 6455 §9.1).
    #[error("extension {name:?} has a name, parameter name or parameter value that is not an HTTP token (RFC 6455 §9.1)")]
    InvalidExtension {
        /// The extension's name.
        name: String,
    },
    /// The server accepted an extension the client did not offer (RFC 6455 §4.2.2 step 4).
    #[error(
        "extension {name:?} was not offered by the client and must not be listed (RFC 6455 §4.2.2)"
    )]
    ExtensionNotOffered {
        /// The extension's name.
        name: String,
    },
    /// The `Host` value is empty or contains whitespace or control characters.
    #[error("host {host:?} is empty or contains whitespace or control characters")]
    InvalidHost {
        /// The offending host.
        host: String,
    },
    /// The request target does not start with `/` or contains bytes outside visible ASCII.
    #[error("request target {target:?} must start with '/' and contain only visible ASCII (percent-encode the rest)")]
    InvalidTarget {
        /// The offending target.
        target: String,
    },
    /// The status cannot carry the rejection body (1xx, 204, 304) or is not a valid code.
    #[error("status {status} cannot carry a rejection body; use 200..=599 except 204 and 304")]
    InvalidStatus {
        /// The offending status.
        status: u16,
    },
}

/// How reading a head failed, before either side maps it to its own error type.
enum HeadError {
    TooManyHeaders,
    Malformed(&'static str),
}

/// The part of `buf` that may be parsed: never more than `max_head_bytes`. If the head is not
/// complete within it and `buf` is at least that long, the head is too large — even though
/// its end has not arrived yet.
fn head_window<'a>(buf: &'a [u8], limits: &HandshakeLimits) -> (&'a [u8], bool) {
    let full = buf.len() >= limits.max_head_bytes;
    (&buf[..buf.len().min(limits.max_head_bytes)], full)
}

/// Maps an `httparse` error, keeping "too many headers" apart since it means 431, not 400.
fn classify(e: httparse::Error) -> HeadError {
    HeadError::Malformed(match e {
        httparse::Error::TooManyHeaders => return HeadError::TooManyHeaders,
        httparse::Error::HeaderName => "invalid byte in a header name",
        httparse::Error::HeaderValue => "invalid byte in a header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status code or reason phrase",
        httparse::Error::Token => "invalid method or request target",
        httparse::Error::Version => "invalid or unsupported HTTP version (expected HTTP/1.x)",
    })
}

/// A copy of peer-controlled text short enough to put in an error message or log line.
/// Invalid UTF-8 is replaced; longer input is cut at a character boundary and marked `…`.
fn bounded(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let cut = bytes.len().min(MAX);
    let mut s = String::from_utf8_lossy(&bytes[..cut]).into_owned();
    if bytes.len() > MAX {
        s.push('…');
    }
    s
}

/// The standard reason phrase for the status codes a handshake is likely to use.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 §1.3 / §4.2.2: SHA-1 is b37a4f2cc0624f1690f64606cf385945b2bec4ea.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn default_limits_are_16_kib_and_64_headers() {
        let l = HandshakeLimits::default();
        assert_eq!(l.max_head_bytes, 16 * 1024);
        assert_eq!(l.max_headers, 64);
    }

    #[test]
    fn bounded_copy_is_cut_and_lossy() {
        assert_eq!(bounded(b"abc"), "abc");
        let long = vec![b'x'; 1000];
        assert_eq!(bounded(&long).chars().count(), 65);
        assert_eq!(bounded(&[0xff]), "\u{fffd}");
    }

    #[test]
    fn head_window_never_exceeds_limit() {
        let limits = HandshakeLimits {
            max_head_bytes: 4,
            max_headers: 1,
        };
        assert_eq!(head_window(b"abc", &limits), (&b"abc"[..], false));
        assert_eq!(head_window(b"abcd", &limits), (&b"abcd"[..], true));
        assert_eq!(head_window(b"abcdef", &limits), (&b"abcd"[..], true));
    }
}
