//! k3rs-scheduler: watches pending pods and nodes through the apiserver and
//! binds each pod to a node, the way kube-scheduler's default profile does
//! (filters, weighted scores, back-off queues, preemption, leader election).
//!
//! [`run`] is what the binary calls; [`start`] runs the same thing in the
//! background and returns a handle (tests and the bench use it).

pub mod cache;
pub mod framework;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod recorder;
pub mod resources;
pub mod scheduler;
pub mod selectors;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use k3rs_common::leader_election::{
    LeaderElectionConfig, LeaderElectionError, run_while_leader,
};

use crate::recorder::Recorder;
use crate::scheduler::{ClusterEvent, Counters, Scheduler};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("building the API client: {0}")]
    Client(#[from] kube::Error),
    #[error("binding the health endpoint {addr}: {source}")]
    Health {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    LeaderElection(#[from] LeaderElectionError),
}

/// Everything the scheduler needs; the binary fills it from flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: PathBuf,
    /// `None` runs without a health endpoint.
    pub health_addr: Option<SocketAddr>,
    pub scheduler_name: String,
    /// `None` disables leader election.
    pub leader_election: Option<LeaderElectionConfig>,
}

impl Config {
    /// Upstream defaults: leader election on `kube-system/kube-scheduler`, health on 127.0.0.1:10259.
    pub fn new(kubeconfig: PathBuf) -> Self {
        Self {
            kubeconfig,
            health_addr: Some(SocketAddr::from(([127, 0, 0, 1], 10259))),
            scheduler_name: "default-scheduler".into(),
            leader_election: Some(LeaderElectionConfig::new("kube-scheduler")),
        }
    }
}

pub async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client, Error> {
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    })?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(kube::Client::try_from(cfg)?)
}

/// A scheduler running in the background.
pub struct Handle {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), Error>>,
    /// Where the health endpoint listens, when enabled.
    pub health_addr: Option<SocketAddr>,
}

impl Handle {
    /// Stops scheduling, releases the lease, and waits for the task.
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "scheduler task failed");
                Ok(())
            }
        }
    }

    /// Stops abruptly, without releasing the lease (a crashed leader).
    pub fn kill(self) {
        self.task.abort();
    }
}

/// Starts the scheduler in the background.
pub async fn start(config: Config) -> Result<Handle, Error> {
    let client = client_from_kubeconfig(&config.kubeconfig).await?;
    let counters = Arc::new(Counters::default());
    let ready = k3rs_common::Readiness::default();
    let health = match config.health_addr {
        Some(addr) => {
            let registry = Arc::new(registry(&counters));
            Some(
                k3rs_common::HealthServer::bind(addr, registry, ready.clone())
                    .await
                    .map_err(|source| Error::Health { addr, source })?,
            )
        }
        None => None,
    };
    let health_addr = health.as_ref().map(|h| h.local_addr);
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        // The health server lives as long as the scheduler does.
        let _health = health;
        ready.set(true);
        let work = {
            let client = client.clone();
            let name = config.scheduler_name.clone();
            let identity = config
                .leader_election
                .as_ref()
                .map(|l| l.identity.clone())
                .unwrap_or_else(k3rs_common::pki::hostname);
            move || schedule(client, name, identity, counters, rx)
        };
        match config.leader_election {
            Some(le) => run_while_leader(client, le, work).await?,
            None => work().await,
        }
        Ok(())
    });
    Ok(Handle {
        shutdown,
        task,
        health_addr,
    })
}

/// Runs until SIGTERM/SIGINT (exit cleanly, lease released) or until the
/// lease is lost (error: the supervisor restarts us, as upstream).
pub async fn run(config: Config) -> Result<(), Error> {
    let handle = start(config).await?;
    let mut task = handle.task;
    let shutdown = handle.shutdown;
    tokio::select! {
        r = &mut task => return r.unwrap_or(Ok(())),
        () = shutdown_signal() => {}
    }
    tracing::info!("shutting down");
    let _ = shutdown.send(true);
    task.await.unwrap_or(Ok(()))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn registry(c: &Arc<Counters>) -> Registry {
    // Values are read at scrape time, so register collectors over the shared counters.
    #[derive(Debug)]
    struct Collector(Arc<Counters>);
    impl prometheus_client::collector::Collector for Collector {
        fn encode(
            &self,
            mut encoder: prometheus_client::encoding::DescriptorEncoder,
        ) -> Result<(), std::fmt::Error> {
            use prometheus_client::encoding::EncodeMetric;
            let items = [
                (
                    "scheduler_pods_scheduled",
                    "Pods bound to a node",
                    &self.0.scheduled,
                ),
                (
                    "scheduler_unschedulable_attempts",
                    "Scheduling attempts that found no node",
                    &self.0.unschedulable,
                ),
                (
                    "scheduler_binding_errors",
                    "Failed binding requests",
                    &self.0.errors,
                ),
                (
                    "scheduler_preemptions",
                    "Preemption attempts that evicted pods",
                    &self.0.preemptions,
                ),
            ];
            for (name, help, v) in items {
                let g = ConstGauge::new(v.load(Ordering::Relaxed) as i64);
                let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
                g.encode(m)?;
            }
            Ok(())
        }
    }
    let mut r = Registry::default();
    r.register_collector(Box::new(Collector(c.clone())));
    r
}

fn forward<K, S>(
    stream: S,
    tx: mpsc::Sender<ClusterEvent>,
    wrap: fn(watcher::Event<K>) -> ClusterEvent,
) -> JoinHandle<()>
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send(wrap(ev)).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
            }
        }
    })
}

/// The leader's work: watch, cache and schedule until `shutdown`.
async fn schedule(
    client: kube::Client,
    scheduler_name: String,
    identity: String,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::channel(16384);
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let cfg = watcher::Config::default().page_size(1000);
    let mut tasks = vec![
        forward(
            watcher(pods, cfg.clone()).default_backoff(),
            tx.clone(),
            |e| ClusterEvent::Pod(Box::new(e)),
        ),
        forward(
            watcher(nodes, cfg.clone()).default_backoff(),
            tx.clone(),
            |e| ClusterEvent::Node(Box::new(e)),
        ),
    ];
    let (pv_store, pv_writer) = reflector::store::<PersistentVolume>();
    let (pvc_store, pvc_writer) = reflector::store::<PersistentVolumeClaim>();
    let pv_stream = watcher(Api::<PersistentVolume>::all(client.clone()), cfg.clone())
        .default_backoff()
        .reflect(pv_writer)
        .touched_objects();
    let pvc_stream = watcher(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        cfg.clone(),
    )
    .default_backoff()
    .reflect(pvc_writer)
    .touched_objects();
    // Budgets only matter when choosing preemption victims: a cache, no events.
    let (pdb_store, pdb_writer) = reflector::store::<PodDisruptionBudget>();
    let pdb_stream = watcher(Api::<PodDisruptionBudget>::all(client.clone()), cfg)
        .default_backoff()
        .reflect(pdb_writer);
    tasks.push(tokio::spawn(async move {
        futures::pin_mut!(pdb_stream);
        while let Some(ev) = pdb_stream.next().await {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "disruption budget watch failed; retrying");
            }
        }
    }));
    for s in [
        pv_stream.map(|r| r.map(|_| ())).boxed(),
        pvc_stream.map(|r| r.map(|_| ())).boxed(),
    ] {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            futures::pin_mut!(s);
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(()) => {
                        if tx.send(ClusterEvent::Volume).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "volume watch failed; retrying"),
                }
            }
        }));
    }
    drop(tx);
    let recorder = Recorder::start(client.clone(), identity);
    let sched = Scheduler::new(
        client,
        recorder,
        pv_store,
        pvc_store,
        pdb_store,
        scheduler_name,
        counters,
    );
    tracing::info!("scheduler started");
    sched.run(rx, shutdown).await;
    for t in tasks {
        t.abort();
    }
    // Leave a moment for in-flight bindings' tasks; they are independent of the loop.
    tokio::time::sleep(Duration::from_millis(10)).await;
    tracing::info!("scheduler stopped");
}
