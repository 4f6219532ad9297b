//! Ephemeral containers (`kubectl debug`): added to a running pod through
//! the `pods/ephemeralcontainers` subresource, started once in the pod's
//! sandbox, never restarted, never probed and never counted for readiness.
//! One with `targetContainerName` joins that container's process namespace,
//! so a debugger sees (and can ptrace) the target's processes.

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};

use crate::cri::v1::{ContainerConfig, NamespaceMode};
use crate::pod_sync::{Observed, is_running};

/// An ephemeral container's fields are a subset of a container's, so it
/// runs through the same code as one.
pub fn as_container(e: &EphemeralContainer) -> Container {
    Container {
        name: e.name.clone(),
        image: e.image.clone(),
        image_pull_policy: e.image_pull_policy.clone(),
        command: e.command.clone(),
        args: e.args.clone(),
        working_dir: e.working_dir.clone(),
        env: e.env.clone(),
        env_from: e.env_from.clone(),
        resources: e.resources.clone(),
        security_context: e.security_context.clone(),
        volume_mounts: e.volume_mounts.clone(),
        volume_devices: e.volume_devices.clone(),
        stdin: e.stdin,
        stdin_once: e.stdin_once,
        tty: e.tty,
        termination_message_path: e.termination_message_path.clone(),
        termination_message_policy: e.termination_message_policy.clone(),
        // Lifecycle hooks, probes and ports are not allowed on ephemeral
        // containers (validation refuses them); do not run any that slipped in.
        ..Default::default()
    }
}

/// The pod's ephemeral containers, each as a container with its target.
pub fn containers(pod: &Pod) -> Vec<(Container, Option<String>)> {
    pod.spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .into_iter()
        .flatten()
        .map(|e| (as_container(e), e.target_container_name.clone()))
        .collect()
}

/// Points an ephemeral container with a target at the running target's
/// process namespace. Without a running target it keeps its own (the
/// debugger still starts, as upstream when the target is gone).
pub fn join_target(pod: &Pod, cfg: &mut ContainerConfig, observed: &Observed) {
    let Some(name) = cfg.metadata.as_ref().map(|m| m.name.clone()) else {
        return;
    };
    let target = containers(pod)
        .into_iter()
        .find(|(c, _)| c.name == name)
        .and_then(|(_, t)| t);
    let Some(target) = target else { return };
    let Some(running) = observed.latest(&target).filter(|s| is_running(s)) else {
        tracing::warn!(container = %name, %target, "the debug target is not running; not sharing its processes");
        return;
    };
    if let Some(ns) = cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = NamespaceMode::Target as i32;
        ns.target_id = running.id.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeRuntime;
    use crate::pod_sync::{Inputs, Syncer};
    use crate::sandbox::PodDefaults;

    fn pod(ephemeral: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "uid-e"},
            "spec": {
                "containers": [{"name": "app", "image": "busybox:1"}],
                "ephemeralContainers": ephemeral,
            },
        }))
        .unwrap()
    }

    async fn pass(rt: &FakeRuntime, p: &Pod) -> crate::pod_sync::Outcome {
        let d = PodDefaults {
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
            pod_logs_dir: std::env::temp_dir().join("k3rs-na-unit-ephemeral-logs"),
            host_resolv_conf: "/etc/resolv.conf".into(),
        };
        let s = Syncer {
            rt,
            defaults: &d,
            cgroup_parent: String::new(),
            pods_dir: None,
            now_nanos: chrono::Utc::now().timestamp_nanos_opt().unwrap(),
            image_backoff: &crate::images::PullBackoff::default(),
        };
        s.sync(p, &Inputs::default()).await.unwrap()
    }

    #[tokio::test]
    async fn started_once_beside_the_app_and_reported_never_ready() {
        let rt = FakeRuntime::new();
        let p = pod(serde_json::json!([
            {"name": "debugger", "image": "busybox:1", "stdin": true, "tty": true,
             "targetContainerName": "app"}
        ]));
        let out = pass(&rt, &p).await;
        let mut running = rt.running();
        running.sort();
        assert_eq!(running, vec!["app", "debugger"]);
        let status = crate::pod_status::compute(
            &p,
            &out.observed,
            "10.0.0.1",
            k8s_openapi::jiff::Timestamp::now(),
        );
        let eph = status.ephemeral_container_statuses.unwrap();
        assert_eq!(eph.len(), 1);
        assert_eq!(eph[0].name, "debugger");
        assert!(eph[0].state.as_ref().unwrap().running.is_some());
        assert!(!eph[0].ready);
        // The pod's readiness is the app's alone.
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(
            status
                .container_statuses
                .unwrap()
                .iter()
                .all(|c| c.name == "app")
        );

        // Once exited it stays exited, whatever the restart policy.
        rt.exit("debugger", 0);
        let out = pass(&rt, &p).await;
        let later = now_plus_minutes(10);
        let s = Syncer {
            rt: &rt,
            defaults: &PodDefaults {
                cluster_dns: vec![],
                cluster_domain: "cluster.local".into(),
                pod_logs_dir: std::env::temp_dir().join("k3rs-na-unit-ephemeral-logs"),
                host_resolv_conf: "/etc/resolv.conf".into(),
            },
            cgroup_parent: String::new(),
            pods_dir: None,
            image_backoff: &crate::images::PullBackoff::default(),
            now_nanos: later,
        };
        s.sync(&p, &Inputs::default()).await.unwrap();
        assert_eq!(rt.running(), vec!["app"]);
        let status = crate::pod_status::compute(
            &p,
            &out.observed,
            "10.0.0.1",
            k8s_openapi::jiff::Timestamp::now(),
        );
        let eph = status.ephemeral_container_statuses.unwrap();
        assert!(eph[0].state.as_ref().unwrap().terminated.is_some());
    }

    fn now_plus_minutes(m: i64) -> i64 {
        chrono::Utc::now().timestamp_nanos_opt().unwrap() + m * 60 * 1_000_000_000
    }

    #[test]
    fn target_shares_the_process_namespace() {
        let p = pod(serde_json::json!([
            {"name": "dbg", "image": "busybox:1", "targetContainerName": "app"}
        ]));
        let (c, _) = containers(&p).remove(0);
        let mut cfg = crate::sandbox::container_config(&p, &c, 0, "busybox:1", &[], vec![]);
        let mut observed = Observed::default();
        let running = crate::cri::ContainerStatus {
            id: "app-id".into(),
            state: crate::cri::ContainerState::ContainerRunning as i32,
            ..Default::default()
        };
        observed.containers.insert("app".into(), vec![running]);
        join_target(&p, &mut cfg, &observed);
        let ns = cfg
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.pid, NamespaceMode::Target as i32);
        assert_eq!(ns.target_id, "app-id");
    }
}
