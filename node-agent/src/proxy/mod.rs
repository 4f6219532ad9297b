//! The service proxy (what kube-proxy does, inside the agent): watches
//! Services, EndpointSlices and Nodes, computes the desired rules
//! ([`model`]), renders them ([`nft`], or [`iptables`] where `nft` is
//! missing) and keeps the kernel in step ([`apply`]).

pub mod apply;
pub mod iptables;
pub mod model;
pub mod nft;

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use self::apply::{IptablesRestore, Kernel, NftCli, NftSyncer, Synced};
use self::model::NodeContext;

/// Which kernel interface programs the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// nftables through `nft` (falls back to iptables when `nft` is missing).
    Nftables,
    /// iptables through `iptables-restore`.
    Iptables,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub mode: Mode,
    /// The nftables table (family `ip`); also the prefix of iptables chains.
    pub table: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Nftables,
            table: "k3rs-proxy".into(),
        }
    }
}

/// Either kernel interface, each remembering what it applied.
pub enum Backend {
    Nft(NftSyncer<Box<dyn Kernel>>),
    Iptables(iptables::IptablesSyncer<Box<dyn Kernel>>),
}

impl Backend {
    /// The backend `config` asks for, or iptables when `nft` is missing.
    pub fn detect(config: &ProxyConfig) -> Self {
        let nft = apply::available("nft");
        if config.mode == Mode::Nftables && nft {
            tracing::info!(table = %config.table, "service proxy uses nftables");
            return Self::Nft(NftSyncer::new(Box::new(NftCli), &config.table));
        }
        if config.mode == Mode::Nftables {
            tracing::warn!("nft is missing; service proxy falls back to iptables-restore");
        } else {
            tracing::info!("service proxy uses iptables-restore");
        }
        Self::Iptables(iptables::IptablesSyncer::new(
            Box::new(IptablesRestore),
            &config.table,
        ))
    }

    pub fn sync(&mut self, model: &model::Model) -> Result<Synced, apply::ApplyError> {
        match self {
            Self::Nft(s) => s.sync(nft::render(model)),
            Self::Iptables(s) => s.sync(model),
        }
    }
}

/// Turns on what forwarding to Service endpoints needs (as K3s does):
/// routing between interfaces, and bridged pod-to-pod replies passing
/// through conntrack so their NAT is undone.
fn enable_forwarding() {
    for (path, what) in [
        ("/proc/sys/net/ipv4/ip_forward", "IP forwarding"),
        (
            "/proc/sys/net/bridge/bridge-nf-call-iptables",
            "netfilter on bridged traffic",
        ),
    ] {
        match std::fs::read_to_string(path) {
            Ok(v) if v.trim() == "1" => {}
            Ok(_) => match std::fs::write(path, "1") {
                Ok(()) => tracing::info!(%path, "enabled {what}"),
                Err(e) => tracing::warn!(%path, error = %e, "cannot enable {what}"),
            },
            Err(e) => tracing::debug!(%path, error = %e, "not available"),
        }
    }
}

/// A store of `K` kept current by a watch, plus the task driving it; every
/// change after the initial list wakes `changed`. `what` names the watch in
/// its log lines. Shared with the NetworkPolicy enforcer.
pub(crate) fn reflect<K>(
    api: Api<K>,
    changed: Arc<Notify>,
    what: &'static str,
) -> (Store<K>, impl Future<Output = ()>)
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let drive = async move {
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(error = %e, "{what} watch"),
            }
        }
    };
    (reader, drive)
}

/// Runs the proxy until the task is dropped. Rules stay in the kernel when
/// it stops (as kube-proxy's do): restarting converges them without
/// disturbing live connections.
pub async fn run(client: kube::Client, config: ProxyConfig, ctx: NodeContext) {
    enable_forwarding();
    let changed = Arc::new(Notify::new());
    let (services, drive_services) = reflect(
        Api::<Service>::all(client.clone()),
        changed.clone(),
        "service proxy",
    );
    let (slices, drive_slices) = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        changed.clone(),
        "service proxy",
    );
    let (nodes, drive_nodes) = reflect(Api::<Node>::all(client), changed.clone(), "service proxy");
    let watches = async {
        tokio::join!(drive_services, drive_slices, drive_nodes);
    };
    let sync = async {
        // Never program a partial view: that would drop live Services.
        for ready in [
            services.wait_until_ready().await,
            slices.wait_until_ready().await,
            nodes.wait_until_ready().await,
        ] {
            if ready.is_err() {
                return;
            }
        }
        let config = config.clone();
        let mut backend = match tokio::task::spawn_blocking(move || Backend::detect(&config)).await
        {
            Ok(b) => b,
            Err(_) => return,
        };
        let mut backoff =
            k3rs_common::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let started = Instant::now();
            let svcs = services.state();
            let eps = slices.state();
            let ns = nodes.state();
            let model = model::build(
                svcs.iter().map(AsRef::as_ref),
                eps.iter().map(AsRef::as_ref),
                ns.iter().map(AsRef::as_ref),
                &ctx,
            );
            let ports = model.ports.len();
            let done = tokio::task::spawn_blocking(move || {
                let r = backend.sync(&model);
                (backend, r)
            })
            .await;
            let Ok((b, result)) = done else { return };
            backend = b;
            match result {
                Ok(Synced::Unchanged) => {}
                Ok(how) => {
                    backoff.reset();
                    tracing::debug!(?how, service_ports = ports, took = ?started.elapsed(), "service rules synced");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "programming service rules");
                    // Retry even if nothing changes meanwhile.
                    tokio::select! {
                        () = backoff.wait() => {}
                        () = changed.notified() => {}
                    }
                    continue;
                }
            }
            changed.notified().await;
        }
    };
    tokio::select! {
        () = watches => {}
        () = sync => {}
    }
}
