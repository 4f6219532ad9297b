//! What NetworkPolicies mean for the pods on this node, as plain data: for
//! each local pod (by IPv4 address) whether it is isolated per direction,
//! and which (peer address range, protocol, port range) it may talk to.
//! Pure: computed from the API objects alone, so the semantics are tested
//! here without a kernel.
//!
//! Semantics follow upstream `networking.k8s.io/v1`:
//! - a pod is isolated for a direction only if some policy selecting it has
//!   that direction in `policyTypes` (default: Ingress, plus Egress when the
//!   policy has egress rules); otherwise all traffic in that direction passes;
//! - allowed traffic is the union of the rules of every selecting policy;
//! - an absent or empty `from`/`to` matches every peer, absent or empty
//!   `ports` every port and protocol;
//! - `podSelector` alone picks pods in the policy's namespace,
//!   `namespaceSelector` alone every pod of the matching namespaces, both
//!   together the matching pods of the matching namespaces (`{}` = all);
//! - named ports resolve against the *destination* pod's container ports:
//!   the local pod for ingress, each peer pod for egress.
//!
//! Choices where upstream leaves it to the implementation: `ipBlock`
//! matches any address, pod IPs included; pods with `hostNetwork`, pods
//! that finished and pods without an IPv4 address are neither targets nor
//! peers; only IPv4 is enforced (IPv6 CIDRs match nothing). Traffic between
//! a pod and its own node is not filtered (kubelet probes, node-local DNS).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Transport protocols a policy port can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The name nft knows it by.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// An inclusive range of IPv4 addresses (`u32`, host order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrRange {
    pub first: u32,
    pub last: u32,
}

impl AddrRange {
    pub const ALL: Self = Self {
        first: 0,
        last: u32::MAX,
    };

    pub fn host(ip: Ipv4Addr) -> Self {
        let n = u32::from(ip);
        Self { first: n, last: n }
    }

    /// `a.b.c.d/len`; `None` for anything else (IPv6 included).
    pub fn parse_cidr(s: &str) -> Option<Self> {
        let (ip, len) = s.trim().split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let len: u32 = len.parse().ok()?;
        if len > 32 {
            return None;
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let first = u32::from(ip) & mask;
        Some(Self {
            first,
            last: first | !mask,
        })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }
}

impl std::fmt::Display for AddrRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", Ipv4Addr::from(self.first))
        } else {
            write!(
                f,
                "{}-{}",
                Ipv4Addr::from(self.first),
                Ipv4Addr::from(self.last)
            )
        }
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ALL: Self = Self {
        first: 0,
        last: u16::MAX,
    };

    pub fn one(p: u16) -> Self {
        Self { first: p, last: p }
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// What one direction allows, for every isolated local pod. The sets are
/// disjoint per pod (the kernel's interval sets refuse overlaps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Local pods isolated in this direction.
    pub isolated: BTreeSet<Ipv4Addr>,
    /// (local pod, peer range): any protocol and port.
    pub any: BTreeSet<(Ipv4Addr, AddrRange)>,
    /// (local pod, peer range, protocol, destination ports).
    pub ports: BTreeSet<(Ipv4Addr, AddrRange, Protocol, PortRange)>,
}

impl Allowed {
    /// Whether a new connection between local pod `pod` and `peer` on
    /// `proto`/`port` (the destination port) passes in this direction: what
    /// the kernel rules decide, for tests.
    pub fn allows(&self, pod: Ipv4Addr, peer: Ipv4Addr, proto: Protocol, port: u16) -> bool {
        !self.isolated.contains(&pod)
            || self.any.iter().any(|(p, r)| *p == pod && r.contains(peer))
            || self.ports.iter().any(|(p, r, pr, ports)| {
                *p == pod
                    && r.contains(peer)
                    && *pr == proto
                    && (ports.first..=ports.last).contains(&port)
            })
    }
}

/// The rules for the pods on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub ingress: Allowed,
    pub egress: Allowed,
}

/// A pod as policies see it.
struct PodInfo<'a> {
    namespace: &'a str,
    labels: Option<&'a BTreeMap<String, String>>,
    ip: Ipv4Addr,
    local: bool,
    pod: &'a Pod,
}

/// Whether `labels` satisfy `sel` (an empty selector matches everything;
/// an unknown operator matches nothing, as upstream's validation would
/// have refused it).
pub fn selector_matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    if let Some(ml) = &sel.match_labels
        && ml.iter().any(|(k, v)| get(k) != Some(v))
    {
        return false;
    }
    sel.match_expressions.iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        let value = get(&req.key);
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    })
}

/// The pod's IPv4 address, if policies apply to it at all.
fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let status = pod.status.as_ref()?;
    // A finished pod's address may already belong to a new pod.
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let first = status.pod_ip.iter();
    let all = status.pod_ips.iter().flatten().map(|p| &p.ip);
    first.chain(all).find_map(|s| s.parse::<Ipv4Addr>().ok())
}

/// The ports a named port means on `pod`.
fn named_port(pod: &Pod, name: &str, proto: Protocol) -> Vec<u16> {
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.name.as_deref() == Some(name))
        .filter(|p| Protocol::parse(p.protocol.as_deref().unwrap_or("TCP")) == Some(proto))
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect()
}

/// One entry of a rule's `ports`.
enum PortSpec<'a> {
    Numbered(Protocol, PortRange),
    Named(Protocol, &'a str),
}

/// A rule's ports; `None` = every port and protocol.
fn port_specs(ports: Option<&Vec<NetworkPolicyPort>>) -> Option<Vec<PortSpec<'_>>> {
    let ports = ports.filter(|p| !p.is_empty())?;
    let specs = ports.iter().filter_map(|p| {
        let proto = Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"))?;
        Some(match &p.port {
            None => PortSpec::Numbered(proto, PortRange::ALL),
            Some(IntOrString::Int(n)) => {
                let first = u16::try_from(*n).ok()?;
                let last = match p.end_port {
                    Some(e) => u16::try_from(e).ok().filter(|e| *e >= first)?,
                    None => first,
                };
                PortSpec::Numbered(proto, PortRange { first, last })
            }
            Some(IntOrString::String(name)) => PortSpec::Named(proto, name),
        })
    });
    Some(specs.collect())
}

/// The address ranges an `ipBlock` covers: its CIDR minus the exceptions.
fn ip_block_ranges(cidr: &str, except: &[String]) -> Vec<AddrRange> {
    let Some(block) = AddrRange::parse_cidr(cidr) else {
        return Vec::new();
    };
    let mut ranges = vec![block];
    for ex in except.iter().filter_map(|e| AddrRange::parse_cidr(e)) {
        ranges = ranges
            .into_iter()
            .flat_map(|r| {
                let mut out = Vec::new();
                if ex.last < r.first || ex.first > r.last {
                    out.push(r);
                    return out;
                }
                if ex.first > r.first {
                    out.push(AddrRange {
                        first: r.first,
                        last: ex.first - 1,
                    });
                }
                if ex.last < r.last {
                    out.push(AddrRange {
                        first: ex.last + 1,
                        last: r.last,
                    });
                }
                out
            })
            .collect();
    }
    ranges
}

/// Who a rule's `from`/`to` matches.
struct Peers<'p> {
    /// Every address (the list was absent or empty).
    all: bool,
    /// Pods picked by selectors.
    pods: Vec<&'p PodInfo<'p>>,
    /// ipBlocks.
    blocks: Vec<AddrRange>,
}

impl<'p> Peers<'p> {
    /// Address ranges of the peers (pods as single addresses).
    fn ranges(&self) -> Vec<AddrRange> {
        if self.all {
            return vec![AddrRange::ALL];
        }
        let pods = self.pods.iter().map(|p| AddrRange::host(p.ip));
        pods.chain(self.blocks.iter().copied()).collect()
    }

    /// The pods among the peers: a named port only means something on a
    /// pod, and ipBlocks cover the pods whose addresses fall inside.
    fn pods(&self, all_pods: &'p [PodInfo<'p>]) -> Vec<&'p PodInfo<'p>> {
        if self.all {
            return all_pods.iter().collect();
        }
        let mut out: Vec<&PodInfo> = self.pods.clone();
        out.extend(
            all_pods
                .iter()
                .filter(|p| self.blocks.iter().any(|b| b.contains(p.ip))),
        );
        out
    }
}

struct Cluster<'a> {
    pods: Vec<PodInfo<'a>>,
    namespaces: BTreeMap<&'a str, BTreeMap<String, String>>,
}

impl<'a> Cluster<'a> {
    fn peers(&self, policy_ns: &str, list: Option<&Vec<NetworkPolicyPeer>>) -> Peers<'_> {
        let Some(list) = list.filter(|l| !l.is_empty()) else {
            return Peers {
                all: true,
                pods: Vec::new(),
                blocks: Vec::new(),
            };
        };
        let mut pods: Vec<&PodInfo> = Vec::new();
        let mut blocks = Vec::new();
        for peer in list {
            if let Some(b) = &peer.ip_block {
                blocks.extend(ip_block_ranges(
                    &b.cidr,
                    b.except.as_deref().unwrap_or_default(),
                ));
                continue;
            }
            if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
                continue;
            }
            let in_ns = |p: &PodInfo| match &peer.namespace_selector {
                None => p.namespace == policy_ns,
                Some(sel) => selector_matches(sel, self.namespaces.get(p.namespace)),
            };
            let selected = |p: &PodInfo| {
                peer.pod_selector
                    .as_ref()
                    .is_none_or(|sel| selector_matches(sel, p.labels))
            };
            for p in self.pods.iter().filter(|p| in_ns(p) && selected(p)) {
                if !pods.iter().any(|q| std::ptr::eq(*q, p)) {
                    pods.push(p);
                }
            }
        }
        Peers {
            all: false,
            pods,
            blocks,
        }
    }
}

/// Grants before they are made disjoint.
#[derive(Default)]
struct Grants {
    isolated: BTreeSet<Ipv4Addr>,
    any: BTreeMap<Ipv4Addr, Vec<AddrRange>>,
    ports: BTreeMap<(Ipv4Addr, Protocol), Vec<(AddrRange, PortRange)>>,
}

impl Grants {
    fn finish(self) -> Allowed {
        let mut out = Allowed {
            isolated: self.isolated,
            ..Default::default()
        };
        for (pod, ranges) in self.any {
            for r in merge_ranges(ranges) {
                out.any.insert((pod, r));
            }
        }
        for ((pod, proto), rects) in self.ports {
            for (addrs, ports) in disjoint(&rects) {
                out.ports.insert((pod, addrs, proto, ports));
            }
        }
        out
    }
}

/// Sorted, merged (overlapping or adjacent joined) address ranges.
fn merge_ranges(mut ranges: Vec<AddrRange>) -> Vec<AddrRange> {
    ranges.sort();
    let mut out: Vec<AddrRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(l) if u64::from(r.first) <= u64::from(l.last) + 1 => l.last = l.last.max(r.last),
            _ => out.push(r),
        }
    }
    out
}

fn merge_ports(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(l) if u32::from(r.first) <= u32::from(l.last) + 1 => l.last = l.last.max(r.last),
            _ => out.push(r),
        }
    }
    out
}

/// The union of (address range × port range) rectangles as disjoint ones:
/// cut the address axis at every rectangle edge, merge the port ranges over
/// each slice, then join neighbouring slices with the same ports.
fn disjoint(rects: &[(AddrRange, PortRange)]) -> Vec<(AddrRange, PortRange)> {
    let mut cuts: Vec<u64> = rects
        .iter()
        .flat_map(|(a, _)| [u64::from(a.first), u64::from(a.last) + 1])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut slices: Vec<(AddrRange, Vec<PortRange>)> = Vec::new();
    for w in cuts.windows(2) {
        let (first, last) = (w[0] as u32, (w[1] - 1) as u32);
        let ports: Vec<PortRange> = rects
            .iter()
            .filter(|(a, _)| a.first <= first && last <= a.last)
            .map(|(_, p)| *p)
            .collect();
        if ports.is_empty() {
            continue;
        }
        let ports = merge_ports(ports);
        match slices.last_mut() {
            Some((a, p)) if u64::from(a.last) + 1 == u64::from(first) && *p == ports => {
                a.last = last;
            }
            _ => slices.push((AddrRange { first, last }, ports)),
        }
    }
    slices
        .into_iter()
        .flat_map(|(a, ports)| ports.into_iter().map(move |p| (a, p)))
        .collect()
}

/// Ingress and Egress, defaulted as upstream does.
fn policy_types(spec: &NetworkPolicySpec) -> (bool, bool) {
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// Computes the rules for the pods on `node_name` from every policy, pod
/// and namespace in the cluster.
pub fn build<'a>(
    policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    pods: impl IntoIterator<Item = &'a Pod>,
    namespaces: impl IntoIterator<Item = &'a Namespace>,
    node_name: &str,
) -> Model {
    let namespaces = namespaces
        .into_iter()
        .filter_map(|ns| {
            let name = ns.metadata.name.as_deref()?;
            let mut labels = ns.metadata.labels.clone().unwrap_or_default();
            // Set by the apiserver on every namespace; older objects may
            // lack it, and users select namespaces by it.
            labels
                .entry("kubernetes.io/metadata.name".into())
                .or_insert_with(|| name.to_string());
            Some((name, labels))
        })
        .collect();
    let pods = pods
        .into_iter()
        .filter_map(|pod| {
            Some(PodInfo {
                namespace: pod.metadata.namespace.as_deref()?,
                labels: pod.metadata.labels.as_ref(),
                ip: pod_ip(pod)?,
                local: pod.spec.as_ref()?.node_name.as_deref() == Some(node_name),
                pod,
            })
        })
        .collect();
    let cluster = Cluster { pods, namespaces };
    let mut ingress = Grants::default();
    let mut egress = Grants::default();
    for policy in policies {
        let (Some(ns), Some(spec)) = (policy.metadata.namespace.as_deref(), &policy.spec) else {
            continue;
        };
        let targets: Vec<&PodInfo> = cluster
            .pods
            .iter()
            .filter(|p| p.local && p.namespace == ns)
            // An absent selector is the empty one: every pod.
            .filter(|p| {
                spec.pod_selector
                    .as_ref()
                    .is_none_or(|sel| selector_matches(sel, p.labels))
            })
            .collect();
        if targets.is_empty() {
            continue;
        }
        let (is_ingress, is_egress) = policy_types(spec);
        if is_ingress {
            for t in &targets {
                ingress.isolated.insert(t.ip);
            }
            for rule in spec.ingress.iter().flatten() {
                let peers = cluster.peers(ns, rule.from.as_ref()).ranges();
                let specs = port_specs(rule.ports.as_ref());
                for t in &targets {
                    let Some(specs) = &specs else {
                        ingress.any.entry(t.ip).or_default().extend(&peers);
                        continue;
                    };
                    for spec in specs {
                        // The destination is the local pod: its ports name it.
                        let (proto, ports) = match spec {
                            PortSpec::Numbered(proto, r) => (*proto, vec![*r]),
                            PortSpec::Named(proto, name) => (
                                *proto,
                                named_port(t.pod, name, *proto)
                                    .into_iter()
                                    .map(PortRange::one)
                                    .collect(),
                            ),
                        };
                        let rects = ingress.ports.entry((t.ip, proto)).or_default();
                        for r in ports {
                            rects.extend(peers.iter().map(|a| (*a, r)));
                        }
                    }
                }
            }
        }
        if is_egress {
            for t in &targets {
                egress.isolated.insert(t.ip);
            }
            for rule in spec.egress.iter().flatten() {
                let peers = cluster.peers(ns, rule.to.as_ref());
                let ranges = peers.ranges();
                let specs = port_specs(rule.ports.as_ref());
                for t in &targets {
                    let Some(specs) = &specs else {
                        egress.any.entry(t.ip).or_default().extend(&ranges);
                        continue;
                    };
                    for spec in specs {
                        match spec {
                            PortSpec::Numbered(proto, r) => {
                                let rects = egress.ports.entry((t.ip, *proto)).or_default();
                                rects.extend(ranges.iter().map(|a| (*a, *r)));
                            }
                            // The destination is the peer: each peer pod
                            // names its own port.
                            PortSpec::Named(proto, name) => {
                                let rects = egress.ports.entry((t.ip, *proto)).or_default();
                                for p in peers.pods(&cluster.pods) {
                                    for port in named_port(p.pod, name, *proto) {
                                        rects.push((AddrRange::host(p.ip), PortRange::one(port)));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Model {
        ingress: ingress.finish(),
        egress: egress.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Protocol::{Sctp, Tcp, Udp};
    use serde_json::json;

    const NODE: &str = "n1";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn pod(ns: &str, name: &str, labels: serde_json::Value, addr: &str, node: &str) -> Pod {
        pod_with(ns, name, labels, addr, node, json!({}))
    }

    /// A running pod; `extra` is merged into its spec.
    fn pod_with(
        ns: &str,
        name: &str,
        labels: serde_json::Value,
        addr: &str,
        node: &str,
        extra: serde_json::Value,
    ) -> Pod {
        let mut spec = json!({"nodeName": node, "containers": [{"name": "c", "image": "i"}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": spec,
            "status": {"phase": "Running", "podIP": addr, "podIPs": [{"ip": addr}]},
        }))
        .unwrap()
    }

    fn ns(name: &str, labels: serde_json::Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn policy(ns: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": "p"}, "spec": spec}))
            .unwrap()
    }

    /// The cluster of most tests: in namespace `a` (team=a) a local server
    /// (app=web, named ports http=80/TCP, dns=53/UDP), a local client
    /// (role=client) and a local other (role=other); in namespace `b`
    /// (team=b) a remote client (role=client) on node n2.
    struct World {
        pods: Vec<Pod>,
        namespaces: Vec<Namespace>,
    }

    const SERVER: &str = "10.244.120.10";
    const CLIENT: &str = "10.244.120.11";
    const OTHER: &str = "10.244.120.12";
    const REMOTE: &str = "10.244.121.20";
    const OUTSIDE: &str = "192.0.2.7";

    fn world() -> World {
        let ports = json!({"containers": [{"name": "c", "image": "i", "ports": [
            {"name": "http", "containerPort": 80},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]});
        World {
            pods: vec![
                pod_with("a", "server", json!({"app": "web"}), SERVER, NODE, ports),
                pod("a", "client", json!({"role": "client"}), CLIENT, NODE),
                pod("a", "other", json!({"role": "other"}), OTHER, NODE),
                pod("b", "remote", json!({"role": "client"}), REMOTE, "n2"),
            ],
            namespaces: vec![ns("a", json!({"team": "a"})), ns("b", json!({"team": "b"}))],
        }
    }

    fn model(w: &World, policies: &[NetworkPolicy]) -> Model {
        build(policies, &w.pods, &w.namespaces, NODE)
    }

    /// Who may open `proto`/`port` to the server, among the named sources.
    fn reach_server(m: &Model, proto: Protocol, port: u16) -> Vec<&'static str> {
        [
            ("client", CLIENT),
            ("other", OTHER),
            ("remote", REMOTE),
            ("outside", OUTSIDE),
        ]
        .into_iter()
        .filter(|(_, a)| m.ingress.allows(ip(SERVER), ip(a), proto, port))
        .map(|(n, _)| n)
        .collect()
    }

    const ALL: [&str; 4] = ["client", "other", "remote", "outside"];

    /// (protocol, port, allowed) to the server.
    type Checks = Vec<(Protocol, u16, bool)>;
    /// (destination, protocol, port, allowed) from the client.
    type EgressChecks = Vec<(&'static str, Protocol, u16, bool)>;

    #[test]
    fn no_policy_allows_everything() {
        let m = model(&world(), &[]);
        assert_eq!(m, Model::default());
        assert_eq!(reach_server(&m, Tcp, 80), ALL);
    }

    #[test]
    fn policy_types_default_and_isolation_per_direction() {
        let w = world();
        // (spec, ingress-isolated, egress-isolated) for the server.
        let cases = [
            (json!({"podSelector": {}}), true, false),
            // An absent podSelector is the empty one.
            (json!({}), true, false),
            (
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
                true,
                false,
            ),
            (
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
                false,
                true,
            ),
            (
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
                true,
                true,
            ),
            // Egress rules make it an egress policy too; an empty list does not.
            (json!({"podSelector": {}, "egress": [{}]}), true, true),
            (json!({"podSelector": {}, "egress": []}), true, false),
            // Other pods' policies do not isolate the server.
            (
                json!({"podSelector": {"matchLabels": {"role": "client"}}}),
                false,
                false,
            ),
        ];
        for (spec, ing, eg) in cases {
            let m = model(&w, &[policy("a", spec.clone())]);
            assert_eq!(m.ingress.isolated.contains(&ip(SERVER)), ing, "{spec}");
            assert_eq!(m.egress.isolated.contains(&ip(SERVER)), eg, "{spec}");
            // Remote pods are not ours to isolate.
            assert!(!m.ingress.isolated.contains(&ip(REMOTE)), "{spec}");
        }
        // A policy in namespace b does not select pods of namespace a.
        let m = model(&w, &[policy("b", json!({"podSelector": {}}))]);
        assert!(m.ingress.isolated.is_empty());
    }

    #[test]
    fn ingress_rules_peers() {
        let w = world();
        let web = json!({"matchLabels": {"app": "web"}});
        // (from, who reaches server:80/TCP)
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            // No rules: deny all.
            (json!(null), vec![]),
            // Absent or empty `from`: everyone.
            (json!([{}]), ALL.to_vec()),
            (json!([{"from": []}]), ALL.to_vec()),
            // podSelector alone: the policy's namespace only.
            (
                json!([{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]),
                vec!["client"],
            ),
            (
                json!([{"from": [{"podSelector": {}}]}]),
                vec!["client", "other"],
            ),
            // namespaceSelector alone: every pod there.
            (
                json!([{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]),
                vec!["remote"],
            ),
            (
                json!([{"from": [{"namespaceSelector": {}}]}]),
                vec!["client", "other", "remote"],
            ),
            (
                json!([{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "b"}}}]}]),
                vec!["remote"],
            ),
            // Both in one peer: the intersection.
            (
                json!([{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}]}]),
                vec!["client", "remote"],
            ),
            (
                json!([{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {"matchLabels": {"role": "other"}}}]}]),
                vec!["other"],
            ),
            // Two peers: the union.
            (
                json!([{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}, {"podSelector": {"matchLabels": {"role": "other"}}}]}]),
                vec!["other", "remote"],
            ),
            // ipBlock covers pods and outside addresses alike.
            (
                json!([{"from": [{"ipBlock": {"cidr": "10.244.120.0/24", "except": ["10.244.120.12/32"]}}]}]),
                vec!["client"],
            ),
            (
                json!([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}]}]),
                vec!["outside"],
            ),
            // IPv6 blocks match nothing here.
            (json!([{"from": [{"ipBlock": {"cidr": "::/0"}}]}]), vec![]),
            // Selectors matching nothing.
            (
                json!([{"from": [{"podSelector": {"matchLabels": {"role": "nobody"}}}]}]),
                vec![],
            ),
        ];
        for (ingress, want) in cases {
            let mut spec = json!({"podSelector": web, "policyTypes": ["Ingress"]});
            if !ingress.is_null() {
                spec["ingress"] = ingress.clone();
            }
            let m = model(&w, &[policy("a", spec)]);
            assert_eq!(reach_server(&m, Tcp, 80), want, "{ingress}");
            // The clients are not isolated: all may reach them.
            assert!(m.ingress.allows(ip(CLIENT), ip(OUTSIDE), Udp, 1));
        }
    }

    #[test]
    fn ingress_rules_ports() {
        let w = world();
        // (ports, [(proto, port, allowed)])
        let cases: Vec<(serde_json::Value, Checks)> = vec![
            (
                json!([]),
                vec![(Tcp, 1, true), (Udp, 53, true), (Sctp, 9, true)],
            ),
            (
                json!([{"port": 80}]),
                vec![(Tcp, 80, true), (Tcp, 81, false), (Udp, 80, false)],
            ),
            (
                json!([{"protocol": "UDP"}]),
                vec![(Udp, 0, true), (Udp, 65535, true), (Tcp, 80, false)],
            ),
            (
                json!([{"protocol": "SCTP", "port": 9}]),
                vec![(Sctp, 9, true), (Tcp, 9, false)],
            ),
            (
                json!([{"port": 8000, "endPort": 8010}]),
                vec![
                    (Tcp, 7999, false),
                    (Tcp, 8000, true),
                    (Tcp, 8010, true),
                    (Tcp, 8011, false),
                ],
            ),
            // Named ports resolve against the server's containers.
            (
                json!([{"port": "http"}]),
                vec![(Tcp, 80, true), (Tcp, 53, false)],
            ),
            (
                json!([{"port": "dns", "protocol": "UDP"}]),
                vec![(Udp, 53, true), (Udp, 80, false)],
            ),
            // The name exists, but for another protocol.
            (
                json!([{"port": "dns"}]),
                vec![(Tcp, 53, false), (Udp, 53, false)],
            ),
            (json!([{"port": "nope"}]), vec![(Tcp, 80, false)]),
        ];
        for (ports, checks) in cases {
            let spec = json!({"podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": ports}]});
            let m = model(&w, &[policy("a", spec)]);
            for (proto, port, allowed) in checks {
                let got = m.ingress.allows(ip(SERVER), ip(CLIENT), proto, port);
                assert_eq!(got, allowed, "{ports} {proto:?}/{port}");
                assert!(
                    !m.ingress.allows(ip(SERVER), ip(OTHER), proto, port),
                    "{ports}"
                );
            }
        }
    }

    #[test]
    fn policies_add_up() {
        let w = world();
        let deny = policy("a", json!({"podSelector": {}, "policyTypes": ["Ingress"]}));
        let clients = policy(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 80}]}]}),
        );
        let ns_b = policy(
            "a",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}], "ports": [{"port": 80}, {"port": 443}]}]}),
        );
        let m = model(&w, std::slice::from_ref(&deny));
        assert!(reach_server(&m, Tcp, 80).is_empty());
        assert!(
            !m.ingress.allows(ip(CLIENT), ip(OTHER), Tcp, 80),
            "deny-all isolates the clients too"
        );
        let m = model(&w, &[deny, clients, ns_b]);
        assert_eq!(reach_server(&m, Tcp, 80), ["client", "remote"]);
        assert_eq!(reach_server(&m, Tcp, 443), ["remote"]);
    }

    #[test]
    fn egress_rules() {
        let w = world();
        let client = json!({"matchLabels": {"role": "client"}});
        // (egress, [(dest, proto, port, allowed)]) for the local client.
        let cases: Vec<(serde_json::Value, EgressChecks)> = vec![
            (
                json!([]),
                vec![(SERVER, Tcp, 80, false), (OUTSIDE, Udp, 53, false)],
            ),
            (
                json!([{}]),
                vec![(SERVER, Tcp, 80, true), (OUTSIDE, Udp, 53, true)],
            ),
            (
                json!([{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 80}]}]),
                vec![
                    (SERVER, Tcp, 80, true),
                    (SERVER, Tcp, 81, false),
                    (OTHER, Tcp, 80, false),
                    (OUTSIDE, Tcp, 80, false),
                ],
            ),
            (
                json!([{"ports": [{"port": 53, "protocol": "UDP"}]}]),
                vec![
                    (OUTSIDE, Udp, 53, true),
                    (SERVER, Udp, 53, true),
                    (OUTSIDE, Tcp, 53, false),
                ],
            ),
            // Named ports resolve against each destination pod.
            (
                json!([{"ports": [{"port": "http"}]}]),
                vec![
                    (SERVER, Tcp, 80, true),
                    (OTHER, Tcp, 80, false),
                    (OUTSIDE, Tcp, 80, false),
                ],
            ),
            (
                json!([{"to": [{"ipBlock": {"cidr": "10.244.120.0/28"}}], "ports": [{"port": "http"}]}]),
                vec![(SERVER, Tcp, 80, true), (OTHER, Tcp, 80, false)],
            ),
            (
                json!([{"to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.0/30"]}}]}]),
                vec![
                    (OUTSIDE, Tcp, 1, true),
                    ("192.0.2.3", Tcp, 1, false),
                    (SERVER, Tcp, 80, false),
                ],
            ),
        ];
        for (egress, checks) in cases {
            let spec = json!({"podSelector": client, "policyTypes": ["Egress"], "egress": egress});
            let m = model(&w, &[policy("a", spec)]);
            assert!(m.ingress.isolated.is_empty(), "{egress}");
            assert!(m.egress.isolated.contains(&ip(CLIENT)), "{egress}");
            for (dest, proto, port, allowed) in checks {
                let got = m.egress.allows(ip(CLIENT), ip(dest), proto, port);
                assert_eq!(got, allowed, "{egress} -> {dest} {proto:?}/{port}");
                // The other pod is not egress-isolated.
                assert!(m.egress.allows(ip(OTHER), ip(dest), proto, port));
            }
        }
    }

    #[test]
    fn label_selector_operators() {
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        let cases = [
            (json!({}), true),
            (json!({"matchLabels": {"env": "prod"}}), true),
            (json!({"matchLabels": {"env": "dev"}}), false),
            (
                json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["dev", "prod"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "env", "operator": "Exists"}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "env", "operator": "Bogus"}]}),
                false,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(
                selector_matches(&sel(s.clone()), Some(&labels)),
                want,
                "{s}"
            );
        }
        assert!(selector_matches(&sel(json!({})), None));
        assert!(!selector_matches(
            &sel(json!({"matchLabels": {"a": "b"}})),
            None
        ));
    }

    #[test]
    fn host_network_finished_and_addressless_pods_are_skipped() {
        let mut w = world();
        w.pods.push(pod_with(
            "a",
            "hostnet",
            json!({"role": "client"}),
            "10.0.0.1",
            NODE,
            json!({"hostNetwork": true}),
        ));
        let mut done = pod(
            "a",
            "done",
            json!({"role": "client"}),
            "10.244.120.30",
            NODE,
        );
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        w.pods.push(done);
        let mut pending = pod("a", "pending", json!({"role": "client"}), "", NODE);
        pending.status.as_mut().unwrap().pod_ip = None;
        pending.status.as_mut().unwrap().pod_ips = None;
        w.pods.push(pending);
        let m = model(
            &w,
            &[policy(
                "a",
                json!({"podSelector": {},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}),
            )],
        );
        assert_eq!(
            m.ingress.isolated,
            [ip(SERVER), ip(CLIENT), ip(OTHER)].into(),
            "only running pod-network pods are targets"
        );
        let peers: BTreeSet<AddrRange> = m.ingress.any.iter().map(|(_, r)| *r).collect();
        assert_eq!(peers, [AddrRange::host(ip(CLIENT))].into());
    }

    #[test]
    fn ip_blocks_and_cidrs() {
        assert_eq!(
            AddrRange::parse_cidr("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0-10.255.255.255"
        );
        assert_eq!(AddrRange::parse_cidr("0.0.0.0/0"), Some(AddrRange::ALL));
        assert_eq!(
            AddrRange::parse_cidr("10.0.0.1/32").unwrap().to_string(),
            "10.0.0.1"
        );
        assert_eq!(AddrRange::parse_cidr("10.0.0.1/33"), None);
        assert_eq!(AddrRange::parse_cidr("fd00::/8"), None);
        assert_eq!(AddrRange::parse_cidr("10.0.0.1"), None);
        let r = ip_block_ranges(
            "10.0.0.0/24",
            &["10.0.0.0/26".into(), "10.0.0.128/25".into(), "bad".into()],
        );
        assert_eq!(
            r.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            ["10.0.0.64-10.0.0.127"]
        );
        let r = ip_block_ranges("0.0.0.0/0", &["0.0.0.0/0".into()]);
        assert!(r.is_empty());
        let r = ip_block_ranges(
            "0.0.0.0/0",
            &["255.255.255.255/32".into(), "0.0.0.0/32".into()],
        );
        assert_eq!(
            r.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            ["0.0.0.1-255.255.255.254"]
        );
    }

    /// Overlapping grants come out disjoint (the kernel refuses overlaps in
    /// interval sets) and still mean the same.
    #[test]
    fn grants_are_disjoint_and_equivalent() {
        let w = world();
        let spec = json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 80, "endPort": 90}]},
            {"from": [{"ipBlock": {"cidr": "10.244.0.0/16"}}], "ports": [{"port": 85, "endPort": 100}, {"port": 443}]},
            {"ports": [{"port": 80}]},
            {"from": [{"podSelector": {}}]},
            {"from": [{"ipBlock": {"cidr": "10.244.120.0/24"}}]},
        ]});
        let m = model(&w, &[policy("a", spec)]);
        let rows: Vec<_> = m.ingress.ports.iter().collect();
        for (i, a) in rows.iter().enumerate() {
            for b in &rows[i + 1..] {
                let overlap = a.0 == b.0
                    && a.2 == b.2
                    && a.1.first <= b.1.last
                    && b.1.first <= a.1.last
                    && a.3.first <= b.3.last
                    && b.3.first <= a.3.last;
                assert!(!overlap, "{a:?} overlaps {b:?}");
            }
        }
        let any: Vec<_> = m.ingress.any.iter().collect();
        assert_eq!(any.len(), 1, "{any:?}");
        let want = |peer: Ipv4Addr, port: u16| {
            let p = u32::from(peer);
            let in8 = p >> 24 == 10;
            let in16 = p >> 16 == (10 << 8 | 244);
            port == 80
                || (in8 && (80..=90).contains(&port))
                || (in16 && ((85..=100).contains(&port) || port == 443))
                || (p >> 8) == u32::from(ip("10.244.120.0")) >> 8
        };
        for peer in [
            "9.255.255.255",
            "10.0.0.0",
            "10.243.255.255",
            "10.244.0.0",
            "10.244.119.255",
            "10.244.120.200",
            "10.244.121.0",
            "10.244.255.255",
            "10.255.255.255",
            "11.0.0.0",
            OUTSIDE,
        ] {
            for port in [1, 79, 80, 84, 85, 90, 91, 100, 101, 443, 444] {
                assert_eq!(
                    m.ingress.allows(ip(SERVER), ip(peer), Tcp, port),
                    want(ip(peer), port),
                    "{peer}:{port}"
                );
            }
        }
    }
}
