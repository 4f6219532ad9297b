//! Container lifecycle hooks: `postStart` right after a container started,
//! `preStop` before it is stopped (deletion, failed liveness probe), each an
//! exec, an HTTP GET or a sleep; and the graceful stop that runs preStop
//! first and gives SIGTERM what is left of the grace period.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Probe};

use crate::cri::{CriError, Runtime};
use crate::pod_sync::PodEvent;
use crate::probe::{self, Verdict};
use crate::sandbox::pod_ref;

/// After a preStop hook the container still gets this long to stop on
/// SIGTERM (kubelet's minimum).
const MIN_GRACE_AFTER_HOOK: i64 = 2;

/// Bounds a postStart hook: upstream waits without limit, but a stuck hook
/// must not stall the pod's worker forever.
pub const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one hook handler; `Err` says why it failed, in kubelet's words.
pub async fn run<R: Runtime>(
    rt: &R,
    pod: &Pod,
    c: &Container,
    handler: &LifecycleHandler,
    container_id: &str,
    pod_ip: &str,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        let r = tokio::time::timeout(
            timeout + Duration::from_secs(5),
            rt.exec_sync(container_id, cmd.clone(), timeout),
        )
        .await;
        let error = match r {
            Ok(Ok(r)) if r.exit_code == 0 => return Ok(()),
            Ok(Ok(r)) => {
                let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
                out.push_str(&String::from_utf8_lossy(&r.stderr));
                format!(
                    "command '{}' exited with {}: {out}",
                    cmd.join(" "),
                    r.exit_code
                )
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("command '{}' timed out", cmd.join(" ")),
        };
        return Err(format!(
            "Exec lifecycle hook ({cmd:?}) for Container {:?} in Pod {:?} failed - error: {error}",
            c.name,
            pod_ref(pod)
        ));
    }
    if let Some(h) = &handler.http_get {
        // Same request as an httpGet probe, with the hook's timeout.
        let p = Probe {
            http_get: Some(h.clone()),
            timeout_seconds: Some(timeout.as_secs().clamp(1, i32::MAX as u64) as i32),
            ..Default::default()
        };
        return match probe::execute(rt, &p, c, container_id, pod_ip).await {
            Verdict::Success => Ok(()),
            Verdict::Failure(e) | Verdict::Error(e) => Err(format!(
                "HTTP lifecycle hook ({}) for Container {:?} in Pod {:?} failed - error: {e}",
                h.path.as_deref().unwrap_or("/"),
                c.name,
                pod_ref(pod)
            )),
        };
    }
    if let Some(s) = &handler.sleep {
        let d = Duration::from_secs(s.seconds.max(0) as u64).min(timeout);
        tokio::time::sleep(d).await;
        return Ok(());
    }
    // tcpSocket handlers are accepted by the API for compatibility but do nothing.
    Ok(())
}

fn container_event(warning: bool, reason: &'static str, note: String, name: &str) -> PodEvent {
    PodEvent {
        warning,
        reason,
        note,
        field_path: Some(format!("spec.containers{{{name}}}")),
    }
}

/// Stops one running container gracefully: its preStop hook (if the pod
/// says it has one) within `grace` seconds, then SIGTERM with the rest of
/// the grace period (at least 2 s after a hook), then SIGKILL.
pub async fn stop_container<R: Runtime>(
    rt: &R,
    pod: Option<&Pod>,
    name: &str,
    container_id: &str,
    pod_ip: &str,
    grace: i64,
) -> (Vec<PodEvent>, Result<(), CriError>) {
    let mut events = Vec::new();
    let spec = pod.and_then(|p| {
        p.spec
            .as_ref()?
            .containers
            .iter()
            .find(|c| c.name == name)
            .map(|c| (p, c))
    });
    let hook = spec.and_then(|(p, c)| {
        let h = c.lifecycle.as_ref()?.pre_stop.as_ref()?;
        Some((p, c, h))
    });
    let mut left = grace;
    if let Some((p, c, h)) = hook {
        let started = Instant::now();
        let budget = Duration::from_secs(grace.max(0) as u64);
        match tokio::time::timeout(
            budget,
            run(rt, p, c, h, container_id, pod_ip, budget),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => events.push(container_event(true, "FailedPreStopHook", msg, name)),
            Err(_) => events.push(container_event(
                true,
                "FailedPreStopHook",
                format!(
                    "PreStopHook for Container {name:?} in Pod {:?} did not complete within {grace}s",
                    pod_ref(p)
                ),
                name,
            )),
        }
        left = (grace - started.elapsed().as_secs() as i64).max(MIN_GRACE_AFTER_HOOK);
    }
    let r = match rt.stop_container(container_id, left).await {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    };
    (events, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeRuntime;
    use crate::pod_sync::{Inputs, Syncer, observe};
    use crate::sandbox::PodDefaults;

    fn pod(lifecycle: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "uid-h"},
            "spec": {"containers": [{"name": "app", "image": "busybox", "lifecycle": lifecycle}]},
        }))
        .unwrap()
    }

    async fn run_pod(rt: &FakeRuntime, p: &Pod) -> crate::pod_sync::Outcome {
        let d = PodDefaults {
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
            pod_logs_dir: std::env::temp_dir().join("k3rs-na-unit-hook-logs"),
            host_resolv_conf: "/etc/resolv.conf".into(),
        };
        let s = Syncer {
            rt,
            defaults: &d,
            cgroup_parent: String::new(),
            pods_dir: None,
            now_nanos: 0,
            image_backoff: &crate::images::PullBackoff::default(),
        };
        s.sync(p, &Inputs::default()).await.unwrap()
    }

    #[tokio::test]
    async fn post_start_runs_after_start_and_failure_kills() {
        let rt = FakeRuntime::new();
        let p = pod(serde_json::json!({"postStart": {"exec": {"command": ["touch", "/x"]}}}));
        run_pod(&rt, &p).await;
        let calls = rt.calls();
        let start = calls
            .iter()
            .position(|c| c == "StartContainer app")
            .unwrap();
        let hook = calls
            .iter()
            .position(|c| c == "ExecSync app touch /x")
            .unwrap();
        assert!(start < hook, "{calls:?}");
        assert_eq!(rt.running(), vec!["app"]);

        let rt = FakeRuntime::new();
        rt.set_exec("app", 1, "nope");
        let out = run_pod(&rt, &p).await;
        assert!(rt.running().is_empty(), "killed after a failed postStart");
        let ev = out
            .events
            .iter()
            .find(|e| e.reason == "FailedPostStartHook")
            .unwrap();
        assert!(
            ev.note.contains("command 'touch /x' exited with 1: nope"),
            "{}",
            ev.note
        );
    }

    #[tokio::test]
    async fn pre_stop_runs_before_sigterm_with_the_rest_of_the_grace() {
        let rt = FakeRuntime::new();
        let p = pod(serde_json::json!({"preStop": {"exec": {"command": ["drain"]}}}));
        run_pod(&rt, &p).await;
        let o = observe(&rt, "uid-h").await.unwrap();
        let id = o.latest("app").unwrap().id.clone();
        let (events, r) = stop_container(&rt, Some(&p), "app", &id, "", 30).await;
        r.unwrap();
        assert!(events.is_empty());
        let calls = rt.calls();
        let hook = calls
            .iter()
            .position(|c| c == "ExecSync app drain")
            .unwrap();
        let stop = calls
            .iter()
            .position(|c| c == "StopContainer app 30")
            .unwrap();
        assert!(hook < stop, "{calls:?}");

        // A sleep hook eats into the grace period; at least 2 s remain.
        let rt = FakeRuntime::new();
        let p = pod(serde_json::json!({"preStop": {"sleep": {"seconds": 1}}}));
        run_pod(&rt, &p).await;
        let o = observe(&rt, "uid-h").await.unwrap();
        let id = o.latest("app").unwrap().id.clone();
        let t = Instant::now();
        stop_container(&rt, Some(&p), "app", &id, "", 2)
            .await
            .1
            .unwrap();
        assert!(t.elapsed() >= Duration::from_secs(1));
        assert!(rt.calls().contains(&"StopContainer app 2".to_string()));

        // A failing hook is reported and the container still stops.
        let rt = FakeRuntime::new();
        let p = pod(serde_json::json!({"preStop": {"exec": {"command": ["drain"]}}}));
        run_pod(&rt, &p).await;
        rt.set_exec("app", 2, "");
        let o = observe(&rt, "uid-h").await.unwrap();
        let id = o.latest("app").unwrap().id.clone();
        let (events, r) = stop_container(&rt, Some(&p), "app", &id, "", 10).await;
        r.unwrap();
        assert_eq!(events[0].reason, "FailedPreStopHook");
        assert!(rt.running().is_empty());
    }
}
