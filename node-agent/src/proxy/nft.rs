//! The nftables ruleset for a [`Model`]: one `ip` table holding verdict maps
//! keyed by (address, protocol, port) that dispatch to one chain per
//! service port, which DNATs through a `numgen` map (per-endpoint chains
//! only where session affinity needs them: few chains keep `nft` fast). [`Ruleset`] is that content in a form
//! two versions of can be diffed, so a change costs a transaction touching
//! only what changed ([`diff`]); [`full`] replaces the whole table at once
//! (first sync, or when an incremental one fails).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::model::{Endpoint, Model, PortRules};

/// The packet mark bit that asks postrouting to masquerade.
pub const MASQ_MARK: u32 = 0x4000;

const SET_POD_CIDRS: &str = "pod-cidrs";
/// (endpoint, endpoint) pairs: a DNATed packet whose source is its own
/// destination is a pod reaching itself through its Service (hairpin).
const SET_HAIRPIN: &str = "hairpin";
const MAP_SERVICE_IPS: &str = "service-ips";
const MAP_NODEPORTS: &str = "service-nodeports";
const MAP_NO_EP_SERVICES: &str = "no-endpoint-services";
const MAP_NO_EP_NODEPORTS: &str = "no-endpoint-nodeports";
const CHAIN_MARK_MASQ: &str = "mark-for-masquerade";
const CHAIN_REJECT: &str = "reject-chain";

const ADDR_PROTO_PORT: &str = "ipv4_addr . inet_proto . inet_service";
const PROTO_PORT: &str = "inet_proto . inet_service";

/// The verdict maps of the table and their key types.
const MAPS: [(&str, &str); 4] = [
    (MAP_SERVICE_IPS, ADDR_PROTO_PORT),
    (MAP_NODEPORTS, PROTO_PORT),
    (MAP_NO_EP_SERVICES, ADDR_PROTO_PORT),
    (MAP_NO_EP_NODEPORTS, PROTO_PORT),
];

/// The per-service content of the table (the fixed skeleton is in [`full`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Regular chains: name → rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Verdict map name → key → verdict.
    pub maps: BTreeMap<&'static str, BTreeMap<String, String>>,
    pub pod_cidrs: BTreeSet<String>,
    /// `ip . ip` of every endpoint.
    pub hairpin: BTreeSet<String>,
    /// Session-affinity sets: name → timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
}

pub fn svc_chain(p: &PortRules) -> String {
    format!("svc-{}", p.id())
}
pub fn local_chain(p: &PortRules) -> String {
    format!("local-{}", p.id())
}
pub fn ext_chain(p: &PortRules) -> String {
    format!("ext-{}", p.id())
}
pub fn ep_chain(p: &PortRules, e: &Endpoint) -> String {
    format!("ep-{}__{}/{}", p.id(), e.ip, e.port)
}
pub fn affinity_set(p: &PortRules, e: &Endpoint) -> String {
    format!("aff-{}__{}/{}", p.id(), e.ip, e.port)
}

/// Computes the ruleset of a model.
pub fn render(model: &Model) -> Ruleset {
    let mut rs = Ruleset {
        pod_cidrs: model.pod_cidrs.clone(),
        ..Default::default()
    };
    for (name, _) in MAPS {
        rs.maps.insert(name, BTreeMap::new());
    }
    for p in &model.ports {
        render_port(&mut rs, p);
    }
    rs
}

fn insert(rs: &mut Ruleset, map: &'static str, key: String, verdict: String) {
    rs.maps.entry(map).or_default().insert(key, verdict);
}

fn render_port(rs: &mut Ruleset, p: &PortRules) {
    let proto = p.protocol.as_str();
    let svc_key = |ip: &std::net::Ipv4Addr| format!("{ip} . {proto} . {}", p.port);
    if p.cluster_endpoints.is_empty() {
        // Nothing can serve it: refuse, as upstream does, instead of
        // letting the connection time out.
        let reject = format!("goto {CHAIN_REJECT}");
        insert(
            rs,
            MAP_NO_EP_SERVICES,
            svc_key(&p.cluster_ip),
            reject.clone(),
        );
        for ip in &p.external_ips {
            insert(rs, MAP_NO_EP_SERVICES, svc_key(ip), reject.clone());
        }
        if let Some(np) = p.node_port {
            insert(rs, MAP_NO_EP_NODEPORTS, format!("{proto} . {np}"), reject);
        }
        return;
    }
    let masq_off_cluster = format!(
        "ip daddr {} ip saddr != @{SET_POD_CIDRS} jump {CHAIN_MARK_MASQ}",
        p.cluster_ip
    );
    let svc = svc_chain(p);
    let mut rules = vec![masq_off_cluster.clone()];
    rules.extend(dispatch(p, &p.cluster_endpoints));
    rs.chains.insert(svc.clone(), rules);

    let needs_local = p.internal_local || (p.external_local && p.has_external());
    let local = local_chain(p);
    if needs_local {
        let mut rules = Vec::new();
        if p.internal_local {
            rules.push(masq_off_cluster);
        }
        if p.local_endpoints.is_empty() {
            rules.push("drop".to_string());
        } else {
            rules.extend(dispatch(p, &p.local_endpoints));
        }
        rs.chains.insert(local.clone(), rules);
    }
    let cluster_ip_target = if p.internal_local { &local } else { &svc };
    insert(
        rs,
        MAP_SERVICE_IPS,
        svc_key(&p.cluster_ip),
        format!("goto {cluster_ip_target}"),
    );

    if p.has_external() {
        let ext = ext_chain(p);
        let rules = if p.external_local {
            // Pods and the node itself still reach every endpoint (upstream's
            // short-circuit); outside clients only local ones, unmasqueraded
            // so the pod sees their address.
            vec![
                format!("ip saddr @{SET_POD_CIDRS} goto {svc}"),
                format!("fib saddr type local jump {CHAIN_MARK_MASQ}"),
                format!("fib saddr type local goto {svc}"),
                format!("goto {local}"),
            ]
        } else {
            vec![format!("jump {CHAIN_MARK_MASQ}"), format!("goto {svc}")]
        };
        rs.chains.insert(ext.clone(), rules);
        for ip in &p.external_ips {
            insert(rs, MAP_SERVICE_IPS, svc_key(ip), format!("goto {ext}"));
        }
        if let Some(np) = p.node_port {
            insert(
                rs,
                MAP_NODEPORTS,
                format!("{proto} . {np}"),
                format!("goto {ext}"),
            );
        }
    }

    let endpoints: BTreeSet<&Endpoint> = p
        .cluster_endpoints
        .iter()
        .chain(&p.local_endpoints)
        .collect();
    for e in endpoints {
        rs.hairpin.insert(format!("{} . {}", e.ip, e.ip));
        if let Some(timeout) = p.affinity_timeout {
            let set = affinity_set(p, e);
            let rules = vec![
                format!("update @{set} {{ ip saddr }}"),
                format!("meta l4proto {proto} dnat to {}:{}", e.ip, e.port),
            ];
            rs.affinity_sets.insert(set, timeout);
            rs.chains.insert(ep_chain(p, e), rules);
        }
    }
}

/// A uniformly random endpoint; with session affinity, the one the client
/// had first (then each endpoint has a chain that records the client).
fn dispatch(p: &PortRules, eps: &[Endpoint]) -> Vec<String> {
    let proto = p.protocol.as_str();
    if p.affinity_timeout.is_none() {
        if let [e] = eps {
            return vec![format!("meta l4proto {proto} dnat to {}:{}", e.ip, e.port)];
        }
        let arms: Vec<String> = eps
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{i} : {} . {}", e.ip, e.port))
            .collect();
        return vec![format!(
            "meta l4proto {proto} dnat ip to numgen random mod {} map {{ {} }}",
            eps.len(),
            arms.join(", ")
        )];
    }
    let mut rules = Vec::new();
    for e in eps {
        rules.push(format!(
            "ip saddr @{} goto {}",
            affinity_set(p, e),
            ep_chain(p, e)
        ));
    }
    let arms: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{i} : goto {}", ep_chain(p, e)))
        .collect();
    rules.push(format!(
        "numgen random mod {} vmap {{ {} }}",
        eps.len(),
        arms.join(", ")
    ));
    rules
}

fn affinity_decl(table: &str, name: &str, timeout: u32) -> String {
    format!(
        "add set ip {table} {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}\n"
    )
}

/// A transaction that replaces the table with exactly `rs` (connections
/// already tracked keep their NAT: conntrack is left alone).
pub fn full(table: &str, rs: &Ruleset) -> String {
    let t = table;
    let mut s = String::with_capacity(256 + rs.chains.len() * 200);
    // `add` first so `delete` cannot fail on a fresh host.
    let _ = writeln!(s, "add table ip {t}");
    let _ = writeln!(s, "delete table ip {t}");
    let _ = writeln!(s, "add table ip {t} {{ comment \"k3rs service proxy\"; }}");
    let _ = writeln!(
        s,
        "add set ip {t} {SET_POD_CIDRS} {{ type ipv4_addr; flags interval; }}"
    );
    let _ = writeln!(
        s,
        "add set ip {t} {SET_HAIRPIN} {{ type ipv4_addr . ipv4_addr; }}"
    );
    for (name, key) in MAPS {
        let _ = writeln!(s, "add map ip {t} {name} {{ type {key} : verdict; }}");
    }
    for c in [
        CHAIN_MARK_MASQ,
        "masquerading",
        "services",
        "endpoints-check",
        CHAIN_REJECT,
    ] {
        let _ = writeln!(s, "add chain ip {t} {c}");
    }
    for (c, kind, hook, prio) in [
        ("nat-prerouting", "nat", "prerouting", "dstnat"),
        ("nat-output", "nat", "output", "-100"),
        ("nat-postrouting", "nat", "postrouting", "srcnat"),
        ("filter-input", "filter", "input", "-110"),
        ("filter-forward", "filter", "forward", "-110"),
        ("filter-output", "filter", "output", "-110"),
    ] {
        let _ = writeln!(
            s,
            "add chain ip {t} {c} {{ type {kind} hook {hook} priority {prio}; policy accept; }}"
        );
    }
    let local_dst = "fib daddr type local ip daddr != 127.0.0.0/8";
    for (c, r) in [
        (
            CHAIN_MARK_MASQ,
            format!("meta mark set meta mark | {MASQ_MARK:#x}"),
        ),
        (
            "masquerading",
            format!("ct status dnat ip saddr . ip daddr @{SET_HAIRPIN} jump {CHAIN_MARK_MASQ}"),
        ),
        (
            "masquerading",
            format!("meta mark & {MASQ_MARK:#x} == 0 return"),
        ),
        (
            "masquerading",
            format!("meta mark set meta mark ^ {MASQ_MARK:#x}"),
        ),
        ("masquerading", "masquerade fully-random".into()),
        (
            "services",
            format!("ip daddr . meta l4proto . th dport vmap @{MAP_SERVICE_IPS}"),
        ),
        (
            "services",
            format!("{local_dst} meta l4proto . th dport vmap @{MAP_NODEPORTS}"),
        ),
        (
            "endpoints-check",
            format!("ip daddr . meta l4proto . th dport vmap @{MAP_NO_EP_SERVICES}"),
        ),
        (
            "endpoints-check",
            format!("{local_dst} meta l4proto . th dport vmap @{MAP_NO_EP_NODEPORTS}"),
        ),
        (
            CHAIN_REJECT,
            "meta l4proto tcp reject with tcp reset".into(),
        ),
        (CHAIN_REJECT, "reject".into()),
        ("nat-prerouting", "jump services".into()),
        ("nat-output", "jump services".into()),
        ("nat-postrouting", "jump masquerading".into()),
        ("filter-input", "ct state new jump endpoints-check".into()),
        ("filter-forward", "ct state new jump endpoints-check".into()),
        ("filter-output", "ct state new jump endpoints-check".into()),
    ] {
        let _ = writeln!(s, "add rule ip {t} {c} {r}");
    }
    for (name, timeout) in &rs.affinity_sets {
        s.push_str(&affinity_decl(t, name, *timeout));
    }
    for name in rs.chains.keys() {
        let _ = writeln!(s, "add chain ip {t} {name}");
    }
    for (name, rules) in &rs.chains {
        for r in rules {
            let _ = writeln!(s, "add rule ip {t} {name} {r}");
        }
    }
    for (name, elems) in &rs.maps {
        add_elements(
            &mut s,
            t,
            name,
            elems.iter().map(|(k, v)| format!("{k} : {v}")),
        );
    }
    add_elements(&mut s, t, SET_POD_CIDRS, rs.pod_cidrs.iter().cloned());
    add_elements(&mut s, t, SET_HAIRPIN, rs.hairpin.iter().cloned());
    s
}

fn add_elements(s: &mut String, t: &str, name: &str, elems: impl Iterator<Item = String>) {
    elements(s, "add", t, name, elems);
}

fn elements(s: &mut String, verb: &str, t: &str, name: &str, elems: impl Iterator<Item = String>) {
    let elems: Vec<String> = elems.collect();
    // Bounded line length; nft parses a long list in one go just fine.
    for chunk in elems.chunks(1000) {
        let _ = writeln!(s, "{verb} element ip {t} {name} {{ {} }}", chunk.join(", "));
    }
}

/// A transaction that turns a table holding `old` into one holding `new`,
/// touching only what changed; empty when nothing did. `None` when the
/// change cannot be made in place (an affinity timeout changed).
pub fn diff(table: &str, old: &Ruleset, new: &Ruleset) -> Option<String> {
    let t = table;
    let mut s = String::new();
    for (name, timeout) in &new.affinity_sets {
        match old.affinity_sets.get(name) {
            None => s.push_str(&affinity_decl(t, name, *timeout)),
            Some(o) if o != timeout => return None,
            Some(_) => {}
        }
    }
    for name in new.chains.keys() {
        if !old.chains.contains_key(name) {
            let _ = writeln!(s, "add chain ip {t} {name}");
        }
    }
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(o) if o == rules => continue,
            Some(_) => {
                let _ = writeln!(s, "flush chain ip {t} {name}");
            }
            None => {}
        }
        for r in rules {
            let _ = writeln!(s, "add rule ip {t} {name} {r}");
        }
    }
    let empty = BTreeMap::new();
    for (name, _) in MAPS {
        let o = old.maps.get(name).unwrap_or(&empty);
        let n = new.maps.get(name).unwrap_or(&empty);
        let gone = o
            .iter()
            .filter(|(k, v)| n.get(*k) != Some(v))
            .map(|(k, _)| k.clone());
        elements(&mut s, "delete", t, name, gone);
        let added = n
            .iter()
            .filter(|(k, v)| o.get(*k) != Some(v))
            .map(|(k, v)| format!("{k} : {v}"));
        elements(&mut s, "add", t, name, added);
    }
    let gone = old.pod_cidrs.difference(&new.pod_cidrs).cloned();
    elements(&mut s, "delete", t, SET_POD_CIDRS, gone);
    let added = new.pod_cidrs.difference(&old.pod_cidrs).cloned();
    elements(&mut s, "add", t, SET_POD_CIDRS, added);
    let gone = old.hairpin.difference(&new.hairpin).cloned();
    elements(&mut s, "delete", t, SET_HAIRPIN, gone);
    let added = new.hairpin.difference(&old.hairpin).cloned();
    elements(&mut s, "add", t, SET_HAIRPIN, added);
    // Stale chains last: by now nothing references them.
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            let _ = writeln!(s, "flush chain ip {t} {name}");
            let _ = writeln!(s, "delete chain ip {t} {name}");
        }
    }
    for name in old.affinity_sets.keys() {
        if !new.affinity_sets.contains_key(name) {
            let _ = writeln!(s, "delete set ip {t} {name}");
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::tests::{ctx, node, service, slice};
    use crate::proxy::model::{self, Model};
    use serde_json::json;

    fn model_of(svc: serde_json::Value, eps: serde_json::Value) -> Model {
        let svc = service(svc);
        let s = slice(
            "default",
            "web",
            "web-1",
            json!([{"name": "http", "port": 8080}]),
            eps,
        );
        model::build([&svc], [&s], [&node("n1", "10.42.0.0/24")], &ctx())
    }

    fn web(extra: serde_json::Value) -> serde_json::Value {
        let mut spec = json!({"clusterIP": "10.43.0.5", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn two_eps() -> serde_json::Value {
        json!([
            {"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "nodeName": "n1"},
            {"addresses": ["10.42.1.6"], "conditions": {"ready": true}, "nodeName": "n2"},
        ])
    }

    #[test]
    fn cluster_ip_dispatches_randomly_with_hairpin_masquerade() {
        let rs = render(&model_of(web(json!({})), two_eps()));
        assert_eq!(
            rs.maps[MAP_SERVICE_IPS]["10.43.0.5 . tcp . 80"],
            "goto svc-default/web/tcp/http"
        );
        assert!(
            rs.maps[MAP_NODEPORTS].is_empty(),
            "ClusterIP type has no node port"
        );
        assert_eq!(
            rs.chains["svc-default/web/tcp/http"],
            vec![
                "ip daddr 10.43.0.5 ip saddr != @pod-cidrs jump mark-for-masquerade".to_string(),
                "meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.42.0.5 . 8080, 1 : 10.42.1.6 . 8080 }".into(),
            ]
        );
        // No per-endpoint chains without affinity.
        assert_eq!(rs.chains.len(), 1, "{:?}", rs.chains.keys());
        assert_eq!(
            rs.hairpin,
            ["10.42.0.5 . 10.42.0.5", "10.42.1.6 . 10.42.1.6"]
                .map(String::from)
                .into()
        );
        assert_eq!(rs.pod_cidrs, ["10.42.0.0/24".to_string()].into());
        let text = full("k3rs-proxy", &rs);
        assert!(
            text.starts_with("add table ip k3rs-proxy\ndelete table ip k3rs-proxy\n"),
            "{text}"
        );
        assert!(text.contains("add chain ip k3rs-proxy nat-prerouting { type nat hook prerouting priority dstnat; policy accept; }"));
        assert!(text.contains("add chain ip k3rs-proxy nat-output { type nat hook output priority -100; policy accept; }"));
        assert!(text.contains("add rule ip k3rs-proxy masquerading masquerade fully-random"));
        assert!(text.contains("add element ip k3rs-proxy service-ips { 10.43.0.5 . tcp . 80 : goto svc-default/web/tcp/http }"));
        assert!(text.contains("add element ip k3rs-proxy pod-cidrs { 10.42.0.0/24 }"));
        assert!(text.contains("add rule ip k3rs-proxy masquerading ct status dnat ip saddr . ip daddr @hairpin jump mark-for-masquerade"));
        // Chains exist before map elements jump to them.
        let decl = text
            .find("add chain ip k3rs-proxy svc-default/web/tcp/http")
            .unwrap();
        let used = text.find("add element ip k3rs-proxy service-ips").unwrap();
        assert!(decl < used);
    }

    #[test]
    fn nodeport_cluster_policy_masquerades() {
        let rs = render(&model_of(web(json!({"type": "NodePort"})), two_eps()));
        assert_eq!(
            rs.maps[MAP_NODEPORTS]["tcp . 30080"],
            "goto ext-default/web/tcp/http"
        );
        assert_eq!(
            rs.chains["ext-default/web/tcp/http"],
            vec![
                "jump mark-for-masquerade".to_string(),
                "goto svc-default/web/tcp/http".into()
            ]
        );
        assert!(!rs.chains.contains_key("local-default/web/tcp/http"));
    }

    #[test]
    fn nodeport_local_policy_keeps_source_and_uses_local_endpoints() {
        let rs = render(&model_of(
            web(
                json!({"type": "NodePort", "externalTrafficPolicy": "Local", "externalIPs": ["192.0.2.50"]}),
            ),
            two_eps(),
        ));
        assert_eq!(
            rs.chains["ext-default/web/tcp/http"],
            vec![
                "ip saddr @pod-cidrs goto svc-default/web/tcp/http".to_string(),
                "fib saddr type local jump mark-for-masquerade".into(),
                "fib saddr type local goto svc-default/web/tcp/http".into(),
                "goto local-default/web/tcp/http".into(),
            ]
        );
        assert_eq!(
            rs.chains["local-default/web/tcp/http"],
            vec!["meta l4proto tcp dnat to 10.42.0.5:8080".to_string()]
        );
        assert_eq!(
            rs.maps[MAP_SERVICE_IPS]["192.0.2.50 . tcp . 80"],
            "goto ext-default/web/tcp/http"
        );
        // The cluster IP itself still goes to every endpoint.
        assert_eq!(
            rs.maps[MAP_SERVICE_IPS]["10.43.0.5 . tcp . 80"],
            "goto svc-default/web/tcp/http"
        );

        // No local endpoint: outside traffic is dropped, not sent elsewhere.
        let remote_only =
            json!([{"addresses": ["10.42.1.6"], "conditions": {"ready": true}, "nodeName": "n2"}]);
        let rs = render(&model_of(
            web(json!({"type": "NodePort", "externalTrafficPolicy": "Local"})),
            remote_only,
        ));
        assert_eq!(
            rs.chains["local-default/web/tcp/http"],
            vec!["drop".to_string()]
        );
    }

    #[test]
    fn internal_local_policy_sends_cluster_ip_to_local_chain() {
        let rs = render(&model_of(
            web(json!({"internalTrafficPolicy": "Local"})),
            two_eps(),
        ));
        assert_eq!(
            rs.maps[MAP_SERVICE_IPS]["10.43.0.5 . tcp . 80"],
            "goto local-default/web/tcp/http"
        );
        assert_eq!(rs.chains["local-default/web/tcp/http"].len(), 2);
    }

    #[test]
    fn session_affinity_uses_timeout_sets() {
        let rs = render(&model_of(
            web(
                json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}),
            ),
            two_eps(),
        ));
        let set = "aff-default/web/tcp/http__10.42.0.5/8080";
        assert_eq!(rs.affinity_sets[set], 30);
        let svc = &rs.chains["svc-default/web/tcp/http"];
        assert_eq!(
            svc[1],
            format!("ip saddr @{set} goto ep-default/web/tcp/http__10.42.0.5/8080")
        );
        assert!(svc[3].starts_with("numgen random mod 2"));
        assert_eq!(
            rs.chains["ep-default/web/tcp/http__10.42.0.5/8080"],
            vec![
                format!("update @{set} {{ ip saddr }}"),
                "meta l4proto tcp dnat to 10.42.0.5:8080".into()
            ]
        );
        let text = full("t", &rs);
        assert!(text.contains(&format!(
            "add set ip t {set} {{ type ipv4_addr; flags dynamic,timeout; timeout 30s; }}"
        )));
    }

    #[test]
    fn no_endpoints_reject() {
        let rs = render(&model_of(
            web(json!({"type": "NodePort", "externalIPs": ["192.0.2.50"]})),
            json!([]),
        ));
        assert_eq!(
            rs.maps[MAP_NO_EP_SERVICES]["10.43.0.5 . tcp . 80"],
            "goto reject-chain"
        );
        assert_eq!(
            rs.maps[MAP_NO_EP_SERVICES]["192.0.2.50 . tcp . 80"],
            "goto reject-chain"
        );
        assert_eq!(
            rs.maps[MAP_NO_EP_NODEPORTS]["tcp . 30080"],
            "goto reject-chain"
        );
        assert!(rs.maps[MAP_SERVICE_IPS].is_empty());
        assert!(rs.chains.is_empty());
        let text = full("t", &rs);
        assert!(text.contains("add rule ip t reject-chain meta l4proto tcp reject with tcp reset"));
        assert!(text.contains("add rule ip t filter-forward ct state new jump endpoints-check"));
        assert!(text.contains("add rule ip t filter-output ct state new jump endpoints-check"));
    }

    #[test]
    fn udp_and_sctp_ports() {
        let svc = service(json!({"metadata": {"name": "m", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.6", "ports": [
                {"name": "a", "port": 53, "protocol": "UDP"}, {"name": "b", "port": 99, "protocol": "SCTP"}]}}));
        let s = slice(
            "default",
            "m",
            "m-1",
            json!([{"name": "a", "port": 5353, "protocol": "UDP"}, {"name": "b", "port": 9999, "protocol": "SCTP"}]),
            json!([{"addresses": ["10.42.0.9"]}]),
        );
        let rs = render(&model::build([&svc], [&s], [], &ctx()));
        assert_eq!(
            rs.maps[MAP_SERVICE_IPS]["10.43.0.6 . udp . 53"],
            "goto svc-default/m/udp/a"
        );
        assert_eq!(
            rs.maps[MAP_SERVICE_IPS]["10.43.0.6 . sctp . 99"],
            "goto svc-default/m/sctp/b"
        );
        assert_eq!(
            rs.chains["svc-default/m/udp/a"][1],
            "meta l4proto udp dnat to 10.42.0.9:5353"
        );
        assert_eq!(
            rs.chains["svc-default/m/sctp/b"][1],
            "meta l4proto sctp dnat to 10.42.0.9:9999"
        );
    }

    #[test]
    fn diff_touches_only_what_changed() {
        let a = render(&model_of(
            web(json!({"sessionAffinity": "ClientIP"})),
            two_eps(),
        ));
        assert_eq!(diff("t", &a, &a).as_deref(), Some(""));
        let one = json!([{"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "nodeName": "n1"},
                         {"addresses": ["10.42.1.7"], "conditions": {"ready": true}, "nodeName": "n2"}]);
        let b = render(&model_of(web(json!({"sessionAffinity": "ClientIP"})), one));
        let tx = diff("t", &a, &b).unwrap();
        let lines: Vec<&str> = tx.lines().collect();
        assert_eq!(
            lines,
            vec![
                "add set ip t aff-default/web/tcp/http__10.42.1.7/8080 { type ipv4_addr; flags dynamic,timeout; timeout 10800s; }",
                "add chain ip t ep-default/web/tcp/http__10.42.1.7/8080",
                "add rule ip t ep-default/web/tcp/http__10.42.1.7/8080 update @aff-default/web/tcp/http__10.42.1.7/8080 { ip saddr }",
                "add rule ip t ep-default/web/tcp/http__10.42.1.7/8080 meta l4proto tcp dnat to 10.42.1.7:8080",
                "flush chain ip t svc-default/web/tcp/http",
                "add rule ip t svc-default/web/tcp/http ip daddr 10.43.0.5 ip saddr != @pod-cidrs jump mark-for-masquerade",
                "add rule ip t svc-default/web/tcp/http ip saddr @aff-default/web/tcp/http__10.42.0.5/8080 goto ep-default/web/tcp/http__10.42.0.5/8080",
                "add rule ip t svc-default/web/tcp/http ip saddr @aff-default/web/tcp/http__10.42.1.7/8080 goto ep-default/web/tcp/http__10.42.1.7/8080",
                "add rule ip t svc-default/web/tcp/http numgen random mod 2 vmap { 0 : goto ep-default/web/tcp/http__10.42.0.5/8080, 1 : goto ep-default/web/tcp/http__10.42.1.7/8080 }",
                "delete element ip t hairpin { 10.42.1.6 . 10.42.1.6 }",
                "add element ip t hairpin { 10.42.1.7 . 10.42.1.7 }",
                "flush chain ip t ep-default/web/tcp/http__10.42.1.6/8080",
                "delete chain ip t ep-default/web/tcp/http__10.42.1.6/8080",
                "delete set ip t aff-default/web/tcp/http__10.42.1.6/8080",
            ]
        );
        // All endpoints gone: the map entry moves to the reject map.
        let c = render(&model_of(web(json!({})), json!([])));
        let a = render(&model_of(web(json!({})), two_eps()));
        let tx = diff("t", &a, &c).unwrap();
        assert!(
            tx.contains("delete element ip t service-ips { 10.43.0.5 . tcp . 80 }"),
            "{tx}"
        );
        assert!(
            tx.contains(
                "add element ip t no-endpoint-services { 10.43.0.5 . tcp . 80 : goto reject-chain }"
            ),
            "{tx}"
        );
        // A changed affinity timeout cannot be changed in place.
        let x = render(&model_of(
            web(
                json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}),
            ),
            two_eps(),
        ));
        let y = render(&model_of(
            web(
                json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 6}}}),
            ),
            two_eps(),
        ));
        assert_eq!(diff("t", &x, &y), None);
    }
}
