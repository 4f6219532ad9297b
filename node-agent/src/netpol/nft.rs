//! The nftables ruleset for a [`Model`]: one `inet` table with a fixed
//! skeleton of three chains and six sets; every policy change only changes
//! set elements. Forwarded packets are checked (bridged ones too, through
//! `br_netfilter`): replies of allowed connections pass on conntrack state,
//! a new connection from an egress-isolated local pod must match one of its
//! egress elements, one to an ingress-isolated local pod one of its ingress
//! elements. Traffic the node itself sends or receives never crosses the
//! forward hook, so probes and node-local services are not filtered.

use std::fmt::Write as _;

use super::model::{Allowed, Model};

const SET_IN_ISOLATED: &str = "ingress-isolated";
const SET_IN_ANY: &str = "ingress-any";
const SET_IN_PORTS: &str = "ingress-ports";
const SET_OUT_ISOLATED: &str = "egress-isolated";
const SET_OUT_ANY: &str = "egress-any";
const SET_OUT_PORTS: &str = "egress-ports";

const POD_PEER: &str = "ipv4_addr . ipv4_addr";
const POD_PEER_PORT: &str = "ipv4_addr . ipv4_addr . inet_proto . inet_service";

/// Elements per `add element` statement: keeps single lines reasonable.
const CHUNK: usize = 512;

/// The set elements of the table (the skeleton is in [`script`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Set name → elements in nft syntax.
    pub sets: Vec<(&'static str, Vec<String>)>,
}

fn direction(allowed: &Allowed, names: [&'static str; 3]) -> [(&'static str, Vec<String>); 3] {
    let [isolated, any, ports] = names;
    [
        (
            isolated,
            allowed.isolated.iter().map(|ip| ip.to_string()).collect(),
        ),
        (
            any,
            allowed
                .any
                .iter()
                .map(|(pod, peer)| format!("{pod} . {peer}"))
                .collect(),
        ),
        (
            ports,
            allowed
                .ports
                .iter()
                .map(|(pod, peer, proto, port)| {
                    format!("{pod} . {peer} . {} . {port}", proto.as_str())
                })
                .collect(),
        ),
    ]
}

/// Computes the set contents for a model.
pub fn render(model: &Model) -> Ruleset {
    let mut sets = Vec::new();
    sets.extend(direction(
        &model.ingress,
        [SET_IN_ISOLATED, SET_IN_ANY, SET_IN_PORTS],
    ));
    sets.extend(direction(
        &model.egress,
        [SET_OUT_ISOLATED, SET_OUT_ANY, SET_OUT_PORTS],
    ));
    Ruleset { sets }
}

/// One `nft -f` transaction that replaces table `table` (family `inet`)
/// with the skeleton and `rs`'s elements, atomically: packets see either
/// the old table or the new one.
pub fn script(table: &str, rs: &Ruleset) -> String {
    let t = format!("inet {table}");
    let mut s = String::new();
    // `add` first makes the `delete` valid when the table does not exist.
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(s, "delete table {t}");
    let _ = writeln!(s, "add table {t}");
    for (name, ty) in [
        (SET_IN_ISOLATED, "ipv4_addr"),
        (SET_OUT_ISOLATED, "ipv4_addr"),
    ] {
        let _ = writeln!(s, "add set {t} {name} {{ type {ty}; }}");
    }
    for (name, ty) in [
        (SET_IN_ANY, POD_PEER),
        (SET_IN_PORTS, POD_PEER_PORT),
        (SET_OUT_ANY, POD_PEER),
        (SET_OUT_PORTS, POD_PEER_PORT),
    ] {
        let _ = writeln!(s, "add set {t} {name} {{ type {ty}; flags interval; }}");
    }
    // Before the service proxy's filter chains (priority 0): a denied
    // packet never reaches them.
    let _ = writeln!(
        s,
        "add chain {t} forward {{ type filter hook forward priority filter - 5; policy accept; }}"
    );
    let _ = writeln!(s, "add chain {t} ingress");
    let _ = writeln!(s, "add chain {t} egress");
    for rule in [
        "forward ct state established,related accept".to_string(),
        format!("forward ip saddr @{SET_OUT_ISOLATED} jump egress"),
        format!("forward ip daddr @{SET_IN_ISOLATED} jump ingress"),
        // An egress-allowed packet returns to `forward` for the ingress
        // check of its destination.
        format!("egress ip saddr . ip daddr @{SET_OUT_ANY} return"),
        format!("egress ip saddr . ip daddr . meta l4proto . th dport @{SET_OUT_PORTS} return"),
        "egress counter drop".into(),
        format!("ingress ip daddr . ip saddr @{SET_IN_ANY} accept"),
        format!("ingress ip daddr . ip saddr . meta l4proto . th dport @{SET_IN_PORTS} accept"),
        "ingress counter drop".into(),
    ] {
        let _ = writeln!(s, "add rule {t} {rule}");
    }
    for (name, elements) in &rs.sets {
        for chunk in elements.chunks(CHUNK) {
            let _ = writeln!(s, "add element {t} {name} {{ {} }}", chunk.join(", "));
        }
    }
    s
}

/// Removes table `table` if it exists (policies turned off).
pub fn remove_script(table: &str) -> String {
    format!("add table inet {table}\ndelete table inet {table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netpol::model::{AddrRange, PortRange, Protocol};

    fn model() -> Model {
        let server = "10.244.120.10".parse().unwrap();
        let client = "10.244.120.11".parse().unwrap();
        let mut m = Model::default();
        m.ingress.isolated.insert(server);
        m.ingress.ports.insert((
            server,
            AddrRange::host(client),
            Protocol::Tcp,
            PortRange {
                first: 80,
                last: 90,
            },
        ));
        m.ingress
            .any
            .insert((server, AddrRange::parse_cidr("10.0.0.0/8").unwrap()));
        m.egress.isolated.insert(client);
        m.egress
            .ports
            .insert((client, AddrRange::ALL, Protocol::Udp, PortRange::one(53)));
        m
    }

    #[test]
    fn renders_sets_of_pod_peer_port_tuples() {
        let rs = render(&model());
        let get = |name: &str| rs.sets.iter().find(|(n, _)| *n == name).unwrap().1.clone();
        assert_eq!(get(SET_IN_ISOLATED), ["10.244.120.10"]);
        assert_eq!(
            get(SET_IN_PORTS),
            ["10.244.120.10 . 10.244.120.11 . tcp . 80-90"]
        );
        assert_eq!(get(SET_IN_ANY), ["10.244.120.10 . 10.0.0.0-10.255.255.255"]);
        assert_eq!(get(SET_OUT_ISOLATED), ["10.244.120.11"]);
        assert_eq!(
            get(SET_OUT_PORTS),
            ["10.244.120.11 . 0.0.0.0-255.255.255.255 . udp . 53"]
        );
        assert!(get(SET_OUT_ANY).is_empty());
        let text = script("t", &rs);
        assert!(
            text.starts_with("add table inet t\ndelete table inet t\nadd table inet t\n"),
            "{text}"
        );
        assert!(text.contains("add chain inet t forward { type filter hook forward priority filter - 5; policy accept; }"));
        assert!(text.contains("add rule inet t forward ct state established,related accept"));
        assert!(text.contains(
            "add element inet t ingress-ports { 10.244.120.10 . 10.244.120.11 . tcp . 80-90 }"
        ));
        // The egress check returns to `forward`; the ingress check decides.
        let egress = text
            .find("add rule inet t forward ip saddr @egress-isolated jump egress")
            .unwrap();
        let ingress = text
            .find("add rule inet t forward ip daddr @ingress-isolated jump ingress")
            .unwrap();
        assert!(egress < ingress);
        assert!(text.contains("add rule inet t egress ip saddr . ip daddr . meta l4proto . th dport @egress-ports return"));
        assert!(text.contains("add rule inet t ingress counter drop"));
        // No statement for empty sets.
        assert!(!text.contains("add element inet t egress-any"));
    }

    #[test]
    fn large_sets_are_split_into_statements() {
        let mut m = Model::default();
        for i in 0..1100u32 {
            m.ingress
                .isolated
                .insert(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        }
        let text = script("t", &render(&m));
        assert_eq!(
            text.matches("add element inet t ingress-isolated").count(),
            3
        );
    }

    /// Records scripts; fails while `fail` is set.
    #[derive(Default)]
    struct FakeKernel {
        scripts: Vec<String>,
        fail: bool,
    }

    impl crate::proxy::apply::Kernel for FakeKernel {
        fn apply(&mut self, script: &str) -> Result<(), crate::proxy::apply::ApplyError> {
            self.scripts.push(script.to_string());
            if self.fail {
                return Err(crate::proxy::apply::ApplyError::Rejected {
                    program: "nft",
                    stderr: "boom".into(),
                });
            }
            Ok(())
        }
    }

    #[test]
    fn syncer_applies_only_changes_and_retries_after_failure() {
        let mut s = crate::netpol::Syncer::new(FakeKernel::default(), "t");
        assert!(s.sync(render(&model())).unwrap());
        assert!(
            !s.sync(render(&model())).unwrap(),
            "unchanged: no transaction"
        );
        s.kernel.fail = true;
        assert!(s.sync(render(&Model::default())).is_err());
        s.kernel.fail = false;
        // The failed state is not taken as applied.
        assert!(s.sync(render(&Model::default())).unwrap());
        assert!(!s.sync(render(&Model::default())).unwrap());
        s.remove().unwrap();
        assert_eq!(s.kernel.scripts.len(), 4);
        assert_eq!(
            s.kernel.scripts[3],
            "add table inet t\ndelete table inet t\n"
        );
    }
}
