//! The Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), rolled by the RollingUpdate or
//! Recreate strategy, with revisions, history cleanup, pause and the
//! Progressing/Available conditions `kubectl rollout status` reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::framework::{
    Action, Change, Ctx, Events, Informer, WorkQueue, controller_ref, key_of, owner_ref_to,
    patch_owner_refs, pod_is_active, run_workers, selector_is_empty, selector_matches, split_key,
};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";

/// Deployment annotations that are the controller's own, not copied to ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        events: ctx.events.clone(),
        clock: ctx.clock.clone(),
        deployments: ctx.informers.get::<Deployment>(),
        sets: ctx.informers.get::<ReplicaSet>(),
        pods: ctx.informers.get::<Pod>(),
    });
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        ctl.deployments.on_change(move |ch| match ch {
            Change::Applied { new, .. } => q.add(key_of(*new)),
            Change::Deleted(d) => q.add(key_of(*d)),
        });
    }
    {
        let q = queue.clone();
        let c = ctl.clone();
        ctl.sets.on_change(move |ch| {
            let (rs, old) = match ch {
                Change::Applied { new, old } => (*new, old.as_deref()),
                Change::Deleted(rs) => (*rs, None),
            };
            let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
            match deployment_owner(rs) {
                Some(name) => q.add(format!("{ns}/{name}")),
                None => {
                    for d in c.deployments.in_namespace(ns) {
                        if let Some(sel) = d.spec.as_ref().map(|s| &s.selector)
                            && !selector_is_empty(sel)
                            && selector_matches(sel, rs.metadata.labels.as_ref())
                        {
                            q.add(key_of(d.as_ref()));
                        }
                    }
                }
            }
            if let Some(name) = old.and_then(deployment_owner) {
                q.add(format!("{ns}/{name}"));
            }
        });
    }
    {
        // Recreate waits for the old pods to be gone, which no ReplicaSet change reports.
        let q = queue.clone();
        let c = ctl.clone();
        ctl.pods.on_change(move |ch| {
            if let Change::Deleted(p) = ch
                && let Some(r) = controller_ref(&p.metadata)
                && r.kind == "ReplicaSet"
            {
                let ns = p.metadata.namespace.as_deref().unwrap_or_default();
                if let Some(rs) = c.sets.get(Some(ns), &r.name)
                    && let Some(d) = deployment_owner(&rs)
                {
                    q.add(format!("{ns}/{d}"));
                }
            }
        });
    }
    let c = ctl.clone();
    run_workers(
        ctx,
        "deployment",
        queue,
        ctx.config.concurrent_syncs,
        move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        },
    );
    Ok(())
}

fn deployment_owner(rs: &ReplicaSet) -> Option<String> {
    let r = controller_ref(&rs.metadata)?;
    (r.kind == "Deployment").then(|| r.name.clone())
}

struct Controller {
    client: Client,
    events: Events,
    clock: crate::Clock,
    deployments: Arc<Informer<Deployment>>,
    sets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

/// The template as compared across revisions: without the hash label.
fn template_without_hash(t: Option<&PodTemplateSpec>) -> serde_json::Value {
    let mut t = t.cloned().unwrap_or_default();
    if let Some(m) = t.metadata.as_mut()
        && let Some(l) = m.labels.as_mut()
    {
        l.remove(HASH_LABEL);
        if l.is_empty() {
            m.labels = None;
        }
    }
    serde_json::to_value(&t).unwrap_or_default()
}

/// The pod-template-hash: FNV-1a (32 bit) of the template and the collision
/// count, spelled with the vowel-free alphabet upstream uses for names.
pub fn pod_template_hash(t: Option<&PodTemplateSpec>, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(template_without_hash(t).to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// An IntOrString against `total`; percentages round up for surge, down for unavailable.
fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => (*i).max(0),
        Some(IntOrString::String(s)) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(25.0);
            let x = pct * f64::from(total) / 100.0;
            (if round_up { x.ceil() } else { x.floor() }).max(0.0) as i32
        }
        None => {
            let x = 25.0 * f64::from(total) / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i32
        }
    }
}

/// (maxSurge, maxUnavailable) of a RollingUpdate deployment; never both zero.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let recreate = spec
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate");
    if recreate {
        return (0, 0);
    }
    let ru = spec
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), replicas, true);
    let mut unavailable =
        resolve(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, false).min(replicas);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

impl Controller {
    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(d) = self.deployments.get(Some(ns), name) else {
            return Ok(Action::Done);
        };
        let Some(spec) = d.spec.as_ref() else {
            return Ok(Action::Done);
        };
        if selector_is_empty(&spec.selector) {
            self.events.warning(
                d.as_ref(),
                "SelectingAll",
                "This deployment selects all pods; a non-empty selector is required.".into(),
            );
            return Ok(Action::Done);
        }
        let mut sets = self.claim(&d).await?;
        if d.metadata.deletion_timestamp.is_some() {
            return self.sync_status(&d, None, &sets, false).await;
        }
        sets.sort_by_key(|rs| {
            (
                revision(rs),
                rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        let want = template_without_hash(Some(&spec.template));
        let new_idx = sets.iter().position(|rs| {
            template_without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == want
        });
        let paused = spec.paused.unwrap_or(false);
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        let mut progressed = false;

        if paused {
            // Paused: no new ReplicaSet, only follow replica count changes.
            if let Some(i) = new_idx {
                let others_empty = sets
                    .iter()
                    .enumerate()
                    .all(|(j, rs)| j == i || spec_replicas(rs) == 0);
                let want = spec.replicas.unwrap_or(1);
                if others_empty && spec_replicas(&sets[i]) != want {
                    let rs = sets[i].clone();
                    sets[i] = self.scale(&d, &rs, want).await?;
                }
            }
            let new = new_idx.map(|i| sets[i].clone());
            return self.sync_status(&d, new.as_ref(), &sets, false).await;
        }

        let mut new_idx = new_idx;
        if let Some(i) = new_idx {
            sets[i] = self.sync_revision(&d, &sets, i).await?;
        }
        if recreate {
            progressed |= self.recreate(&d, &mut sets, &mut new_idx).await?;
        } else {
            if new_idx.is_none() {
                let rs = self.create_new(&d, &sets).await?;
                sets.push(rs);
                new_idx = Some(sets.len() - 1);
                progressed = true;
            }
            if let Some(i) = new_idx {
                progressed |= self.rolling(&d, &mut sets, i).await?;
            }
        }
        if let Some(i) = new_idx {
            self.sync_deployment_revision(&d, &sets[i]).await?;
        }
        self.cleanup(&d, &sets, new_idx).await?;
        let new = new_idx.map(|i| sets[i].clone());
        self.sync_status(&d, new.as_ref(), &sets, progressed).await
    }

    /// The deployment's ReplicaSets, adopting matching orphans and releasing
    /// ones that no longer match.
    async fn claim(&self, d: &Deployment) -> Result<Vec<ReplicaSet>, Error> {
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let Some(sel) = d.spec.as_ref().map(|s| &s.selector) else {
            return Ok(Vec::new());
        };
        let deleting = d.metadata.deletion_timestamp.is_some();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let mut out = Vec::new();
        for rs in self.sets.in_namespace(ns) {
            let matches = selector_matches(sel, rs.metadata.labels.as_ref());
            match controller_ref(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        out.push(rs.as_ref().clone());
                    } else if !deleting {
                        let refs = rs
                            .owner_references()
                            .iter()
                            .filter(|o| o.uid != uid)
                            .cloned()
                            .collect();
                        patch_owner_refs(&api, rs.as_ref(), refs).await?;
                    }
                }
                Some(_) => {}
                None => {
                    if matches && !deleting && rs.metadata.deletion_timestamp.is_none() {
                        let mut refs = rs.owner_references().to_vec();
                        refs.push(owner_ref_to(d));
                        patch_owner_refs(&api, rs.as_ref(), refs).await?;
                        out.push(rs.as_ref().clone());
                    }
                }
            }
        }
        Ok(out)
    }

    fn max_old_revision(sets: &[ReplicaSet], except: Option<usize>) -> i64 {
        sets.iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except)
            .map(|(_, rs)| revision(rs))
            .max()
            .unwrap_or(0)
    }

    /// A ReplicaSet that becomes current again (rollback) gets the next revision.
    async fn sync_revision(
        &self,
        d: &Deployment,
        sets: &[ReplicaSet],
        i: usize,
    ) -> Result<ReplicaSet, Error> {
        let rs = &sets[i];
        let max_old = Self::max_old_revision(sets, Some(i));
        let cur = revision(rs);
        let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if cur > max_old && min_ready.unwrap_or(0) == rs_min_ready.unwrap_or(0) {
            return Ok(rs.clone());
        }
        let next = if cur > max_old { cur } else { max_old + 1 };
        let mut annotations = copied_annotations(d);
        annotations.insert(REVISION.into(), next.to_string());
        let patch = serde_json::json!({
            "metadata": {"annotations": annotations},
            "spec": {"minReadySeconds": min_ready.unwrap_or(0)},
        });
        let api: Api<ReplicaSet> = Api::namespaced(
            self.client.clone(),
            rs.metadata.namespace.as_deref().unwrap_or_default(),
        );
        Ok(api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?)
    }

    async fn sync_deployment_revision(
        &self,
        d: &Deployment,
        new: &ReplicaSet,
    ) -> Result<(), Error> {
        let rev = revision(new).to_string();
        let cur = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION));
        if cur == Some(&rev) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let patch = serde_json::json!({"metadata": {"annotations": {REVISION: rev}}});
        api.patch(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    async fn create_new(&self, d: &Deployment, sets: &[ReplicaSet]) -> Result<ReplicaSet, Error> {
        let spec = d.spec.clone().unwrap_or_default();
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = pod_template_hash(Some(&spec.template), collision);
        let name = format!("{}-{hash}", d.name_any());
        let mut template = spec.template.clone();
        let tm = template.metadata.get_or_insert_with(Default::default);
        tm.labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut labels = tm.labels.clone().unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let want = spec.replicas.unwrap_or(1);
        let (surge, _) = surge_and_unavailable(d);
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        let replicas = if recreate {
            want
        } else {
            new_replicas(d, sets, None)
        };
        let mut annotations = copied_annotations(d);
        annotations.insert(
            REVISION.into(),
            (Self::max_old_revision(sets, None) + 1).to_string(),
        );
        annotations.insert(DESIRED_REPLICAS.into(), want.to_string());
        annotations.insert(MAX_REPLICAS.into(), (want + surge).to_string());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![owner_ref_to(d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        match api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    self.events.normal(
                        d,
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {name} to {replicas} from 0"),
                    );
                }
                Ok(created)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours already (the cache lags) or a hash collision.
                let existing = api.get(&name).await?;
                let ours = controller_ref(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                let same =
                    template_without_hash(existing.spec.as_ref().and_then(|s| s.template.as_ref()))
                        == template_without_hash(Some(&spec.template));
                if ours && same {
                    return Ok(existing);
                }
                let dapi: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
                let patch =
                    serde_json::json!({"status": {"collisionCount": collision.unwrap_or(0) + 1}});
                dapi.patch_status(
                    &d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
                Err(Error::Invalid {
                    what: "replica set name",
                    msg: format!(
                        "{name} collides with an existing ReplicaSet; retrying with a new hash"
                    ),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sets a ReplicaSet's replicas and the deployment annotations on it.
    async fn scale(&self, d: &Deployment, rs: &ReplicaSet, to: i32) -> Result<ReplicaSet, Error> {
        let from = spec_replicas(rs);
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let (surge, _) = surge_and_unavailable(d);
        let patch = serde_json::json!({
            "metadata": {"annotations": {
                DESIRED_REPLICAS: want.to_string(),
                MAX_REPLICAS: (want + surge).to_string(),
            }},
            "spec": {"replicas": to},
        });
        let api: Api<ReplicaSet> = Api::namespaced(
            self.client.clone(),
            rs.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let out = api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        if from != to {
            let dir = if to > from { "up" } else { "down" };
            self.events.normal(
                d,
                "ScalingReplicaSet",
                format!(
                    "Scaled {dir} replica set {} to {to} from {from}",
                    rs.name_any()
                ),
            );
        }
        Ok(out)
    }

    /// One step of a rolling update; true when something was scaled.
    async fn rolling(
        &self,
        d: &Deployment,
        sets: &mut [ReplicaSet],
        new: usize,
    ) -> Result<bool, Error> {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        // Scale the new ReplicaSet up as far as maxSurge allows.
        let cur = spec_replicas(&sets[new]);
        let target = if cur > want {
            want
        } else {
            new_replicas(d, sets, Some(new))
        };
        if target != cur {
            let rs = sets[new].clone();
            sets[new] = self.scale(d, &rs, target).await?;
            return Ok(true);
        }
        // Scale old ones down as far as maxUnavailable allows.
        let (_, max_unavailable) = surge_and_unavailable(d);
        let old: Vec<usize> = (0..sets.len()).filter(|i| *i != new).collect();
        if old.iter().all(|i| spec_replicas(&sets[*i]) == 0) {
            return Ok(false);
        }
        let all: i32 = sets.iter().map(spec_replicas).sum();
        let min_available = want - max_unavailable;
        let (_, _, new_available) = status_of(&sets[new]);
        let new_unavailable = (spec_replicas(&sets[new]) - new_available).max(0);
        let max_down = all - min_available - new_unavailable;
        if max_down <= 0 {
            return Ok(false);
        }
        let mut scaled = false;
        // First the old pods that are not available anyway: removing them costs nothing.
        let mut cleaned = 0;
        for &i in &old {
            if cleaned >= max_down {
                break;
            }
            let r = spec_replicas(&sets[i]);
            let (_, _, avail) = status_of(&sets[i]);
            let unhealthy = (r - avail).max(0);
            if r == 0 || unhealthy == 0 {
                continue;
            }
            let down = unhealthy.min(max_down - cleaned);
            let rs = sets[i].clone();
            sets[i] = self.scale(d, &rs, r - down).await?;
            cleaned += down;
            scaled = true;
        }
        // Then available ones, keeping minAvailable.
        let available: i32 = sets
            .iter()
            .enumerate()
            .map(|(i, rs)| {
                let (_, _, a) = status_of(rs);
                if i == new {
                    a
                } else {
                    a.min(spec_replicas(rs))
                }
            })
            .sum();
        if available > min_available {
            let mut budget = available - min_available;
            for &i in &old {
                if budget <= 0 {
                    break;
                }
                let r = spec_replicas(&sets[i]);
                if r == 0 {
                    continue;
                }
                let down = r.min(budget);
                let rs = sets[i].clone();
                sets[i] = self.scale(d, &rs, r - down).await?;
                budget -= down;
                scaled = true;
            }
        }
        Ok(scaled)
    }

    /// Recreate: all old pods gone before the new ReplicaSet gets any.
    async fn recreate(
        &self,
        d: &Deployment,
        sets: &mut Vec<ReplicaSet>,
        new_idx: &mut Option<usize>,
    ) -> Result<bool, Error> {
        let mut scaled = false;
        for (i, slot) in sets.iter_mut().enumerate() {
            if Some(i) != *new_idx && spec_replicas(slot) > 0 {
                let rs = slot.clone();
                *slot = self.scale(d, &rs, 0).await?;
                scaled = true;
            }
        }
        if scaled {
            return Ok(true);
        }
        let old_uids: Vec<String> = sets
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != *new_idx)
            .filter_map(|(_, rs)| rs.metadata.uid.clone())
            .collect();
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let old_running = self.pods.in_namespace(ns).iter().any(|p| {
            controller_ref(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid))
                && (pod_is_active(p) || p.metadata.deletion_timestamp.is_some())
        });
        if old_running {
            return Ok(false);
        }
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        match *new_idx {
            None => {
                let rs = self.create_new(d, sets).await?;
                sets.push(rs);
                *new_idx = Some(sets.len() - 1);
                Ok(true)
            }
            Some(i) if spec_replicas(&sets[i]) != want => {
                let rs = sets[i].clone();
                sets[i] = self.scale(d, &rs, want).await?;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// Deletes the oldest empty ReplicaSets beyond revisionHistoryLimit.
    async fn cleanup(
        &self,
        d: &Deployment,
        sets: &[ReplicaSet],
        new: Option<usize>,
    ) -> Result<(), Error> {
        let limit = d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let old: Vec<&ReplicaSet> = sets
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new)
            .map(|(_, rs)| rs)
            .collect();
        if old.len() <= limit {
            return Ok(());
        }
        let mut excess = old.len() - limit;
        let api: Api<ReplicaSet> = Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or_default(),
        );
        // `sets` is sorted by revision: oldest first.
        for rs in old {
            if excess == 0 {
                break;
            }
            let (replicas, _, _) = status_of(rs);
            if spec_replicas(rs) != 0 || replicas != 0 || rs.metadata.deletion_timestamp.is_some() {
                continue;
            }
            crate::framework::ignore_not_found(
                api.delete(&rs.name_any(), &DeleteParams::default()).await,
            )?;
            excess -= 1;
        }
        Ok(())
    }

    async fn sync_status(
        &self,
        d: &Deployment,
        new: Option<&ReplicaSet>,
        sets: &[ReplicaSet],
        progressed: bool,
    ) -> Result<Action, Error> {
        let spec = d.spec.clone().unwrap_or_default();
        let want = spec.replicas.unwrap_or(1);
        let (_, max_unavailable) = surge_and_unavailable(d);
        let mut replicas = 0;
        let mut ready = 0;
        let mut available = 0;
        for rs in sets {
            let (r, rd, a) = status_of(rs);
            replicas += r;
            ready += rd;
            available += a;
        }
        let updated = new.map_or(0, |rs| status_of(rs).0);
        let old = d.status.clone().unwrap_or_default();
        let now = self.clock.now();
        let mut conditions = old.conditions.clone().unwrap_or_default();

        let (avail_status, avail_reason, avail_msg) = if available >= want - max_unavailable {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        set_condition(
            &mut conditions,
            "Available",
            avail_status,
            avail_reason,
            avail_msg.into(),
            now,
            false,
        );

        let new_name = new.map(|rs| rs.name_any()).unwrap_or_default();
        let complete = new.is_some() && updated == want && replicas == want && available == want;
        let deadline = spec.progress_deadline_seconds.filter(|s| *s < i32::MAX);
        let mut requeue = None;
        if spec.paused.unwrap_or(false) {
            set_condition(
                &mut conditions,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                now,
                false,
            );
        } else if complete {
            set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                now,
                false,
            );
        } else {
            let was_paused = conditions.iter().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("DeploymentPaused")
            });
            let moved = progressed
                || was_paused
                || updated != old.updated_replicas.unwrap_or(0)
                || replicas != old.replicas.unwrap_or(0)
                || ready != old.ready_replicas.unwrap_or(0)
                || available != old.available_replicas.unwrap_or(0)
                || !conditions.iter().any(|c| c.type_ == "Progressing");
            let timed_out = |conds: &[DeploymentCondition]| {
                let Some(secs) = deadline else { return false };
                conds
                    .iter()
                    .find(|c| c.type_ == "Progressing")
                    .and_then(|c| c.last_update_time.as_ref())
                    .and_then(|t| {
                        t.0.checked_add(SignedDuration::from_secs(i64::from(secs)))
                            .ok()
                    })
                    .is_some_and(|t| t < now)
            };
            if moved && !new_name.is_empty() {
                let reason = if was_paused {
                    "DeploymentResumed"
                } else {
                    "ReplicaSetUpdated"
                };
                let msg = if was_paused {
                    "Deployment is resumed".to_string()
                } else {
                    format!("ReplicaSet \"{new_name}\" is progressing.")
                };
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "True",
                    reason,
                    msg,
                    now,
                    true,
                );
            } else if timed_out(&conditions) {
                let msg = format!("ReplicaSet \"{new_name}\" has timed out progressing.");
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    msg,
                    now,
                    false,
                );
                self.events.warning(
                    d,
                    "ProgressDeadlineExceeded",
                    format!("Deployment {} has timed out progressing.", d.name_any()),
                );
            }
            if let Some(secs) = deadline
                && let Some(t) = conditions
                    .iter()
                    .find(|c| c.type_ == "Progressing" && c.status == "True")
                    .and_then(|c| c.last_update_time.as_ref())
            {
                let left = t.0.as_second() + i64::from(secs) - now.as_second();
                requeue = Some(Duration::from_secs(
                    left.clamp(1, i64::from(secs)) as u64 + 1,
                ));
            }
        }

        let status = DeploymentStatus {
            available_replicas: Some(available),
            collision_count: old.collision_count,
            conditions: Some(conditions),
            observed_generation: d.metadata.generation,
            ready_replicas: Some(ready),
            replicas: Some(replicas),
            terminating_replicas: old.terminating_replicas,
            unavailable_replicas: Some((want - available).max(0)),
            updated_replicas: Some(updated),
        };
        if status != old {
            let api: Api<Deployment> = Api::namespaced(
                self.client.clone(),
                d.metadata.namespace.as_deref().unwrap_or_default(),
            );
            match api
                .patch_status(
                    &d.name_any(),
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
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }
}

/// The deployment's own annotations, as carried onto its ReplicaSets.
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// How many replicas the new ReplicaSet may have now under maxSurge.
fn new_replicas(d: &Deployment, sets: &[ReplicaSet], new: Option<usize>) -> i32 {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let (surge, _) = surge_and_unavailable(d);
    let cur_new = new.map_or(0, |i| spec_replicas(&sets[i]));
    let current: i32 = sets.iter().map(spec_replicas).sum();
    let max_total = want + surge;
    if current >= max_total {
        return cur_new;
    }
    cur_new + (max_total - current).min(want - cur_new).max(0)
}

/// Sets a condition; the transition time moves only when the status does,
/// and the update time when something changed (or `touch`).
fn set_condition(
    conds: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
    touch: bool,
) {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status == status && c.reason.as_deref() == Some(reason) && !touch {
            return;
        }
        if c.status != status {
            c.last_transition_time = Some(Time(now));
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message);
        c.last_update_time = Some(Time(now));
        return;
    }
    conds.push(DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(now)),
        last_update_time: Some(Time(now)),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};

    fn deploy(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn percentages_round_like_upstream() {
        let d = deploy(
            10,
            IntOrString::String("25%".into()),
            IntOrString::String("25%".into()),
        );
        assert_eq!(surge_and_unavailable(&d), (3, 2));
        let d = deploy(3, IntOrString::Int(0), IntOrString::Int(0));
        assert_eq!(surge_and_unavailable(&d), (0, 1));
    }

    #[test]
    fn hash_ignores_its_own_label_and_changes_with_collisions() {
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: None,
        };
        let h = pod_template_hash(Some(&t), None);
        assert!(h.len() >= 6 && h.chars().all(|c| c.is_ascii_alphanumeric()));
        let mut with = t.clone();
        with.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), h.clone());
        assert_eq!(pod_template_hash(Some(&with), None), h);
        assert_ne!(pod_template_hash(Some(&t), Some(1)), h);
    }

    #[test]
    fn new_rs_surges_within_max_surge() {
        let d = deploy(3, IntOrString::Int(1), IntOrString::Int(0));
        let old = ReplicaSet {
            spec: Some(ReplicaSetSpec {
                replicas: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let new = ReplicaSet::default();
        let sets = vec![old, new];
        assert_eq!(new_replicas(&d, &sets, Some(1)), 1);
    }
}
