//! Join tokens: the format lives in `k3rs_common::token`, shared with the
//! API server (which checks node secrets) and the node agent (which checks
//! the CA it downloads against the token's hash).
//!
//! Bootstrap tokens (`k3rs token create|list|delete`) are upstream's:
//! `kube-system` Secrets `bootstrap-token-<id>` of type
//! `bootstrap.kubernetes.io/token` holding `token-id`, `token-secret`,
//! `expiration` and `usage-bootstrap-authentication`. Agents join with
//! them in K10 form, `K10<ca-hash>::<id>.<secret>`, until they expire or
//! are deleted; the API server's join endpoints look them up.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rand::Rng;

pub use k3rs_common::token::*;

const NAMESPACE: &str = "kube-system";
const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
const NAME_PREFIX: &str = "bootstrap-token-";
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapTokenError {
    #[error("--ttl {0:?}: expected a duration like 24h, 90m, 1h30m or 0 (never expires)")]
    BadTtl(String),
    #[error(
        "{0:?} is not a bootstrap token or token id (expected [a-z0-9]{{6}}, optionally .<secret>)"
    )]
    BadId(String),
    #[error("bootstrap token {0:?} not found")]
    NotFound(String),
    #[error("the API server: {0}")]
    Api(String),
}

/// A bootstrap token as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    pub description: String,
    pub usages: Vec<String>,
}

/// Parses `24h`, `90m`, `1h30m`, `45s`, `2d` or `0` (no expiry: None).
pub fn parse_ttl(s: &str) -> Result<Option<Duration>, BootstrapTokenError> {
    let bad = || BootstrapTokenError::BadTtl(s.to_string());
    let t = s.trim();
    if t == "0" {
        return Ok(None);
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Some(Duration::from_secs(total)))
}

fn random(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// The id in `ID`, `ID.SECRET` or `K10<hash>::ID.SECRET`.
pub fn token_id(s: &str) -> Result<String, BootstrapTokenError> {
    let t = s.trim();
    let t = t.rsplit_once("::").map_or(t, |(_, rest)| rest);
    let id = t.split('.').next().unwrap_or_default();
    let ok = id.len() == 6 && id.bytes().all(|b| ALPHABET.contains(&b));
    if ok {
        Ok(id.to_string())
    } else {
        Err(BootstrapTokenError::BadId(s.to_string()))
    }
}

fn api_err(e: kube::Error) -> BootstrapTokenError {
    BootstrapTokenError::Api(e.to_string())
}

/// Creates a token valid for `ttl` (None: forever); returns it in K10
/// form for the CA whose certificate is `ca_pem`.
pub async fn create(
    client: kube::Client,
    ca_pem: &str,
    ttl: Option<Duration>,
    description: Option<&str>,
) -> Result<String, BootstrapTokenError> {
    let (id, secret) = (random(6), random(16));
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        data.insert(k.to_string(), ByteString(v.into_bytes()));
    };
    put("token-id", id.clone());
    put("token-secret", secret.clone());
    put("usage-bootstrap-authentication", "true".into());
    put("usage-bootstrap-signing", "true".into());
    if let Some(ttl) = ttl {
        let at = chrono::Utc::now()
            + chrono::Duration::from_std(ttl)
                .map_err(|_| BootstrapTokenError::BadTtl(format!("{ttl:?}")))?;
        put(
            "expiration",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    if let Some(d) = description.filter(|d| !d.is_empty()) {
        put("description", d.to_string());
    }
    let secret_obj = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{NAME_PREFIX}{id}")),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client, NAMESPACE)
        .create(&PostParams::default(), &secret_obj)
        .await
        .map_err(api_err)?;
    Ok(format!("K10{}::{id}.{secret}", ca_hash(ca_pem)))
}

/// Every bootstrap token, by id.
pub async fn list(client: kube::Client) -> Result<Vec<BootstrapToken>, BootstrapTokenError> {
    let secrets = Api::<Secret>::namespaced(client, NAMESPACE)
        .list(&ListParams::default())
        .await
        .map_err(api_err)?;
    let mut out: Vec<BootstrapToken> = secrets.items.iter().filter_map(parse).collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn parse(s: &Secret) -> Option<BootstrapToken> {
    if s.type_.as_deref() != Some(SECRET_TYPE) {
        return None;
    }
    let data = s.data.as_ref()?;
    let get = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let usages = data
        .iter()
        .filter(|(_, v)| v.0 == b"true")
        .filter_map(|(k, _)| k.strip_prefix("usage-bootstrap-").map(str::to_string))
        .collect();
    Some(BootstrapToken {
        id: get("token-id")?,
        secret: get("token-secret")?,
        expires: get("expiration")
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(e.trim()).ok())
            .map(|t| t.with_timezone(&chrono::Utc)),
        description: get("description").unwrap_or_default(),
        usages,
    })
}

/// Deletes the token with `id` (any form `token_id` takes).
pub async fn delete(client: kube::Client, id: &str) -> Result<String, BootstrapTokenError> {
    let id = token_id(id)?;
    match Api::<Secret>::namespaced(client, NAMESPACE)
        .delete(&format!("{NAME_PREFIX}{id}"), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(id),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(BootstrapTokenError::NotFound(id)),
        Err(e) => Err(api_err(e)),
    }
}

/// kubeadm's table: TOKEN, TTL, EXPIRES, USAGES, DESCRIPTION.
pub fn render(tokens: &[BootstrapToken], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut rows = vec![[
        "TOKEN".to_string(),
        "TTL".into(),
        "EXPIRES".into(),
        "USAGES".into(),
        "DESCRIPTION".into(),
    ]];
    for t in tokens {
        let (ttl, expires) = match t.expires {
            None => ("<forever>".to_string(), "<never>".to_string()),
            Some(at) => (
                human_ttl(at - now),
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
        };
        let usages = if t.usages.is_empty() {
            "<none>".to_string()
        } else {
            t.usages.join(",")
        };
        let description = if t.description.is_empty() {
            "<none>".to_string()
        } else {
            t.description.clone()
        };
        rows.push([
            format!("{}.{}", t.id, t.secret),
            ttl,
            expires,
            usages,
            description,
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// `23h`, `59m`, `3d`, or `<expired>`.
fn human_ttl(left: chrono::Duration) -> String {
    let s = left.num_seconds();
    if s <= 0 {
        "<expired>".into()
    } else if s >= 2 * 86400 {
        format!("{}d", s / 86400)
    } else if s >= 3600 {
        format!("{}h", s / 3600)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("24h").unwrap(), Some(Duration::from_secs(86400)));
        assert_eq!(parse_ttl("1h30m").unwrap(), Some(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("0").unwrap(), None);
        for bad in ["", "h", "24", "1x", "-1h", "0h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_from_every_form() {
        assert_eq!(token_id("abc123").unwrap(), "abc123");
        assert_eq!(token_id("abc123.0123456789abcdef").unwrap(), "abc123");
        let k10 = format!("K10{}::abc123.0123456789abcdef", "a".repeat(64));
        assert_eq!(token_id(&k10).unwrap(), "abc123");
        assert!(token_id("ABC123").is_err());
        assert!(token_id("abc").is_err());
    }

    #[test]
    fn table() {
        let now = chrono::Utc::now();
        let t = |id: &str, exp: Option<i64>| BootstrapToken {
            id: id.into(),
            secret: "0123456789abcdef".into(),
            expires: exp.map(|h| now + chrono::Duration::hours(h)),
            description: String::new(),
            usages: vec!["authentication".into(), "signing".into()],
        };
        let out = render(
            &[
                t("aaaaaa", Some(24)),
                t("bbbbbb", None),
                t("cccccc", Some(-1)),
            ],
            now,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("TOKEN") && lines[0].contains("DESCRIPTION"));
        assert!(lines[1].starts_with("aaaaaa.0123456789abcdef") && lines[1].contains(" 24h "));
        assert!(lines[2].contains("<forever>") && lines[2].contains("<never>"));
        assert!(lines[3].contains("<expired>"));
        assert!(lines[1].contains("authentication,signing"));
    }
}
