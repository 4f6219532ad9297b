//! The K3s-style join endpoints (DESIGN §3 "Joining"), outside the Kubernetes
//! API on the secure port:
//!
//! - `GET /v1-k3rs/cacerts`: the cluster CA, to anyone (a joining node has
//!   no credentials yet; it checks the CA against its token's hash).
//! - `GET /v1-k3rs/client-kubelet.crt`, `/v1-k3rs/serving-kubelet.crt`:
//!   HTTP basic auth `node:<secret>` (the token's secret), headers
//!   `k3rs-Node-Name`, `k3rs-Node-Password` (and `k3rs-Node-IP` for the
//!   serving certificate's SANs). Answers a certificate PEM followed by its
//!   key PEM, signed by `--cluster-signing-cert-file`.
//!
//! Nodes may also authenticate with a bootstrap token (`k3rs token create`):
//! the secret `<id>.<secret>` matching the `kube-system` Secret
//! `bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` with
//! `usage-bootstrap-authentication: "true"`, until its `expiration`.
//! - `GET /v1-k3rs/server-bootstrap`: HTTP basic auth `server:<secret>`
//!   only; answers `--server-bootstrap-file` (the CA material a further
//!   server of an embedded-etcd cluster needs), verbatim.
//!
//! Node passwords: the first node to join under a name stores a PBKDF2 hash
//! of its password in the Secret `<name>.node-password.k3rs` (kube-system).
//! A node presenting another password under that name is refused while the
//! Node object exists; once the Node is deleted (`kubectl delete node`), the
//! name is free again and the next join replaces the hash. Tying the check
//! to the Node object rather than to a garbage-collected owner reference
//! keeps reuse working even when no controller manager runs.

use std::net::IpAddr;
use std::path::Path;

use base64::Engine;
use http::{HeaderMap, Method, Request, header};
use hyper::body::Incoming;
use k3rs_common::pki::{Ca, CertSpec};
use k3rs_common::token::{SERVER_USER, Token};
use serde_json::{Value, json};

use crate::http::{self as h, Resp};
use crate::status::ApiError;
use crate::store::Cas;
use crate::{Api, Config, Error};

/// Every join endpoint lives under this path.
pub const PREFIX: &str = "/v1-k3rs/";

pub const NODE_NAME_HEADER: &str = "k3rs-Node-Name";
pub const NODE_PASSWORD_HEADER: &str = "k3rs-Node-Password";
pub const NODE_IP_HEADER: &str = "k3rs-Node-IP";

/// `type` of the node password Secrets.
pub const PASSWORD_SECRET_TYPE: &str = "k3rs.io/node-password";
const PASSWORD_NAMESPACE: &str = "kube-system";
/// Validity of node certificates (the agent fetches fresh ones each start).
const NODE_CERT_DAYS: i64 = 365;
const PBKDF2_ROUNDS: u32 = 10_000;

/// What the join endpoints serve, loaded once at start.
pub struct Join {
    /// The CA PEM exactly as in its file: the token hash is over these bytes.
    ca_pem: String,
    signer: Option<Signer>,
    server_bootstrap: Option<std::path::PathBuf>,
}

struct Signer {
    ca: Ca,
    token: Token,
}

impl Join {
    /// The CA from `ca_file`; node certificates only when the signing CA
    /// and the join token are configured.
    pub fn load(config: &Config, ca_file: &Path) -> Result<Self, Error> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| Error::Config(format!("{}: {e}", p.display())))
        };
        let signer = match (
            &config.cluster_signing_cert_file,
            &config.cluster_signing_key_file,
            &config.join_token_file,
        ) {
            (Some(cert), Some(key), Some(token)) => {
                let ca = Ca::from_pem(&read(cert)?, &read(key)?)?;
                let token = Token::parse(&read(token)?)
                    .map_err(|e| Error::Config(format!("{}: {e}", token.display())))?;
                Some(Signer { ca, token })
            }
            (None, None, None) => None,
            _ => {
                return Err(Error::Config(
                    "--cluster-signing-cert-file, --cluster-signing-key-file and \
                     --join-token-file go together"
                        .into(),
                ));
            }
        };
        let ca_pem = match &signer {
            Some(s) => s.ca.cert_pem.clone(),
            None => read(ca_file)?,
        };
        Ok(Self {
            ca_pem,
            signer,
            server_bootstrap: config.server_bootstrap_file.clone(),
        })
    }
}

/// Answers a request under `PREFIX`.
pub async fn handle(api: &Api, req: Request<Incoming>) -> Resp {
    if req.method() != Method::GET {
        return h::error(&ApiError::method_not_allowed(format!(
            "{} is not allowed on {}",
            req.method(),
            req.uri().path()
        )));
    }
    let join = &api.join;
    let path = req.uri().path().trim_start_matches(PREFIX);
    let result = match path {
        "cacerts" => Ok(h::bytes_resp(
            200,
            "application/x-pem-file",
            join.ca_pem.clone(),
        )),
        "client-kubelet.crt" => node_cert(api, join, req.headers(), Kind::Client).await,
        "serving-kubelet.crt" => node_cert(api, join, req.headers(), Kind::Serving).await,
        "server-bootstrap" => server_bootstrap(join, req.headers()),
        _ => Err(ApiError::not_found_path()),
    };
    result.unwrap_or_else(|e| h::error(&e))
}

#[derive(Clone, Copy)]
enum Kind {
    Client,
    Serving,
}

async fn node_cert(
    api: &Api,
    join: &Join,
    headers: &HeaderMap,
    kind: Kind,
) -> Result<Resp, ApiError> {
    let Some(signer) = join.signer.as_ref() else {
        return Err(ApiError::unavailable(
            "this API server issues no node certificates (no --cluster-signing-cert-file, \
             --cluster-signing-key-file and --join-token-file)",
        ));
    };
    if !basic_auth_ok(headers, &signer.token) && !bootstrap_token_ok(api, headers).await? {
        return Err(ApiError::unauthorized());
    }
    let name = header_str(headers, NODE_NAME_HEADER)
        .ok_or_else(|| ApiError::bad_request(format!("missing header {NODE_NAME_HEADER}")))?;
    if !valid_node_name(name) {
        return Err(ApiError::bad_request(format!(
            "{NODE_NAME_HEADER} {name:?} is not a valid node name (lower-case DNS subdomain)"
        )));
    }
    let password = header_str(headers, NODE_PASSWORD_HEADER)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("missing header {NODE_PASSWORD_HEADER}")))?;
    check_node_password(api, name, password).await?;
    let spec = match kind {
        Kind::Client => CertSpec {
            common_name: format!("system:node:{name}"),
            organizations: vec!["system:nodes".into()],
            client: true,
            validity_days: NODE_CERT_DAYS,
            ..Default::default()
        },
        Kind::Serving => {
            let mut ips: Vec<IpAddr> = header_str(headers, NODE_IP_HEADER)
                .unwrap_or("")
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            ips.push(IpAddr::from([127, 0, 0, 1]));
            ips.dedup();
            CertSpec {
                common_name: name.to_string(),
                dns_names: vec![name.to_string(), "localhost".into()],
                ip_addresses: ips,
                server: true,
                validity_days: NODE_CERT_DAYS,
                ..Default::default()
            }
        }
    };
    let issued = signer
        .ca
        .issue(&spec)
        .map_err(|e| ApiError::internal(format!("issuing the certificate: {e}")))?;
    tracing::info!(
        node = name,
        kind = match kind {
            Kind::Client => "client",
            Kind::Serving => "serving",
        },
        "issued a node certificate"
    );
    Ok(h::bytes_resp(
        200,
        "application/x-pem-file",
        format!("{}{}", issued.cert_pem, issued.key_pem),
    ))
}

/// The bootstrap bundle for a joining server; only the server token opens it.
fn server_bootstrap(join: &Join, headers: &HeaderMap) -> Result<Resp, ApiError> {
    let (Some(signer), Some(path)) = (join.signer.as_ref(), join.server_bootstrap.as_ref()) else {
        return Err(ApiError::unavailable(
            "this API server takes no further servers (k3rs server runs without --cluster-init)",
        ));
    };
    match basic_auth(headers) {
        Some((user, secret)) if user == SERVER_USER && signer.token.secret_matches(&secret) => {}
        _ => return Err(ApiError::unauthorized()),
    }
    let body = std::fs::read(path).map_err(|e| {
        ApiError::unavailable(format!("the server bootstrap data is not readable: {e}"))
    })?;
    tracing::info!("served the server bootstrap data to a joining server");
    Ok(h::bytes_resp(200, "application/json", body))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `Authorization: Basic base64(node:<secret>)` (K3s also accepts the
/// `server` user with the same secret).
fn basic_auth_ok(headers: &HeaderMap, token: &Token) -> bool {
    match basic_auth(headers) {
        Some((user, secret)) if user == "node" || user == SERVER_USER => {
            token.secret_matches(&secret)
        }
        _ => false,
    }
}

/// `type` of bootstrap token Secrets (upstream's).
pub const BOOTSTRAP_TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

/// Whether the basic-auth password is a live bootstrap token `<id>.<secret>`.
async fn bootstrap_token_ok(api: &Api, headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some((_, password)) = basic_auth(headers) else {
        return Ok(false);
    };
    let Some((id, secret)) = password.split_once('.') else {
        return Ok(false);
    };
    let well_formed = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if !(well_formed(id, 6) && well_formed(secret, 16)) {
        return Ok(false);
    }
    let key = format!("/registry/secrets/{PASSWORD_NAMESPACE}/bootstrap-token-{id}");
    let Some(kv) = api.store.get(&key).await.map_err(store_err)? else {
        return Ok(false);
    };
    let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else {
        return Ok(false);
    };
    let field = |k: &str| -> Option<String> {
        let v = obj.pointer(&format!("/data/{k}"))?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        String::from_utf8(bytes).ok()
    };
    if obj.get("type").and_then(Value::as_str) != Some(BOOTSTRAP_TOKEN_TYPE)
        || field("token-id").as_deref() != Some(id)
        || field("usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return Ok(false);
    }
    let Some(stored) = field("token-secret") else {
        return Ok(false);
    };
    let stored = Token {
        ca_hash: None,
        user: None,
        secret: stored,
    };
    if !stored.secret_matches(secret) {
        return Ok(false);
    }
    if let Some(exp) = field("expiration") {
        match chrono::DateTime::parse_from_rfc3339(exp.trim()) {
            Ok(t) if t > chrono::Utc::now() => {}
            // Expired, or a date nobody can check: refused.
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// (user, password) of `Authorization: Basic ...`.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, secret) = text.split_once(':')?;
    Some((user.to_string(), secret.to_string()))
}

/// A lower-case RFC 1123 subdomain, as Node names are.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn secret_key(node: &str) -> String {
    format!("/registry/secrets/{PASSWORD_NAMESPACE}/{node}.node-password.k3rs")
}

fn store_err(e: crate::store::StoreError) -> ApiError {
    ApiError::unavailable(format!("storage: {e}"))
}

/// Accepts `password` for `node`: it matches the stored hash, or there is
/// none yet, or the Node object is gone (the name is free again).
async fn check_node_password(api: &Api, node: &str, password: &str) -> Result<(), ApiError> {
    let key = secret_key(node);
    // Two rounds: a concurrent first join may win the create between our
    // read and write; then its hash decides.
    for _ in 0..2 {
        let current = api.store.get(&key).await.map_err(store_err)?;
        let written = match &current {
            Some(kv) => {
                let stored = serde_json::from_slice::<Value>(&kv.value)
                    .ok()
                    .and_then(|v| stored_hash(&v));
                if stored
                    .as_deref()
                    .is_some_and(|h| verify_password(h, password))
                {
                    return Ok(());
                }
                let node_exists = api
                    .store
                    .get(&format!("/registry/minions/{node}"))
                    .await
                    .map_err(store_err)?
                    .is_some();
                if node_exists {
                    return Err(ApiError::forbidden(format!(
                        "node name {node:?} is taken: node {node} already joined with another \
                         password. Delete it first (kubectl delete node {node}), pick another \
                         --node-name, or use --with-node-id"
                    )));
                }
                tracing::info!(node, "node password replaced: the Node no longer exists");
                api.store
                    .update(&key, password_secret(node, password), kv.mod_rev)
                    .await
                    .map_err(store_err)?
            }
            None => api
                .store
                .create(&key, password_secret(node, password))
                .await
                .map_err(store_err)?,
        };
        if let Cas::Done(_) = written {
            return Ok(());
        }
    }
    Err(ApiError::new(
        409,
        "Conflict",
        format!("the password of node {node:?} changed concurrently; retry"),
    ))
}

fn password_secret(node: &str, password: &str) -> Vec<u8> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let obj = json!({
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {
            "name": format!("{node}.node-password.k3rs"),
            "namespace": PASSWORD_NAMESPACE,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": crate::object::now_rfc3339(),
            "labels": {"k3rs.io/node-name": node},
        },
        "type": PASSWORD_SECRET_TYPE,
        "data": {"hash": b64(hash_password(password).as_bytes())},
    });
    serde_json::to_vec(&obj).unwrap_or_default()
}

fn stored_hash(secret: &Value) -> Option<String> {
    let b64 = secret.pointer("/data/hash")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// `pbkdf2-sha256$<rounds>$<salt b64>$<hash b64>`: never the password itself.
pub fn hash_password(password: &str) -> String {
    use rand::RngCore;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(b);
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let mut out = [0u8; 32];
    let rounds = std::num::NonZeroU32::new(PBKDF2_ROUNDS).unwrap_or(std::num::NonZeroU32::MIN);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    format!("pbkdf2-sha256${PBKDF2_ROUNDS}${}${}", b64(&salt), b64(&out))
}

/// Whether `password` hashes to `stored` (constant time).
pub fn verify_password(stored: &str, password: &str) -> bool {
    let dec = |s: &str| {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(s)
            .ok()
    };
    let parts: Vec<&str> = stored.split('$').collect();
    let ["pbkdf2-sha256", rounds, salt, hash] = parts.as_slice() else {
        return false;
    };
    let (Some(rounds), Some(salt), Some(hash)) = (
        rounds
            .parse::<u32>()
            .ok()
            .and_then(std::num::NonZeroU32::new),
        dec(salt),
        dec(hash),
    ) else {
        return false;
    };
    ring::pbkdf2::verify(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        &salt,
        password.as_bytes(),
        &hash,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_verify_and_hide_the_password() {
        let h = hash_password("s3cret-pass");
        assert!(!h.contains("s3cret-pass"));
        assert!(verify_password(&h, "s3cret-pass"));
        assert!(!verify_password(&h, "s3cret-pasS"));
        assert!(!verify_password("garbage", "s3cret-pass"));
        assert_ne!(h, hash_password("s3cret-pass"), "salted");
    }

    #[test]
    fn node_names() {
        assert!(valid_node_name("node-1"));
        assert!(valid_node_name("a.b-c.d"));
        assert!(!valid_node_name("Node"));
        assert!(!valid_node_name("a/b"));
        assert!(!valid_node_name("-a"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("a..b"));
    }

    #[test]
    fn basic_auth() {
        let t = Token::parse(
            "K10aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa::server:abc",
        )
        .unwrap();
        let mut hm = HeaderMap::new();
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(!basic_auth_ok(&hm, &t));
        hm.insert(
            header::AUTHORIZATION,
            format!("Basic {}", enc("node:abc")).parse().unwrap(),
        );
        assert!(basic_auth_ok(&hm, &t));
        hm.insert(
            header::AUTHORIZATION,
            format!("Basic {}", enc("node:abd")).parse().unwrap(),
        );
        assert!(!basic_auth_ok(&hm, &t));
        hm.insert(
            header::AUTHORIZATION,
            format!("Basic {}", enc("alice:abc")).parse().unwrap(),
        );
        assert!(!basic_auth_ok(&hm, &t));
    }
}
