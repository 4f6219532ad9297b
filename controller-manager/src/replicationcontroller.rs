//! The ReplicationController controller: the ReplicaSet logic (see
//! [`crate::replicaset`]) for the older kind, whose selector is a plain label
//! map that defaults to the template's labels.

use k8s_openapi::api::apps::v1::ReplicaSetCondition;
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::Error;
use crate::framework::Ctx;
use crate::replicaset::{ReplicaStatus, Replicated, start_for};

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    start_for::<ReplicationController>(ctx)
}

impl Replicated for ReplicationController {
    const CONTROLLER: &'static str = "replicationcontroller";

    fn selector(&self) -> Option<LabelSelector> {
        let spec = self.spec.as_ref()?;
        let labels = match &spec.selector {
            Some(s) if !s.is_empty() => s.clone(),
            _ => spec
                .template
                .as_ref()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default(),
        };
        Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        })
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
        // The condition types share every field, and so their JSON.
        let conditions = s
            .conditions
            .iter()
            .flatten()
            .filter_map(|c| {
                serde_json::from_value::<ReplicaSetCondition>(serde_json::to_value(c).ok()?).ok()
            })
            .collect();
        Some(ReplicaStatus {
            replicas: s.replicas,
            fully_labeled: s.fully_labeled_replicas.unwrap_or(0),
            ready: s.ready_replicas.unwrap_or(0),
            available: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation,
            conditions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_defaults_to_template_labels() {
        let rc: ReplicationController = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "rc"},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "x"}}}},
        }))
        .unwrap();
        let sel = rc.selector().unwrap();
        assert_eq!(sel.match_labels.unwrap()["app"], "x");
        assert_eq!(rc.replicas(), 2);
    }
}
