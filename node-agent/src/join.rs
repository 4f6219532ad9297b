//! Joining a cluster with a server URL and a node token (DESIGN §3
//! "Joining"), instead of a ready-made kubeconfig.
//!
//! 1. `GET /v1-k3rs/cacerts` without verifying the server (we have no CA
//!    yet), then check the CA's SHA-256 against the token's `K10<hash>::`
//!    prefix; a bare token cannot be checked and trusts the CA (as K3s does).
//! 2. With that CA, fetch the client and serving certificates, proving the
//!    token secret (basic auth) and this node's password (created on first
//!    join, kept in `--node-password-file`).
//! 3. Write `<root-dir>/pki/{ca.crt, client-kubelet.*, serving-kubelet.*}`
//!    and `<root-dir>/kubelet.kubeconfig`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k3rs_common::pki::{self, CertKey};
use k3rs_common::token::{Token, TokenError};

/// Headers the join endpoints read (the API server's `join` module).
const NODE_NAME_HEADER: &str = "k3rs-Node-Name";
const NODE_PASSWORD_HEADER: &str = "k3rs-Node-Password";
const NODE_IP_HEADER: &str = "k3rs-Node-IP";

/// Default `--node-password-file` (DESIGN §4).
pub const DEFAULT_PASSWORD_FILE: &str = "/etc/k3rs/node/password";

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("--token: {0}")]
    BadToken(TokenError),
    #[error("--server needs --token or --token-file")]
    NoToken,
    #[error("--server {0:?} is not an https:// URL")]
    BadServer(String),
    #[error(
        "the CA served by {server} does not match the hash in --token: this token belongs to \
         another cluster, or something is intercepting the connection; refusing to join"
    )]
    CaMismatch { server: String },
    #[error("{server} refused to join this node: {message}")]
    Refused { server: String, message: String },
    #[error("{server}: {message}")]
    Unreachable { server: String, message: String },
    #[error("{server}: unexpected answer: {message}")]
    BadResponse { server: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
}

impl JoinError {
    /// Worth retrying: the server may come up or recover.
    pub fn is_transient(&self) -> bool {
        matches!(self, JoinError::Unreachable { .. })
    }

    /// The process exit code: 2 when the server refuses this node's token
    /// or name (or the token is unusable), which no restart can fix, so a
    /// supervisor gives up instead of retrying (the k3rs "bad
    /// configuration" code, `k3rs_common::cli`); 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            JoinError::BadToken(_)
            | JoinError::NoToken
            | JoinError::BadServer(_)
            | JoinError::CaMismatch { .. }
            | JoinError::Refused { .. } => 2,
            _ => 1,
        }
    }
}

/// What joining needs.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// `https://host:6443`.
    pub server: String,
    pub token: String,
    pub node_name: String,
    pub password_file: PathBuf,
    pub root_dir: PathBuf,
    /// Extra SAN for the serving certificate.
    pub node_ip: Option<IpAddr>,
}

/// The files a join wrote.
#[derive(Debug, Clone)]
pub struct Joined {
    pub kubeconfig: PathBuf,
    pub ca_file: PathBuf,
}

/// Joins, retrying while the server is unreachable; refusals and CA
/// mismatches are final.
pub async fn join(opts: &JoinOptions) -> Result<Joined, JoinError> {
    let mut backoff =
        k3rs_common::Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
    loop {
        match join_once(opts).await {
            Err(e) if e.is_transient() => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?d, "cannot join yet");
                tokio::time::sleep(d).await;
            }
            other => return other,
        }
    }
}

/// One attempt.
pub async fn join_once(opts: &JoinOptions) -> Result<Joined, JoinError> {
    let token = Token::parse(&opts.token).map_err(JoinError::BadToken)?;
    let server = opts.server.trim_end_matches('/').to_string();
    let uri: http::Uri = server
        .parse()
        .ok()
        .filter(|u: &http::Uri| u.scheme_str() == Some("https"))
        .ok_or_else(|| JoinError::BadServer(server.clone()))?;

    let ca_pem = get(&uri, &server, None, "/v1-k3rs/cacerts", &[]).await?;
    if !ca_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(JoinError::BadResponse {
            server,
            message: "/v1-k3rs/cacerts is not a PEM certificate".into(),
        });
    }
    if token.ca_hash.is_none() {
        tracing::warn!(
            "the token has no K10<hash> prefix: trusting the CA {server} serves without checking it"
        );
    } else if !token.matches_ca(&ca_pem) {
        return Err(JoinError::CaMismatch { server });
    }

    let password = load_or_create_password(&opts.password_file)?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("node:{}", token.secret));
    let mut headers = vec![
        ("authorization", format!("Basic {basic}")),
        (NODE_NAME_HEADER, opts.node_name.clone()),
        (NODE_PASSWORD_HEADER, password),
    ];
    let client = split_pem(
        &server,
        &get(
            &uri,
            &server,
            Some(&ca_pem),
            "/v1-k3rs/client-kubelet.crt",
            &headers,
        )
        .await?,
    )?;
    if let Some(ip) = opts.node_ip {
        headers.push((NODE_IP_HEADER, ip.to_string()));
    }
    let serving = split_pem(
        &server,
        &get(
            &uri,
            &server,
            Some(&ca_pem),
            "/v1-k3rs/serving-kubelet.crt",
            &headers,
        )
        .await?,
    )?;

    let dir = opts.root_dir.join("pki");
    std::fs::create_dir_all(&dir).map_err(|source| JoinError::Io {
        path: dir.clone(),
        source,
    })?;
    let ca_file = dir.join("ca.crt");
    pki::write_public(&ca_file, &ca_pem)?;
    pki::write_public(&dir.join("client-kubelet.crt"), &client.cert_pem)?;
    pki::write_private(&dir.join("client-kubelet.key"), &client.key_pem)?;
    pki::write_public(&dir.join("serving-kubelet.crt"), &serving.cert_pem)?;
    pki::write_private(&dir.join("serving-kubelet.key"), &serving.key_pem)?;
    let kubeconfig = opts.root_dir.join("kubelet.kubeconfig");
    pki::write_private(&kubeconfig, &pki::kubeconfig(&server, &ca_pem, &client))?;
    tracing::info!(node = %opts.node_name, %server, "joined: node certificates written");
    Ok(Joined {
        kubeconfig,
        ca_file,
    })
}

/// One GET through the shared join client, its errors naming `server`.
async fn get(
    uri: &http::Uri,
    server: &str,
    ca_pem: Option<&str>,
    path: &str,
    headers: &[(&str, String)],
) -> Result<String, JoinError> {
    use k3rs_common::join_client::{FetchError, get};
    let server = server.to_string();
    get(uri, ca_pem, path, headers, &[400, 401, 403, 404])
        .await
        .map_err(|e| match e {
            FetchError::Unreachable(message) => JoinError::Unreachable { server, message },
            FetchError::BadResponse(message) => JoinError::BadResponse { server, message },
            FetchError::Refused(message) => JoinError::Refused { server, message },
        })
}

/// Certificate PEM blocks first, then the key block.
fn split_pem(server: &str, text: &str) -> Result<CertKey, JoinError> {
    let mut cert_pem = String::new();
    let mut key_pem = String::new();
    let mut current = String::new();
    for line in text.lines() {
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END ") {
            if line.contains("PRIVATE KEY") {
                key_pem.push_str(&current);
            } else {
                cert_pem.push_str(&current);
            }
            current.clear();
        }
    }
    if cert_pem.is_empty() || key_pem.is_empty() {
        return Err(JoinError::BadResponse {
            server: server.to_string(),
            message: "expected a certificate and a private key in PEM".into(),
        });
    }
    Ok(CertKey { cert_pem, key_pem })
}

/// This node's password: read, or created (random, 0600) on first join.
pub fn load_or_create_password(path: &Path) -> Result<String, JoinError> {
    let io = |source| JoinError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let password = k3rs_common::token::generate_secret();
    pki::write_private(path, &format!("{password}\n"))?;
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_split_and_password_file() {
        let text = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n";
        let ck = split_pem("s", text).unwrap();
        assert!(ck.cert_pem.contains("AAA") && !ck.cert_pem.contains("BBB"));
        assert!(ck.key_pem.contains("BBB"));
        assert!(split_pem("s", "nothing").is_err());

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node/password");
        let a = load_or_create_password(&p).unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(load_or_create_password(&p).unwrap(), a);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
