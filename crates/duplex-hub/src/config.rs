//! Configuration: apps, their limits and webhooks, and node-wide settings.
//!
//! Built file → env → flags (the CLI applies flags), then [`HubConfig::validate`]d once at start;
//! errors name the offending key (`apps[1].key`). With no file at all the hub serves one
//! default app so `duplex serve` works out of the box:
//!
//! | key | default | why |
//! | --- | --- | --- |
//! | `host` | 127.0.0.1 | loopback until told otherwise (`host = "0.0.0.0"` to listen on all interfaces) |
//! | `port` | 6001 | the port Laravel Echo / pusher-js self-hosting guides use |
//! | `activity_timeout` | 120 s | the protocol's recommended ping interval |
//! | `apps[0].id` / `key` / `secret` | `app-id` / `app-key` / `app-secret` | well-known dev credentials, **change them in production** |
//! | `enable_client_events` | false | Pusher's default: client events are opt-in per app |
//! | `max_connections` | 0 = unlimited | |
//! | `max_message_size` | 10 240 bytes | Pusher's documented event data limit (10 KB) |
//! | `client_event_rate` | 10 / s per connection | Pusher's documented client event limit |
//! | `max_channels_per_connection` | 100 | bounds per-connection state |
//! | `max_presence_members` | 100 | Pusher's presence member limit |
//! | `max_presence_member_size` | 1 024 bytes | bound on `user_info` fan-out |
//! | `max_event_channels` | 100 | REST API: channels per trigger |
//! | `max_batch_size` | 10 | REST API: events per batch |
//! | `outbound_queue` | 1 024 messages | per connection; overflow closes the slow consumer (4100) |
//! | `cache_ttl` | 1 800 s | cache channels keep their last event "up to 30 minutes" |
//! | `webhook_endpoint_queue` | 1 000 requests | per endpoint; a dead endpoint only fills its own queue |
//! | `webhook_vacate_delay_ms` | 3 000 ms | Pusher holds `channel_vacated` / `member_removed` a few seconds so a quick rejoin sends nothing |
//! | `trust_proxy` | `[]` | no peer is a trusted proxy: `X-Forwarded-For` and PROXY headers are ignored unless their sender is listed |
//! | `proxy_protocol` | false | a PROXY header is expected only when the load balancer is set to send one |

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use crate::webhooks::WebhookKind;

/// Default listening port.
pub const DEFAULT_PORT: u16 = 6001;

/// One application: credentials, switches and limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct App {
    /// App id, used in REST paths `/apps/{id}/...`.
    pub id: String,
    /// Public key, used in the WebSocket path `/app/{key}` and in signatures.
    pub key: String,
    /// Secret for every HMAC.
    pub secret: String,
    /// A disabled app refuses connections (4003) and API calls (403).
    pub enabled: bool,
    /// Allow `client-*` events on private and presence channels.
    pub enable_client_events: bool,
    /// Concurrent connections across all nodes; 0 = unlimited.
    pub max_connections: u64,
    /// Largest event `data` (API) or client event frame, in bytes.
    pub max_message_size: usize,
    /// Client events per second per connection (token bucket, burst = rate).
    pub client_event_rate: u32,
    /// Channels one connection may be subscribed to at once.
    pub max_channels_per_connection: usize,
    /// Distinct users in one presence channel.
    pub max_presence_members: usize,
    /// Largest presence `channel_data`, in bytes.
    pub max_presence_member_size: usize,
    /// Channels per REST trigger.
    pub max_event_channels: usize,
    /// Events per REST batch.
    pub max_batch_size: usize,
    /// Webhook endpoints.
    pub webhooks: Vec<Webhook>,
    /// Channel history and recovery, for the channels it names (off without it).
    pub history: Option<History>,
}

/// Which channels keep a history, and how much: `history = { channels = ["chat-*"], size =
/// 1000, ttl = 600 }`. Events on those channels carry a `position`; a client that reconnects
/// can `recover` what it missed from it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    /// Channel names, `*` matching any run of characters (`chat-*`, `presence-game-*`, `*`).
    pub channels: Vec<String>,
    /// Events kept per channel (the oldest go first).
    #[serde(default = "History::default_size")]
    pub size: usize,
    /// Seconds an event is kept; a channel with no event for that long starts a new stream
    /// (a new epoch).
    #[serde(default = "History::default_ttl")]
    pub ttl: u64,
}

/// Most events [`History::size`] may keep per channel.
pub const MAX_HISTORY_SIZE: usize = 100_000;

impl History {
    fn default_size() -> usize {
        1000
    }

    fn default_ttl() -> u64 {
        600
    }

    /// Whether `channel` matches one of the patterns.
    pub fn covers(&self, channel: &str) -> bool {
        self.channels.iter().any(|p| glob_match(p, channel))
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl App {
    /// The history limits of `channel`, if this app keeps a history for it.
    pub fn history_for(&self, channel: &str) -> Option<&History> {
        self.history.as_ref().filter(|h| h.covers(channel))
    }
}

impl Default for App {
    fn default() -> Self {
        App {
            id: "app-id".into(),
            key: "app-key".into(),
            secret: "app-secret".into(),
            enabled: true,
            enable_client_events: false,
            max_connections: 0,
            max_message_size: 10 * 1024,
            client_event_rate: 10,
            max_channels_per_connection: 100,
            max_presence_members: 100,
            max_presence_member_size: 1024,
            max_event_channels: 100,
            max_batch_size: 10,
            webhooks: Vec::new(),
            history: None,
        }
    }
}

/// A webhook endpoint and the events it wants.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Which events to send; empty = all.
    #[serde(default)]
    pub events: Vec<WebhookKind>,
}

/// Node-wide configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Listening address (the CLI binds it).
    pub host: String,
    /// Listening port.
    pub port: u16,
    /// `activity_timeout` sent in `pusher:connection_established`, seconds.
    pub activity_timeout: u64,
    /// Seconds to wait for a pong after the server pinged.
    pub pong_timeout: u64,
    /// Outbound queue length per connection.
    pub outbound_queue: usize,
    /// How long a cache channel keeps its last event, seconds.
    pub cache_ttl: u64,
    /// Webhook events buffered before new ones are dropped.
    pub webhook_queue: usize,
    /// Most events in one webhook POST.
    pub webhook_batch_size: usize,
    /// Requests waiting per webhook endpoint before new ones for it are dropped.
    pub webhook_endpoint_queue: usize,
    /// How long `channel_vacated` / `member_removed` webhooks are held, in milliseconds, so
    /// that a re-occupy (rejoin) in that time cancels the pair; 0 sends them at once.
    pub webhook_vacate_delay_ms: u64,
    /// The applications; empty means "the default app".
    pub apps: Vec<App>,
    /// Redis for a cluster of nodes (`redis://`, `rediss://`, `redis+sentinel://`); without it
    /// the node runs alone on the in-process broker. The server picks the broker from it.
    pub redis_url: Option<String>,
    /// Prefix of the cluster's Redis keys, so clusters or environments can share one Redis.
    pub redis_prefix: String,
    /// PEM file of a private CA that signed Redis's certificate (`rediss://` only).
    pub redis_ca: Option<String>,
    /// Seconds after which a cluster node that stopped renewing its lease is considered dead
    /// and its members and subscriptions are removed.
    pub node_timeout: u64,
    /// Peers (CIDRs such as `10.0.0.0/8` or single addresses) whose `X-Forwarded-For` header,
    /// and PROXY protocol header with [`HubConfig::proxy_protocol`], name the real client.
    /// Empty: every forwarded address is ignored. The server edge parses and applies them.
    pub trust_proxy: Vec<String>,
    /// Expect a PROXY protocol (v1 or v2) header on every accepted TCP connection; connections
    /// from peers outside [`HubConfig::trust_proxy`] are closed.
    pub proxy_protocol: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            // Loopback: the default app's credentials are public, so exposing it takes a choice.
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
            activity_timeout: 120,
            pong_timeout: 30,
            outbound_queue: 1024,
            cache_ttl: 1800,
            webhook_queue: 10_000,
            webhook_batch_size: 50,
            webhook_endpoint_queue: 1000,
            webhook_vacate_delay_ms: 3000,
            apps: vec![App {
                // The demo chat's rooms: messages missed while offline are replayed.
                history: Some(History {
                    channels: vec!["presence-chat-*".into()],
                    size: 100,
                    ttl: 600,
                }),
                ..App::default()
            }],
            redis_url: None,
            redis_prefix: "duplex".into(),
            redis_ca: None,
            node_timeout: 20,
            trust_proxy: Vec::new(),
            proxy_protocol: false,
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The TOML did not parse or had unknown/mistyped keys (the message names them).
    #[error("config file: {0}")]
    Toml(String),
    /// A value is out of range or inconsistent.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `apps[1].key` or `DUPLEX_PORT`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

impl HubConfig {
    /// Parses TOML. A file without `[[apps]]` gets the default app.
    ///
    /// ```
    /// let c = duplex_hub::config::HubConfig::from_toml(r#"
    ///     port = 7000
    ///     [[apps]]
    ///     id = "1"
    ///     key = "k"
    ///     secret = "s"
    ///     enable_client_events = true
    /// "#).unwrap();
    /// assert_eq!(c.port, 7000);
    /// assert!(c.apps[0].enable_client_events);
    /// assert_eq!(c.apps[0].max_message_size, 10 * 1024);
    /// ```
    pub fn from_toml(text: &str) -> Result<HubConfig, ConfigError> {
        // `#[serde(default)]` fills a missing `apps` with the default app; an explicit empty
        // list stays empty (and fails validation, naming `apps`).
        toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))
    }

    /// Applies `DUPLEX_REDIS_URL`, `DUPLEX_REDIS_CA`, `DUPLEX_REDIS_PREFIX`, `DUPLEX_NODE_TIMEOUT`,
    /// `DUPLEX_TRUST_PROXY` (comma-separated CIDRs), `DUPLEX_PROXY_PROTOCOL` (`true`/`false`),
    /// `DUPLEX_PORT`, `DUPLEX_APP_ID`, `DUPLEX_APP_KEY`, `DUPLEX_APP_SECRET` and
    /// `DUPLEX_APP_ENABLE_CLIENT_EVENTS` (`true`/`false`/`1`/`0`) from `env`; the `APP_`
    /// variables change the first app.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        if let Some(v) = env.get("DUPLEX_REDIS_URL").filter(|v| !v.trim().is_empty()) {
            self.redis_url = Some(v.trim().to_owned());
        }
        if let Some(v) = env.get("DUPLEX_REDIS_CA").filter(|v| !v.trim().is_empty()) {
            self.redis_ca = Some(v.trim().to_owned());
        }
        if let Some(v) = env.get("DUPLEX_REDIS_PREFIX") {
            self.redis_prefix = v.trim().to_owned();
        }
        if let Some(v) = env.get("DUPLEX_NODE_TIMEOUT") {
            self.node_timeout = v.trim().parse().map_err(|_| {
                invalid(
                    "DUPLEX_NODE_TIMEOUT",
                    format!("{v:?} is not a number of seconds"),
                )
            })?;
        }
        if let Some(v) = env.get("DUPLEX_TRUST_PROXY") {
            self.trust_proxy = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = env.get("DUPLEX_PROXY_PROTOCOL") {
            self.proxy_protocol = parse_bool(v).ok_or_else(|| {
                invalid(
                    "DUPLEX_PROXY_PROTOCOL",
                    format!("{v:?} is not true/false/1/0"),
                )
            })?;
        }
        if let Some(p) = env.get("DUPLEX_PORT") {
            self.port = p
                .trim()
                .parse()
                .map_err(|_| invalid("DUPLEX_PORT", format!("{p:?} is not a port number")))?;
        }
        let app_vars = [
            "DUPLEX_APP_ID",
            "DUPLEX_APP_KEY",
            "DUPLEX_APP_SECRET",
            "DUPLEX_APP_ENABLE_CLIENT_EVENTS",
        ];
        if !app_vars.iter().any(|v| env.contains_key(*v)) {
            return Ok(());
        }
        if self.apps.is_empty() {
            self.apps.push(App::default());
        }
        let app = &mut self.apps[0];
        if let Some(v) = env.get("DUPLEX_APP_ID") {
            app.id = v.clone();
        }
        if let Some(v) = env.get("DUPLEX_APP_KEY") {
            app.key = v.clone();
        }
        if let Some(v) = env.get("DUPLEX_APP_SECRET") {
            app.secret = v.clone();
        }
        if let Some(v) = env.get("DUPLEX_APP_ENABLE_CLIENT_EVENTS") {
            app.enable_client_events = parse_bool(v).ok_or_else(|| {
                invalid(
                    "DUPLEX_APP_ENABLE_CLIENT_EVENTS",
                    format!("{v:?} is not true/false/1/0"),
                )
            })?;
        }
        Ok(())
    }

    /// Checks every value; the first problem found is returned, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.activity_timeout == 0 {
            return Err(invalid("activity_timeout", "must be at least 1 second"));
        }
        if self.pong_timeout == 0 {
            return Err(invalid("pong_timeout", "must be at least 1 second"));
        }
        if self.outbound_queue == 0 {
            return Err(invalid("outbound_queue", "must be at least 1"));
        }
        if self.webhook_queue == 0 {
            return Err(invalid("webhook_queue", "must be at least 1"));
        }
        if self.webhook_batch_size == 0 {
            return Err(invalid("webhook_batch_size", "must be at least 1"));
        }
        if self.webhook_endpoint_queue == 0 {
            return Err(invalid("webhook_endpoint_queue", "must be at least 1"));
        }
        if self.apps.is_empty() {
            return Err(invalid("apps", "at least one app is required"));
        }
        if self.node_timeout < 2 {
            return Err(invalid("node_timeout", "must be at least 2 seconds"));
        }
        if self.redis_prefix.is_empty()
            || !self
                .redis_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:{}".contains(c))
        {
            return Err(invalid(
                "redis_prefix",
                "use letters, digits, '-', '_', '.', ':' or '{}'",
            ));
        }
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let k = |field: &str| format!("apps[{i}].{field}");
            for (field, value) in [("id", &app.id), ("key", &app.key), ("secret", &app.secret)] {
                if value.is_empty() {
                    return Err(invalid(k(field), "must not be empty"));
                }
            }
            for (field, value) in [("id", &app.id), ("key", &app.key)] {
                if let Some(c) = value
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                {
                    return Err(invalid(
                        k(field),
                        format!("contains {c:?}: use letters, digits, '-', '_' or '.' (it appears in URLs)"),
                    ));
                }
            }
            if !ids.insert(app.id.as_str()) {
                return Err(invalid(k("id"), format!("duplicate app id {:?}", app.id)));
            }
            if !keys.insert(app.key.as_str()) {
                return Err(invalid(
                    k("key"),
                    format!("duplicate app key {:?}", app.key),
                ));
            }
            for (field, value) in [
                ("max_message_size", app.max_message_size),
                (
                    "max_channels_per_connection",
                    app.max_channels_per_connection,
                ),
                ("max_presence_members", app.max_presence_members),
                ("max_presence_member_size", app.max_presence_member_size),
                ("max_event_channels", app.max_event_channels),
                ("max_batch_size", app.max_batch_size),
            ] {
                if value == 0 {
                    return Err(invalid(k(field), "must be at least 1"));
                }
            }
            if app.client_event_rate == 0 {
                return Err(invalid(
                    k("client_event_rate"),
                    "must be at least 1 (disable client events with enable_client_events = false)",
                ));
            }
            if let Some(h) = &app.history {
                if h.channels.is_empty() || h.channels.iter().any(|p| p.is_empty()) {
                    return Err(invalid(
                        k("history.channels"),
                        "name at least one channel pattern (e.g. \"chat-*\")",
                    ));
                }
                if h.size == 0 || h.size > MAX_HISTORY_SIZE {
                    return Err(invalid(
                        k("history.size"),
                        format!("must be between 1 and {MAX_HISTORY_SIZE}"),
                    ));
                }
                if h.ttl == 0 {
                    return Err(invalid(k("history.ttl"), "must be at least 1 second"));
                }
            }
            for (j, hook) in app.webhooks.iter().enumerate() {
                if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                    return Err(invalid(
                        format!("apps[{i}].webhooks[{j}].url"),
                        format!("{:?} must start with http:// or https://", hook.url),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `webhook_vacate_delay_ms` as a duration.
    pub fn webhook_vacate_delay(&self) -> Duration {
        Duration::from_millis(self.webhook_vacate_delay_ms)
    }

    /// `cache_ttl` as a duration.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod history_tests {
    use super::*;

    #[test]
    fn patterns_match_with_stars() {
        assert!(glob_match("chat-*", "chat-"));
        assert!(glob_match("chat-*", "chat-room"));
        assert!(!glob_match("chat-*", "private-chat-room"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("presence-*-game", "presence-x-game"));
        assert!(!glob_match("presence-*-game", "presence-x-games"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXc"));
        assert!(glob_match("news", "news"));
        assert!(!glob_match("news", "news2"));
    }

    #[test]
    fn history_is_read_from_toml_and_validated() {
        let c = HubConfig::from_toml(
            r#"
            [[apps]]
            id = "1"
            key = "k"
            secret = "s"
            history = { channels = ["chat-*", "presence-game-*"], size = 50, ttl = 60 }
            "#,
        )
        .unwrap();
        let app = &c.apps[0];
        assert_eq!(
            app.history_for("chat-1").map(|h| (h.size, h.ttl)),
            Some((50, 60))
        );
        assert!(app.history_for("news").is_none());
        c.validate().unwrap();
        let bad = HubConfig::from_toml(
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nhistory = { channels = [\"x\"], size = 0 }\n",
        )
        .unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("apps[0].history.size"), "{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_serves_the_default_app_on_6001() {
        let c = HubConfig::from_toml("").expect("empty TOML");
        assert_eq!(c.port, 6001);
        assert_eq!(
            c.host, "127.0.0.1",
            "loopback unless the file says otherwise"
        );
        assert_eq!(c.webhook_vacate_delay(), Duration::from_secs(3));
        assert_eq!(c.apps.len(), 1);
        assert_eq!(c.apps[0].id, "app-id");
        assert_eq!(c.apps[0].key, "app-key");
        assert_eq!(c.apps[0].secret, "app-secret");
        assert!(!c.apps[0].enable_client_events);
        assert_eq!(c, HubConfig::default());
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn apps_and_webhooks_are_read_from_toml() {
        let c = HubConfig::from_toml(
            r#"
            port = 7001
            [[apps]]
            id = "1"
            key = "k1"
            secret = "s1"
            max_connections = 5
            [[apps.webhooks]]
            url = "https://example.test/hook"
            events = ["channel_occupied", "member_added"]
            [[apps]]
            id = "2"
            key = "k2"
            secret = "s2"
            "#,
        )
        .expect("valid TOML");
        assert_eq!(c.apps.len(), 2);
        assert_eq!(c.apps[0].max_connections, 5);
        assert_eq!(
            c.apps[0].webhooks[0].events,
            vec![WebhookKind::ChannelOccupied, WebhookKind::MemberAdded]
        );
        assert_eq!(c.apps[1].client_event_rate, 10);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let e = HubConfig::from_toml(
            "[[apps]]\nid='1'\nkey='k'\nsecret='s'\nenable_clent_events=true\n",
        )
        .expect_err("typo must fail");
        assert!(e.to_string().contains("enable_clent_events"), "{e}");
    }

    #[test]
    fn explicit_empty_app_list_fails_validation_naming_apps() {
        let c = HubConfig::from_toml("apps = []").expect("parses");
        assert!(matches!(c.validate(), Err(ConfigError::Invalid { key, .. }) if key == "apps"));
    }

    #[test]
    fn duplicate_key_is_named_with_its_index() {
        let mut c = HubConfig::default();
        c.apps.push(App {
            id: "other".into(),
            ..App::default()
        });
        assert!(
            matches!(c.validate(), Err(ConfigError::Invalid { key, .. }) if key == "apps[1].key")
        );
    }

    #[test]
    fn zero_limits_and_bad_webhook_urls_are_named() {
        let mut c = HubConfig::default();
        c.apps[0].max_batch_size = 0;
        assert!(
            matches!(c.validate(), Err(ConfigError::Invalid { key, .. }) if key == "apps[0].max_batch_size")
        );
        let mut c = HubConfig::default();
        c.apps[0].webhooks.push(Webhook {
            url: "ftp://x".into(),
            events: vec![],
        });
        assert!(
            matches!(c.validate(), Err(ConfigError::Invalid { key, .. }) if key == "apps[0].webhooks[0].url")
        );
        let mut c = HubConfig::default();
        c.apps[0].key = "a/b".into();
        assert!(
            matches!(c.validate(), Err(ConfigError::Invalid { key, .. }) if key == "apps[0].key")
        );
        let c = HubConfig {
            outbound_queue: 0,
            ..HubConfig::default()
        };
        assert!(
            matches!(c.validate(), Err(ConfigError::Invalid { key, .. }) if key == "outbound_queue")
        );
    }

    #[test]
    fn env_overrides_port_and_first_app() {
        let mut c = HubConfig::default();
        let env: HashMap<String, String> = [
            ("DUPLEX_PORT", "8080"),
            ("DUPLEX_APP_ID", "42"),
            ("DUPLEX_APP_KEY", "key42"),
            ("DUPLEX_APP_SECRET", "sec42"),
            ("DUPLEX_APP_ENABLE_CLIENT_EVENTS", "true"),
            ("UNRELATED", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        c.apply_env(&env).expect("valid env");
        assert_eq!(c.port, 8080);
        assert_eq!(
            (
                c.apps[0].id.as_str(),
                c.apps[0].key.as_str(),
                c.apps[0].secret.as_str()
            ),
            ("42", "key42", "sec42")
        );
        assert!(c.apps[0].enable_client_events);
    }

    #[test]
    fn trust_proxy_from_toml_and_env() {
        let c = HubConfig::from_toml(
            "trust_proxy = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\nproxy_protocol = true",
        )
        .expect("parses");
        assert_eq!(c.trust_proxy, ["127.0.0.1/32", "10.0.0.0/8"]);
        assert!(c.proxy_protocol);
        assert!(HubConfig::default().trust_proxy.is_empty());
        let mut c = HubConfig::default();
        let env = HashMap::from([
            (
                "DUPLEX_TRUST_PROXY".to_string(),
                " 192.168.0.0/16, ::1 ,".to_string(),
            ),
            ("DUPLEX_PROXY_PROTOCOL".to_string(), "1".to_string()),
        ]);
        c.apply_env(&env).expect("valid env");
        assert_eq!(c.trust_proxy, ["192.168.0.0/16", "::1"]);
        assert!(c.proxy_protocol);
        let env = HashMap::from([("DUPLEX_PROXY_PROTOCOL".to_string(), "v2".to_string())]);
        assert!(
            matches!(c.apply_env(&env), Err(ConfigError::Invalid { key, .. }) if key == "DUPLEX_PROXY_PROTOCOL")
        );
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let mut c = HubConfig::default();
        let env = HashMap::from([("DUPLEX_PORT".to_string(), "http".to_string())]);
        assert!(
            matches!(c.apply_env(&env), Err(ConfigError::Invalid { key, .. }) if key == "DUPLEX_PORT")
        );
        let env = HashMap::from([(
            "DUPLEX_APP_ENABLE_CLIENT_EVENTS".to_string(),
            "maybe".to_string(),
        )]);
        assert!(
            matches!(c.apply_env(&env), Err(ConfigError::Invalid { key, .. }) if key == "DUPLEX_APP_ENABLE_CLIENT_EVENTS")
        );
    }
}
