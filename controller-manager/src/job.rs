//! The Job controller: runs pods until `completions` succeed (NonIndexed or
//! Indexed), at most `parallelism` at a time, and fails the Job past
//! `backoffLimit`, `activeDeadlineSeconds` or a matching `podFailurePolicy`
//! rule. Pods carry the `batch.kubernetes.io/job-tracking` finalizer until
//! their outcome is counted (through `status.uncountedTerminatedPods`, so a
//! crash between the two steps never loses or doubles a count).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::framework::{
    Action, Change, Ctx, Events, Expectations, Informer, WorkQueue, controller_ref, key_of,
    pod_is_ready, run_workers, split_key,
};

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        events: ctx.events.clone(),
        clock: ctx.clock.clone(),
        jobs: ctx.informers.get::<Job>(),
        pods: ctx.informers.get::<Pod>(),
        expectations: Expectations::default(),
        counted: Mutex::new(HashMap::new()),
        written: Mutex::new(HashMap::new()),
    });
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        let c = ctl.clone();
        ctl.jobs.on_change(move |ch| match ch {
            Change::Applied { new, .. } => q.add(key_of(*new)),
            Change::Deleted(j) => {
                c.expectations.forget(&key_of(*j));
                if let Ok(mut m) = c.counted.lock() {
                    m.remove(j.metadata.uid.as_deref().unwrap_or_default());
                }
                if let Ok(mut m) = c.written.lock() {
                    m.remove(&key_of(*j));
                }
            }
        });
    }
    {
        let q = queue.clone();
        let c = ctl.clone();
        ctl.pods.on_change(move |ch| {
            let (pod, old) = match ch {
                Change::Applied { new, old } => (*new, old.as_deref()),
                Change::Deleted(p) => (*p, None),
            };
            let Some(r) = controller_ref(&pod.metadata).filter(|r| r.kind == "Job") else {
                return;
            };
            let key = format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                r.name
            );
            match ch {
                Change::Applied { .. } if old.is_none() => c.expectations.observed_add(&key),
                Change::Applied { .. } => {
                    if pod.metadata.deletion_timestamp.is_some()
                        && old.is_some_and(|o| o.metadata.deletion_timestamp.is_none())
                    {
                        c.expectations.observed_del(&key);
                    }
                }
                Change::Deleted(_) => {
                    if pod.metadata.deletion_timestamp.is_none() {
                        c.expectations.observed_del(&key);
                    }
                }
            }
            q.add(key);
        });
    }
    let c = ctl.clone();
    run_workers(ctx, "job", queue, ctx.config.concurrent_syncs, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
    Ok(())
}

struct Controller {
    client: Client,
    events: Events,
    clock: crate::Clock,
    jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<Pod>>,
    expectations: Expectations,
    /// Per Job UID: pods whose outcome our last status write already counts
    /// (the pod cache may still show their finalizer).
    counted: Mutex<HashMap<String, HashSet<String>>>,
    /// Per Job key: resourceVersion of our last status write; an older
    /// cached Job would make us count from stale numbers.
    written: Mutex<HashMap<String, u64>>,
}

fn rv(meta: &kube::api::ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn has_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

pub fn is_finished(job: &Job) -> bool {
    has_condition(job, "Complete") || has_condition(job, "Failed")
}

fn pod_index(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
}

/// "1,3-5" → {1,3,4,5}.
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// {1,3,4,5} → "1,3-5", the compressed form upstream writes.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// What a podFailurePolicy says about a failed pod.
#[derive(Debug, PartialEq)]
enum PolicyAction {
    FailJob,
    Ignore,
    Count,
    FailIndex,
}

fn pod_failure_action(job: &Job, pod: &Pod) -> PolicyAction {
    let Some(policy) = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
    else {
        return PolicyAction::Count;
    };
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    for rule in &policy.rules {
        let matched = if let Some(codes) = &rule.on_exit_codes {
            statuses.iter().any(|cs| {
                if codes.container_name.as_ref().is_some_and(|n| n != &cs.name) {
                    return false;
                }
                let Some(code) = cs
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    return false;
                };
                // Exit code 0 never matches (as upstream).
                code != 0
                    && match codes.operator.as_str() {
                        "In" => codes.values.contains(&code),
                        "NotIn" => !codes.values.contains(&code),
                        _ => false,
                    }
            })
        } else if let Some(conds) = &rule.on_pod_conditions {
            let pc = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            conds.iter().any(|want| {
                let want_status = &want.status;
                pc.iter()
                    .any(|c| c.type_ == want.type_ && &c.status == want_status)
            })
        } else {
            false
        };
        if matched {
            return match rule.action.as_str() {
                "FailJob" => PolicyAction::FailJob,
                "Ignore" => PolicyAction::Ignore,
                "FailIndex" => PolicyAction::FailIndex,
                _ => PolicyAction::Count,
            };
        }
    }
    PolicyAction::Count
}

fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn upsert(conds: &mut Vec<JobCondition>, c: JobCondition) {
    if let Some(cur) = conds.iter_mut().find(|x| x.type_ == c.type_) {
        if cur.status != c.status || cur.reason != c.reason {
            *cur = c;
        }
    } else {
        conds.push(c);
    }
}

impl Controller {
    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(job) = self.jobs.get(Some(ns), name) else {
            return Ok(Action::Done);
        };
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let last_write = self
            .written
            .lock()
            .ok()
            .and_then(|m| m.get(key).copied())
            .unwrap_or(0);
        if rv(&job.metadata) < last_write {
            // Our own newer write is on its way through the watch; sync then.
            return Ok(Action::Done);
        }
        let already: HashSet<String> = self
            .counted
            .lock()
            .ok()
            .and_then(|m| m.get(&uid).cloned())
            .unwrap_or_default();
        let pods: Vec<Arc<Pod>> = self
            .pods
            .in_namespace(ns)
            .into_iter()
            .filter(|p| controller_ref(&p.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let job_api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let now = self.clock.now();
        let spec = job.spec.clone().unwrap_or_default();
        let mut status = job.status.clone().unwrap_or_default();
        let old_status = status.clone();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");

        // 1. Count finished pods, then release them (uncountedTerminatedPods protocol).
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut u_succ: BTreeSet<String> = uncounted
            .succeeded
            .take()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut u_fail: BTreeSet<String> = uncounted
            .failed
            .take()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut completed: BTreeSet<i32> = status
            .completed_indexes
            .as_deref()
            .map(parse_indexes)
            .unwrap_or_default();
        let mut fail_job: Option<(String, String)> = None;
        let mut newly = false;
        for p in &pods {
            let tracked = p.finalizers().iter().any(|f| f == TRACKING_FINALIZER);
            if !tracked {
                continue;
            }
            let pod_uid = p.metadata.uid.clone().unwrap_or_default();
            if u_succ.contains(&pod_uid) || u_fail.contains(&pod_uid) || already.contains(&pod_uid)
            {
                continue;
            }
            match phase(p) {
                "Succeeded" => {
                    u_succ.insert(pod_uid);
                    if let Some(i) = pod_index(p) {
                        completed.insert(i);
                    }
                    newly = true;
                }
                "Failed" => {
                    match pod_failure_action(&job, p) {
                        PolicyAction::Ignore => {
                            // Not counted against backoffLimit; just released.
                            self.release(&pod_api, p).await?;
                            continue;
                        }
                        PolicyAction::FailJob => {
                            fail_job = Some((
                                "PodFailurePolicy".into(),
                                format!(
                                    "Container of pod {} failed with an exit code matching a FailJob rule",
                                    p.name_any()
                                ),
                            ));
                        }
                        PolicyAction::Count | PolicyAction::FailIndex => {}
                    }
                    u_fail.insert(pod_uid);
                    newly = true;
                }
                _ if p.metadata.deletion_timestamp.is_some() => {
                    // Deleted before finishing: counts as a failure.
                    u_fail.insert(pod_uid);
                    newly = true;
                }
                _ => {}
            }
        }
        if newly {
            status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
                succeeded: Some(u_succ.iter().cloned().collect()),
                failed: Some(u_fail.iter().cloned().collect()),
            });
            if indexed {
                status.completed_indexes = Some(format_indexes(&completed));
            }
            self.write_status(&job_api, name, &status).await?;
        }
        for p in &pods {
            let pod_uid = p.metadata.uid.clone().unwrap_or_default();
            if (u_succ.contains(&pod_uid)
                || u_fail.contains(&pod_uid)
                || already.contains(&pod_uid))
                && p.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
            {
                self.release(&pod_api, p).await?;
            }
        }
        let succeeded = status.succeeded.unwrap_or(0) + u_succ.len() as i32;
        let failed = status.failed.unwrap_or(0) + u_fail.len() as i32;
        status.succeeded = Some(succeeded);
        status.failed = Some(failed);
        // Explicit empty lists: a merge patch with `{}` would keep the old ones.
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: Some(Vec::new()),
            failed: Some(Vec::new()),
        });
        if indexed {
            status.completed_indexes = Some(format_indexes(&completed));
        }
        if !u_succ.is_empty() || !u_fail.is_empty() {
            // Make the counts durable now, before anything else can fail.
            self.write_status(&job_api, name, &status).await?;
        }
        {
            let live: HashSet<&str> = pods
                .iter()
                .filter_map(|p| p.metadata.uid.as_deref())
                .collect();
            if let Ok(mut m) = self.counted.lock() {
                let set = m.entry(uid.clone()).or_default();
                set.extend(u_succ.iter().cloned());
                set.extend(u_fail.iter().cloned());
                // Pods gone from the cache cannot be counted again.
                set.retain(|u| live.contains(u.as_str()));
            }
        }

        if is_finished(&job) {
            status.active = Some(0);
            if status != old_status {
                self.write_status(&job_api, name, &status).await?;
            }
            // Deleting it once its TTL expires is ttl-after-finished's job.
            return Ok(Action::Done);
        }

        let active: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && !matches!(phase(p), "Succeeded" | "Failed")
            })
            .collect();
        let mut conds = status.conditions.clone().unwrap_or_default();
        if status.start_time.is_none() && !spec.suspend.unwrap_or(false) {
            status.start_time = Some(Time(now));
        }

        // 2. Failure: policy rule, backoff limit, deadline.
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        if fail_job.is_none() && failed > backoff_limit {
            fail_job = Some((
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into(),
            ));
        }
        let mut requeue = None;
        if let (Some(deadline), Some(start)) =
            (spec.active_deadline_seconds, status.start_time.as_ref())
            && !spec.suspend.unwrap_or(false)
        {
            let end = start
                .0
                .checked_add(SignedDuration::from_secs(deadline))
                .unwrap_or(start.0);
            if end <= now {
                if fail_job.is_none() {
                    fail_job = Some((
                        "DeadlineExceeded".into(),
                        "Job was active longer than specified deadline".into(),
                    ));
                }
            } else {
                requeue = Some(Duration::from_secs(
                    (end.as_second() - now.as_second()).max(1) as u64,
                ));
            }
        }
        let completions = spec.completions;
        let complete = match (indexed, completions) {
            (true, Some(c)) => (0..c).all(|i| completed.contains(&i)),
            (_, Some(c)) => succeeded >= c,
            // No completions: done once any pod succeeded and none still runs.
            (_, None) => succeeded > 0 && active.is_empty(),
        };
        if let Some((reason, msg)) = fail_job {
            self.delete_pods(&job, &pod_api, &active, key).await?;
            upsert(&mut conds, condition("FailureTarget", &reason, &msg, now));
            upsert(&mut conds, condition("Failed", &reason, &msg, now));
            self.events.warning(job.as_ref(), &reason, msg);
            status.conditions = Some(conds);
            status.active = Some(0);
            status.ready = Some(0);
            self.write_status(&job_api, name, &status).await?;
            return Ok(Action::Done);
        }
        if complete {
            self.delete_pods(&job, &pod_api, &active, key).await?;
            upsert(
                &mut conds,
                condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                ),
            );
            upsert(
                &mut conds,
                condition(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                ),
            );
            status.completion_time = Some(Time(now));
            status.conditions = Some(conds);
            status.active = Some(0);
            status.ready = Some(0);
            self.write_status(&job_api, name, &status).await?;
            self.events
                .normal(job.as_ref(), "Completed", "Job completed".into());
            return Ok(Action::Done);
        }

        // 3. Suspend, or keep `parallelism` pods running.
        let mut manage_err = None;
        if spec.suspend.unwrap_or(false) {
            self.delete_pods(&job, &pod_api, &active, key).await?;
            upsert(
                &mut conds,
                JobCondition {
                    status: "True".into(),
                    ..condition("Suspended", "JobSuspended", "Job suspended", now)
                },
            );
            status.start_time = None;
        } else {
            if conds
                .iter()
                .any(|c| c.type_ == "Suspended" && c.status == "True")
            {
                upsert(
                    &mut conds,
                    JobCondition {
                        status: "False".into(),
                        ..condition("Suspended", "JobResumed", "Job resumed", now)
                    },
                );
            }
            if self.expectations.satisfied(key) {
                manage_err = self
                    .manage(&job, &pod_api, &active, &completed, succeeded, key)
                    .await
                    .err();
            }
        }
        status.active = Some(active.len() as i32);
        status.ready = Some(active.iter().filter(|p| pod_is_ready(p)).count() as i32);
        status.terminating = Some(
            pods.iter()
                .filter(|p| p.metadata.deletion_timestamp.is_some())
                .count() as i32,
        );
        status.conditions = if conds.is_empty() { None } else { Some(conds) };
        if status != old_status {
            self.write_status(&job_api, name, &status).await?;
        }
        if let Some(e) = manage_err {
            return Err(e);
        }
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }

    async fn manage(
        &self,
        job: &Job,
        pod_api: &Api<Pod>,
        active: &[&Arc<Pod>],
        completed: &BTreeSet<i32>,
        succeeded: i32,
        key: &str,
    ) -> Result<(), Error> {
        let spec = job.spec.clone().unwrap_or_default();
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let want = match spec.completions {
            Some(c) => (c - succeeded).clamp(0, parallelism),
            None if succeeded > 0 => 0,
            None => parallelism,
        };
        let have = active.len() as i32;
        if have > want {
            let mut extra: Vec<&Arc<Pod>> = active.to_vec();
            extra.sort_by_key(|p| {
                (
                    u8::from(pod_is_ready(p)),
                    std::cmp::Reverse(
                        p.metadata
                            .creation_timestamp
                            .as_ref()
                            .map(|t| t.0.as_second()),
                    ),
                )
            });
            extra.truncate((have - want) as usize);
            return self.delete_pods(job, pod_api, &extra, key).await;
        }
        if have == want {
            return Ok(());
        }
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let mut indexes: Vec<Option<i32>> = Vec::new();
        if indexed {
            let running: BTreeSet<i32> = active.iter().filter_map(|p| pod_index(p)).collect();
            let total = spec.completions.unwrap_or(0);
            for i in 0..total {
                if indexes.len() as i32 >= want - have {
                    break;
                }
                if !completed.contains(&i) && !running.contains(&i) {
                    indexes.push(Some(i));
                }
            }
        } else {
            indexes = vec![None; (want - have) as usize];
        }
        if indexes.is_empty() {
            return Ok(());
        }
        self.expectations.expect(key, indexes.len() as i64, 0);
        let pp = PostParams::default();
        let pods: Vec<Pod> = indexes.iter().map(|i| self.pod_for(job, *i)).collect();
        let results = futures::future::join_all(pods.iter().map(|p| pod_api.create(&pp, p))).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(p) => self.events.normal(
                    job,
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                ),
                Err(e) => {
                    self.expectations.observed_add(key);
                    self.events.warning(
                        job,
                        "FailedCreate",
                        format!("Error creating: {}", crate::framework::api_message(&e)),
                    );
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    fn pod_for(&self, job: &Job, index: Option<i32>) -> Pod {
        let mut pod =
            crate::replicaset::pod_from_template(job, job.spec.as_ref().map(|s| &s.template));
        pod.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(TRACKING_FINALIZER.into());
        if let Some(i) = index {
            let name = job.name_any();
            pod.metadata.generate_name = Some(format!("{name}-{i}-"));
            pod.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX.into(), i.to_string());
            pod.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX.into(), i.to_string());
            if let Some(spec) = pod.spec.as_mut() {
                spec.hostname = Some(format!("{name}-{i}"));
                // The index reaches the containers through the downward API, as upstream.
                for c in spec
                    .containers
                    .iter_mut()
                    .chain(spec.init_containers.iter_mut().flatten())
                {
                    c.env.get_or_insert_with(Vec::new).push(EnvVar {
                        name: "JOB_COMPLETION_INDEX".into(),
                        value: None,
                        value_from: Some(EnvVarSource {
                            field_ref: Some(ObjectFieldSelector {
                                api_version: None,
                                field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                            }),
                            ..Default::default()
                        }),
                    });
                }
            }
        }
        pod
    }

    async fn delete_pods(
        &self,
        job: &Job,
        pod_api: &Api<Pod>,
        pods: &[&Arc<Pod>],
        key: &str,
    ) -> Result<(), Error> {
        if pods.is_empty() {
            return Ok(());
        }
        self.expectations.expect(key, 0, pods.len() as i64);
        for p in pods {
            match pod_api
                .delete(&p.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => self.events.normal(
                    job,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", p.name_any()),
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => self.expectations.observed_del(key),
                Err(e) => {
                    self.expectations.observed_del(key);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    async fn release(&self, pod_api: &Api<Pod>, p: &Pod) -> Result<(), Error> {
        let finalizers: Vec<&String> = p
            .finalizers()
            .iter()
            .filter(|f| *f != TRACKING_FINALIZER)
            .collect();
        let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": p.metadata.resource_version}});
        match pod_api
            .patch(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn write_status(
        &self,
        api: &Api<Job>,
        name: &str,
        status: &JobStatus,
    ) -> Result<(), Error> {
        let patch = serde_json::json!({"status": status});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(j) => {
                if let Ok(mut m) = self.written.lock() {
                    m.insert(key_of(&j), rv(&j.metadata));
                }
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_round_trip() {
        let s: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(format_indexes(&s), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7"), s);
        assert!(parse_indexes("").is_empty());
    }
}
