//! k3rs-controller-manager: the controllers that drive the cluster toward the
//! state its objects describe — service accounts and the root CA bundle per
//! namespace, workloads, garbage collection by owner references, namespace
//! teardown, nodes, Service endpoints, quotas, storage protection and
//! disruption budgets (the [`CONTROLLERS`] table).
//!
//! It talks to the apiserver only over HTTPS with a kubeconfig, through
//! kube-rs. All controllers share one watch per kind (see [`framework`]).

pub mod backends;
pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod framework;
pub mod garbagecollector;
pub mod history;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod ttlafterfinished;
pub mod volumeprotection;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use clap::Parser;
use k3rs_common::LogFormat;
use kube::Client;

pub use framework::Clock;
use framework::{Ctx, Events, Informers, StartFn};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig {path}: {msg}")]
    Kubeconfig { path: PathBuf, msg: String },
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("health endpoint {addr}: {source}")]
    Health {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid {what}: {msg}")]
    Invalid { what: &'static str, msg: String },
    #[error("leader election: {0}")]
    LeaderElection(String),
}

impl Error {
    /// A 409 from the apiserver: the sync raced another writer and is retried.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }
}

/// The controllers, by their upstream `--controllers` names.
pub const CONTROLLERS: &[(&str, StartFn)] = &[
    ("serviceaccount", serviceaccount::start_serviceaccount),
    (
        "root-ca-cert-publisher",
        serviceaccount::start_root_ca_publisher,
    ),
    ("replicaset", replicaset::start),
    ("deployment", deployment::start),
    ("garbagecollector", garbagecollector::start),
    ("namespace", namespace::start),
    ("job", job::start),
    ("ttl-after-finished", ttlafterfinished::start),
    ("cronjob", cronjob::start),
    ("daemonset", daemonset::start),
    ("statefulset", statefulset::start),
    ("nodelifecycle", nodelifecycle::start),
    ("nodeipam", nodeipam::start),
    ("podgc", podgc::start),
    ("endpoint", endpoints::start),
    ("endpointslice", endpointslice::start),
    ("replicationcontroller", replicationcontroller::start),
    ("resourcequota", resourcequota::start),
    ("pvc-protection", volumeprotection::start_pvc),
    ("pv-protection", volumeprotection::start_pv),
    ("disruption", disruption::start),
    ("servicelb", servicelb::start),
];

#[derive(Debug, Parser)]
#[command(
    name = "k3rs-controller-manager",
    version,
    about = "k3rs controller manager"
)]
pub struct Cli {
    /// Kubeconfig with the apiserver's address, CA and credentials.
    #[arg(long, env = "K3RS_KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Run controllers only while holding the kube-system/kube-controller-manager Lease.
    #[arg(long, env = "K3RS_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,
    /// Controllers to run: `*` for the defaults, `name` to enable, `-name` to disable.
    #[arg(
        long,
        env = "K3RS_CONTROLLERS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub controllers: Vec<String>,
    /// Pod CIDR range of the cluster (node IPAM).
    #[arg(long, env = "K3RS_CLUSTER_CIDR")]
    pub cluster_cidr: Option<String>,
    #[arg(long, env = "K3RS_NODE_CIDR_MASK_SIZE", default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// Address of the health/metrics endpoint.
    #[arg(long, env = "K3RS_BIND_ADDRESS", default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    #[arg(long, env = "K3RS_SECURE_PORT", default_value_t = 10257)]
    pub secure_port: u16,
    /// How long a node may go without renewing its Lease before it is unreachable.
    #[arg(long, env = "K3RS_NODE_MONITOR_GRACE_PERIOD", default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How often node health is re-checked (from the caches).
    #[arg(long, env = "K3RS_NODE_MONITOR_PERIOD", default_value = "5s", value_parser = parse_duration)]
    pub node_monitor_period: Duration,
    /// tolerationSeconds assumed for pods without a not-ready/unreachable toleration.
    #[arg(
        long,
        env = "K3RS_DEFAULT_UNREACHABLE_TOLERATION_SECONDS",
        default_value_t = 300
    )]
    pub default_unreachable_toleration_seconds: i64,
    /// Finished pods kept before the oldest are deleted (0 disables).
    #[arg(
        long,
        env = "K3RS_TERMINATED_POD_GC_THRESHOLD",
        default_value_t = 12500
    )]
    pub terminated_pod_gc_threshold: usize,
    /// How often every ResourceQuota's usage is recounted in full.
    #[arg(long, env = "K3RS_RESOURCE_QUOTA_SYNC_PERIOD", default_value = "5m", value_parser = parse_duration)]
    pub resource_quota_sync_period: Duration,
    /// Workers per workload controller.
    #[arg(long, env = "K3RS_CONCURRENT_SYNCS", default_value_t = 5)]
    pub concurrent_syncs: usize,
    #[arg(long, env = "K3RS_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// What the controller manager runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: PathBuf,
    pub leader_elect: bool,
    pub controllers: Vec<String>,
    pub cluster_cidr: Option<String>,
    pub node_cidr_mask_size: u8,
    /// `None` serves no health endpoint (in-process tests).
    pub health_addr: Option<SocketAddr>,
    pub concurrent_syncs: usize,
    pub node_monitor_grace_period: Duration,
    pub node_monitor_period: Duration,
    pub default_unreachable_toleration_seconds: i64,
    pub terminated_pod_gc_threshold: usize,
    pub resource_quota_sync_period: Duration,
    pub clock: Clock,
}

/// "40s", "5m", "1h", "250ms" or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl Cli {
    pub fn into_config(self) -> Result<Config, Error> {
        if self.concurrent_syncs == 0 {
            return Err(Error::Invalid {
                what: "--concurrent-syncs",
                msg: "must be at least 1".into(),
            });
        }
        if !(8..=30).contains(&self.node_cidr_mask_size) {
            return Err(Error::Invalid {
                what: "--node-cidr-mask-size",
                msg: format!("{} is not between 8 and 30", self.node_cidr_mask_size),
            });
        }
        Ok(Config {
            kubeconfig: self.kubeconfig,
            leader_elect: self.leader_elect,
            controllers: self.controllers,
            cluster_cidr: self.cluster_cidr,
            node_cidr_mask_size: self.node_cidr_mask_size,
            health_addr: Some(SocketAddr::new(self.bind_address, self.secure_port)),
            concurrent_syncs: self.concurrent_syncs,
            node_monitor_grace_period: self.node_monitor_grace_period,
            node_monitor_period: self.node_monitor_period,
            default_unreachable_toleration_seconds: self.default_unreachable_toleration_seconds,
            terminated_pod_gc_threshold: self.terminated_pod_gc_threshold,
            resource_quota_sync_period: self.resource_quota_sync_period,
            clock: Clock::default(),
        })
    }
}

impl Config {
    /// Defaults for running in-process against `kubeconfig` (tests, bench).
    pub fn for_kubeconfig(kubeconfig: impl Into<PathBuf>) -> Self {
        Self {
            kubeconfig: kubeconfig.into(),
            leader_elect: false,
            controllers: vec!["*".into()],
            cluster_cidr: None,
            node_cidr_mask_size: 24,
            health_addr: None,
            concurrent_syncs: 5,
            node_monitor_grace_period: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            default_unreachable_toleration_seconds: 300,
            terminated_pod_gc_threshold: 12500,
            resource_quota_sync_period: Duration::from_secs(300),
            clock: Clock::default(),
        }
    }
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), Error> {
    run_until(config, shutdown_signal()).await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the enabled controllers until `shutdown` resolves.
pub async fn run_until(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let (client, root_ca) = connect(&config.kubeconfig).await?;
    let ready = k3rs_common::Readiness::default();
    let _health = match config.health_addr {
        Some(addr) => Some(
            k3rs_common::HealthServer::bind(
                addr,
                Arc::new(prometheus_client::registry::Registry::default()),
                ready.clone(),
            )
            .await
            .map_err(|source| Error::Health { addr, source })?,
        ),
        None => None,
    };
    let config = Arc::new(config);
    let informers = Informers::default();
    // Whatever ends this function stops every watch and worker with it.
    struct StopOnDrop(Informers);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.shutdown();
        }
    }
    let _stop = StopOnDrop(informers.clone());
    let work = {
        let client = client.clone();
        let config = config.clone();
        let ready = ready.clone();
        let informers = informers.clone();
        move || async move {
            match start_controllers(client, config, root_ca, informers) {
                Ok(informers) => {
                    informers.wait_synced().await;
                    ready.set(true);
                    tracing::info!("controllers running");
                    futures::future::pending::<()>().await;
                }
                Err(e) => tracing::error!(error = %e, "controllers failed to start"),
            }
        }
    };
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    if config.leader_elect {
        use k3rs_common::leader_election::{LeaderElectionConfig, run_while_leader};
        let stop = shutdown.clone();
        let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = leading.clone();
        let elected = run_while_leader(
            client.clone(),
            LeaderElectionConfig::new("kube-controller-manager"),
            // Returning on shutdown releases the lease for a quick hand-over.
            move || async move {
                flag.store(true, std::sync::atomic::Ordering::Release);
                tokio::select! {
                    _ = work() => {}
                    _ = stop => tracing::info!("shutting down"),
                }
            },
        );
        futures::pin_mut!(elected);
        let res = tokio::select! {
            r = &mut elected => r,
            _ = shutdown => {
                tracing::info!("shutting down");
                // While leading, let the lease be released before returning.
                if leading.load(std::sync::atomic::Ordering::Acquire) {
                    elected.await
                } else {
                    Ok(())
                }
            }
        };
        return res.map_err(|e| Error::LeaderElection(e.to_string()));
    }
    tokio::select! {
        _ = work() => {}
        _ = shutdown => tracing::info!("shutting down"),
    }
    Ok(())
}

/// Registers every enabled controller on shared informers, then starts the watches.
fn start_controllers(
    client: Client,
    config: Arc<Config>,
    root_ca: Option<String>,
    informers: Informers,
) -> Result<Informers, Error> {
    let ctx = Ctx {
        events: Events::new(client.clone()),
        informers,
        clock: config.clock.clone(),
        client: client.clone(),
        config: config.clone(),
        root_ca,
    };
    for (name, start) in CONTROLLERS {
        if framework::enabled(&config.controllers, name) {
            tracing::info!(controller = name, "starting controller");
            start(&ctx)?;
        } else {
            tracing::info!(controller = name, "controller disabled");
        }
    }
    ctx.informers.start(&client);
    Ok(ctx.informers)
}

/// A client from the kubeconfig, and the cluster CA it trusts (PEM).
async fn connect(path: &std::path::Path) -> Result<(Client, Option<String>), Error> {
    let bad = |msg: String| Error::Kubeconfig {
        path: path.to_path_buf(),
        msg,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
    let root_ca = ca_from_kubeconfig(&kc, path.parent());
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    config.read_timeout = Some(Duration::from_secs(300));
    let client = Client::try_from(config).map_err(|e| bad(e.to_string()))?;
    Ok((client, root_ca))
}

fn ca_from_kubeconfig(
    kc: &kube::config::Kubeconfig,
    base: Option<&std::path::Path>,
) -> Option<String> {
    let ctx_name = kc.current_context.as_deref()?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)?
        .context
        .as_ref()?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)?
        .cluster
        .as_ref()?;
    if let Some(data) = &cluster.certificate_authority_data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok()?;
        return String::from_utf8(bytes).ok();
    }
    let file = PathBuf::from(cluster.certificate_authority.as_deref()?);
    let file = match base {
        Some(b) if file.is_relative() => b.join(file),
        _ => file,
    };
    std::fs::read_to_string(file).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn flags_from_cli_and_env() {
        let cli = Cli::try_parse_from([
            "k3rs-controller-manager",
            "--kubeconfig",
            "/k",
            "--controllers",
            "*,-deployment",
            "--leader-elect=false",
        ])
        .unwrap();
        let c = cli.into_config().unwrap();
        assert_eq!(c.controllers, ["*", "-deployment"]);
        assert!(!c.leader_elect);
        assert_eq!(c.health_addr, Some("127.0.0.1:10257".parse().unwrap()));
    }
}
