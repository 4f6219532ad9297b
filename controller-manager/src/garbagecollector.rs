//! The garbage collector: deletes objects whose owners (by ownerReferences)
//! are all gone, and carries out foreground (`foregroundDeletion`
//! finalizer) and orphan (`orphan` finalizer) deletion of owners.
//!
//! It keeps an owner→dependents graph built from the shared informers of
//! the kinds controllers create dependents of. An owner missing from the
//! graph is confirmed absent with a live GET (by UID) before anything is
//! deleted, since different kinds' watches are not ordered.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ReplicationController, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy,
};
use kube::core::GroupVersionKind;

use crate::Error;
use crate::framework::{Action, Change, Ctx, Kind, WorkQueue, run_workers};

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

#[derive(Clone)]
struct Node {
    resource: ApiResource,
    namespaced: bool,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn unlink(&mut self, uid: &str) -> Option<Node> {
        let node = self.nodes.remove(uid)?;
        for o in &node.owners {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        Some(node)
    }

    fn insert(&mut self, uid: String, node: Node) {
        self.unlink(&uid);
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.nodes.insert(uid, node);
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

struct Collector {
    client: Client,
    graph: Mutex<Graph>,
    /// apiVersion/kind → resource and whether it is namespaced.
    kinds: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
}

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let gc = Arc::new(Collector {
        client: ctx.client.clone(),
        graph: Mutex::new(Graph::default()),
        kinds: Mutex::new(HashMap::new()),
    });
    let queue = WorkQueue::new();
    track::<Pod>(ctx, &gc, &queue, true);
    track::<ReplicaSet>(ctx, &gc, &queue, true);
    track::<Deployment>(ctx, &gc, &queue, true);
    track::<DaemonSet>(ctx, &gc, &queue, true);
    track::<StatefulSet>(ctx, &gc, &queue, true);
    track::<ControllerRevision>(ctx, &gc, &queue, true);
    track::<Job>(ctx, &gc, &queue, true);
    track::<CronJob>(ctx, &gc, &queue, true);
    track::<ReplicationController>(ctx, &gc, &queue, true);
    track::<PersistentVolumeClaim>(ctx, &gc, &queue, true);
    // EndpointSlices belong to their Service.
    track::<Service>(ctx, &gc, &queue, true);
    track::<EndpointSlice>(ctx, &gc, &queue, true);
    let g = gc.clone();
    run_workers(
        ctx,
        "garbagecollector",
        queue.clone(),
        ctx.config.concurrent_syncs,
        move |item| {
            let g = g.clone();
            let q = queue.clone();
            async move { g.process(&item, &q).await }
        },
    );
    Ok(())
}

fn track<K: Kind>(ctx: &Ctx, gc: &Arc<Collector>, queue: &Arc<WorkQueue>, namespaced: bool) {
    let resource = ApiResource::erase::<K>(&());
    if let Ok(mut k) = gc.kinds.lock() {
        k.insert(
            (resource.api_version.clone(), resource.kind.clone()),
            (resource.clone(), namespaced),
        );
    }
    let gc = gc.clone();
    let q = queue.clone();
    ctx.informers.get::<K>().on_change(move |ch| {
        let Ok(mut graph) = gc.graph.lock() else {
            return;
        };
        match ch {
            Change::Applied { new, .. } => {
                let m = new.meta();
                let Some(uid) = m.uid.clone() else { return };
                let node = Node {
                    resource: resource.clone(),
                    namespaced,
                    namespace: m.namespace.clone(),
                    name: m.name.clone().unwrap_or_default(),
                    owners: m.owner_references.clone().unwrap_or_default(),
                    deleting: m.deletion_timestamp.is_some(),
                    finalizers: m.finalizers.clone().unwrap_or_default(),
                };
                let has_owners = !node.owners.is_empty();
                let deleting_with = node.deleting
                    && node
                        .finalizers
                        .iter()
                        .any(|f| f == ORPHAN || f == FOREGROUND);
                graph.insert(uid.clone(), node);
                if deleting_with {
                    q.add(format!("owner:{uid}"));
                }
                if has_owners {
                    q.add(format!("dependent:{uid}"));
                }
            }
            Change::Deleted(obj) => {
                let Some(uid) = obj.meta().uid.clone() else {
                    return;
                };
                let node = graph.unlink(&uid);
                for dep in graph.dependents_of(&uid) {
                    q.add(format!("dependent:{dep}"));
                }
                // An owner deleting in the foreground waits for this one.
                for o in node.iter().flat_map(|n| n.owners.iter()) {
                    q.add(format!("owner:{}", o.uid));
                }
            }
        }
    });
}

impl Collector {
    fn node(&self, uid: &str) -> Option<Node> {
        self.graph.lock().ok()?.nodes.get(uid).cloned()
    }

    async fn process(&self, item: &str, q: &Arc<WorkQueue>) -> Result<Action, Error> {
        if let Some(uid) = item.strip_prefix("dependent:") {
            self.attempt_to_delete(uid).await?;
        } else if let Some(uid) = item.strip_prefix("owner:") {
            self.process_deleting_owner(uid, q).await?;
        }
        Ok(Action::Done)
    }

    fn api_for(
        &self,
        resource: &ApiResource,
        namespaced: bool,
        ns: Option<&str>,
    ) -> Api<DynamicObject> {
        match (namespaced, ns) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, resource),
            _ => Api::all_with(self.client.clone(), resource),
        }
    }

    /// The resource for an owner's apiVersion/kind, from discovery if not watched.
    async fn resource_of(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, bool)>, Error> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(r) = self.kinds.lock().ok().and_then(|k| k.get(&key).cloned()) {
            return Ok(Some(r));
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((ar, caps)) => {
                let namespaced = caps.scope == kube::discovery::Scope::Namespaced;
                if let Ok(mut k) = self.kinds.lock() {
                    k.insert(key, (ar.clone(), namespaced));
                }
                Ok(Some((ar, namespaced)))
            }
            // An owner of a kind the apiserver does not serve cannot exist.
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the owner `r` of a dependent in `ns` exists (with the same UID).
    async fn owner_exists(&self, r: &OwnerReference, ns: Option<&str>) -> Result<bool, Error> {
        if self.node(&r.uid).is_some() {
            return Ok(true);
        }
        let Some((ar, namespaced)) = self.resource_of(&r.api_version, &r.kind).await? else {
            return Ok(false);
        };
        match self.api_for(&ar, namespaced, ns).get(&r.name).await {
            Ok(o) => Ok(o.metadata.uid.as_deref() == Some(r.uid.as_str())),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn attempt_to_delete(&self, uid: &str) -> Result<(), Error> {
        let Some(node) = self.node(uid) else {
            return Ok(());
        };
        if node.owners.is_empty()
            || node.deleting && !node.finalizers.iter().any(|f| f == FOREGROUND)
        {
            return Ok(());
        }
        let mut absent = Vec::new();
        let mut waiting = 0;
        let mut solid = 0;
        for r in &node.owners {
            if !self.owner_exists(r, node.namespace.as_deref()).await? {
                absent.push(r.uid.clone());
            } else if self
                .node(&r.uid)
                .is_some_and(|o| o.deleting && o.finalizers.iter().any(|f| f == FOREGROUND))
            {
                waiting += 1;
            } else {
                solid += 1;
            }
        }
        let api = self.api_for(&node.resource, node.namespaced, node.namespace.as_deref());
        if solid == 0 && waiting == 0 {
            if node.deleting {
                return Ok(());
            }
            tracing::info!(kind = %node.resource.kind, name = %node.name, namespace = ?node.namespace, "deleting object whose owners are gone");
            return delete(&api, &node.name, uid, PropagationPolicy::Background).await;
        }
        if !absent.is_empty() {
            let refs: Vec<&OwnerReference> = node
                .owners
                .iter()
                .filter(|o| !absent.contains(&o.uid))
                .collect();
            let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "uid": uid}});
            return ignore_not_found(
                api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
            );
        }
        if solid == 0 && waiting > 0 && !node.deleting {
            // Every owner waits for its dependents: delete this one in the
            // foreground too, so its own dependents go first.
            let has_dependents = self
                .graph
                .lock()
                .map(|g| !g.dependents_of(uid).is_empty())
                .unwrap_or(false);
            let policy = if has_dependents {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            };
            return delete(&api, &node.name, uid, policy).await;
        }
        Ok(())
    }

    async fn process_deleting_owner(&self, uid: &str, q: &Arc<WorkQueue>) -> Result<(), Error> {
        let Some(node) = self.node(uid) else {
            return Ok(());
        };
        if !node.deleting {
            return Ok(());
        }
        let dependents = self
            .graph
            .lock()
            .map(|g| g.dependents_of(uid))
            .unwrap_or_default();
        if node.finalizers.iter().any(|f| f == ORPHAN) {
            for dep in &dependents {
                let Some(d) = self.node(dep) else { continue };
                let refs: Vec<&OwnerReference> = d.owners.iter().filter(|o| o.uid != uid).collect();
                let api = self.api_for(&d.resource, d.namespaced, d.namespace.as_deref());
                let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "uid": dep}});
                ignore_not_found(
                    api.patch(&d.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ()),
                )?;
            }
            return self.remove_finalizer(&node, uid, ORPHAN).await;
        }
        if node.finalizers.iter().any(|f| f == FOREGROUND) {
            let mut blocking = 0;
            for dep in &dependents {
                let Some(d) = self.node(dep) else { continue };
                let blocks = d
                    .owners
                    .iter()
                    .any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
                if blocks {
                    blocking += 1;
                }
                if !d.deleting {
                    q.add(format!("dependent:{dep}"));
                }
            }
            if blocking == 0 {
                return self.remove_finalizer(&node, uid, FOREGROUND).await;
            }
        }
        Ok(())
    }

    async fn remove_finalizer(&self, node: &Node, uid: &str, finalizer: &str) -> Result<(), Error> {
        let api = self.api_for(&node.resource, node.namespaced, node.namespace.as_deref());
        let cur = match api.get(&node.name).await {
            Ok(o) => o,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if cur.metadata.uid.as_deref() != Some(uid) {
            return Ok(());
        }
        let finalizers: Vec<String> = cur
            .metadata
            .finalizers
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        // The resourceVersion makes a concurrent finalizer change a 409 (retried).
        let patch = serde_json::json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": cur.metadata.resource_version,
        }});
        ignore_not_found(
            api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        )
    }
}

async fn delete(
    api: &Api<DynamicObject>,
    name: &str,
    uid: &str,
    policy: PropagationPolicy,
) -> Result<(), Error> {
    let dp = DeleteParams {
        propagation_policy: Some(policy),
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        // Gone, or replaced by a namesake (precondition failed): nothing to do.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn ignore_not_found(r: Result<(), kube::Error>) -> Result<(), Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other.map_err(Into::into),
    }
}
