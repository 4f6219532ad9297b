//! The plugin framework: per-cycle state, filter and score plugin traits, the
//! default plugin lists, and the per-node evaluation that uses them.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{NodeSelector, PodSpec, Toleration};

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::plugins::{
    image_locality, inter_pod_affinity, node_affinity, node_ports, node_ready, node_resources,
    node_unschedulable, taint_toleration, topology_spread, volume_binding,
};

/// Why a node was rejected. `unresolvable` failures cannot be fixed by evicting pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reasons: Vec<String>,
    pub unresolvable: bool,
}

impl Failure {
    pub fn resolvable(reason: impl Into<String>) -> Self {
        Self {
            reasons: vec![reason.into()],
            unresolvable: false,
        }
    }
    pub fn unresolvable(reason: impl Into<String>) -> Self {
        Self {
            reasons: vec![reason.into()],
            unresolvable: true,
        }
    }
}

pub type FilterResult = Result<(), Failure>;

/// Everything computed once per pod per cycle (upstream's PreFilter/PreScore state).
pub struct CycleState<'a> {
    pub pod: &'a PodInfo,
    pub spec: &'a PodSpec,
    pub tolerations: &'a [Toleration],
    pub spread: topology_spread::State,
    pub interpod: inter_pod_affinity::State,
    /// Node affinities of the bound PersistentVolumes the pod mounts.
    pub volume_affinity: Vec<NodeSelector>,
}

static EMPTY_SPEC: std::sync::LazyLock<PodSpec> = std::sync::LazyLock::new(PodSpec::default);

impl<'a> CycleState<'a> {
    /// `excluded` are pods treated as gone (preemption victims under evaluation).
    pub fn new(
        pod: &'a PodInfo,
        cache: &Cache,
        excluded: &HashSet<String>,
        volume_affinity: Vec<NodeSelector>,
    ) -> Self {
        let spec = pod.pod.spec.as_ref().unwrap_or(&EMPTY_SPEC);
        let tolerations = spec.tolerations.as_deref().unwrap_or_default();
        Self {
            pod,
            spec,
            tolerations,
            spread: topology_spread::State::new(pod, spec, cache, excluded),
            interpod: inter_pod_affinity::State::new(pod, spec, cache, excluded),
            volume_affinity,
        }
    }
}

pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn filter(&self, st: &CycleState, node: &NodeInfo) -> FilterResult;
}

pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn weight(&self) -> i64;
    /// Raw score of one feasible node.
    fn score(&self, st: &CycleState, node: &NodeInfo, cache: &Cache) -> i64;
    /// Maps raw scores onto 0..=100 across the feasible nodes.
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// Upstream's highest node score.
pub const MAX_SCORE: i64 = 100;

/// Scales scores onto 0..=MAX_SCORE by the maximum, optionally reversed.
pub fn normalize_by_max(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for s in scores.iter_mut() {
        let v = if max == 0 { 0 } else { *s * MAX_SCORE / max };
        *s = if reverse { MAX_SCORE - v } else { v };
    }
    if max == 0 && reverse {
        scores.iter_mut().for_each(|s| *s = MAX_SCORE);
    }
}

pub struct Framework {
    pub filters: Vec<Box<dyn FilterPlugin>>,
    pub scores: Vec<Box<dyn ScorePlugin>>,
}

impl Default for Framework {
    /// Upstream's default profile, in upstream's order and weights.
    fn default() -> Self {
        Self {
            filters: vec![
                Box::new(node_ready::NodeReady),
                Box::new(node_unschedulable::NodeUnschedulable),
                Box::new(taint_toleration::TaintToleration),
                Box::new(node_affinity::NodeAffinity),
                Box::new(node_ports::NodePorts),
                Box::new(node_resources::Fit),
                Box::new(volume_binding::VolumeNodeAffinity),
                Box::new(topology_spread::TopologySpread),
                Box::new(inter_pod_affinity::InterPodAffinity),
            ],
            scores: vec![
                Box::new(node_resources::LeastAllocated),
                Box::new(node_resources::BalancedAllocation),
                Box::new(image_locality::ImageLocality),
                Box::new(inter_pod_affinity::InterPodAffinity),
                Box::new(node_affinity::NodeAffinity),
                Box::new(topology_spread::TopologySpread),
                Box::new(taint_toleration::TaintToleration),
            ],
        }
    }
}

impl Framework {
    /// Runs the filters in order; the first failing plugin decides (as upstream).
    pub fn filter(&self, st: &CycleState, node: &NodeInfo) -> FilterResult {
        for f in &self.filters {
            f.filter(st, node)?;
        }
        Ok(())
    }

    /// Weighted, normalized total per feasible node (same order as `nodes`).
    pub fn score(&self, st: &CycleState, nodes: &[&NodeInfo], cache: &Cache) -> Vec<i64> {
        let mut total = vec![0i64; nodes.len()];
        let mut raw = vec![0i64; nodes.len()];
        for p in &self.scores {
            for (i, n) in nodes.iter().enumerate() {
                raw[i] = p.score(st, n, cache);
            }
            p.normalize(&mut raw);
            for (t, r) in total.iter_mut().zip(&raw) {
                *t += (*r).clamp(0, MAX_SCORE) * p.weight();
            }
        }
        total
    }
}

/// Counts of failure reasons across nodes, rendered the upstream way:
/// `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) ....`
#[derive(Debug, Default, Clone)]
pub struct Diagnosis {
    pub reasons: BTreeMap<String, usize>,
    pub nodes: usize,
}

impl Diagnosis {
    pub fn add(&mut self, f: &Failure) {
        for r in &f.reasons {
            *self.reasons.entry(r.clone()).or_default() += 1;
        }
    }

    pub fn histogram(&self) -> String {
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        parts.join(", ")
    }

    pub fn message(&self, preemption: Option<&str>) -> String {
        let mut m = format!("0/{} nodes are available", self.nodes);
        if self.reasons.is_empty() {
            m.push('.');
        } else {
            m.push_str(&format!(": {}.", self.histogram()));
        }
        if let Some(p) = preemption {
            m.push(' ');
            m.push_str(p);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_matches_upstream_shape() {
        let mut d = Diagnosis {
            nodes: 3,
            ..Default::default()
        };
        d.add(&Failure::resolvable("Insufficient cpu"));
        d.add(&Failure::unresolvable(
            "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",
        ));
        d.add(&Failure::unresolvable(
            "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",
        ));
        assert_eq!(
            d.message(Some(
                "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
            )),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn normalization() {
        let mut s = vec![0, 5, 10];
        normalize_by_max(&mut s, false);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![0, 5, 10];
        normalize_by_max(&mut s, true);
        assert_eq!(s, vec![100, 50, 0]);
        let mut s = vec![0, 0];
        normalize_by_max(&mut s, true);
        assert_eq!(s, vec![100, 100]);
    }
}
