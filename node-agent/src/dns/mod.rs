//! Cluster DNS, served node-locally: every node agent answers `cluster.local`
//! (Services, headless endpoints, pods, SRV, PTR, `NodeHosts`) at the
//! cluster DNS address and forwards everything else to the host's
//! resolvers. It replaces the CoreDNS deployment K3s ships: no pod, no
//! extra hop, and it keeps working on a node cut off from the others.
//!
//! The address (`--cluster-dns`, 10.43.0.10) is made local on the node by a
//! dummy link, so pods reach it through their default route to the bridge.

pub mod forward;
pub mod link;
pub mod records;
pub mod server;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::forward::Forwarder;
use self::records::{ServiceEntry, SliceEntry, Zone};
use self::server::Resolver;

/// Where K3s keeps custom host entries: ConfigMap `kube-system/coredns`, key `NodeHosts`.
pub const HOSTS_CONFIGMAP: &str = "coredns";
pub const HOSTS_KEY: &str = "NodeHosts";
/// The dummy link that holds the cluster DNS address.
pub const DEFAULT_LINK: &str = "k3rs-dns0";
/// How long queries wait for the first list of Services before the zone
/// answers anyway (CoreDNS waits 5 s too).
const SYNC_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the cluster DNS on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Link(#[from] link::LinkError),
}

/// How the agent serves cluster DNS.
#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    /// `None`: the first `--cluster-dns` address, port 53, made local with
    /// the dummy link `link_name`.
    pub listen: Option<SocketAddr>,
    pub link_name: String,
    /// Upstream servers; empty: the nameservers of `resolv_conf`.
    pub upstreams: Vec<SocketAddr>,
    pub resolv_conf: PathBuf,
    /// Forwarded answers kept at most.
    pub cache_size: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            link_name: DEFAULT_LINK.into(),
            upstreams: Vec::new(),
            resolv_conf: "/etc/resolv.conf".into(),
            cache_size: 10_000,
        }
    }
}

/// A running DNS server; stops when dropped.
pub struct Handle {
    pub local_addr: SocketAddr,
    pub upstreams: Vec<SocketAddr>,
    tasks: JoinSet<()>,
}

impl Handle {
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Sets up the address (unless an explicit listen address is given), binds
/// UDP+TCP and serves `domain` from the API's Services and EndpointSlices.
pub async fn start(
    client: kube::Client,
    settings: &Settings,
    cluster_dns: &[IpAddr],
    domain: &str,
) -> Result<Handle, Error> {
    let addr = match settings.listen {
        Some(a) => a,
        None => {
            let ip = cluster_dns
                .first()
                .copied()
                .unwrap_or(IpAddr::from([10, 43, 0, 10]));
            link::ensure(&settings.link_name, ip).await?;
            SocketAddr::new(ip, 53)
        }
    };
    let (udp, tcp) = server::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local_addr = udp
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let upstreams = if settings.upstreams.is_empty() {
        let mut own = cluster_dns.to_vec();
        own.push(local_addr.ip());
        forward::host_upstreams(&settings.resolv_conf, &own)
    } else {
        settings.upstreams.clone()
    };
    if upstreams.is_empty() {
        tracing::warn!(resolv_conf = %settings.resolv_conf.display(), "no upstream DNS servers; only cluster names resolve");
    }
    let zone = Arc::new(RwLock::new(Zone::new(domain)));
    let resolver = Arc::new(Resolver {
        zone: zone.clone(),
        forwarder: Forwarder::new(upstreams.clone(), settings.cache_size),
    });
    let (synced_tx, mut synced) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(watch_services(client.clone(), zone.clone(), synced_tx));
    tasks.spawn(watch_slices(client.clone(), zone.clone()));
    tasks.spawn(watch_hosts(client, zone));
    tasks.spawn(async move {
        // Until the Services are listed the zone would deny real names.
        let _ = tokio::time::timeout(SYNC_WAIT, synced.wait_for(|s| *s)).await;
        tracing::info!(addr = %local_addr, "serving cluster DNS");
        server::serve(udp, tcp, resolver).await;
    });
    Ok(Handle {
        local_addr,
        upstreams,
        tasks,
    })
}

/// Runs [`start`] until it succeeds (the address may be busy for a while,
/// e.g. during an upgrade), then holds the server until dropped.
pub async fn run_retrying(
    client: kube::Client,
    settings: Settings,
    cluster_dns: Vec<IpAddr>,
    domain: String,
) {
    let mut backoff =
        k3rs_common::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match start(client.clone(), &settings, &cluster_dns, &domain).await {
            Ok(handle) => {
                // Serve for as long as this task lives.
                let _handle = handle;
                std::future::pending::<()>().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster DNS not serving; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// Applies a watch stream of `K` to the zone: a relist replaces what the
/// list had (so objects deleted while disconnected disappear).
async fn apply_events<K, S>(
    stream: S,
    zone: &RwLock<Zone>,
    what: &str,
    mut on: impl FnMut(&mut Zone, Change<'_, K>),
    mut synced: impl FnMut(),
) where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    futures::pin_mut!(stream);
    let mut relist: Option<Vec<K>> = None;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "cluster DNS: watching {what}");
                continue;
            }
        };
        let mut z = zone.write().unwrap_or_else(|e| e.into_inner());
        match ev {
            watcher::Event::Init => relist = Some(Vec::new()),
            watcher::Event::InitApply(o) => match relist.as_mut() {
                Some(list) => list.push(o),
                None => on(&mut z, Change::Apply(&o)),
            },
            watcher::Event::InitDone => {
                let list = relist.take().unwrap_or_default();
                on(&mut z, Change::Replace(&list));
                z.touch();
                drop(z);
                synced();
            }
            watcher::Event::Apply(o) => {
                on(&mut z, Change::Apply(&o));
                z.touch();
            }
            watcher::Event::Delete(o) => {
                on(&mut z, Change::Delete(&o));
                z.touch();
            }
        }
    }
}

enum Change<'a, K> {
    Apply(&'a K),
    Delete(&'a K),
    Replace(&'a [K]),
}

async fn watch_services(
    client: kube::Client,
    zone: Arc<RwLock<Zone>>,
    synced: watch::Sender<bool>,
) {
    let api: Api<Service> = Api::all(client);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    apply_events(
        stream,
        &zone,
        "services",
        |z, change| match change {
            Change::Apply(s) => {
                if let Some((k, e)) = ServiceEntry::from_service(s) {
                    z.services.insert(k, e);
                }
            }
            Change::Delete(s) => {
                if let Some((k, _)) = ServiceEntry::from_service(s) {
                    z.services.remove(&k);
                } else if let (Some(ns), Some(n)) = (&s.metadata.namespace, &s.metadata.name) {
                    z.services.remove(&(ns.clone(), n.clone()));
                }
            }
            Change::Replace(list) => {
                z.services = list.iter().filter_map(ServiceEntry::from_service).collect();
            }
        },
        || {
            synced.send_replace(true);
        },
    )
    .await;
}

async fn watch_slices(client: kube::Client, zone: Arc<RwLock<Zone>>) {
    let api: Api<EndpointSlice> = Api::all(client);
    let cfg = watcher::Config::default().labels(records::SERVICE_NAME_LABEL);
    let stream = watcher(api, cfg).default_backoff();
    apply_events(
        stream,
        &zone,
        "endpointslices",
        |z, change| match change {
            Change::Apply(s) => {
                if let Some((k, name, e)) = SliceEntry::from_slice(s) {
                    z.upsert_slice(k, name, e);
                }
            }
            Change::Delete(s) => {
                if let Some((k, name, _)) = SliceEntry::from_slice(s) {
                    z.remove_slice(&k, &name);
                }
            }
            Change::Replace(list) => {
                z.slices.clear();
                for s in list {
                    if let Some((k, name, e)) = SliceEntry::from_slice(s) {
                        z.upsert_slice(k, name, e);
                    }
                }
            }
        },
        || {},
    )
    .await;
}

async fn watch_hosts(client: kube::Client, zone: Arc<RwLock<Zone>>) {
    let api: Api<ConfigMap> = Api::namespaced(client, "kube-system");
    let cfg = watcher::Config::default().fields(&format!("metadata.name={HOSTS_CONFIGMAP}"));
    let stream = watcher(api, cfg).default_backoff();
    let hosts_of = |cm: &ConfigMap| {
        cm.data
            .as_ref()
            .and_then(|d| d.get(HOSTS_KEY))
            .map(|t| records::parse_hosts(t))
            .unwrap_or_default()
    };
    apply_events(
        stream,
        &zone,
        "the coredns ConfigMap",
        |z, change| match change {
            Change::Apply(cm) => z.hosts = hosts_of(cm),
            Change::Delete(_) => z.hosts.clear(),
            Change::Replace(list) => {
                z.hosts = list.first().map(hosts_of).unwrap_or_default();
            }
        },
        || {},
    )
    .await;
}
