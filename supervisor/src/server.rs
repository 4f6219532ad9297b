//! `k3rs server`: bootstrap, start the daemons in order, announce readiness,
//! and stop everything cleanly when asked.

use std::future::Future;
use std::time::Instant;

use crate::bootstrap::{self, BootstrapError};
use crate::components::{self, ComponentError};
use crate::config::ServerConfig;
use crate::daemon::LogSink;
use crate::manifests;
use crate::supervise::{Options, SuperviseError, Supervisor};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error(transparent)]
    Component(#[from] ComponentError),
    #[error(transparent)]
    Supervise(#[from] SuperviseError),
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    #[error("joining {server}: {source}")]
    Join {
        server: String,
        #[source]
        source: crate::server_bootstrap::ServerJoinError,
    },
}

/// The line printed once every daemon is ready (tests wait for it).
pub const READY_MESSAGE: &str = "k3rs server is ready";

/// Runs the server until `shutdown` resolves, then stops the daemons in
/// reverse order and returns Ok.
pub async fn run(
    config: ServerConfig,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let started = Instant::now();
    tokio::pin!(shutdown);
    let boot = tokio::select! {
        b = prepare(&config) => b?,
        _ = shutdown.as_mut() => return Ok(()),
    };
    tracing::info!(
        data_dir = %config.data_dir.display(),
        config = %config.config_file.display(),
        "data dir ready (CA, tokens, kubeconfig)"
    );
    let plan = components::plan(&config, &boot)?;
    let sink = match &config.log_dir {
        Some(dir) => LogSink::Dir(dir.clone()),
        None => LogSink::Stream(config.log_format),
    };
    let manifests_interval = opts.manifests_interval;
    let mut supervisor = Supervisor::new(opts, sink);

    let node = (!config.disable_agent).then(|| crate::node::server_settings(&config));
    match start_all(&mut supervisor, plan, node.as_ref(), &mut shutdown).await? {
        Started::All => {}
        Started::Interrupted => return Ok(()),
    }

    let deployer = start_manifests(&config, &boot, manifests_interval).await;
    announce(&config, &boot, started);
    notify_systemd("READY=1");
    shutdown.await;
    notify_systemd("STOPPING=1");
    if let Some(d) = deployer {
        d.abort();
    }
    tracing::info!("shutting down");
    supervisor.stop_all().await;
    tracing::info!("all daemons stopped");
    Ok(())
}

/// How long a joining server waits for the server it joins to answer.
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(300);

/// The data dir, PKI, tokens and kubeconfig (`bootstrap::prepare`); with an
/// embedded etcd also the etcd PKI and member, after fetching the shared
/// CA material from `--server` when this server joins a cluster.
pub async fn prepare(config: &ServerConfig) -> Result<bootstrap::Bootstrap, ServerError> {
    if config.datastore() != crate::config::Datastore::Embedded {
        return Ok(bootstrap::prepare(config)?);
    }
    let etcd_paths = crate::etcd::EtcdPaths::new(config);
    let join_err = |source| ServerError::Join {
        server: config.server.clone().unwrap_or_default(),
        source,
    };
    // Joining: the CAs (and where etcd answers) come from the first server.
    // A server whose member exists has them and needs nobody to restart.
    let join_urls = match &config.server {
        Some(server) if !etcd_paths.has_member() => {
            let token = config.token.as_deref().unwrap_or_default();
            tracing::info!(%server, "joining: fetching the cluster's CA material");
            let bundle = crate::server_bootstrap::fetch(server, token, JOIN_PATIENCE)
                .await
                .map_err(join_err)?;
            let tls = config.server_dir().join("tls");
            crate::server_bootstrap::install(&bundle, &tls, server).map_err(join_err)?;
            Some(bundle.etcd_client_urls)
        }
        _ => None,
    };
    let mut boot = bootstrap::prepare(config)?;
    crate::etcd::ensure_pki(config, &etcd_paths)?;
    let member = crate::etcd::prepare(config, &etcd_paths, join_urls.as_deref()).await?;
    crate::server_bootstrap::write(&boot.paths.tls, &boot.paths.cred, &member.client_url)?;
    tracing::info!(member = %member.name, state = ?member.state, cluster = %member.initial_cluster, "etcd member");
    boot.etcd = Some(member);
    Ok(boot)
}

/// How `start_all` ended.
pub(crate) enum Started {
    All,
    /// Shutdown was requested while starting; everything is stopped.
    Interrupted,
}

/// Starts `plan` in order, each once the previous is ready; after a
/// containerd k3rs runs is ready, imports the node's images. On a failure
/// or a shutdown request everything started so far is stopped.
pub(crate) async fn start_all(
    supervisor: &mut Supervisor,
    plan: Vec<crate::daemon::DaemonSpec>,
    node: Option<&crate::node::NodeSettings>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Started, ServerError> {
    for spec in plan {
        let name = spec.name;
        tracing::info!(daemon = name, args = ?spec.args, "starting {name}");
        let started = tokio::select! {
            r = supervisor.start(spec) => Some(r.map_err(ServerError::from)),
            _ = shutdown.as_mut() => None,
        };
        let started = match (started, node) {
            (Some(Ok(())), Some(node)) if name == "containerd" => {
                tracing::info!("importing the pause image and airgap images");
                tokio::select! {
                    r = crate::node::import_images(node) => Some(r.map_err(ServerError::from)),
                    _ = shutdown.as_mut() => None,
                }
            }
            (other, _) => other,
        };
        match started {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot start");
                supervisor.stop_all().await;
                return Err(e);
            }
            None => {
                tracing::info!("shutdown requested while starting");
                supervisor.stop_all().await;
                return Ok(Started::Interrupted);
            }
        }
    }
    Ok(Started::All)
}

/// Starts applying `<data-dir>/server/manifests/` in the background.
async fn start_manifests(
    config: &ServerConfig,
    boot: &bootstrap::Bootstrap,
    interval: std::time::Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let dir = config.server_dir().join("manifests");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "manifests: cannot create the directory");
    }
    match manifests::client(&boot.paths.kubeconfig).await {
        Ok(client) => {
            let d = manifests::Deployer::new(client, dir, config.disable.clone());
            Some(tokio::spawn(d.run(interval)))
        }
        Err(e) => {
            tracing::warn!(error = %e, "manifests: no API client; auto-deploy is off");
            None
        }
    }
}

fn announce(config: &ServerConfig, boot: &bootstrap::Bootstrap, started: Instant) {
    let took = started.elapsed();
    tracing::info!(took = ?took, "{READY_MESSAGE} ({:.1}s)", took.as_secs_f64());
    tracing::info!(
        "admin kubeconfig: {} (try: k3rs kubectl get ns)",
        boot.paths.kubeconfig.display()
    );
    tracing::info!("node token: {}", boot.paths.node_token.display());
    let host = config
        .advertise_address
        .map(|a| a.to_string())
        .or_else(|| {
            config
                .bind_address
                .filter(|a| !a.is_unspecified())
                .map(|a| a.to_string())
        })
        // The serving certificate also names the host, so agents can use it.
        .unwrap_or_else(k3rs_common::pki::hostname);
    tracing::info!(
        "to add a node: k3rs agent --server https://{host}:{} --token \"$(cat {})\"",
        config.https_listen_port,
        boot.paths.node_token.display()
    );
}

/// Tells systemd (`Type=notify` units) about a state change; a no-op when
/// not started by systemd. Errors only cost the notification, so they are
/// logged and ignored.
pub(crate) fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = notify_socket(&path, state);
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd ({state})");
    }
}

fn notify_socket(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    // A leading '@' names a socket in the abstract namespace.
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed when
/// this is called, not when it is first polled, so a signal arriving during
/// bootstrap is not lost (the default action would skip the clean stop).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reaches_a_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify_socket(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        // No listener: an error, which notify_systemd only logs.
        assert!(notify_socket(dir.path().join("gone.sock").as_os_str(), "READY=1").is_err());
    }
}
