//! `Sec-WebSocket-Extensions` header syntax (RFC 6455 §9.1).
//!
//! This module only parses and formats the header; what an extension's parameters mean is
//! decided by that extension (see `deflate`).

use std::fmt;

/// One extension in a `Sec-WebSocket-Extensions` list, with its parameters in the order given.
///
/// ```
/// use duplex_proto::extension::parse_extensions;
/// let offers = parse_extensions("permessage-deflate; client_max_window_bits, x-foo").unwrap();
/// assert_eq!(offers[0].name, "permessage-deflate");
/// assert_eq!(offers[0].params[0].name, "client_max_window_bits");
/// assert_eq!(offers[0].params[0].value, None);
/// assert_eq!(offers[1].name, "x-foo");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Its parameters, in header order (duplicates are kept: the extension decides).
    pub params: Vec<ExtensionParam>,
}

/// One `name[=value]` parameter of an extension. A quoted value is stored unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionParam {
    /// Parameter name.
    pub name: String,
    /// Parameter value, if any, without quotes.
    pub value: Option<String>,
}

/// The header value does not follow the RFC 6455 §9.1 grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Sec-WebSocket-Extensions header: {reason}")]
pub struct ExtensionSyntaxError {
    /// What was wrong.
    pub reason: &'static str,
}

fn is_tchar(b: u8) -> bool {
    // RFC 7230 §3.2.6 token characters.
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && (self.s[self.pos] == b' ' || self.s[self.pos] == b'\t') {
            self.pos += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.pos < self.s.len() && is_tchar(self.s[self.pos]) {
            self.pos += 1;
        }
        if self.pos == start {
            return None;
        }
        // tchar is ASCII, so this slice is valid UTF-8.
        std::str::from_utf8(&self.s[start..self.pos]).ok()
    }
    fn quoted(&mut self) -> Result<String, ExtensionSyntaxError> {
        // Caller saw the opening quote.
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(ExtensionSyntaxError {
                        reason: "unterminated quoted string",
                    })
                }
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) => {
                            out.push(c);
                            self.pos += 1;
                        }
                        None => {
                            return Err(ExtensionSyntaxError {
                                reason: "unterminated escape in quoted string",
                            })
                        }
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        // RFC 6455 §9.1: a quoted value must itself be a token once unescaped.
        if out.is_empty() || !out.iter().all(|&b| is_tchar(b)) {
            return Err(ExtensionSyntaxError {
                reason: "quoted parameter value is not a token",
            });
        }
        String::from_utf8(out).map_err(|_| ExtensionSyntaxError {
            reason: "quoted parameter value is not a token",
        })
    }
}

/// Parses a `Sec-WebSocket-Extensions` value (several header lines may be joined with `,`).
///
/// Empty list elements (`a, , b`) are skipped, as RFC 7230 §7 allows.
pub fn parse_extensions(value: &str) -> Result<Vec<Extension>, ExtensionSyntaxError> {
    let mut c = Cursor {
        s: value.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        c.skip_ws();
        match c.peek() {
            None => break,
            Some(b',') => {
                c.pos += 1;
                continue;
            }
            _ => {}
        }
        let name = c.token().ok_or(ExtensionSyntaxError {
            reason: "expected an extension name",
        })?;
        let mut ext = Extension {
            name: name.to_owned(),
            params: Vec::new(),
        };
        loop {
            c.skip_ws();
            match c.peek() {
                None => break,
                Some(b',') => {
                    c.pos += 1;
                    break;
                }
                Some(b';') => {
                    c.pos += 1;
                    c.skip_ws();
                    let pname = c.token().ok_or(ExtensionSyntaxError {
                        reason: "expected a parameter name after ';'",
                    })?;
                    c.skip_ws();
                    let value = if c.peek() == Some(b'=') {
                        c.pos += 1;
                        c.skip_ws();
                        if c.peek() == Some(b'"') {
                            Some(c.quoted()?)
                        } else {
                            Some(
                                c.token()
                                    .ok_or(ExtensionSyntaxError {
                                        reason: "expected a parameter value after '='",
                                    })?
                                    .to_owned(),
                            )
                        }
                    } else {
                        None
                    };
                    ext.params.push(ExtensionParam {
                        name: pname.to_owned(),
                        value,
                    });
                }
                Some(_) => {
                    return Err(ExtensionSyntaxError {
                        reason: "unexpected character in extension list",
                    })
                }
            }
        }
        out.push(ext);
    }
    Ok(out)
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for p in &self.params {
            write!(f, "; {}", p.name)?;
            if let Some(v) = &p.value {
                write!(f, "={v}")?;
            }
        }
        Ok(())
    }
}

/// Formats a list of extensions as one header value.
pub fn format_extensions(list: &[Extension]) -> String {
    list.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_offers_with_params() {
        let v = parse_extensions(
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate",
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].params.len(), 2);
        assert_eq!(v[0].params[1].value.as_deref(), Some("10"));
        assert!(v[1].params.is_empty());
    }

    #[test]
    fn quoted_values_are_unquoted_and_must_be_tokens() {
        let v = parse_extensions("x; a=\"15\"").unwrap();
        assert_eq!(v[0].params[0].value.as_deref(), Some("15"));
        assert!(parse_extensions("x; a=\"1 5\"").is_err());
        assert!(parse_extensions("x; a=\"15").is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_extensions("x; =3").is_err());
        assert!(parse_extensions("x y").is_err());
        assert!(parse_extensions(";x").is_err());
        assert!(parse_extensions("x; a=").is_err());
    }

    #[test]
    fn empty_elements_are_skipped() {
        assert_eq!(parse_extensions(" , x ,, ").unwrap().len(), 1);
        assert!(parse_extensions("").unwrap().is_empty());
    }

    #[test]
    fn formats_round_trip() {
        let s = "permessage-deflate; client_max_window_bits=10; server_no_context_takeover";
        let v = parse_extensions(s).unwrap();
        assert_eq!(format_extensions(&v), s);
    }
}
