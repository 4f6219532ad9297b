//! One task per pod bound to this node: it keeps the pod's sandbox and
//! containers in line with the latest spec it was handed, writes the pod
//! status, emits events, and on deletion stops everything within the grace
//! period and removes the Pod object.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k3rs_common::events::{Event as KubeEvent, EventType, Recorder};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodStatus, Secret, Service};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Resource};
use tokio::sync::watch;

use crate::cri::Runtime;
use crate::env::{self, Lookups, Source};
use crate::pod_status;
use crate::pod_sync::{self, Inputs, PodEvent, Syncer};
use crate::probe::Prober;
use crate::sandbox::{self, PodDefaults};

/// How often a pod's containers are looked at when nothing else happens
/// (kubelet's PLEG relists every second too).
const RESYNC: Duration = Duration::from_secs(1);

/// ConfigMaps, Secrets and tokens are re-read this often (and whenever the pod changes).
const INPUTS_TTL: Duration = Duration::from_secs(10);

struct CachedInputs {
    resource_version: String,
    at: std::time::Instant,
    inputs: Inputs,
}

/// What every worker shares.
pub struct Shared<R> {
    pub client: kube::Client,
    pub rt: Arc<R>,
    pub defaults: PodDefaults,
    pub host_ip: String,
    pub recorder: Recorder,
    pub volumes: crate::volumes::Volumes,
    /// Failed image pulls per pod and image (`ImagePullBackOff`).
    pub image_backoff: crate::images::PullBackoff,
}

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Runs until the pod is gone (deleted and cleaned up) or `rx` closes (agent stopping).
pub async fn run<R: Runtime>(shared: Arc<Shared<R>>, mut rx: watch::Receiver<Option<Pod>>) {
    let mut last_status: Option<PodStatus> = None;
    let mut sent_events: BTreeMap<String, ()> = BTreeMap::new();
    let mut cached: Option<CachedInputs> = None;
    let mut prober = Prober::new();
    let mut known_uid = String::new();
    loop {
        let current = rx.borrow_and_update().clone();
        if let Some(p) = &current {
            known_uid = sandbox::pod_uid(p);
        }
        let wait = match current {
            None => {
                // Gone from the API (force-deleted): just clean up the runtime.
                remove_orphan(&shared, &known_uid).await;
                return;
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                let grace = sandbox::termination_grace(&pod);
                if cleanup(&shared, &pod, grace).await {
                    return;
                }
                Duration::from_secs(2)
            }
            Some(pod) => {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Succeeded" | "Failed")) {
                    // Finished: stop the sandbox, keep the containers for their status.
                    let uid = sandbox::pod_uid(&pod);
                    if let Err(e) = pod_sync::stop_sandboxes(shared.rt.as_ref(), &uid).await {
                        tracing::warn!(pod = %key(&pod), error = %e, "stopping a finished pod");
                    }
                    Duration::from_secs(3600)
                } else {
                    sync_once(
                        &shared,
                        &pod,
                        &mut last_status,
                        &mut sent_events,
                        &mut cached,
                        &mut prober,
                    )
                    .await
                }
            }
        };
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

async fn sync_once<R: Runtime>(
    shared: &Shared<R>,
    pod: &Pod,
    last_status: &mut Option<PodStatus>,
    sent_events: &mut BTreeMap<String, ()>,
    cached: &mut Option<CachedInputs>,
    prober: &mut Prober,
) -> Duration {
    // The spec's generation, not the resourceVersion: our own status writes
    // bump the latter and must not trigger a re-read of everything.
    let rv = pod
        .metadata
        .generation
        .map(|g| g.to_string())
        .or_else(|| pod.metadata.resource_version.clone())
        .unwrap_or_default();
    let fresh = cached.as_ref().is_some_and(|c| {
        c.resource_version == rv && c.at.elapsed() < INPUTS_TTL && c.inputs.is_complete()
    });
    if !fresh {
        *cached = Some(CachedInputs {
            resource_version: rv,
            at: std::time::Instant::now(),
            inputs: inputs(shared, pod).await,
        });
    }
    let Some(inputs) = cached.as_ref().map(|c| c.inputs.clone()) else {
        return RESYNC;
    };
    let syncer = Syncer {
        rt: shared.rt.as_ref(),
        defaults: &shared.defaults,
        cgroup_parent: crate::resources::pod_cgroup(pod),
        pods_dir: Some(shared.volumes.pods_dir().to_path_buf()),
        now_nanos: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        image_backoff: &shared.image_backoff,
    };
    let mut outcome = match syncer.sync(pod, &inputs).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(pod = %key(pod), error = %e, "syncing pod");
            return Duration::from_secs(2);
        }
    };
    let probed = prober
        .run(
            shared.rt.as_ref(),
            pod,
            &outcome.observed,
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        )
        .await;
    outcome.observed.health = probed.health;
    outcome.events.extend(probed.events);
    let mut to_send = Vec::new();
    for ev in outcome.events.drain(..) {
        // BackOff repeats every pass; the recorder aggregates, but keep the noise down.
        let k = format!("{}{}{:?}", ev.reason, ev.note, ev.field_path);
        if matches!(ev.reason, "BackOff" | "FailedMount") && sent_events.contains_key(&k) {
            continue;
        }
        sent_events.insert(k, ());
        to_send.push(ev);
    }
    // Events go out in the background, in order: the status write that
    // makes the pod Running must not wait behind them.
    if !to_send.is_empty() {
        let recorder = shared.recorder.clone();
        let pod_ref = pod.object_ref(&());
        let pod_key = key(pod);
        tokio::spawn(async move {
            for ev in &to_send {
                send_event(&recorder, pod_ref.clone(), &pod_key, ev).await;
            }
        });
    }
    if sent_events.len() > 256 {
        sent_events.clear();
    }
    let mut status = pod_status::compute(
        pod,
        &outcome.observed,
        &shared.host_ip,
        k8s_openapi::jiff::Timestamp::now(),
    );
    // Keep transition times stable against what we wrote last.
    if let Some(prev) = last_status.as_ref() {
        let mut with_prev = pod.clone();
        with_prev.status = Some(prev.clone());
        status = pod_status::compute(
            &with_prev,
            &outcome.observed,
            &shared.host_ip,
            k8s_openapi::jiff::Timestamp::now(),
        );
        if let Some(st) = pod.status.as_ref().and_then(|s| s.start_time.clone()) {
            status.start_time = Some(st);
        }
    }
    // What the pod shows counts, not only what was written last: a static
    // pod's mirror may have been replaced by a fresh one with no status, and
    // the node lifecycle controller marks pods not ready while this agent
    // could not reach the API.
    let unchanged = last_status
        .as_ref()
        .is_some_and(|prev| same_ignoring_times(prev, &status))
        && ready_of(pod.status.as_ref()) == ready_of(Some(&status))
        && (!crate::static_pods::is_static(pod)
            || pod
                .status
                .as_ref()
                .is_some_and(|s| same_ignoring_times(s, &status)));
    if !unchanged {
        let api: Api<Pod> = Api::namespaced(
            shared.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let patch = serde_json::json!({ "status": status });
        match api
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => *last_status = Some(status),
            Err(e) => tracing::warn!(pod = %key(pod), error = %e, "writing pod status"),
        }
    }
    // Restarts asked for by failed liveness/startup probes: the container
    // stops here (within its grace period) and the next pass starts it again
    // under the pod's restart policy and back-off.
    for kill in &probed.kills {
        let ev = PodEvent {
            warning: false,
            reason: "Killing",
            note: kill.message(),
            field_path: Some(format!("spec.containers{{{}}}", kill.name)),
        };
        publish(shared, pod, &ev).await;
        let ip = outcome
            .observed
            .sandbox
            .as_ref()
            .and_then(|s| s.ips.first().cloned())
            .unwrap_or_default();
        let (events, r) = crate::lifecycle::stop_container(
            shared.rt.as_ref(),
            Some(pod),
            &kill.name,
            &kill.container_id,
            &ip,
            kill.grace,
        )
        .await;
        for ev in &events {
            publish(shared, pod, ev).await;
        }
        if let Err(e) = r {
            tracing::warn!(pod = %key(pod), container = %kill.name, error = %e, "stopping an unhealthy container");
        }
    }
    if !probed.kills.is_empty() {
        return Duration::from_millis(200);
    }
    outcome
        .wake_after
        .map_or(RESYNC, |w| w.min(RESYNC).max(Duration::from_millis(200)))
}

/// Status equality that ignores condition timestamps (they only move on change).
/// The status of the Ready condition.
fn ready_of(s: Option<&PodStatus>) -> Option<&str> {
    s?.conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

fn same_ignoring_times(a: &PodStatus, b: &PodStatus) -> bool {
    let strip = |s: &PodStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_transition_time = None;
        }
        s
    };
    pod_status::same(&strip(a), &strip(b))
}

/// ConfigMaps/Secrets for env, and the pod's volumes.
async fn inputs<R: Runtime>(shared: &Shared<R>, pod: &Pod) -> Inputs {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.clone().unwrap_or_default();
    let all: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .cloned()
        .chain(
            crate::ephemeral::containers(pod)
                .into_iter()
                .map(|(c, _)| c),
        )
        .collect();
    let mut lookups = Lookups::new();
    for c in &all {
        for src in env::sources(c) {
            if lookups.contains_key(&src) {
                continue;
            }
            let data = match &src {
                Source::ConfigMap(name) => {
                    let api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), ns);
                    match api.get_opt(name).await {
                        Ok(cm) => cm.map(|cm| cm.data.unwrap_or_default()),
                        Err(e) => {
                            tracing::warn!(pod = %key(pod), error = %e, "reading configmap {name}");
                            None
                        }
                    }
                }
                Source::Secret(name) => {
                    let api: Api<Secret> = Api::namespaced(shared.client.clone(), ns);
                    match api.get_opt(name).await {
                        Ok(s) => s.map(|s| {
                            s.data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                                .collect()
                        }),
                        Err(e) => {
                            tracing::warn!(pod = %key(pod), error = %e, "reading secret {name}");
                            None
                        }
                    }
                }
            };
            lookups.insert(src, data);
        }
    }
    let base = env::service_env(&services(shared, pod).await);
    let mut out = Inputs::default();
    for c in &all {
        out.env.insert(
            c.name.clone(),
            env::resolve(pod, c, &lookups, &shared.host_ip, &base).map_err(|e| e.to_string()),
        );
    }
    out.pull_credentials = pull_credentials(shared, pod).await;
    match shared
        .volumes
        .prepare(&shared.client, pod, &shared.host_ip)
        .await
    {
        Ok(mounts) => out.mounts = mounts,
        Err(e) => out.volume_error = Some(e.to_string()),
    }
    out
}

/// Registry logins from the pod's `imagePullSecrets`. A missing or bad
/// secret is only logged: the pull then goes without it, as with kubelet.
async fn pull_credentials<R>(shared: &Shared<R>, pod: &Pod) -> Vec<crate::images::Credential> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), ns);
    let mut out = Vec::new();
    let refs = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    for r in refs {
        match api.get_opt(&r.name).await {
            Ok(Some(s)) => match crate::images::credentials(&s) {
                Ok(c) => out.extend(c),
                Err(e) => tracing::warn!(pod = %key(pod), error = %e, "unusable image pull secret"),
            },
            Ok(None) => {
                tracing::warn!(pod = %key(pod), secret = %r.name, "image pull secret not found; pulling without it")
            }
            Err(e) => {
                tracing::warn!(pod = %key(pod), error = %e, "reading image pull secret {}", r.name)
            }
        }
    }
    out
}

/// Services whose variables the pod gets: the API server's own
/// (`default/kubernetes`, always, so in-cluster clients find it) and, unless
/// `enableServiceLinks: false`, those of the pod's namespace.
async fn services<R>(shared: &Shared<R>, pod: &Pod) -> Vec<Service> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut out = Vec::new();
    if links {
        let api: Api<Service> = Api::namespaced(shared.client.clone(), ns);
        match api.list(&Default::default()).await {
            Ok(list) => out.extend(list.items),
            Err(e) => tracing::debug!(pod = %key(pod), error = %e, "listing services"),
        }
    }
    if ns != "default" || !links {
        let api: Api<Service> = Api::namespaced(shared.client.clone(), "default");
        if let Ok(Some(k)) = api.get_opt("kubernetes").await {
            out.push(k);
        }
    }
    out
}

async fn publish<R>(shared: &Shared<R>, pod: &Pod, ev: &PodEvent) {
    send_event(&shared.recorder, pod.object_ref(&()), &key(pod), ev).await;
}

async fn send_event(
    recorder: &Recorder,
    mut reference: k8s_openapi::api::core::v1::ObjectReference,
    pod_key: &str,
    ev: &PodEvent,
) {
    reference.field_path = ev.field_path.clone();
    let event = KubeEvent {
        type_: if ev.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: ev.reason.to_string(),
        note: Some(ev.note.clone()),
        action: ev.reason.to_string(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::debug!(pod = %pod_key, error = %e, "publishing event");
    }
}

/// Stops everything of the pod being deleted, then removes the Pod object.
/// Returns false to retry later.
async fn cleanup<R: Runtime>(shared: &Shared<R>, pod: &Pod, grace: i64) -> bool {
    let uid = sandbox::pod_uid(pod);
    let mut events = Vec::new();
    let result = pod_sync::kill_pod(shared.rt.as_ref(), &uid, grace, Some(pod), &mut events).await;
    for ev in &events {
        publish(shared, pod, ev).await;
    }
    if let Err(e) = result {
        tracing::warn!(pod = %key(pod), error = %e, "stopping pod");
        return false;
    }
    shared.volumes.remove(&uid);
    crate::resources::remove_pod_cgroups(std::path::Path::new(CGROUP_ROOT), &uid);
    if crate::static_pods::is_static(pod) {
        // A static pod has no API object of its own; its mirror is the
        // static pod manager's.
        return true;
    }
    let api: Api<Pod> = Api::namespaced(
        shared.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api
        .delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp)
        .await
    {
        Ok(_) => true,
        // Already gone, or a new pod with the same name (uid precondition).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => true,
        Err(e) => {
            tracing::warn!(pod = %key(pod), error = %e, "deleting pod");
            false
        }
    }
}

/// Kills a pod that only the runtime still knows (after `uid` vanished from the API).
pub async fn remove_orphan<R: Runtime>(shared: &Shared<R>, uid: &str) {
    let mut events = Vec::new();
    match pod_sync::kill_pod(shared.rt.as_ref(), uid, 0, None, &mut events).await {
        Ok(()) => {
            shared.volumes.remove(uid);
            crate::resources::remove_pod_cgroups(std::path::Path::new(CGROUP_ROOT), uid);
            tracing::info!(%uid, "removed the containers of a pod that no longer exists");
        }
        Err(e) => tracing::warn!(%uid, error = %e, "removing an orphaned pod"),
    }
}
