//! The same rules as [`super::nft`] for hosts without `nft`, as an
//! `iptables-restore --noflush` script: our chains are declared (which
//! flushes them) and refilled in one atomic commit per table; chains that
//! are no longer wanted are flushed and deleted in the same commit.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::apply::{ApplyError, Kernel, Synced};
use super::model::{Endpoint, Model, PortRules};
use super::nft::MASQ_MARK;

/// Marks a packet the filter table drops (nat chains cannot drop).
pub const DROP_MARK: u32 = 0x8000;

/// One table's chains: name → rules (`-A` lines without the chain).
pub type Chains = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptRules {
    pub nat: Chains,
    pub filter: Chains,
}

/// FNV-1a: chain names must fit iptables' 28 characters, so per-service
/// chains are named by a stable hash of what they are for.
fn hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016X}")
}

struct Names<'a> {
    prefix: &'a str,
}

impl Names<'_> {
    fn fixed(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }
    fn svc(&self, p: &PortRules) -> String {
        format!("{}-SVC-{}", self.prefix, hash(&p.id()))
    }
    fn local(&self, p: &PortRules) -> String {
        format!("{}-SVL-{}", self.prefix, hash(&p.id()))
    }
    fn ext(&self, p: &PortRules) -> String {
        format!("{}-EXT-{}", self.prefix, hash(&p.id()))
    }
    fn sep(&self, p: &PortRules, e: &Endpoint) -> String {
        format!(
            "{}-SEP-{}",
            self.prefix,
            hash(&format!("{}__{}/{}", p.id(), e.ip, e.port))
        )
    }
}

/// Renders the model; `prefix` (≤ 5 characters) starts every chain name.
pub fn render(model: &Model, prefix: &str) -> IptRules {
    let n = Names { prefix };
    let services = n.fixed("SERVICES");
    let nodeports = n.fixed("NODEPORTS");
    let mark_masq = n.fixed("MARK-MASQ");
    let mark_drop = n.fixed("MARK-DROP");
    let off_cluster = n.fixed("OFF-CLUSTER");
    let postrouting = n.fixed("POSTROUTING");
    let reject = n.fixed("NO-ENDPOINTS");
    let firewall = n.fixed("FILTER");
    let mut nat = Chains::new();
    let mut filter = Chains::new();
    nat.insert(
        mark_masq.clone(),
        vec![format!("-j MARK --or-mark {MASQ_MARK:#x}")],
    );
    nat.insert(
        mark_drop.clone(),
        vec![format!("-j MARK --or-mark {DROP_MARK:#x}")],
    );
    nat.insert(
        postrouting,
        vec![
            format!("-m mark ! --mark {MASQ_MARK:#x}/{MASQ_MARK:#x} -j RETURN"),
            format!("-j MARK --xor-mark {MASQ_MARK:#x}"),
            "-j MASQUERADE --random-fully".into(),
        ],
    );
    let mut off = Vec::new();
    for c in &model.pod_cidrs {
        off.push(format!("-s {c} -j RETURN"));
    }
    off.push(format!("-j {mark_masq}"));
    nat.insert(off_cluster.clone(), off);
    let mut svc_rules = Vec::new();
    let mut np_rules = Vec::new();
    let mut reject_rules = Vec::new();
    for p in &model.ports {
        let proto = p.protocol.as_str();
        let dst = |ip: &std::net::Ipv4Addr| {
            format!("-d {ip}/32 -p {proto} -m {proto} --dport {}", p.port)
        };
        let how = if proto == "tcp" {
            "REJECT --reject-with tcp-reset"
        } else {
            "REJECT --reject-with icmp-port-unreachable"
        };
        if p.cluster_endpoints.is_empty() {
            reject_rules.push(format!("{} -j {how}", dst(&p.cluster_ip)));
            for ip in &p.external_ips {
                reject_rules.push(format!("{} -j {how}", dst(ip)));
            }
            if let Some(np) = p.node_port {
                reject_rules.push(format!(
                    "-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -p {proto} -m {proto} --dport {np} -j {how}"
                ));
            }
            continue;
        }
        let svc = n.svc(p);
        let local = n.local(p);
        let mut rules = vec![format!("{} -j {off_cluster}", dst(&p.cluster_ip))];
        rules.extend(dispatch(&n, p, &p.cluster_endpoints));
        nat.insert(svc.clone(), rules);
        if p.internal_local || (p.external_local && p.has_external()) {
            let mut rules = Vec::new();
            if p.internal_local {
                rules.push(format!("{} -j {off_cluster}", dst(&p.cluster_ip)));
            }
            if p.local_endpoints.is_empty() {
                rules.push(format!("-j {mark_drop}"));
            } else {
                rules.extend(dispatch(&n, p, &p.local_endpoints));
            }
            nat.insert(local.clone(), rules);
        }
        let target = if p.internal_local { &local } else { &svc };
        svc_rules.push(format!("{} -j {target}", dst(&p.cluster_ip)));
        if p.has_external() {
            let ext = n.ext(p);
            let rules = if p.external_local {
                let mut r: Vec<String> = model
                    .pod_cidrs
                    .iter()
                    .map(|c| format!("-s {c} -j {svc}"))
                    .collect();
                r.push(format!("-m addrtype --src-type LOCAL -j {mark_masq}"));
                r.push(format!("-m addrtype --src-type LOCAL -j {svc}"));
                r.push(format!("-j {local}"));
                r
            } else {
                vec![format!("-j {mark_masq}"), format!("-j {svc}")]
            };
            nat.insert(ext.clone(), rules);
            for ip in &p.external_ips {
                svc_rules.push(format!("{} -j {ext}", dst(ip)));
            }
            if let Some(np) = p.node_port {
                np_rules.push(format!("-p {proto} -m {proto} --dport {np} -j {ext}"));
            }
        }
        let eps: BTreeSet<&Endpoint> = p
            .cluster_endpoints
            .iter()
            .chain(&p.local_endpoints)
            .collect();
        for e in eps {
            let sep = n.sep(p, e);
            let mut rules = vec![format!("-s {}/32 -j {mark_masq}", e.ip)];
            if p.affinity_timeout.is_some() {
                rules.push(format!(
                    "-m recent --set --name {sep} --mask 255.255.255.255 --rsource"
                ));
            }
            rules.push(format!(
                "-p {proto} -m {proto} -j DNAT --to-destination {}:{}",
                e.ip, e.port
            ));
            nat.insert(sep, rules);
        }
    }
    svc_rules.push(format!(
        "-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j {nodeports}"
    ));
    nat.insert(services, svc_rules);
    nat.insert(nodeports, np_rules);
    filter.insert(reject.clone(), reject_rules);
    filter.insert(
        firewall,
        vec![
            format!("-m conntrack --ctstate NEW -j {reject}"),
            format!("-m mark --mark {DROP_MARK:#x}/{DROP_MARK:#x} -j DROP"),
        ],
    );
    IptRules { nat, filter }
}

/// Affinity first, then `statistic` probabilities that make the choice
/// uniform (1/n, 1/(n-1), …, the last one unconditional).
fn dispatch(n: &Names<'_>, p: &PortRules, eps: &[Endpoint]) -> Vec<String> {
    let mut rules = Vec::new();
    if let Some(t) = p.affinity_timeout {
        for e in eps {
            let sep = n.sep(p, e);
            rules.push(format!(
                "-m recent --name {sep} --rcheck --seconds {t} --reap --mask 255.255.255.255 --rsource -j {sep}"
            ));
        }
    }
    let count = eps.len();
    for (i, e) in eps.iter().enumerate() {
        let sep = n.sep(p, e);
        let left = count - i;
        if left > 1 {
            rules.push(format!(
                "-m statistic --mode random --probability {:.10} -j {sep}",
                1.0 / left as f64
            ));
        } else {
            rules.push(format!("-j {sep}"));
        }
    }
    rules
}

/// The `iptables-restore --noflush` script that makes our chains in both
/// tables equal `new`, deleting those only `old` has.
pub fn script(old: &IptRules, new: &IptRules) -> String {
    let mut s = String::new();
    for (table, o, n) in [
        ("nat", &old.nat, &new.nat),
        ("filter", &old.filter, &new.filter),
    ] {
        let _ = writeln!(s, "*{table}");
        for name in n.keys() {
            let _ = writeln!(s, ":{name} - [0:0]");
        }
        let stale: Vec<&String> = o.keys().filter(|k| !n.contains_key(*k)).collect();
        for name in &stale {
            let _ = writeln!(s, ":{name} - [0:0]");
        }
        for (name, rules) in n {
            for r in rules {
                let _ = writeln!(s, "-A {name} {r}");
            }
        }
        for name in stale {
            let _ = writeln!(s, "-X {name}");
        }
        let _ = writeln!(s, "COMMIT");
    }
    s
}

/// The hooks from the built-in chains into ours: (table, chain, rule).
pub fn hooks(prefix: &str) -> Vec<(&'static str, &'static str, String)> {
    let services = format!("-j {prefix}-SERVICES");
    let filter = format!("-j {prefix}-FILTER");
    vec![
        ("nat", "PREROUTING", services.clone()),
        ("nat", "OUTPUT", services),
        ("nat", "POSTROUTING", format!("-j {prefix}-POSTROUTING")),
        ("filter", "INPUT", filter.clone()),
        ("filter", "FORWARD", filter.clone()),
        ("filter", "OUTPUT", filter),
    ]
}

/// Keeps the iptables chains equal to the model. Every sync rewrites all of
/// our chains (iptables has no cheaper atomic update); the hooks from the
/// built-in chains are added once, before the first sync that needs them.
pub struct IptablesSyncer<K> {
    kernel: K,
    prefix: String,
    applied: Option<IptRules>,
    hook: bool,
}

impl<K: Kernel> IptablesSyncer<K> {
    /// `prefix`: at most 5 characters (chain names are limited to 28).
    pub fn new(kernel: K, prefix: &str) -> Self {
        let prefix: String = prefix
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(5)
            .collect::<String>()
            .to_uppercase();
        Self {
            kernel,
            prefix,
            applied: None,
            hook: true,
        }
    }

    /// Loads the chains without hooking them into the built-in ones (the
    /// benchmark measures the load alone).
    pub fn unhooked(mut self) -> Self {
        self.hook = false;
        self
    }

    pub fn sync(&mut self, model: &Model) -> Result<Synced, ApplyError> {
        let new = render(model, &self.prefix);
        let first = self.applied.is_none();
        if self.applied.as_ref() == Some(&new) {
            return Ok(Synced::Unchanged);
        }
        let old = self.applied.take().unwrap_or_default();
        self.kernel.apply(&script(&old, &new))?;
        if first && self.hook {
            for (table, chain, rule) in hooks(&self.prefix) {
                self.kernel.ensure_rule(table, chain, &rule)?;
            }
        }
        self.applied = Some(new);
        Ok(if first {
            Synced::Full
        } else {
            Synced::Incremental
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model;
    use crate::proxy::model::tests::{ctx, node, service, slice};
    use serde_json::json;

    fn rules(spec: serde_json::Value, eps: serde_json::Value) -> IptRules {
        let svc =
            service(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}));
        let s = slice("default", "web", "w", json!([{"port": 8080}]), eps);
        render(
            &model::build([&svc], [&s], [&node("n1", "10.42.0.0/24")], &ctx()),
            "K3RS",
        )
    }

    #[test]
    fn equivalent_rules_with_statistic_and_reject() {
        let eps = json!([{"addresses": ["10.42.0.5"]}, {"addresses": ["10.42.0.6"]}, {"addresses": ["10.42.0.7"]}]);
        let r = rules(
            json!({"type": "NodePort", "clusterIP": "10.43.0.5", "ports": [{"port": 80, "nodePort": 30080}]}),
            eps,
        );
        let svc = r.nat.keys().find(|k| k.starts_with("K3RS-SVC-")).unwrap();
        assert!(svc.len() <= 28, "{svc}");
        let chain = &r.nat[svc];
        assert_eq!(
            chain[0],
            "-d 10.43.0.5/32 -p tcp -m tcp --dport 80 -j K3RS-OFF-CLUSTER"
        );
        assert!(chain[1].contains("--probability 0.3333333333"), "{chain:?}");
        assert!(chain[2].contains("--probability 0.5000000000"), "{chain:?}");
        assert!(chain[3].starts_with("-j K3RS-SEP-"), "{chain:?}");
        assert!(r.nat["K3RS-NODEPORTS"][0].starts_with("-p tcp -m tcp --dport 30080 -j K3RS-EXT-"));
        assert_eq!(
            r.nat["K3RS-OFF-CLUSTER"],
            vec!["-s 10.42.0.0/24 -j RETURN", "-j K3RS-MARK-MASQ"]
        );

        let none = rules(
            json!({"clusterIP": "10.43.0.5", "ports": [{"port": 80}]}),
            json!([]),
        );
        assert_eq!(
            none.filter["K3RS-NO-ENDPOINTS"],
            vec!["-d 10.43.0.5/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset"]
        );
        let text = script(&r, &none);
        assert!(text.starts_with("*nat\n"));
        assert!(
            text.contains(&format!("-X {svc}\n")),
            "stale chain deleted: {text}"
        );
        assert_eq!(text.matches("COMMIT").count(), 2);
    }
}
