//! The EndpointSlice controller: for every Service with a selector, the
//! discovery.k8s.io/v1 EndpointSlices listing the selected pods (ready,
//! serving and terminating ones, with their node, zone and resolved ports),
//! at most 100 endpoints per slice and one slice per distinct port set.
//!
//! Endpoints stay in the slice they are already in, so a pod changing
//! rewrites one slice, not all of them; a Service without endpoints keeps
//! one empty "placeholder" slice, as upstream.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::backends::{self, endpoint_labels, managed_selector, selects};
use crate::framework::{
    Action, Change, Ctx, Events, Informer, WorkQueue, controller_ref, ignore_not_found, key_of,
    owner_ref_to, run_workers, split_key,
};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// How long a write of ours may take to show up in the cache before the
/// cache is trusted again anyway.
const TRACK_TTL: Duration = Duration::from_secs(30);

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        events: ctx.events.clone(),
        services: ctx.informers.get::<Service>(),
        pods: ctx.informers.get::<Pod>(),
        nodes: ctx.informers.get::<Node>(),
        slices: ctx.informers.get::<EndpointSlice>(),
        tracker: Tracker::default(),
    });
    let queue = WorkQueue::new();
    backends::watch(&ctl.services, &ctl.pods, &queue);
    {
        let q = queue.clone();
        let c = ctl.clone();
        ctl.slices.on_change(move |ch| {
            let s = match ch {
                Change::Applied { new, .. } => *new,
                Change::Deleted(s) => {
                    if let Some(k) = service_key(s) {
                        c.tracker.deleted(&k, &s.name_any());
                    }
                    *s
                }
            };
            // Someone else's edit or delete of a slice of ours is undone.
            if let Some(k) = service_key(s) {
                q.add(k);
            }
        });
    }
    {
        let q = queue.clone();
        let c = ctl.clone();
        ctl.nodes.on_change(move |ch| {
            let zone_changed = match ch {
                Change::Applied { old, new } => old.as_deref().is_none_or(|o| zone(o) != zone(new)),
                Change::Deleted(_) => true,
            };
            if zone_changed {
                for svc in c.services.store.state() {
                    if managed_selector(&svc).is_some() {
                        q.add(key_of(svc.as_ref()));
                    }
                }
            }
        });
    }
    let c = ctl.clone();
    run_workers(
        ctx,
        "endpointslice",
        queue,
        ctx.config.concurrent_syncs,
        move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        },
    );
    Ok(())
}

struct Controller {
    client: Client,
    events: Events,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    slices: Arc<Informer<EndpointSlice>>,
    tracker: Tracker,
}

fn zone(node: &Node) -> Option<String> {
    node.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned()
}

/// The key of the Service a slice of ours belongs to.
fn service_key(s: &EndpointSlice) -> Option<String> {
    let labels = s.metadata.labels.as_ref()?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    let svc = labels.get(SERVICE_NAME_LABEL)?;
    Some(format!(
        "{}/{svc}",
        s.metadata.namespace.as_deref().unwrap_or_default()
    ))
}

impl Controller {
    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(svc) = self.services.get(Some(ns), name) else {
            // The slices go with the Service through their owner reference.
            self.tracker.forget(key);
            return Ok(Action::Done);
        };
        let Some(selector) = managed_selector(&svc) else {
            return Ok(Action::Done);
        };
        if svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        if self.tracker.stale(key, ns, &self.slices) {
            // Acting on a cache that misses our own last writes would
            // create duplicate slices; look again once it caught up.
            return Ok(Action::RequeueAfter(Duration::from_millis(100)));
        }
        let pods: Vec<Arc<Pod>> = self
            .pods
            .in_namespace(ns)
            .into_iter()
            .filter(|p| selects(selector, p.metadata.labels.as_ref()))
            .collect();
        let uid = svc.metadata.uid.clone().unwrap_or_default();
        let families = backends::families(&svc);
        let existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .in_namespace(ns)
            .into_iter()
            .filter(|s| service_key(s).as_deref() == Some(key))
            .collect();
        let zones: HashMap<String, String> = self
            .nodes
            .store
            .state()
            .iter()
            .filter_map(|n| Some((n.name_any(), zone(n)?)))
            .collect();
        let mut todo = Plan::default();
        for family in &families {
            let mine: Vec<Arc<EndpointSlice>> = existing
                .iter()
                .filter(|s| {
                    &s.address_type == family
                        && controller_ref(&s.metadata).is_some_and(|r| r.uid == uid)
                })
                .cloned()
                .collect();
            let desired = desired_endpoints(&svc, &pods, family, |n| zones.get(n).cloned());
            let p = plan(&svc, family, desired, &mine);
            todo.create.extend(p.create);
            todo.update.extend(p.update);
            todo.delete.extend(p.delete);
        }
        // Slices of an earlier Service of that name, or of a family it dropped.
        todo.delete.extend(existing.into_iter().filter(|s| {
            !families.contains(&s.address_type)
                || controller_ref(&s.metadata).is_none_or(|r| r.uid != uid)
        }));
        self.apply(&svc, key, ns, todo).await?;
        Ok(Action::Done)
    }

    async fn apply(&self, svc: &Service, key: &str, ns: &str, todo: Plan) -> Result<(), Error> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let mut first_err: Option<kube::Error> = None;
        for s in &todo.create {
            match api.create(&PostParams::default(), s).await {
                Ok(created) => self.tracker.wrote(key, &created),
                // The namespace is going away, and the slices with it.
                Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("terminat") => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for s in &todo.update {
            match api.replace(&s.name_any(), &PostParams::default(), s).await {
                Ok(updated) => self.tracker.wrote(key, &updated),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for s in &todo.delete {
            match ignore_not_found(api.delete(&s.name_any(), &DeleteParams::default()).await) {
                Ok(()) => self.tracker.removed(key, &s.name_any()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            None => Ok(()),
            // A write raced the cache: retried quietly.
            Some(kube::Error::Api(e)) if e.code == 409 => Err(kube::Error::Api(e).into()),
            Some(e) => {
                self.events.warning(
                    svc,
                    "FailedToUpdateEndpointSlices",
                    format!("Error updating Endpoint Slices for Service {key}: {e}"),
                );
                Err(e.into())
            }
        }
    }
}

/// The endpoints a Service should have in `family`, grouped by the port set
/// their pod resolves the Service's ports to (named target ports may map to
/// different numbers on different pods), pods in name order.
pub fn desired_endpoints(
    svc: &Service,
    pods: &[Arc<Pod>],
    family: &str,
    zone_of: impl Fn(&str) -> Option<String>,
) -> Vec<(Vec<EndpointPort>, Vec<Endpoint>)> {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let service_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut pods: Vec<&Arc<Pod>> = pods.iter().collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut groups: BTreeMap<PortKey, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for pod in pods {
        if !backends::pod_in_endpoints(pod, true) {
            continue;
        }
        let Some(ip) = backends::pod_ip(pod, family) else {
            continue;
        };
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(backends::find_port(pod, sp)?),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let serving = backends::ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        // Never "ready" while terminating, unless the Service publishes
        // every address regardless.
        let ready = publish_not_ready || (serving && !terminating);
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let endpoint = Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: backends::hostname_for(pod, svc),
            zone: node.as_deref().and_then(&zone_of),
            node_name: node,
            target_ref: Some(backends::target_ref(pod)),
            ..Default::default()
        };
        groups
            .entry(port_key(&ports))
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(endpoint);
    }
    groups.into_values().collect()
}

type PortKey = Vec<(String, i32, String, Option<String>)>;

fn port_key(ports: &[EndpointPort]) -> PortKey {
    let mut k: PortKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    k.sort();
    k
}

/// A slice that stays: (the existing one it updates, or `None` for a new
/// one; port key; ports; endpoints).
type Kept<'a> = (
    Option<&'a Arc<EndpointSlice>>,
    PortKey,
    Vec<EndpointPort>,
    Vec<Endpoint>,
);

/// An endpoint's identity across syncs: its pod, or its address.
fn endpoint_id(e: &Endpoint) -> String {
    e.target_ref
        .as_ref()
        .and_then(|r| r.uid.clone())
        .or_else(|| e.addresses.first().cloned())
        .unwrap_or_default()
}

/// The writes that turn `existing` slices into the desired ones.
#[derive(Default, Debug)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<Arc<EndpointSlice>>,
}

/// Plans one address family's slices for `svc`: endpoints already in a slice
/// stay there (refreshed), new ones fill slices with room, then slices freed
/// up, then new slices; slices left empty are deleted — except one kept as
/// the placeholder when the Service has no endpoints at all.
pub fn plan(
    svc: &Service,
    family: &str,
    desired: Vec<(Vec<EndpointPort>, Vec<Endpoint>)>,
    existing: &[Arc<EndpointSlice>],
) -> Plan {
    let mut labels = endpoint_labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let total: usize = desired.iter().map(|(_, e)| e.len()).sum();

    // Per port set: its ports and the endpoints not yet placed, in order.
    let mut groups: Vec<(PortKey, Vec<EndpointPort>, Vec<Option<Endpoint>>)> = Vec::new();
    let mut index: HashMap<(PortKey, String), (usize, usize)> = HashMap::new();
    for (ports, eps) in desired {
        let key = port_key(&ports);
        let g = groups.len();
        for (i, e) in eps.iter().enumerate() {
            index.insert((key.clone(), endpoint_id(e)), (g, i));
        }
        groups.push((key, ports, eps.into_iter().map(Some).collect()));
    }

    let mut existing: Vec<&Arc<EndpointSlice>> = existing.iter().collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut kept: Vec<Kept<'_>> = Vec::new();
    let mut free: Vec<&Arc<EndpointSlice>> = Vec::new();
    for s in existing {
        let key = port_key(s.ports.as_deref().unwrap_or_default());
        let eps: Vec<Endpoint> = s
            .endpoints
            .iter()
            .filter_map(|e| {
                let (g, i) = index.get(&(key.clone(), endpoint_id(e)))?;
                groups[*g].2[*i].take()
            })
            .collect();
        if eps.is_empty() {
            free.push(s);
        } else {
            let ports = s.ports.clone().unwrap_or_default();
            kept.push((Some(s), key, ports, eps));
        }
    }
    for (key, ports, left) in groups {
        let mut left: Vec<Endpoint> = left.into_iter().flatten().collect();
        for (_, _, _, eps) in kept.iter_mut().filter(|(_, k, _, _)| *k == key) {
            let room = MAX_ENDPOINTS_PER_SLICE.saturating_sub(eps.len());
            let n = room.min(left.len());
            eps.extend(left.drain(..n));
        }
        while !left.is_empty() {
            let n = MAX_ENDPOINTS_PER_SLICE.min(left.len());
            let chunk: Vec<Endpoint> = left.drain(..n).collect();
            let reuse = (!free.is_empty()).then(|| free.remove(0));
            kept.push((reuse, key.clone(), ports.clone(), chunk));
        }
    }
    if total == 0 && kept.is_empty() {
        let reuse = (!free.is_empty()).then(|| free.remove(0));
        kept.push((reuse, Vec::new(), Vec::new(), Vec::new()));
    }

    let mut out = Plan {
        delete: free.into_iter().cloned().collect(),
        ..Default::default()
    };
    for (orig, _, ports, endpoints) in kept {
        let mut slice = match orig {
            Some(o) => (**o).clone(),
            None => EndpointSlice {
                metadata: ObjectMeta {
                    generate_name: Some(slice_prefix(&svc.name_any())),
                    namespace: svc.metadata.namespace.clone(),
                    ..Default::default()
                },
                ..Default::default()
            },
        };
        slice.metadata.labels = Some(labels.clone());
        slice.metadata.owner_references = Some(vec![owner_ref_to(svc)]);
        slice.address_type = family.to_string();
        slice.ports = Some(ports);
        slice.endpoints = endpoints;
        match orig {
            None => out.create.push(slice),
            Some(o) if !same(o, &slice) => out.update.push(slice),
            Some(_) => {}
        }
    }
    out
}

/// `generateName` of a Service's slices; upstream leaves room for the suffix.
fn slice_prefix(service: &str) -> String {
    let mut p: String = service.chars().take(57).collect();
    p.push('-');
    p
}

fn same(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    a.metadata.labels == b.metadata.labels
        && a.metadata.owner_references == b.metadata.owner_references
        && a.address_type == b.address_type
        && a.ports.as_deref().unwrap_or_default() == b.ports.as_deref().unwrap_or_default()
        && a.endpoints == b.endpoints
}

/// Our own writes per Service, until the cache shows them: the sync waits
/// for them rather than act on a cache that lacks a slice it just created.
#[derive(Default)]
struct Tracker {
    inner: Mutex<HashMap<String, Vec<Tracked>>>,
}

struct Tracked {
    name: String,
    /// `Some(rv)`: written at `rv`; `None`: deleted.
    rv: Option<u64>,
    at: Instant,
}

impl Tracker {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Tracked>>> {
        match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    fn wrote(&self, key: &str, s: &EndpointSlice) {
        // Resource versions are etcd revisions here, so they order writes.
        let Some(rv) = s.resource_version().and_then(|v| v.parse().ok()) else {
            return;
        };
        let mut m = self.map();
        let v = m.entry(key.to_string()).or_default();
        v.retain(|t| t.name != s.name_any());
        v.push(Tracked {
            name: s.name_any(),
            rv: Some(rv),
            at: Instant::now(),
        });
    }

    fn removed(&self, key: &str, name: &str) {
        let mut m = self.map();
        let v = m.entry(key.to_string()).or_default();
        v.retain(|t| t.name != name);
        v.push(Tracked {
            name: name.to_string(),
            rv: None,
            at: Instant::now(),
        });
    }

    /// A slice vanished from the cache: no write of ours on it is pending.
    fn deleted(&self, key: &str, name: &str) {
        if let Some(v) = self.map().get_mut(key) {
            v.retain(|t| t.name != name);
        }
    }

    fn forget(&self, key: &str) {
        self.map().remove(key);
    }

    fn stale(&self, key: &str, ns: &str, slices: &Informer<EndpointSlice>) -> bool {
        let mut m = self.map();
        let Some(v) = m.get_mut(key) else {
            return false;
        };
        v.retain(|t| {
            if t.at.elapsed() > TRACK_TTL {
                return false;
            }
            let cached = slices.get(Some(ns), &t.name);
            match t.rv {
                None => cached.is_some(),
                Some(rv) => cached
                    .and_then(|c| c.resource_version()?.parse::<u64>().ok())
                    .is_none_or(|have| have < rv),
            }
        });
        let stale = !v.is_empty();
        if !stale {
            m.remove(key);
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::tests::{pod, service};

    fn arcs(p: Vec<Pod>) -> Vec<Arc<Pod>> {
        p.into_iter().map(Arc::new).collect()
    }

    fn created(mut s: EndpointSlice, name: &str) -> Arc<EndpointSlice> {
        s.metadata.name = Some(name.into());
        Arc::new(s)
    }

    #[test]
    fn conditions_node_zone_and_ports() {
        let svc = service(serde_json::json!([{"name": "http", "port": 80, "targetPort": 8080}]));
        let mut terminating = pod("b", "10.0.0.2", true, &[]);
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let pods = arcs(vec![
            pod("a", "10.0.0.1", true, &[]),
            terminating,
            pod("c", "10.0.0.3", false, &[]),
        ]);
        let d = desired_endpoints(&svc, &pods, "IPv4", |n| {
            (n == "node-a").then(|| "zone-1".to_string())
        });
        assert_eq!(d.len(), 1);
        let (ports, eps) = &d[0];
        assert_eq!(ports[0].port, Some(8080));
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
        let cond = |i: usize| {
            let c = eps[i].conditions.as_ref().unwrap();
            (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
        };
        assert_eq!(cond(0), (true, true, false));
        // Terminating: not ready, but still serving while its readiness holds.
        assert_eq!(cond(1), (false, true, true));
        assert_eq!(cond(2), (false, false, false));
        assert_eq!(eps[0].zone.as_deref(), Some("zone-1"));
        assert_eq!(eps[0].node_name.as_deref(), Some("node-a"));
        assert_eq!(
            eps[0].target_ref.as_ref().unwrap().name.as_deref(),
            Some("a")
        );

        let mut publish = svc.clone();
        publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let d = desired_endpoints(&publish, &pods, "IPv4", |_| None);
        assert!(
            d[0].1
                .iter()
                .all(|e| e.conditions.as_ref().unwrap().ready == Some(true))
        );
    }

    #[test]
    fn different_numbers_for_a_named_port_make_separate_slices() {
        let svc = service(serde_json::json!([{"name": "http", "port": 80, "targetPort": "web"}]));
        let pods = arcs(vec![
            pod("a", "10.0.0.1", true, &[("web", 8080)]),
            pod("b", "10.0.0.2", true, &[("web", 9090)]),
            pod("c", "10.0.0.3", true, &[("web", 8080)]),
        ]);
        let d = desired_endpoints(&svc, &pods, "IPv4", |_| None);
        let p = plan(&svc, "IPv4", d, &[]);
        assert_eq!(p.create.len(), 2);
        let sizes: Vec<(i32, usize)> = p
            .create
            .iter()
            .map(|s| {
                (
                    s.ports.as_ref().unwrap()[0].port.unwrap(),
                    s.endpoints.len(),
                )
            })
            .collect();
        assert!(
            sizes.contains(&(8080, 2)) && sizes.contains(&(9090, 1)),
            "{sizes:?}"
        );
        let s = &p.create[0];
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels["team"], "a");
        assert_eq!(s.address_type, "IPv4");
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Service", "svc-uid")
        );
        assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
    }

    #[test]
    fn at_most_100_per_slice_and_endpoints_stay_put() {
        let svc = service(serde_json::json!([{"port": 80}]));
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                    true,
                    &[],
                )
            })
            .collect();
        let d = desired_endpoints(&svc, &arcs(pods.clone()), "IPv4", |_| None);
        let p = plan(&svc, "IPv4", d, &[]);
        let sizes: Vec<usize> = p.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let existing: Vec<Arc<EndpointSlice>> = p
            .create
            .into_iter()
            .enumerate()
            .map(|(i, s)| created(s, &format!("web-{i}")))
            .collect();
        // Unchanged: nothing to write.
        let d = desired_endpoints(&svc, &arcs(pods.clone()), "IPv4", |_| None);
        let p = plan(&svc, "IPv4", d, &existing);
        assert!(
            p.create.is_empty() && p.update.is_empty() && p.delete.is_empty(),
            "{p:?}"
        );
        // One pod turns unready: only its slice is rewritten.
        let mut changed = pods.clone();
        changed[150] = pod("p150", "10.0.0.151", false, &[]);
        let d = desired_endpoints(&svc, &arcs(changed), "IPv4", |_| None);
        let p = plan(&svc, "IPv4", d, &existing);
        assert!(p.create.is_empty() && p.delete.is_empty());
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].metadata.name.as_deref(), Some("web-1"));
        // New pods fill the slice with room first.
        let mut more = pods.clone();
        more.push(pod("q", "10.0.9.9", true, &[]));
        let d = desired_endpoints(&svc, &arcs(more), "IPv4", |_| None);
        let p = plan(&svc, "IPv4", d, &existing);
        assert!(p.create.is_empty());
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].metadata.name.as_deref(), Some("web-2"));
        assert_eq!(p.update[0].endpoints.len(), 51);
    }

    #[test]
    fn no_endpoints_keeps_one_placeholder() {
        let svc = service(serde_json::json!([{"port": 80}]));
        let p = plan(&svc, "IPv4", Vec::new(), &[]);
        assert_eq!(p.create.len(), 1);
        assert!(p.create[0].endpoints.is_empty());
        let pods = arcs(vec![pod("a", "10.0.0.1", true, &[])]);
        let d = desired_endpoints(&svc, &pods, "IPv4", |_| None);
        let placeholder = created(p.create[0].clone(), "web-x");
        // Pods arrive: the placeholder is filled, not replaced.
        let p = plan(&svc, "IPv4", d.clone(), std::slice::from_ref(&placeholder));
        assert!(p.create.is_empty() && p.delete.is_empty());
        assert_eq!(p.update.len(), 1);
        let full = created(p.update[0].clone(), "web-x");
        // And emptied again when they go.
        let p = plan(
            &svc,
            "IPv4",
            Vec::new(),
            &[full.clone(), created((*full).clone(), "web-y")],
        );
        assert_eq!(p.update.len(), 1);
        assert!(p.update[0].endpoints.is_empty());
        assert_eq!(p.delete.len(), 1);
    }
}
