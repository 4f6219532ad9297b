//! `/stats/summary` and the Prometheus endpoints: node CPU and memory from
//! /proc (and the cgroup v1 root when mounted), containers from CRI
//! `ListContainerStats`, summed per pod.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{Resp, State, json as json_resp, text};
use crate::cri::v1::ContainerStats;
use crate::cri::{
    ContainerFilter, ContainerState, LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE,
    LABEL_POD_UID, Runtime,
};

/// Clock ticks per second of /proc/stat (USER_HZ is 100 on Linux).
const USER_HZ: u64 = 100;

/// Node-wide usage.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct NodeUsage {
    pub cpu_core_nanoseconds: u64,
    pub memory_total: u64,
    pub memory_available: u64,
    pub memory_free: u64,
}

/// Busy CPU time from the first (`cpu `) line of /proc/stat.
pub fn parse_proc_stat(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, x)| *x)
        .sum();
    Some(busy * (1_000_000_000 / USER_HZ))
}

/// (MemTotal, MemAvailable, MemFree) in bytes from /proc/meminfo.
pub fn parse_meminfo(s: &str) -> Option<(u64, u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let l = s.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((
        field("MemTotal:")?,
        field("MemAvailable:")?,
        field("MemFree:")?,
    ))
}

pub fn node_usage() -> NodeUsage {
    // cgroup v1 accounts the whole machine at its root; /proc/stat otherwise.
    let cpu_core_nanoseconds = std::fs::read_to_string("/sys/fs/cgroup/cpuacct/cpuacct.usage")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| parse_proc_stat(&s))
        })
        .unwrap_or(0);
    let mut u = NodeUsage {
        cpu_core_nanoseconds,
        ..Default::default()
    };
    if let Some((t, a, f)) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_meminfo(&s))
    {
        u.memory_total = t;
        u.memory_available = a;
        u.memory_free = f;
    }
    u
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn val(v: &Option<crate::cri::v1::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|x| x.value)
}

fn cpu_json(s: &ContainerStats) -> Value {
    let cpu = s.cpu.as_ref();
    json!({
        "time": now(),
        "usageNanoCores": cpu.and_then(|c| val(&c.usage_nano_cores)),
        "usageCoreNanoSeconds": cpu.and_then(|c| val(&c.usage_core_nano_seconds)),
    })
}

fn mem_json(s: &ContainerStats) -> Value {
    let m = s.memory.as_ref();
    json!({
        "time": now(),
        "availableBytes": m.and_then(|m| val(&m.available_bytes)),
        "usageBytes": m.and_then(|m| val(&m.usage_bytes)),
        "workingSetBytes": m.and_then(|m| val(&m.working_set_bytes)),
        "rssBytes": m.and_then(|m| val(&m.rss_bytes)),
        "pageFaults": m.and_then(|m| val(&m.page_faults)),
        "majorPageFaults": m.and_then(|m| val(&m.major_page_faults)),
    })
}

/// One pod's containers' stats.
struct PodStats<'a> {
    ns: &'a str,
    name: &'a str,
    uid: &'a str,
    containers: Vec<&'a ContainerStats>,
}

fn label<'a>(s: &'a ContainerStats, k: &str) -> &'a str {
    s.attributes
        .as_ref()
        .and_then(|a| a.labels.get(k))
        .map(String::as_str)
        .unwrap_or("")
}

fn container_name(s: &ContainerStats) -> &str {
    s.attributes
        .as_ref()
        .and_then(|a| a.metadata.as_ref())
        .map(|m| m.name.as_str())
        .unwrap_or_else(|| label(s, LABEL_CONTAINER_NAME))
}

fn by_pod(stats: &[ContainerStats]) -> Vec<PodStats<'_>> {
    let mut pods: BTreeMap<&str, PodStats<'_>> = BTreeMap::new();
    for s in stats {
        let uid = label(s, LABEL_POD_UID);
        if uid.is_empty() {
            continue;
        }
        pods.entry(uid)
            .or_insert_with(|| PodStats {
                ns: label(s, LABEL_POD_NAMESPACE),
                name: label(s, LABEL_POD_NAME),
                uid,
                containers: Vec::new(),
            })
            .containers
            .push(s);
    }
    pods.into_values().collect()
}

fn sum(cs: &[&ContainerStats], f: impl Fn(&ContainerStats) -> Option<u64>) -> Option<u64> {
    let vals: Vec<u64> = cs.iter().filter_map(|c| f(c)).collect();
    (!vals.is_empty()).then(|| vals.iter().sum())
}

fn cpu_total(c: &ContainerStats) -> Option<u64> {
    c.cpu.as_ref().and_then(|c| val(&c.usage_core_nano_seconds))
}

fn mem_ws(c: &ContainerStats) -> Option<u64> {
    c.memory.as_ref().and_then(|m| val(&m.working_set_bytes))
}

/// Running containers' stats only (stopped ones carry stale numbers).
async fn running_stats(state: &State) -> Vec<ContainerStats> {
    let stats = match state.rt.list_container_stats().await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "CRI ListContainerStats");
            return Vec::new();
        }
    };
    let running: std::collections::HashSet<String> = state
        .rt
        .list_containers(Some(ContainerFilter {
            state: Some(crate::cri::v1::ContainerStateValue {
                state: ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }))
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    stats
        .into_iter()
        .filter(|s| {
            s.attributes
                .as_ref()
                .is_some_and(|a| running.contains(&a.id))
        })
        .collect()
}

pub async fn summary(state: &State) -> Resp {
    let node = node_usage();
    let stats = running_stats(state).await;
    let pods: Vec<Value> = by_pod(&stats)
        .iter()
        .map(|p| {
            json!({
                "podRef": {"name": p.name, "namespace": p.ns, "uid": p.uid},
                "startTime": now(),
                "containers": p.containers.iter().map(|c| json!({
                    "name": container_name(c),
                    "startTime": now(),
                    "cpu": cpu_json(c),
                    "memory": mem_json(c),
                })).collect::<Vec<_>>(),
                "cpu": {
                    "time": now(),
                    "usageCoreNanoSeconds": sum(&p.containers, cpu_total),
                    "usageNanoCores": sum(&p.containers, |c| c.cpu.as_ref().and_then(|c| val(&c.usage_nano_cores))),
                },
                "memory": {
                    "time": now(),
                    "workingSetBytes": sum(&p.containers, mem_ws),
                    "usageBytes": sum(&p.containers, |c| c.memory.as_ref().and_then(|m| val(&m.usage_bytes))),
                },
            })
        })
        .collect();
    json_resp(&json!({
        "node": {
            "nodeName": state.node_name,
            "startTime": now(),
            "cpu": {"time": now(), "usageCoreNanoSeconds": node.cpu_core_nanoseconds},
            "memory": {
                "time": now(),
                "availableBytes": node.memory_available,
                "usageBytes": node.memory_total.saturating_sub(node.memory_free),
                "workingSetBytes": node.memory_total.saturating_sub(node.memory_available),
            },
            "systemContainers": [],
        },
        "pods": pods,
    }))
}

fn prom(code: &str) -> Resp {
    let mut r = text(http::StatusCode::OK, code.to_string());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Label values escaped for the Prometheus text format.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `/metrics`: the agent's own counters.
pub async fn metrics(state: &State) -> Resp {
    let stats = running_stats(state).await;
    let pods = by_pod(&stats);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP kubelet_running_pods Number of pods that have a running pod sandbox"
    );
    let _ = writeln!(out, "# TYPE kubelet_running_pods gauge");
    let _ = writeln!(out, "kubelet_running_pods {}", pods.len());
    let _ = writeln!(
        out,
        "# HELP kubelet_running_containers Number of containers currently running"
    );
    let _ = writeln!(out, "# TYPE kubelet_running_containers gauge");
    let _ = writeln!(
        out,
        "kubelet_running_containers{{container_state=\"running\"}} {}",
        stats.len()
    );
    prom(&out)
}

/// `/metrics/resource`: what metrics-server scrapes.
pub async fn metrics_resource(state: &State) -> Resp {
    let node = node_usage();
    let stats = running_stats(state).await;
    let ms = Utc::now().timestamp_millis();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds"
    );
    let _ = writeln!(out, "# TYPE node_cpu_usage_seconds_total counter");
    let _ = writeln!(
        out,
        "node_cpu_usage_seconds_total {} {ms}",
        node.cpu_core_nanoseconds as f64 / 1e9
    );
    let _ = writeln!(
        out,
        "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes"
    );
    let _ = writeln!(out, "# TYPE node_memory_working_set_bytes gauge");
    let _ = writeln!(
        out,
        "node_memory_working_set_bytes {} {ms}",
        node.memory_total.saturating_sub(node.memory_available)
    );
    let _ = writeln!(
        out,
        "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds"
    );
    let _ = writeln!(out, "# TYPE container_cpu_usage_seconds_total counter");
    for s in &stats {
        if let Some(v) = cpu_total(s) {
            let _ = writeln!(
                out,
                "container_cpu_usage_seconds_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {ms}",
                esc(container_name(s)),
                esc(label(s, LABEL_POD_NAMESPACE)),
                esc(label(s, LABEL_POD_NAME)),
                v as f64 / 1e9
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes"
    );
    let _ = writeln!(out, "# TYPE container_memory_working_set_bytes gauge");
    for s in &stats {
        if let Some(v) = mem_ws(s) {
            let _ = writeln!(
                out,
                "container_memory_working_set_bytes{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {v} {ms}",
                esc(container_name(s)),
                esc(label(s, LABEL_POD_NAMESPACE)),
                esc(label(s, LABEL_POD_NAME))
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise"
    );
    let _ = writeln!(out, "# TYPE scrape_error gauge");
    let _ = writeln!(out, "scrape_error 0");
    prom(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "cpu  100 20 30 5000 40 1 2 3 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(
            parse_proc_stat(stat),
            Some((100 + 20 + 30 + 1 + 2 + 3) * 10_000_000)
        );
        let mem = "MemTotal:       2048 kB\nMemFree:         512 kB\nMemAvailable:   1024 kB\n";
        assert_eq!(
            parse_meminfo(mem),
            Some((2048 * 1024, 1024 * 1024, 512 * 1024))
        );
        assert_eq!(parse_meminfo("nothing"), None);
    }

    #[test]
    fn groups_container_stats_by_pod() {
        let mk = |uid: &str, name: &str, cpu: u64| ContainerStats {
            attributes: Some(crate::cri::v1::ContainerAttributes {
                id: format!("{uid}-{name}"),
                metadata: Some(crate::cri::v1::ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                labels: [
                    (LABEL_POD_UID.to_string(), uid.to_string()),
                    (LABEL_POD_NAME.to_string(), format!("pod-{uid}")),
                    (LABEL_POD_NAMESPACE.to_string(), "ns".to_string()),
                ]
                .into(),
                annotations: Default::default(),
            }),
            cpu: Some(crate::cri::v1::CpuUsage {
                timestamp: 0,
                usage_core_nano_seconds: Some(crate::cri::v1::UInt64Value { value: cpu }),
                usage_nano_cores: None,
            }),
            memory: None,
        };
        let stats = vec![mk("a", "x", 1), mk("b", "y", 2), mk("a", "z", 3)];
        let pods = by_pod(&stats);
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].name, "pod-a");
        assert_eq!(sum(&pods[0].containers, cpu_total), Some(4));
        assert_eq!(sum(&pods[0].containers, mem_ws), None);
    }
}
