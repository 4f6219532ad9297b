//! The ttl-after-finished controller: deletes a finished Job (and, in the
//! foreground, its pods) once `ttlSecondsAfterFinished` has passed since it
//! completed or failed.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PropagationPolicy};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::framework::{Action, Change, Ctx, Informer, WorkQueue, key_of, run_workers, split_key};
use crate::job::is_finished;

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let jobs = ctx.informers.get::<Job>();
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        jobs.on_change(move |ch| {
            if let Change::Applied { new, .. } = ch
                && new
                    .spec
                    .as_ref()
                    .is_some_and(|s| s.ttl_seconds_after_finished.is_some())
                && is_finished(new)
            {
                q.add(key_of(*new));
            }
        });
    }
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        clock: ctx.clock.clone(),
        jobs,
    });
    run_workers(ctx, "ttl-after-finished", queue, 2, move |key| {
        let c = ctl.clone();
        async move { c.sync(&key).await }
    });
    Ok(())
}

struct Controller {
    client: Client,
    clock: crate::Clock,
    jobs: Arc<Informer<Job>>,
}

/// When a finished Job's TTL runs out (`None`: no TTL, or not finished).
pub fn expires_at(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished_at = job
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?
        .last_transition_time
        .as_ref()?
        .0;
    finished_at
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(ttl)))
        .ok()
}

impl Controller {
    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = split_key(key);
        let Some(job) = self.jobs.get(ns, name) else {
            return Ok(Action::Done);
        };
        if job.metadata.deletion_timestamp.is_some() || !is_finished(&job) {
            return Ok(Action::Done);
        }
        let now = self.clock.now();
        // A finished Job without a transition time counts as finished now.
        let Some(expires) = expires_at(&job).or_else(|| {
            let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
            now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(ttl)))
                .ok()
        }) else {
            return Ok(Action::Done);
        };
        if expires > now {
            let wait = expires.as_second() - now.as_second();
            return Ok(Action::RequeueAfter(
                Duration::from_secs(wait.max(1) as u64),
            ));
        }
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(kube::api::Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns.unwrap_or_default());
        match api.delete(&job.name_any(), &dp).await {
            Ok(_) => {
                tracing::info!(job = %key, "deleted finished job after its TTL");
                Ok(Action::Done)
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::Done),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_ttl_after_the_finish_transition() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j"},
            "spec": {"ttlSecondsAfterFinished": 30, "template": {}},
            "status": {"conditions": [
                {"type": "Complete", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]},
        }))
        .unwrap();
        assert_eq!(
            expires_at(&job).map(|t| t.to_string()).as_deref(),
            Some("2025-01-01T00:00:30Z")
        );
    }
}
