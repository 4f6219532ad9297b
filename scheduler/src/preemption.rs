//! Preemption (upstream's DefaultPreemption PostFilter): when a pod fits
//! nowhere, find the node where evicting the fewest, lowest-priority pods
//! makes it fit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::NodeSelector;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::framework::{CycleState, Diagnosis, Failure, Framework};

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

/// Chooses victims per upstream: all lower-priority pods must make room, then as
/// many as possible are reprieved (highest priority first).
fn victims_on(
    framework: &Framework,
    pod: &PodInfo,
    cache: &Cache,
    node: &NodeInfo,
    volume_affinity: &[NodeSelector],
) -> Option<Vec<Arc<PodInfo>>> {
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
    let mut victims = Vec::new();
    for p in lower {
        excluded.remove(&p.key);
        if !fits_without(framework, pod, cache, node, &excluded, volume_affinity) {
            excluded.insert(p.key.clone());
            victims.push(p);
        }
    }
    Some(victims)
}

/// A node where preemption works; lower `rank` is better (upstream's order:
/// lowest highest-victim priority, then lowest priority sum, then fewest victims).
struct Candidate {
    rank: (i32, i64, usize),
    node: String,
    victims: Vec<Arc<PodInfo>>,
}

pub fn preempt(
    framework: &Framework,
    pod: &PodInfo,
    cache: &Cache,
    failures: &HashMap<String, Failure>,
    volume_affinity: &[NodeSelector],
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
        match victims_on(framework, pod, cache, node, volume_affinity) {
            Some(v) if !v.is_empty() => {
                let top = v.iter().map(|p| p.priority).max().unwrap_or(i32::MIN);
                let sum: i64 = v.iter().map(|p| i64::from(p.priority)).sum();
                let cand = Candidate {
                    rank: (top, sum, v.len()),
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
        match preempt(&fw, &me, &cache, &failures(), &[]) {
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
        match preempt(&fw, &me, &cache, &f, &[]) {
            Outcome::NotPossible(m) => assert_eq!(
                m,
                "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
            ),
            other => panic!("{other:?}"),
        }
        let never = PodInfo::new(pod("me", None, "700m", 10, Some("Never")));
        match preempt(&fw, &never, &cache, &failures(), &[]) {
            Outcome::NotPossible(m) => assert_eq!(m, NEVER),
            other => panic!("{other:?}"),
        }
    }
}
