//! The service load balancer, K3s's ServiceLB without its per-Service pods:
//! a `type: LoadBalancer` Service gets the addresses of the nodes that carry
//! it in `status.loadBalancer.ingress`, and every node agent's service proxy
//! already forwards traffic for those addresses to the Service's endpoints.
//!
//! Which nodes carry load balancers: every Ready node, or, once any node is
//! labelled `svccontroller.k3rs.io/enablelb`, only the nodes labelled
//! `"true"` (K3s's opt-in pool). As with K3s, where two LoadBalancer Services
//! want the same port, the older one keeps it and the newer one is not
//! offered on the nodes where it would collide (a Warning event says why).
//! Services with a `loadBalancerClass` belong to another implementation.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

use crate::Error;
use crate::framework::{Action, Change, Ctx, Events, Informer, MANAGER, WorkQueue, key_of};

/// Node label that opts a node into (`"true"`) or out of the load-balancer pool.
pub const ENABLE_LB_LABEL: &str = "svccontroller.k3rs.io/enablelb";

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let services = ctx.informers.get::<Service>();
    let nodes = ctx.informers.get::<Node>();
    let queue = WorkQueue::new();
    {
        // One Service's ports decide where the others fit, so any change to
        // a LoadBalancer Service re-evaluates all of them (there are few).
        let q = queue.clone();
        let svcs = services.clone();
        services.on_change(move |ch| {
            let relevant = match ch {
                Change::Applied { old, new } => {
                    is_ours(new) || old.as_deref().is_some_and(|o| is_ours(o) || has_ingress(o))
                }
                Change::Deleted(s) => is_ours(s),
            };
            if relevant {
                if let Change::Applied { new, .. } = ch {
                    q.add(key_of(*new));
                }
                enqueue_all(&q, &svcs);
            }
        });
    }
    {
        let q = queue.clone();
        let svcs = services.clone();
        nodes.on_change(move |ch| {
            let changed = match ch {
                Change::Applied { old, new } => old
                    .as_deref()
                    .is_none_or(|o| pool_view(o) != pool_view(new)),
                Change::Deleted(_) => true,
            };
            if changed {
                enqueue_all(&q, &svcs);
            }
        });
    }
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        events: ctx.events.clone(),
        services,
        nodes,
    });
    crate::framework::run_workers(ctx, "servicelb", queue, 1, move |key| {
        let c = ctl.clone();
        async move { c.sync(&key).await }
    });
    Ok(())
}

fn enqueue_all(q: &WorkQueue, services: &Informer<Service>) {
    for s in services.store.state() {
        if is_ours(&s) {
            q.add(key_of(s.as_ref()));
        }
    }
}

/// A LoadBalancer Service this controller serves.
pub fn is_ours(svc: &Service) -> bool {
    svc.metadata.deletion_timestamp.is_none()
        && svc.spec.as_ref().is_some_and(|s| {
            s.type_.as_deref() == Some("LoadBalancer")
                && s.load_balancer_class.as_deref().is_none_or(str::is_empty)
        })
}

fn has_ingress(svc: &Service) -> bool {
    !current_ingress(svc).is_empty()
}

fn current_ingress(svc: &Service) -> Vec<LoadBalancerIngress> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default()
}

/// What about a node matters to the pool: readiness, the opt-in label and
/// its addresses.
fn pool_view(node: &Node) -> (bool, Option<String>, Vec<(String, String)>) {
    let addrs = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .map(|a| (a.type_.clone(), a.address.clone()))
                .collect()
        })
        .unwrap_or_default();
    (
        is_ready(node),
        node.labels().get(ENABLE_LB_LABEL).cloned(),
        addrs,
    )
}

fn is_ready(node: &Node) -> bool {
    node.metadata.deletion_timestamp.is_none()
        && node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The nodes that carry load balancers, by name.
pub fn pool(nodes: &[Arc<Node>]) -> Vec<&Node> {
    let opt_in = nodes
        .iter()
        .any(|n| n.labels().contains_key(ENABLE_LB_LABEL));
    let mut pool: Vec<&Node> = nodes
        .iter()
        .map(|n| n.as_ref())
        .filter(|n| is_ready(n))
        .filter(|n| !opt_in || n.labels().get(ENABLE_LB_LABEL).map(String::as_str) == Some("true"))
        .collect();
    pool.sort_by_key(|n| n.name_any());
    pool
}

/// The addresses a node offers a Service: its ExternalIPs if it has any,
/// else its InternalIPs, of the Service's IP families.
fn node_addresses(node: &Node, svc: &Service) -> Vec<String> {
    let families: Vec<String> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .unwrap_or_default();
    let family_ok = |ip: &str| {
        let v6 = ip.contains(':');
        families.is_empty()
            || families
                .iter()
                .any(|f| (f == "IPv6") == v6 && (f == "IPv4") != v6)
    };
    let of_type = |t: &str| -> Vec<String> {
        node.status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .map(|a| {
                a.iter()
                    .filter(|a| a.type_ == t && family_ok(&a.address))
                    .map(|a| a.address.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    let external = of_type("ExternalIP");
    if external.is_empty() {
        of_type("InternalIP")
    } else {
        external
    }
}

/// `(protocol, port)` pairs a Service listens on.
fn ports(svc: &Service) -> Vec<(String, i32)> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|ps| {
            ps.iter()
                .map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.port))
                .collect()
        })
        .unwrap_or_default()
}

/// Where one Service lands: its ingress addresses, and the nodes it was kept
/// off with the older Service that holds the port there.
#[derive(Debug, Default, PartialEq)]
pub struct Placement {
    pub ingress: Vec<String>,
    pub blocked: Vec<(String, String)>,
}

/// Places `target` given every LoadBalancer Service: older Services claim
/// their ports on each pool node first (creation time, then namespace/name).
pub fn place(target: &Service, services: &[Arc<Service>], pool: &[&Node]) -> Placement {
    let mut ordered: Vec<&Service> = services
        .iter()
        .map(|s| s.as_ref())
        .filter(|s| is_ours(s))
        .collect();
    ordered.sort_by(|a, b| {
        let age = |s: &Service| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
        age(a)
            .cmp(&age(b))
            .then_with(|| key_of(*a).cmp(&key_of(*b)))
    });
    let target_key = key_of(target);
    let mut placement = Placement::default();
    let mut seen = BTreeSet::new();
    for node in pool {
        let node_name = node.name_any();
        // (protocol, port) → the Service holding it on this node.
        let mut claimed: Vec<((String, i32), String)> = Vec::new();
        for svc in &ordered {
            let key = key_of(*svc);
            let wanted = ports(svc);
            let clash = wanted
                .iter()
                .find_map(|p| claimed.iter().find(|(c, _)| c == p).map(|(_, k)| k.clone()));
            if key == target_key {
                match clash {
                    Some(holder) => placement.blocked.push((node_name.clone(), holder)),
                    None => {
                        for a in node_addresses(node, target) {
                            if seen.insert(a.clone()) {
                                placement.ingress.push(a);
                            }
                        }
                    }
                }
                break;
            }
            if clash.is_none() {
                claimed.extend(wanted.into_iter().map(|p| (p, key.clone())));
            }
        }
    }
    placement
}

struct Controller {
    client: kube::Client,
    events: Events,
    services: Arc<Informer<Service>>,
    nodes: Arc<Informer<Node>>,
}

impl Controller {
    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = crate::framework::split_key(key);
        let Some(svc) = self.services.get(ns, name) else {
            return Ok(Action::Done);
        };
        let desired: Vec<String> = if is_ours(&svc) {
            let nodes = self.nodes.store.state();
            let pool = pool(&nodes);
            let placement = place(&svc, &self.services.store.state(), &pool);
            if !placement.blocked.is_empty() {
                let holders: HashSet<&str> =
                    placement.blocked.iter().map(|(_, h)| h.as_str()).collect();
                let mut holders: Vec<&str> = holders.into_iter().collect();
                holders.sort_unstable();
                self.events.warning(
                    svc.as_ref(),
                    "PortInUse",
                    format!(
                        "not offered on {} of {} load-balancer nodes: a port is already taken by {}",
                        placement.blocked.len(),
                        pool.len(),
                        holders.join(", ")
                    ),
                );
            }
            placement.ingress
        } else if svc
            .spec
            .as_ref()
            .is_some_and(|s| s.load_balancer_class.as_deref().is_none_or(str::is_empty))
        {
            // No longer a LoadBalancer: take back the addresses we gave it.
            Vec::new()
        } else {
            return Ok(Action::Done);
        };
        let current: Vec<String> = current_ingress(&svc)
            .into_iter()
            .filter_map(|i| i.ip)
            .collect();
        if current == desired && current_ingress(&svc).len() == desired.len() {
            return Ok(Action::Done);
        }
        let ingress: Vec<serde_json::Value> = desired
            .iter()
            .map(|ip| serde_json::json!({"ip": ip, "ipMode": "VIP"}))
            .collect();
        let body = if ingress.is_empty() {
            serde_json::json!({"status": {"loadBalancer": {"ingress": null}}})
        } else {
            serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}})
        };
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns.unwrap_or_default());
        match api
            .patch_status(name, &PatchParams::apply(MANAGER), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {
                tracing::info!(service = %key, ingress = ?desired, "load balancer status updated");
                if !desired.is_empty() && current.is_empty() {
                    self.events.normal(
                        svc.as_ref(),
                        "EnsuredLoadBalancer",
                        format!("load balancer on {}", desired.join(", ")),
                    );
                }
                Ok(Action::Done)
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        name: &str,
        ready: bool,
        labels: serde_json::Value,
        addrs: &[(&str, &str)],
    ) -> Arc<Node> {
        let addresses: Vec<_> = addrs
            .iter()
            .map(|(t, a)| serde_json::json!({"type": t, "address": a}))
            .collect();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": labels},
                "status": {
                    "addresses": addresses,
                    "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
                },
            }))
            .unwrap(),
        )
    }

    fn lb(name: &str, created: &str, ports: &[i32]) -> Arc<Service> {
        let ports: Vec<_> = ports
            .iter()
            .map(|p| serde_json::json!({"port": p}))
            .collect();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
                "spec": {"type": "LoadBalancer", "ports": ports},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn every_ready_node_until_one_opts_in() {
        let nodes = vec![
            node(
                "a",
                true,
                serde_json::json!({}),
                &[("InternalIP", "10.0.0.1")],
            ),
            node(
                "b",
                true,
                serde_json::json!({}),
                &[("InternalIP", "10.0.0.2"), ("ExternalIP", "203.0.113.2")],
            ),
            node(
                "c",
                false,
                serde_json::json!({}),
                &[("InternalIP", "10.0.0.3")],
            ),
        ];
        let svc = lb("web", "2025-01-01T00:00:00Z", &[80]);
        let p = place(&svc, std::slice::from_ref(&svc), &pool(&nodes));
        assert_eq!(p.ingress, ["10.0.0.1", "203.0.113.2"]);

        let mut nodes = nodes;
        nodes.push(node(
            "d",
            true,
            serde_json::json!({ENABLE_LB_LABEL: "true"}),
            &[("InternalIP", "10.0.0.4")],
        ));
        nodes.push(node(
            "e",
            true,
            serde_json::json!({ENABLE_LB_LABEL: "false"}),
            &[("InternalIP", "10.0.0.5")],
        ));
        let p = place(&svc, std::slice::from_ref(&svc), &pool(&nodes));
        assert_eq!(p.ingress, ["10.0.0.4"]);
    }

    #[test]
    fn the_older_service_keeps_a_contested_port() {
        let nodes = vec![node(
            "a",
            true,
            serde_json::json!({}),
            &[("InternalIP", "10.0.0.1")],
        )];
        let old = lb("old", "2025-01-01T00:00:00Z", &[80, 443]);
        let new = lb("new", "2025-01-02T00:00:00Z", &[8080, 443]);
        let other = lb("other", "2025-01-03T00:00:00Z", &[9000]);
        let all = vec![new.clone(), old.clone(), other.clone()];
        let pool = pool(&nodes);
        assert_eq!(place(&old, &all, &pool).ingress, ["10.0.0.1"]);
        let p = place(&new, &all, &pool);
        assert!(p.ingress.is_empty());
        assert_eq!(p.blocked, [("a".to_string(), "default/old".to_string())]);
        assert_eq!(place(&other, &all, &pool).ingress, ["10.0.0.1"]);
    }

    #[test]
    fn a_blocked_service_claims_nothing() {
        // "new" is kept off by "old", so "newest" (same port as "new" only) fits.
        let nodes = vec![node(
            "a",
            true,
            serde_json::json!({}),
            &[("InternalIP", "10.0.0.1")],
        )];
        let old = lb("old", "2025-01-01T00:00:00Z", &[443]);
        let new = lb("new", "2025-01-02T00:00:00Z", &[443, 8080]);
        let newest = lb("newest", "2025-01-03T00:00:00Z", &[8080]);
        let all = vec![old, new, newest.clone()];
        assert_eq!(place(&newest, &all, &pool(&nodes)).ingress, ["10.0.0.1"]);
    }

    #[test]
    fn load_balancer_class_and_other_types_are_not_ours() {
        let mut svc = (*lb("x", "2025-01-01T00:00:00Z", &[80])).clone();
        assert!(is_ours(&svc));
        svc.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
        assert!(!is_ours(&svc));
        svc.spec.as_mut().unwrap().load_balancer_class = None;
        svc.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(!is_ours(&svc));
    }

    #[test]
    fn ipv6_only_services_get_ipv6_addresses() {
        let nodes = vec![node(
            "a",
            true,
            serde_json::json!({}),
            &[("InternalIP", "10.0.0.1"), ("InternalIP", "fd00::1")],
        )];
        let mut svc = (*lb("v6", "2025-01-01T00:00:00Z", &[80])).clone();
        svc.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
        let svc = Arc::new(svc);
        assert_eq!(
            place(&svc, std::slice::from_ref(&svc), &pool(&nodes)).ingress,
            ["fd00::1"]
        );
    }
}
