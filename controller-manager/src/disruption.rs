//! The disruption controller: keeps each PodDisruptionBudget's status —
//! how many of its pods are expected, healthy, must stay healthy and so how
//! many may be disrupted now — which eviction and `kubectl drain` consult.
//!
//! `minAvailable` as a number counts the selected pods as expected; a
//! percentage or `maxUnavailable` needs the scale of the pods' controllers
//! (Deployment through its ReplicaSet, ReplicaSet, StatefulSet,
//! ReplicationController).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::framework::{
    Action, Change, Ctx, Informer, Kind, WorkQueue, controller_ref, key_of, pod_is_ready,
    run_workers, selector_matches, split_key,
};

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        clock: ctx.clock.clone(),
        budgets: ctx.informers.get::<PodDisruptionBudget>(),
        pods: ctx.informers.get::<Pod>(),
        deployments: ctx.informers.get::<Deployment>(),
        sets: ctx.informers.get::<ReplicaSet>(),
        stateful: ctx.informers.get::<StatefulSet>(),
        rcs: ctx.informers.get::<ReplicationController>(),
    });
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        ctl.budgets.on_change(move |ch| {
            if let Change::Applied { new, .. } = ch {
                q.add(key_of(*new));
            }
        });
    }
    fn namespace_changes<K: Kind>(i: &Informer<K>, c: &Arc<Controller>, q: &Arc<WorkQueue>) {
        let (c, q) = (c.clone(), q.clone());
        i.on_change(move |ch| {
            let ns = match ch {
                Change::Applied { new, .. } => new.meta().namespace.clone(),
                Change::Deleted(o) => o.meta().namespace.clone(),
            };
            for pdb in c.budgets.in_namespace(ns.as_deref().unwrap_or_default()) {
                q.add(key_of(pdb.as_ref()));
            }
        });
    }
    namespace_changes(&ctl.pods, &ctl, &queue);
    namespace_changes(&ctl.deployments, &ctl, &queue);
    namespace_changes(&ctl.sets, &ctl, &queue);
    namespace_changes(&ctl.stateful, &ctl, &queue);
    namespace_changes(&ctl.rcs, &ctl, &queue);
    let c = ctl.clone();
    run_workers(ctx, "disruption", queue, 2, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
    Ok(())
}

struct Controller {
    client: Client,
    clock: crate::Clock,
    budgets: Arc<Informer<PodDisruptionBudget>>,
    pods: Arc<Informer<Pod>>,
    deployments: Arc<Informer<Deployment>>,
    sets: Arc<Informer<ReplicaSet>>,
    stateful: Arc<Informer<StatefulSet>>,
    rcs: Arc<Informer<ReplicationController>>,
}

/// The numbers a budget's status reports.
#[derive(Debug, PartialEq, Eq)]
pub struct Budget {
    pub expected: i32,
    pub current_healthy: i32,
    pub desired_healthy: i32,
    pub disruptions_allowed: i32,
}

/// `value` of `total`: a number as is, a percentage scaled and rounded up.
pub fn scaled(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            Ok(((pct * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// The budget for pods of which `healthy` are ready, given the controllers'
/// total scale (`None` when some pod has no controller we can size).
pub fn compute(
    pdb: &PodDisruptionBudget,
    pods: usize,
    healthy: i32,
    scale: impl FnOnce() -> Result<i32, String>,
) -> Result<Budget, String> {
    let spec = pdb.spec.as_ref();
    let (expected, desired) = match (
        spec.and_then(|s| s.max_unavailable.as_ref()),
        spec.and_then(|s| s.min_available.as_ref()),
    ) {
        (Some(max), _) => {
            let expected = scale()?;
            let max = scaled(max, expected)?;
            (expected, (expected - max).max(0))
        }
        (None, Some(IntOrString::Int(n))) => (pods as i32, *n),
        (None, Some(min)) => {
            let expected = scale()?;
            (expected, scaled(min, expected)?)
        }
        (None, None) => (0, 0),
    };
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    Ok(Budget {
        expected,
        current_healthy: healthy,
        desired_healthy: desired,
        disruptions_allowed: allowed,
    })
}

impl Controller {
    /// The summed scale of the controllers of `pods`, each counted once.
    fn scale(&self, ns: &str, pods: &[Arc<Pod>]) -> Result<i32, String> {
        let mut owners: HashSet<String> = HashSet::new();
        // Scale per scaled object (a Deployment counts once for all its ReplicaSets).
        let mut scales: HashMap<String, i32> = HashMap::new();
        for p in pods {
            let Some(r) = controller_ref(&p.metadata) else {
                return Err(format!(
                    "found no controller ref for pod {:?}",
                    p.name_any()
                ));
            };
            if !owners.insert(r.uid.clone()) {
                continue;
            }
            let replicas = |n: Option<i32>| n.unwrap_or(1);
            let found =
                match r.kind.as_str() {
                    "ReplicaSet" => self.sets.get(Some(ns), &r.name).and_then(|rs| {
                        match controller_ref(&rs.metadata).filter(|o| o.kind == "Deployment") {
                            Some(d) => {
                                let dep = self.deployments.get(Some(ns), &d.name)?;
                                Some((d.uid.clone(), replicas(dep.spec.as_ref()?.replicas)))
                            }
                            None => Some((r.uid.clone(), replicas(rs.spec.as_ref()?.replicas))),
                        }
                    }),
                    "StatefulSet" => self
                        .stateful
                        .get(Some(ns), &r.name)
                        .and_then(|s| Some((r.uid.clone(), replicas(s.spec.as_ref()?.replicas)))),
                    "ReplicationController" => self
                        .rcs
                        .get(Some(ns), &r.name)
                        .and_then(|s| Some((r.uid.clone(), replicas(s.spec.as_ref()?.replicas)))),
                    _ => None,
                };
            let Some((uid, n)) = found else {
                return Err(format!("found no controllers for pod {:?}", p.name_any()));
            };
            scales.insert(uid, n);
        }
        Ok(scales.values().sum())
    }

    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(pdb) = self.budgets.get(Some(ns), name) else {
            return Ok(Action::Done);
        };
        // policy/v1: an empty selector selects every pod, a missing one none.
        let pods: Vec<Arc<Pod>> = match pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            Some(sel) => self
                .pods
                .in_namespace(ns)
                .into_iter()
                .filter(|p| selector_matches(sel, p.metadata.labels.as_ref()))
                .collect(),
            None => Vec::new(),
        };
        let healthy = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_is_ready(p))
            .count() as i32;
        let result = compute(&pdb, pods.len(), healthy, || self.scale(ns, &pods));
        let (budget, reason, message) = match result {
            Ok(b) => {
                let reason = if b.disruptions_allowed > 0 {
                    "SufficientPods"
                } else {
                    "InsufficientPods"
                };
                (b, reason, String::new())
            }
            Err(msg) => (
                Budget {
                    expected: 0,
                    current_healthy: healthy,
                    desired_healthy: 0,
                    disruptions_allowed: 0,
                },
                "SyncFailed",
                msg,
            ),
        };
        let status_flag = if budget.disruptions_allowed > 0 {
            "True"
        } else {
            "False"
        };
        let old = pdb.status.clone().unwrap_or_default();
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let prev = conditions.iter().find(|c| c.type_ == "DisruptionAllowed");
        let unchanged_cond = prev
            .is_some_and(|c| c.status == status_flag && c.reason == reason && c.message == message);
        if !unchanged_cond {
            let since = match prev {
                Some(c) if c.status == status_flag => c.last_transition_time.clone(),
                _ => Time(self.clock.now()),
            };
            conditions.retain(|c| c.type_ != "DisruptionAllowed");
            conditions.push(Condition {
                type_: "DisruptionAllowed".into(),
                status: status_flag.into(),
                reason: reason.into(),
                message: message.clone(),
                last_transition_time: since,
                observed_generation: pdb.metadata.generation,
            });
        }
        if unchanged_cond
            && old.expected_pods == budget.expected
            && old.current_healthy == budget.current_healthy
            && old.desired_healthy == budget.desired_healthy
            && old.disruptions_allowed == budget.disruptions_allowed
            && old.observed_generation == pdb.metadata.generation
        {
            return Ok(Action::Done);
        }
        let patch = serde_json::json!({"status": {
            "expectedPods": budget.expected,
            "currentHealthy": budget.current_healthy,
            "desiredHealthy": budget.desired_healthy,
            "disruptionsAllowed": budget.disruptions_allowed,
            "observedGeneration": pdb.metadata.generation,
            "conditions": conditions,
        }});
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), ns);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Action::Done),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(spec: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "b"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn budgets_for_each_form() {
        // minAvailable as a number: the pods present are expected.
        let b = compute(&pdb(serde_json::json!({"minAvailable": 2})), 3, 3, || {
            Err("unused".into())
        });
        assert_eq!(
            b,
            Ok(Budget {
                expected: 3,
                current_healthy: 3,
                desired_healthy: 2,
                disruptions_allowed: 1
            })
        );
        // Percentages of the controllers' scale round up.
        let b = compute(
            &pdb(serde_json::json!({"minAvailable": "50%"})),
            3,
            3,
            || Ok(5),
        )
        .unwrap();
        assert_eq!(
            (b.expected, b.desired_healthy, b.disruptions_allowed),
            (5, 3, 0)
        );
        let b = compute(&pdb(serde_json::json!({"maxUnavailable": 1})), 4, 4, || {
            Ok(4)
        })
        .unwrap();
        assert_eq!((b.desired_healthy, b.disruptions_allowed), (3, 1));
        let b = compute(
            &pdb(serde_json::json!({"maxUnavailable": "30%"})),
            10,
            8,
            || Ok(10),
        )
        .unwrap();
        assert_eq!((b.desired_healthy, b.disruptions_allowed), (7, 1));
        // Nothing expected: nothing may be disrupted.
        let b = compute(&pdb(serde_json::json!({"maxUnavailable": 1})), 0, 0, || {
            Ok(0)
        })
        .unwrap();
        assert_eq!(b.disruptions_allowed, 0);
        assert!(
            compute(
                &pdb(serde_json::json!({"maxUnavailable": 1})),
                1,
                1,
                || Err("no controller".into())
            )
            .is_err()
        );
        assert!(scaled(&IntOrString::String("x%".into()), 3).is_err());
    }
}
