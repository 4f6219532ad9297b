//! The embedded etcd member of a `--cluster-init` or `--server` server.
//!
//! - PKI: two CAs of its own under `<data-dir>/server/tls/etcd/` (K3s's
//!   layout): `server-ca` signs etcd's serving certificate and its clients'
//!   certificates (client cert auth is on), `peer-ca` the members' peer
//!   certificates. Further servers receive both CAs (see `server_bootstrap`)
//!   and issue their own leaves.
//! - Identity: the member name `<node name>-<8 hex>` lives in
//!   `<data-dir>/server/db/etcd/name`; etcd's data is `<data-dir>/server/db/etcd`.
//! - Joining: a new member is announced through a running member
//!   (MemberAdd) before its etcd starts with `--initial-cluster-state
//!   existing`; a member whose data dir exists just starts again.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k3rs_common::pki::{Ca, CertSpec, PkiError};

use crate::bootstrap::{LEAF_VALIDITY_DAYS, RENEW_DAYS};
use crate::components::Args;
use crate::config::ServerConfig;
use crate::daemon::DaemonSpec;
use crate::probe::{Endpoint, Health};

/// The etcd CA of serving and client certificates (`tls/etcd/server-ca.*`).
pub const SERVER_CA: &str = "server-ca";
/// The etcd CA of peer certificates (`tls/etcd/peer-ca.*`).
pub const PEER_CA: &str = "peer-ca";
/// etcd's serving certificate.
const SERVING: &str = "server-client";
/// The peer certificate (server and client auth between members).
const PEER: &str = "peer-server-client";
/// The client certificate of the API server and the supervisor.
pub const CLIENT: &str = "client";

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the cluster's etcd at {endpoints}: {message}")]
    Connect { endpoints: String, message: String },
    #[error("adding this server as an etcd member through {endpoints}: {message}")]
    MemberAdd { endpoints: String, message: String },
    #[error(
        "etcd member {other:?} already uses the peer URL {url}: remove it first \
         (etcdctl member remove) or give this server another --etcd-peer-port / --advertise-address"
    )]
    PeerUrlTaken { url: String, other: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EtcdError + '_ {
    move |source| EtcdError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the member's files live.
#[derive(Debug, Clone)]
pub struct EtcdPaths {
    /// `<data-dir>/server/tls/etcd`
    pub tls: PathBuf,
    /// `<data-dir>/server/db/etcd`: etcd's `--data-dir`.
    pub data: PathBuf,
}

impl EtcdPaths {
    pub fn new(config: &ServerConfig) -> Self {
        let server = config.server_dir();
        Self {
            tls: server.join("tls").join("etcd"),
            data: server.join("db").join("etcd"),
        }
    }

    fn file(&self, name: &str, ext: &str) -> PathBuf {
        self.tls.join(format!("{name}.{ext}"))
    }

    /// (CA, certificate, key) a client of this member presents.
    pub fn client_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        (
            self.file(SERVER_CA, "crt"),
            self.file(CLIENT, "crt"),
            self.file(CLIENT, "key"),
        )
    }

    /// Whether etcd has run on this data dir (then it is a member already).
    pub fn has_member(&self) -> bool {
        self.data.join("member").is_dir()
    }
}

/// The address other servers reach this one on: `--advertise-address`, a
/// specific `--bind-address`, `--node-ip`, else the default route's source.
pub fn advertise_ip(config: &ServerConfig) -> IpAddr {
    config
        .advertise_address
        .or(config.bind_address.filter(|a| !a.is_unspecified()))
        .or(config.node.node_ip)
        .unwrap_or_else(k3rs_common::node::detect_node_ip)
}

fn url(ip: IpAddr, port: u16) -> String {
    format!("https://{}", SocketAddr::new(ip, port))
}

/// The URL this machine's API server and tools use for the local member.
pub fn local_client_url(config: &ServerConfig) -> String {
    url(IpAddr::from([127, 0, 0, 1]), config.etcd_client_port)
}

/// The client URL other servers use (for MemberAdd when they join).
pub fn advertised_client_url(config: &ServerConfig) -> String {
    url(advertise_ip(config), config.etcd_client_port)
}

pub fn peer_url(config: &ServerConfig) -> String {
    url(advertise_ip(config), config.etcd_peer_port)
}

/// Creates or reuses the etcd CAs (a joining server has them from the
/// first server by now) and issues this member's leaf certificates.
pub fn ensure_pki(config: &ServerConfig, paths: &EtcdPaths) -> Result<(), EtcdError> {
    make_private_dir(&paths.tls)?;
    let server_ca = Ca::load_or_generate(&paths.tls, SERVER_CA, "k3rs-etcd-server-ca")?;
    let peer_ca = Ca::load_or_generate(&paths.tls, PEER_CA, "k3rs-etcd-peer-ca")?;
    let ip = advertise_ip(config);
    let mut ips = vec![IpAddr::from([127, 0, 0, 1]), ip];
    ips.dedup();
    let host = k3rs_common::pki::hostname().to_lowercase();
    let names = vec!["localhost".to_string(), host.clone()];
    let leaf = |cn: &str, server: bool| CertSpec {
        common_name: cn.to_string(),
        dns_names: if server { names.clone() } else { Vec::new() },
        ip_addresses: if server { ips.clone() } else { Vec::new() },
        server,
        client: true,
        validity_days: LEAF_VALIDITY_DAYS,
        ..Default::default()
    };
    // The SANs follow the advertised address, so a moved server reissues.
    let stamp = paths.tls.join("sans");
    let sans = format!("{ips:?} {names:?}\n");
    let moved = std::fs::read_to_string(&stamp).ok().as_deref() != Some(sans.as_str());
    if moved {
        for name in [SERVING, PEER] {
            for ext in ["crt", "key"] {
                let p = paths.file(name, ext);
                if p.exists() {
                    std::fs::remove_file(&p).map_err(io(&p))?;
                }
            }
        }
    }
    server_ca.load_or_issue(&paths.tls, SERVING, &leaf(&host, true), RENEW_DAYS)?;
    peer_ca.load_or_issue(&paths.tls, PEER, &leaf(&host, true), RENEW_DAYS)?;
    server_ca.load_or_issue(&paths.tls, CLIENT, &leaf("etcd-client", false), RENEW_DAYS)?;
    if moved {
        k3rs_common::pki::write_private(&stamp, &sans)?;
    }
    Ok(())
}

/// Whether the member starts a new cluster or joins a running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

impl ClusterState {
    fn as_str(self) -> &'static str {
        match self {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        }
    }
}

/// This server's member, as etcd is started.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
    /// `name=peer-url,...` of every member, this one included.
    pub initial_cluster: String,
    pub state: ClusterState,
}

/// The member name: kept in `<data>/name` once chosen, so a restart is
/// the same member; random suffix, so servers with one host name differ.
fn member_name(config: &ServerConfig, paths: &EtcdPaths) -> Result<String, EtcdError> {
    let file = paths.data.join("name");
    match std::fs::read_to_string(&file) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&file)(e)),
    }
    make_private_dir(&paths.data)?;
    let base = config
        .node
        .node_name
        .clone()
        .unwrap_or_else(k3rs_common::node::default_node_name);
    let suffix: String = crate::token::generate_secret().chars().take(8).collect();
    let name = format!("{base}-{suffix}");
    k3rs_common::pki::write_private(&file, &format!("{name}\n"))?;
    Ok(name)
}

/// Decides how the member starts. `join` holds the client URLs of a running
/// member when this server joins (`--server`) and has no member data yet.
pub async fn prepare(
    config: &ServerConfig,
    paths: &EtcdPaths,
    join: Option<&[String]>,
) -> Result<Member, EtcdError> {
    let name = member_name(config, paths)?;
    let peer_url = peer_url(config);
    let alone = format!("{name}={peer_url}");
    let (initial_cluster, state) = match join {
        Some(endpoints) if !paths.has_member() => (
            add_member(paths, endpoints, &name, &peer_url).await?,
            ClusterState::Existing,
        ),
        // With member data etcd ignores the initial-cluster flags.
        _ => (alone, ClusterState::New),
    };
    Ok(Member {
        name,
        peer_url,
        client_url: advertised_client_url(config),
        initial_cluster,
        state,
    })
}

/// An etcd client of the cluster with this server's client certificate.
pub async fn client(
    paths: &EtcdPaths,
    endpoints: &[String],
) -> Result<etcd_client::Client, EtcdError> {
    let (ca, cert, key) = paths.client_files();
    let read = |p: &Path| std::fs::read(p).map_err(io(p));
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&ca)?))
        .identity(etcd_client::Identity::from_pem(read(&cert)?, read(&key)?));
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(15))
        .with_tls(tls);
    etcd_client::Client::connect(endpoints, Some(opts))
        .await
        .map_err(|e| EtcdError::Connect {
            endpoints: endpoints.join(","),
            message: e.to_string(),
        })
}

/// Announces this member (MemberAdd) unless an earlier, interrupted start
/// did already; returns the initial cluster to start etcd with.
async fn add_member(
    paths: &EtcdPaths,
    endpoints: &[String],
    name: &str,
    peer_url: &str,
) -> Result<String, EtcdError> {
    let failed = |e: etcd_client::Error| EtcdError::MemberAdd {
        endpoints: endpoints.join(","),
        message: e.to_string(),
    };
    let mut c = client(paths, endpoints).await?;
    let listed = c.member_list().await.map_err(failed)?;
    let ours = |m: &etcd_client::Member| m.peer_urls().iter().any(|u| u == peer_url);
    let members: Vec<(String, Vec<String>)> = match listed.members().iter().find(|m| ours(m)) {
        Some(m) if !m.name().is_empty() && m.name() != name => {
            return Err(EtcdError::PeerUrlTaken {
                url: peer_url.to_string(),
                other: m.name().to_string(),
            });
        }
        Some(_) => {
            tracing::info!(
                member = name,
                "etcd member was added by an earlier start; joining"
            );
            pairs(listed.members())
        }
        None => {
            tracing::info!(member = name, %peer_url, "adding this server to the etcd cluster");
            // etcd refuses members while a recent one is not yet fully
            // connected ("unhealthy cluster"): servers joining one after
            // the other wait for it.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let added = loop {
                match c.member_add([peer_url], None).await {
                    Err(e)
                        if e.to_string().contains("unhealthy cluster")
                            && tokio::time::Instant::now() < deadline =>
                    {
                        tracing::info!(error = %e, "the etcd cluster takes no member yet; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    r => break r.map_err(failed)?,
                }
            };
            pairs(added.member_list())
        }
    };
    Ok(initial_cluster(&members, name, peer_url))
}

fn pairs(members: &[etcd_client::Member]) -> Vec<(String, Vec<String>)> {
    members
        .iter()
        .map(|m| (m.name().to_string(), m.peer_urls().to_vec()))
        .collect()
}

/// `name=url,...` for etcd's `--initial-cluster`: the unstarted member
/// (no name yet) that owns `peer_url` is this one.
pub fn initial_cluster(members: &[(String, Vec<String>)], name: &str, peer_url: &str) -> String {
    let mut out = Vec::new();
    for (n, urls) in members {
        let n = if urls.iter().any(|u| u == peer_url) {
            name
        } else if n.is_empty() {
            // Another member still joining: etcd needs no entry for it.
            continue;
        } else {
            n.as_str()
        };
        out.extend(urls.iter().map(|u| format!("{n}={u}")));
    }
    if !out.iter().any(|e| e.ends_with(&format!("={peer_url}"))) {
        out.push(format!("{name}={peer_url}"));
    }
    out.join(",")
}

/// The etcd command line and its health checks.
pub fn spec(
    config: &ServerConfig,
    paths: &EtcdPaths,
    member: &Member,
    program: PathBuf,
) -> DaemonSpec {
    let tls = |n: &str, e: &str| paths.file(n, e).display().to_string();
    let local = local_client_url(config);
    let listen_client = if local == member.client_url {
        local.clone()
    } else {
        format!("{local},{}", member.client_url)
    };
    let metrics = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), config.etcd_metrics_port);
    let args = Args::default()
        .set("name", &member.name)
        .set("data-dir", paths.data.display())
        .set("listen-client-urls", listen_client)
        .set("advertise-client-urls", &member.client_url)
        .set("listen-peer-urls", &member.peer_url)
        .set("initial-advertise-peer-urls", &member.peer_url)
        .set("initial-cluster", &member.initial_cluster)
        .set("initial-cluster-state", member.state.as_str())
        .set("listen-metrics-urls", format!("http://{metrics}"))
        .set("client-cert-auth", "true")
        .set("trusted-ca-file", tls(SERVER_CA, "crt"))
        .set("cert-file", tls(SERVING, "crt"))
        .set("key-file", tls(SERVING, "key"))
        .set("peer-client-cert-auth", "true")
        .set("peer-trusted-ca-file", tls(PEER_CA, "crt"))
        .set("peer-cert-file", tls(PEER, "crt"))
        .set("peer-key-file", tls(PEER, "key"))
        // K3s's timings: tolerant of slow disks on small devices.
        .set("heartbeat-interval", 500)
        .set("election-timeout", 5000)
        .set("log-level", if config.debug { "debug" } else { "info" })
        .set("logger", "zap")
        .with_overrides(&config.etcd_arg);
    DaemonSpec {
        name: "etcd",
        program,
        args: args.render(),
        health: Health {
            endpoint: Endpoint::Http(metrics),
            // /health needs a leader: the member is ready once it is part
            // of a working cluster...
            ready_path: "/health",
            // ...but losing quorum for a while is no reason to restart it.
            live_path: "/metrics",
        },
        env_remove: crate::components::own_env_vars()
            .into_iter()
            // etcd reads ETCD_*; none of ours, but keep a user's out too.
            .collect(),
    }
}

fn make_private_dir(dir: &Path) -> Result<(), EtcdError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_names_the_new_member() {
        let members = vec![
            ("a-1".to_string(), vec!["https://10.0.0.1:2380".to_string()]),
            (String::new(), vec!["https://10.0.0.2:2380".to_string()]),
        ];
        assert_eq!(
            initial_cluster(&members, "b-2", "https://10.0.0.2:2380"),
            "a-1=https://10.0.0.1:2380,b-2=https://10.0.0.2:2380"
        );
        // Another unstarted member is left out; ours is always there.
        let members = vec![
            ("a-1".to_string(), vec!["https://10.0.0.1:2380".to_string()]),
            (String::new(), vec!["https://10.0.0.3:2380".to_string()]),
        ];
        assert_eq!(
            initial_cluster(&members, "b-2", "https://10.0.0.2:2380"),
            "a-1=https://10.0.0.1:2380,b-2=https://10.0.0.2:2380"
        );
    }
}
