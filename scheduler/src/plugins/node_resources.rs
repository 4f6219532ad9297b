//! Node resources: the fit filter (requests vs allocatable minus what bound
//! pods request) and the least-allocated / balanced-allocation scores.

use crate::cache::{Cache, NodeInfo};
use crate::framework::{CycleState, Failure, FilterPlugin, FilterResult, MAX_SCORE, ScorePlugin};
use crate::resources::Resources;

pub struct Fit;

/// Reasons the pod does not fit, in upstream's wording; empty when it fits.
pub fn insufficient(want: &Resources, node: &NodeInfo) -> Vec<String> {
    let alloc = &node.allocatable;
    let used = &node.requested;
    let mut out = Vec::new();
    if used.pods + 1 > alloc.pods {
        out.push("Too many pods".to_string());
    }
    if want.milli_cpu > 0 && want.milli_cpu > alloc.milli_cpu - used.milli_cpu {
        out.push("Insufficient cpu".into());
    }
    if want.memory > 0 && want.memory > alloc.memory - used.memory {
        out.push("Insufficient memory".into());
    }
    if want.ephemeral_storage > 0
        && want.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage
    {
        out.push("Insufficient ephemeral-storage".into());
    }
    for (name, amount) in &want.scalar {
        if *amount == 0 {
            continue;
        }
        let free = alloc.scalar.get(name).copied().unwrap_or(0)
            - used.scalar.get(name).copied().unwrap_or(0);
        if *amount > free {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

impl FilterPlugin for Fit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, st: &CycleState, node: &NodeInfo) -> FilterResult {
        let reserved: Vec<&Resources> = node
            .nominated
            .iter()
            .filter(|(k, prio, _)| *k != st.pod.key && *prio >= st.pod.priority)
            .map(|(_, _, r)| r)
            .collect();
        let reasons = if reserved.is_empty() {
            insufficient(&st.pod.requests, node)
        } else {
            // Room promised to an equal or higher priority preemptor is not free.
            let mut want = st.pod.requests.clone();
            for r in reserved {
                want.add(r);
            }
            let mut with = node.clone();
            with.requested.pods += want.pods - 1;
            want.pods = 1;
            insufficient(&want, &with)
        };
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Failure {
                reasons,
                unresolvable: false,
            })
        }
    }
}

/// (requested incl. this pod, allocatable) for cpu and memory, with non-zero defaults.
fn usage(st: &CycleState, node: &NodeInfo) -> [(i64, i64); 2] {
    [
        (
            node.nonzero_requested.0 + st.pod.nonzero.0,
            node.allocatable.milli_cpu,
        ),
        (
            node.nonzero_requested.1 + st.pod.nonzero.1,
            node.allocatable.memory,
        ),
    ]
}

pub struct LeastAllocated;

impl ScorePlugin for LeastAllocated {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn weight(&self) -> i64 {
        1
    }

    fn score(&self, st: &CycleState, node: &NodeInfo, _cache: &Cache) -> i64 {
        let parts = usage(st, node);
        let sum: i64 = parts
            .iter()
            .map(|(req, cap)| {
                if *cap <= 0 || req > cap {
                    0
                } else {
                    (cap - req) * MAX_SCORE / cap
                }
            })
            .sum();
        sum / parts.len() as i64
    }
}

pub struct BalancedAllocation;

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn weight(&self) -> i64 {
        1
    }

    fn score(&self, st: &CycleState, node: &NodeInfo, _cache: &Cache) -> i64 {
        let fractions: Vec<f64> = usage(st, node)
            .iter()
            .map(|(req, cap)| {
                if *cap <= 0 {
                    1.0
                } else {
                    (*req as f64 / *cap as f64).min(1.0)
                }
            })
            .collect();
        // With two resources the standard deviation is half their difference.
        let std = (fractions[0] - fractions[1]).abs() / 2.0;
        ((1.0 - std) * MAX_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cpu: i64, mem: i64, pods: i64, used_cpu: i64, used_pods: i64) -> NodeInfo {
        NodeInfo {
            allocatable: Resources {
                milli_cpu: cpu,
                memory: mem,
                pods,
                ..Default::default()
            },
            requested: Resources {
                milli_cpu: used_cpu,
                pods: used_pods,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn fit_reasons() {
        let want = Resources {
            milli_cpu: 600,
            memory: 10,
            pods: 1,
            scalar: [("example.com/gpu".to_string(), 1)].into(),
            ..Default::default()
        };
        assert_eq!(
            insufficient(&want, &node(1000, 100, 10, 500, 1)),
            vec!["Insufficient cpu", "Insufficient example.com/gpu"]
        );
        assert_eq!(
            insufficient(&want, &node(1000, 5, 1, 0, 1)),
            vec![
                "Too many pods",
                "Insufficient memory",
                "Insufficient example.com/gpu"
            ]
        );
        let small = Resources {
            milli_cpu: 400,
            pods: 1,
            ..Default::default()
        };
        assert!(insufficient(&small, &node(1000, 100, 10, 500, 1)).is_empty());
    }
}
