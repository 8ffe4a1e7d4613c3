//! Socket ids: the `"<digits>.<digits>"` strings Pusher hands every connection.
//!
//! Owns generation and validation. Server SDKs check a socket id against `^\d+\.\d+$` before
//! sending it back (to exclude a recipient), so both halves are plain decimal numbers. Two random
//! `u64` halves make ids unique across nodes without coordination.

use std::fmt;
use std::sync::Arc;

/// Longest half accepted when parsing: a `u64` has at most 20 decimal digits.
const MAX_HALF_DIGITS: usize = 20;

/// A connection's socket id, cheap to clone (shared string).
///
/// ```
/// use duplex_hub::socket_id::SocketId;
/// let id = SocketId::generate();
/// assert!(SocketId::parse(id.as_str()).is_ok());
/// assert!(SocketId::parse("1234.1234").is_ok());
/// assert!(SocketId::parse("12a.3").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(Arc<str>);

/// A string that is not of the form `<digits>.<digits>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid socket_id {0:?}: expected <digits>.<digits>")]
pub struct InvalidSocketId(pub String);

impl SocketId {
    /// A fresh random id, `"<u64>.<u64>"`.
    pub fn generate() -> SocketId {
        let a: u64 = rand::random();
        let b: u64 = rand::random();
        SocketId(format!("{a}.{b}").into())
    }

    /// Validates `s` as a socket id.
    pub fn parse(s: &str) -> Result<SocketId, InvalidSocketId> {
        if is_valid(s) {
            Ok(SocketId(s.into()))
        } else {
            Err(InvalidSocketId(s.chars().take(64).collect()))
        }
    }

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// True when `s` is `<1-20 digits>.<1-20 digits>`.
pub fn is_valid(s: &str) -> bool {
    let Some((a, b)) = s.split_once('.') else {
        return false;
    };
    let half_ok = |h: &str| {
        !h.is_empty() && h.len() <= MAX_HALF_DIGITS && h.bytes().all(|c| c.is_ascii_digit())
    };
    half_ok(a) && half_ok(b)
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SocketId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_two_decimal_halves() {
        for _ in 0..100 {
            let id = SocketId::generate();
            assert!(is_valid(id.as_str()), "{id}");
        }
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(SocketId::generate(), SocketId::generate());
    }

    #[test]
    fn documented_example_socket_id_is_valid() {
        assert!(SocketId::parse("1234.1234").is_ok());
        assert!(SocketId::parse("123.456").is_ok());
    }

    #[test]
    fn malformed_socket_ids_are_rejected() {
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1.2.3",
            "a.1",
            "1.b",
            "1 .2",
            "-1.2",
            "1234",
            "123456789012345678901.1",
        ] {
            assert!(SocketId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
