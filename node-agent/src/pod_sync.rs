//! One pass of bringing a pod's sandbox and containers on the runtime in line
//! with its spec: sandbox, image pulls, init containers in order, then the
//! app containers, restarts with back-off. Everything it decides from is
//! read back from the runtime (CRI labels and attempts), so a restarted agent
//! picks up where the last one left off instead of starting things again.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::cri::v1::Mount;
use crate::cri::{
    ContainerFilter, ContainerState, ContainerStatus, CriError, LABEL_POD_UID, PodSandboxFilter,
    PodSandboxState, Runtime,
};
use crate::sandbox::{self, PodDefaults};

/// First restart delay and its cap (kubelet: 10 s doubling to 5 min).
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting starts its back-off afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// What the worker fetched from the apiserver for this pass.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    /// Resolved environment per container, or why it cannot be built.
    pub env: HashMap<String, Result<Vec<(String, String)>, String>>,
    /// Volume mounts per container.
    pub mounts: HashMap<String, Vec<Mount>>,
    /// Set when the pod's volumes could not be prepared.
    pub volume_error: Option<String>,
    /// Registry logins from the pod's `imagePullSecrets`.
    pub pull_credentials: Vec<crate::images::Credential>,
}

impl Inputs {
    /// Nothing is missing (otherwise the worker re-fetches on every pass).
    pub fn is_complete(&self) -> bool {
        self.volume_error.is_none() && self.env.values().all(Result::is_ok)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SandboxInfo {
    pub id: String,
    pub ready: bool,
    pub ips: Vec<String>,
    pub attempt: u32,
}

/// The pod as the runtime sees it.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub sandbox: Option<SandboxInfo>,
    /// Instances per container name, newest first.
    pub containers: HashMap<String, Vec<ContainerStatus>>,
    /// Why a container is not running (reason, message).
    pub waiting: HashMap<String, (String, String)>,
    /// What the probes say, per container ID (absent: not probed yet).
    pub health: HashMap<String, crate::probe::Health>,
}

impl Observed {
    pub fn latest(&self, name: &str) -> Option<&ContainerStatus> {
        self.containers.get(name).and_then(|v| v.first())
    }
}

/// Something worth an Event on the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
    /// `spec.containers{name}` for container events.
    pub field_path: Option<String>,
}

fn event(warning: bool, reason: &'static str, note: String, c: Option<&str>) -> PodEvent {
    PodEvent {
        warning,
        reason,
        note,
        field_path: c.map(|n| format!("spec.containers{{{n}}}")),
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub observed: Observed,
    pub events: Vec<PodEvent>,
    /// When to look again at the latest (a back-off expiring).
    pub wake_after: Option<Duration>,
}

pub fn is_running(s: &ContainerStatus) -> bool {
    s.state == ContainerState::ContainerRunning as i32
}

pub fn is_exited(s: &ContainerStatus) -> bool {
    s.state == ContainerState::ContainerExited as i32
}

fn uid_filter(uid: &str) -> HashMap<String, String> {
    [(LABEL_POD_UID.to_string(), uid.to_string())].into()
}

/// Restart delay after the `attempt`-th instance exited.
pub fn backoff_delay(attempt: u32) -> Duration {
    let secs = BACKOFF_INITIAL
        .as_secs()
        .saturating_mul(1u64 << attempt.min(16));
    Duration::from_secs(secs).min(BACKOFF_MAX)
}

fn nanos_to_duration(n: i64) -> Duration {
    Duration::from_nanos(n.max(0) as u64)
}

/// Reads the pod's sandbox (newest ready one) and its containers' statuses.
pub async fn observe<R: Runtime>(rt: &R, uid: &str) -> Result<Observed, CriError> {
    let mut sandboxes = rt
        .list_pod_sandboxes(Some(PodSandboxFilter {
            label_selector: uid_filter(uid),
            ..Default::default()
        }))
        .await?;
    sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    let mut observed = Observed::default();
    let Some(sb) = sandboxes.first() else {
        return Ok(observed);
    };
    let status = rt.pod_sandbox_status(&sb.id).await?;
    let mut ips = Vec::new();
    if let Some(net) = &status.network {
        if !net.ip.is_empty() {
            ips.push(net.ip.clone());
        }
        ips.extend(net.additional_ips.iter().map(|i| i.ip.clone()));
    }
    observed.sandbox = Some(SandboxInfo {
        id: sb.id.clone(),
        ready: status.state == PodSandboxState::SandboxReady as i32,
        ips,
        attempt: sb.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
    });
    let containers = rt
        .list_containers(Some(ContainerFilter {
            pod_sandbox_id: sb.id.clone(),
            label_selector: uid_filter(uid),
            ..Default::default()
        }))
        .await?;
    for c in containers {
        match rt.container_status(&c.id).await {
            Ok(mut s) => {
                if is_exited(&s) && s.message.is_empty() {
                    s.message = crate::termination::message(&s);
                }
                let name = s
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                observed.containers.entry(name).or_default().push(s);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    for v in observed.containers.values_mut() {
        v.sort_by_key(|s| {
            std::cmp::Reverse((
                s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
                s.created_at,
            ))
        });
    }
    Ok(observed)
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether an exited container should run again under the pod's policy.
pub fn should_restart(pod: &Pod, exit_code: i32) -> bool {
    match restart_policy(pod) {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

pub struct Syncer<'a, R> {
    pub rt: &'a R,
    pub defaults: &'a PodDefaults,
    pub cgroup_parent: String,
    /// `<root-dir>/pods`, for the termination-message files; `None` mounts none.
    pub pods_dir: Option<std::path::PathBuf>,
    /// Wall-clock now, in nanoseconds since the epoch (CRI's unit).
    pub now_nanos: i64,
    /// Failed pulls per pod and image (`ImagePullBackOff`), kept across passes.
    pub image_backoff: &'a crate::images::PullBackoff,
}

enum Step {
    /// Keep going with the next container.
    Next,
    /// Stop this pass here (init container running, failed for good, ...).
    Stop,
}

impl<R: Runtime> Syncer<'_, R> {
    /// One pass over the pod; returns what the runtime looks like afterwards.
    pub async fn sync(&self, pod: &Pod, inputs: &Inputs) -> Result<Outcome, CriError> {
        let uid = sandbox::pod_uid(pod);
        let mut out = Outcome {
            observed: observe(self.rt, &uid).await?,
            ..Default::default()
        };
        let sandbox_ok = out.observed.sandbox.as_ref().is_some_and(|s| s.ready);
        if !sandbox_ok {
            let attempt = match &out.observed.sandbox {
                Some(old) => {
                    // The sandbox died (node reboot, runtime restart): start over
                    // with a new one, as kubelet does.
                    out.events.push(event(
                        false,
                        "SandboxChanged",
                        "Pod sandbox changed, it will be killed and re-created.".into(),
                        None,
                    ));
                    self.remove_sandboxes(&uid).await?;
                    old.attempt + 1
                }
                None => 0,
            };
            let cfg = sandbox::sandbox_config(self.defaults, pod, attempt, &self.cgroup_parent);
            if let Err(e) = std::fs::create_dir_all(&cfg.log_directory) {
                tracing::warn!(dir = %cfg.log_directory, error = %e, "creating the pod log directory");
            }
            if let Err(e) = self.rt.run_pod_sandbox(cfg).await {
                out.events.push(event(
                    true,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                    None,
                ));
                out.wake_after = Some(BACKOFF_INITIAL);
                return Ok(out);
            }
            out.observed = observe(self.rt, &uid).await?;
        }
        let Some(sb) = out.observed.sandbox.clone() else {
            return Ok(out);
        };
        if let Some(msg) = &inputs.volume_error {
            out.events.push(event(
                true,
                "FailedMount",
                format!("MountVolume.SetUp failed: {msg}"),
                None,
            ));
            for c in all_containers(pod) {
                out.observed
                    .waiting
                    .insert(c.name.clone(), ("ContainerCreating".into(), msg.clone()));
            }
            out.wake_after = Some(Duration::from_secs(2));
            return Ok(out);
        }
        let spec = pod.spec.clone().unwrap_or_default();
        for c in spec.init_containers.iter().flatten() {
            let latest = out.observed.latest(&c.name).cloned();
            let step = match latest {
                None => {
                    self.start(pod, c, 0, &sb, inputs, &mut out).await?;
                    Step::Stop
                }
                Some(s) if is_exited(&s) && s.exit_code == 0 => Step::Next,
                Some(s) if is_exited(&s) => {
                    if restart_policy(pod) == "Never" {
                        Step::Stop
                    } else {
                        self.restart_after_backoff(pod, c, &s, &sb, inputs, &mut out)
                            .await?;
                        Step::Stop
                    }
                }
                Some(s) if is_running(&s) => Step::Stop,
                Some(s) => {
                    self.retry_created(pod, c, &s, &sb, inputs, &mut out)
                        .await?;
                    Step::Stop
                }
            };
            if matches!(step, Step::Stop) {
                return Ok(out);
            }
        }
        for c in &spec.containers {
            match out.observed.latest(&c.name).cloned() {
                None => self.start(pod, c, 0, &sb, inputs, &mut out).await?,
                Some(s) if is_running(&s) => {}
                Some(s) if is_exited(&s) => {
                    if should_restart(pod, s.exit_code) {
                        self.restart_after_backoff(pod, c, &s, &sb, inputs, &mut out)
                            .await?;
                    }
                }
                Some(s) => {
                    self.retry_created(pod, c, &s, &sb, inputs, &mut out)
                        .await?
                }
            }
        }
        // Debug containers start once the pod's own are under way, and
        // never again once they exited.
        for (c, _) in crate::ephemeral::containers(pod) {
            if out.observed.latest(&c.name).is_none() {
                self.start(pod, &c, 0, &sb, inputs, &mut out).await?;
            }
        }
        // Re-read so the status reflects what was just started.
        let waiting = std::mem::take(&mut out.observed.waiting);
        out.observed = observe(self.rt, &uid).await?;
        out.observed.waiting = waiting;
        Ok(out)
    }

    /// A container stuck in CREATED (start failed): remove it and start afresh.
    async fn retry_created(
        &self,
        pod: &Pod,
        c: &Container,
        s: &ContainerStatus,
        sb: &SandboxInfo,
        inputs: &Inputs,
        out: &mut Outcome,
    ) -> Result<(), CriError> {
        let attempt = s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
        if let Err(e) = self.rt.remove_container(&s.id).await
            && !e.is_not_found()
        {
            return Err(e);
        }
        self.start(pod, c, attempt, sb, inputs, out).await
    }

    async fn restart_after_backoff(
        &self,
        pod: &Pod,
        c: &Container,
        last: &ContainerStatus,
        sb: &SandboxInfo,
        inputs: &Inputs,
        out: &mut Outcome,
    ) -> Result<(), CriError> {
        let attempt = last.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
        let ran = nanos_to_duration(last.finished_at - last.started_at);
        let delay = if ran >= BACKOFF_RESET {
            BACKOFF_INITIAL
        } else {
            backoff_delay(attempt)
        };
        let since_exit = nanos_to_duration(self.now_nanos - last.finished_at);
        if since_exit < delay {
            let msg = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                delay.as_secs(),
                c.name,
                pod.metadata.name.as_deref().unwrap_or_default(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                sandbox::pod_uid(pod),
            );
            out.events.push(event(
                true,
                "BackOff",
                "Back-off restarting failed container".into(),
                Some(&c.name),
            ));
            out.observed
                .waiting
                .insert(c.name.clone(), ("CrashLoopBackOff".into(), msg));
            let left = delay - since_exit;
            out.wake_after = Some(out.wake_after.map_or(left, |w| w.min(left)));
            return Ok(());
        }
        // Keep only the instance before this one, for lastState.
        if let Some(old) = out.observed.containers.get(&c.name) {
            for s in old.iter().skip(1) {
                if let Err(e) = self.rt.remove_container(&s.id).await
                    && !e.is_not_found()
                {
                    tracing::warn!(container = %s.id, error = %e, "removing an old container");
                }
            }
        }
        self.start(pod, c, attempt + 1, sb, inputs, out).await
    }

    /// Pulls the image as the policy says; `Err` is (reason, message) for the status.
    async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
        inputs: &Inputs,
        out: &mut Outcome,
    ) -> Result<String, (String, String)> {
        use crate::images::{self, PullPolicy};
        let image = c.image.clone().unwrap_or_default();
        let policy = images::pull_policy(c);
        let present = match self.rt.image_status(&image).await {
            Ok(i) => i.is_some(),
            Err(e) => return Err(("ErrImagePull".into(), images::pull_error_message(&e))),
        };
        if policy == PullPolicy::Never && !present {
            let msg =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            out.events
                .push(event(true, "ErrImageNeverPull", msg.clone(), Some(&c.name)));
            return Err(("ErrImageNeverPull".into(), msg));
        }
        if present && policy != PullPolicy::Always {
            out.events.push(event(
                false,
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
                Some(&c.name),
            ));
            return Ok(image);
        }
        let uid = sandbox::pod_uid(pod);
        if let Some(left) = self
            .image_backoff
            .remaining(&uid, &image, std::time::Instant::now())
        {
            let msg = format!("Back-off pulling image \"{image}\"");
            out.events
                .push(event(false, "BackOff", msg.clone(), Some(&c.name)));
            out.wake_after = Some(out.wake_after.map_or(left, |w| w.min(left)));
            return Err(("ImagePullBackOff".into(), msg));
        }
        out.events.push(event(
            false,
            "Pulling",
            format!("Pulling image \"{image}\""),
            Some(&c.name),
        ));
        let started = std::time::Instant::now();
        // Credentials for this registry from imagePullSecrets, most specific
        // first; anonymous when none apply (as kubelet does).
        let creds = images::for_image(&inputs.pull_credentials, &image);
        let mut attempts: Vec<Option<crate::cri::v1::AuthConfig>> =
            creds.iter().map(|c| Some(c.auth_config())).collect();
        if attempts.is_empty() {
            attempts.push(None);
        }
        let mut result = Err(CriError::Empty("PullImage"));
        for auth in attempts {
            result = self.rt.pull_image(&image, auth, None).await;
            if result.is_ok() {
                break;
            }
        }
        match result {
            Ok(_) => {
                self.image_backoff.succeeded(&uid, &image);
                out.events.push(event(
                    false,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                    Some(&c.name),
                ));
                Ok(image)
            }
            // An image already on the node still runs when the registry is down.
            Err(_) if present => Ok(image),
            Err(e) => {
                let msg = images::pull_error_message(&e);
                let delay = self
                    .image_backoff
                    .failed(&uid, &image, std::time::Instant::now());
                out.events.push(event(
                    true,
                    "Failed",
                    format!("Failed to pull image \"{image}\": {msg}"),
                    Some(&c.name),
                ));
                out.wake_after = Some(out.wake_after.map_or(delay, |w| w.min(delay)));
                Err(("ErrImagePull".into(), msg))
            }
        }
    }

    async fn start(
        &self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        sb: &SandboxInfo,
        inputs: &Inputs,
        out: &mut Outcome,
    ) -> Result<(), CriError> {
        let image = match self.ensure_image(pod, c, inputs, out).await {
            Ok(i) => i,
            Err((reason, msg)) => {
                out.observed.waiting.insert(c.name.clone(), (reason, msg));
                if out.wake_after.is_none() {
                    out.wake_after = Some(BACKOFF_INITIAL);
                }
                return Ok(());
            }
        };
        let env = match inputs.env.get(&c.name) {
            Some(Ok(env)) => env.clone(),
            Some(Err(msg)) => {
                out.events.push(event(
                    true,
                    "Failed",
                    format!("Error: {msg}"),
                    Some(&c.name),
                ));
                out.observed.waiting.insert(
                    c.name.clone(),
                    ("CreateContainerConfigError".into(), msg.clone()),
                );
                out.wake_after = Some(Duration::from_secs(2));
                return Ok(());
            }
            None => Vec::new(),
        };
        if let Err(msg) = self.check_non_root(pod, c, &image).await {
            out.events.push(event(
                true,
                "Failed",
                format!("Error: {msg}"),
                Some(&c.name),
            ));
            out.observed
                .waiting
                .insert(c.name.clone(), ("CreateContainerConfigError".into(), msg));
            out.wake_after = Some(BACKOFF_INITIAL);
            return Ok(());
        }
        let mut mounts = inputs.mounts.get(&c.name).cloned().unwrap_or_default();
        if let Some(dir) = &self.pods_dir
            && !mounts
                .iter()
                .any(|m| m.container_path == crate::termination::path(c))
        {
            match crate::termination::prepare(dir, &sandbox::pod_uid(pod), c, attempt) {
                Ok(m) => mounts.extend(m),
                Err(e) => {
                    tracing::warn!(container = %c.name, error = %e, "creating the termination-message file")
                }
            }
        }
        let mut cfg = sandbox::container_config(pod, c, attempt, &image, &env, mounts);
        crate::ephemeral::join_target(pod, &mut cfg, &out.observed);
        let sandbox_cfg =
            sandbox::sandbox_config(self.defaults, pod, sb.attempt, &self.cgroup_parent);
        if let Some(dir) = std::path::Path::new(&sandbox_cfg.log_directory)
            .join(&c.name)
            .to_str()
            .map(str::to_string)
            && let Err(e) = std::fs::create_dir_all(&dir)
        {
            tracing::warn!(%dir, error = %e, "creating the container log directory");
        }
        let id = match self.rt.create_container(&sb.id, cfg, sandbox_cfg).await {
            Ok(id) => id,
            Err(e) => {
                let msg = e.to_string();
                out.events.push(event(
                    true,
                    "Failed",
                    format!("Error: {msg}"),
                    Some(&c.name),
                ));
                out.observed
                    .waiting
                    .insert(c.name.clone(), ("CreateContainerError".into(), msg));
                out.wake_after = Some(BACKOFF_INITIAL);
                return Ok(());
            }
        };
        out.events.push(event(
            false,
            "Created",
            format!("Created container {}", c.name),
            Some(&c.name),
        ));
        if let Err(e) = self.rt.start_container(&id).await {
            out.events
                .push(event(true, "Failed", format!("Error: {e}"), Some(&c.name)));
            out.wake_after = Some(Duration::from_secs(1));
            return Ok(());
        }
        out.events.push(event(
            false,
            "Started",
            format!("Started container {}", c.name),
            Some(&c.name),
        ));
        let post_start = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref());
        if let Some(hook) = post_start {
            let ip = sb.ips.first().map(String::as_str).unwrap_or_default();
            let r = crate::lifecycle::run(
                self.rt,
                pod,
                c,
                hook,
                &id,
                ip,
                crate::lifecycle::POST_START_TIMEOUT,
            )
            .await;
            if let Err(msg) = r {
                // As kubelet: the container is killed and restarted per policy.
                out.events
                    .push(event(true, "FailedPostStartHook", msg, Some(&c.name)));
                out.events.push(event(
                    false,
                    "Killing",
                    format!("FailedPostStartHook: stopping container {}", c.name),
                    Some(&c.name),
                ));
                let grace = sandbox::termination_grace(pod);
                if let Err(e) = self.rt.stop_container(&id, grace).await
                    && !e.is_not_found()
                {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// `runAsNonRoot` against the runAsUser or the image's user.
    async fn check_non_root(&self, pod: &Pod, c: &Container, image: &str) -> Result<(), String> {
        let wants = |sc: Option<bool>| sc.unwrap_or(false);
        let non_root = wants(
            c.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root)
                .or(pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.security_context.as_ref())
                    .and_then(|s| s.run_as_non_root)),
        );
        if !non_root {
            return Ok(());
        }
        let img = self
            .rt
            .image_status(image)
            .await
            .map_err(|e| e.to_string())?;
        let uid = img.as_ref().and_then(|i| i.uid.as_ref()).map(|u| u.value);
        let name = img.as_ref().map(|i| i.username.clone()).unwrap_or_default();
        sandbox::verify_run_as_non_root(pod, c, (uid, &name))
    }

    /// Stops and removes every sandbox (and so every container) of the pod.
    async fn remove_sandboxes(&self, uid: &str) -> Result<(), CriError> {
        kill_pod(self.rt, uid, 0, None, &mut Vec::new()).await
    }
}

fn all_containers(pod: &Pod) -> Vec<Container> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .cloned()
        .collect()
}

/// Stops the pod's running containers (all at once, each its preStop hook
/// first when `pod` is known, then SIGTERM, SIGKILL after `grace` seconds),
/// then stops and removes its sandboxes and containers.
pub async fn kill_pod<R: Runtime>(
    rt: &R,
    uid: &str,
    grace: i64,
    pod: Option<&Pod>,
    events: &mut Vec<PodEvent>,
) -> Result<(), CriError> {
    let containers = rt
        .list_containers(Some(ContainerFilter {
            label_selector: uid_filter(uid),
            ..Default::default()
        }))
        .await?;
    let running: Vec<_> = containers
        .iter()
        .filter(|c| c.state == ContainerState::ContainerRunning as i32)
        .collect();
    // httpGet preStop hooks go to the pod's address.
    let pod_ip = match running.first() {
        Some(c) if pod.is_some() => rt
            .pod_sandbox_status(&c.pod_sandbox_id)
            .await
            .ok()
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default(),
        _ => String::new(),
    };
    for c in &running {
        let name = c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
        events.push(event(
            false,
            "Killing",
            format!("Stopping container {name}"),
            Some(name),
        ));
    }
    let stops = running.iter().map(|c| {
        let name = c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
        crate::lifecycle::stop_container(rt, pod, name, &c.id, &pod_ip, grace)
    });
    for (evs, r) in futures::future::join_all(stops).await {
        events.extend(evs);
        r?;
    }
    let sandboxes = rt
        .list_pod_sandboxes(Some(PodSandboxFilter {
            label_selector: uid_filter(uid),
            ..Default::default()
        }))
        .await?;
    for sb in &sandboxes {
        if let Err(e) = rt.stop_pod_sandbox(&sb.id).await
            && !e.is_not_found()
        {
            return Err(e);
        }
    }
    for c in &containers {
        if let Err(e) = rt.remove_container(&c.id).await
            && !e.is_not_found()
        {
            return Err(e);
        }
    }
    for sb in &sandboxes {
        if let Err(e) = rt.remove_pod_sandbox(&sb.id).await
            && !e.is_not_found()
        {
            return Err(e);
        }
    }
    Ok(())
}

/// Stops the pod's sandbox (and so its containers) but keeps them for their
/// status: what happens to a pod that finished.
pub async fn stop_sandboxes<R: Runtime>(rt: &R, uid: &str) -> Result<(), CriError> {
    let sandboxes = rt
        .list_pod_sandboxes(Some(PodSandboxFilter {
            label_selector: uid_filter(uid),
            ..Default::default()
        }))
        .await?;
    for sb in sandboxes
        .iter()
        .filter(|s| s.state == PodSandboxState::SandboxReady as i32)
    {
        rt.stop_pod_sandbox(&sb.id).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeRuntime;

    fn defaults() -> PodDefaults {
        PodDefaults {
            cluster_dns: vec!["10.43.0.10".into()],
            cluster_domain: "cluster.local".into(),
            pod_logs_dir: std::env::temp_dir().join("k3rs-na-unit-logs"),
            host_resolv_conf: "/etc/resolv.conf".into(),
        }
    }

    fn pod(restart: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "uid-1"},
            "spec": {
                "restartPolicy": restart,
                "initContainers": [{"name": "init", "image": "busybox:1"}],
                "containers": [{"name": "app", "image": "busybox:1"}],
            },
        }))
        .unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp_nanos_opt().unwrap()
    }

    async fn pass(rt: &FakeRuntime, d: &PodDefaults, p: &Pod, at: i64) -> Outcome {
        let s = Syncer {
            rt,
            defaults: d,
            cgroup_parent: String::new(),
            pods_dir: None,
            now_nanos: at,
            image_backoff: &crate::images::PullBackoff::default(),
        };
        s.sync(p, &Inputs::default()).await.unwrap()
    }

    #[tokio::test]
    async fn init_then_app_then_backoff_restart() {
        let rt = FakeRuntime::new();
        let d = defaults();
        let p = pod("Always");
        let out = pass(&rt, &d, &p, now()).await;
        // Sandbox first, then only the init container.
        assert!(out.observed.sandbox.as_ref().unwrap().ready);
        assert_eq!(rt.running(), vec!["init"]);
        assert!(out.events.iter().any(|e| e.reason == "Pulling"));
        // Nothing new while init runs.
        pass(&rt, &d, &p, now()).await;
        assert_eq!(rt.running(), vec!["init"]);
        rt.exit("init", 0);
        pass(&rt, &d, &p, now()).await;
        assert_eq!(rt.running(), vec!["app"]);

        // The app crashes: it waits out the back-off, then starts attempt 1.
        rt.exit("app", 1);
        let out = pass(&rt, &d, &p, now()).await;
        assert!(rt.running().is_empty());
        assert_eq!(out.observed.waiting["app"].0, "CrashLoopBackOff");
        let wake = out.wake_after.unwrap();
        assert!(
            wake <= BACKOFF_INITIAL && wake > Duration::from_secs(8),
            "{wake:?}"
        );
        let later = now() + BACKOFF_INITIAL.as_nanos() as i64;
        let out = pass(&rt, &d, &p, later).await;
        assert_eq!(rt.running(), vec!["app"]);
        let latest = out.observed.latest("app").unwrap();
        assert_eq!(latest.metadata.as_ref().unwrap().attempt, 1);
        // The previous instance is kept for lastState.
        assert_eq!(out.observed.containers["app"].len(), 2);
        // Second crash: 20 s.
        rt.exit("app", 1);
        let out = pass(&rt, &d, &p, later + 1).await;
        assert!(out.wake_after.unwrap() > BACKOFF_INITIAL);
    }

    #[tokio::test]
    async fn never_policy_does_not_restart_and_resync_adopts() {
        let rt = FakeRuntime::new();
        let d = defaults();
        let mut p = pod("Never");
        p.spec.as_mut().unwrap().init_containers = None;
        pass(&rt, &d, &p, now()).await;
        let creates = |rt: &FakeRuntime| {
            rt.calls()
                .iter()
                .filter(|c| c.starts_with("CreateContainer") || c.starts_with("RunPodSandbox"))
                .count()
        };
        assert_eq!(creates(&rt), 2);
        // Another agent (after a restart) sees the running container and leaves it.
        pass(&rt, &d, &p, now()).await;
        assert_eq!(creates(&rt), 2);
        rt.exit("app", 3);
        let out = pass(&rt, &d, &p, now() + 10_000_000_000_000).await;
        assert_eq!(creates(&rt), 2);
        assert_eq!(out.observed.latest("app").unwrap().exit_code, 3);
    }

    #[tokio::test]
    async fn kill_pod_stops_with_grace_and_removes_everything() {
        let rt = FakeRuntime::new();
        let d = defaults();
        let mut p = pod("Always");
        p.spec.as_mut().unwrap().init_containers = None;
        pass(&rt, &d, &p, now()).await;
        let mut events = Vec::new();
        kill_pod(&rt, "uid-1", 7, Some(&p), &mut events)
            .await
            .unwrap();
        assert!(rt.calls().contains(&"StopContainer app 7".to_string()));
        assert_eq!(events[0].reason, "Killing");
        let o = observe(&rt, "uid-1").await.unwrap();
        assert!(o.sandbox.is_none());
    }

    #[tokio::test]
    async fn image_pull_policies() {
        let rt = FakeRuntime::new();
        let d = defaults();
        let mut p = pod("Always");
        {
            let spec = p.spec.as_mut().unwrap();
            spec.init_containers = None;
            spec.containers[0].image_pull_policy = Some("Never".into());
        }
        let out = pass(&rt, &d, &p, now()).await;
        assert_eq!(out.observed.waiting["app"].0, "ErrImageNeverPull");
        assert!(!rt.calls().iter().any(|c| c.starts_with("CreateContainer")));

        // IfNotPresent pulls once; a present image is not pulled again.
        p.spec.as_mut().unwrap().containers[0].image_pull_policy = Some("IfNotPresent".into());
        pass(&rt, &d, &p, now()).await;
        assert_eq!(rt.running(), vec!["app"]);
        rt.exit("app", 1);
        pass(&rt, &d, &p, now() + 20_000_000_000).await;
        let pulls = rt
            .calls()
            .iter()
            .filter(|c| c.starts_with("PullImage"))
            .count();
        assert_eq!(pulls, 1);
    }

    #[tokio::test]
    async fn missing_image_backs_off_then_recovers_with_pull_secret() {
        let rt = FakeRuntime::new();
        let d = defaults();
        let backoff = crate::images::PullBackoff::default();
        let mut p = pod("Always");
        {
            let spec = p.spec.as_mut().unwrap();
            spec.init_containers = None;
            spec.containers[0].image = Some("reg.example.com/app:1".into());
        }
        rt.set_missing("reg.example.com/app:1", true);
        let inputs = Inputs {
            pull_credentials: vec![crate::images::Credential {
                registry: "reg.example.com".into(),
                username: "bob".into(),
                password: "pw".into(),
            }],
            ..Default::default()
        };
        let run = |at: i64| {
            let s = Syncer {
                rt: &rt,
                defaults: &d,
                cgroup_parent: String::new(),
                pods_dir: None,
                now_nanos: at,
                image_backoff: &backoff,
            };
            let inputs = inputs.clone();
            let p = p.clone();
            async move { s.sync(&p, &inputs).await.unwrap() }
        };
        let out = run(now()).await;
        let (reason, msg) = &out.observed.waiting["app"];
        assert_eq!(reason, "ErrImagePull");
        assert!(
            msg.contains("code = NotFound") && msg.contains("not found"),
            "{msg}"
        );
        let reasons: Vec<_> = out.events.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, vec!["Pulling", "Failed"]);
        assert!(out.wake_after.unwrap() <= crate::images::PULL_BACKOFF_INITIAL);
        // Within the back-off nothing is pulled; the status says why.
        let out = run(now()).await;
        assert_eq!(out.observed.waiting["app"].0, "ImagePullBackOff");
        assert_eq!(
            out.observed.waiting["app"].1,
            "Back-off pulling image \"reg.example.com/app:1\""
        );
        assert_eq!(out.events[0].reason, "BackOff");
        let pulls: Vec<_> = rt
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("PullImage"))
            .collect();
        // The pull secret's login went to the runtime.
        assert_eq!(pulls, vec!["PullImage reg.example.com/app:1 as bob"]);
        assert!(!rt.calls().iter().any(|c| c.starts_with("CreateContainer")));
        // Once the back-off is over and the image exists, the pod starts.
        rt.set_missing("reg.example.com/app:1", false);
        backoff.succeeded("uid-1", "reg.example.com/app:1");
        run(now()).await;
        assert_eq!(rt.running(), vec!["app"]);
    }

    #[test]
    fn backoff_doubles_to_cap() {
        assert_eq!(backoff_delay(0), Duration::from_secs(10));
        assert_eq!(backoff_delay(1), Duration::from_secs(20));
        assert_eq!(backoff_delay(4), Duration::from_secs(160));
        assert_eq!(backoff_delay(5), Duration::from_secs(300));
        assert_eq!(backoff_delay(40), Duration::from_secs(300));
    }
}
