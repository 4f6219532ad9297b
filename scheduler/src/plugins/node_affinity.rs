//! `nodeSelector` and node affinity: required terms filter, preferred terms score.

use k8s_openapi::api::core::v1::PodSpec;

use crate::cache::{Cache, NodeInfo};
use crate::framework::{
    CycleState, Failure, FilterPlugin, FilterResult, ScorePlugin, normalize_by_max,
};
use crate::selectors::{node_selector_term_matches, node_selector_terms_match};

pub struct NodeAffinity;

pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// Whether the pod's nodeSelector and required node affinity admit the node.
pub fn required_matches(spec: &PodSpec, node: &NodeInfo) -> bool {
    let Some(n) = node.node.as_ref() else {
        return false;
    };
    if let Some(sel) = spec.node_selector.as_ref() {
        let labels = n.metadata.labels.as_ref();
        if !sel
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(r) => node_selector_terms_match(&r.node_selector_terms, n),
        None => true,
    }
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, st: &CycleState, node: &NodeInfo) -> FilterResult {
        if required_matches(st.spec, node) {
            Ok(())
        } else {
            Err(Failure::unresolvable(REASON))
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn weight(&self) -> i64 {
        2
    }

    fn score(&self, st: &CycleState, node: &NodeInfo, _cache: &Cache) -> i64 {
        let Some(n) = node.node.as_ref() else {
            return 0;
        };
        st.spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|t| t.weight != 0 && node_selector_term_matches(&t.preference, n))
            .map(|t| i64::from(t.weight))
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_by_max(scores, false);
    }
}
