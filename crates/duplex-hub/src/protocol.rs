//! The Pusher Channels protocol (version 7) as typed messages: what pusher-js sends, what it
//! expects back, and the close/error codes.
//!
//! Owns JSON ⇄ types only. It never decides anything (that is [`crate::hub`]) and never frames
//! anything (that is the CLI's WebSocket layer).
//!
//! **Double encoding.** Server→client `data` is a JSON *string* whose content is JSON
//! (`"data":"{\"socket_id\":\"1.2\"}"`); pusher-js `JSON.parse`s a string `data` once more. The
//! one exception is `pusher:error`, whose `data` is an object `{code, message}` (pusher-js reads
//! `data.code` directly when deciding whether to reconnect). Client→server `data` is an object
//! for `pusher:` events, but pusher-js and other SDKs may send a string for client events; both
//! are accepted everywhere.

use bytes::Bytes;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// Close and error codes from the protocol docs ("Error Codes").
///
/// 4000–4099: do not reconnect unchanged; 4100–4199: reconnect after backing off (≥ 1 s);
/// 4200–4299: reconnect immediately; 4300–4399: other errors (sent as `pusher:error`, the
/// connection stays open).
pub mod codes {
    /// Application only accepts TLS connections: reconnect with `wss://`.
    pub const SSL_ONLY: u16 = 4000;
    /// Application does not exist (unknown app key).
    pub const APP_NOT_FOUND: u16 = 4001;
    /// Application disabled.
    pub const APP_DISABLED: u16 = 4003;
    /// Application is over its connection quota.
    pub const OVER_CONNECTION_QUOTA: u16 = 4004;
    /// Path not found.
    pub const PATH_NOT_FOUND: u16 = 4005;
    /// Invalid version string format.
    pub const INVALID_VERSION_FORMAT: u16 = 4006;
    /// Unsupported protocol version.
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// No protocol version supplied.
    pub const NO_PROTOCOL_VERSION: u16 = 4008;
    /// Connection (or subscription, or sign-in) is unauthorized.
    pub const UNAUTHORIZED: u16 = 4009;
    /// Over capacity: back off and reconnect. Also used for slow consumers whose outbound queue
    /// overflowed.
    pub const OVER_CAPACITY: u16 = 4100;
    /// Generic "reconnect immediately".
    pub const RECONNECT_IMMEDIATELY: u16 = 4200;
    /// A ping was sent but no pong came back in time.
    pub const PONG_NOT_RECEIVED: u16 = 4201;
    /// Closed after a long inactivity.
    pub const CLOSED_AFTER_INACTIVITY: u16 = 4202;
    /// Client event rejected due to rate limit (an error, not a close).
    pub const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;
}

/// What a client should do after a close code, per the protocol's ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    /// 4000–4099: do not reconnect with the same parameters.
    DoNotReconnect,
    /// 4100–4199: reconnect after at least one second.
    BackOff,
    /// 4200–4299: reconnect at once.
    ReconnectNow,
    /// Anything else.
    Other,
}

/// The range a close code falls in.
pub fn close_action(code: u16) -> CloseAction {
    match code {
        4000..=4099 => CloseAction::DoNotReconnect,
        4100..=4199 => CloseAction::BackOff,
        4200..=4299 => CloseAction::ReconnectNow,
        _ => CloseAction::Other,
    }
}

/// The protocol version this hub speaks (pusher-js 8 sends `protocol=7`).
pub const PROTOCOL_VERSION: u8 = 7;

/// Checks the `protocol` query parameter of the WebSocket URL. Versions 4–7 speak the same
/// messages; 1–3 are unsupported (docs: "no longer supported").
///
/// ```
/// use duplex_hub::protocol::{check_protocol_param, codes};
/// assert_eq!(check_protocol_param(Some("7")), Ok(7));
/// assert_eq!(check_protocol_param(None), Err(codes::NO_PROTOCOL_VERSION));
/// assert_eq!(check_protocol_param(Some("2")), Err(codes::UNSUPPORTED_PROTOCOL));
/// ```
pub fn check_protocol_param(value: Option<&str>) -> Result<u8, u16> {
    let value = value.ok_or(codes::NO_PROTOCOL_VERSION)?;
    let v: u8 = value.parse().map_err(|_| codes::INVALID_VERSION_FORMAT)?;
    if (4..=PROTOCOL_VERSION).contains(&v) {
        Ok(v)
    } else {
        Err(codes::UNSUPPORTED_PROTOCOL)
    }
}

/// Longest accepted presence `user_id`.
pub const MAX_USER_ID_LEN: usize = 128;

/// Longest event name accepted from a client or the API.
pub const MAX_EVENT_NAME_LEN: usize = 200;

/// `pusher:subscribe` data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Channel name.
    pub channel: String,
    /// `<key>:<hex signature>` for private, encrypted and presence channels.
    pub auth: Option<String>,
    /// Presence only: the JSON string that was signed, `{"user_id":..,"user_info":..}`.
    pub channel_data: Option<String>,
    /// `recover`: the position the client last saw on this history channel; `Err` says what
    /// is wrong with it (the subscription is then refused, the connection stays).
    pub recover: Option<Result<Position, String>>,
}

/// Where a history channel's stream stands: its epoch (a new one whenever the stream restarts
/// without its past) and the offset of its last event (+1 per event).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Position {
    /// Opaque id of the stream's life.
    pub epoch: String,
    /// Offset of the last event (0 before the first).
    pub offset: u64,
}

/// Longest `recover.epoch` accepted.
pub const MAX_EPOCH_LEN: usize = 64;
/// Largest `recover.offset` accepted: JavaScript's largest safe integer.
pub const MAX_OFFSET: u64 = (1 << 53) - 1;

fn parse_recover(v: &serde_json::Value) -> Result<Position, String> {
    let obj = v
        .as_object()
        .ok_or("recover must be an object {\"epoch\": string, \"offset\": integer}")?;
    let epoch = match obj.get("epoch") {
        Some(serde_json::Value::String(e)) if !e.is_empty() && e.len() <= MAX_EPOCH_LEN => {
            e.clone()
        }
        Some(serde_json::Value::String(_)) => {
            return Err(format!(
                "recover.epoch must be 1 to {MAX_EPOCH_LEN} characters"
            ))
        }
        _ => return Err("recover.epoch must be a string".into()),
    };
    let offset = match obj.get("offset") {
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(o) if o <= MAX_OFFSET => o,
            _ => {
                return Err(format!(
                    "recover.offset must be an integer from 0 to {MAX_OFFSET}"
                ))
            }
        },
        _ => return Err("recover.offset must be an integer".into()),
    };
    Ok(Position { epoch, offset })
}

/// `payload` (a JSON object) with `"position"` added as its last member: what a history
/// channel's subscribers receive. The JSON is serialized once; this appends to its end.
pub fn with_position(payload: &[u8], position: &Position) -> Bytes {
    let body = payload.strip_suffix(b"}").unwrap_or(payload);
    let mut out = Vec::with_capacity(body.len() + 64 + position.epoch.len());
    out.extend_from_slice(body);
    out.extend_from_slice(b",\"position\":");
    out.extend_from_slice(to_json_string(position).as_bytes());
    out.push(b'}');
    Bytes::from(out)
}

/// The offset of an event made by [`with_position`] (read from its end), if it has one.
pub fn position_offset(payload: &[u8]) -> Option<u64> {
    let body = payload.strip_suffix(b"}}")?;
    let start = body.iter().rposition(|b| !b.is_ascii_digit())? + 1;
    if !body[..start].ends_with(b"\"offset\":") {
        return None;
    }
    std::str::from_utf8(&body[start..]).ok()?.parse().ok()
}

/// `pusher:signin` data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signin {
    /// `<key>:<hex signature>` over `<socket_id>::user::<user_data>`.
    pub auth: String,
    /// JSON string with at least `"id"`.
    pub user_data: String,
}

/// A `client-*` event a connection triggers on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEvent {
    /// Event name, starts with `client-`.
    pub event: String,
    /// Channel name.
    pub channel: String,
    /// The payload to forward as the string `data` (an object payload is kept as its JSON
    /// text); `None` when the client sent no `data`.
    pub data: Option<String>,
}

/// A message from a client, parsed from one text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `pusher:ping`: answer `pusher:pong`.
    Ping,
    /// `pusher:pong`: the client is alive.
    Pong,
    /// `pusher:subscribe`.
    Subscribe(Subscribe),
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// Channel name.
        channel: String,
    },
    /// `pusher:signin`.
    Signin(Signin),
    /// `client-*`.
    ClientEvent(ClientEvent),
}

/// Why a client frame was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, or not an object with a string `event`.
    #[error("invalid JSON message: {0}")]
    InvalidJson(String),
    /// A field the event needs is missing or of the wrong type.
    #[error("{event}: missing or invalid field `{field}`")]
    MissingField {
        /// Event name.
        event: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// An event name this server does not accept from clients.
    #[error("unsupported event {0:?}: clients may send pusher:ping, pusher:pong, pusher:subscribe, pusher:unsubscribe, pusher:signin or client-* events")]
    UnsupportedEvent(String),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// A string field that some SDKs send as a JSON-encoded string and others as an object: either
/// way, the JSON text.
fn json_text(v: &RawValue) -> Result<String, ()> {
    let raw = v.get();
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).map_err(|_| ())
    } else {
        Ok(raw.to_owned())
    }
}

/// The `data` object of a `pusher:` event, accepting the double-encoded form too.
fn data_object(
    event: &'static str,
    data: Option<&RawValue>,
) -> Result<serde_json::Map<String, serde_json::Value>, ProtocolError> {
    let missing = ProtocolError::MissingField {
        event,
        field: "data",
    };
    let raw = data.ok_or(missing.clone())?;
    let value: serde_json::Value = if raw.get().starts_with('"') {
        let inner: String = serde_json::from_str(raw.get()).map_err(|_| missing.clone())?;
        serde_json::from_str(&inner).map_err(|_| missing.clone())?
    } else {
        serde_json::from_str(raw.get()).map_err(|_| missing.clone())?
    };
    match value {
        serde_json::Value::Object(m) => Ok(m),
        _ => Err(missing),
    }
}

fn string_field(
    obj: &serde_json::Map<String, serde_json::Value>,
    event: &'static str,
    field: &'static str,
) -> Result<String, ProtocolError> {
    match obj.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        _ => Err(ProtocolError::MissingField { event, field }),
    }
}

/// A field that should hold a JSON string but may hold the object itself.
fn json_string_field(
    obj: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Option<String> {
    match obj.get(field)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Parses one text frame from a client.
///
/// ```
/// use duplex_hub::protocol::{parse_client_message, ClientMessage};
/// let m = parse_client_message(r#"{"event":"pusher:subscribe","data":{"channel":"news"}}"#);
/// assert!(matches!(m, Ok(ClientMessage::Subscribe(s)) if s.channel == "news"));
/// ```
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| ProtocolError::InvalidJson(e.to_string()))?;
    match env.event.as_ref() {
        "pusher:ping" => Ok(ClientMessage::Ping),
        "pusher:pong" => Ok(ClientMessage::Pong),
        "pusher:subscribe" => {
            const E: &str = "pusher:subscribe";
            let obj = data_object(E, env.data)?;
            let auth = match obj.get("auth") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(ProtocolError::MissingField {
                        event: E,
                        field: "auth",
                    })
                }
            };
            Ok(ClientMessage::Subscribe(Subscribe {
                channel: string_field(&obj, E, "channel")?,
                auth,
                channel_data: json_string_field(&obj, "channel_data"),
                recover: obj.get("recover").map(parse_recover),
            }))
        }
        "pusher:unsubscribe" => {
            let obj = data_object("pusher:unsubscribe", env.data)?;
            Ok(ClientMessage::Unsubscribe {
                channel: string_field(&obj, "pusher:unsubscribe", "channel")?,
            })
        }
        "pusher:signin" => {
            const E: &str = "pusher:signin";
            let obj = data_object(E, env.data)?;
            Ok(ClientMessage::Signin(Signin {
                auth: string_field(&obj, E, "auth")?,
                user_data: json_string_field(&obj, "user_data").ok_or(
                    ProtocolError::MissingField {
                        event: E,
                        field: "user_data",
                    },
                )?,
            }))
        }
        name if name.starts_with("client-") => {
            let channel = env.channel.ok_or(ProtocolError::MissingField {
                event: "client event",
                field: "channel",
            })?;
            let data = match env.data {
                None => None,
                Some(raw) => Some(json_text(raw).map_err(|_| ProtocolError::MissingField {
                    event: "client event",
                    field: "data",
                })?),
            };
            Ok(ClientMessage::ClientEvent(ClientEvent {
                event: name.to_owned(),
                channel,
                data,
            }))
        }
        other => Err(ProtocolError::UnsupportedEvent(
            other.chars().take(MAX_EVENT_NAME_LEN).collect(),
        )),
    }
}

/// One member of a presence channel: a user id and the `user_info` the app server signed.
#[derive(Debug, Clone)]
pub struct PresenceMember {
    /// The user id (numbers in `channel_data` are turned into their decimal string).
    pub user_id: String,
    /// Raw JSON `user_info`, if any.
    pub user_info: Option<Box<RawValue>>,
}

impl PartialEq for PresenceMember {
    fn eq(&self, other: &Self) -> bool {
        self.user_id == other.user_id
            && self.user_info.as_ref().map(|r| r.get()) == other.user_info.as_ref().map(|r| r.get())
    }
}

impl Eq for PresenceMember {}

/// Why presence `channel_data` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataError {
    /// Not a JSON object.
    #[error("channel_data is not a JSON object")]
    NotAnObject,
    /// `user_id` missing, empty, too long, or neither a string nor a number.
    #[error("channel_data.user_id must be a non-empty string (or number) of at most {MAX_USER_ID_LEN} characters")]
    BadUserId,
}

#[derive(Deserialize)]
struct RawChannelData<'a> {
    #[serde(borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(default)]
    user_info: Option<Box<RawValue>>,
}

/// Parses presence `channel_data` (`{"user_id":"1","user_info":{...}}`).
pub fn parse_channel_data(channel_data: &str) -> Result<PresenceMember, ChannelDataError> {
    let raw: RawChannelData<'_> =
        serde_json::from_str(channel_data).map_err(|_| ChannelDataError::NotAnObject)?;
    let id_raw = raw.user_id.ok_or(ChannelDataError::BadUserId)?;
    let id: serde_json::Value =
        serde_json::from_str(id_raw.get()).map_err(|_| ChannelDataError::BadUserId)?;
    let user_id = match id {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(ChannelDataError::BadUserId),
    };
    if user_id.is_empty() || user_id.chars().count() > MAX_USER_ID_LEN {
        return Err(ChannelDataError::BadUserId);
    }
    let user_info = raw.user_info.filter(|r| r.get() != "null");
    Ok(PresenceMember { user_id, user_info })
}

/// A message from the server to a client.
#[derive(Debug, Clone, Copy)]
pub enum ServerMessage<'a> {
    /// `pusher:connection_established`, data `{"socket_id","activity_timeout"}` as a string.
    ConnectionEstablished {
        /// The connection's socket id.
        socket_id: &'a str,
        /// Seconds of server silence after which the client should ping.
        activity_timeout: u64,
    },
    /// `pusher:error`, data `{"code","message"}` as an object.
    Error {
        /// Protocol code, or `null`.
        code: Option<u16>,
        /// Human-readable reason.
        message: &'a str,
    },
    /// `pusher_internal:subscription_succeeded` for a non-presence channel, data `"{}"`.
    SubscriptionSucceeded {
        /// Channel name.
        channel: &'a str,
    },
    /// `pusher_internal:subscription_succeeded` for a presence channel, data
    /// `{"presence":{"ids","hash","count"}}` as a string.
    PresenceSubscriptionSucceeded {
        /// Channel name.
        channel: &'a str,
        /// One entry per user.
        members: &'a [PresenceMember],
    },
    /// `pusher_internal:subscription_succeeded` on a history channel: the data also holds
    /// the channel's `position` and, when the client asked to `recover`, whether it was.
    HistorySubscriptionSucceeded {
        /// Channel name.
        channel: &'a str,
        /// Presence channels: one entry per user.
        members: Option<&'a [PresenceMember]>,
        /// The channel's position when the subscription was confirmed (`None` when the channel
        /// keeps no history and the client asked to recover: `recovered` is then false).
        position: Option<&'a Position>,
        /// `Some` when the client sent `recover`.
        recovered: Option<bool>,
    },
    /// `pusher_internal:member_added`, data `{"user_id","user_info"}` as a string.
    MemberAdded {
        /// Channel name.
        channel: &'a str,
        /// The member that joined.
        member: &'a PresenceMember,
    },
    /// `pusher_internal:member_removed`, data `{"user_id"}` as a string.
    MemberRemoved {
        /// Channel name.
        channel: &'a str,
        /// The user whose last connection left.
        user_id: &'a str,
    },
    /// `pusher:subscription_error` on a channel whose subscription was refused, data
    /// `{"type","error","status"}` as a string (the shape pusher-js gives its own auth errors).
    SubscriptionError {
        /// Channel name.
        channel: &'a str,
        /// `AuthError` or `SubscriptionError`.
        kind: &'a str,
        /// Human-readable reason.
        error: &'a str,
        /// HTTP-like status: 401 auth, 400 invalid, 403 limit.
        status: u16,
    },
    /// `pusher:cache_miss` on a cache channel with nothing cached.
    CacheMiss {
        /// Channel name.
        channel: &'a str,
    },
    /// `pusher:signin_success`, data `{"user_data"}` as a string.
    SigninSuccess {
        /// The JSON string the client signed in with.
        user_data: &'a str,
    },
    /// `pusher:ping`.
    Ping,
    /// `pusher:pong`.
    Pong,
    /// An event on a channel (API-published or a client event).
    Event {
        /// Event name.
        event: &'a str,
        /// Channel name.
        channel: &'a str,
        /// Payload string (usually JSON text), omitted when `None`.
        data: Option<&'a str>,
        /// For client events on presence channels: the sender's user id.
        user_id: Option<&'a str>,
    },
}

struct PresenceData<'a>(&'a [PresenceMember]);

impl Serialize for PresenceData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Hash<'a>(&'a [PresenceMember]);
        impl Serialize for Hash<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for member in self.0 {
                    m.serialize_entry(&member.user_id, &member.user_info)?;
                }
                m.end()
            }
        }
        #[derive(Serialize)]
        struct Presence<'a> {
            ids: Vec<&'a str>,
            hash: Hash<'a>,
            count: usize,
        }
        let mut outer = s.serialize_struct("PresenceData", 1)?;
        outer.serialize_field(
            "presence",
            &Presence {
                ids: self.0.iter().map(|m| m.user_id.as_str()).collect(),
                hash: Hash(self.0),
                count: self.0.len(),
            },
        )?;
        outer.end()
    }
}

#[derive(Serialize)]
struct Envelope2<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<D>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

fn to_json_string<T: Serialize>(v: &T) -> String {
    // Serializing these plain structs (strings, numbers, maps with string keys and already
    // valid raw JSON) cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

fn envelope<D: Serialize>(event: &str, channel: Option<&str>, data: Option<D>) -> String {
    to_json_string(&Envelope2 {
        event,
        channel,
        data,
        user_id: None,
    })
}

impl ServerMessage<'_> {
    /// The JSON text pusher-js parses.
    pub fn to_json(&self) -> String {
        match *self {
            ServerMessage::ConnectionEstablished {
                socket_id,
                activity_timeout,
            } => {
                #[derive(Serialize)]
                struct D<'a> {
                    socket_id: &'a str,
                    activity_timeout: u64,
                }
                let inner = to_json_string(&D {
                    socket_id,
                    activity_timeout,
                });
                envelope("pusher:connection_established", None, Some(inner))
            }
            ServerMessage::Error { code, message } => {
                #[derive(Serialize)]
                struct D<'a> {
                    code: Option<u16>,
                    message: &'a str,
                }
                envelope("pusher:error", None, Some(D { code, message }))
            }
            ServerMessage::SubscriptionSucceeded { channel } => envelope(
                "pusher_internal:subscription_succeeded",
                Some(channel),
                Some("{}"),
            ),
            ServerMessage::PresenceSubscriptionSucceeded { channel, members } => {
                let inner = to_json_string(&PresenceData(members));
                envelope(
                    "pusher_internal:subscription_succeeded",
                    Some(channel),
                    Some(inner),
                )
            }
            ServerMessage::HistorySubscriptionSucceeded {
                channel,
                members,
                position,
                recovered,
            } => {
                #[derive(Serialize)]
                struct D<'a> {
                    #[serde(skip_serializing_if = "Option::is_none")]
                    presence: Option<serde_json::Value>,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    position: Option<&'a Position>,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    recovered: Option<bool>,
                }
                let presence = members.map(|m| {
                    serde_json::to_value(PresenceData(m))
                        .ok()
                        .and_then(|mut v| v.get_mut("presence").map(serde_json::Value::take))
                        .unwrap_or_default()
                });
                let inner = to_json_string(&D {
                    presence,
                    position,
                    recovered,
                });
                envelope(
                    "pusher_internal:subscription_succeeded",
                    Some(channel),
                    Some(inner),
                )
            }
            ServerMessage::MemberAdded { channel, member } => {
                #[derive(Serialize)]
                struct D<'a> {
                    user_id: &'a str,
                    user_info: &'a Option<Box<RawValue>>,
                }
                let inner = to_json_string(&D {
                    user_id: &member.user_id,
                    user_info: &member.user_info,
                });
                envelope("pusher_internal:member_added", Some(channel), Some(inner))
            }
            ServerMessage::MemberRemoved { channel, user_id } => {
                #[derive(Serialize)]
                struct D<'a> {
                    user_id: &'a str,
                }
                let inner = to_json_string(&D { user_id });
                envelope("pusher_internal:member_removed", Some(channel), Some(inner))
            }
            ServerMessage::SubscriptionError {
                channel,
                kind,
                error,
                status,
            } => {
                #[derive(Serialize)]
                struct D<'a> {
                    #[serde(rename = "type")]
                    kind: &'a str,
                    error: &'a str,
                    status: u16,
                }
                let inner = to_json_string(&D {
                    kind,
                    error,
                    status,
                });
                envelope("pusher:subscription_error", Some(channel), Some(inner))
            }
            ServerMessage::CacheMiss { channel } => {
                envelope::<&str>("pusher:cache_miss", Some(channel), None)
            }
            ServerMessage::SigninSuccess { user_data } => {
                #[derive(Serialize)]
                struct D<'a> {
                    user_data: &'a str,
                }
                let inner = to_json_string(&D { user_data });
                envelope("pusher:signin_success", None, Some(inner))
            }
            ServerMessage::Ping => envelope("pusher:ping", None, Some("{}")),
            ServerMessage::Pong => envelope("pusher:pong", None, Some("{}")),
            ServerMessage::Event {
                event,
                channel,
                data,
                user_id,
            } => to_json_string(&Envelope2 {
                event,
                channel: Some(channel),
                data,
                user_id,
            }),
        }
    }

    /// [`to_json`](Self::to_json) as shareable bytes: serialize once, clone per recipient.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn v(s: &str) -> Value {
        serde_json::from_str(s).expect("test JSON")
    }

    /// Parses a server message the way pusher-js does: once, then once more for a string
    /// `data`.
    fn as_pusher_js(s: &str) -> Value {
        let mut m = v(s);
        if let Some(Value::String(d)) = m.get("data").cloned() {
            if let Ok(inner) = serde_json::from_str::<Value>(&d) {
                m["data"] = inner;
            }
        }
        m
    }

    #[test]
    fn subscribe_with_object_data_is_parsed() {
        let m = parse_client_message(
            r#"{"event":"pusher:subscribe","data":{"auth":"k:s","channel":"private-a"}}"#,
        );
        assert_eq!(
            m,
            Ok(ClientMessage::Subscribe(Subscribe {
                channel: "private-a".into(),
                auth: Some("k:s".into()),
                channel_data: None,
                recover: None,
            }))
        );
    }

    #[test]
    fn subscribe_with_double_encoded_data_is_parsed() {
        let m = parse_client_message(
            r#"{"event":"pusher:subscribe","data":"{\"channel\":\"news\",\"channel_data\":\"{\\\"user_id\\\":1}\"}"}"#,
        );
        assert_eq!(
            m,
            Ok(ClientMessage::Subscribe(Subscribe {
                channel: "news".into(),
                auth: None,
                channel_data: Some(r#"{"user_id":1}"#.into()),
                recover: None,
            }))
        );
    }

    #[test]
    fn subscribe_without_channel_is_a_missing_field() {
        assert_eq!(
            parse_client_message(r#"{"event":"pusher:subscribe","data":{}}"#),
            Err(ProtocolError::MissingField {
                event: "pusher:subscribe",
                field: "channel"
            })
        );
    }

    #[test]
    fn ping_pong_unsubscribe_signin_are_parsed() {
        assert_eq!(
            parse_client_message(r#"{"event":"pusher:ping","data":{}}"#),
            Ok(ClientMessage::Ping)
        );
        assert_eq!(
            parse_client_message(r#"{"event":"pusher:pong"}"#),
            Ok(ClientMessage::Pong)
        );
        assert_eq!(
            parse_client_message(r#"{"event":"pusher:unsubscribe","data":{"channel":"a"}}"#),
            Ok(ClientMessage::Unsubscribe {
                channel: "a".into()
            })
        );
        assert_eq!(
            parse_client_message(
                r#"{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\"id\":\"1\"}"}}"#
            ),
            Ok(ClientMessage::Signin(Signin {
                auth: "k:s".into(),
                user_data: r#"{"id":"1"}"#.into()
            }))
        );
    }

    #[test]
    fn client_event_data_may_be_object_or_string() {
        let obj = parse_client_message(
            r#"{"event":"client-typing","channel":"private-a","data":{"x":1}}"#,
        );
        assert_eq!(
            obj,
            Ok(ClientMessage::ClientEvent(ClientEvent {
                event: "client-typing".into(),
                channel: "private-a".into(),
                data: Some(r#"{"x":1}"#.into())
            }))
        );
        let s = parse_client_message(
            r#"{"event":"client-typing","channel":"private-a","data":"{\"x\":1}"}"#,
        );
        assert_eq!(s, obj);
    }

    #[test]
    fn events_that_are_neither_pusher_nor_client_are_unsupported() {
        assert!(matches!(
            parse_client_message(r#"{"event":"my-event","channel":"a","data":{}}"#),
            Err(ProtocolError::UnsupportedEvent(e)) if e == "my-event"
        ));
        assert!(matches!(
            parse_client_message(r#"{"event":"pusher_internal:subscription_succeeded"}"#),
            Err(ProtocolError::UnsupportedEvent(_))
        ));
    }

    #[test]
    fn non_json_is_invalid_json() {
        assert!(matches!(
            parse_client_message("not json"),
            Err(ProtocolError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_client_message("[1,2]"),
            Err(ProtocolError::InvalidJson(_))
        ));
    }

    #[test]
    fn connection_established_data_is_a_json_string() {
        let s = ServerMessage::ConnectionEstablished {
            socket_id: "123.456",
            activity_timeout: 120,
        }
        .to_json();
        let raw = v(&s);
        assert!(raw["data"].is_string(), "{s}");
        assert_eq!(
            as_pusher_js(&s),
            json!({"event":"pusher:connection_established","data":{"socket_id":"123.456","activity_timeout":120}})
        );
    }

    #[test]
    fn error_data_is_an_object_with_code_and_message() {
        let s = ServerMessage::Error {
            code: Some(codes::UNAUTHORIZED),
            message: "nope",
        }
        .to_json();
        assert_eq!(
            v(&s),
            json!({"event":"pusher:error","data":{"code":4009,"message":"nope"}})
        );
        let s = ServerMessage::Error {
            code: None,
            message: "x",
        }
        .to_json();
        assert_eq!(v(&s)["data"]["code"], Value::Null);
    }

    #[test]
    fn subscription_error_is_channel_scoped_with_type_error_status() {
        let s = ServerMessage::SubscriptionError {
            channel: "private-a",
            kind: "AuthError",
            error: "bad \"sig\"",
            status: 401,
        }
        .to_json();
        assert!(v(&s)["data"].is_string(), "{s}");
        assert_eq!(
            as_pusher_js(&s),
            json!({"event":"pusher:subscription_error","channel":"private-a",
                   "data":{"type":"AuthError","error":"bad \"sig\"","status":401}})
        );
    }

    #[test]
    fn presence_subscription_succeeded_has_ids_hash_count() {
        let members = vec![
            parse_channel_data(r#"{"user_id":"1","user_info":{"name":"a"}}"#).expect("valid"),
            parse_channel_data(r#"{"user_id":2}"#).expect("valid"),
        ];
        let s = ServerMessage::PresenceSubscriptionSucceeded {
            channel: "presence-x",
            members: &members,
        }
        .to_json();
        assert!(v(&s)["data"].is_string());
        assert_eq!(
            as_pusher_js(&s),
            json!({"event":"pusher_internal:subscription_succeeded","channel":"presence-x",
                   "data":{"presence":{"ids":["1","2"],"hash":{"1":{"name":"a"},"2":null},"count":2}}})
        );
    }

    #[test]
    fn member_added_and_removed_shapes() {
        let m = parse_channel_data(r#"{"user_id":"u","user_info":{"n":1}}"#).expect("valid");
        let s = ServerMessage::MemberAdded {
            channel: "presence-x",
            member: &m,
        }
        .to_json();
        assert_eq!(
            as_pusher_js(&s),
            json!({"event":"pusher_internal:member_added","channel":"presence-x","data":{"user_id":"u","user_info":{"n":1}}})
        );
        let s = ServerMessage::MemberRemoved {
            channel: "presence-x",
            user_id: "u",
        }
        .to_json();
        assert_eq!(
            as_pusher_js(&s),
            json!({"event":"pusher_internal:member_removed","channel":"presence-x","data":{"user_id":"u"}})
        );
    }

    #[test]
    fn plain_event_keeps_data_string_and_optional_user_id() {
        let s = ServerMessage::Event {
            event: "client-x",
            channel: "presence-a",
            data: Some(r#"{"a":1}"#),
            user_id: Some("7"),
        }
        .to_json();
        assert_eq!(
            v(&s),
            json!({"event":"client-x","channel":"presence-a","data":"{\"a\":1}","user_id":"7"})
        );
        let s = ServerMessage::Event {
            event: "e",
            channel: "c",
            data: Some("plain text"),
            user_id: None,
        }
        .to_json();
        assert_eq!(
            v(&s),
            json!({"event":"e","channel":"c","data":"plain text"})
        );
    }

    #[test]
    fn cache_miss_signin_success_subscription_succeeded_shapes() {
        assert_eq!(
            v(&ServerMessage::CacheMiss { channel: "cache-a" }.to_json()),
            json!({"event":"pusher:cache_miss","channel":"cache-a"})
        );
        assert_eq!(
            as_pusher_js(
                &ServerMessage::SigninSuccess {
                    user_data: r#"{"id":"1"}"#
                }
                .to_json()
            ),
            json!({"event":"pusher:signin_success","data":{"user_data":"{\"id\":\"1\"}"}})
        );
        assert_eq!(
            v(&ServerMessage::SubscriptionSucceeded { channel: "a" }.to_json()),
            json!({"event":"pusher_internal:subscription_succeeded","channel":"a","data":"{}"})
        );
        assert_eq!(
            v(&ServerMessage::Pong.to_json())["event"],
            json!("pusher:pong")
        );
    }

    #[test]
    fn recover_is_parsed_or_refused_with_a_reason() {
        let sub = |data: &str| match parse_client_message(&format!(
            r#"{{"event":"pusher:subscribe","data":{{"channel":"chat-1","recover":{data}}}}}"#
        )) {
            Ok(ClientMessage::Subscribe(s)) => s.recover.expect("recover present"),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            sub(r#"{"epoch":"e1","offset":7}"#),
            Ok(Position {
                epoch: "e1".into(),
                offset: 7
            })
        );
        for bad in [
            r#"{"epoch":"e1","offset":-1}"#,
            r#"{"epoch":"e1","offset":1.5}"#,
            r#"{"epoch":"e1","offset":"7"}"#,
            r#"{"epoch":"e1","offset":9007199254740992}"#,
            r#"{"epoch":7,"offset":1}"#,
            r#"{"epoch":"","offset":1}"#,
            r#"{"offset":1}"#,
            r#""e1:7""#,
        ] {
            assert!(sub(bad).is_err(), "{bad}");
        }
        let long = "x".repeat(10_000);
        let e = sub(&format!(r#"{{"epoch":"{long}","offset":1}}"#)).unwrap_err();
        assert!(e.contains("1 to 64"), "{e}");
    }

    #[test]
    fn position_is_appended_to_the_event_and_read_back() {
        let p = Position {
            epoch: "ab12".into(),
            offset: 42,
        };
        let e = ServerMessage::Event {
            event: "msg",
            channel: "chat-1",
            data: Some("{}"),
            user_id: None,
        }
        .to_bytes();
        let with = with_position(&e, &p);
        let v: serde_json::Value = serde_json::from_slice(&with).unwrap();
        assert_eq!(v["position"], json!({"epoch":"ab12","offset":42}));
        assert_eq!(v["event"], "msg");
        assert_eq!(position_offset(&with), Some(42));
        assert_eq!(position_offset(&e), None);
    }

    #[test]
    fn history_subscription_succeeded_carries_position_and_recovered() {
        let p = Position {
            epoch: "e".into(),
            offset: 3,
        };
        let s = ServerMessage::HistorySubscriptionSucceeded {
            channel: "chat-1",
            members: None,
            position: Some(&p),
            recovered: Some(true),
        }
        .to_json();
        assert_eq!(
            as_pusher_js(&s),
            json!({"event":"pusher_internal:subscription_succeeded","channel":"chat-1",
                   "data":{"position":{"epoch":"e","offset":3},"recovered":true}})
        );
        let members = [parse_channel_data(r#"{"user_id":"1"}"#).unwrap()];
        let s = ServerMessage::HistorySubscriptionSucceeded {
            channel: "presence-game-1",
            members: Some(&members),
            position: Some(&p),
            recovered: None,
        }
        .to_json();
        assert_eq!(
            as_pusher_js(&s)["data"],
            json!({"presence":{"ids":["1"],"hash":{"1":null},"count":1},
                   "position":{"epoch":"e","offset":3}})
        );
    }

    #[test]
    fn channel_data_user_id_must_be_a_nonempty_string_or_number() {
        assert_eq!(
            parse_channel_data(r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#)
                .expect("doc example")
                .user_id,
            "10"
        );
        for bad in [
            r#"{}"#,
            r#"{"user_id":""}"#,
            r#"{"user_id":null}"#,
            r#"{"user_id":{"a":1}}"#,
            "nope",
        ] {
            assert!(parse_channel_data(bad).is_err(), "{bad}");
        }
        let long = format!(r#"{{"user_id":"{}"}}"#, "x".repeat(MAX_USER_ID_LEN + 1));
        assert_eq!(parse_channel_data(&long), Err(ChannelDataError::BadUserId));
    }

    #[test]
    fn close_code_ranges_follow_the_protocol() {
        assert_eq!(
            close_action(codes::APP_NOT_FOUND),
            CloseAction::DoNotReconnect
        );
        assert_eq!(
            close_action(codes::UNAUTHORIZED),
            CloseAction::DoNotReconnect
        );
        assert_eq!(close_action(codes::OVER_CAPACITY), CloseAction::BackOff);
        assert_eq!(
            close_action(codes::PONG_NOT_RECEIVED),
            CloseAction::ReconnectNow
        );
        assert_eq!(
            close_action(codes::CLIENT_EVENT_RATE_LIMIT),
            CloseAction::Other
        );
    }

    #[test]
    fn protocol_param_is_checked() {
        assert_eq!(check_protocol_param(Some("7")), Ok(7));
        assert_eq!(check_protocol_param(Some("5")), Ok(5));
        assert_eq!(
            check_protocol_param(Some("x")),
            Err(codes::INVALID_VERSION_FORMAT)
        );
        assert_eq!(
            check_protocol_param(Some("8")),
            Err(codes::UNSUPPORTED_PROTOCOL)
        );
    }
}
