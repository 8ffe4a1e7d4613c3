//! [`MessageExt`]: constructors and accessors for [`Message`].

use bytes::Bytes;
use duplex_proto::{Message, Utf8Bytes};

/// Constructors and accessors for [`Message`] (which lives in the protocol core): bring it in
/// scope with `use duplex::MessageExt;` and `Message::text(..)`, `message.as_text()`... work.
///
/// ```
/// use duplex::{Message, MessageExt, Utf8Bytes};
///
/// let hello = Message::text(String::from("hello"));
/// assert!(hello.is_text() && !hello.is_binary());
/// assert_eq!(hello.as_text(), Some("hello"));
///
/// let name = String::from("Ada");
/// assert_eq!(Message::text(&name), Message::from("Ada")); // from a &String
/// let shared: Utf8Bytes = "shared".into();
/// assert_eq!(Message::text(shared), Message::from("shared")); // from Utf8Bytes, no copy
///
/// let data = Message::binary(vec![1u8, 2, 3]);
/// assert_eq!(data.as_text(), None);
/// assert_eq!(&data.into_data()[..], &[1, 2, 3]);
/// assert_eq!(Message::from("hi").into_text().as_deref(), Some("hi"));
/// ```
///
/// (`Message` also converts from `&str`, `String`, `Bytes` and `Vec<u8>` with `From`, so
/// `ws.send("hello")` and `ws.send(vec![1, 2, 3])` need none of this.)
pub trait MessageExt: Sized {
    /// A text message from anything that converts to [`Utf8Bytes`]: `&str`, `String`,
    /// `&String`, `Utf8Bytes`.
    fn text(text: impl IntoText) -> Self;
    /// A binary message from anything that converts to [`Bytes`]: `Vec<u8>`, `Bytes`,
    /// `&'static [u8]`...
    fn binary(data: impl Into<Bytes>) -> Self;
    /// Whether it is a text message.
    fn is_text(&self) -> bool;
    /// Whether it is a binary message.
    fn is_binary(&self) -> bool;
    /// The text of a text message; `None` for a binary one.
    fn as_text(&self) -> Option<&str>;
    /// The text of a text message; `None` for a binary one.
    fn into_text(self) -> Option<Utf8Bytes>;
    /// The payload, whatever the type (no copy).
    fn into_data(self) -> Bytes;
}

impl MessageExt for Message {
    fn text(text: impl IntoText) -> Self {
        Message::Text(text.into_text())
    }
    fn binary(data: impl Into<Bytes>) -> Self {
        Message::Binary(data.into())
    }
    fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }
    fn is_binary(&self) -> bool {
        matches!(self, Message::Binary(_))
    }
    fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text.as_str()),
            Message::Binary(_) => None,
        }
    }
    fn into_text(self) -> Option<Utf8Bytes> {
        match self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }
    fn into_data(self) -> Bytes {
        match self {
            Message::Text(text) => text.into_bytes(),
            Message::Binary(data) => data,
        }
    }
}

/// What [`MessageExt::text`] takes: `&str`, `String`, `&String`, [`Utf8Bytes`].
pub trait IntoText {
    /// The text, as shared UTF-8 bytes.
    fn into_text(self) -> Utf8Bytes;
}

impl IntoText for Utf8Bytes {
    fn into_text(self) -> Utf8Bytes {
        self
    }
}

impl IntoText for &str {
    fn into_text(self) -> Utf8Bytes {
        self.into()
    }
}

impl IntoText for String {
    fn into_text(self) -> Utf8Bytes {
        self.into()
    }
}

impl IntoText for &String {
    fn into_text(self) -> Utf8Bytes {
        self.as_str().into()
    }
}
