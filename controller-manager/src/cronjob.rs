//! The CronJob controller: creates a Job (`<cronjob>-<minutes since epoch>`)
//! at each scheduled time, honouring concurrencyPolicy, suspend and
//! startingDeadlineSeconds, keeps the successful/failed history limits, and
//! reports `active`, `lastScheduleTime` and `lastSuccessfulTime`. Time comes
//! from the controller's clock so tests can move it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::cron::Schedule;
use crate::framework::{
    Action, Change, Ctx, Events, Informer, WorkQueue, controller_ref, key_of, object_reference,
    owner_ref_to, run_workers, split_key,
};
use crate::job::is_finished;

pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Longest wait between syncs of one CronJob, so a moved clock is noticed.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        events: ctx.events.clone(),
        clock: ctx.clock.clone(),
        cronjobs: ctx.informers.get::<CronJob>(),
        jobs: ctx.informers.get::<Job>(),
    });
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        ctl.cronjobs.on_change(move |ch| {
            if let Change::Applied { new, .. } = ch {
                q.add(key_of(*new));
            }
        });
    }
    {
        let q = queue.clone();
        ctl.jobs.on_change(move |ch| {
            let j = match ch {
                Change::Applied { new, .. } => *new,
                Change::Deleted(j) => *j,
            };
            if let Some(r) = controller_ref(&j.metadata).filter(|r| r.kind == "CronJob") {
                q.add(format!(
                    "{}/{}",
                    j.metadata.namespace.as_deref().unwrap_or_default(),
                    r.name
                ));
            }
        });
    }
    let c = ctl.clone();
    run_workers(ctx, "cronjob", queue, 2, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
    Ok(())
}

struct Controller {
    client: Client,
    events: Events,
    clock: crate::Clock,
    cronjobs: Arc<Informer<CronJob>>,
    jobs: Arc<Informer<Job>>,
}

fn finished_at(j: &Job) -> Option<Timestamp> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

fn succeeded(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

impl Controller {
    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(cj) = self.cronjobs.get(Some(ns), name) else {
            return Ok(Action::Done);
        };
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let spec = cj.spec.clone().unwrap_or_default();
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let cj_api: Api<CronJob> = Api::namespaced(self.client.clone(), ns);
        let mut jobs: Vec<Arc<Job>> = self
            .jobs
            .in_namespace(ns)
            .into_iter()
            .filter(|j| controller_ref(&j.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let now = self.clock.now();
        let old_status = cj.status.clone().unwrap_or_default();
        let mut status = old_status.clone();

        // History limits: the oldest finished Jobs beyond them go.
        let mut keep_ok = spec.successful_jobs_history_limit.unwrap_or(3).max(0) as usize;
        let mut keep_failed = spec.failed_jobs_history_limit.unwrap_or(1).max(0) as usize;
        let mut last_success = old_status.last_successful_time.as_ref().map(|t| t.0);
        for j in jobs.iter().rev().filter(|j| is_finished(j)) {
            if succeeded(j) {
                if let Some(t) = finished_at(j) {
                    last_success = Some(last_success.map_or(t, |l| l.max(t)));
                }
                if keep_ok > 0 {
                    keep_ok -= 1;
                    continue;
                }
            } else if keep_failed > 0 {
                keep_failed -= 1;
                continue;
            }
            if j.metadata.deletion_timestamp.is_none() {
                let dp = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..Default::default()
                };
                match jobs_api.delete(&j.name_any(), &dp).await {
                    Ok(_) => self.events.normal(
                        cj.as_ref(),
                        "SuccessfulDelete",
                        format!("Deleted job {}", j.name_any()),
                    ),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let active: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| !is_finished(j) && j.metadata.deletion_timestamp.is_none())
            .collect();
        status.active = (!active.is_empty()).then(|| {
            active
                .iter()
                .map(|j| object_reference(j.as_ref()))
                .collect()
        });
        status.last_successful_time = last_success.map(Time);

        let mut action = Action::Done;
        if cj.metadata.deletion_timestamp.is_none() && !spec.suspend.unwrap_or(false) {
            match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
                Err(msg) if msg.starts_with("unknown time zone") => {
                    // The API checks only the zone name's shape; the
                    // database that knows the zones is here.
                    self.events.warning(
                        cj.as_ref(),
                        "UnknownTimeZone",
                        format!(
                            "invalid timeZone: {:?}: {msg}",
                            spec.time_zone.as_deref().unwrap_or_default()
                        ),
                    );
                }
                Err(msg) => {
                    self.events.warning(
                        cj.as_ref(),
                        "UnparseableSchedule",
                        format!("unparseable schedule {:?}: {msg}", spec.schedule),
                    );
                }
                Ok(schedule) => {
                    action = self
                        .schedule(&cj, &schedule, &active, &mut status, now, &jobs)
                        .await?;
                }
            }
        }
        if status != old_status {
            let patch = serde_json::json!({"status": {
                "active": status.active,
                "lastScheduleTime": status.last_schedule_time,
                "lastSuccessfulTime": status.last_successful_time,
            }});
            match cj_api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::Done),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(action)
    }

    async fn schedule(
        &self,
        cj: &CronJob,
        schedule: &Schedule,
        active: &[&Arc<Job>],
        status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
        now: Timestamp,
        jobs: &[Arc<Job>],
    ) -> Result<Action, Error> {
        let spec = cj.spec.clone().unwrap_or_default();
        let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
        let mut earliest = status.last_schedule_time.as_ref().map_or(created, |t| t.0);
        if let Some(sds) = spec.starting_deadline_seconds {
            let window = now
                .checked_sub(SignedDuration::from_secs(sds))
                .unwrap_or(now);
            earliest = earliest.max(window);
        }
        let (scheduled, missed) = schedule.most_recent(earliest, now, 100);
        if missed >= 100 {
            self.events.warning(
                cj,
                "TooManyMissedTimes",
                "too many missed start times; check clock skew".into(),
            );
        }
        let wait = schedule
            .next_after(now)
            .map(|n| Duration::from_secs((n.as_second() - now.as_second()).max(1) as u64))
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT);
        let requeue = Action::RequeueAfter(wait);
        let Some(scheduled) = scheduled else {
            return Ok(requeue);
        };
        let name = format!("{}-{}", cj.name_any(), scheduled.as_second() / 60);
        if jobs.iter().any(|j| j.name_any() == name) {
            status.last_schedule_time = Some(Time(scheduled));
            return Ok(requeue);
        }
        let ns = cj.metadata.namespace.clone().unwrap_or_default();
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        match spec.concurrency_policy.as_deref() {
            Some("Forbid") if !active.is_empty() => {
                self.events.normal(cj, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid".into());
                return Ok(requeue);
            }
            Some("Replace") => {
                for j in active {
                    let dp = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..Default::default()
                    };
                    match jobs_api.delete(&j.name_any(), &dp).await {
                        Ok(_) => self.events.normal(
                            cj,
                            "SuccessfulDelete",
                            format!("Deleted job {}", j.name_any()),
                        ),
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                status.active = None;
            }
            _ => {}
        }
        let template = spec.job_template.clone();
        let tm = template.metadata.unwrap_or_default();
        let mut annotations = tm.annotations.unwrap_or_default();
        annotations.insert(SCHEDULED_TIMESTAMP.into(), scheduled.to_string());
        let job = Job {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns),
                labels: tm.labels,
                annotations: Some(annotations),
                owner_references: Some(vec![owner_ref_to(cj)]),
                ..Default::default()
            },
            spec: template.spec,
            status: None,
        };
        match jobs_api.create(&PostParams::default(), &job).await {
            Ok(j) => {
                self.events
                    .normal(cj, "SuccessfulCreate", format!("Created job {name}"));
                let mut act: Vec<ObjectReference> = status.active.clone().unwrap_or_default();
                act.push(object_reference(&j));
                status.active = Some(act);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                self.events.warning(
                    cj,
                    "FailedCreate",
                    format!("Error creating job: {}", crate::framework::api_message(&e)),
                );
                return Err(e.into());
            }
        }
        status.last_schedule_time = Some(Time(scheduled));
        Ok(requeue)
    }
}
