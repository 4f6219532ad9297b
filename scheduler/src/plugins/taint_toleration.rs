//! Taints and tolerations: NoSchedule/NoExecute taints filter, PreferNoSchedule
//! taints only lower the score.

use crate::cache::{Cache, NodeInfo};
use crate::framework::{
    CycleState, Failure, FilterPlugin, FilterResult, ScorePlugin, normalize_by_max,
};
use crate::selectors::tolerates;

pub struct TaintToleration;

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, st: &CycleState, node: &NodeInfo) -> FilterResult {
        let taints = node
            .node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default();
        let untolerated = taints.iter().find(|t| {
            (t.effect == "NoSchedule" || t.effect == "NoExecute")
                && !st.tolerations.iter().any(|tol| tolerates(tol, t))
        });
        match untolerated {
            None => Ok(()),
            Some(t) => Err(Failure::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            ))),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn weight(&self) -> i64 {
        3
    }

    fn score(&self, st: &CycleState, node: &NodeInfo, _cache: &Cache) -> i64 {
        let taints = node
            .node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default();
        // Only tolerations that can apply to PreferNoSchedule count here.
        taints
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .filter(|t| {
                !st.tolerations.iter().any(|tol| {
                    matches!(
                        tol.effect.as_deref(),
                        None | Some("") | Some("PreferNoSchedule")
                    ) && tolerates(tol, t)
                })
            })
            .count() as i64
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_by_max(scores, true);
    }
}
