//! ControllerRevisions: the template history of DaemonSets and StatefulSets.
//!
//! Each distinct pod template an owner has run is kept as a ControllerRevision
//! named `<owner>-<hash>` whose `data` is the strategic-merge patch that puts
//! that template back (`{"spec":{"template":{..., "$patch":"replace"}}}`), with
//! a revision number that grows each time a template becomes current again.
//! That is what `kubectl rollout history|undo daemonset|statefulset` reads and
//! applies. Old revisions beyond `revisionHistoryLimit` are deleted unless a
//! live pod still runs them.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::daemonset::REVISION_LABEL;
use crate::framework::{Ctx, Informer, controller_ref, ignore_not_found, owner_ref_to};

const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

pub struct History {
    client: Client,
    revisions: Arc<Informer<ControllerRevision>>,
}

impl History {
    pub fn new(ctx: &Ctx) -> Self {
        Self {
            client: ctx.client.clone(),
            revisions: ctx.informers.get::<ControllerRevision>(),
        }
    }

    /// The revisions `owner` controls, oldest first.
    pub fn owned<K: Resource>(&self, owner: &K) -> Vec<Arc<ControllerRevision>> {
        let uid = owner.meta().uid.clone().unwrap_or_default();
        let ns = owner.meta().namespace.clone().unwrap_or_default();
        let mut out: Vec<_> = self
            .revisions
            .in_namespace(&ns)
            .into_iter()
            .filter(|r| controller_ref(&r.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        out.sort_by_key(|r| r.revision);
        out
    }

    /// Makes `template` (hashed as `hash`) the owner's newest revision and
    /// trims old ones not in `in_use` (revision names live pods or the
    /// owner's status still refer to). Returns the revision's name.
    pub async fn record<K>(
        &self,
        owner: &K,
        template: &PodTemplateSpec,
        hash: &str,
        history_limit: i32,
        in_use: &HashSet<String>,
    ) -> Result<String, Error>
    where
        K: Resource<DynamicType = ()>,
    {
        let ns = owner.meta().namespace.clone().unwrap_or_default();
        let name = format!("{}-{hash}", owner.name_any());
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &ns);
        let owned = self.owned(owner);
        let newest = owned.iter().map(|r| r.revision).max().unwrap_or(0);
        match owned.iter().find(|r| r.name_any() == name) {
            Some(cur) if cur.revision < newest => {
                // A rollback: the template is current again, so it becomes
                // the newest revision (what `rollout history` lists last).
                let patch = json!({"revision": newest + 1});
                ignore_not_found(
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await,
                )?;
            }
            Some(_) => {}
            None => {
                let rev = snapshot(owner, template, hash, &name, newest + 1);
                match api.create(&PostParams::default(), &rev).await {
                    Ok(_) => {}
                    // Ours, written by an earlier sync the cache has not shown yet.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let old: Vec<_> = owned
            .iter()
            .filter(|r| r.name_any() != name && !in_use.contains(&r.name_any()))
            .collect();
        let excess = old.len().saturating_sub(history_limit.max(0) as usize);
        for r in old.into_iter().take(excess) {
            ignore_not_found(api.delete(&r.name_any(), &DeleteParams::background()).await)?;
        }
        Ok(name)
    }
}

/// The ControllerRevision that restores `template` on `owner`.
fn snapshot<K: Resource<DynamicType = ()>>(
    owner: &K,
    template: &PodTemplateSpec,
    hash: &str,
    name: &str,
    revision: i64,
) -> ControllerRevision {
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), hash.into());
    let annotations = owner
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHANGE_CAUSE))
        .map(|c| {
            [(CHANGE_CAUSE.to_string(), c.clone())]
                .into_iter()
                .collect()
        });
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: owner.meta().namespace.clone(),
            labels: Some(labels),
            annotations,
            owner_references: Some(vec![owner_ref_to(owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(json!({"spec": {"template": t}}))),
        revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSet;

    #[test]
    fn a_snapshot_restores_the_template_and_carries_the_selector_labels() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u1",
                "annotations": {"kubernetes.io/change-cause": "image bump", "other": "x"}},
        }))
        .expect("ds");
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "agent"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:2"}]},
        }))
        .expect("template");
        let r = snapshot(&ds, &template, "abc", "agent-abc", 3);
        assert_eq!(r.revision, 3);
        let labels = r.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("agent"));
        assert_eq!(labels.get(REVISION_LABEL).map(String::as_str), Some("abc"));
        let ann = r.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(ann.len(), 1, "only the change cause is copied: {ann:?}");
        let data = r.data.expect("data").0;
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            data["spec"]["template"]["spec"]["containers"][0]["image"],
            "busybox:2"
        );
        let owner = &r.metadata.owner_references.expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("DaemonSet", Some(true))
        );
    }
}
