//! `duplex serve` settings: file → env → flags, merged into a validated [`HubConfig`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use duplex_hub::config::{App, HubConfig};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `duplex serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML configuration file (apps, limits, webhooks). Env variables and flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to bind. Default: the config file's `host`, itself 127.0.0.1 unless set (the
    /// embedded default app has well-known credentials); 0.0.0.0 listens on all interfaces.
    #[arg(long, env = "DUPLEX_HOST")]
    pub host: Option<String>,
    /// Port for the WebSocket endpoint and the HTTP API (default 6001; 0 picks a free port).
    /// Env: DUPLEX_PORT.
    #[arg(long)]
    pub port: Option<u16>,
    /// Id of the first app (REST paths /apps/{id}/...). Env: DUPLEX_APP_ID.
    #[arg(long)]
    pub app_id: Option<String>,
    /// Key of the first app (WebSocket path /app/{key}). Env: DUPLEX_APP_KEY.
    #[arg(long)]
    pub app_key: Option<String>,
    /// Secret of the first app. Env: DUPLEX_APP_SECRET.
    #[arg(long)]
    pub app_secret: Option<String>,
    /// Allow client-* events on the first app. Env: DUPLEX_APP_ENABLE_CLIENT_EVENTS.
    #[arg(long)]
    pub enable_client_events: bool,
    /// TLS certificate chain (PEM); with --tls-key, serve wss:// and https://.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// On SIGTERM/SIGINT, how long to wait for connections to close before exiting (seconds).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub drain_timeout: u64,
    /// Serve the demo page's auth endpoint (POST /demo/auth, signs ANY channel for the first
    /// app: demo only). On by default only while the first app uses the default credentials.
    #[arg(long, conflicts_with = "no_demo")]
    pub demo: bool,
    /// Never serve the demo page and its auth endpoint.
    #[arg(long)]
    pub no_demo: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Run as one node of a cluster sharing state through Redis: `redis://[:password@]host:port/db`,
    /// `rediss://...` (TLS), or `redis+sentinel://host:port,host:port/master-name[/db]`.
    /// Without it the node runs alone with the in-process broker. Env: DUPLEX_REDIS_URL;
    /// TOML: `redis_url`.
    #[arg(long = "redis", value_name = "URL")]
    pub redis: Option<String>,
    /// PEM file of the private CA that signed Redis's certificate, for `rediss://` (default:
    /// the webpki roots). Env: DUPLEX_REDIS_CA; TOML: `redis_ca`.
    #[arg(long, value_name = "PEM")]
    pub redis_ca: Option<PathBuf>,
    /// Prefix of the cluster's Redis keys (default `duplex`), so several clusters or
    /// environments can share one Redis. Env: DUPLEX_REDIS_PREFIX; TOML: `redis_prefix`.
    #[arg(long, value_name = "PREFIX")]
    pub redis_prefix: Option<String>,
    /// Seconds after which a node that stopped renewing its lease in Redis is dead: its
    /// presence members and subscriptions are removed (default 20, so within 25 s).
    /// Env: DUPLEX_NODE_TIMEOUT; TOML: `node_timeout`.
    #[arg(long, value_name = "SECS")]
    pub node_timeout: Option<u64>,
    /// Load balancers to believe: the client address in `X-Forwarded-For` (and in PROXY
    /// headers, with --proxy-protocol) is used only when the TCP peer is in one of these
    /// networks (`10.0.0.0/8`, `127.0.0.1`, `::1/128`, comma-separated). Without it forwarded
    /// addresses are ignored. Env: DUPLEX_TRUST_PROXY; TOML: `trust_proxy = ["10.0.0.0/8"]`.
    #[arg(long, value_name = "CIDR[,CIDR...]", value_delimiter = ',')]
    pub trust_proxy: Option<Vec<String>>,
    /// Expect a PROXY protocol header (v1 or v2, e.g. HAProxy `send-proxy-v2`) on every
    /// accepted TCP connection; connections from peers outside --trust-proxy, or without a
    /// valid header, are closed. Env: DUPLEX_PROXY_PROTOCOL; TOML: `proxy_protocol = true`.
    #[arg(long)]
    pub proxy_protocol: bool,
}

/// Everything `serve` needs beyond the hub config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The validated hub configuration (host and port included).
    pub hub: HubConfig,
    /// TLS files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Bound on the shutdown drain.
    pub drain_timeout: Duration,
    /// Serve `/` and `/demo/auth`.
    pub demo: bool,
    /// Which peers may name the client (`X-Forwarded-For`, PROXY protocol).
    pub trust: crate::proxy::TrustProxy,
}

/// Merges the file, `env` and the flags, in that order, and validates.
pub fn build(args: &ServeArgs, env: &HashMap<String, String>) -> anyhow::Result<Settings> {
    let mut hub = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            HubConfig::from_toml(&text).with_context(|| path.display().to_string())?
        }
        None => HubConfig::default(),
    };
    hub.apply_env(env)?;
    if let Some(host) = &args.host {
        hub.host = host.clone();
    }
    if let Some(port) = args.port {
        hub.port = port;
    }
    if let Some(url) = &args.redis {
        hub.redis_url = Some(url.clone());
    }
    if let Some(ca) = &args.redis_ca {
        hub.redis_ca = Some(ca.display().to_string());
    }
    if let Some(prefix) = &args.redis_prefix {
        hub.redis_prefix = prefix.clone();
    }
    if let Some(t) = args.node_timeout {
        hub.node_timeout = t;
    }
    if let Some(nets) = &args.trust_proxy {
        hub.trust_proxy = nets
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
    }
    if args.proxy_protocol {
        hub.proxy_protocol = true;
    }
    let touches_app = args.app_id.is_some()
        || args.app_key.is_some()
        || args.app_secret.is_some()
        || args.enable_client_events;
    if touches_app && hub.apps.is_empty() {
        hub.apps.push(App::default());
    }
    if let Some(app) = hub.apps.first_mut() {
        if let Some(v) = &args.app_id {
            app.id = v.clone();
        }
        if let Some(v) = &args.app_key {
            app.key = v.clone();
        }
        if let Some(v) = &args.app_secret {
            app.secret = v.clone();
        }
        if args.enable_client_events {
            app.enable_client_events = true;
        }
    }
    hub.validate()?;
    let trust = crate::proxy::TrustProxy::new(&hub.trust_proxy, hub.proxy_protocol)
        .map_err(|e| anyhow::anyhow!("config key `trust_proxy`: {e}"))?;
    let default_secret = hub
        .apps
        .first()
        .is_some_and(|a| a.secret == App::default().secret);
    let demo = !args.no_demo && (args.demo || default_secret);
    Ok(Settings {
        hub,
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        drain_timeout: Duration::from_secs(args.drain_timeout),
        demo,
        trust,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ServeArgs,
    }

    fn args(v: &[&str]) -> ServeArgs {
        T::parse_from(std::iter::once("t").chain(v.iter().copied())).a
    }

    #[test]
    fn defaults_are_loopback_and_the_default_app() {
        let s = build(&args(&[]), &HashMap::new()).unwrap();
        assert_eq!(s.hub.host, "127.0.0.1");
        assert_eq!(s.hub.port, 6001);
        assert_eq!(s.hub.apps[0].key, "app-key");
        assert!(s.demo);
    }

    #[test]
    fn flags_override_env() {
        let env = HashMap::from([
            ("DUPLEX_PORT".to_string(), "7000".to_string()),
            ("DUPLEX_APP_KEY".to_string(), "env-key".to_string()),
            ("DUPLEX_APP_SECRET".to_string(), "env-secret".to_string()),
        ]);
        let s = build(&args(&["--port", "7001", "--enable-client-events"]), &env).unwrap();
        assert_eq!(s.hub.port, 7001);
        assert_eq!(s.hub.apps[0].key, "env-key");
        assert!(s.hub.apps[0].enable_client_events);
        assert!(!s.demo, "demo auth is off for non-default credentials");
    }

    #[test]
    fn redis_from_env_then_flags() {
        let env = HashMap::from([
            (
                "DUPLEX_REDIS_URL".to_string(),
                "redis://127.0.0.1:1/0".to_string(),
            ),
            ("DUPLEX_REDIS_PREFIX".to_string(), "staging".to_string()),
        ]);
        let s = build(&args(&[]), &env).unwrap();
        assert_eq!(s.hub.redis_url.as_deref(), Some("redis://127.0.0.1:1/0"));
        assert_eq!(s.hub.redis_prefix, "staging");
        assert_eq!(s.hub.node_timeout, 20);
        let s = build(
            &args(&["--redis", "redis://127.0.0.1:2/0", "--node-timeout", "5"]),
            &env,
        )
        .unwrap();
        assert_eq!(s.hub.redis_url.as_deref(), Some("redis://127.0.0.1:2/0"));
        assert_eq!(s.hub.node_timeout, 5);
        let s = build(&args(&[]), &HashMap::new()).unwrap();
        assert_eq!(
            s.hub.redis_url, None,
            "alone on the memory broker by default"
        );
    }

    #[test]
    fn trust_proxy_from_env_then_flags() {
        let s = build(&args(&[]), &HashMap::new()).unwrap();
        assert!(s.trust.nets.is_empty() && !s.trust.proxy_protocol);
        let env = HashMap::from([("DUPLEX_TRUST_PROXY".to_string(), "10.0.0.0/8".to_string())]);
        let s = build(&args(&[]), &env).unwrap();
        assert!(s.trust.trusts("10.1.2.3".parse().unwrap()));
        let s = build(
            &args(&["--trust-proxy", "127.0.0.1/32,::1", "--proxy-protocol"]),
            &env,
        )
        .unwrap();
        assert!(s.trust.proxy_protocol);
        assert!(s.trust.trusts("::1".parse().unwrap()));
        assert!(
            !s.trust.trusts("10.1.2.3".parse().unwrap()),
            "flags replace env"
        );
        let e = build(&args(&["--proxy-protocol"]), &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("trust_proxy"), "{e}");
        let e = build(&args(&["--trust-proxy", "10.0.0.0/99"]), &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("trust_proxy") && e.contains("10.0.0.0/99"),
            "{e}"
        );
    }

    #[test]
    fn bad_env_names_the_variable() {
        let env = HashMap::from([("DUPLEX_PORT".to_string(), "x".to_string())]);
        let e = build(&args(&[]), &env).unwrap_err().to_string();
        assert!(e.contains("DUPLEX_PORT"), "{e}");
    }
}
