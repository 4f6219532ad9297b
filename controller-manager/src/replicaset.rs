//! The ReplicaSet controller: keeps `spec.replicas` pods from the template
//! running, adopting matching orphans and releasing pods that stopped
//! matching, and reports replica counts in the status. ReplicationControllers
//! run on the same logic through [`Replicated`].

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::framework::{
    Action, Change, Ctx, Events, Expectations, Informer, Kind, WorkQueue, controller_ref, key_of,
    owner_ref_to, patch_owner_refs, pod_is_active, pod_is_available, pod_is_ready, run_workers,
    selector_is_empty, selector_matches, split_key,
};

/// At most this many pods are created or deleted per sync (upstream's burst).
const BURST: usize = 500;

/// What the replica logic needs of its owner kind (ReplicaSet,
/// ReplicationController): they differ only in how the selector is spelled.
pub trait Replicated:
    Kind + serde::Serialize + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
{
    /// The controller's `--controllers` name, for logs.
    const CONTROLLER: &'static str;
    /// `None` when the object has no spec to act on.
    fn selector(&self) -> Option<LabelSelector>;
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn replica_status(&self) -> Option<ReplicaStatus>;
}

/// The status fields both kinds share.
pub struct ReplicaStatus {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
    pub observed_generation: Option<i64>,
    pub conditions: Vec<ReplicaSetCondition>,
}

impl Replicated for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset";
    fn selector(&self) -> Option<LabelSelector> {
        Some(self.spec.as_ref()?.selector.clone())
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn replica_status(&self) -> Option<ReplicaStatus> {
        let s = self.status.as_ref()?;
        Some(ReplicaStatus {
            replicas: s.replicas,
            fully_labeled: s.fully_labeled_replicas.unwrap_or(0),
            ready: s.ready_replicas.unwrap_or(0),
            available: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation,
            conditions: s.conditions.clone().unwrap_or_default(),
        })
    }
}

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    start_for::<ReplicaSet>(ctx)
}

pub fn start_for<K: Replicated>(ctx: &Ctx) -> Result<(), Error> {
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        events: ctx.events.clone(),
        clock: ctx.clock.clone(),
        sets: ctx.informers.get::<K>(),
        pods: ctx.informers.get::<Pod>(),
        expectations: Expectations::default(),
    });
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        let c = ctl.clone();
        ctl.sets.on_change(move |ch| match ch {
            Change::Applied { new, .. } => q.add(key_of(*new)),
            Change::Deleted(rs) => {
                c.expectations.forget(&key_of(*rs));
                q.add(key_of(*rs));
            }
        });
    }
    {
        let q = queue.clone();
        let c = ctl.clone();
        ctl.pods.on_change(move |ch| c.pod_changed(ch, &q));
    }
    let c = ctl.clone();
    run_workers(
        ctx,
        K::CONTROLLER,
        queue,
        ctx.config.concurrent_syncs,
        move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        },
    );
    Ok(())
}

struct Controller<K: Replicated> {
    client: Client,
    events: Events,
    clock: crate::Clock,
    sets: Arc<Informer<K>>,
    pods: Arc<Informer<Pod>>,
    expectations: Expectations,
}

fn owner_key<K: Replicated>(pod: &Pod) -> Option<String> {
    let r = controller_ref(&pod.metadata)?;
    if r.kind != K::kind(&()) {
        return None;
    }
    Some(format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        r.name
    ))
}

impl<K: Replicated> Controller<K> {
    fn pod_changed(&self, ch: &Change<'_, Pod>, q: &WorkQueue) {
        match ch {
            Change::Applied { old, new } => {
                let owner = owner_key::<K>(new);
                if let Some(k) = &owner {
                    if old.is_none() {
                        self.expectations.observed_add(k);
                    }
                    let newly_deleting = new.metadata.deletion_timestamp.is_some()
                        && old
                            .as_ref()
                            .is_none_or(|o| o.metadata.deletion_timestamp.is_none());
                    if newly_deleting {
                        self.expectations.observed_del(k);
                    }
                    q.add(k.clone());
                }
                if let Some(old_owner) = old.as_deref().and_then(owner_key::<K>)
                    && Some(&old_owner) != owner.as_ref()
                {
                    q.add(old_owner);
                }
                if controller_ref(&new.metadata).is_none() {
                    // An orphan: every ReplicaSet that selects it may adopt it.
                    let ns = new.metadata.namespace.as_deref().unwrap_or_default();
                    for rs in self.sets.in_namespace(ns) {
                        if let Some(sel) = rs.selector()
                            && !selector_is_empty(&sel)
                            && selector_matches(&sel, new.metadata.labels.as_ref())
                        {
                            q.add(key_of(rs.as_ref()));
                        }
                    }
                }
            }
            Change::Deleted(pod) => {
                if let Some(k) = owner_key::<K>(pod) {
                    if pod.metadata.deletion_timestamp.is_none() {
                        self.expectations.observed_del(&k);
                    }
                    q.add(k);
                }
            }
        }
    }

    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(rs) = self.sets.get(Some(ns), name) else {
            self.expectations.forget(key);
            return Ok(Action::Done);
        };
        let Some(selector) = rs.selector() else {
            return Ok(Action::Done);
        };
        if selector_is_empty(&selector) {
            // The apiserver rejects these; never act on "select everything".
            return Ok(Action::Done);
        }
        let uid = rs.meta().uid.clone().unwrap_or_default();
        let deleting = rs.meta().deletion_timestamp.is_some();
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);

        let mut owned = Vec::new();
        for p in self.pods.in_namespace(ns) {
            let matches = selector_matches(&selector, p.metadata.labels.as_ref());
            match controller_ref(&p.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push(p);
                    } else if !deleting {
                        let refs = p
                            .owner_references()
                            .iter()
                            .filter(|o| o.uid != uid)
                            .cloned()
                            .collect();
                        patch_owner_refs(&pod_api, p.as_ref(), refs).await?;
                    }
                }
                Some(_) => {}
                None => {
                    if matches && !deleting && p.metadata.deletion_timestamp.is_none() {
                        let mut refs = p.owner_references().to_vec();
                        refs.push(owner_ref_to(rs.as_ref()));
                        patch_owner_refs(&pod_api, p.as_ref(), refs).await?;
                        owned.push(p);
                    }
                }
            }
        }
        let active: Vec<Arc<Pod>> = owned.into_iter().filter(|p| pod_is_active(p)).collect();

        let mut manage_err = None;
        if !deleting && self.expectations.satisfied(key) {
            manage_err = self.manage(&rs, &active, key, &pod_api).await.err();
        }

        // Status from what the cache shows now.
        let now = self.clock.now();
        let min_ready = rs.min_ready_seconds();
        let template_labels = rs
            .template()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let replicas = active.len() as i32;
        let fully_labeled = active
            .iter()
            .filter(|p| {
                let l = p.metadata.labels.as_ref();
                template_labels
                    .iter()
                    .all(|(k, v)| l.and_then(|l| l.get(k)) == Some(v))
            })
            .count() as i32;
        let ready = active.iter().filter(|p| pod_is_ready(p)).count() as i32;
        let available = active
            .iter()
            .filter(|p| pod_is_available(p, min_ready, now))
            .count() as i32;
        let cur = rs.replica_status();
        let mut conditions: Vec<ReplicaSetCondition> = cur
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let failure = manage_err.as_ref().and_then(|e| match e {
            SyncError::Create(msg) => Some(msg.clone()),
            _ => None,
        });
        match &failure {
            Some(msg) if !conditions.iter().any(|c| c.type_ == "ReplicaFailure") => {
                conditions.push(ReplicaSetCondition {
                    type_: "ReplicaFailure".into(),
                    status: "True".into(),
                    reason: Some("FailedCreate".into()),
                    message: Some(msg.clone()),
                    last_transition_time: Some(Time(now)),
                });
            }
            Some(_) => {}
            None if manage_err.is_none() => conditions.retain(|c| c.type_ != "ReplicaFailure"),
            None => {}
        }
        let status = serde_json::json!({
            "replicas": replicas,
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": rs.meta().generation,
            "conditions": if conditions.is_empty() { serde_json::Value::Null } else { serde_json::to_value(&conditions).unwrap_or_default() },
        });
        let unchanged = cur.is_some_and(|s| {
            s.replicas == replicas
                && s.fully_labeled == fully_labeled
                && s.ready == ready
                && s.available == available
                && s.observed_generation == rs.meta().generation
                && s.conditions == conditions
        });
        if !unchanged {
            let api: Api<K> = Api::namespaced(self.client.clone(), ns);
            match api
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(&serde_json::json!({ "status": status })),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::Done),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(e) = manage_err {
            return Err(e.into_error());
        }
        if min_ready > 0 && ready > available {
            // Pods become available by time passing, not by an event.
            return Ok(Action::RequeueAfter(std::time::Duration::from_secs(
                min_ready as u64,
            )));
        }
        Ok(Action::Done)
    }

    async fn manage(
        &self,
        rs: &K,
        active: &[Arc<Pod>],
        key: &str,
        pod_api: &Api<Pod>,
    ) -> Result<(), SyncError> {
        let want = rs.replicas().max(0) as usize;
        let have = active.len();
        if have < want {
            let n = (want - have).min(BURST);
            self.expectations.expect(key, n as i64, 0);
            let pod = pod_from_template(rs, rs.template());
            let pp = PostParams::default();
            // Slow start: batches of 1, 2, 4, ... so a pod spec the apiserver
            // rejects costs one failed request, not hundreds.
            let mut done = 0;
            let mut batch = 1;
            while done < n {
                let size = batch.min(n - done);
                let results =
                    futures::future::join_all((0..size).map(|_| pod_api.create(&pp, &pod))).await;
                let mut first_err = None;
                for r in results {
                    match r {
                        Ok(p) => self.events.normal(
                            rs,
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.name_any()),
                        ),
                        Err(e) => {
                            self.expectations.observed_add(key);
                            first_err.get_or_insert(e);
                        }
                    }
                }
                done += size;
                if let Some(e) = first_err {
                    // Those never attempted will not show up either.
                    for _ in done..n {
                        self.expectations.observed_add(key);
                    }
                    if let kube::Error::Api(s) = &e
                        && s.code == 403
                        && s.message.contains("terminat")
                    {
                        return Ok(());
                    }
                    self.events.warning(
                        rs,
                        "FailedCreate",
                        format!("Error creating: {}", crate::framework::api_message(&e)),
                    );
                    return Err(SyncError::Create(crate::framework::api_message(&e)));
                }
                batch *= 2;
            }
        } else if have > want {
            let n = (have - want).min(BURST);
            let mut victims: Vec<&Arc<Pod>> = active.iter().collect();
            victims.sort_by_key(|p| deletion_rank(p));
            victims.truncate(n);
            self.expectations.expect(key, 0, n as i64);
            let results = futures::future::join_all(victims.iter().map(|p| async move {
                (
                    p.name_any(),
                    pod_api
                        .delete(&p.name_any(), &DeleteParams::default())
                        .await,
                )
            }))
            .await;
            let mut first_err = None;
            for (pod, r) in results {
                match r {
                    Ok(_) => {
                        self.events
                            .normal(rs, "SuccessfulDelete", format!("Deleted pod: {pod}"))
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        self.expectations.observed_del(key)
                    }
                    Err(e) => {
                        self.expectations.observed_del(key);
                        self.events.warning(
                            rs,
                            "FailedDelete",
                            format!("Error deleting: {}", crate::framework::api_message(&e)),
                        );
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(SyncError::Api(e));
            }
        }
        Ok(())
    }
}

enum SyncError {
    Create(String),
    Api(kube::Error),
}

impl SyncError {
    fn into_error(self) -> Error {
        match self {
            SyncError::Create(msg) => Error::Invalid {
                what: "pod template",
                msg,
            },
            SyncError::Api(e) => e.into(),
        }
    }
}

/// Pods to delete first sort first: unscheduled, then pending, then not
/// ready, then the youngest.
fn deletion_rank(p: &Pod) -> (u8, u8, u8, std::cmp::Reverse<i64>) {
    let assigned = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    (
        u8::from(assigned),
        phase,
        u8::from(pod_is_ready(p)),
        std::cmp::Reverse(created),
    )
}

/// A pod for `owner` from its template (shared with other pod controllers).
pub fn pod_from_template<K: kube::Resource<DynamicType = ()>>(
    owner: &K,
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
) -> Pod {
    let t = template.cloned().unwrap_or_default();
    let m = t.metadata.unwrap_or_default();
    let name = owner.meta().name.clone().unwrap_or_default();
    // Upstream trims the prefix so the random suffix still fits in 63 chars.
    let mut prefix = format!("{name}-");
    if prefix.len() > 58 {
        prefix.truncate(57);
        prefix.push('-');
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: owner.meta().namespace.clone(),
            labels: m.labels,
            annotations: m.annotations,
            finalizers: m.finalizers,
            owner_references: Some(vec![owner_ref_to(owner)]),
            ..Default::default()
        },
        spec: t.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscheduled_pending_pods_go_first() {
        let running = Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some("n1".into()),
                ..Default::default()
            }),
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pending = Pod::default();
        assert!(deletion_rank(&pending) < deletion_rank(&running));
    }
}
