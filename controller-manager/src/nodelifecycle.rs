//! Node lifecycle: a node whose Lease in `kube-node-lease` (or, without a
//! Lease, its Ready heartbeat) is older than `--node-monitor-grace-period`
//! gets Ready=Unknown and the `node.kubernetes.io/unreachable:NoExecute`
//! taint; a node reporting Ready=False gets `not-ready:NoExecute`. Pods on
//! NoExecute-tainted nodes are evicted at once unless they tolerate the
//! taint, or after their `tolerationSeconds` (300 s assumed for the
//! not-ready/unreachable taints when the pod has no toleration for them,
//! as the apiserver's DefaultTolerationSeconds admission would add).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::framework::{Action, Change, Ctx, Events, Informer, WorkQueue, run_workers};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        events: ctx.events.clone(),
        clock: ctx.clock.clone(),
        nodes: ctx.informers.get::<Node>(),
        leases: ctx.informers.get::<Lease>(),
        pods: ctx.informers.get::<Pod>(),
        grace: ctx.config.node_monitor_grace_period,
        default_toleration: ctx.config.default_unreachable_toleration_seconds,
    });
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        ctl.nodes.on_change(move |ch| {
            if let Change::Applied { new, .. } = ch {
                q.add(new.name_any());
            }
        });
    }
    {
        let q = queue.clone();
        ctl.pods.on_change(move |ch| {
            if let Change::Applied { new, old: None } = ch
                && let Some(n) = new.spec.as_ref().and_then(|s| s.node_name.clone())
            {
                q.add(n);
            }
        });
    }
    let c = ctl.clone();
    // Each node is re-checked from the caches every monitor period.
    let period = ctx.config.node_monitor_period;
    run_workers(ctx, "nodelifecycle", queue, 2, move |name| {
        let c = c.clone();
        async move {
            c.sync(&name).await?;
            Ok(Action::RequeueAfter(period))
        }
    });
    Ok(())
}

struct Controller {
    client: Client,
    events: Events,
    clock: crate::Clock,
    nodes: Arc<Informer<Node>>,
    leases: Arc<Informer<Lease>>,
    pods: Arc<Informer<Pod>>,
    grace: Duration,
    default_toleration: i64,
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    match t.operator.as_deref() {
        Some("Exists") => t
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// When a pod on a node with `taint` must go: None = never, Some(secs after the taint).
pub fn eviction_delay(pod: &Pod, taint: &Taint, default_secs: i64) -> Option<i64> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
    if matching.is_empty() {
        if taint.key == UNREACHABLE || taint.key == NOT_READY {
            return Some(default_secs);
        }
        return Some(0);
    }
    // The shortest bounded toleration wins; any unbounded one keeps it forever.
    if matching.iter().any(|t| t.toleration_seconds.is_none()) {
        return None;
    }
    matching
        .iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map(|s| s.max(0))
}

impl Controller {
    fn heartbeat(&self, node: &Node) -> Option<Timestamp> {
        let name = node.name_any();
        let lease = self
            .leases
            .get(Some("kube-node-lease"), &name)
            .and_then(|l| {
                l.spec
                    .as_ref()
                    .and_then(|s| s.renew_time.as_ref())
                    .map(|t| t.0)
            });
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0);
        match (lease, ready) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a
                .or(b)
                .or(node.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        }
    }

    async fn sync(&self, name: &str) -> Result<(), Error> {
        let Some(node) = self.nodes.get(None, name) else {
            return Ok(());
        };
        let now = self.clock.now();
        let api: Api<Node> = Api::all(self.client.clone());
        let stale = self
            .heartbeat(&node)
            .is_none_or(|t| now.as_second() - t.as_second() > self.grace.as_secs() as i64);
        let conds = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let ready = conds
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone());
        if stale && ready.as_deref() != Some("Unknown") {
            tracing::info!(
                node = name,
                "node stopped renewing its lease; marking Ready=Unknown"
            );
            let mut new_conds: Vec<NodeCondition> = conds.clone();
            for c in new_conds.iter_mut() {
                // Everything the kubelet reports is now unknown.
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
            }
            if !new_conds.iter().any(|c| c.type_ == "Ready") {
                new_conds.push(NodeCondition {
                    type_: "Ready".into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_transition_time: Some(Time(now)),
                    ..Default::default()
                });
            }
            let patch = serde_json::json!({"status": {"conditions": new_conds}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            self.events.normal(
                node.as_ref(),
                "NodeNotReady",
                format!("Node {name} status is now: NodeNotReady"),
            );
        }
        let want = if stale {
            Some(UNREACHABLE)
        } else if ready.as_deref() == Some("False") {
            Some(NOT_READY)
        } else {
            None
        };
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let mut new_taints: Vec<Taint> = taints
            .iter()
            .filter(|t| {
                !(t.effect == "NoExecute"
                    && (t.key == UNREACHABLE || t.key == NOT_READY)
                    && Some(t.key.as_str()) != want)
            })
            .cloned()
            .collect();
        if let Some(key) = want
            && !new_taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoExecute")
        {
            new_taints.push(Taint {
                key: key.into(),
                effect: "NoExecute".into(),
                time_added: Some(Time(now)),
                value: None,
            });
        }
        if new_taints != taints {
            let patch = serde_json::json!({"spec": {"taints": new_taints}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        if stale {
            self.mark_pods_not_ready(name, now).await?;
        }
        self.evict(name, &new_taints, now).await
    }

    /// A node that stopped reporting cannot vouch for its pods: they turn
    /// Ready=False at once (upstream's MarkPodsNotReady), so Services stop
    /// sending them traffic long before the eviction.
    async fn mark_pods_not_ready(&self, node: &str, now: Timestamp) -> Result<(), Error> {
        let pods = self.pods.store.state_filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node) && is_ready(p)
        });
        for p in pods {
            let ns = p.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let patch = serde_json::json!({"status": {"conditions": [{
                "type": "Ready",
                "status": "False",
                "lastTransitionTime": Time(now),
            }]}});
            match api
                .patch_status(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %format!("{ns}/{}", p.name_any()), node, "marked not ready: its node is unreachable")
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn evict(&self, node: &str, taints: &[Taint], now: Timestamp) -> Result<(), Error> {
        let no_exec: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
        if no_exec.is_empty() {
            return Ok(());
        }
        let pods = self.pods.store.state_filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                && p.metadata.deletion_timestamp.is_none()
        });
        for p in pods {
            let due = no_exec.iter().filter_map(|t| {
                let delay = eviction_delay(&p, t, self.default_toleration)?;
                let added = t
                    .time_added
                    .as_ref()
                    .map_or(now.as_second(), |x| x.0.as_second());
                Some(added + delay)
            });
            let Some(due) = due.min() else { continue };
            if due > now.as_second() {
                continue;
            }
            let ns = p.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            match api.delete(&p.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    self.events.normal(
                        p.as_ref(),
                        "TaintManagerEviction",
                        format!("Marking for deletion Pod {ns}/{}", p.name_any()),
                    );
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            ..Default::default()
        }
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                tolerations: Some(tolerations),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn eviction_follows_tolerations() {
        let t = taint(UNREACHABLE);
        assert_eq!(eviction_delay(&pod(vec![]), &t, 300), Some(300));
        let bounded = Toleration {
            key: Some(UNREACHABLE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(5),
            ..Default::default()
        };
        assert_eq!(eviction_delay(&pod(vec![bounded]), &t, 300), Some(5));
        let forever = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert_eq!(eviction_delay(&pod(vec![forever]), &t, 300), None);
        assert_eq!(
            eviction_delay(&pod(vec![]), &taint("dedicated"), 300),
            Some(0)
        );
    }
}
