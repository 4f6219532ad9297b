//! Inter-pod affinity and anti-affinity: required terms of the incoming pod,
//! required anti-affinity of pods already placed (symmetry), and preferred
//! terms as a score.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, PodSpec};

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::framework::{CycleState, Failure, FilterPlugin, FilterResult, MAX_SCORE, ScorePlugin};
use crate::selectors::{Labels, label_selector_matches};

pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

/// Whether `term` (declared by a pod in `owner_ns`) selects a pod with these labels in `ns`.
fn term_selects(term: &PodAffinityTerm, owner_ns: &str, ns: &str, labels: &Labels) -> bool {
    let listed = term.namespaces.as_deref().unwrap_or_default();
    let ns_ok = match (&term.namespace_selector, listed.is_empty()) {
        // An empty namespaceSelector means every namespace.
        (Some(sel), _)
            if sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty()) =>
        {
            true
        }
        (_, true) => ns == owner_ns,
        (_, false) => listed.iter().any(|n| n == ns),
    };
    ns_ok
        && term
            .label_selector
            .as_ref()
            .is_some_and(|s| label_selector_matches(s, labels))
}

fn required_terms(spec: &PodSpec, anti: bool) -> &[PodAffinityTerm] {
    let a = spec.affinity.as_ref();
    let terms = if anti {
        a.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
    } else {
        a.and_then(|a| a.pod_affinity.as_ref()).and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
    };
    terms.unwrap_or_default()
}

fn pod_spec(p: &Pod) -> Option<&PodSpec> {
    p.spec.as_ref()
}

#[derive(Debug, Default)]
pub struct State {
    /// Per required affinity term: topology values holding a matching pod.
    affinity: Vec<(String, HashSet<String>)>,
    /// The pod matches all of its own affinity terms (so the first replica may land anywhere).
    self_affinity: bool,
    /// Per required anti-affinity term: topology values holding a matching pod.
    anti: Vec<(String, HashSet<String>)>,
    /// (topologyKey, value) pairs closed by placed pods' anti-affinity.
    existing_anti: HashSet<(String, String)>,
    /// Preferred (anti-)affinity weight per (topologyKey, value).
    preferred: HashMap<(String, String), i64>,
}

impl State {
    pub fn new(pod: &PodInfo, spec: &PodSpec, cache: &Cache, excluded: &HashSet<String>) -> Self {
        let mut st = State::default();
        let ns = pod.namespace.as_str();
        let aff = required_terms(spec, false);
        let anti = required_terms(spec, true);
        st.affinity = aff
            .iter()
            .map(|t| (t.topology_key.clone(), HashSet::new()))
            .collect();
        st.anti = anti
            .iter()
            .map(|t| (t.topology_key.clone(), HashSet::new()))
            .collect();
        st.self_affinity = aff.iter().all(|t| term_selects(t, ns, ns, &pod.labels));
        let a = spec.affinity.as_ref();
        let pref_aff = a
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default();
        let pref_anti = a
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default();
        let has_own_terms =
            !aff.is_empty() || !anti.is_empty() || !pref_aff.is_empty() || !pref_anti.is_empty();

        if !has_own_terms && cache.nodes.values().all(|n| n.anti_affinity_pods == 0) {
            return st;
        }
        for (node, other) in cache.all_pods() {
            if other.key == pod.key || excluded.contains(&other.key) || node.node.is_none() {
                continue;
            }
            let Some(labels) = node.labels() else {
                continue;
            };
            // Symmetry: placed pods' required anti-affinity against the incoming pod.
            if other.has_required_anti_affinity
                && let Some(ospec) = pod_spec(&other.pod)
            {
                for t in required_terms(ospec, true) {
                    if term_selects(t, &other.namespace, ns, &pod.labels)
                        && let Some(v) = labels.get(&t.topology_key)
                    {
                        st.existing_anti.insert((t.topology_key.clone(), v.clone()));
                    }
                }
            }
            if !has_own_terms {
                continue;
            }
            let matches =
                |t: &PodAffinityTerm| term_selects(t, ns, &other.namespace, &other.labels);
            for (i, t) in aff.iter().enumerate() {
                if matches(t)
                    && let Some(v) = labels.get(&t.topology_key)
                {
                    st.affinity[i].1.insert(v.clone());
                }
            }
            for (i, t) in anti.iter().enumerate() {
                if matches(t)
                    && let Some(v) = labels.get(&t.topology_key)
                {
                    st.anti[i].1.insert(v.clone());
                }
            }
            for (w, sign) in pref_aff
                .iter()
                .map(|w| (w, 1))
                .chain(pref_anti.iter().map(|w| (w, -1)))
            {
                let t = &w.pod_affinity_term;
                if matches(t)
                    && let Some(v) = labels.get(&t.topology_key)
                {
                    *st.preferred
                        .entry((t.topology_key.clone(), v.clone()))
                        .or_default() += sign * i64::from(w.weight);
                }
            }
        }
        st
    }
}

pub struct InterPodAffinity;

impl FilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn filter(&self, st: &CycleState, node: &NodeInfo) -> FilterResult {
        let s = &st.interpod;
        let labels = node.labels();
        let value = |k: &str| labels.and_then(|l| l.get(k));
        if !s.affinity.is_empty() {
            let none_anywhere = s.affinity.iter().all(|(_, v)| v.is_empty());
            let all_match = s
                .affinity
                .iter()
                .all(|(key, values)| value(key).is_some_and(|v| values.contains(v)));
            // The first pod of a group that selects itself may go anywhere with the keys.
            let first_of_group = none_anywhere
                && s.self_affinity
                && s.affinity.iter().all(|(key, _)| value(key).is_some());
            if !all_match && !first_of_group {
                return Err(Failure::unresolvable(REASON_AFFINITY));
            }
        }
        for (key, values) in &s.anti {
            if value(key).is_some_and(|v| values.contains(v)) {
                return Err(Failure::resolvable(REASON_ANTI_AFFINITY));
            }
        }
        if !s.existing_anti.is_empty()
            && labels.is_some_and(|l| {
                l.iter()
                    .any(|(k, v)| s.existing_anti.contains(&(k.clone(), v.clone())))
            })
        {
            return Err(Failure::resolvable(REASON_EXISTING_ANTI_AFFINITY));
        }
        Ok(())
    }
}

impl ScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn weight(&self) -> i64 {
        2
    }

    fn score(&self, st: &CycleState, node: &NodeInfo, _cache: &Cache) -> i64 {
        if st.interpod.preferred.is_empty() {
            return 0;
        }
        let Some(labels) = node.labels() else {
            return 0;
        };
        labels
            .iter()
            .filter_map(|(k, v)| st.interpod.preferred.get(&(k.clone(), v.clone())))
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        let min = scores.iter().copied().min().unwrap_or(0);
        let max = scores.iter().copied().max().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if max == min {
                0
            } else {
                MAX_SCORE * (*s - min) / (max - min)
            };
        }
    }
}
