//! The pod row: upstream's `printPod`, whose STATUS column condenses phase,
//! init containers, container states and deletion into one word.

use serde_json::{Value, json};

use super::time::{human_duration, parse_rfc3339};
use super::util::{arr_at, condition, int_at, is_set, or_none, str_at};
use super::{AGE, Cell, Col, NAME, col, wide};

pub(super) const POD: &[Col] = &[
    NAME,
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
        Cell::Fn(ready),
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
        Cell::Fn(status),
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        Cell::Fn(restarts),
    ),
    AGE,
    wide(
        "IP",
        "string",
        "podIP address allocated to the pod.",
        Cell::Fn(ip),
    ),
    wide(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled.",
        Cell::Fn(node),
    ),
    wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node.",
        Cell::Fn(nominated_node),
    ),
    wide(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness.",
        Cell::Fn(readiness_gates),
    ),
];

/// What the READY, STATUS and RESTARTS columns show.
#[derive(Debug, PartialEq)]
pub(super) struct Summary {
    pub ready: usize,
    pub total: usize,
    pub reason: String,
    pub restarts: String,
}

fn ready(pod: &Value, now: i64) -> Value {
    let s = summarize(pod, now);
    json!(format!("{}/{}", s.ready, s.total))
}

fn status(pod: &Value, now: i64) -> Value {
    json!(summarize(pod, now).reason)
}

fn restarts(pod: &Value, now: i64) -> Value {
    json!(summarize(pod, now).restarts)
}

fn finished_at(cs: &Value) -> Option<i64> {
    parse_rfc3339(str_at(cs, "/lastState/terminated/finishedAt"))
}

fn latest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

/// Sidecars: init containers that keep running (`restartPolicy: Always`).
fn is_restartable(c: Option<&Value>) -> bool {
    c.is_some_and(|c| str_at(c, "/restartPolicy") == "Always")
}

fn condition_true(pod: &Value, ty: &str) -> bool {
    condition(pod, "/status/conditions", ty).is_some_and(|c| str_at(c, "/status") == "True")
}

/// Why a terminated container stopped, in upstream's words.
fn terminated_reason(t: &Value, prefix: &str) -> String {
    let reason = str_at(t, "/reason");
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = int_at(t, "/signal");
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int_at(t, "/exitCode"))
    }
}

pub(super) fn summarize(pod: &Value, now: i64) -> Summary {
    let init_specs = arr_at(pod, "/spec/initContainers");
    let total = arr_at(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| is_restartable(Some(c)))
            .count();
    let mut ready = 0;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<i64> = None;
    let mut last_sidecar_restart: Option<i64> = None;

    let phase = str_at(pod, "/status/phase");
    let mut reason = match str_at(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if arr_at(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }

    let init_spec = |name: &str| init_specs.iter().find(|c| str_at(c, "/name") == name);
    let mut initializing = false;
    for (i, cs) in arr_at(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let count = int_at(cs, "/restartCount");
        restarts = restarts.saturating_add(count);
        last_restart = latest(last_restart, finished_at(cs));
        let sidecar = is_restartable(init_spec(str_at(cs, "/name")));
        if sidecar {
            sidecar_restarts = sidecar_restarts.saturating_add(count);
            last_sidecar_restart = latest(last_sidecar_restart, finished_at(cs));
        }
        let terminated = cs.pointer("/state/terminated").filter(|t| !t.is_null());
        let waiting_reason = str_at(cs, "/state/waiting/reason");
        if terminated.is_some_and(|t| int_at(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && cs.get("started").and_then(Value::as_bool) == Some(true) {
            if cs.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = terminated {
            terminated_reason(t, "Init:")
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        // Upstream walks the statuses backwards, so the first container's
        // reason wins.
        for cs in arr_at(pod, "/status/containerStatuses").iter().rev() {
            restarts = restarts.saturating_add(int_at(cs, "/restartCount"));
            last_restart = latest(last_restart, finished_at(cs));
            let waiting_reason = str_at(cs, "/state/waiting/reason");
            let terminated = cs.pointer("/state/terminated").filter(|t| !t.is_null());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = terminated_reason(t, "");
            } else if cs.get("ready").and_then(Value::as_bool) == Some(true)
                && is_set(cs, "/state/running")
            {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose other containers still run is not "Completed".
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    if is_set(pod, "/metadata/deletionTimestamp") {
        if str_at(pod, "/status/reason") == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => {
            format!("{restarts} ({} ago)", human_duration(now.saturating_sub(t)))
        }
        _ => restarts.to_string(),
    };
    Summary {
        ready,
        total,
        reason,
        restarts,
    }
}

fn ip(pod: &Value, _: i64) -> Value {
    let ip = pod
        .pointer("/status/podIPs/0/ip")
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(pod, "/status/podIP"));
    json!(or_none(ip))
}

fn node(pod: &Value, _: i64) -> Value {
    json!(or_none(str_at(pod, "/spec/nodeName")))
}

fn nominated_node(pod: &Value, _: i64) -> Value {
    json!(or_none(str_at(pod, "/status/nominatedNodeName")))
}

fn readiness_gates(pod: &Value, _: i64) -> Value {
    let gates = arr_at(pod, "/spec/readinessGates");
    if gates.is_empty() {
        return json!("<none>");
    }
    let met = gates
        .iter()
        .filter(|g| condition_true(pod, str_at(g, "/conditionType")))
        .count();
    json!(format!("{met}/{}", gates.len()))
}
