//! The desired state of the service proxy, computed purely from Services,
//! EndpointSlices and Nodes: one [`PortRules`] per service port that needs
//! rules, with the endpoints each traffic policy may use. No kernel here.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Node, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice names its Service with.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The nftables / iptables spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// One backend address of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// Everything the rules of one service port need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRules {
    pub namespace: String,
    pub name: String,
    /// The service port's name, or its number when unnamed (then it is the
    /// only port); unique within the Service.
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and `status.loadBalancer.ingress[].ip`.
    pub external_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// Endpoints traffic may go to under the Cluster policy.
    pub cluster_endpoints: Vec<Endpoint>,
    /// Endpoints on this node (for the Local policies).
    pub local_endpoints: Vec<Endpoint>,
}

impl PortRules {
    /// `<namespace>/<name>/<protocol>/<port name or number>`: unique per
    /// service port, and only characters nftables identifiers allow.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.as_str(),
            self.port_name
        )
    }

    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
}

/// What the proxy programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// Sorted by [`PortRules::id`].
    pub ports: Vec<PortRules>,
    /// Every node's pod CIDR (IPv4): traffic from these is "in-cluster".
    pub pod_cidrs: BTreeSet<String>,
}

/// What the model needs to know about this node.
#[derive(Debug, Clone, Default)]
pub struct NodeContext {
    pub node_name: String,
    /// Cluster DNS addresses the agent serves itself: no rules for them.
    pub cluster_dns: Vec<IpAddr>,
    /// This node's own pod CIDR, in case its Node object lacks it.
    pub pod_cidr: Option<String>,
}

/// Computes the model. Objects that do not make sense (bad addresses,
/// names nftables cannot carry) are skipped, never fatal.
pub fn build<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    nodes: impl IntoIterator<Item = &'a Node>,
    ctx: &NodeContext,
) -> Model {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE_NAME))
        else {
            continue;
        };
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        by_service.entry((ns, svc.clone())).or_default().push(s);
    }
    let dns: HashSet<IpAddr> = ctx.cluster_dns.iter().copied().collect();
    let mut ports = Vec::new();
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        if !is_ident(&ns) || !is_ident(&name) {
            continue;
        }
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        // Headless (`None`) and unallocated Services get no rules.
        let Some(cluster_ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        if dns.contains(&IpAddr::V4(cluster_ip)) {
            continue;
        }
        let mut external_ips: BTreeSet<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect();
        if spec.type_.as_deref() == Some("LoadBalancer") {
            for ing in svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
            {
                if let Some(ip) = ing.ip.as_deref().and_then(|s| s.parse().ok()) {
                    external_ips.insert(ip);
                }
            }
        }
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let externally_reachable =
            matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
                || !external_ips.is_empty();
        let external_local =
            externally_reachable && spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let slices = by_service
            .get(&(ns.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for sp in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(sp.protocol.as_deref()) else {
                continue;
            };
            let Ok(port) = u16::try_from(sp.port) else {
                continue;
            };
            let port_name = match sp.name.as_deref() {
                Some(n) if !n.is_empty() => n.to_string(),
                _ => port.to_string(),
            };
            if !is_ident(&port_name) {
                continue;
            }
            let node_port = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
                .then(|| sp.node_port.and_then(|p| u16::try_from(p).ok()))
                .flatten()
                .filter(|p| *p != 0);
            let (cluster_endpoints, local_endpoints) =
                endpoints_for(slices, sp, protocol, &ctx.node_name);
            ports.push(PortRules {
                namespace: ns.clone(),
                name: name.clone(),
                port_name,
                protocol,
                cluster_ip,
                port,
                node_port,
                external_ips: external_ips.iter().copied().collect(),
                affinity_timeout,
                external_local,
                internal_local,
                cluster_endpoints,
                local_endpoints,
            });
        }
    }
    ports.sort_by_key(PortRules::id);
    ports.dedup_by_key(|p| p.id());

    let mut pod_cidrs = BTreeSet::new();
    for n in nodes {
        let spec = n.spec.as_ref();
        let cidrs = spec
            .and_then(|s| s.pod_cidrs.clone())
            .filter(|c| !c.is_empty())
            .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]));
        for c in cidrs.into_iter().flatten() {
            if let Some(c) = ipv4_cidr(&c) {
                pod_cidrs.insert(c);
            }
        }
    }
    if let Some(c) = ctx.pod_cidr.as_deref().and_then(ipv4_cidr) {
        pod_cidrs.insert(c);
    }
    Model { ports, pod_cidrs }
}

/// Upstream's endpoint choice: ready endpoints; when a category has none,
/// the ones still serving while terminating. Returns (cluster, local).
fn endpoints_for(
    slices: &[&EndpointSlice],
    sp: &ServicePort,
    protocol: Protocol,
    node_name: &str,
) -> (Vec<Endpoint>, Vec<Endpoint>) {
    let want_name = sp.name.as_deref().unwrap_or("");
    // (endpoint, ready, serving-terminating, local)
    let mut all: BTreeMap<Endpoint, (bool, bool, bool)> = BTreeMap::new();
    for slice in slices {
        for p in slice.ports.iter().flatten() {
            if p.name.as_deref().unwrap_or("") != want_name
                || Protocol::parse(p.protocol.as_deref()) != Some(protocol)
            {
                continue;
            }
            let Some(port) = p
                .port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
            else {
                continue;
            };
            for ep in &slice.endpoints {
                // Upstream uses the first address only.
                let Some(ip) = ep.addresses.first().and_then(|a| a.parse().ok()) else {
                    continue;
                };
                let c = ep.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                let local = ep.node_name.as_deref() == Some(node_name);
                let e = all.entry(Endpoint { ip, port }).or_default();
                e.0 |= ready;
                e.1 |= serving && terminating;
                e.2 |= local;
            }
        }
    }
    let pick = |only_local: bool| {
        let usable = || all.iter().filter(move |(_, v)| !only_local || v.2);
        let ready: Vec<Endpoint> = usable().filter(|(_, v)| v.0).map(|(e, _)| *e).collect();
        if !ready.is_empty() {
            return ready;
        }
        usable().filter(|(_, v)| v.1).map(|(e, _)| *e).collect()
    };
    (pick(false), pick(true))
}

fn ipv4_cidr(c: &str) -> Option<String> {
    let (addr, len) = c.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some(format!("{}/{len}", Ipv4Addr::from(u32::from(addr) & mask)))
}

/// Names go into nftables identifiers and iptables comments: allow only
/// what Kubernetes names consist of anyway.
fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    pub fn slice(
        ns: &str,
        svc: &str,
        name: &str,
        ports: serde_json::Value,
        eps: serde_json::Value,
    ) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": {LABEL_SERVICE_NAME: svc}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": eps,
        }))
        .unwrap()
    }

    pub fn node(name: &str, cidr: &str) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}),
        )
        .unwrap()
    }

    pub fn ctx() -> NodeContext {
        NodeContext {
            node_name: "n1".into(),
            cluster_dns: vec![IpAddr::from([10, 43, 0, 10])],
            pod_cidr: Some("10.42.0.0/24".into()),
        }
    }

    fn ep(ip: [u8; 4], port: u16) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::from(ip),
            port,
        }
    }

    fn web() -> Service {
        service(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.5", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ]},
        }))
    }

    #[test]
    fn ready_endpoints_per_port_name_and_protocol() {
        let s = slice(
            "default",
            "web",
            "web-abc",
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            json!([
                {"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["10.42.1.6"], "conditions": {"ready": true}, "nodeName": "n2"},
                {"addresses": ["10.42.1.7"], "conditions": {"ready": false, "serving": false}, "nodeName": "n2"},
                // No conditions: upstream treats unknown readiness as ready.
                {"addresses": ["10.42.1.8"]},
            ]),
        );
        let m = build(
            [&web()],
            [&s],
            [&node("n1", "10.42.0.0/24"), &node("n2", "10.42.1.0/24")],
            &ctx(),
        );
        assert_eq!(m.ports.len(), 2);
        let dns = &m.ports[1];
        assert_eq!(dns.id(), "default/web/udp/dns");
        assert_eq!(
            dns.cluster_endpoints,
            vec![
                ep([10, 42, 0, 5], 5353),
                ep([10, 42, 1, 6], 5353),
                ep([10, 42, 1, 8], 5353)
            ]
        );
        let http = &m.ports[0];
        assert_eq!(http.id(), "default/web/tcp/http");
        assert_eq!(http.cluster_ip, Ipv4Addr::new(10, 43, 0, 5));
        assert_eq!(http.port, 80);
        assert_eq!(http.cluster_endpoints.len(), 3);
        assert_eq!(http.local_endpoints, vec![ep([10, 42, 0, 5], 8080)]);
        assert_eq!(
            m.pod_cidrs,
            ["10.42.0.0/24", "10.42.1.0/24"].map(String::from).into()
        );
    }

    #[test]
    fn serving_terminating_only_when_nothing_is_ready() {
        let eps = json!([
            {"addresses": ["10.42.0.5"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "n1"},
            {"addresses": ["10.42.0.6"], "conditions": {"ready": false, "serving": false, "terminating": true}, "nodeName": "n1"},
            {"addresses": ["10.42.1.6"], "conditions": {"ready": true}, "nodeName": "n2"},
        ]);
        let s = slice(
            "default",
            "web",
            "a",
            json!([{"name": "http", "port": 8080}]),
            eps,
        );
        let svc = service(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.5", "ports": [{"name": "http", "port": 80}]}}));
        let m = build([&svc], [&s], [], &ctx());
        let p = &m.ports[0];
        assert_eq!(p.cluster_endpoints, vec![ep([10, 42, 1, 6], 8080)]);
        // No ready local endpoint: the serving, terminating one stands in.
        assert_eq!(p.local_endpoints, vec![ep([10, 42, 0, 5], 8080)]);
    }

    #[test]
    fn headless_external_name_and_cluster_dns_get_no_rules() {
        let headless = service(json!({"metadata": {"name": "h", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        let ext = service(json!({"metadata": {"name": "e", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com", "ports": [{"port": 80}]}}));
        let dns = service(
            json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.43.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}),
        );
        let m = build([&headless, &ext, &dns], [], [], &ctx());
        assert!(m.ports.is_empty(), "{m:?}");
    }

    #[test]
    fn nodeport_external_ips_lb_affinity_and_policies() {
        let svc = service(json!({
            "metadata": {"name": "lb", "namespace": "prod"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.7", "externalIPs": ["192.0.2.50"],
                "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "ports": [{"port": 443, "nodePort": 30443, "protocol": "SCTP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}, {"hostname": "x.example"}]}},
        }));
        let m = build([&svc], [], [], &ctx());
        let p = &m.ports[0];
        assert_eq!(p.id(), "prod/lb/sctp/443");
        assert_eq!(p.node_port, Some(30443));
        assert_eq!(
            p.external_ips,
            vec![Ipv4Addr::new(192, 0, 2, 50), Ipv4Addr::new(198, 51, 100, 9)]
        );
        assert_eq!(p.affinity_timeout, Some(60));
        assert!(p.external_local && p.internal_local);
        assert!(p.cluster_endpoints.is_empty());

        // ClusterIP services have no node port even if one is set; the
        // default affinity timeout is upstream's three hours.
        let svc = service(json!({"metadata": {"name": "c", "namespace": "d"},
            "spec": {"clusterIP": "10.43.0.8", "sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local",
                "ports": [{"port": 80, "nodePort": 30080}]}}));
        let p = &build([&svc], [], [], &ctx()).ports[0];
        assert_eq!(p.node_port, None);
        assert_eq!(p.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        assert!(!p.external_local);
    }

    #[test]
    fn bad_input_is_skipped() {
        let svc = service(
            json!({"metadata": {"name": "we ird", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.9", "ports": [{"port": 80}]}}),
        );
        let svc2 = service(json!({"metadata": {"name": "ok", "namespace": "default"},
            "spec": {"clusterIP": "not-an-ip", "ports": [{"port": 80}]}}));
        let s = slice(
            "default",
            "ok",
            "x",
            json!([{"port": 70000}]),
            json!([{"addresses": ["nope"]}]),
        );
        let m = build([&svc, &svc2], [&s], [&node("n", "garbage")], &ctx());
        assert!(m.ports.is_empty());
        assert_eq!(m.pod_cidrs, ["10.42.0.0/24".to_string()].into());
    }
}
