//! Channel names: which kind a name denotes and whether it is well formed.
//!
//! Owns the naming rules from the Pusher channel docs: at most 164 characters from
//! `[A-Za-z0-9_\-=@,.;]`, `#` reserved for the server. The prefix decides the kind:
//! `private-encrypted-`, `private-`, `presence-`, anything else public; a `cache-` after that
//! prefix (or at the start) makes it a cache channel. `#server-to-user-<id>` is the internal
//! channel pusher-js subscribes to after `pusher:signin`.

/// Longest channel name, prefixes included (Pusher docs, "Channel naming conventions").
pub const MAX_CHANNEL_NAME_LEN: usize = 164;

/// Prefix of the per-user channel that `sendToUser` publishes to and pusher-js subscribes to.
pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// What a channel name says about authorization and behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// Anyone who knows the name may subscribe.
    Public,
    /// `private-`: subscription needs `auth`.
    Private,
    /// `private-encrypted-`: like private; payloads are end-to-end encrypted, no client events.
    PrivateEncrypted,
    /// `presence-`: needs `auth` and `channel_data` naming the user.
    Presence,
    /// `#server-to-user-<id>`: only the connection signed in as `<id>` may subscribe.
    ServerToUser,
}

impl ChannelKind {
    /// The kind a name denotes (no validation).
    pub fn of(name: &str) -> ChannelKind {
        if name.starts_with(SERVER_TO_USER_PREFIX) {
            ChannelKind::ServerToUser
        } else if name.starts_with("private-encrypted-") {
            ChannelKind::PrivateEncrypted
        } else if name.starts_with("private-") {
            ChannelKind::Private
        } else if name.starts_with("presence-") {
            ChannelKind::Presence
        } else {
            ChannelKind::Public
        }
    }

    /// Private, encrypted and presence channels need a subscription signature.
    pub fn requires_auth(self) -> bool {
        matches!(
            self,
            ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence
        )
    }

    /// Client events are allowed on private and presence channels only (not on encrypted ones:
    /// the server could not tell an encrypted payload from a forged one).
    pub fn allows_client_events(self) -> bool {
        matches!(self, ChannelKind::Private | ChannelKind::Presence)
    }
}

/// True for cache channels: `cache-`, `private-cache-`, `private-encrypted-cache-`,
/// `presence-cache-`.
pub fn is_cache(name: &str) -> bool {
    let rest = name
        .strip_prefix("private-encrypted-")
        .or_else(|| name.strip_prefix("private-"))
        .or_else(|| name.strip_prefix("presence-"))
        .unwrap_or(name);
    rest.starts_with("cache-")
}

/// The user id of a `#server-to-user-<id>` channel.
pub fn server_to_user_id(name: &str) -> Option<&str> {
    name.strip_prefix(SERVER_TO_USER_PREFIX)
        .filter(|id| !id.is_empty())
}

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    /// Empty name.
    #[error("channel name is empty")]
    Empty,
    /// Longer than [`MAX_CHANNEL_NAME_LEN`].
    #[error("channel name is longer than {MAX_CHANNEL_NAME_LEN} characters")]
    TooLong,
    /// A character outside `[A-Za-z0-9_\-=@,.;]`.
    #[error("channel name contains {0:?}: only A-Z a-z 0-9 _ - = @ , . ; are allowed")]
    BadCharacter(char),
}

/// Checks a channel name a client or the API names. `#server-to-user-<id>` is accepted (its
/// `#` is the reserved marker); any other `#` is refused.
///
/// ```
/// use duplex_hub::channel::validate;
/// assert!(validate("foo-bar_1234@=,.;").is_ok());
/// assert!(validate("#server-to-user-42").is_ok());
/// assert!(validate("my#channel").is_err());
/// ```
pub fn validate(name: &str) -> Result<(), ChannelNameError> {
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.chars().count() > MAX_CHANNEL_NAME_LEN {
        return Err(ChannelNameError::TooLong);
    }
    let body = match name.strip_prefix('#') {
        Some(_) if name.starts_with(SERVER_TO_USER_PREFIX) => &name[1..],
        _ => name,
    };
    match body.chars().find(|&c| !allowed(c)) {
        Some(c) => Err(ChannelNameError::BadCharacter(c)),
        None => Ok(()),
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_decides_the_kind() {
        assert_eq!(ChannelKind::of("news"), ChannelKind::Public);
        assert_eq!(ChannelKind::of("cache-news"), ChannelKind::Public);
        assert_eq!(ChannelKind::of("private-x"), ChannelKind::Private);
        assert_eq!(
            ChannelKind::of("private-encrypted-x"),
            ChannelKind::PrivateEncrypted
        );
        assert_eq!(ChannelKind::of("presence-x"), ChannelKind::Presence);
        assert_eq!(
            ChannelKind::of("#server-to-user-7"),
            ChannelKind::ServerToUser
        );
    }

    #[test]
    fn cache_variants_of_every_kind_are_cache_channels() {
        for name in [
            "cache-a",
            "private-cache-a",
            "private-encrypted-cache-a",
            "presence-cache-a",
        ] {
            assert!(is_cache(name), "{name}");
        }
        for name in ["a-cache-", "private-a", "presence-a", "cachea"] {
            assert!(!is_cache(name), "{name}");
        }
    }

    #[test]
    fn client_events_only_on_private_and_presence() {
        assert!(ChannelKind::Private.allows_client_events());
        assert!(ChannelKind::Presence.allows_client_events());
        assert!(!ChannelKind::PrivateEncrypted.allows_client_events());
        assert!(!ChannelKind::Public.allows_client_events());
        assert!(!ChannelKind::ServerToUser.allows_client_events());
    }

    #[test]
    fn channel_name_of_164_characters_is_accepted_165_is_not() {
        assert!(validate(&"a".repeat(164)).is_ok());
        assert_eq!(validate(&"a".repeat(165)), Err(ChannelNameError::TooLong));
    }

    #[test]
    fn hash_is_reserved_except_server_to_user() {
        assert_eq!(validate("a#b"), Err(ChannelNameError::BadCharacter('#')));
        assert_eq!(validate("#other"), Err(ChannelNameError::BadCharacter('#')));
        assert!(validate("#server-to-user-abc").is_ok());
        assert_eq!(server_to_user_id("#server-to-user-abc"), Some("abc"));
        assert_eq!(server_to_user_id("#server-to-user-"), None);
    }

    #[test]
    fn documented_punctuation_is_allowed_others_are_not() {
        assert!(validate("foo-bar_1234@=,.;").is_ok());
        for bad in ["a b", "a/b", "a:b", "é", "a*"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
        assert_eq!(validate(""), Err(ChannelNameError::Empty));
    }
}
