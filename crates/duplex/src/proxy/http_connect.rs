//! HTTP `CONNECT` tunnels (RFC 9110 §9.3.6), with `Proxy-Authorization: Basic` (RFC 7617).
//!
//! The request is built and the response head parsed by pure functions ([`request`],
//! [`parse_response`], [`check_status`]); [`tunnel`] only moves the bytes. The response head is
//! read with a bound ([`MAX_RESPONSE_HEAD`]) and never past its end, so nothing the target sends
//! later can be swallowed: a proxy that sends bytes after its `2xx` head, before the client has
//! spoken, is refused (the WebSocket and TLS clients always speak first).

use super::Credentials;
use crate::error::{Error, Result};
use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest response head accepted from a proxy: 16 KiB (a `200 Connection established` is
/// well under 100 bytes; error pages come after the head and are never read).
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Most header lines accepted in the response head.
const MAX_HEADERS: usize = 64;

/// The `CONNECT` request for `authority` (`host:port`, an IPv6 host in brackets).
pub(crate) fn request(authority: &str, credentials: Option<&Credentials>) -> Vec<u8> {
    let mut out = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(credentials) = credentials {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.username, credentials.password));
        out.push_str("Proxy-Authorization: Basic ");
        out.push_str(&token);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// The status code.
    pub status: u16,
    /// The reason phrase, made printable and cut to 120 characters.
    pub reason: String,
    /// Length of the head in bytes, final blank line included.
    pub len: usize,
}

/// Parses the response head at the start of `buf`: `Ok(None)` while it is incomplete.
///
/// # Errors
///
/// [`Error::ProxyProtocol`] when the bytes are not an HTTP/1.x response head, or when
/// `buf` holds [`MAX_RESPONSE_HEAD`] bytes or more without a complete head.
pub(crate) fn parse_response(buf: &[u8]) -> Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_RESPONSE_HEAD => {
            // httparse fills `code` and `reason` in every complete parse.
            let status = response.code.unwrap_or(0);
            let reason = printable(response.reason.unwrap_or(""));
            Ok(Some(Head {
                status,
                reason,
                len,
            }))
        }
        Ok(httparse::Status::Complete(_)) => Err(oversized()),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => Err(oversized()),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Error::ProxyProtocol(format!(
            "the proxy's CONNECT response has more than {MAX_HEADERS} header lines"
        ))),
        Err(e) => Err(Error::ProxyProtocol(format!(
            "the proxy's answer to CONNECT is not an HTTP/1.x response ({e}): is it an HTTP \
             proxy? (socks5:// URLs are for SOCKS proxies)"
        ))),
    }
}

fn oversized() -> Error {
    Error::ProxyProtocol(format!(
        "the proxy's CONNECT response head is larger than {MAX_RESPONSE_HEAD} bytes"
    ))
}

/// The reason phrase as shown in errors: control characters replaced, at most 120 chars.
fn printable(reason: &str) -> String {
    reason
        .chars()
        .take(120)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// What a response status means for the tunnel: any `2xx` opens it (RFC 9110 §15.3).
///
/// # Errors
///
/// [`Error::ProxyAuthRequired`] for 407 (and for 401: the target is not reached before the
/// tunnel is open, so only the proxy can have asked; tinyproxy 1.11 answers wrong credentials
/// with 401), [`Error::ProxyRefused`] for any other status.
pub(crate) fn check_status(head: &Head, credentials_sent: bool) -> Result<()> {
    match head.status {
        200..=299 => Ok(()),
        401 | 407 => Err(Error::ProxyAuthRequired {
            status: head.status,
            credentials_sent,
        }),
        status => Err(Error::ProxyRefused {
            status,
            reason: head.reason.clone(),
        }),
    }
}

/// Asks the proxy on `stream` for a tunnel to `authority` and reads its answer; on success the
/// stream is the tunnel, positioned at its first byte.
pub(crate) async fn tunnel<S>(
    stream: &mut S,
    authority: &str,
    credentials: Option<&Credentials>,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&request(authority, credentials)).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let head = loop {
        if let Some(head) = parse_response(&buf)? {
            break head;
        }
        let room = (MAX_RESPONSE_HEAD - buf.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Err(Error::ProxyProtocol(format!(
                "the proxy closed the connection after {} bytes, before its CONNECT response \
                 head ended",
                buf.len()
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    check_status(&head, credentials.is_some())?;
    if buf.len() > head.len {
        return Err(Error::ProxyProtocol(format!(
            "the proxy sent {} bytes after its {} response, before the tunnel was used",
            buf.len() - head.len,
            head.status
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        }
    }

    #[test]
    fn request_names_the_authority_twice_and_sends_basic_credentials() {
        let bytes = request("example.com:443", Some(&creds()));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
        let bytes = request("[::1]:80", None);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "CONNECT [::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"
        );
    }

    #[test]
    fn a_200_head_is_parsed_and_its_length_known() {
        let head = b"HTTP/1.0 200 Connection established\r\nProxy-agent: x\r\n\r\n";
        let parsed = parse_response(head).unwrap().unwrap();
        assert_eq!(parsed.status, 200);
        assert_eq!(parsed.reason, "Connection established");
        assert_eq!(parsed.len, head.len());
        assert!(check_status(&parsed, false).is_ok());
        // Bytes after the head are not part of it.
        let mut more = head.to_vec();
        more.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(parse_response(&more).unwrap().unwrap().len, head.len());
    }

    #[test]
    fn any_2xx_opens_the_tunnel() {
        let parsed = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(check_status(&parsed, false).is_ok());
    }

    #[test]
    fn a_truncated_head_asks_for_more_at_every_cut() {
        let head = b"HTTP/1.1 200 OK\r\nVia: proxy\r\n\r\n";
        for cut in 0..head.len() {
            assert_eq!(parse_response(&head[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn an_oversized_head_is_refused_at_the_limit() {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        while head.len() < MAX_RESPONSE_HEAD {
            head.extend_from_slice(b"X: ");
            head.extend(std::iter::repeat_n(b'a', 1000));
            head.extend_from_slice(b"\r\n");
        }
        let err = parse_response(&head).unwrap_err();
        assert!(
            matches!(err, Error::ProxyProtocol(ref m) if m.contains("16384")),
            "{err}"
        );
        // A single endless header line, too.
        let mut line = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        line.resize(MAX_RESPONSE_HEAD + 10, b'a');
        assert!(matches!(
            parse_response(&line),
            Err(Error::ProxyProtocol(_))
        ));
    }

    #[test]
    fn too_many_header_lines_are_refused() {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..100 {
            head.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse_response(&head),
            Err(Error::ProxyProtocol(ref m)) if m.contains("header lines")
        ));
    }

    #[test]
    fn a_wrong_version_or_a_socks_reply_is_not_an_http_response() {
        for hostile in [
            &b"SSH-2.0-OpenSSH_9.2\r\n"[..],
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"\x05\x00",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"<html>hello</html>\r\n\r\n",
        ] {
            let err = parse_response(hostile).unwrap_err();
            assert!(matches!(err, Error::ProxyProtocol(_)), "{hostile:?}: {err}");
        }
    }

    #[test]
    fn statuses_map_to_precise_errors() {
        let head = |status, reason: &str| Head {
            status,
            reason: reason.into(),
            len: 0,
        };
        assert!(matches!(
            check_status(&head(407, "Proxy Authentication Required"), false),
            Err(Error::ProxyAuthRequired {
                status: 407,
                credentials_sent: false
            })
        ));
        assert!(matches!(
            check_status(&head(401, "Unauthorized"), true),
            Err(Error::ProxyAuthRequired {
                status: 401,
                credentials_sent: true
            })
        ));
        match check_status(&head(403, "Access violation"), true) {
            Err(Error::ProxyRefused { status, reason }) => {
                assert_eq!((status, reason.as_str()), (403, "Access violation"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_status(&head(502, ""), false),
            Err(Error::ProxyRefused { status: 502, .. })
        ));
    }

    #[test]
    fn control_characters_in_the_reason_are_not_echoed() {
        assert_eq!(printable("bad\u{1b}[31m"), "bad?[31m");
        assert_eq!(printable(&"x".repeat(500)).len(), 120);
    }

    #[tokio::test]
    async fn tunnel_reads_exactly_the_head_and_refuses_early_bytes() {
        use tokio::io::AsyncWriteExt;
        // Well-behaved: the proxy answers 200 and the stream is left at the tunnel's start.
        let (mut client, mut proxy) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let n = proxy.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"CONNECT h:1 HTTP/1.1\r\n"));
            proxy.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            proxy
        });
        tunnel(&mut client, "h:1", None).await.unwrap();
        drop(server.await.unwrap());

        // Bytes past the head before the client spoke.
        let (mut client, mut proxy) = tokio::io::duplex(64 * 1024);
        proxy
            .write_all(b"HTTP/1.1 200 OK\r\n\r\nsurprise")
            .await
            .unwrap();
        let err = tunnel(&mut client, "h:1", None).await.unwrap_err();
        assert!(
            matches!(err, Error::ProxyProtocol(ref m) if m.contains("8 bytes")),
            "{err}"
        );

        // Closed mid-head.
        let (mut client, mut proxy) = tokio::io::duplex(64 * 1024);
        proxy.write_all(b"HTTP/1.1 200 OK\r\nVia").await.unwrap();
        proxy.shutdown().await.unwrap();
        let err = tunnel(&mut client, "h:1", None).await.unwrap_err();
        assert!(
            matches!(err, Error::ProxyProtocol(ref m) if m.contains("closed")),
            "{err}"
        );

        // An endless head is cut at the limit without reading further.
        let (mut client, mut proxy) = tokio::io::duplex(64 * 1024);
        let flood = tokio::spawn(async move {
            let _ = proxy.write_all(b"HTTP/1.1 200 OK\r\nX: ").await;
            let filler = vec![b'a'; 4096];
            while proxy.write_all(&filler).await.is_ok() {}
        });
        let err = tunnel(&mut client, "h:1", None).await.unwrap_err();
        assert!(matches!(err, Error::ProxyProtocol(_)), "{err}");
        drop(client);
        flood.await.unwrap();
    }
}
