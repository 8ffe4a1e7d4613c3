//! SOCKS5 `CONNECT` (RFC 1928) with no authentication or user name and password (RFC 1929).
//!
//! Messages are built and replies parsed by pure functions; [`tunnel`] only moves the bytes,
//! and reads exactly as many as each reply is long (the longest, a `CONNECT` reply naming a
//! 255-byte domain, is 262 bytes), so nothing after the reply is ever consumed.

use super::Credentials;
use crate::error::{Error, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const VERSION: u8 = 0x05;
const NO_AUTH: u8 = 0x00;
const USER_PASSWORD: u8 = 0x02;
const NO_ACCEPTABLE_METHOD: u8 = 0xFF;
const CMD_CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// A failure reply of a SOCKS5 proxy to `CONNECT` (RFC 1928 §6, field `REP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SocksReply {
    /// `X'01'`.
    #[error("general SOCKS server failure (reply 1): the proxy could not serve the request; see its log")]
    GeneralFailure,
    /// `X'02'`.
    #[error("connection not allowed by ruleset (reply 2): the proxy's rules forbid this target; ask its administrator")]
    NotAllowed,
    /// `X'03'`.
    #[error("network unreachable (reply 3): the proxy has no route to the target's network")]
    NetworkUnreachable,
    /// `X'04'`.
    #[error("host unreachable (reply 4): the proxy cannot reach the target host (with socks5h://, also when it cannot resolve the name)")]
    HostUnreachable,
    /// `X'05'`.
    #[error("connection refused (reply 5): nothing accepts connections on the target's port, as seen from the proxy")]
    ConnectionRefused,
    /// `X'06'`.
    #[error("TTL expired (reply 6): the target did not answer the proxy in time")]
    TtlExpired,
    /// `X'07'`.
    #[error("command not supported (reply 7): the proxy does not do CONNECT")]
    CommandNotSupported,
    /// `X'08'`.
    #[error("address type not supported (reply 8): try socks5:// (IP address) instead of socks5h:// (host name), or the other way round")]
    AddressTypeNotSupported,
    /// A code RFC 1928 does not assign (`X'09'` to `X'FF'`).
    #[error("unassigned SOCKS5 reply code {0}")]
    Other(u8),
}

impl SocksReply {
    /// The reply for a non-zero `REP` code.
    pub fn from_code(code: u8) -> SocksReply {
        match code {
            1 => SocksReply::GeneralFailure,
            2 => SocksReply::NotAllowed,
            3 => SocksReply::NetworkUnreachable,
            4 => SocksReply::HostUnreachable,
            5 => SocksReply::ConnectionRefused,
            6 => SocksReply::TtlExpired,
            7 => SocksReply::CommandNotSupported,
            8 => SocksReply::AddressTypeNotSupported,
            other => SocksReply::Other(other),
        }
    }

    /// The `REP` code.
    pub fn code(self) -> u8 {
        match self {
            SocksReply::GeneralFailure => 1,
            SocksReply::NotAllowed => 2,
            SocksReply::NetworkUnreachable => 3,
            SocksReply::HostUnreachable => 4,
            SocksReply::ConnectionRefused => 5,
            SocksReply::TtlExpired => 6,
            SocksReply::CommandNotSupported => 7,
            SocksReply::AddressTypeNotSupported => 8,
            SocksReply::Other(code) => code,
        }
    }
}

/// Where the proxy should connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    /// An address resolved by the client (`socks5://`, or an IP literal).
    Addr(SocketAddr),
    /// A host name the proxy resolves (`socks5h://`); at most 255 bytes.
    Domain(String, u16),
}

/// The greeting: the methods offered (user/password only when there are credentials).
pub(crate) fn greeting(with_credentials: bool) -> Vec<u8> {
    if with_credentials {
        vec![VERSION, 2, NO_AUTH, USER_PASSWORD]
    } else {
        vec![VERSION, 1, NO_AUTH]
    }
}

/// The method the proxy chose (a 2-byte reply).
///
/// # Errors
///
/// Not SOCKS5, no acceptable method, or a method that was not offered.
pub(crate) fn parse_method_choice(reply: [u8; 2], with_credentials: bool) -> Result<u8> {
    match reply {
        [VERSION, NO_ACCEPTABLE_METHOD] => Err(Error::SocksNoAcceptableAuth {
            credentials_sent: with_credentials,
        }),
        [VERSION, NO_AUTH] => Ok(NO_AUTH),
        [VERSION, USER_PASSWORD] if with_credentials => Ok(USER_PASSWORD),
        [VERSION, method] => Err(Error::ProxyProtocol(format!(
            "the SOCKS5 proxy chose authentication method {method}, which was not offered"
        ))),
        [version, _] => Err(not_socks5(version)),
    }
}

fn not_socks5(version: u8) -> Error {
    Error::ProxyProtocol(format!(
        "the proxy answered with version byte {version}, not 5: is it a SOCKS5 proxy? \
         (http:// URLs are for HTTP CONNECT proxies)"
    ))
}

/// The RFC 1929 user name/password request.
///
/// # Errors
///
/// [`Error::ProxyUrl`] when the user name or the password is empty or longer than 255 bytes.
pub(crate) fn auth_request(credentials: &Credentials) -> Result<Vec<u8>> {
    let user = credentials.username.as_bytes();
    let pass = credentials.password.as_bytes();
    for (what, field) in [("user name", user), ("password", pass)] {
        if field.is_empty() || field.len() > 255 {
            return Err(Error::ProxyUrl(format!(
                "the SOCKS5 {what} must be 1 to 255 bytes long (RFC 1929), not {}",
                field.len()
            )));
        }
    }
    let mut out = Vec::with_capacity(3 + user.len() + pass.len());
    out.push(0x01);
    out.push(user.len() as u8);
    out.extend_from_slice(user);
    out.push(pass.len() as u8);
    out.extend_from_slice(pass);
    Ok(out)
}

/// Checks the RFC 1929 status reply. The version byte should be 1; 5 is also accepted, as
/// some servers send it (curl ignores the byte altogether).
pub(crate) fn parse_auth_reply(reply: [u8; 2]) -> Result<()> {
    match reply {
        [0x01 | VERSION, 0x00] => Ok(()),
        [0x01 | VERSION, _] => Err(Error::SocksAuthFailed),
        [version, _] => Err(Error::ProxyProtocol(format!(
            "the SOCKS5 proxy answered the user name and password with version byte {version}, \
             not 1 (RFC 1929)"
        ))),
    }
}

/// The `CONNECT` request for `destination`.
///
/// # Errors
///
/// [`Error::Url`] when a host name is empty or longer than 255 bytes.
pub(crate) fn connect_request(destination: &Destination) -> Result<Vec<u8>> {
    let mut out = vec![VERSION, CMD_CONNECT, 0x00];
    let port = match destination {
        Destination::Addr(SocketAddr::V4(addr)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&addr.ip().octets());
            addr.port()
        }
        Destination::Addr(SocketAddr::V6(addr)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&addr.ip().octets());
            addr.port()
        }
        Destination::Domain(name, port) => {
            if name.is_empty() || name.len() > 255 {
                return Err(Error::Url(format!(
                    "a SOCKS5 host name must be 1 to 255 bytes long, not {}",
                    name.len()
                )));
            }
            out.push(ATYP_DOMAIN);
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            *port
        }
    };
    out.extend_from_slice(&port.to_be_bytes());
    Ok(out)
}

/// How long the `CONNECT` reply whose first bytes are `buf` is in total: `Ok(None)` while
/// `buf` is too short to tell (fewer than 5 bytes).
///
/// # Errors
///
/// Not SOCKS5, a failure code ([`Error::SocksRefused`]), or an unknown address type.
pub(crate) fn connect_reply_len(buf: &[u8]) -> Result<Option<usize>> {
    let [version, rep, _reserved, atyp, first, ..] = *buf else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(not_socks5(version));
    }
    if rep != 0 {
        return Err(Error::SocksRefused {
            reply: SocksReply::from_code(rep),
        });
    }
    let addr_len = match atyp {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_DOMAIN => 1 + usize::from(first),
        other => {
            return Err(Error::ProxyProtocol(format!(
                "the SOCKS5 proxy's reply has address type {other}, which RFC 1928 does not define"
            )))
        }
    };
    Ok(Some(4 + addr_len + 2))
}

/// The bound address of a complete success reply (for logs; clients rarely need it).
pub(crate) fn bound_address(reply: &[u8]) -> Option<String> {
    let port_at = reply.len().checked_sub(2)?;
    let port = u16::from_be_bytes([*reply.get(port_at)?, *reply.get(port_at + 1)?]);
    let addr = reply.get(4..port_at)?;
    Some(match *reply.get(3)? {
        ATYP_IPV4 => {
            let octets: [u8; 4] = addr.try_into().ok()?;
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port).to_string()
        }
        ATYP_IPV6 => {
            let octets: [u8; 16] = addr.try_into().ok()?;
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port).to_string()
        }
        _ => format!("{}:{port}", String::from_utf8_lossy(addr.get(1..)?)),
    })
}

/// Runs the SOCKS5 exchange on `stream` (connected to the proxy); on success the stream is
/// the tunnel to `destination`, positioned at its first byte.
pub(crate) async fn tunnel<S>(
    stream: &mut S,
    destination: &Destination,
    credentials: Option<&Credentials>,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Build everything first: a bad user name fails before anything is sent.
    let auth = credentials.map(auth_request).transpose()?;
    let connect = connect_request(destination)?;

    stream.write_all(&greeting(auth.is_some())).await?;
    let mut choice = [0u8; 2];
    read_exact(stream, &mut choice, "its choice of authentication method").await?;
    if parse_method_choice(choice, auth.is_some())? == USER_PASSWORD {
        if let Some(auth) = &auth {
            stream.write_all(auth).await?;
        }
        let mut status = [0u8; 2];
        read_exact(
            stream,
            &mut status,
            "its answer to the user name and password",
        )
        .await?;
        parse_auth_reply(status)?;
    }

    stream.write_all(&connect).await?;
    let mut reply = [0u8; 262];
    read_exact(stream, &mut reply[..5], "its CONNECT reply").await?;
    let len = connect_reply_len(&reply[..5])?.unwrap_or(5);
    read_exact(stream, &mut reply[5..len], "its CONNECT reply").await?;
    tracing::debug!(
        bound = bound_address(&reply[..len]).as_deref().unwrap_or("?"),
        "SOCKS5 tunnel open"
    );
    Ok(())
}

/// `read_exact` with a precise error when the proxy closes the connection mid-reply.
async fn read_exact<S>(stream: &mut S, buf: &mut [u8], what: &str) -> Result<()>
where
    S: AsyncRead + Unpin,
{
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::ProxyProtocol(
            format!("the SOCKS5 proxy closed the connection in the middle of {what}"),
        )),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, pass: &str) -> Credentials {
        Credentials {
            username: user.into(),
            password: pass.into(),
        }
    }

    #[test]
    fn greeting_offers_user_password_only_with_credentials() {
        assert_eq!(greeting(false), [5, 1, 0]);
        assert_eq!(greeting(true), [5, 2, 0, 2]);
    }

    #[test]
    fn method_choices() {
        assert_eq!(parse_method_choice([5, 0], false).unwrap(), NO_AUTH);
        assert_eq!(parse_method_choice([5, 0], true).unwrap(), NO_AUTH);
        assert_eq!(parse_method_choice([5, 2], true).unwrap(), USER_PASSWORD);
        assert!(matches!(
            parse_method_choice([5, 2], false),
            Err(Error::ProxyProtocol(_))
        ));
        assert!(matches!(
            parse_method_choice([5, 0xFF], false),
            Err(Error::SocksNoAcceptableAuth {
                credentials_sent: false
            })
        ));
        // A SOCKS4 server, or an HTTP proxy answering "HTTP/1.1 400".
        assert!(matches!(
            parse_method_choice([4, 0], false),
            Err(Error::ProxyProtocol(ref m)) if m.contains("version byte 4")
        ));
        assert!(matches!(
            parse_method_choice(*b"HT", false),
            Err(Error::ProxyProtocol(_))
        ));
    }

    #[test]
    fn rfc_1929_request_and_reply() {
        assert_eq!(
            auth_request(&creds("user", "pass")).unwrap(),
            b"\x01\x04user\x04pass"
        );
        assert!(matches!(
            auth_request(&creds("", "pass")),
            Err(Error::ProxyUrl(_))
        ));
        assert!(matches!(
            auth_request(&creds("u", &"p".repeat(256))),
            Err(Error::ProxyUrl(_))
        ));
        assert!(parse_auth_reply([1, 0]).is_ok());
        assert!(parse_auth_reply([5, 0]).is_ok());
        assert!(matches!(
            parse_auth_reply([1, 2]),
            Err(Error::SocksAuthFailed)
        ));
        assert!(matches!(
            parse_auth_reply([9, 0]),
            Err(Error::ProxyProtocol(_))
        ));
    }

    #[test]
    fn connect_requests_for_each_address_type() {
        let v4 = Destination::Addr("127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            connect_request(&v4).unwrap(),
            [5, 1, 0, 1, 127, 0, 0, 1, 0x1F, 0x90]
        );
        let v6 = Destination::Addr("[::1]:443".parse().unwrap());
        let mut expected = vec![5, 1, 0, 4];
        expected.extend_from_slice(&[0; 15]);
        expected.extend_from_slice(&[1, 0x01, 0xBB]);
        assert_eq!(connect_request(&v6).unwrap(), expected);
        let name = Destination::Domain("localhost".into(), 80);
        assert_eq!(
            connect_request(&name).unwrap(),
            b"\x05\x01\x00\x03\x09localhost\x00\x50"
        );
        assert!(connect_request(&Destination::Domain("a".repeat(256), 1)).is_err());
        assert!(connect_request(&Destination::Domain(String::new(), 1)).is_err());
    }

    #[test]
    fn every_reply_code_is_named() {
        for code in 1..=8 {
            let err = connect_reply_len(&[5, code, 0, 1, 0]).unwrap_err();
            match err {
                Error::SocksRefused { reply } => {
                    assert_eq!(reply.code(), code);
                    assert!(!matches!(reply, SocksReply::Other(_)));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(SocksReply::from_code(5), SocksReply::ConnectionRefused);
        assert_eq!(SocksReply::from_code(0x42), SocksReply::Other(0x42));
        let text = Error::SocksRefused {
            reply: SocksReply::ConnectionRefused,
        }
        .to_string();
        assert!(text.contains("connection refused"), "{text}");
    }

    #[test]
    fn reply_lengths_by_address_type() {
        assert_eq!(connect_reply_len(&[5, 0, 0, 1]).unwrap(), None);
        assert_eq!(connect_reply_len(&[5, 0, 0, 1, 0]).unwrap(), Some(10));
        assert_eq!(connect_reply_len(&[5, 0, 0, 4, 0]).unwrap(), Some(22));
        assert_eq!(connect_reply_len(&[5, 0, 0, 3, 9]).unwrap(), Some(16));
        assert_eq!(connect_reply_len(&[5, 0, 0, 3, 255]).unwrap(), Some(262));
        assert!(matches!(
            connect_reply_len(&[5, 0, 0, 7, 0]),
            Err(Error::ProxyProtocol(_))
        ));
        assert!(matches!(
            connect_reply_len(b"HTTP/1.1 400 Bad Request"),
            Err(Error::ProxyProtocol(ref m)) if m.contains("version byte 72")
        ));
        let reply = [5, 0, 0, 1, 10, 0, 0, 2, 0x1F, 0x90];
        assert_eq!(bound_address(&reply).unwrap(), "10.0.0.2:8080");
        assert_eq!(
            bound_address(b"\x05\x00\x00\x03\x01h\x00\x01").unwrap(),
            "h:1"
        );
    }

    /// A scripted proxy: reads what the client sends and answers `replies` in turn.
    async fn scripted(replies: Vec<&'static [u8]>, close_after: bool) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut proxy) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            for reply in replies {
                if proxy.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                if proxy.write_all(reply).await.is_err() {
                    return;
                }
            }
            if !close_after {
                // Keep the stream open until the client is done.
                let _ = proxy.read(&mut buf).await;
            }
        });
        let destination = Destination::Domain("localhost".into(), 80);
        let result = tunnel(&mut client, &destination, Some(&creds("user", "pass"))).await;
        drop(client);
        server.await.unwrap();
        result
    }

    #[tokio::test]
    async fn a_full_exchange_and_hostile_proxies() {
        // Success, with a domain in the bound address.
        scripted(
            vec![b"\x05\x02", b"\x01\x00", b"\x05\x00\x00\x03\x01h\x00\x01"],
            false,
        )
        .await
        .unwrap();
        // Wrong password.
        let err = scripted(vec![b"\x05\x02", b"\x01\x01"], false)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::SocksAuthFailed), "{err}");
        // Refusal.
        let err = scripted(
            vec![b"\x05\x02", b"\x01\x00", b"\x05\x05\x00\x01\0\0\0\0\0\0"],
            false,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::SocksRefused {
                    reply: SocksReply::ConnectionRefused
                }
            ),
            "{err}"
        );
        // Truncated: the reply stops inside the bound address, then the proxy hangs up.
        let err = scripted(
            vec![b"\x05\x02", b"\x01\x00", b"\x05\x00\x00\x04\0\0"],
            true,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, Error::ProxyProtocol(ref m) if m.contains("middle")),
            "{err}"
        );
        // Truncated greeting reply.
        let err = scripted(vec![b"\x05"], true).await.unwrap_err();
        assert!(matches!(err, Error::ProxyProtocol(_)), "{err}");
        // Wrong version.
        let err = scripted(vec![b"\x04\x5a"], false).await.unwrap_err();
        assert!(matches!(err, Error::ProxyProtocol(_)), "{err}");
    }
}
