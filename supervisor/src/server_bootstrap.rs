//! What servers of one embedded-etcd cluster share, and how a further server
//! gets it: the cluster CA, the service-account key and the etcd CAs, plus
//! where a running etcd member answers (for MemberAdd).
//!
//! Every `--cluster-init`/`--server` server writes this bundle to
//! `<data-dir>/server/cred/server-bootstrap.json` (0600) and its API server
//! serves it at `/v1-k3rs/server-bootstrap` to HTTP basic auth
//! `server:<token secret>`. A joining server first fetches `/v1-k3rs/cacerts`
//! and checks it against the token's `K10<hash>` (as agents do), then
//! fetches the bundle over TLS verified with that CA.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k3rs_common::pki;
use k3rs_common::token::{SERVER_USER, Token, TokenError};
use serde::{Deserialize, Serialize};

/// Files of `<data-dir>/server/tls/` every server of a cluster shares.
pub const SHARED_FILES: &[&str] = &[
    "server-ca.crt",
    "server-ca.key",
    "service.key",
    "etcd/server-ca.crt",
    "etcd/server-ca.key",
    "etcd/peer-ca.crt",
    "etcd/peer-ca.key",
];

/// The bundle's file name under `<data-dir>/server/cred/`.
pub const FILE_NAME: &str = "server-bootstrap.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// Path under `server/tls/` → PEM text.
    pub files: BTreeMap<String, String>,
    /// Client URLs of a running etcd member.
    pub etcd_client_urls: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerJoinError {
    #[error("--token: {0}")]
    BadToken(TokenError),
    #[error("--server {0:?} is not an https:// URL")]
    BadServer(String),
    #[error(
        "the CA served by {server} does not match the hash in --token: this token belongs to \
         another cluster, or something is intercepting the connection; refusing to join"
    )]
    CaMismatch { server: String },
    #[error("{server} refused this server: {message}")]
    Refused { server: String, message: String },
    #[error("{server}: {message}")]
    Unreachable { server: String, message: String },
    #[error("{server}: unexpected answer: {message}")]
    BadResponse { server: String, message: String },
    #[error(
        "{} exists and differs from {server}'s: this data dir belongs to another cluster; \
         use an empty --data-dir to join",
        path.display()
    )]
    OtherCluster { path: PathBuf, server: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
}

impl ServerJoinError {
    /// Worth retrying: the first server may still be starting.
    pub fn is_transient(&self) -> bool {
        matches!(self, ServerJoinError::Unreachable { .. })
    }
}

/// Writes this server's bundle (0600); returns its path.
pub fn write(
    tls: &Path,
    cred: &Path,
    etcd_client_url: &str,
) -> Result<PathBuf, crate::bootstrap::BootstrapError> {
    let mut files = BTreeMap::new();
    for name in SHARED_FILES {
        let p = tls.join(name);
        let text =
            std::fs::read_to_string(&p).map_err(|source| crate::bootstrap::BootstrapError::Io {
                path: p.clone(),
                source,
            })?;
        files.insert(name.to_string(), text);
    }
    let bundle = Bundle {
        files,
        etcd_client_urls: vec![etcd_client_url.to_string()],
    };
    let path = cred.join(FILE_NAME);
    let text = serde_json::to_string(&bundle).unwrap_or_default();
    pki::write_private(&path, &text)?;
    Ok(path)
}

/// Fetches the bundle from `server`, retrying while it is unreachable (up
/// to `patience`); refusals and a CA that does not match are final.
pub async fn fetch(
    server: &str,
    token: &str,
    patience: Duration,
) -> Result<Bundle, ServerJoinError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = k3rs_common::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        match fetch_once(server, token).await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?d, "cannot reach the server to join yet");
                tokio::time::sleep(d).await;
            }
            other => return other,
        }
    }
}

async fn fetch_once(server: &str, token: &str) -> Result<Bundle, ServerJoinError> {
    let token = Token::parse(token).map_err(ServerJoinError::BadToken)?;
    let server = server.trim().trim_end_matches('/').to_string();
    let uri: http::Uri = server
        .parse()
        .ok()
        .filter(|u: &http::Uri| u.scheme_str() == Some("https"))
        .ok_or_else(|| ServerJoinError::BadServer(server.clone()))?;
    let ca_pem = get(&uri, &server, None, "/v1-k3rs/cacerts", None).await?;
    if token.ca_hash.is_none() {
        tracing::warn!(
            "the token has no K10<hash> prefix: trusting the CA {server} serves without checking it"
        );
    } else if !token.matches_ca(&ca_pem) {
        return Err(ServerJoinError::CaMismatch { server });
    }
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{SERVER_USER}:{}", token.secret));
    let text = get(
        &uri,
        &server,
        Some(&ca_pem),
        "/v1-k3rs/server-bootstrap",
        Some(format!("Basic {basic}")),
    )
    .await?;
    let bundle: Bundle = serde_json::from_str(&text).map_err(|e| ServerJoinError::BadResponse {
        server: server.clone(),
        message: format!("server bootstrap data: {e}"),
    })?;
    // The CA in the bundle must be the one the token vouched for.
    if bundle.files.get("server-ca.crt") != Some(&ca_pem) {
        return Err(ServerJoinError::BadResponse {
            server,
            message: "the bootstrap data carries another CA than /v1-k3rs/cacerts".into(),
        });
    }
    if bundle.etcd_client_urls.is_empty() {
        return Err(ServerJoinError::BadResponse {
            server,
            message: "the bootstrap data names no etcd member".into(),
        });
    }
    Ok(bundle)
}

/// Writes the shared files into `tls` (keys 0600). A file already there
/// must be identical: a data dir of another cluster is not silently mixed.
pub fn install(bundle: &Bundle, tls: &Path, server: &str) -> Result<(), ServerJoinError> {
    for name in SHARED_FILES {
        let Some(text) = bundle.files.get(*name) else {
            return Err(ServerJoinError::BadResponse {
                server: server.to_string(),
                message: format!("the bootstrap data lacks {name}"),
            });
        };
        let path = tls.join(name);
        match std::fs::read_to_string(&path) {
            Ok(existing) if existing == *text => continue,
            Ok(_) => {
                return Err(ServerJoinError::OtherCluster {
                    path,
                    server: server.to_string(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ServerJoinError::Io { path, source }),
        }
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| ServerJoinError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        if name.ends_with(".key") {
            pki::write_private(&path, text)?;
        } else {
            pki::write_public(&path, text)?;
        }
    }
    Ok(())
}

/// One GET through the shared join client, its errors naming `server`.
async fn get(
    uri: &http::Uri,
    server: &str,
    ca_pem: Option<&str>,
    path: &str,
    authorization: Option<String>,
) -> Result<String, ServerJoinError> {
    use k3rs_common::join_client::{FetchError, get};
    let server = server.to_string();
    let headers: Vec<(&str, String)> = authorization
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    get(uri, ca_pem, path, &headers, &[400, 401, 403, 404, 503])
        .await
        .map_err(|e| match e {
            FetchError::Unreachable(message) => ServerJoinError::Unreachable { server, message },
            FetchError::BadResponse(message) => ServerJoinError::BadResponse { server, message },
            FetchError::Refused(message) => ServerJoinError::Refused { server, message },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_writes_keys_private_and_refuses_another_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let files = SHARED_FILES
            .iter()
            .map(|n| (n.to_string(), format!("pem of {n}\n")))
            .collect();
        let bundle = Bundle {
            files,
            etcd_client_urls: vec!["https://127.0.0.1:2379".into()],
        };
        install(&bundle, dir.path(), "s").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("etcd/peer-ca.key"), 0o600);
        assert_eq!(mode("server-ca.key"), 0o600);
        // Again: identical files are fine.
        install(&bundle, dir.path(), "s").unwrap();
        std::fs::write(dir.path().join("server-ca.crt"), "another CA").unwrap();
        assert!(matches!(
            install(&bundle, dir.path(), "s"),
            Err(ServerJoinError::OtherCluster { .. })
        ));
        // write() reads them back into a bundle.
        std::fs::write(dir.path().join("server-ca.crt"), "pem of server-ca.crt\n").unwrap();
        let cred = dir.path().join("cred");
        std::fs::create_dir_all(&cred).unwrap();
        let p = write(dir.path(), &cred, "https://10.0.0.1:2379").unwrap();
        let back: Bundle = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        assert_eq!(back.files, bundle.files);
        assert_eq!(back.etcd_client_urls, ["https://10.0.0.1:2379"]);
    }
}
