//! The Pod status the agent reports, computed from what the runtime shows:
//! phase, conditions, container statuses, IPs — in the shape kubectl reads.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::cri;
use crate::pod_sync::{Observed, is_exited, is_running, should_restart};

fn time(nanos: i64) -> Option<Time> {
    if nanos <= 0 {
        return None;
    }
    Timestamp::from_nanosecond(nanos as i128).ok().map(Time)
}

/// Exit reasons as kubelet reports them.
fn terminated_reason(s: &cri::ContainerStatus) -> String {
    if !s.reason.is_empty() {
        return s.reason.clone();
    }
    if s.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    }
}

fn terminated(s: &cri::ContainerStatus) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: s.exit_code,
            reason: Some(terminated_reason(s)),
            message: (!s.message.is_empty()).then(|| s.message.clone()),
            started_at: time(s.started_at),
            finished_at: time(s.finished_at),
            container_id: Some(format!("containerd://{}", s.id)),
            signal: None,
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: message.map(str::to_string),
        }),
        ..Default::default()
    }
}

fn container_status(
    pod: &Pod,
    c: &Container,
    observed: &Observed,
    sandbox_ready: bool,
) -> ContainerStatus {
    let instances = observed
        .containers
        .get(&c.name)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let latest = instances.first();
    let previous = instances.get(1);
    let why = observed.waiting.get(&c.name);
    let mut cs = ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        ..Default::default()
    };
    let Some(s) = latest else {
        cs.state = Some(match why {
            Some((r, m)) => waiting(r, Some(m)),
            None => waiting("ContainerCreating", None),
        });
        if !sandbox_ready {
            cs.state = Some(waiting("ContainerCreating", None));
        }
        return cs;
    };
    cs.restart_count = s.metadata.as_ref().map(|m| m.attempt as i32).unwrap_or(0);
    cs.container_id = Some(format!("containerd://{}", s.id));
    cs.image_id = s.image_ref.clone();
    if let Some(p) = previous.filter(|p| is_exited(p)) {
        cs.last_state = Some(terminated(p));
    }
    if is_running(s) {
        cs.state = Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(s.started_at),
            }),
            ..Default::default()
        });
        let health = observed
            .health
            .get(&s.id)
            .copied()
            .unwrap_or_else(|| crate::probe::Health::initial(c));
        cs.ready = sandbox_ready && health.ready;
        cs.started = Some(health.started);
    } else if is_exited(s) {
        let restarting = should_restart(pod, s.exit_code) && why.is_some();
        if restarting {
            let (r, m) = why.cloned().unwrap_or_default();
            cs.state = Some(waiting(&r, Some(&m)));
            cs.last_state = Some(terminated(s));
        } else {
            cs.state = Some(terminated(s));
        }
    } else {
        cs.state = Some(match why {
            Some((r, m)) => waiting(r, Some(m)),
            None => waiting("ContainerCreating", None),
        });
    }
    cs
}

fn condition(
    old: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let prev = old.iter().find(|c| c.type_ == type_);
    let transition = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: if ok { None } else { reason.map(str::to_string) },
        message: if ok { None } else { message },
        last_transition_time: transition,
        last_probe_time: None,
        observed_generation: None,
    }
}

/// The full status for `pod` given the runtime's view.
pub fn compute(pod: &Pod, observed: &Observed, host_ip: &str, now: Timestamp) -> PodStatus {
    let now_t = Time(now);
    let old = pod.status.clone().unwrap_or_default();
    let old_conds = old.conditions.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let sandbox_ready = observed.sandbox.as_ref().is_some_and(|s| s.ready);
    let ips = observed
        .sandbox
        .as_ref()
        .filter(|s| s.ready)
        .map(|s| s.ips.clone())
        .unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let ips = if host_network && sandbox_ready {
        vec![host_ip.to_string()]
    } else {
        ips
    };

    let init: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container_status(pod, c, observed, sandbox_ready))
        .collect();
    let mut init_pending = Vec::new();
    let mut init_failed = false;
    for (c, cs) in spec.init_containers.iter().flatten().zip(&init) {
        let done = cs
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0);
        if !done {
            init_pending.push(c.name.clone());
            if cs
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code != 0)
            {
                init_failed = true;
            }
        }
    }
    let containers: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| {
            let mut cs = container_status(pod, c, observed, sandbox_ready);
            if !init_pending.is_empty() && cs.container_id.is_none() {
                cs.state = Some(waiting("PodInitializing", None));
            }
            cs
        })
        .collect();

    // Ephemeral containers are never ready and do not count for the phase.
    let ephemeral: Vec<ContainerStatus> = crate::ephemeral::containers(pod)
        .iter()
        .map(|(c, _)| ContainerStatus {
            ready: false,
            ..container_status(pod, c, observed, sandbox_ready)
        })
        .collect();

    // Phase, by kubelet's counting rules.
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let (mut running, mut waiting_n, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for cs in &containers {
        let st = cs.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = &st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if st.waiting.is_some() {
            if cs
                .last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .is_some()
            {
                stopped += 1;
            } else {
                waiting_n += 1;
            }
        }
    }
    let phase = if !init_pending.is_empty() {
        if init_failed && policy == "Never" {
            "Failed"
        } else {
            "Pending"
        }
    } else if waiting_n > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    };
    let terminal = phase == "Succeeded" || phase == "Failed";

    let list = |v: &[String]| format!("[{}]", v.join(" "));
    let unready: Vec<String> = containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.clone())
        .collect();
    let mut conditions = vec![
        condition(
            &old_conds,
            "PodReadyToStartContainers",
            sandbox_ready && !terminal,
            None,
            None,
            &now_t,
        ),
        condition(
            &old_conds,
            "Initialized",
            init_pending.is_empty(),
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: {}",
                list(&init_pending)
            )),
            &now_t,
        ),
    ];
    let (ready_reason, ready_msg) = if terminal {
        ("PodCompleted", None)
    } else {
        (
            "ContainersNotReady",
            Some(format!(
                "containers with unready status: {}",
                list(&unready)
            )),
        )
    };
    let ready = unready.is_empty() && !terminal;
    conditions.push(condition(
        &old_conds,
        "ContainersReady",
        ready,
        Some(ready_reason),
        ready_msg.clone(),
        &now_t,
    ));
    conditions.push(condition(
        &old_conds,
        "Ready",
        ready,
        Some(ready_reason),
        ready_msg,
        &now_t,
    ));
    conditions.push(
        old_conds
            .iter()
            .find(|c| c.type_ == "PodScheduled")
            .cloned()
            .unwrap_or_else(|| condition(&[], "PodScheduled", true, None, None, &now_t)),
    );

    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: host_ip.to_string(),
        }]),
        pod_ip: ips
            .first()
            .cloned()
            .or(old.pod_ip.clone().filter(|_| terminal)),
        pod_ips: if ips.is_empty() {
            old.pod_ips.clone().filter(|_| terminal)
        } else {
            Some(ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect())
        },
        start_time: old.start_time.clone().or(Some(now_t)),
        qos_class: old
            .qos_class
            .clone()
            .or_else(|| Some(crate::resources::qos_class(pod).to_string())),
        init_container_statuses: (!init.is_empty()).then_some(init),
        ephemeral_container_statuses: (!ephemeral.is_empty()).then_some(ephemeral),
        container_statuses: Some(containers),
        nominated_node_name: old.nominated_node_name.clone(),
        ..Default::default()
    }
}

/// Compares two statuses ignoring nothing: serialized equality is what the apiserver would store.
pub fn same(a: &PodStatus, b: &PodStatus) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::v1::ContainerMetadata;
    use crate::pod_sync::SandboxInfo;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "app", "image": "busybox"}]},
        }))
        .unwrap()
    }

    fn instance(attempt: u32, state: cri::ContainerState, exit: i32) -> cri::ContainerStatus {
        cri::ContainerStatus {
            id: format!("c{attempt}"),
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt,
            }),
            state: state as i32,
            started_at: 1_000_000_000,
            finished_at: if state == cri::ContainerState::ContainerExited {
                2_000_000_000
            } else {
                0
            },
            exit_code: exit,
            image_ref: "sha256:abc".into(),
            ..Default::default()
        }
    }

    fn observed(instances: Vec<cri::ContainerStatus>) -> Observed {
        let mut o = Observed {
            sandbox: Some(SandboxInfo {
                id: "sb".into(),
                ready: true,
                ips: vec!["10.42.0.7".into()],
                attempt: 0,
            }),
            ..Default::default()
        };
        o.containers.insert("app".into(), instances);
        o
    }

    fn cond(s: &PodStatus, t: &str) -> String {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .status
            .clone()
    }

    #[test]
    fn running_pod() {
        let o = observed(vec![instance(0, cri::ContainerState::ContainerRunning, 0)]);
        let s = compute(&pod("Always"), &o, "192.168.0.2", Timestamp::now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.42.0.7"));
        assert_eq!(s.host_ip.as_deref(), Some("192.168.0.2"));
        assert_eq!(cond(&s, "Ready"), "True");
        assert_eq!(cond(&s, "Initialized"), "True");
        assert_eq!(cond(&s, "PodReadyToStartContainers"), "True");
        assert_eq!(cond(&s, "PodScheduled"), "True");
        let cs = &s.container_statuses.clone().unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.container_id.as_deref(), Some("containerd://c0"));
        assert_eq!(cs.image_id, "sha256:abc");
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
    }

    #[test]
    fn crash_loop() {
        let mut o = observed(vec![
            instance(1, cri::ContainerState::ContainerExited, 1),
            instance(0, cri::ContainerState::ContainerExited, 1),
        ]);
        o.waiting.insert(
            "app".into(),
            ("CrashLoopBackOff".into(), "back-off 20s".into()),
        );
        let s = compute(&pod("Always"), &o, "h", Timestamp::now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let cs = &s.container_statuses.clone().unwrap()[0];
        assert_eq!(cs.restart_count, 1);
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.exit_code, 1);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        assert_eq!(cond(&s, "Ready"), "False");
    }

    #[test]
    fn finished_pods() {
        let o = observed(vec![instance(0, cri::ContainerState::ContainerExited, 0)]);
        let s = compute(&pod("Never"), &o, "h", Timestamp::now());
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let o = observed(vec![instance(0, cri::ContainerState::ContainerExited, 2)]);
        let s = compute(&pod("Never"), &o, "h", Timestamp::now());
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let o = observed(vec![]);
        let s = compute(&pod("Never"), &o, "h", Timestamp::now());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
    }
}
