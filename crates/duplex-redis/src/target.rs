//! Where Redis is: one server (`redis://`, `rediss://`) or the primary that Redis Sentinel
//! names (`redis+sentinel://`), resolved again on every reconnect so a failover is followed.

use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Client, RedisConnectionInfo};
use url::Url;

use crate::RedisBrokerError;

/// A parsed `--redis` URL.
pub enum Target {
    /// One server.
    Direct(Client),
    /// The primary of `service`, as the sentinels report it.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl Target {
    /// Parses `url`:
    ///
    /// - `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS, rustls with the
    ///   webpki roots);
    /// - `redis+sentinel://[:password@]host1:port1,host2:port2/service[/db]`: the password and
    ///   db apply to the primary; the sentinels are asked without credentials.
    pub fn parse(url: &str) -> Result<Target, RedisBrokerError> {
        Target::parse_with_ca(url, None)
    }

    /// Like [`Target::parse`]; for `rediss://`, `ca_pem` (PEM) replaces the webpki roots, so a
    /// Redis with a certificate from a private CA can be verified.
    pub fn parse_with_ca(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Target, RedisBrokerError> {
        let bad = |why: String| RedisBrokerError::BadUrl {
            url: redact(url),
            why,
        };
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (auth, rest) = match rest.rsplit_once('@') {
                Some((a, r)) => (Some(a), r),
                None => (None, rest),
            };
            let (hosts, path) = rest.split_once('/').ok_or_else(|| {
                bad("expected redis+sentinel://host:port[,host:port...]/service[/db]".into())
            })?;
            let mut parts = path.split('/').filter(|s| !s.is_empty());
            let service = parts
                .next()
                .ok_or_else(|| bad("the service (master) name is missing".into()))?;
            let db = match parts.next() {
                Some(d) => d
                    .parse::<i64>()
                    .map_err(|_| bad(format!("db {d:?} is not a number")))?,
                None => 0,
            };
            let sentinels: Vec<String> = hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{h}"))
                .collect();
            if sentinels.is_empty() {
                return Err(bad("no sentinel address".into()));
            }
            let mut info = RedisConnectionInfo::default().set_db(db);
            if let Some(auth) = auth {
                let (user, password) = auth.split_once(':').unwrap_or(("", auth));
                if !user.is_empty() {
                    info = info.set_username(user);
                }
                if !password.is_empty() {
                    info = info.set_password(password);
                }
            }
            let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
            let client =
                SentinelClient::build(sentinels, service, Some(node), SentinelServerType::Master)
                    .map_err(|e| bad(e.to_string()))?;
            return Ok(Target::Sentinel(tokio::sync::Mutex::new(client)));
        }
        let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(bad(
                "the scheme must be redis://, rediss:// or redis+sentinel://".into(),
            ));
        }
        let client = match ca_pem {
            None => Client::open(url),
            Some(_) if parsed.scheme() != "rediss" => {
                return Err(bad("a CA file applies to rediss:// (TLS) URLs only".into()))
            }
            Some(pem) => Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            ),
        }
        .map_err(|e| bad(e.to_string()))?;
        Ok(Target::Direct(client))
    }

    /// A client for the current primary.
    pub async fn client(&self) -> redis::RedisResult<Client> {
        match self {
            Target::Direct(c) => Ok(c.clone()),
            Target::Sentinel(s) => s.lock().await.async_get_client().await,
        }
    }
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((auth, host)) => match auth.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://***@{host}"),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("rediss://user:pw@h:1/2"), "rediss://user:***@h:1/2");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn urls_parse_or_say_what_is_wrong() {
        assert!(matches!(
            Target::parse("redis://127.0.0.1:6379/0"),
            Ok(Target::Direct(_))
        ));
        assert!(matches!(
            Target::parse("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/1"),
            Ok(Target::Sentinel(_))
        ));
        let e = Target::parse("http://x")
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("scheme"), "{e}");
        let e = Target::parse("redis+sentinel://h:1")
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("service"), "{e}");
    }
}
