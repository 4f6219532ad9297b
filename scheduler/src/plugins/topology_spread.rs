//! Pod topology spread: `DoNotSchedule` constraints filter on maxSkew,
//! `ScheduleAnyway` constraints prefer the least crowded domains.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::framework::{CycleState, Failure, FilterPlugin, FilterResult, MAX_SCORE, ScorePlugin};
use crate::plugins::node_affinity::required_matches;
use crate::selectors::label_selector_matches;

pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

#[derive(Debug)]
struct Constraint {
    max_skew: i64,
    key: String,
    /// Matching pods per topology value, over the eligible nodes.
    counts: HashMap<String, i64>,
    /// Whether the incoming pod matches its own selector (it adds one once placed).
    self_match: i64,
}

impl Constraint {
    fn min(&self) -> i64 {
        self.counts.values().copied().min().unwrap_or(0)
    }
}

#[derive(Debug, Default)]
pub struct State {
    hard: Vec<Constraint>,
    soft: Vec<Constraint>,
}

impl State {
    pub fn new(pod: &PodInfo, spec: &PodSpec, cache: &Cache, excluded: &HashSet<String>) -> Self {
        let mut st = State::default();
        let Some(list) = spec.topology_spread_constraints.as_ref() else {
            return st;
        };
        let keys: Vec<&str> = list.iter().map(|c| c.topology_key.as_str()).collect();
        let empty = LabelSelector::default();
        for c in list {
            let selector = c.label_selector.as_ref().unwrap_or(&empty);
            let mut counts: HashMap<String, i64> = HashMap::new();
            for node in cache.ready_nodes() {
                // Only nodes the pod could go to, and that carry every key, form domains.
                if !keys.iter().all(|k| node.label(k).is_some()) || !required_matches(spec, node) {
                    continue;
                }
                let Some(value) = node.label(&c.topology_key) else {
                    continue;
                };
                let n = node
                    .pods
                    .values()
                    .filter(|p| {
                        p.namespace == pod.namespace
                            && p.key != pod.key
                            && !excluded.contains(&p.key)
                            && p.pod.metadata.deletion_timestamp.is_none()
                            && label_selector_matches(selector, &p.labels)
                    })
                    .count() as i64;
                *counts.entry(value.to_string()).or_default() += n;
            }
            let constraint = Constraint {
                max_skew: i64::from(c.max_skew.max(1)),
                key: c.topology_key.clone(),
                counts,
                self_match: i64::from(label_selector_matches(selector, &pod.labels)),
            };
            if c.when_unsatisfiable == "DoNotSchedule" {
                st.hard.push(constraint);
            } else {
                st.soft.push(constraint);
            }
        }
        st
    }
}

pub struct TopologySpread;

impl FilterPlugin for TopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn filter(&self, st: &CycleState, node: &NodeInfo) -> FilterResult {
        for c in &st.spread.hard {
            let Some(value) = node.label(&c.key) else {
                return Err(Failure::unresolvable(REASON_MISSING_LABEL));
            };
            let count = c.counts.get(value).copied().unwrap_or(0);
            if count + c.self_match - c.min() > c.max_skew {
                return Err(Failure::resolvable(REASON));
            }
        }
        Ok(())
    }
}

impl ScorePlugin for TopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn weight(&self) -> i64 {
        2
    }

    fn score(&self, st: &CycleState, node: &NodeInfo, _cache: &Cache) -> i64 {
        let mut total = 0;
        for c in &st.spread.soft {
            match node.label(&c.key) {
                Some(v) => total += c.counts.get(v).copied().unwrap_or(0),
                // A node outside every domain is the least preferred.
                None => return -1,
            }
        }
        total
    }

    fn normalize(&self, scores: &mut [i64]) {
        let valid = scores.iter().copied().filter(|s| *s >= 0);
        let (min, max) = valid.fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s), hi.max(s)));
        for s in scores.iter_mut() {
            *s = if *s < 0 {
                0
            } else if max == min {
                MAX_SCORE
            } else {
                MAX_SCORE * (max - *s) / (max - min)
            };
        }
    }
}
