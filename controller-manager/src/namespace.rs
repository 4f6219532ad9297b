//! The namespace controller: empties a terminating namespace of every
//! namespaced resource the apiserver serves (found by discovery), then
//! removes the `kubernetes` finalizer through `namespaces/{name}/finalize`
//! so the apiserver can delete the namespace.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};

use crate::Error;
use crate::framework::{Action, Change, Ctx, Informer, WorkQueue, run_workers};

const FINALIZER: &str = "kubernetes";

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let namespaces = ctx.informers.get::<Namespace>();
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        namespaces.on_change(move |ch| {
            if let Change::Applied { new, .. } = ch
                && new.metadata.deletion_timestamp.is_some()
            {
                q.add(new.metadata.name.clone().unwrap_or_default());
            }
        });
    }
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        namespaces,
        clock: ctx.clock.clone(),
    });
    run_workers(ctx, "namespace", queue, 2, move |name| {
        let c = ctl.clone();
        async move { c.sync(&name).await }
    });
    Ok(())
}

struct Controller {
    client: Client,
    namespaces: Arc<Informer<Namespace>>,
    clock: crate::Clock,
}

impl Controller {
    async fn sync(&self, name: &str) -> Result<Action, Error> {
        let Some(ns) = self.namespaces.get(None, name) else {
            return Ok(Action::Done);
        };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(Action::Done);
        }
        let has_finalizer = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.as_ref())
            .is_some_and(|f| f.iter().any(|x| x == FINALIZER));
        if !has_finalizer {
            return Ok(Action::Done);
        }
        let discovery = match Discovery::new(self.client.clone()).run().await {
            Ok(d) => d,
            Err(e) => {
                self.set_condition(
                    name,
                    "NamespaceDeletionDiscoveryFailure",
                    "True",
                    "DiscoveryFailed",
                    &e.to_string(),
                )
                .await?;
                return Err(e.into());
            }
        };
        let mut remaining: Vec<String> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut apis = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                if caps.scope != Scope::Namespaced
                    || !caps.supports_operation(verbs::LIST)
                    || !caps.supports_operation(verbs::DELETE)
                {
                    continue;
                }
                let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), name, &ar);
                let res = if caps.supports_operation(verbs::DELETE_COLLECTION) {
                    api.delete_collection(&DeleteParams::background(), &ListParams::default())
                        .await
                        .map(|_| ())
                } else {
                    delete_each(&api).await
                };
                if let Err(e) = res {
                    match &e {
                        kube::Error::Api(s) if s.code == 404 || s.code == 405 => {}
                        _ => {
                            failures.push(format!("{}: {e}", ar.plural));
                            continue;
                        }
                    }
                }
                count_remaining(&api, &ar, &mut remaining, &mut failures).await;
                apis.push((api, ar));
            }
        }
        // An object can be created after its kind was checked above (a
        // controller replacing a pod before its ReplicaSet is deleted later in
        // this pass). A second look at every kind, once all were emptied,
        // closes that window: creates are refused from here on (the namespace
        // has been Terminating for the whole pass).
        if remaining.is_empty() && failures.is_empty() {
            for (api, ar) in &apis {
                count_remaining(api, ar, &mut remaining, &mut failures).await;
            }
        }
        if !failures.is_empty() {
            let msg = format!(
                "Failed to delete all resource types, {} remaining: {}",
                failures.len(),
                failures.join(", ")
            );
            self.set_condition(
                name,
                "NamespaceDeletionContentFailure",
                "True",
                "ContentDeletionFailed",
                &msg,
            )
            .await?;
            return Ok(Action::RequeueAfter(Duration::from_secs(5)));
        }
        if !remaining.is_empty() {
            let msg = format!("Some resources are remaining: {}", remaining.join(", "));
            self.set_condition(
                name,
                "NamespaceContentRemaining",
                "True",
                "SomeResourcesRemain",
                &msg,
            )
            .await?;
            // Pods being shut down gracefully, or objects held by finalizers.
            return Ok(Action::RequeueAfter(Duration::from_secs(2)));
        }
        self.finalize(name).await?;
        Ok(Action::Done)
    }

    async fn finalize(&self, name: &str) -> Result<(), Error> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut ns = match api.get(name).await {
            Ok(n) => n,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if let Some(spec) = ns.spec.as_mut() {
            let f: Vec<String> = spec
                .finalizers
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != FINALIZER)
                .collect();
            spec.finalizers = Some(f);
        }
        match api
            .replace_subresource("finalize", name, &PostParams::default(), &ns)
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = name, "namespace emptied and finalized");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn set_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
        msg: &str,
    ) -> Result<(), Error> {
        let Some(ns) = self.namespaces.get(None, name) else {
            return Ok(());
        };
        let mut conds: Vec<NamespaceCondition> = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if conds
            .iter()
            .any(|c| c.type_ == type_ && c.status == status && c.message.as_deref() == Some(msg))
        {
            return Ok(());
        }
        conds.retain(|c| c.type_ != type_);
        conds.push(NamespaceCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(msg.into()),
            last_transition_time: Some(Time(self.clock.now())),
        });
        let api: Api<Namespace> = Api::all(self.client.clone());
        let patch = serde_json::json!({"status": {"conditions": conds}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Notes in `remaining` how many objects of `ar` are still in the namespace.
async fn count_remaining(
    api: &Api<DynamicObject>,
    ar: &kube::discovery::ApiResource,
    remaining: &mut Vec<String>,
    failures: &mut Vec<String>,
) {
    match api.list_metadata(&ListParams::default().limit(1000)).await {
        Ok(list) if !list.items.is_empty() => remaining.push(format!(
            "{}.{} has {} resource instances",
            ar.plural,
            ar.group,
            list.items.len()
        )),
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {}
        Err(e) => failures.push(format!("{}: {e}", ar.plural)),
    }
}

async fn delete_each(api: &Api<DynamicObject>) -> Result<(), kube::Error> {
    let list = api.list_metadata(&ListParams::default()).await?;
    for o in list.items {
        if o.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = o.metadata.name.unwrap_or_default();
        crate::framework::ignore_not_found(api.delete(&name, &DeleteParams::background()).await)?;
    }
    Ok(())
}
