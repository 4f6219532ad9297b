//! The ResourceQuota controller: keeps each quota's `status.hard` equal to
//! its `spec.hard` and `status.used` to what its namespace holds — object
//! counts (`pods`, `services`, `count/<resource>.<group>`, ...) and the
//! compute requests/limits of pods that have not finished, within the
//! quota's scopes. Enforcing the limits is admission's business, not ours.
//!
//! Kinds the controller manager caches anyway (pods, services, claims,
//! replication controllers, quotas) update usage as they change; other
//! kinds are counted with a metadata-only list when the quota itself
//! changes and every `--resource-quota-sync-period` (a full recount, as
//! upstream), not on every pod change.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k3rs_apimachinery::validation::{Quantity, QuantityFormat, parse_quantity};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kube::api::{Api, ApiResource, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::framework::{Action, Change, Ctx, Informer, WorkQueue, key_of, run_workers, split_key};

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        quotas: ctx.informers.get::<ResourceQuota>(),
        pods: ctx.informers.get::<Pod>(),
        services: ctx.informers.get::<Service>(),
        claims: ctx.informers.get::<PersistentVolumeClaim>(),
        rcs: ctx.informers.get::<ReplicationController>(),
        counted: Mutex::default(),
    });
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        let c = ctl.clone();
        ctl.quotas.on_change(move |ch| match ch {
            Change::Applied { old, new } => {
                // Our own status writes need no recount of uncached kinds.
                if old.as_deref().is_none_or(|o| o.spec != new.spec) {
                    q.add(format!("{FULL}{}", key_of(*new)));
                }
                // `resourcequotas` counts in every quota of the namespace.
                c.queue_namespace(new.metadata.namespace.as_deref(), &q);
            }
            Change::Deleted(rq) => c.queue_namespace(rq.metadata.namespace.as_deref(), &q),
        });
    }
    fn on_namespaced<K: crate::framework::Kind>(
        informer: &Informer<K>,
        ctl: &Arc<Controller>,
        q: &Arc<WorkQueue>,
    ) {
        let c = ctl.clone();
        let q = q.clone();
        informer.on_change(move |ch| {
            let ns = match ch {
                Change::Applied { new, .. } => new.meta().namespace.clone(),
                Change::Deleted(o) => o.meta().namespace.clone(),
            };
            c.queue_namespace(ns.as_deref(), &q);
        });
    }
    on_namespaced(&ctl.pods, &ctl, &queue);
    on_namespaced(&ctl.services, &ctl, &queue);
    on_namespaced(&ctl.claims, &ctl, &queue);
    on_namespaced(&ctl.rcs, &ctl, &queue);
    {
        // Kinds nobody here watches are recounted periodically.
        let q = queue.clone();
        let c = ctl.clone();
        let period = ctx.config.resource_quota_sync_period;
        let informers = ctx.informers.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = informers.stopped() => return,
                }
                for rq in c.quotas.store.state() {
                    q.add(format!("{FULL}{}", key_of(rq.as_ref())));
                }
            }
        });
    }
    let c = ctl.clone();
    run_workers(
        ctx,
        "resourcequota",
        queue,
        ctx.config.concurrent_syncs,
        move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        },
    );
    Ok(())
}

/// Queue-key prefix of a sync that recounts uncached kinds too.
const FULL: &str = "full:";

struct Controller {
    /// Last count of each uncached resource, by (namespace, quota resource).
    counted: Mutex<HashMap<(String, String), i64>>,
    client: Client,
    quotas: Arc<Informer<ResourceQuota>>,
    pods: Arc<Informer<Pod>>,
    services: Arc<Informer<Service>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    rcs: Arc<Informer<ReplicationController>>,
}

impl Controller {
    fn queue_namespace(&self, ns: Option<&str>, q: &WorkQueue) {
        let Some(ns) = ns else { return };
        for rq in self.quotas.in_namespace(ns) {
            q.add(key_of(rq.as_ref()));
        }
    }

    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (full, key) = match key.strip_prefix(FULL) {
            Some(k) => (true, k),
            None => (false, key),
        };
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(rq) = self.quotas.get(Some(ns), name) else {
            return Ok(Action::Done);
        };
        let spec = rq.spec.clone().unwrap_or_default();
        let hard = spec.hard.clone().unwrap_or_default();
        let scopes = scopes_of(&spec);
        let pods: Vec<Arc<Pod>> = self
            .pods
            .in_namespace(ns)
            .into_iter()
            .filter(|p| pod_counts(p, &scopes))
            .collect();
        let objects = Objects {
            pods: &pods,
            services: &self.services.in_namespace(ns),
            claims: &self.claims.in_namespace(ns),
            rcs: self.rcs.in_namespace(ns).len(),
            quotas: self.quotas.in_namespace(ns).len(),
        };
        let mut used = BTreeMap::new();
        for resource in hard.keys() {
            let q = match usage(resource, &objects) {
                Usage::Known(q) => q,
                Usage::Uncached(ar) if scopes.is_empty() => {
                    let slot = (ns.to_string(), resource.clone());
                    let cached = self.counted.lock().ok().and_then(|m| m.get(&slot).copied());
                    let n = match cached {
                        Some(n) if !full => n,
                        _ => match self.count(&ar, ns).await? {
                            Some(n) => {
                                if let Ok(mut m) = self.counted.lock() {
                                    m.insert(slot, n);
                                }
                                n
                            }
                            None => continue,
                        },
                    };
                    Quantity::from_units(n, QuantityFormat::DecimalSI)
                }
                _ => continue,
            };
            used.insert(resource.clone(), ApiQuantity(q.canonical()));
        }
        let status = rq.status.clone().unwrap_or_default();
        if status.hard.as_ref() == Some(&hard) && status.used.unwrap_or_default() == used {
            return Ok(Action::Done);
        }
        let api: Api<ResourceQuota> = Api::namespaced(self.client.clone(), ns);
        let patch = serde_json::json!({"status": {"hard": hard, "used": used}});
        match api
            .patch_status(
                &rq.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(Action::Done),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }

    /// How many objects of `ar` the namespace holds (`None`: the apiserver
    /// does not serve that resource).
    async fn count(&self, ar: &ApiResource, ns: &str) -> Result<Option<i64>, Error> {
        let found;
        let ar = if ar.version.is_empty() {
            // `count/<resource>.<group>`: the group's preferred version.
            let group = match kube::discovery::group(&self.client, &ar.group).await {
                Ok(g) => g,
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                Err(kube::Error::Discovery(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let Some((r, _)) = group
                .recommended_resources()
                .into_iter()
                .find(|(r, _)| r.plural == ar.plural)
            else {
                return Ok(None);
            };
            found = r;
            &found
        } else {
            ar
        };
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(self.client.clone(), ns, ar);
        let mut n = 0i64;
        let mut lp = ListParams::default().limit(500);
        loop {
            let list = match api.list_metadata(&lp).await {
                Ok(l) => l,
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            n += list.items.len() as i64;
            match list.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => return Ok(Some(n)),
            }
        }
    }
}

/// One scope a quota is limited to: `spec.scopes` entries (operator
/// `Exists`) and `spec.scopeSelector.matchExpressions` alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub name: String,
    pub operator: String,
    pub values: Vec<String>,
}

impl Scope {
    pub fn exists(name: &str) -> Self {
        Self {
            name: name.into(),
            operator: "Exists".into(),
            values: Vec::new(),
        }
    }
}

/// Every scope of a quota spec.
pub fn scopes_of(spec: &k8s_openapi::api::core::v1::ResourceQuotaSpec) -> Vec<Scope> {
    let mut out: Vec<Scope> = spec
        .scopes
        .iter()
        .flatten()
        .map(|s| Scope::exists(s))
        .collect();
    for e in spec
        .scope_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_ref())
        .into_iter()
        .flatten()
    {
        out.push(Scope {
            name: e.scope_name.clone(),
            operator: e.operator.clone(),
            values: e.values.clone().unwrap_or_default(),
        });
    }
    out
}

/// Whether a pod is charged to a quota with `scopes`: not finished, not
/// past its deletion grace period, and in every scope.
pub fn pod_counts(p: &Pod, scopes: &[Scope]) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    if let Some(t) = &p.metadata.deletion_timestamp
        && t.0 <= k8s_openapi::jiff::Timestamp::now()
    {
        return false;
    }
    let spec = p.spec.as_ref();
    let terminating = spec
        .and_then(|s| s.active_deadline_seconds)
        .is_some_and(|d| d >= 0);
    let best_effort = spec.is_none_or(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .all(|c| {
                c.resources.as_ref().is_none_or(|r| {
                    r.requests.as_ref().is_none_or(|m| m.is_empty())
                        && r.limits.as_ref().is_none_or(|m| m.is_empty())
                })
            })
    });
    let class = spec
        .and_then(|s| s.priority_class_name.as_deref())
        .unwrap_or("");
    let cross_namespace = spec.and_then(|s| s.affinity.as_ref()).is_some_and(|a| {
        let affinity = a
            .pod_affinity
            .as_ref()
            .map(|x| {
                let req = x
                    .required_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten();
                let pref = x
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .map(|w| &w.pod_affinity_term);
                req.chain(pref).cloned().collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let anti = a
            .pod_anti_affinity
            .as_ref()
            .map(|x| {
                let req = x
                    .required_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten();
                let pref = x
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .map(|w| &w.pod_affinity_term);
                req.chain(pref).cloned().collect::<Vec<_>>()
            })
            .unwrap_or_default();
        affinity.iter().chain(anti.iter()).any(|t| {
            t.namespace_selector.is_some() || t.namespaces.as_ref().is_some_and(|n| !n.is_empty())
        })
    });
    scopes.iter().all(|s| {
        let present = match s.name.as_str() {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => best_effort,
            "NotBestEffort" => !best_effort,
            "CrossNamespacePodAffinity" => cross_namespace,
            "PriorityClass" => {
                return match s.operator.as_str() {
                    "In" => s.values.iter().any(|v| v == class),
                    "NotIn" => !s.values.iter().any(|v| v == class),
                    "Exists" => !class.is_empty(),
                    "DoesNotExist" => class.is_empty(),
                    _ => false,
                };
            }
            // Validation admits no other scope; charge nothing to it.
            _ => return false,
        };
        match s.operator.as_str() {
            "DoesNotExist" => !present,
            _ => present,
        }
    })
}

/// A pod's effective `kind` ("requests"/"limits") of `resource`: the larger
/// of its containers' sum and its largest init container, plus overhead.
pub fn pod_amount(p: &Pod, kind: &str, resource: &str) -> Option<Quantity> {
    let spec = p.spec.as_ref()?;
    let get = |c: &k8s_openapi::api::core::v1::Container| -> Option<Quantity> {
        let r = c.resources.as_ref()?;
        let m = if kind == "limits" {
            &r.limits
        } else {
            &r.requests
        };
        // A container with only a limit is requested that much.
        let v = m.as_ref().and_then(|m| m.get(resource)).or_else(|| {
            (kind == "requests")
                .then(|| r.limits.as_ref()?.get(resource))
                .flatten()
        })?;
        parse_quantity(&v.0).ok()
    };
    let mut sum: Option<Quantity> = None;
    for c in &spec.containers {
        if let Some(q) = get(c) {
            sum = Some(sum.map_or(q, |s| s.saturating_add(&q)));
        }
    }
    for c in spec.init_containers.iter().flatten() {
        if let Some(q) = get(c)
            && sum.is_none_or(|s| q > s)
        {
            sum = Some(q);
        }
    }
    if let Some(o) = spec.overhead.as_ref().and_then(|o| o.get(resource))
        && let Ok(q) = parse_quantity(&o.0)
    {
        sum = Some(sum.map_or(q, |s| s.saturating_add(&q)));
    }
    sum
}

struct Objects<'a> {
    pods: &'a [Arc<Pod>],
    services: &'a [Arc<Service>],
    claims: &'a [Arc<PersistentVolumeClaim>],
    rcs: usize,
    quotas: usize,
}

enum Usage {
    Known(Quantity),
    /// An object count of a kind not cached here.
    Uncached(ApiResource),
    Unknown,
}

fn units(n: usize) -> Usage {
    Usage::Known(Quantity::from_units(n as i64, QuantityFormat::DecimalSI))
}

fn sum(qs: impl Iterator<Item = Quantity>) -> Quantity {
    qs.fold(None, |acc: Option<Quantity>, q| {
        Some(acc.map_or(q, |a| a.saturating_add(&q)))
    })
    .unwrap_or_else(|| Quantity::from_units(0, QuantityFormat::DecimalSI))
}

/// The usage of one quota resource name.
fn usage(resource: &str, o: &Objects<'_>) -> Usage {
    let node_ports = |s: &Service| -> usize {
        let spec = s.spec.as_ref();
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        match spec.and_then(|s| s.type_.as_deref()) {
            Some("NodePort") => ports.len(),
            Some("LoadBalancer") => ports.iter().filter(|p| p.node_port.is_some()).count(),
            _ => 0,
        }
    };
    match resource {
        "pods" | "count/pods" => units(o.pods.len()),
        "services" | "count/services" => units(o.services.len()),
        "services.loadbalancers" => units(
            o.services
                .iter()
                .filter(|s| {
                    s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
                })
                .count(),
        ),
        "services.nodeports" => units(o.services.iter().map(|s| node_ports(s)).sum()),
        "persistentvolumeclaims" | "count/persistentvolumeclaims" => units(o.claims.len()),
        "requests.storage" => Usage::Known(sum(o.claims.iter().filter_map(|c| {
            let q = c
                .spec
                .as_ref()?
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("storage")?;
            parse_quantity(&q.0).ok()
        }))),
        "replicationcontrollers" | "count/replicationcontrollers" => units(o.rcs),
        "resourcequotas" | "count/resourcequotas" => units(o.quotas),
        "configmaps" => Usage::Uncached(core("ConfigMap", "configmaps")),
        "secrets" => Usage::Uncached(core("Secret", "secrets")),
        _ => {
            if let Some(count) = resource.strip_prefix("count/") {
                return match count.split_once('.') {
                    None => Usage::Uncached(core("", count)),
                    Some((plural, group)) => Usage::Uncached(ApiResource {
                        group: group.into(),
                        version: String::new(),
                        api_version: group.into(),
                        kind: String::new(),
                        plural: plural.into(),
                    }),
                };
            }
            let (kind, name) = match resource.split_once('.') {
                Some(("requests", n)) => ("requests", n),
                Some(("limits", n)) => ("limits", n),
                _ if matches!(resource, "cpu" | "memory" | "ephemeral-storage") => {
                    ("requests", resource)
                }
                _ => return Usage::Unknown,
            };
            Usage::Known(sum(o.pods.iter().filter_map(|p| pod_amount(p, kind, name))))
        }
    }
}

fn core(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(resources: serde_json::Value, phase: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "q"},
                "spec": {"containers": [
                    {"name": "a", "image": "i", "resources": resources},
                    {"name": "b", "image": "i", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                ], "initContainers": [
                    {"name": "init", "image": "i", "resources": {"requests": {"cpu": "2"}}},
                ]},
                "status": {"phase": phase},
            }))
            .unwrap(),
        )
    }

    fn used(resource: &str, o: &Objects<'_>) -> String {
        match usage(resource, o) {
            Usage::Known(q) => q.canonical(),
            _ => "?".into(),
        }
    }

    #[test]
    fn compute_sums_of_running_pods() {
        let a = pod(
            serde_json::json!({"requests": {"cpu": "500m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}),
            "Running",
        );
        let b = pod(serde_json::json!({"limits": {"memory": "1Gi"}}), "Pending");
        let done = pod(serde_json::json!({"requests": {"cpu": "8"}}), "Succeeded");
        let pods: Vec<Arc<Pod>> = [a, b, done]
            .into_iter()
            .filter(|p| pod_counts(p, &[]))
            .collect();
        let o = Objects {
            pods: &pods,
            services: &[],
            claims: &[],
            rcs: 0,
            quotas: 1,
        };
        assert_eq!(used("pods", &o), "2");
        // The init container's 2 CPUs outweigh each pod's containers.
        assert_eq!(used("requests.cpu", &o), "4");
        assert_eq!(used("cpu", &o), "4");
        // 128Mi + 64Mi, and a limit-only container requests its limit: 1Gi + 64Mi.
        assert_eq!(used("requests.memory", &o), "1280Mi");
        assert_eq!(used("limits.cpu", &o), "1");
        assert_eq!(used("limits.memory", &o), "1280Mi");
        assert_eq!(used("resourcequotas", &o), "1");
        assert!(
            matches!(usage("count/deployments.apps", &o), Usage::Uncached(ar) if ar.plural == "deployments" && ar.group == "apps")
        );
        assert!(matches!(usage("configmaps", &o), Usage::Uncached(_)));
    }

    #[test]
    fn scopes_select_pods() {
        let best_effort = pod(serde_json::json!({}), "Running");
        let mut be: Pod = (*best_effort).clone();
        for c in be.spec.as_mut().unwrap().containers.iter_mut() {
            c.resources = None;
        }
        be.spec.as_mut().unwrap().init_containers = None;
        let s = |n: &str| vec![Scope::exists(n)];
        assert!(pod_counts(&be, &s("BestEffort")));
        assert!(!pod_counts(&be, &s("NotBestEffort")));
        assert!(pod_counts(&be, &s("NotTerminating")));
        be.spec.as_mut().unwrap().active_deadline_seconds = Some(60);
        assert!(pod_counts(&be, &s("Terminating")));
        assert!(!pod_counts(&be, &s("CrossNamespacePodAffinity")));
    }

    #[test]
    fn scope_selectors_select_by_priority_class() {
        let spec: k8s_openapi::api::core::v1::ResourceQuotaSpec =
            serde_json::from_value(serde_json::json!({
                "hard": {"pods": "2"},
                "scopeSelector": {"matchExpressions": [
                    {"scopeName": "PriorityClass", "operator": "In", "values": ["high", "critical"]}
                ]}
            }))
            .unwrap();
        let scopes = scopes_of(&spec);
        let mut p: Pod = (*pod(serde_json::json!({}), "Running")).clone();
        assert!(!pod_counts(&p, &scopes), "no class: not in the quota");
        p.spec.as_mut().unwrap().priority_class_name = Some("high".into());
        assert!(pod_counts(&p, &scopes));
        let not_in = vec![Scope {
            name: "PriorityClass".into(),
            operator: "NotIn".into(),
            values: vec!["high".into()],
        }];
        assert!(!pod_counts(&p, &not_in));
        let mut exists = vec![Scope::exists("PriorityClass")];
        assert!(pod_counts(&p, &exists));
        exists[0].operator = "DoesNotExist".into();
        assert!(!pod_counts(&p, &exists));
        let not_best_effort = vec![Scope {
            name: "BestEffort".into(),
            operator: "DoesNotExist".into(),
            values: vec![],
        }];
        assert!(
            pod_counts(&p, &not_best_effort),
            "the test pod has requests"
        );
    }

    #[test]
    fn service_counts() {
        let svc = |t: &str, ports: serde_json::Value| -> Arc<Service> {
            Arc::new(
                serde_json::from_value(serde_json::json!({"metadata": {"name": "s"}, "spec": {"type": t, "ports": ports}}))
                    .unwrap(),
            )
        };
        let services = vec![
            svc("ClusterIP", serde_json::json!([{"port": 80}])),
            svc(
                "NodePort",
                serde_json::json!([{"port": 80, "nodePort": 30001}, {"port": 81, "nodePort": 30002}]),
            ),
            svc(
                "LoadBalancer",
                serde_json::json!([{"port": 80, "nodePort": 30003}]),
            ),
        ];
        let o = Objects {
            pods: &[],
            services: &services,
            claims: &[],
            rcs: 0,
            quotas: 0,
        };
        assert_eq!(used("services", &o), "3");
        assert_eq!(used("services.loadbalancers", &o), "1");
        assert_eq!(used("services.nodeports", &o), "3");
    }
}
