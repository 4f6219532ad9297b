//! First-start chores, repeated (idempotently) on every start: the data dir,
//! the cluster CA and admin certificate, the service-account key, the join
//! tokens and the admin kubeconfig.
//!
//! Everything lands under the `k3rs_common::pki::layout` names in
//! `<data-dir>/server/tls/`, which the API server is pointed at with
//! `--cert-dir`, so both bootstrap from (and reuse) the same CA.

use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k3rs_common::pki::{self, Ca, CertKey, CertSpec, PkiError, layout};

use crate::config::ServerConfig;
use crate::token::{self, Token, TokenError};

/// Certificates within this many days of expiry are reissued at start
/// (K3s's rule), so a server restarted at least every 9 months never expires.
pub const RENEW_DAYS: i64 = 90;
/// Validity of the leaf certificates k3rs issues.
pub const LEAF_VALIDITY_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{}: {source}", path.display())]
    BadTokenFile {
        path: PathBuf,
        #[source]
        source: TokenError,
    },
    #[error("--token: {0}")]
    BadToken(TokenError),
    #[error(
        "--token was made for another cluster's CA (its K10 hash does not match {})",
        ca.display()
    )]
    TokenForOtherCa { ca: PathBuf },
    #[error(
        "--token differs from the token this server was initialized with ({}); \
         drop --token or give that token",
        path.display()
    )]
    TokenChanged { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError + '_ {
    move |source| BootstrapError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a server's files live.
#[derive(Debug, Clone)]
pub struct Paths {
    pub data_dir: PathBuf,
    /// `<data-dir>/server`
    pub server: PathBuf,
    /// `<data-dir>/server/tls`: CA, certificates, service-account key.
    pub tls: PathBuf,
    /// `<data-dir>/server/cred`: kubeconfigs of the daemons.
    pub cred: PathBuf,
    pub token: PathBuf,
    pub node_token: PathBuf,
    pub ca_cert: PathBuf,
    pub service_account_key: PathBuf,
    /// The admin kubeconfig (`--write-kubeconfig`).
    pub kubeconfig: PathBuf,
}

impl Paths {
    pub fn new(config: &ServerConfig) -> Self {
        let server = config.server_dir();
        let tls = server.join("tls");
        Self {
            data_dir: config.data_dir.clone(),
            cred: server.join("cred"),
            token: server.join("token"),
            node_token: server.join("node-token"),
            ca_cert: tls.join(format!("{}.crt", layout::SERVER_CA)),
            service_account_key: tls.join(layout::SERVICE_ACCOUNT_KEY),
            kubeconfig: config.write_kubeconfig.clone(),
            tls,
            server,
        }
    }
}

/// What the rest of the supervisor needs after bootstrapping.
pub struct Bootstrap {
    pub paths: Paths,
    pub ca: Ca,
    pub token: Token,
    /// `https://host:port` clients on this machine use.
    pub local_api_url: String,
    /// The embedded etcd member (`--cluster-init` / `--server`), once
    /// `server::prepare` decided how it starts.
    pub etcd: Option<crate::etcd::Member>,
}

/// Creates or reuses everything in the data dir and writes the kubeconfig.
pub fn prepare(config: &ServerConfig) -> Result<Bootstrap, BootstrapError> {
    let paths = Paths::new(config);
    for dir in [&paths.data_dir, &paths.server, &paths.tls, &paths.cred] {
        make_private_dir(dir)?;
    }
    let ca = Ca::load_or_generate(&paths.tls, layout::SERVER_CA, layout::SERVER_CA_CN)?;
    pki::load_or_generate_signing_key(&paths.service_account_key)?;
    let token = ensure_tokens(config, &paths, &ca)?;
    let local_api_url = local_api_url(config);
    write_admin_kubeconfig(config, &paths, &ca, &local_api_url)?;
    Ok(Bootstrap {
        paths,
        ca,
        token,
        local_api_url,
        etcd: None,
    })
}

/// The URL local clients (kubeconfig, health probe) use: loopback, unless
/// the API server binds one specific address.
pub fn local_api_url(config: &ServerConfig) -> String {
    let host = api_probe_host(config);
    match host {
        IpAddr::V6(v6) => format!("https://[{v6}]:{}", config.https_listen_port),
        IpAddr::V4(v4) => format!("https://{v4}:{}", config.https_listen_port),
    }
}

/// The address the API server is reachable at from this machine.
pub fn api_probe_host(config: &ServerConfig) -> IpAddr {
    match config.bind_address {
        Some(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::from([127, 0, 0, 1]),
    }
}

/// Creates `dir` (and missing parents) with mode 0700; an existing dir keeps
/// its mode unless it is group/world accessible, which secrets must not be.
fn make_private_dir(dir: &Path) -> Result<(), BootstrapError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

/// The admin client certificate (system:masters), the same spec the API
/// server's own bootstrap uses so either may (re)issue it.
pub fn admin_cert(ca: &Ca, tls: &Path) -> Result<CertKey, BootstrapError> {
    Ok(ca.load_or_issue(
        tls,
        layout::ADMIN_CLIENT,
        &CertSpec {
            common_name: "system:admin".into(),
            organizations: vec!["system:masters".into()],
            client: true,
            validity_days: LEAF_VALIDITY_DAYS,
            ..Default::default()
        },
        RENEW_DAYS,
    )?)
}

fn write_admin_kubeconfig(
    config: &ServerConfig,
    paths: &Paths,
    ca: &Ca,
    url: &str,
) -> Result<(), BootstrapError> {
    let admin = admin_cert(ca, &paths.tls)?;
    let text = pki::kubeconfig(url, &ca.cert_pem, &admin);
    let mode = config.write_kubeconfig_mode.0;
    pki::write_mode(&paths.kubeconfig, &text, mode)?;
    // The file was created with `mode` minus the umask; set it exactly, as
    // asked (e.g. 0644 for a shared CI box).
    std::fs::set_permissions(&paths.kubeconfig, std::fs::Permissions::from_mode(mode))
        .map_err(io(&paths.kubeconfig))?;
    Ok(())
}

/// A kubeconfig for a daemon (client certificate `<tls>/<file_stem>.crt`),
/// written to `<cred>/<file_stem>.kubeconfig`; returns its path.
pub fn daemon_kubeconfig(
    boot: &Bootstrap,
    file_stem: &str,
    user: &str,
    groups: &[&str],
) -> Result<PathBuf, BootstrapError> {
    let cert = boot.ca.load_or_issue(
        &boot.paths.tls,
        &format!("client-{file_stem}"),
        &CertSpec {
            common_name: user.into(),
            organizations: groups.iter().map(|g| g.to_string()).collect(),
            client: true,
            validity_days: LEAF_VALIDITY_DAYS,
            ..Default::default()
        },
        RENEW_DAYS,
    )?;
    let path = boot.paths.cred.join(format!("{file_stem}.kubeconfig"));
    pki::write_private(
        &path,
        &pki::kubeconfig(&boot.local_api_url, &boot.ca.cert_pem, &cert),
    )?;
    Ok(path)
}

/// Reads the stored server token, or creates `token` and `node-token` from
/// `--token` or a fresh secret.
fn ensure_tokens(config: &ServerConfig, paths: &Paths, ca: &Ca) -> Result<Token, BootstrapError> {
    let given = match config.token.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => Some(Token::parse(t).map_err(BootstrapError::BadToken)?),
        _ => None,
    };
    if let Some(t) = &given
        && !t.matches_ca(&ca.cert_pem)
    {
        return Err(BootstrapError::TokenForOtherCa {
            ca: paths.ca_cert.clone(),
        });
    }
    let stored = match std::fs::read_to_string(&paths.token) {
        Ok(text) => Some(
            Token::parse(&text).map_err(|source| BootstrapError::BadTokenFile {
                path: paths.token.clone(),
                source,
            })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(BootstrapError::Io {
                path: paths.token.clone(),
                source,
            });
        }
    };
    let token = match (stored, given) {
        (Some(stored), Some(given)) if stored.secret != given.secret => {
            return Err(BootstrapError::TokenChanged {
                path: paths.token.clone(),
            });
        }
        (Some(stored), _) => Token::server(&ca.cert_pem, &stored.secret),
        (None, Some(given)) => Token::server(&ca.cert_pem, &given.secret),
        (None, None) => Token::server(&ca.cert_pem, &token::generate_secret()),
    };
    let text = format!("{token}\n");
    for path in [&paths.token, &paths.node_token] {
        // Rewritten only when different, so the files' times say when the
        // token was made.
        if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
            pki::write_private(path, &text)?;
        }
    }
    Ok(token)
}

/// The API server's client certificate for kubelet APIs
/// (`--kubelet-client-certificate/-key`), the same spec the API server's own
/// bootstrap uses; returns the cert and key paths.
pub fn apiserver_kubelet_client(ca: &Ca, tls: &Path) -> Result<(PathBuf, PathBuf), BootstrapError> {
    let name = layout::APISERVER_KUBELET_CLIENT;
    ca.load_or_issue(
        tls,
        name,
        &CertSpec {
            common_name: "system:kube-apiserver".into(),
            organizations: vec!["system:masters".into()],
            client: true,
            validity_days: LEAF_VALIDITY_DAYS,
            ..Default::default()
        },
        RENEW_DAYS,
    )?;
    Ok((
        tls.join(format!("{name}.crt")),
        tls.join(format!("{name}.key")),
    ))
}

/// Deletes the leaf certificates (never the CA or the service-account key)
/// and issues the admin certificate and kubeconfig again. The API server
/// issues its serving certificate when it next starts.
pub fn rotate_certificates(config: &ServerConfig) -> Result<Vec<PathBuf>, BootstrapError> {
    let paths = Paths::new(config);
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(&paths.tls) {
        Ok(rd) => Some(rd),
        // Never bootstrapped: there is nothing to remove, only to issue.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(BootstrapError::Io {
                path: paths.tls.clone(),
                source,
            });
        }
    };
    for entry in entries.into_iter().flatten().filter_map(Result::ok) {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let leaf = (name.starts_with("client-") || name.starts_with("serving-"))
            && (name.ends_with(".crt") || name.ends_with(".key"));
        if leaf {
            std::fs::remove_file(&path).map_err(io(&path))?;
            removed.push(path);
        }
    }
    removed.sort();
    prepare(config)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, extra: &[&str]) -> ServerConfig {
        let mut args = vec![
            "--config".to_string(),
            dir.join("none/config.yaml").display().to_string(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--write-kubeconfig".into(),
            dir.join("k3rs.yaml").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        // An explicit missing --config is an error; use an empty one.
        std::fs::create_dir_all(dir.join("none")).unwrap();
        std::fs::write(dir.join("none/config.yaml"), "").unwrap();
        crate::config::load_from_args(args).unwrap()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn first_start_creates_and_later_starts_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), &["--write-kubeconfig-mode", "0644"]);
        let b = prepare(&c).unwrap();
        let p = &b.paths;
        assert_eq!(mode(&p.data_dir), 0o700);
        assert_eq!(mode(&p.token), 0o600);
        assert_eq!(mode(&p.node_token), 0o600);
        assert_eq!(mode(&p.service_account_key), 0o600);
        assert_eq!(mode(&p.kubeconfig), 0o644);
        assert!(p.tls.join("client-admin.crt").is_file());
        let token = std::fs::read_to_string(&p.token).unwrap();
        assert_eq!(token, std::fs::read_to_string(&p.node_token).unwrap());
        let parsed = Token::parse(&token).unwrap();
        assert_eq!(
            parsed.ca_hash.as_deref(),
            Some(token::ca_hash(&b.ca.cert_pem).as_str())
        );
        assert_eq!(parsed.user.as_deref(), Some("server"));
        assert_eq!(parsed.secret.len(), 32);
        let kc = std::fs::read_to_string(&p.kubeconfig).unwrap();
        assert!(kc.contains("server: https://127.0.0.1:6443"), "{kc}");

        let ca_before = std::fs::read_to_string(&p.ca_cert).unwrap();
        let admin_before = std::fs::read_to_string(p.tls.join("client-admin.crt")).unwrap();
        let b2 = prepare(&c).unwrap();
        assert_eq!(std::fs::read_to_string(&p.ca_cert).unwrap(), ca_before);
        assert_eq!(std::fs::read_to_string(&p.token).unwrap(), token);
        assert_eq!(b2.token.to_string(), token.trim());
        assert_eq!(
            std::fs::read_to_string(p.tls.join("client-admin.crt")).unwrap(),
            admin_before,
            "a fresh leaf is reused"
        );

        // Same secret given again is fine; another one is refused.
        let same = config(dir.path(), &["--token", &parsed.secret]);
        prepare(&same).unwrap();
        let other = config(dir.path(), &["--token", "anothersecret"]);
        assert!(matches!(
            prepare(&other),
            Err(BootstrapError::TokenChanged { .. })
        ));

        // Rotation replaces leaves, keeps the CA and the token.
        let removed = rotate_certificates(&c).unwrap();
        assert!(removed.iter().any(|r| r.ends_with("client-admin.crt")));
        assert_eq!(std::fs::read_to_string(&p.ca_cert).unwrap(), ca_before);
        assert_ne!(
            std::fs::read_to_string(p.tls.join("client-admin.crt")).unwrap(),
            admin_before
        );
        assert_eq!(std::fs::read_to_string(&p.token).unwrap(), token);
    }

    #[test]
    fn given_token_is_used_bare_or_full() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), &["--token", "mysecret"]);
        let b = prepare(&c).unwrap();
        assert_eq!(b.token.secret, "mysecret");
        let full = std::fs::read_to_string(&b.paths.token).unwrap();
        assert!(full.starts_with("K10") && full.trim_end().ends_with("::server:mysecret"));

        // The full token of this very cluster is accepted on the next start...
        let again = config(dir.path(), &["--token", full.trim()]);
        prepare(&again).unwrap();

        // ...one made for another CA is not.
        let other_dir = tempfile::tempdir().unwrap();
        let foreign = format!("K10{}::server:mysecret", token::ca_hash("other CA"));
        let c = config(other_dir.path(), &["--token", &foreign]);
        assert!(matches!(
            prepare(&c),
            Err(BootstrapError::TokenForOtherCa { .. })
        ));
    }

    #[test]
    fn expiring_leaf_is_renewed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), &[]);
        let b = prepare(&c).unwrap();
        // Replace the admin cert with one valid for 10 days: within RENEW_DAYS.
        let short =
            b.ca.issue(&CertSpec {
                common_name: "system:admin".into(),
                organizations: vec!["system:masters".into()],
                client: true,
                validity_days: 10,
                ..Default::default()
            })
            .unwrap();
        let crt = b.paths.tls.join("client-admin.crt");
        pki::write_public(&crt, &short.cert_pem).unwrap();
        pki::write_private(&b.paths.tls.join("client-admin.key"), &short.key_pem).unwrap();
        prepare(&c).unwrap();
        let renewed = std::fs::read_to_string(&crt).unwrap();
        assert_ne!(renewed, short.cert_pem);
        assert!(!pki::expires_within(&renewed, RENEW_DAYS).unwrap());
    }
}
