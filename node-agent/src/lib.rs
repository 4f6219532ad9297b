//! k3rs-node-agent: the kubelet of k3rs. Registers this machine as a Node,
//! keeps its Lease fresh, writes the CNI config containerd reads, and runs
//! the pods bound to this node on containerd over CRI v1. It also serves
//! cluster DNS node-locally at the `--cluster-dns` address ([`dns`]).
//!
//! [`run`] is what the binary calls; [`start`] runs the same in the
//! background and returns a [`Handle`] (tests use it).

pub mod cni;
pub mod cri;
pub mod dns;
pub mod env;
pub mod ephemeral;
pub mod flannel;
pub mod images;
pub mod join;
pub mod kubelet_api;
pub mod lifecycle;
pub mod netpol;
pub mod node;
pub mod pod_status;
pub mod pod_sync;
pub mod pod_worker;
pub mod probe;
pub mod proxy;
pub mod resources;
pub mod sandbox;
pub mod static_pods;
pub mod termination;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k3rs_common::events::{Recorder, Reporter};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::cri::{CriClient, LABEL_MANAGED, LABEL_POD_UID, MANAGED_BY, PodSandboxFilter, Runtime};
use crate::pod_worker::Shared;
use crate::sandbox::PodDefaults;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("building the API client: {0}")]
    Client(#[from] kube::Error),
    #[error(transparent)]
    Cri(#[from] cri::CriError),
    #[error("binding the health endpoint {addr}: {source}")]
    Health {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("writing the CNI config in {dir}: {source}")]
    Cni {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("bad --pod-cidr {0:?}")]
    PodCidr(String),
    #[error("bad --cluster-cidr {0:?}")]
    ClusterCidr(String),
    #[error(transparent)]
    KubeletApi(#[from] kubelet_api::Error),
}

/// Everything the agent needs; the binary fills it from flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: PathBuf,
    pub node_name: String,
    /// `unix:///path/to/containerd.sock`.
    pub container_runtime_endpoint: String,
    pub root_dir: PathBuf,
    /// Where container logs go (`<ns>_<pod>_<uid>/<container>/<n>.log`).
    pub pod_logs_dir: PathBuf,
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// `None`: wait for the Node's `spec.podCIDR`.
    pub pod_cidr: Option<String>,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    /// The Linux bridge pods attach to (`cni0`).
    pub cni_bridge: String,
    /// `None`: the source address of the default route.
    pub node_ip: Option<IpAddr>,
    /// The kubelet API port (advertised in the Node status; 0 picks a free
    /// one, which is then advertised).
    pub port: u16,
    /// The address the kubelet API listens on.
    pub bind_address: IpAddr,
    /// Kubelet API serving cert/key (default `<root-dir>/pki/serving-kubelet.crt/.key`).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// CA for kubelet API client certs (default `<root-dir>/pki/ca.crt` if present).
    pub client_ca_file: Option<PathBuf>,
    /// Container log rotation (`--container-log-max-size/-files`).
    pub container_log_max_size: u64,
    pub container_log_max_files: usize,
    /// `None` runs without a health endpoint.
    pub healthz_addr: Option<SocketAddr>,
    /// The node-local cluster DNS server.
    pub dns: dns::Settings,
    /// The service proxy; `None` with `--disable-kube-proxy`.
    pub proxy: Option<proxy::ProxyConfig>,
    /// NetworkPolicy enforcement; `None` leaves the kernel alone (in-process
    /// default), `enabled: false` removes a table left from an earlier run.
    pub network_policy: Option<netpol::NetpolConfig>,
    /// Labels added to the Node (`--node-labels`).
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// Static pod manifests (`--pod-manifest-path`); `None` runs none.
    pub pod_manifest_path: Option<PathBuf>,
    /// The multi-node pod network (`--flannel-backend`).
    pub flannel_backend: flannel::Backend,
    /// Every node's pod range (`--cluster-cidr`): pod traffic inside it is
    /// routed without NAT, traffic leaving it is masqueraded.
    pub cluster_cidr: String,
    /// The nftables table of the pod network's masquerade rule.
    pub flannel_table: String,
}

impl Config {
    /// Defaults as the binary has them.
    pub fn new(kubeconfig: PathBuf, node_name: String) -> Self {
        Self {
            kubeconfig,
            node_name,
            container_runtime_endpoint: "unix:///run/k3rs/containerd/containerd.sock".into(),
            root_dir: "/var/lib/k3rs/agent".into(),
            pod_logs_dir: "/var/log/pods".into(),
            cluster_dns: vec![IpAddr::from([10, 43, 0, 10])],
            cluster_domain: "cluster.local".into(),
            pod_cidr: None,
            cni_conf_dir: "/var/lib/k3rs/agent/etc/cni/net.d".into(),
            cni_bin_dir: "/usr/lib/cni".into(),
            cni_bridge: cni::DEFAULT_BRIDGE.into(),
            node_ip: None,
            port: 10250,
            bind_address: IpAddr::from([0, 0, 0, 0]),
            tls_cert_file: None,
            tls_private_key_file: None,
            client_ca_file: None,
            container_log_max_size: 10 << 20,
            container_log_max_files: 5,
            healthz_addr: Some(SocketAddr::from(([127, 0, 0, 1], 10248))),
            // Like the proxy: the binary turns it on; in-process users opt
            // in, since it puts the cluster DNS address on a host link.
            dns: dns::Settings {
                enabled: false,
                ..Default::default()
            },
            // The binary turns it on; in-process users opt in, since it
            // programs host-wide nftables state.
            proxy: None,
            network_policy: None,
            node_labels: Default::default(),
            pod_manifest_path: None,
            // The binary defaults to vxlan like K3s; in-process users opt
            // in, since it changes host routes and nftables.
            flannel_backend: flannel::Backend::None,
            cluster_cidr: "10.42.0.0/16".into(),
            flannel_table: flannel::DEFAULT_TABLE.into(),
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

/// An agent running in the background.
pub struct Handle {
    task: JoinHandle<Result<(), Error>>,
    pub health_addr: Option<SocketAddr>,
    /// Where the kubelet API listens.
    pub kubelet_addr: SocketAddr,
}

/// Aborts a background task when whatever holds it is dropped (the agent
/// task owns its DNS, kubelet API and log-rotation tasks this way).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Handle {
    /// Stops the agent. Pods keep running (as when kubelet restarts); a new
    /// agent adopts them.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

/// Dropping the handle (a test that panicked) stops the agent too, so it
/// does not recreate sandboxes while the runtime is being torn down.
impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), Error> {
    let mut handle = start(config).await?;
    tokio::select! {
        r = &mut handle.task => return r.unwrap_or(Ok(())),
        () = shutdown_signal() => {}
    }
    tracing::info!("shutting down; pods keep running");
    handle.stop().await;
    Ok(())
}

async fn shutdown_signal() {
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

/// Connects, registers the node and starts the pod workers in the background.
pub async fn start(mut config: Config) -> Result<Handle, Error> {
    let client = client_from_kubeconfig(&config.kubeconfig).await?;
    let rt = Arc::new(CriClient::new(&config.container_runtime_endpoint)?);
    let node_ip = *config.node_ip.get_or_insert_with(node::detect_node_ip);
    let kubelet = kubelet_api::bind(
        &kubelet_api::ServingConfig {
            bind: SocketAddr::new(config.bind_address, config.port),
            tls_cert_file: config.tls_cert_file.clone(),
            tls_key_file: config.tls_private_key_file.clone(),
            client_ca_file: config.client_ca_file.clone(),
        },
        &config.root_dir,
        &config.node_name,
        node_ip,
    )
    .await?;
    let kubelet_addr = kubelet.local_addr;
    config.port = kubelet_addr.port();
    let kubelet_state = Arc::new(kubelet_api::State {
        rt: rt.clone(),
        client: client.clone(),
        node_name: config.node_name.clone(),
        pod_logs_dir: config.pod_logs_dir.clone(),
        root_dir: config.root_dir.clone(),
        authorizer: kubelet_api::authz::Authorizer::new(Arc::new(kubelet_api::authz::ApiReviewer(
            client.clone(),
        ))),
    });
    let rotation = kubelet_api::logs::Rotation {
        max_size: config.container_log_max_size,
        max_files: config.container_log_max_files,
    };
    let ready = k3rs_common::Readiness::default();
    let health = match config.healthz_addr {
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
    let health_addr = health.as_ref().map(|h| h.local_addr);
    // Cluster DNS does not wait for the runtime or the node registration:
    // host-network pods and the node itself may resolve through it.
    let dns = config.dns.enabled.then(|| {
        tokio::spawn(dns::run_retrying(
            client.clone(),
            config.dns.clone(),
            config.cluster_dns.clone(),
            config.cluster_domain.clone(),
        ))
        .abort_handle()
    });
    let task = tokio::spawn(async move {
        let _health = health;
        let _dns = dns.map(AbortOnDrop);
        let _kubelet =
            AbortOnDrop(tokio::spawn(kubelet_api::serve(kubelet, kubelet_state)).abort_handle());
        let _rotation = AbortOnDrop(
            tokio::spawn(kubelet_api::rotate_logs(
                rt.clone(),
                config.pod_logs_dir.clone(),
                rotation,
            ))
            .abort_handle(),
        );
        agent(config, client, rt, ready).await
    });
    Ok(Handle {
        task,
        health_addr,
        kubelet_addr,
    })
}

async fn agent<R: Runtime>(
    config: Config,
    client: kube::Client,
    rt: Arc<R>,
    ready: k3rs_common::Readiness,
) -> Result<(), Error> {
    let mut backoff =
        k3rs_common::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let version = loop {
        match rt.version().await {
            Ok(v) => break v,
            Err(e) => {
                tracing::warn!(endpoint = %config.container_runtime_endpoint, error = %e, "waiting for the container runtime");
                backoff.wait().await;
            }
        }
    };
    tracing::info!(runtime = %version.runtime_name, version = %version.runtime_version, "container runtime is up");
    let node_ip = config.node_ip.unwrap_or_else(node::detect_node_ip);
    let machine = node::Machine::probe(
        &config.root_dir,
        node_ip,
        &format!("{}://{}", version.runtime_name, version.runtime_version),
    );
    let nodes: Api<Node> = Api::all(client.clone());
    backoff.reset();
    let registered = loop {
        match node::register(&nodes, &config.node_name, &config.node_labels).await {
            Ok(n) => break n,
            Err(e) => {
                tracing::warn!(node = %config.node_name, error = %e, "registering the node");
                backoff.wait().await;
            }
        }
    };
    tracing::info!(node = %config.node_name, ip = %node_ip, "node registered");

    let mut tasks = JoinSet::new();
    let (runtime_ok_tx, runtime_ok_rx) = watch::channel(Err::<(), String>(
        "container runtime network not ready: waiting for the pod CIDR".into(),
    ));
    tasks.spawn(heartbeat(
        client.clone(),
        config.clone(),
        machine.clone(),
        registered.metadata.uid.clone(),
        runtime_ok_rx,
    ));

    let pod_cidr = match &config.pod_cidr {
        Some(c) => c.clone(),
        None => loop {
            match nodes.get(&config.node_name).await {
                Ok(n) => {
                    if let Some(c) = n.spec.and_then(|s| s.pod_cidr) {
                        break c;
                    }
                    tracing::info!("waiting for the node's spec.podCIDR");
                }
                Err(e) => tracing::warn!(error = %e, "reading the node"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        },
    };
    if !pod_cidr.contains('/') {
        return Err(Error::PodCidr(pod_cidr));
    }
    let network = pod_network(&config, node_ip, &pod_cidr)?;
    let cni_opts = match &network {
        Some((settings, local)) => cni::Options {
            ip_masq: flannel::masquerade_by_bridge(),
            mtu: flannel::pod_mtu(settings.backend, local.node_ip),
        },
        None => cni::Options::default(),
    };
    if let Some((settings, local)) = network {
        tasks.spawn(flannel::run(client.clone(), settings, local));
    }
    let path = cni::write(
        &config.cni_conf_dir,
        &config.cni_bridge,
        &pod_cidr,
        &config.root_dir.join("cni").join("networks"),
        cni_opts,
    )
    .map_err(|source| Error::Cni {
        dir: config.cni_conf_dir.clone(),
        source,
    })?;
    tracing::info!(path = %path.display(), %pod_cidr, "wrote the CNI config");
    if let Some(proxy) = config.proxy.clone() {
        let ctx = proxy::model::NodeContext {
            node_name: config.node_name.clone(),
            cluster_dns: config.cluster_dns.clone(),
            pod_cidr: Some(pod_cidr.clone()),
        };
        tasks.spawn(proxy::run(client.clone(), proxy, ctx));
    }
    if let Some(np) = config.network_policy.clone() {
        tasks.spawn(netpol::run(client.clone(), np, config.node_name.clone()));
    }
    {
        let rt = rt.clone();
        tasks.spawn(async move {
            loop {
                let state = match rt.ready().await {
                    Ok((true, _)) => Ok(()),
                    Ok((false, msg)) => Err(format!("container runtime not ready: {msg}")),
                    Err(e) => Err(format!("container runtime is down: {e}")),
                };
                runtime_ok_tx.send_if_modified(|old| {
                    let changed = *old != state;
                    *old = state.clone();
                    changed
                });
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
    ready.set(true);

    let shared = Arc::new(Shared {
        client: client.clone(),
        rt: rt.clone(),
        defaults: PodDefaults {
            cluster_dns: config.cluster_dns.iter().map(|i| i.to_string()).collect(),
            cluster_domain: config.cluster_domain.clone(),
            pod_logs_dir: config.pod_logs_dir.clone(),
            host_resolv_conf: config.dns.resolv_conf.clone(),
        },
        host_ip: node_ip.to_string(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "kubelet".into(),
                instance: Some(config.node_name.clone()),
            },
        ),
        volumes: volumes::Volumes::new(&config.root_dir),
        image_backoff: images::PullBackoff::default(),
    });
    let statics = config
        .pod_manifest_path
        .clone()
        .map(|dir| static_pods::start(shared.clone(), dir, config.node_name.clone(), &mut tasks));
    watch_pods(shared, &config.node_name, tasks, statics).await;
    Ok(())
}

/// The pod network's settings, `None` with `--flannel-backend none`.
fn pod_network(
    config: &Config,
    node_ip: IpAddr,
    pod_cidr: &str,
) -> Result<Option<(flannel::Settings, flannel::Local)>, Error> {
    if config.flannel_backend == flannel::Backend::None {
        return Ok(None);
    }
    let cluster_cidr: flannel::Ipv4Cidr = config
        .cluster_cidr
        .parse()
        .map_err(|_| Error::ClusterCidr(config.cluster_cidr.clone()))?;
    let pod_cidr: flannel::Ipv4Cidr = pod_cidr
        .parse()
        .map_err(|_| Error::PodCidr(pod_cidr.to_string()))?;
    let IpAddr::V4(node_ip) = node_ip else {
        tracing::warn!(%node_ip, "the pod network needs an IPv4 node address; not starting it");
        return Ok(None);
    };
    Ok(Some((
        flannel::Settings {
            backend: config.flannel_backend,
            cluster_cidr,
            table: config.flannel_table.clone(),
        },
        flannel::Local {
            node_name: config.node_name.clone(),
            node_ip,
            pod_cidr,
        },
    )))
}

/// Lease every 10 s; Node status every minute or when readiness changes.
async fn heartbeat(
    client: kube::Client,
    config: Config,
    machine: node::Machine,
    node_uid: Option<String>,
    mut runtime_ok: watch::Receiver<Result<(), String>>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut last_status: Option<std::time::Instant> = None;
    let mut old: Option<k8s_openapi::api::core::v1::NodeStatus> = None;
    let mut lease_tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        let state = runtime_ok.borrow_and_update().clone();
        if let Err(e) = node::renew_lease(&leases, &config.node_name, node_uid.as_deref()).await {
            tracing::warn!(error = %e, "renewing the node lease");
        }
        let due = last_status.is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        let changed = old
            .as_ref()
            .and_then(|o| o.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| (c.status == "True") != state.is_ok())
            .unwrap_or(true);
        if due || changed {
            let status = node::status(&machine, old.as_ref(), state, config.port);
            match node::update_status(&nodes, &config.node_name, &status).await {
                Ok(n) => {
                    old = n.status;
                    last_status = Some(std::time::Instant::now());
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    // Someone deleted our Node: register again.
                    if let Err(e) =
                        node::register(&nodes, &config.node_name, &config.node_labels).await
                    {
                        tracing::warn!(error = %e, "re-registering the node");
                    }
                    old = None;
                }
                Err(e) => tracing::warn!(error = %e, "updating the node status"),
            }
        }
        tokio::select! {
            _ = lease_tick.tick() => {}
            _ = runtime_ok.changed() => {}
        }
    }
}

/// Watches the pods bound to this node and hands each to its worker.
async fn watch_pods<R: Runtime>(
    shared: Arc<Shared<R>>,
    node_name: &str,
    mut tasks: JoinSet<()>,
    statics: Option<static_pods::Handle>,
) {
    let pods: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let stream = watcher(pods, cfg).default_backoff();
    futures::pin_mut!(stream);
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut listing: Option<HashSet<String>> = None;
    while let Some(ev) = stream.next().await {
        workers.retain(|_, tx| !tx.is_closed());
        // Reap finished workers so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "watching pods");
                continue;
            }
        };
        // Mirror pods are run from their manifests, not from the API.
        if let watcher::Event::InitApply(p) | watcher::Event::Apply(p) | watcher::Event::Delete(p) =
            &ev
            && static_pods::is_mirror(p)
        {
            if let Some(s) = &statics {
                s.nudge();
            }
            continue;
        }
        match ev {
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(seen) = listing.as_mut() {
                    seen.insert(sandbox::pod_uid(&pod));
                }
                dispatch(&shared, &mut workers, &mut tasks, pod);
            }
            watcher::Event::InitDone => {
                let seen = listing.take().unwrap_or_default();
                for (uid, tx) in &workers {
                    if !seen.contains(uid) {
                        tx.send_replace(None);
                    }
                }
                let mut known = seen;
                if let Some(s) = &statics {
                    known.extend(s.uids());
                }
                sweep_orphans(&shared, &known, &mut tasks).await;
            }
            watcher::Event::Apply(pod) => dispatch(&shared, &mut workers, &mut tasks, pod),
            watcher::Event::Delete(pod) => {
                if let Some(tx) = workers.get(&sandbox::pod_uid(&pod)) {
                    tx.send_replace(None);
                }
            }
        }
    }
}

fn dispatch<R: Runtime>(
    shared: &Arc<Shared<R>>,
    workers: &mut HashMap<String, watch::Sender<Option<Pod>>>,
    tasks: &mut JoinSet<()>,
    pod: Pod,
) {
    let uid = sandbox::pod_uid(&pod);
    if uid.is_empty() {
        return;
    }
    if let Some(tx) = workers.get(&uid)
        && !tx.is_closed()
    {
        tx.send_replace(Some(pod));
        return;
    }
    let (tx, rx) = watch::channel(Some(pod));
    workers.insert(uid, tx);
    tasks.spawn(pod_worker::run(shared.clone(), rx));
}

/// Sandboxes we created for pods the API no longer has (deleted while the
/// agent was down) are stopped and removed.
async fn sweep_orphans<R: Runtime>(
    shared: &Arc<Shared<R>>,
    known: &HashSet<String>,
    tasks: &mut JoinSet<()>,
) {
    let filter = PodSandboxFilter {
        label_selector: [(LABEL_MANAGED.to_string(), MANAGED_BY.to_string())].into(),
        ..Default::default()
    };
    let sandboxes = match shared.rt.list_pod_sandboxes(Some(filter)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "listing sandboxes");
            return;
        }
    };
    let orphans: HashSet<String> = sandboxes
        .iter()
        .filter_map(|s| s.labels.get(LABEL_POD_UID).cloned())
        .filter(|uid| !known.contains(uid))
        .collect();
    for uid in orphans {
        let shared = shared.clone();
        tasks.spawn(async move { pod_worker::remove_orphan(&shared, &uid).await });
    }
}
