//! Storage object in use protection: every PersistentVolumeClaim carries the
//! `kubernetes.io/pvc-protection` finalizer and every PersistentVolume the
//! `kubernetes.io/pv-protection` one, so deleting either only marks it; the
//! claim's finalizer comes off once no unfinished pod uses it, the volume's
//! once it is no longer bound.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::framework::{
    Action, Change, Ctx, Informer, Kind, WorkQueue, ignore_not_found, key_of, run_workers,
    split_key,
};

pub const PVC_FINALIZER: &str = "kubernetes.io/pvc-protection";
pub const PV_FINALIZER: &str = "kubernetes.io/pv-protection";

pub fn start_pvc(ctx: &Ctx) -> Result<(), Error> {
    let claims = ctx.informers.get::<PersistentVolumeClaim>();
    let pods = ctx.informers.get::<Pod>();
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        claims.on_change(move |ch| {
            if let Change::Applied { new, .. } = ch {
                q.add(key_of(*new));
            }
        });
    }
    {
        // A pod that finishes or goes may release a claim being deleted.
        let q = queue.clone();
        let c = claims.clone();
        pods.on_change(move |ch| {
            let pod = match ch {
                Change::Applied { new, .. } if pod_uses_claims(new) => return,
                Change::Applied { new, .. } => *new,
                Change::Deleted(p) => *p,
            };
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            for claim in claim_names(pod) {
                if c.get(Some(ns), &claim)
                    .is_some_and(|pvc| pvc.metadata.deletion_timestamp.is_some())
                {
                    q.add(format!("{ns}/{claim}"));
                }
            }
        });
    }
    let ctl = Arc::new(ClaimProtection {
        client: ctx.client.clone(),
        claims,
        pods,
    });
    run_workers(ctx, "pvc-protection", queue, 2, move |key| {
        let c = ctl.clone();
        async move { c.sync(&key).await }
    });
    Ok(())
}

pub fn start_pv(ctx: &Ctx) -> Result<(), Error> {
    let volumes = ctx.informers.get::<PersistentVolume>();
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        volumes.on_change(move |ch| {
            if let Change::Applied { new, .. } = ch {
                q.add(key_of(*new));
            }
        });
    }
    let client = ctx.client.clone();
    run_workers(ctx, "pv-protection", queue, 2, move |name| {
        let client = client.clone();
        let volumes = volumes.clone();
        async move {
            let Some(pv) = volumes.get(None, &name) else {
                return Ok(Action::Done);
            };
            let bound = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            let api: Api<PersistentVolume> = Api::all(client);
            reconcile_finalizer(&api, &pv, PV_FINALIZER, bound).await
        }
    });
    Ok(())
}

/// Adds `finalizer` to a live object, or removes it from one being deleted
/// that is no longer `in_use`; with the resourceVersion as precondition, so
/// a stale decision is retried rather than written.
async fn reconcile_finalizer<K: Kind + serde::Serialize>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
    in_use: bool,
) -> Result<Action, Error> {
    let meta = obj.meta();
    let mut finalizers = meta.finalizers.clone().unwrap_or_default();
    let has = finalizers.iter().any(|f| f == finalizer);
    let deleting = meta.deletion_timestamp.is_some();
    if !deleting && !has {
        finalizers.push(finalizer.to_string());
    } else if deleting && has && !in_use {
        finalizers.retain(|f| f != finalizer);
    } else {
        return Ok(Action::Done);
    }
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": meta.resource_version,
    }});
    ignore_not_found(
        api.patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await,
    )?;
    Ok(Action::Done)
}

/// The claims a pod mounts, including its generic ephemeral volumes' claims.
fn claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.name_any();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", v.name))
            }
        })
        .collect()
}

/// Whether a pod still holds its claims: it has not finished.
fn pod_uses_claims(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn uses(pod: &Pod, claim: &str) -> bool {
    pod_uses_claims(pod) && claim_names(pod).iter().any(|c| c == claim)
}

struct ClaimProtection {
    client: Client,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    pods: Arc<Informer<Pod>>,
}

impl ClaimProtection {
    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(pvc) = self.claims.get(Some(ns), name) else {
            return Ok(Action::Done);
        };
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let mut in_use = false;
        if pvc.metadata.deletion_timestamp.is_some() {
            in_use = self.pods.in_namespace(ns).iter().any(|p| uses(p, name));
            if !in_use {
                // The pod cache may lag a pod just created for this claim;
                // releasing is final, so ask the apiserver before doing it.
                let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
                in_use = pods
                    .list(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .any(|p| uses(p, name));
            }
        }
        reconcile_finalizer(&api, pvc.as_ref(), PVC_FINALIZER, in_use).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_of_a_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0"},
            "spec": {"containers": [], "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "tmp", "emptyDir": {}},
            ]},
            "status": {"phase": "Running"},
        }))
        .unwrap();
        assert_eq!(claim_names(&pod), ["data-web-0", "web-0-scratch"]);
        assert!(uses(&pod, "data-web-0"));
        let mut done = pod.clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!uses(&done, "data-web-0"));
    }
}
