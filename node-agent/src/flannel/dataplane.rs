//! Which kernel entries the pod network needs for the current set of
//! Nodes, and the difference to what is installed. Pure: the kernel is
//! behind [`Dataplane`], so the reconcile logic is tested without root.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::annotations::Peer;
use super::{Backend, Ipv4Cidr, VXLAN_DEV};

/// A route to another node's pods. Ours are marked with [`super::ROUTE_PROTO`]
/// so we list, and remove, exactly the ones we made.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: Ipv4Cidr,
    pub via: Ipv4Addr,
    pub dev: String,
    /// VXLAN routes point at the peer's VTEP address, which is not on any
    /// local subnet.
    pub onlink: bool,
}

/// A permanent ARP entry on the VXLAN device: the peer VTEP's address → MAC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neigh {
    pub ip: Ipv4Addr,
    pub mac: String,
}

/// A forwarding entry on the VXLAN device: the peer VTEP's MAC → its host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fdb {
    pub mac: String,
    pub dst: Ipv4Addr,
}

/// Everything of ours in the kernel (or everything that should be).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    pub routes: BTreeSet<Route>,
    pub neighs: BTreeSet<Neigh>,
    pub fdb: BTreeSet<Fdb>,
}

/// The entries for `peers` (every Node, this one included and skipped).
/// `lan_dev` is the link holding this node's public IP (host-gw routes
/// go out there).
pub fn desired(
    backend: Backend,
    local: &str,
    local_ip: Ipv4Addr,
    lan_dev: &str,
    peers: &[Peer],
) -> Entries {
    let mut e = Entries::default();
    // A peer with our own address runs on this very host (several agents
    // in one network namespace): its pods are on a local bridge already,
    // and a route would only shadow that bridge's.
    for p in peers
        .iter()
        .filter(|p| p.name != local && p.public_ip != local_ip)
    {
        match backend {
            Backend::None => {}
            Backend::HostGw => {
                e.routes.insert(Route {
                    dst: p.pod_cidr,
                    via: p.public_ip,
                    dev: lan_dev.to_string(),
                    onlink: false,
                });
            }
            Backend::Vxlan => {
                // A peer on another backend (or without its VTEP yet) cannot
                // decapsulate our packets: no route rather than a black hole
                // that looks like one.
                let Some(mac) = p.vtep_mac.clone() else {
                    continue;
                };
                if p.backend
                    .as_deref()
                    .is_some_and(|b| b != Backend::Vxlan.as_str())
                {
                    continue;
                }
                // Like flannel, the peer's VTEP answers on the first
                // (network) address of its pod range.
                let gw = p.pod_cidr.network();
                e.routes.insert(Route {
                    dst: p.pod_cidr,
                    via: gw,
                    dev: VXLAN_DEV.to_string(),
                    onlink: true,
                });
                e.neighs.insert(Neigh {
                    ip: gw,
                    mac: mac.clone(),
                });
                e.fdb.insert(Fdb {
                    mac,
                    dst: p.public_ip,
                });
            }
        }
    }
    e
}

/// What to remove and what to add to get from `actual` to `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub del: Entries,
    pub add: Entries,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.del == Entries::default() && self.add == Entries::default()
    }
}

pub fn plan(desired: &Entries, actual: &Entries) -> Plan {
    fn diff<T: Ord + Clone>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> BTreeSet<T> {
        a.difference(b).cloned().collect()
    }
    Plan {
        del: Entries {
            routes: diff(&actual.routes, &desired.routes),
            neighs: diff(&actual.neighs, &desired.neighs),
            fdb: diff(&actual.fdb, &desired.fdb),
        },
        add: Entries {
            routes: diff(&desired.routes, &actual.routes),
            neighs: diff(&desired.neighs, &actual.neighs),
            fdb: diff(&desired.fdb, &actual.fdb),
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("running {program}: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("{command}: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("reading the output of {command}: {message}")]
    Output { command: String, message: String },
    #[error("no local link has the address {0} (set --node-ip to an address of this host)")]
    NoLink(Ipv4Addr),
    #[error("writing {path}: {source}")]
    Sysctl {
        path: &'static str,
        source: std::io::Error,
    },
}

/// The kernel tables the pod network touches.
pub trait Dataplane {
    /// Our routes (marked with our protocol number), on any device.
    fn routes(&self) -> Result<Vec<Route>, NetError>;
    fn add_route(&self, r: &Route) -> Result<(), NetError>;
    fn del_route(&self, r: &Route) -> Result<(), NetError>;
    /// Permanent neighbour entries on the VXLAN device (none when it does
    /// not exist).
    fn neighs(&self) -> Result<Vec<Neigh>, NetError>;
    fn add_neigh(&self, n: &Neigh) -> Result<(), NetError>;
    fn del_neigh(&self, n: &Neigh) -> Result<(), NetError>;
    /// Unicast forwarding entries with a remote on the VXLAN device.
    fn fdb(&self) -> Result<Vec<Fdb>, NetError>;
    fn add_fdb(&self, f: &Fdb) -> Result<(), NetError>;
    fn del_fdb(&self, f: &Fdb) -> Result<(), NetError>;
}

/// What is installed now.
pub fn actual(net: &dyn Dataplane) -> Result<Entries, NetError> {
    Ok(Entries {
        routes: net.routes()?.into_iter().collect(),
        neighs: net.neighs()?.into_iter().collect(),
        fdb: net.fdb()?.into_iter().collect(),
    })
}

/// Brings the kernel to `desired`. Removes first (a peer whose address
/// changed gets its old entries out of the way), then adds FDB and ARP
/// before the route that needs them. Keeps going past a failed entry so one
/// bad Node does not cut the others off; returns the first error.
pub fn reconcile(net: &dyn Dataplane, desired: &Entries) -> Result<Plan, NetError> {
    let p = plan(desired, &actual(net)?);
    let mut first: Option<NetError> = None;
    let mut note = |r: Result<(), NetError>| {
        if let Err(e) = r {
            tracing::warn!(error = %e, "pod network entry");
            first.get_or_insert(e);
        }
    };
    for r in &p.del.routes {
        note(net.del_route(r));
    }
    for n in &p.del.neighs {
        note(net.del_neigh(n));
    }
    for f in &p.del.fdb {
        note(net.del_fdb(f));
    }
    for f in &p.add.fdb {
        note(net.add_fdb(f));
    }
    for n in &p.add.neighs {
        note(net.add_neigh(n));
    }
    for r in &p.add.routes {
        note(net.add_route(r));
    }
    match first {
        Some(e) => Err(e),
        None => Ok(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// The kernel as three sets; counts writes so tests see idempotence.
    #[derive(Default)]
    struct FakeNet {
        state: RefCell<Entries>,
        writes: RefCell<usize>,
    }

    impl FakeNet {
        fn touch(&self) {
            *self.writes.borrow_mut() += 1;
        }
    }

    impl Dataplane for FakeNet {
        fn routes(&self) -> Result<Vec<Route>, NetError> {
            Ok(self.state.borrow().routes.iter().cloned().collect())
        }
        fn add_route(&self, r: &Route) -> Result<(), NetError> {
            self.touch();
            // The kernel refuses a second route to the same destination.
            let mut s = self.state.borrow_mut();
            if s.routes.iter().any(|x| x.dst == r.dst) {
                return Err(NetError::Failed {
                    command: "ip route add".into(),
                    stderr: "File exists".into(),
                });
            }
            s.routes.insert(r.clone());
            Ok(())
        }
        fn del_route(&self, r: &Route) -> Result<(), NetError> {
            self.touch();
            self.state.borrow_mut().routes.remove(r);
            Ok(())
        }
        fn neighs(&self) -> Result<Vec<Neigh>, NetError> {
            Ok(self.state.borrow().neighs.iter().cloned().collect())
        }
        fn add_neigh(&self, n: &Neigh) -> Result<(), NetError> {
            self.touch();
            self.state.borrow_mut().neighs.insert(n.clone());
            Ok(())
        }
        fn del_neigh(&self, n: &Neigh) -> Result<(), NetError> {
            self.touch();
            self.state.borrow_mut().neighs.remove(n);
            Ok(())
        }
        fn fdb(&self) -> Result<Vec<Fdb>, NetError> {
            Ok(self.state.borrow().fdb.iter().cloned().collect())
        }
        fn add_fdb(&self, f: &Fdb) -> Result<(), NetError> {
            self.touch();
            self.state.borrow_mut().fdb.insert(f.clone());
            Ok(())
        }
        fn del_fdb(&self, f: &Fdb) -> Result<(), NetError> {
            self.touch();
            self.state.borrow_mut().fdb.remove(f);
            Ok(())
        }
    }

    fn peer(name: &str, cidr: &str, ip: [u8; 4], mac: Option<&str>) -> Peer {
        Peer {
            name: name.into(),
            pod_cidr: cidr.parse().unwrap(),
            public_ip: Ipv4Addr::from(ip),
            backend: mac.map(|_| "vxlan".into()),
            vtep_mac: mac.map(Into::into),
        }
    }

    const A_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 100, 2);

    #[test]
    fn peers_on_this_host_are_not_routed() {
        let mut ps = nodes();
        ps[1].public_ip = A_IP;
        let e = desired(Backend::HostGw, "a", A_IP, "eth0", &ps);
        assert_eq!(e.routes.len(), 1);
        assert!(e.routes.iter().all(|r| r.via != A_IP));
    }

    fn nodes() -> Vec<Peer> {
        vec![
            peer(
                "a",
                "10.245.0.0/24",
                [172, 31, 100, 2],
                Some("aa:aa:aa:aa:aa:01"),
            ),
            peer(
                "b",
                "10.245.1.0/24",
                [172, 31, 100, 3],
                Some("aa:aa:aa:aa:aa:02"),
            ),
            peer(
                "c",
                "10.245.2.0/24",
                [172, 31, 100, 4],
                Some("aa:aa:aa:aa:aa:03"),
            ),
        ]
    }

    #[test]
    fn host_gw_routes_every_other_node_via_its_address() {
        let e = desired(Backend::HostGw, "a", A_IP, "eth0", &nodes());
        let routes: Vec<String> = e
            .routes
            .iter()
            .map(|r| format!("{} via {} dev {}", r.dst, r.via, r.dev))
            .collect();
        assert_eq!(
            routes,
            [
                "10.245.1.0/24 via 172.31.100.3 dev eth0",
                "10.245.2.0/24 via 172.31.100.4 dev eth0"
            ]
        );
        assert!(e.neighs.is_empty() && e.fdb.is_empty());
    }

    #[test]
    fn vxlan_needs_route_arp_and_fdb_per_peer() {
        let e = desired(Backend::Vxlan, "a", A_IP, "eth0", &nodes());
        assert_eq!(e.routes.len(), 2);
        let r = e.routes.iter().next().unwrap();
        assert_eq!(
            (r.dst.to_string(), r.via, r.dev.as_str(), r.onlink),
            (
                "10.245.1.0/24".into(),
                Ipv4Addr::new(10, 245, 1, 0),
                VXLAN_DEV,
                true
            )
        );
        assert!(e.neighs.contains(&Neigh {
            ip: Ipv4Addr::new(10, 245, 1, 0),
            mac: "aa:aa:aa:aa:aa:02".into()
        }));
        assert!(e.fdb.contains(&Fdb {
            mac: "aa:aa:aa:aa:aa:03".into(),
            dst: Ipv4Addr::new(172, 31, 100, 4)
        }));
        // A peer without a VTEP MAC, or on host-gw, gets nothing.
        let mut ps = nodes();
        ps[1].vtep_mac = None;
        ps[2].backend = Some("host-gw".into());
        let e = desired(Backend::Vxlan, "a", A_IP, "eth0", &ps);
        assert!(e.routes.is_empty() && e.neighs.is_empty() && e.fdb.is_empty());
        assert_eq!(
            desired(Backend::None, "a", A_IP, "eth0", &nodes()),
            Entries::default()
        );
    }

    #[test]
    fn reconcile_is_idempotent_and_removes_deleted_nodes() {
        let net = FakeNet::default();
        let all = nodes();
        let want = desired(Backend::Vxlan, "a", A_IP, "eth0", &all);
        let p = reconcile(&net, &want).unwrap();
        assert_eq!(p.add.routes.len(), 2);
        assert_eq!(*net.state.borrow(), want);
        let writes = *net.writes.borrow();
        // Again (or after a restart, which reads the same kernel state):
        // nothing to do.
        assert!(reconcile(&net, &want).unwrap().is_empty());
        assert_eq!(*net.writes.borrow(), writes);

        // Node c deleted: exactly its three entries go.
        let want = desired(Backend::Vxlan, "a", A_IP, "eth0", &all[..2]);
        let p = reconcile(&net, &want).unwrap();
        assert_eq!(p.del.routes.len() + p.del.neighs.len() + p.del.fdb.len(), 3);
        assert!(p.add == Entries::default());
        assert_eq!(*net.state.borrow(), want);
    }

    #[test]
    fn changed_peer_address_replaces_the_route() {
        let net = FakeNet::default();
        let mut all = nodes();
        reconcile(&net, &desired(Backend::HostGw, "a", A_IP, "eth0", &all)).unwrap();
        all[1].public_ip = Ipv4Addr::new(172, 31, 100, 30);
        let want = desired(Backend::HostGw, "a", A_IP, "eth0", &all);
        // The fake refuses duplicate destinations, so this only passes when
        // the old route is removed before the new one is added.
        reconcile(&net, &want).unwrap();
        assert_eq!(*net.state.borrow(), want);
    }

    #[test]
    fn switching_backend_cleans_the_other_backends_entries() {
        let net = FakeNet::default();
        reconcile(&net, &desired(Backend::Vxlan, "a", A_IP, "eth0", &nodes())).unwrap();
        let want = desired(Backend::HostGw, "a", A_IP, "eth0", &nodes());
        reconcile(&net, &want).unwrap();
        assert_eq!(*net.state.borrow(), want);
        assert!(net.state.borrow().fdb.is_empty());
    }
}
