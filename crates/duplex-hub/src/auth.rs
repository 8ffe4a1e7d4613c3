//! Signatures: channel authorization, user authentication, REST request signing, webhooks.
//!
//! Owns every HMAC in the hub. All signatures are HMAC-SHA256 hex digests keyed by the app
//! secret; verification decodes the presented hex and compares in constant time
//! (`Mac::verify_slice`). It never looks anything up: callers pass the key and secret.
//!
//! | what | string signed |
//! | --- | --- |
//! | private/encrypted channel | `<socket_id>:<channel>` |
//! | presence channel | `<socket_id>:<channel>:<channel_data>` |
//! | user sign-in | `<socket_id>::user::<user_data>` |
//! | REST request | `METHOD\nPATH\n<sorted lowercase query without auth_signature>` |
//! | webhook body | the body |

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far `auth_timestamp` may be from the server clock, in seconds (REST API docs: 600 s).
pub const MAX_TIMESTAMP_SKEW_SECS: u64 = 600;

fn mac(secret: &str) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// Hex HMAC-SHA256 of `message` keyed by `secret`.
///
/// ```
/// // The Pusher docs' worked example for private-foobar.
/// assert_eq!(
///     duplex_hub::auth::sign("7ad3773142a6692b25b8", "1234.1234:private-foobar"),
///     "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
/// );
/// ```
pub fn sign(secret: &str, message: &str) -> String {
    let mut m = mac(secret);
    m.update(message.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Constant-time check that `signature_hex` is the HMAC of `parts` (concatenated).
fn verify_parts(secret: &str, parts: &[&[u8]], signature_hex: &str) -> bool {
    let Ok(sig) = hex::decode(signature_hex) else {
        return false;
    };
    let mut m = mac(secret);
    for p in parts {
        m.update(p);
    }
    m.verify_slice(&sig).is_ok()
}

/// Why a subscription or sign-in `auth` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `auth` was given where one is required.
    #[error("missing auth")]
    Missing,
    /// Not of the form `<key>:<hex>`.
    #[error("auth must be <app key>:<hex signature>")]
    Malformed,
    /// The key part is not this app's key.
    #[error("auth key does not match the app key")]
    WrongKey,
    /// The signature does not match.
    #[error("invalid signature")]
    BadSignature,
}

fn split_auth<'a>(key: &str, auth: &'a str) -> Result<&'a str, AuthError> {
    let (k, sig) = auth.split_once(':').ok_or(AuthError::Malformed)?;
    if k != key {
        return Err(AuthError::WrongKey);
    }
    Ok(sig)
}

/// The `auth` string an app server returns for a channel subscription: `<key>:<signature>`
/// over `<socket_id>:<channel>[:<channel_data>]`.
pub fn channel_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let msg = match channel_data {
        Some(d) => format!("{socket_id}:{channel}:{d}"),
        None => format!("{socket_id}:{channel}"),
    };
    format!("{key}:{}", sign(secret, &msg))
}

/// Verifies a subscription's `auth` for a private, encrypted or presence channel.
pub fn verify_channel_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> Result<(), AuthError> {
    let sig = split_auth(key, auth)?;
    let ok = match channel_data {
        Some(d) => verify_parts(
            secret,
            &[
                socket_id.as_bytes(),
                b":",
                channel.as_bytes(),
                b":",
                d.as_bytes(),
            ],
            sig,
        ),
        None => verify_parts(
            secret,
            &[socket_id.as_bytes(), b":", channel.as_bytes()],
            sig,
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// The `auth` string for `pusher:signin`: `<key>:<signature>` over
/// `<socket_id>::user::<user_data>`.
pub fn user_auth(key: &str, secret: &str, socket_id: &str, user_data: &str) -> String {
    format!(
        "{key}:{}",
        sign(secret, &format!("{socket_id}::user::{user_data}"))
    )
}

/// Verifies a `pusher:signin` `auth`.
pub fn verify_user_auth(
    key: &str,
    secret: &str,
    socket_id: &str,
    user_data: &str,
    auth: &str,
) -> Result<(), AuthError> {
    let sig = split_auth(key, auth)?;
    if verify_parts(
        secret,
        &[socket_id.as_bytes(), b"::user::", user_data.as_bytes()],
        sig,
    ) {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// Hex MD5 of a request body (`body_md5`).
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// `X-Pusher-Signature` for a webhook body.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// Why a REST request's signature was refused; every variant maps to HTTP 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    /// A required query parameter is absent.
    #[error("missing query parameter {0}")]
    MissingParam(&'static str),
    /// A parameter appears twice.
    #[error("duplicate query parameter {0}")]
    DuplicateParam(String),
    /// `auth_key` is not this app's key.
    #[error("unknown auth_key")]
    WrongKey,
    /// `auth_version` is not `1.0`.
    #[error("unsupported auth_version {0:?}, expected 1.0")]
    UnsupportedVersion(String),
    /// `auth_timestamp` is not a number.
    #[error("auth_timestamp is not a number")]
    BadTimestamp,
    /// `auth_timestamp` is more than 600 s away from the server clock.
    #[error("timestamp expired: {skew_secs} s from server time, at most {MAX_TIMESTAMP_SKEW_SECS} s allowed (check the clock)")]
    TimestampExpired {
        /// Absolute difference in seconds.
        skew_secs: u64,
    },
    /// A non-empty body came without `body_md5`.
    #[error("missing body_md5 for a non-empty body")]
    MissingBodyMd5,
    /// `body_md5` does not match the body.
    #[error("body_md5 does not match the body")]
    BodyMd5Mismatch,
    /// The signature does not match.
    #[error("invalid signature: expected HMAC SHA256 hex digest of {string_to_sign:?}")]
    BadSignature {
        /// What the server signed, to help SDK authors (contains no secret).
        string_to_sign: String,
    },
}

/// The string a REST request signature covers: method, path, and the query parameters except
/// `auth_signature`, keys lowercased, sorted by key, joined unescaped.
pub fn request_string_to_sign(method: &str, path: &str, query: &[(String, String)]) -> String {
    let mut params: Vec<(String, &str)> = query
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("auth_signature"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    params.sort();
    let joined: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        joined.join("&")
    )
}

/// Signs a REST request the way server SDKs do, returning the `auth_signature` value.
pub fn sign_request(secret: &str, method: &str, path: &str, query: &[(String, String)]) -> String {
    sign(secret, &request_string_to_sign(method, path, query))
}

/// Verifies a signed REST request (`auth_key`, `auth_timestamp`, `auth_version`, `body_md5`,
/// `auth_signature` in the decoded query), at server time `now_unix_secs`.
pub fn verify_request(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
    now_unix_secs: u64,
) -> Result<(), RequestAuthError> {
    let get = |name: &'static str| -> Result<Option<&str>, RequestAuthError> {
        let mut found = None;
        for (k, v) in query {
            if k.eq_ignore_ascii_case(name) {
                if found.is_some() {
                    return Err(RequestAuthError::DuplicateParam(name.to_owned()));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    };
    let auth_key = get("auth_key")?.ok_or(RequestAuthError::MissingParam("auth_key"))?;
    if auth_key != key {
        return Err(RequestAuthError::WrongKey);
    }
    let ts = get("auth_timestamp")?.ok_or(RequestAuthError::MissingParam("auth_timestamp"))?;
    let ts: u64 = ts.parse().map_err(|_| RequestAuthError::BadTimestamp)?;
    let skew_secs = ts.abs_diff(now_unix_secs);
    if skew_secs > MAX_TIMESTAMP_SKEW_SECS {
        return Err(RequestAuthError::TimestampExpired { skew_secs });
    }
    let version = get("auth_version")?.ok_or(RequestAuthError::MissingParam("auth_version"))?;
    if version != "1.0" {
        return Err(RequestAuthError::UnsupportedVersion(
            version.chars().take(16).collect(),
        ));
    }
    match get("body_md5")? {
        Some(md5) if !md5.eq_ignore_ascii_case(&body_md5(body)) => {
            return Err(RequestAuthError::BodyMd5Mismatch)
        }
        None if !body.is_empty() => return Err(RequestAuthError::MissingBodyMd5),
        _ => {}
    }
    let signature =
        get("auth_signature")?.ok_or(RequestAuthError::MissingParam("auth_signature"))?;
    let string_to_sign = request_string_to_sign(method, path, query);
    if verify_parts(secret, &[string_to_sign.as_bytes()], signature) {
        Ok(())
    } else {
        Err(RequestAuthError::BadSignature { string_to_sign })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Credentials of the Pusher docs' worked examples.
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    #[test]
    fn private_channel_signature_matches_documented_example() {
        assert_eq!(
            channel_auth(KEY, SECRET, "1234.1234", "private-foobar", None),
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
    }

    #[test]
    fn presence_channel_signature_matches_documented_example() {
        // The docs print `"Mr. Channels"` in the Ruby source, but the signature they show was
        // made before the product's rename, over `"Mr. Pusher"`.
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
        let auth =
            "278d425bdf160c739803:afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c";
        assert_eq!(
            channel_auth(KEY, SECRET, "1234.1234", "presence-foobar", Some(data)),
            auth
        );
        assert_eq!(
            verify_channel_auth(
                KEY,
                SECRET,
                "1234.1234",
                "presence-foobar",
                Some(data),
                auth
            ),
            Ok(())
        );
    }

    #[test]
    fn user_signin_signature_matches_documented_example() {
        let auth =
            "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba";
        assert_eq!(
            user_auth(KEY, SECRET, "1234.1234", r#"{"id":"12345"}"#),
            auth
        );
        assert_eq!(
            verify_user_auth(KEY, SECRET, "1234.1234", r#"{"id":"12345"}"#, auth),
            Ok(())
        );
    }

    #[test]
    fn channel_auth_for_another_socket_or_channel_is_rejected() {
        let auth = channel_auth(KEY, SECRET, "1.1", "private-a", None);
        assert_eq!(
            verify_channel_auth(KEY, SECRET, "1.2", "private-a", None, &auth),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_channel_auth(KEY, SECRET, "1.1", "private-b", None, &auth),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_channel_auth("other", SECRET, "1.1", "private-a", None, &auth),
            Err(AuthError::WrongKey)
        );
        assert_eq!(
            verify_channel_auth(KEY, SECRET, "1.1", "private-a", None, "nocolon"),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            verify_channel_auth(KEY, SECRET, "1.1", "private-a", None, &format!("{KEY}:zz")),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn presence_auth_covers_channel_data() {
        let auth = channel_auth(KEY, SECRET, "1.1", "presence-a", Some(r#"{"user_id":"1"}"#));
        assert_eq!(
            verify_channel_auth(
                KEY,
                SECRET,
                "1.1",
                "presence-a",
                Some(r#"{"user_id":"2"}"#),
                &auth
            ),
            Err(AuthError::BadSignature)
        );
    }

    fn doc_query() -> Vec<(String, String)> {
        [
            ("auth_key", KEY),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
            (
                "auth_signature",
                "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    const DOC_BODY: &str =
        r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;

    #[test]
    fn rest_signature_matches_documented_worked_example() {
        assert_eq!(
            body_md5(DOC_BODY.as_bytes()),
            "ec365a775a4cd0599faeb73354201b6f"
        );
        assert_eq!(
            verify_request(
                KEY,
                SECRET,
                "POST",
                "/apps/3/events",
                &doc_query(),
                DOC_BODY.as_bytes(),
                1353088179
            ),
            Ok(())
        );
    }

    #[test]
    fn rest_request_older_than_600_seconds_is_rejected() {
        let r = verify_request(
            KEY,
            SECRET,
            "POST",
            "/apps/3/events",
            &doc_query(),
            DOC_BODY.as_bytes(),
            1353088179 + 601,
        );
        assert_eq!(
            r,
            Err(RequestAuthError::TimestampExpired { skew_secs: 601 })
        );
        let ok = verify_request(
            KEY,
            SECRET,
            "POST",
            "/apps/3/events",
            &doc_query(),
            DOC_BODY.as_bytes(),
            1353088179 - 600,
        );
        assert_eq!(ok, Ok(()));
    }

    #[test]
    fn rest_request_with_tampered_body_fails_body_md5() {
        let r = verify_request(
            KEY,
            SECRET,
            "POST",
            "/apps/3/events",
            &doc_query(),
            b"{}",
            1353088179,
        );
        assert_eq!(r, Err(RequestAuthError::BodyMd5Mismatch));
    }

    #[test]
    fn rest_request_with_wrong_path_or_method_fails_signature() {
        let r = verify_request(
            KEY,
            SECRET,
            "POST",
            "/apps/4/events",
            &doc_query(),
            DOC_BODY.as_bytes(),
            1353088179,
        );
        assert!(matches!(r, Err(RequestAuthError::BadSignature { .. })));
    }

    #[test]
    fn rest_request_missing_params_or_wrong_version_are_named() {
        let mut q = doc_query();
        q.retain(|(k, _)| k != "auth_key");
        assert_eq!(
            verify_request(
                KEY,
                SECRET,
                "POST",
                "/apps/3/events",
                &q,
                DOC_BODY.as_bytes(),
                1353088179
            ),
            Err(RequestAuthError::MissingParam("auth_key"))
        );
        let mut q = doc_query();
        q.retain(|(k, _)| k != "body_md5");
        assert_eq!(
            verify_request(
                KEY,
                SECRET,
                "POST",
                "/apps/3/events",
                &q,
                DOC_BODY.as_bytes(),
                1353088179
            ),
            Err(RequestAuthError::MissingBodyMd5)
        );
        let mut q = doc_query();
        q[2].1 = "2.0".into();
        assert_eq!(
            verify_request(
                KEY,
                SECRET,
                "POST",
                "/apps/3/events",
                &q,
                DOC_BODY.as_bytes(),
                1353088179
            ),
            Err(RequestAuthError::UnsupportedVersion("2.0".into()))
        );
        let mut q = doc_query();
        q.push(("auth_key".into(), KEY.into()));
        assert_eq!(
            verify_request(
                KEY,
                SECRET,
                "POST",
                "/apps/3/events",
                &q,
                DOC_BODY.as_bytes(),
                1353088179
            ),
            Err(RequestAuthError::DuplicateParam("auth_key".into()))
        );
    }

    #[test]
    fn string_to_sign_sorts_lowercases_and_drops_signature() {
        let q: Vec<(String, String)> = vec![
            ("Name".into(), "Something else".into()),
            ("auth_signature".into(), "x".into()),
            ("auth_key".into(), "foo".into()),
        ];
        assert_eq!(
            request_string_to_sign("get", "/some/resource", &q),
            "GET\n/some/resource\nauth_key=foo&name=Something else"
        );
    }

    #[test]
    fn get_request_without_body_needs_no_body_md5() {
        let mut q: Vec<(String, String)> = vec![
            ("auth_key".into(), KEY.into()),
            ("auth_timestamp".into(), "100".into()),
            ("auth_version".into(), "1.0".into()),
            ("info".into(), "user_count".into()),
        ];
        let sig = sign_request(SECRET, "GET", "/apps/3/channels", &q);
        q.push(("auth_signature".into(), sig));
        assert_eq!(
            verify_request(KEY, SECRET, "GET", "/apps/3/channels", &q, b"", 100),
            Ok(())
        );
    }

    #[test]
    fn webhook_signature_is_hmac_of_body() {
        assert_eq!(
            webhook_signature(SECRET, b"1234.1234:private-foobar"),
            sign(SECRET, "1234.1234:private-foobar")
        );
    }
}
