//! The DaemonSet controller: one pod per eligible node (nodeSelector,
//! required node affinity, taints against the pod's tolerations plus the
//! default ones upstream gives DaemonSet pods), each pinned to its node with
//! node affinity `matchFields metadata.name`, as upstream. RollingUpdate
//! replaces pods of an older template within maxUnavailable; OnDelete waits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::deployment::pod_template_hash;
use crate::framework::{
    Action, Change, Ctx, Events, Expectations, Informer, WorkQueue, controller_ref, key_of,
    pod_is_active, pod_is_available, pod_is_ready, run_workers, split_key,
};
use crate::history::History;

pub const REVISION_LABEL: &str = "controller-revision-hash";

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        events: ctx.events.clone(),
        clock: ctx.clock.clone(),
        sets: ctx.informers.get::<DaemonSet>(),
        pods: ctx.informers.get::<Pod>(),
        nodes: ctx.informers.get::<Node>(),
        expectations: Expectations::default(),
        history: History::new(ctx),
    });
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        ctl.sets.on_change(move |ch| {
            if let Change::Applied { new, .. } = ch {
                q.add(key_of(*new));
            }
        });
    }
    {
        let q = queue.clone();
        let c = ctl.clone();
        ctl.pods.on_change(move |ch| {
            let (p, old) = match ch {
                Change::Applied { new, old } => (*new, old.as_deref()),
                Change::Deleted(p) => (*p, None),
            };
            let Some(r) = controller_ref(&p.metadata).filter(|r| r.kind == "DaemonSet") else {
                return;
            };
            let key = format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                r.name
            );
            match ch {
                Change::Applied { .. } if old.is_none() => c.expectations.observed_add(&key),
                Change::Deleted(_) if p.metadata.deletion_timestamp.is_none() => {
                    c.expectations.observed_del(&key)
                }
                Change::Applied { .. }
                    if p.metadata.deletion_timestamp.is_some()
                        && old.is_some_and(|o| o.metadata.deletion_timestamp.is_none()) =>
                {
                    c.expectations.observed_del(&key)
                }
                _ => {}
            }
            q.add(key);
        });
    }
    {
        let q = queue.clone();
        let c = ctl.clone();
        ctl.nodes.on_change(move |_| {
            for ds in c.sets.store.state() {
                q.add(key_of(ds.as_ref()));
            }
        });
    }
    let c = ctl.clone();
    run_workers(ctx, "daemonset", queue, 2, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
    Ok(())
}

struct Controller {
    client: Client,
    events: Events,
    clock: crate::Clock,
    sets: Arc<Informer<DaemonSet>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    expectations: Expectations,
    history: History,
}

/// The tolerations every DaemonSet pod gets, so daemons keep running on
/// unhealthy or cordoned nodes.
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut keys = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        keys.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    keys.into_iter()
        .map(|(k, e)| Toleration {
            key: Some(k.into()),
            operator: Some("Exists".into()),
            effect: Some(e.into()),
            ..Default::default()
        })
        .collect()
}

fn tolerated(taint: &Taint, tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = match t.operator.as_deref() {
            Some("Exists") => t
                .key
                .as_deref()
                .is_none_or(|k| k.is_empty() || k == taint.key),
            _ => {
                t.key.as_deref() == Some(taint.key.as_str())
                    && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
        };
        effect_ok && key_ok
    })
}

fn requirement_ok(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let vals = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| vals.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !vals.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(x)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                vals.first().and_then(|x| x.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" { v > x } else { v < x }
        }
        _ => false,
    }
}

/// Whether a DaemonSet pod from `template` should run on `node`.
pub fn should_run(node: &Node, spec: &k8s_openapi::api::core::v1::PodSpec) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(sel) = &spec.node_selector
        && sel.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    if let Some(terms) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    {
        let name = node.name_any();
        let any = terms.node_selector_terms.iter().any(|t| {
            t.match_expressions
                .iter()
                .flatten()
                .all(|r| requirement_ok(r, labels.get(&r.key).map(String::as_str)))
                && t.match_fields
                    .iter()
                    .flatten()
                    .all(|r| requirement_ok(r, (r.key == "metadata.name").then_some(name.as_str())))
        });
        if !any {
            return false;
        }
    }
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(default_tolerations(spec.host_network.unwrap_or(false)));
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerated(t, &tolerations))
}

fn pinned_node(p: &Pod) -> Option<String> {
    if let Some(n) = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
    {
        return Some(n);
    }
    let terms = &p
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

impl Controller {
    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(ds) = self.sets.get(Some(ns), name) else {
            self.expectations.forget(key);
            return Ok(Action::Done);
        };
        let Some(spec) = ds.spec.as_ref() else {
            return Ok(Action::Done);
        };
        if ds.metadata.deletion_timestamp.is_some() {
            // The garbage collector takes its pods and revisions.
            return Ok(Action::Done);
        }
        let template = &spec.template;
        let pod_spec = template.spec.clone().unwrap_or_default();
        let hash = pod_template_hash(
            Some(template),
            ds.status.as_ref().and_then(|s| s.collision_count),
        );
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let now = self.clock.now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in self.pods.in_namespace(ns) {
            if controller_ref(&p.metadata).is_some_and(|r| r.uid == uid)
                && pod_is_active(&p)
                && let Some(n) = pinned_node(&p)
            {
                by_node.entry(n).or_default().push(p);
            }
        }
        let in_use: HashSet<String> = by_node
            .values()
            .flatten()
            .filter_map(|p| p.metadata.labels.as_ref()?.get(REVISION_LABEL))
            .map(|h| format!("{name}-{h}"))
            .collect();
        self.history
            .record(
                ds.as_ref(),
                template,
                &hash,
                spec.revision_history_limit.unwrap_or(10),
                &in_use,
            )
            .await?;
        let nodes = self.nodes.store.state();
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut create: Vec<String> = Vec::new();
        let mut delete: Vec<Arc<Pod>> = Vec::new();
        let (mut desired, mut scheduled, mut misscheduled, mut ready, mut available, mut updated) =
            (0, 0, 0, 0, 0, 0);
        let mut old_pods: Vec<Arc<Pod>> = Vec::new();
        let mut unavailable = 0;
        for node in &nodes {
            let n = node.name_any();
            let run = should_run(node, &pod_spec);
            let pods = by_node.remove(&n).unwrap_or_default();
            if run {
                desired += 1;
                if pods.is_empty() {
                    create.push(n);
                    unavailable += 1;
                    continue;
                }
                scheduled += 1;
                // Keep the oldest; extras go.
                let mut pods = pods;
                pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
                let keep = pods.remove(0);
                delete.extend(pods);
                if pod_is_ready(&keep) {
                    ready += 1;
                }
                let avail = pod_is_available(&keep, min_ready, now);
                if avail {
                    available += 1;
                } else {
                    unavailable += 1;
                }
                let current = keep
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(REVISION_LABEL))
                    == Some(&hash);
                if current {
                    updated += 1;
                } else {
                    old_pods.push(keep);
                }
            } else if !pods.is_empty() {
                misscheduled += 1;
                delete.extend(pods);
            }
        }
        // Pods pinned to nodes that no longer exist.
        for (_, pods) in by_node {
            delete.extend(pods);
        }
        // Rolling update: replace old pods while staying within maxUnavailable.
        let strategy = spec.update_strategy.as_ref();
        if strategy.and_then(|s| s.type_.as_deref()) != Some("OnDelete") {
            let max_unavailable = match strategy
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_unavailable.as_ref())
            {
                Some(IntOrString::Int(i)) => *i,
                Some(IntOrString::String(s)) => {
                    let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
                    ((pct * f64::from(desired)) / 100.0).floor() as i32
                }
                None => 1,
            }
            .max(1);
            let mut budget = max_unavailable - unavailable;
            // Unavailable old pods cost nothing to replace.
            old_pods.sort_by_key(|p| pod_is_available(p, min_ready, now));
            for p in old_pods {
                let avail = pod_is_available(&p, min_ready, now);
                if avail {
                    if budget <= 0 {
                        break;
                    }
                    budget -= 1;
                }
                delete.push(p);
            }
        }

        if self.expectations.satisfied(key) {
            self.expectations
                .expect(key, create.len() as i64, delete.len() as i64);
            for n in &create {
                let pod = self.pod_for(&ds, n, &hash);
                match pod_api.create(&PostParams::default(), &pod).await {
                    Ok(p) => self.events.normal(
                        ds.as_ref(),
                        "SuccessfulCreate",
                        format!("Created pod: {}", p.name_any()),
                    ),
                    Err(e) => {
                        self.expectations.forget(key);
                        self.events.warning(
                            ds.as_ref(),
                            "FailedCreate",
                            format!("Error creating: {}", crate::framework::api_message(&e)),
                        );
                        return Err(e.into());
                    }
                }
            }
            for p in &delete {
                match pod_api
                    .delete(&p.name_any(), &DeleteParams::default())
                    .await
                {
                    Ok(_) => self.events.normal(
                        ds.as_ref(),
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", p.name_any()),
                    ),
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        self.expectations.observed_del(key)
                    }
                    Err(e) => {
                        self.expectations.forget(key);
                        return Err(e.into());
                    }
                }
            }
        }
        let status = serde_json::json!({"status": {
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": scheduled,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "numberAvailable": available,
            "numberUnavailable": (desired - available).max(0),
            "updatedNumberScheduled": updated,
            "observedGeneration": ds.metadata.generation,
        }});
        let cur = ds.status.as_ref();
        let same = cur.is_some_and(|s| {
            s.desired_number_scheduled == desired
                && s.current_number_scheduled == scheduled
                && s.number_misscheduled == misscheduled
                && s.number_ready == ready
                && s.number_available.unwrap_or(0) == available
                && s.updated_number_scheduled.unwrap_or(0) == updated
                && s.observed_generation == ds.metadata.generation
        });
        if !same {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), ns);
            crate::framework::ignore_not_found(
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                    .await,
            )?;
        }
        if min_ready > 0 && ready > available {
            return Ok(Action::RequeueAfter(std::time::Duration::from_secs(
                min_ready as u64,
            )));
        }
        Ok(Action::Done)
    }

    fn pod_for(&self, ds: &DaemonSet, node: &str, hash: &str) -> Pod {
        let template = ds.spec.as_ref().map(|s| &s.template);
        let mut pod = crate::replicaset::pod_from_template(ds, template);
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(REVISION_LABEL.into(), hash.into());
        if let Some(spec) = pod.spec.as_mut() {
            let host_network = spec.host_network.unwrap_or(false);
            let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
            for t in default_tolerations(host_network) {
                if !tolerations.contains(&t) {
                    tolerations.push(t);
                }
            }
            // Pin to the node the way upstream does: required affinity on the name.
            let pin = NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(vec![node.into()]),
                }]),
            };
            let affinity = spec.affinity.get_or_insert_with(Affinity::default);
            let na = affinity
                .node_affinity
                .get_or_insert_with(NodeAffinity::default);
            na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
                node_selector_terms: vec![pin],
            });
        }
        pod
    }
}
