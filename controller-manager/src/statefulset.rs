//! The StatefulSet controller: pods with stable names `<set>-<ordinal>` and
//! a PersistentVolumeClaim `<claim>-<set>-<ordinal>` per volumeClaimTemplate.
//! OrderedReady creates one pod at a time, each after the previous is Ready,
//! and removes from the highest ordinal; Parallel does not wait. Rolling
//! updates replace pods from the highest ordinal down to `partition`.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::daemonset::REVISION_LABEL;
use crate::deployment::pod_template_hash;
use crate::framework::{
    Action, Change, Ctx, Events, Informer, WorkQueue, controller_ref, key_of, pod_is_active,
    pod_is_available, pod_is_ready, run_workers, split_key,
};
use crate::history::History;

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        events: ctx.events.clone(),
        clock: ctx.clock.clone(),
        sets: ctx.informers.get::<StatefulSet>(),
        pods: ctx.informers.get::<Pod>(),
        claims: ctx.informers.get::<PersistentVolumeClaim>(),
        history: History::new(ctx),
    });
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        ctl.sets.on_change(move |ch| {
            if let Change::Applied { new, .. } = ch {
                q.add(key_of(*new));
            }
        });
    }
    {
        let q = queue.clone();
        ctl.pods.on_change(move |ch| {
            let p = match ch {
                Change::Applied { new, .. } => *new,
                Change::Deleted(p) => *p,
            };
            if let Some(r) = controller_ref(&p.metadata).filter(|r| r.kind == "StatefulSet") {
                q.add(format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    r.name
                ));
            }
        });
    }
    let c = ctl.clone();
    run_workers(ctx, "statefulset", queue, 2, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
    Ok(())
}

struct Controller {
    client: Client,
    events: Events,
    clock: crate::Clock,
    sets: Arc<Informer<StatefulSet>>,
    pods: Arc<Informer<Pod>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    history: History,
}

fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn revision_of(p: &Pod) -> Option<&String> {
    p.metadata.labels.as_ref()?.get(REVISION_LABEL)
}

impl Controller {
    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(sts) = self.sets.get(Some(ns), name) else {
            return Ok(Action::Done);
        };
        let Some(spec) = sts.spec.as_ref() else {
            return Ok(Action::Done);
        };
        if sts.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let uid = sts.metadata.uid.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
        let hash = pod_template_hash(
            Some(&spec.template),
            sts.status.as_ref().and_then(|s| s.collision_count),
        );
        let now = self.clock.now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let mut pods: Vec<(i32, Arc<Pod>)> = self
            .pods
            .in_namespace(ns)
            .into_iter()
            .filter(|p| controller_ref(&p.metadata).is_some_and(|r| r.uid == uid))
            .filter_map(|p| Some((ordinal(name, &p.name_any())?, p)))
            .collect();
        pods.sort_by_key(|(i, _)| *i);
        let mut in_use: std::collections::HashSet<String> = pods
            .iter()
            .filter_map(|(_, p)| revision_of(p).cloned())
            .collect();
        in_use.extend(sts.status.as_ref().and_then(|s| s.current_revision.clone()));
        let update_rev = self
            .history
            .record(
                sts.as_ref(),
                &spec.template,
                &hash,
                spec.revision_history_limit.unwrap_or(10),
                &in_use,
            )
            .await?;
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let get = |i: i32| pods.iter().find(|(o, _)| *o == i).map(|(_, p)| p.clone());

        // Scale up / replace missing or failed pods, in order.
        let mut acted = false;
        for i in 0..replicas {
            match get(i) {
                None => {
                    self.ensure_claims(&sts, i).await?;
                    let pod = self.pod_for(&sts, i, &update_rev);
                    match pod_api.create(&PostParams::default(), &pod).await {
                        Ok(_) => self.events.normal(
                            sts.as_ref(),
                            "SuccessfulCreate",
                            format!(
                                "create Pod {} in StatefulSet {name} successful",
                                pod.name_any()
                            ),
                        ),
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => {
                            self.events.warning(
                                sts.as_ref(),
                                "FailedCreate",
                                format!(
                                    "create Pod {} in StatefulSet {name} failed error: {}",
                                    pod.name_any(),
                                    crate::framework::api_message(&e)
                                ),
                            );
                            return Err(e.into());
                        }
                    }
                    acted = true;
                    if !parallel {
                        break;
                    }
                }
                Some(p) => {
                    if matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Failed" | "Succeeded")
                    ) && p.metadata.deletion_timestamp.is_none()
                    {
                        // Recreated under the same name on the next sync.
                        delete(&pod_api, &p).await?;
                        acted = true;
                        if !parallel {
                            break;
                        }
                    }
                    if !parallel && (!pod_is_ready(&p) || p.metadata.deletion_timestamp.is_some()) {
                        acted = true;
                        break;
                    }
                }
            }
        }
        // Scale down from the highest ordinal.
        if !acted {
            let extra: Vec<&(i32, Arc<Pod>)> = pods
                .iter()
                .rev()
                .filter(|(i, p)| *i >= replicas && p.metadata.deletion_timestamp.is_none())
                .collect();
            for (_, p) in extra {
                delete(&pod_api, p).await?;
                self.events.normal(
                    sts.as_ref(),
                    "SuccessfulDelete",
                    format!(
                        "delete Pod {} in StatefulSet {name} successful",
                        p.name_any()
                    ),
                );
                acted = true;
                if !parallel {
                    break;
                }
            }
        }
        // Rolling update: highest ordinal first, down to the partition, one at a time.
        let rolling = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            != Some("OnDelete");
        let partition = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let all_ready = (0..replicas).all(|i| {
            get(i).is_some_and(|p| pod_is_ready(&p) && p.metadata.deletion_timestamp.is_none())
        });
        if rolling && !acted && all_ready {
            for i in (partition..replicas).rev() {
                if let Some(p) = get(i)
                    && revision_of(&p) != Some(&update_rev)
                {
                    delete(&pod_api, &p).await?;
                    break;
                }
            }
        }

        let active: Vec<&Arc<Pod>> = pods
            .iter()
            .map(|(_, p)| p)
            .filter(|p| pod_is_active(p))
            .collect();
        let ready = active.iter().filter(|p| pod_is_ready(p)).count() as i32;
        let available = active
            .iter()
            .filter(|p| pod_is_available(p, min_ready, now))
            .count() as i32;
        let updated = active
            .iter()
            .filter(|p| revision_of(p) == Some(&update_rev))
            .count() as i32;
        let current_rev = if updated == active.len() as i32 {
            update_rev.clone()
        } else {
            sts.status
                .as_ref()
                .and_then(|s| s.current_revision.clone())
                .unwrap_or_else(|| update_rev.clone())
        };
        let current = active
            .iter()
            .filter(|p| revision_of(p) == Some(&current_rev))
            .count() as i32;
        let status = serde_json::json!({"status": {
            "replicas": active.len() as i32,
            "readyReplicas": ready,
            "availableReplicas": available,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "observedGeneration": sts.metadata.generation,
        }});
        let cur = sts.status.clone().unwrap_or_default();
        let same = cur.replicas == active.len() as i32
            && cur.ready_replicas.unwrap_or(0) == ready
            && cur.available_replicas.unwrap_or(0) == available
            && cur.current_replicas.unwrap_or(0) == current
            && cur.updated_replicas.unwrap_or(0) == updated
            && cur.current_revision.as_ref() == Some(&current_rev)
            && cur.update_revision.as_ref() == Some(&update_rev)
            && cur.observed_generation == sts.metadata.generation;
        if !same {
            let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
            crate::framework::ignore_not_found(
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                    .await,
            )?;
        }
        if min_ready > 0 && ready > available {
            return Ok(Action::RequeueAfter(std::time::Duration::from_secs(
                min_ready as u64,
            )));
        }
        Ok(Action::Done)
    }

    async fn ensure_claims(&self, sts: &StatefulSet, i: i32) -> Result<(), Error> {
        let ns = sts.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        for t in sts
            .spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.clone())
            .unwrap_or_default()
        {
            let claim = format!("{}-{}-{i}", t.name_any(), sts.name_any());
            if self.claims.get(Some(&ns), &claim).is_some() {
                continue;
            }
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            if let Some(sel) = sts
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone())
            {
                labels.extend(sel);
            }
            let pvc = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            };
            match api.create(&PostParams::default(), &pvc).await {
                Ok(_) => self.events.normal(
                    sts,
                    "SuccessfulCreate",
                    format!(
                        "create Claim {claim} Pod {}-{i} in StatefulSet {} success",
                        sts.name_any(),
                        sts.name_any()
                    ),
                ),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn pod_for(&self, sts: &StatefulSet, i: i32, rev: &str) -> Pod {
        let spec = sts.spec.as_ref();
        let mut pod = crate::replicaset::pod_from_template(sts, spec.map(|s| &s.template));
        let name = format!("{}-{i}", sts.name_any());
        pod.metadata.generate_name = None;
        pod.metadata.name = Some(name.clone());
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(REVISION_LABEL.into(), rev.into());
        labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
        labels.insert("apps.kubernetes.io/pod-index".into(), i.to_string());
        if let Some(ps) = pod.spec.as_mut() {
            ps.hostname = Some(name.clone());
            if let Some(svc) = spec
                .and_then(|s| s.service_name.clone())
                .filter(|s| !s.is_empty())
            {
                ps.subdomain = Some(svc);
            }
            for t in spec
                .and_then(|s| s.volume_claim_templates.clone())
                .unwrap_or_default()
            {
                let vol = t.name_any();
                let volumes = ps.volumes.get_or_insert_with(Vec::new);
                volumes.retain(|v| v.name != vol);
                volumes.push(Volume {
                    name: vol.clone(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: format!("{vol}-{}-{i}", sts.name_any()),
                        read_only: None,
                    }),
                    ..Default::default()
                });
            }
        }
        pod
    }
}

async fn delete(api: &Api<Pod>, p: &Pod) -> Result<(), Error> {
    match api.delete(&p.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ordinals() {
        assert_eq!(super::ordinal("web", "web-0"), Some(0));
        assert_eq!(super::ordinal("web", "web-12"), Some(12));
        assert_eq!(super::ordinal("web", "web2-1"), None);
        assert_eq!(super::ordinal("web", "webx"), None);
    }
}
