//! Writes that report scheduling outcomes: core/v1 Events (best effort, dropped
//! when the apiserver falls behind, like upstream's broadcaster) and the
//! PodScheduled condition / nominatedNodeName on pods.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use rand::Rng;
use tokio::sync::{Semaphore, mpsc};

pub const COMPONENT: &str = "default-scheduler";

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Event>,
    instance: String,
}

impl Recorder {
    /// Starts the sender task; it ends when every Recorder is dropped.
    pub fn start(client: kube::Client, instance: String) -> Self {
        let (tx, mut rx) = mpsc::channel::<Event>(8192);
        tokio::spawn(async move {
            let limit = Arc::new(Semaphore::new(16));
            while let Some(ev) = rx.recv().await {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let ns = ev.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                tokio::spawn(async move {
                    if let Err(e) = api.create(&PostParams::default(), &ev).await {
                        tracing::debug!(error = %e, "event not recorded");
                    }
                    drop(permit);
                });
            }
        });
        Self { tx, instance }
    }

    pub fn pod_event(&self, pod: &Pod, type_: &str, reason: &str, action: &str, message: String) {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let suffix: u64 = rand::rng().random();
        let now = Timestamp::now();
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{suffix:016x}")),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name),
                namespace: Some(ns),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            action: Some(action.into()),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(self.instance.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            ..Event::default()
        };
        if self.tx.try_send(ev).is_err() {
            tracing::debug!(reason, "event dropped: recorder queue full");
        }
    }
}

/// Whether the pod already carries exactly this failure, so re-patching is pointless.
pub fn already_reported(pod: &Pod, message: &str, nominated: Option<&str>) -> bool {
    let status = pod.status.as_ref();
    let same_condition = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        });
    let same_nominated =
        nominated.is_none() || status.and_then(|s| s.nominated_node_name.as_deref()) == nominated;
    same_condition && same_nominated
}

/// Sets PodScheduled=False/Unschedulable (and nominatedNodeName when preempting).
pub async fn patch_unschedulable(
    client: kube::Client,
    pod: Arc<Pod>,
    message: String,
    nominated: Option<String>,
) {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let mut status = serde_json::json!({
        "conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": Timestamp::now().to_string(),
        }]
    });
    if let Some(n) = nominated {
        status["nominatedNodeName"] = serde_json::Value::String(n);
    }
    let patch = serde_json::json!({ "status": status });
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "could not update pod status");
    }
}
