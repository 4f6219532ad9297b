//! Preemption (upstream's DefaultPreemption PostFilter): when a pod fits
//! nowhere, find the node where evicting the fewest, lowest-priority pods
//! makes it fit, preferring victims whose eviction keeps every
//! PodDisruptionBudget within its allowed disruptions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::NodeSelector;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::framework::{CycleState, Diagnosis, Failure, Framework};
use crate::selectors::label_selector_matches;

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const NEVER: &str = "preemption: not eligible due to preemptionPolicy=Never.";

#[derive(Debug)]
pub enum Outcome {
    /// Evict these pods from `node`, then the preemptor fits there.
    Victims {
        node: String,
        victims: Vec<Arc<PodInfo>>,
    },
    /// Nothing to do; the message tail to append to the FitError.
    NotPossible(String),
}

/// Whether the pod fits `node` with the `excluded` pods gone.
fn fits_without(
    framework: &Framework,
    pod: &PodInfo,
    cache: &Cache,
    node: &NodeInfo,
    excluded: &HashSet<String>,
    volume_affinity: &[NodeSelector],
) -> bool {
    let mut trimmed = node.clone();
    for k in excluded {
        trimmed.remove_pod(k);
    }
    let st = CycleState::new(pod, cache, excluded, volume_affinity.to_vec());
    framework.filter(&st, &trimmed).is_ok()
}

/// A PodDisruptionBudget as preemption weighs it.
#[derive(Debug, Clone)]
pub struct Budget {
    namespace: String,
    selector: LabelSelector,
    allowed: i32,
    /// Pods already counted as disrupted (being evicted) by the budget.
    disrupted: HashSet<String>,
}

impl Budget {
    pub fn from_pdb(pdb: &PodDisruptionBudget) -> Option<Self> {
        let selector = pdb.spec.as_ref()?.selector.clone()?;
        let status = pdb.status.as_ref();
        Some(Self {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector,
            allowed: status.map(|s| s.disruptions_allowed).unwrap_or(0),
            disrupted: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default(),
        })
    }

    fn covers(&self, p: &PodInfo) -> bool {
        // As upstream, an empty selector guards nothing here.
        let empty = self
            .selector
            .match_labels
            .as_ref()
            .is_none_or(|m| m.is_empty())
            && self
                .selector
                .match_expressions
                .as_ref()
                .is_none_or(|e| e.is_empty());
        self.namespace == p.namespace
            && !empty
            && !self.disrupted.contains(&p.name)
            && label_selector_matches(&self.selector, &p.labels)
    }
}

/// Splits `pods` (most important first) into those whose eviction would take
/// some budget below zero and those that would not, spending each budget's
/// allowance in that order.
fn split_by_budget(
    pods: Vec<Arc<PodInfo>>,
    budgets: &[Budget],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = budgets.iter().map(|b| b.allowed).collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for p in pods {
        let mut violates = false;
        for (i, b) in budgets.iter().enumerate() {
            if b.covers(&p) {
                allowed[i] -= 1;
                violates |= allowed[i] < 0;
            }
        }
        if violates {
            violating.push(p);
        } else {
            fine.push(p);
        }
    }
    (violating, fine)
}

/// Chooses victims per upstream: all lower-priority pods must make room, then as
/// many as possible are reprieved, those protected by a budget first, then the
/// rest (highest priority first within each). Returns the victims and how
/// many of them violate a budget.
fn victims_on(
    framework: &Framework,
    pod: &PodInfo,
    cache: &Cache,
    node: &NodeInfo,
    volume_affinity: &[NodeSelector],
    budgets: &[Budget],
) -> Option<(Vec<Arc<PodInfo>>, usize)> {
    let mut lower: Vec<Arc<PodInfo>> = node
        .pods
        .values()
        .filter(|p| p.priority < pod.priority && p.pod.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    if lower.is_empty() {
        return None;
    }
    let mut excluded: HashSet<String> = lower.iter().map(|p| p.key.clone()).collect();
    if !fits_without(framework, pod, cache, node, &excluded, volume_affinity) {
        return None;
    }
    lower.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.key.cmp(&b.key)));
    let (violating, fine) = split_by_budget(lower, budgets);
    let mut victims = Vec::new();
    let mut violations = 0;
    for (p, violates) in violating
        .into_iter()
        .map(|p| (p, true))
        .chain(fine.into_iter().map(|p| (p, false)))
    {
        excluded.remove(&p.key);
        if !fits_without(framework, pod, cache, node, &excluded, volume_affinity) {
            excluded.insert(p.key.clone());
            violations += usize::from(violates);
            victims.push(p);
        }
    }
    Some((victims, violations))
}

/// A node where preemption works; lower `rank` is better (upstream's order:
/// fewest budget violations, lowest highest-victim priority, then lowest
/// priority sum, then fewest victims).
struct Candidate {
    rank: (usize, i32, i64, usize),
    node: String,
    victims: Vec<Arc<PodInfo>>,
}

pub fn preempt(
    framework: &Framework,
    pod: &PodInfo,
    cache: &Cache,
    failures: &HashMap<String, Failure>,
    volume_affinity: &[NodeSelector],
    budgets: &[Budget],
) -> Outcome {
    let policy = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref());
    if policy == Some("Never") {
        return Outcome::NotPossible(NEVER.into());
    }
    let mut diag = Diagnosis {
        nodes: cache.node_count(),
        ..Default::default()
    };
    let mut best: Option<Candidate> = None;
    for name in &cache.order {
        let Some(node) = cache.nodes.get(name) else {
            continue;
        };
        if failures.get(name).is_none_or(|f| f.unresolvable) {
            diag.add(&Failure::unresolvable(NOT_HELPFUL));
            continue;
        }
        match victims_on(framework, pod, cache, node, volume_affinity, budgets) {
            Some((v, violations)) if !v.is_empty() => {
                let top = v.iter().map(|p| p.priority).max().unwrap_or(i32::MIN);
                let sum: i64 = v.iter().map(|p| i64::from(p.priority)).sum();
                let cand = Candidate {
                    rank: (violations, top, sum, v.len()),
                    node: name.clone(),
                    victims: v,
                };
                if best.as_ref().is_none_or(|b| cand.rank < b.rank) {
                    best = Some(cand);
                }
            }
            _ => diag.add(&Failure::resolvable(NO_VICTIMS)),
        }
    }
    match best {
        Some(Candidate { node, victims, .. }) => Outcome::Victims { node, victims },
        None => Outcome::NotPossible(format!(
            "preemption: 0/{} nodes are available: {}.",
            diag.nodes,
            diag.histogram()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, cpu: &str, prio: i32, policy: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "priority": prio, "preemptionPolicy": policy,
                         "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
            }))
            .unwrap(),
        )
    }

    fn cluster() -> Cache {
        let mut c = Cache::default();
        for n in ["n1", "n2"] {
            c.upsert_node(
                serde_json::from_value(json!({"metadata": {"name": n}, "status": {
                    "allocatable": {"cpu": "1", "pods": "10"},
                    "conditions": [{"type": "Ready", "status": "True"}]}}))
                .unwrap(),
            );
        }
        c.upsert_bound_pod(pod("low", Some("n1"), "600m", 0, None));
        c.upsert_bound_pod(pod("mid", Some("n1"), "300m", 5, None));
        // n2 is full of pods that are not lower priority than the preemptor.
        c.upsert_bound_pod(pod("peer", Some("n2"), "900m", 10, None));
        c
    }

    fn failures() -> HashMap<String, Failure> {
        ["n1", "n2"]
            .into_iter()
            .map(|n| (n.to_string(), Failure::resolvable("Insufficient cpu")))
            .collect()
    }

    #[test]
    fn fewest_lowest_victims_are_chosen() {
        let cache = cluster();
        let fw = Framework::default();
        let me = PodInfo::new(pod("me", None, "700m", 10, None));
        match preempt(&fw, &me, &cache, &failures(), &[], &[]) {
            Outcome::Victims { node, victims } => {
                assert_eq!(node, "n1");
                let names: Vec<&str> = victims.iter().map(|v| v.name.as_str()).collect();
                assert_eq!(
                    names,
                    ["low"],
                    "mid is reprieved: evicting low alone is enough"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    fn labelled(name: &str, node: &str, cpu: &str, app: &str) -> Arc<Pod> {
        let mut p = (*pod(name, Some(node), cpu, 0, None)).clone();
        p.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        Arc::new(p)
    }

    fn budget(app: &str, allowed: i32) -> Budget {
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": app, "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}
        }))
        .unwrap();
        Budget::from_pdb(&pdb).unwrap()
    }

    #[test]
    fn budgets_steer_preemption_to_pods_that_may_be_disrupted() {
        let mut cache = Cache::default();
        for n in ["n1", "n2"] {
            cache.upsert_node(
                serde_json::from_value(json!({"metadata": {"name": n}, "status": {
                    "allocatable": {"cpu": "1", "pods": "10"},
                    "conditions": [{"type": "Ready", "status": "True"}]}}))
                .unwrap(),
            );
        }
        // Equal in every other respect; n1 comes first.
        cache.upsert_bound_pod(labelled("guarded", "n1", "800m", "db"));
        cache.upsert_bound_pod(labelled("free", "n2", "800m", "web"));
        let fw = Framework::default();
        let me = PodInfo::new(pod("me", None, "700m", 10, None));
        let node_of =
            |budgets: &[Budget]| match preempt(&fw, &me, &cache, &failures(), &[], budgets) {
                Outcome::Victims { node, victims } => (node, victims[0].name.clone()),
                other => panic!("{other:?}"),
            };
        assert_eq!(node_of(&[]), ("n1".into(), "guarded".into()));
        assert_eq!(
            node_of(&[budget("db", 0)]),
            ("n2".into(), "free".into()),
            "the budget-protected pod is spared"
        );
        // A budget with room left does not protect.
        assert_eq!(node_of(&[budget("db", 1)]), ("n1".into(), "guarded".into()));
        // On one node, the budget-protected pod is reprieved first.
        let mut one = Cache::default();
        one.upsert_node(
            serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": {
                "allocatable": {"cpu": "1", "pods": "10"},
                "conditions": [{"type": "Ready", "status": "True"}]}}))
            .unwrap(),
        );
        one.upsert_bound_pod(labelled("guarded", "n1", "400m", "db"));
        one.upsert_bound_pod(labelled("free", "n1", "400m", "web"));
        let me = PodInfo::new(pod("me", None, "500m", 10, None));
        let f: HashMap<String, Failure> =
            [("n1".to_string(), Failure::resolvable("Insufficient cpu"))].into();
        match preempt(&fw, &me, &one, &f, &[], &[budget("db", 0)]) {
            Outcome::Victims { victims, .. } => {
                let names: Vec<&str> = victims.iter().map(|v| v.name.as_str()).collect();
                assert_eq!(names, ["free"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_to_preempt_is_reported_per_node() {
        let cache = cluster();
        let fw = Framework::default();
        let me = PodInfo::new(pod("me", None, "2", 10, None));
        let mut f = failures();
        f.insert(
            "n2".into(),
            Failure::unresolvable("node(s) had untolerated taint {a: b}"),
        );
        match preempt(&fw, &me, &cache, &f, &[], &[]) {
            Outcome::NotPossible(m) => assert_eq!(
                m,
                "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
            ),
            other => panic!("{other:?}"),
        }
        let never = PodInfo::new(pod("me", None, "700m", 10, Some("Never")));
        match preempt(&fw, &never, &cache, &failures(), &[], &[]) {
            Outcome::NotPossible(m) => assert_eq!(m, NEVER),
            other => panic!("{other:?}"),
        }
    }
}
