//! The multi-node pod network, flannel style: every Node's `spec.podCIDR`
//! is routed to that node. With `host-gw` the route goes straight to the
//! node's address (nodes share an L2 segment); with `vxlan` it goes through
//! the kernel VXLAN device `flannel.1`, with the peer's VTEP MAC (from its
//! Node annotations) in the ARP and forwarding tables. Pod-to-pod traffic
//! keeps its source address; pod traffic leaving the cluster CIDR is
//! masqueraded by an nftables table of our own.
//!
//! [`run`] watches the Nodes and reconciles: it publishes this node's
//! annotations and makes the kernel's entries match the current Node set,
//! removing those of deleted Nodes. Entries are marked (route protocol
//! [`ROUTE_PROTO`], permanent entries on our own device) so a restarted
//! agent finds and adopts what its predecessor made instead of duplicating.

pub mod annotations;
pub mod dataplane;
pub mod ip;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};

use dataplane::NetError;

/// The VXLAN device, flannel's name (tools and docs look for it).
pub const VXLAN_DEV: &str = "flannel.1";
/// flannel's defaults, so a k3rs node interoperates with a flannel one.
pub const VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;
/// Bytes VXLAN adds to every packet (outer IPv4 + UDP + VXLAN + Ethernet).
pub const VXLAN_OVERHEAD: u32 = 50;
/// The `proto` our routes carry (`ip route show proto 108`).
pub const ROUTE_PROTO: u8 = 108;
/// The nftables table (family `ip`) with the masquerade rule.
pub const DEFAULT_TABLE: &str = "k3rs-flannel";
/// How often the kernel is checked even without Node events (repairs
/// entries someone removed by hand).
const RESYNC: Duration = Duration::from_secs(30);

/// `--flannel-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Routes via each node's address (nodes on one L2 segment).
    #[value(name = "host-gw")]
    HostGw,
    /// Kernel VXLAN (`flannel.1`): works across routed networks.
    Vxlan,
    /// No pod network across nodes (single node, or bring your own CNI).
    None,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::HostGw => "host-gw",
            Backend::Vxlan => "vxlan",
            Backend::None => "none",
        }
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host-gw" => Ok(Backend::HostGw),
            "vxlan" => Ok(Backend::Vxlan),
            "none" => Ok(Backend::None),
            other => Err(format!(
                "{other:?} is not a flannel backend (host-gw, vxlan, none)"
            )),
        }
    }
}

/// An IPv4 network; parsing normalises to the network address, the form
/// the kernel lists routes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    pub fn network(self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(self) -> u8 {
        self.prefix
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.prefix) == u32::from(self.addr)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IPv4 CIDR like 10.42.0.0/16");
        let (a, p) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Self {
            addr: Ipv4Addr::from(u32::from(addr) & Self::mask(prefix)),
            prefix,
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The pod network's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub backend: Backend,
    /// Every node's pod range lies in it; traffic within it is not NATed.
    pub cluster_cidr: Ipv4Cidr,
    /// nftables table for the masquerade rule.
    pub table: String,
}

/// This node, as the pod network sees it.
#[derive(Debug, Clone)]
pub struct Local {
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    pub pod_cidr: Ipv4Cidr,
}

/// What host setup found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The link holding the node address.
    pub lan_dev: String,
    /// `flannel.1`'s MAC (VXLAN only).
    pub vtep_mac: Option<String>,
    /// The MTU pods should use.
    pub pod_mtu: u32,
}

/// The MTU pods get on this backend, from the link holding `node_ip`
/// (VXLAN takes its header out of it).
pub fn pod_mtu(backend: Backend, node_ip: Ipv4Addr) -> Option<u32> {
    let (_, mtu) = ip::lan_link(node_ip).ok()?;
    match backend {
        Backend::Vxlan => Some(mtu.saturating_sub(VXLAN_OVERHEAD)),
        Backend::HostGw => Some(mtu),
        Backend::None => None,
    }
}

/// Whether pods' egress must be masqueraded by the CNI bridge plugin
/// instead of our table: on a host without `nft` (then pod-to-pod traffic
/// across nodes is NATed too, which is logged).
pub fn masquerade_by_bridge() -> bool {
    if ip::nft_available() {
        return false;
    }
    tracing::warn!(
        "nft is missing: pods are masqueraded by the CNI bridge plugin, so pods on other nodes see the node address"
    );
    true
}

/// Forwarding, the masquerade table and (VXLAN) the device; idempotent.
pub fn setup(settings: &Settings, local: &Local) -> Result<Host, NetError> {
    let (lan_dev, mtu) = ip::lan_link(local.node_ip)?;
    ip::enable_forwarding()?;
    // Without nft the bridge plugin's own masquerade stays on (see
    // `masquerade_by_bridge`).
    if ip::nft_available() {
        ip::apply_masquerade(&settings.table, settings.cluster_cidr)?;
    }
    match settings.backend {
        Backend::Vxlan => {
            let pod_mtu = mtu.saturating_sub(VXLAN_OVERHEAD);
            let mac = ip::ensure_vxlan(local.node_ip, &lan_dev, pod_mtu, local.pod_cidr.network())?;
            Ok(Host {
                lan_dev,
                vtep_mac: Some(mac),
                pod_mtu,
            })
        }
        Backend::HostGw | Backend::None => {
            ip::remove_vxlan()?;
            Ok(Host {
                lan_dev,
                vtep_mac: None,
                pod_mtu: mtu,
            })
        }
    }
}

/// Watches the Nodes and keeps this node's pod network in step until the
/// task is aborted. Never returns an error: failures are logged and
/// retried on the next event or resync.
pub async fn run(client: kube::Client, settings: Settings, local: Local) {
    if settings.backend == Backend::None {
        return;
    }
    tracing::info!(backend = settings.backend.as_str(), node_ip = %local.node_ip, pod_cidr = %local.pod_cidr, cluster_cidr = %settings.cluster_cidr, "starting the pod network");
    let api: Api<Node> = Api::all(client);
    let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut known: BTreeMap<String, Node> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Node>> = None;
    // Until the first full list we do not know the peers; reconciling then
    // would remove a restarted agent's still-valid routes.
    let mut synced = false;
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { return };
                match ev {
                    Ok(watcher::Event::Init) => { listing = Some(BTreeMap::new()); continue }
                    Ok(watcher::Event::InitApply(n)) => {
                        if let (Some(l), Some(name)) = (listing.as_mut(), n.metadata.name.clone()) {
                            l.insert(name, n);
                        }
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        known = listing.take().unwrap_or_default();
                        synced = true;
                    }
                    Ok(watcher::Event::Apply(n)) => {
                        if let Some(name) = n.metadata.name.clone() {
                            // Status heartbeats do not change what we route.
                            if known.get(&name).is_some_and(|o| same_network(o, &n)) {
                                known.insert(name, n);
                                continue;
                            }
                            known.insert(name, n);
                        }
                    }
                    Ok(watcher::Event::Delete(n)) => {
                        if let Some(name) = &n.metadata.name {
                            known.remove(name);
                        }
                    }
                    Err(e) => { tracing::warn!(error = %e, "watching nodes"); continue }
                }
            }
            _ = resync.tick() => {}
        }
        if synced {
            reconcile(&api, &settings, &local, &known).await;
        }
    }
}

/// Whether two versions of a Node route the same (ignores status churn).
fn same_network(a: &Node, b: &Node) -> bool {
    annotations::peer(a) == annotations::peer(b) && a.metadata.annotations == b.metadata.annotations
}

async fn reconcile(
    api: &Api<Node>,
    settings: &Settings,
    local: &Local,
    known: &BTreeMap<String, Node>,
) {
    let (s, l) = (settings.clone(), local.clone());
    let host = match tokio::task::spawn_blocking(move || setup(&s, &l)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "setting up the pod network");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "pod network setup task");
            return;
        }
    };
    let want = annotations::own(settings.backend, local.node_ip, host.vtep_mac.as_deref());
    if !known
        .get(&local.node_name)
        .is_some_and(|n| annotations::has_all(n, &want))
    {
        let patch = serde_json::json!({"metadata": {"annotations": want}});
        match api
            .patch(
                &local.node_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(node = %local.node_name, "published the pod network annotations")
            }
            // Re-registered by the heartbeat soon; the next event retries.
            Err(e) => tracing::warn!(error = %e, "annotating the node"),
        }
    }
    let peers: Vec<annotations::Peer> = known.values().filter_map(annotations::peer).collect();
    let peers_len = peers.len();
    let desired = dataplane::desired(
        settings.backend,
        &local.node_name,
        local.node_ip,
        &host.lan_dev,
        &peers,
    );
    match tokio::task::spawn_blocking(move || dataplane::reconcile(&ip::IpCommand, &desired)).await
    {
        Ok(Ok(p)) if !p.is_empty() => tracing::info!(
            added = p.add.routes.len(),
            removed = p.del.routes.len(),
            "pod network routes updated"
        ),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "updating pod network routes");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "pod network reconcile task");
            return;
        }
    }
    tracing::debug!(peers = peers_len, "pod network reconciled");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_normalises() {
        let c: Ipv4Cidr = "10.245.1.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.245.1.0/24");
        assert_eq!(c.network(), Ipv4Addr::new(10, 245, 1, 0));
        assert!(c.contains(Ipv4Addr::new(10, 245, 1, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 245, 2, 1)));
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().prefix(), 0);
        for bad in ["10.0.0.0", "10.0.0.0/33", "fd00::/64", "x/8", ""] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn backend_names_are_k3s_flag_values() {
        for b in [Backend::HostGw, Backend::Vxlan, Backend::None] {
            assert_eq!(b.as_str().parse::<Backend>().unwrap(), b);
        }
        assert!("wireguard".parse::<Backend>().is_err());
    }
}
