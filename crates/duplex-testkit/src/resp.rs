//! A minimal RESP2 client over a std `TcpStream`: one command, one raw reply.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::LOOPBACK;

/// Connect, read and write time-out of [`resp_command`].
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one command (`args[0]` is the command name) to the Redis or Sentinel on
/// `127.0.0.1:port` over a fresh connection, after `AUTH password` if one is given, and returns
/// the complete raw reply text as received (e.g. `"+PONG\r\n"`, `"$-1\r\n"`,
/// `"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n"`, or an error reply `"-ERR ...\r\n"`).
///
/// Errors are I/O errors (connection refused, time-out after 5 s, malformed reply); an error
/// *reply* from the server is returned as text. A failed AUTH is an error.
pub fn resp_command(port: u16, password: Option<&str>, args: &[&str]) -> io::Result<String> {
    let addr = SocketAddr::from((LOOPBACK, port));
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    if let Some(password) = password {
        writer.write_all(&encode(&["AUTH", password]))?;
        let reply = read_reply(&mut reader)?;
        if !reply.starts_with("+OK") {
            return Err(io::Error::other(format!(
                "AUTH failed: {}",
                reply.trim_end()
            )));
        }
    }
    writer.write_all(&encode(args))?;
    read_reply(&mut reader)
}

/// Encodes a command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads exactly one complete reply (recursing into arrays) and returns its raw text.
fn read_reply(reader: &mut impl BufRead) -> io::Result<String> {
    let mut raw = Vec::new();
    read_value(reader, &mut raw, 0)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

fn read_value(reader: &mut impl BufRead, raw: &mut Vec<u8>, depth: usize) -> io::Result<()> {
    if depth > 32 {
        return Err(malformed("nesting deeper than 32"));
    }
    let start = raw.len();
    let n = reader.read_until(b'\n', raw)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete reply",
        ));
    }
    let line = &raw[start..];
    if !line.ends_with(b"\r\n") || line.len() < 3 {
        return Err(malformed("reply line not terminated by CRLF"));
    }
    let kind = line[0];
    let header = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    match kind {
        b'+' | b'-' | b':' => Ok(()),
        b'$' => {
            let len: i64 = header.parse().map_err(|_| malformed("bad bulk length"))?;
            if len < 0 {
                return Ok(());
            }
            let len = usize::try_from(len).map_err(|_| malformed("bad bulk length"))?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body)?;
            raw.extend_from_slice(&body);
            Ok(())
        }
        b'*' => {
            let count: i64 = header.parse().map_err(|_| malformed("bad array length"))?;
            for _ in 0..count.max(0) {
                read_value(reader, raw, depth + 1)?;
            }
            Ok(())
        }
        other => Err(malformed(&format!("unknown reply type byte {other:#04x}"))),
    }
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed RESP reply: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_bulk_array() {
        assert_eq!(encode(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn reads_nested_reply_completely() {
        let data = b"*2\r\n$9\r\n127.0.0.1\r\n*1\r\n:5\r\n+EXTRA\r\n";
        let mut reader = &data[..];
        let reply = read_reply(&mut reader).expect("a complete reply");
        assert_eq!(reply, "*2\r\n$9\r\n127.0.0.1\r\n*1\r\n:5\r\n");
        assert_eq!(reader, b"+EXTRA\r\n");
    }

    #[test]
    fn null_bulk_and_truncation() {
        let mut reader = &b"$-1\r\n"[..];
        assert_eq!(read_reply(&mut reader).expect("null bulk"), "$-1\r\n");
        let mut reader = &b"$5\r\nab"[..];
        assert!(read_reply(&mut reader).is_err());
    }
}
