//! Resource quantities, the pod's QoS class, container cgroup limits, the
//! OOM score per QoS class and the `kubepods` cgroup hierarchy pods run in.

use std::path::Path;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::{Container, Pod};

/// The cgroup (cgroupfs driver path) every pod cgroup lives under, split by
/// QoS class as kubelet does: Guaranteed pods directly, the others in
/// `burstable/` and `besteffort/`.
pub const KUBEPODS: &str = "/kubepods";

/// oom_score_adj of Guaranteed containers and of BestEffort ones (upstream's values).
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

/// A Kubernetes quantity ("100m", "64Mi", "1G", "2") as a float in base units.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

fn get(c: &Container, limits: bool, name: &str) -> Option<f64> {
    let r = c.resources.as_ref()?;
    let m = if limits {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    }?;
    parse_quantity(&m.get(name)?.0)
}

/// `Guaranteed`, `Burstable` or `BestEffort`, by upstream's rules.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort";
    };
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        for name in ["cpu", "memory"] {
            let req = get(c, false, name);
            let lim = get(c, true, name);
            if req.is_some() || lim.is_some() {
                any = true;
            }
            // A missing request defaults to the limit.
            match (req.or(lim), lim) {
                (Some(r), Some(l)) if (r - l).abs() < f64::EPSILON => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// cgroup settings for a container: (cpu shares, cpu quota per 100 ms period, memory limit).
pub fn linux_limits(c: &Container) -> (i64, i64, i64) {
    let req_cpu = get(c, false, "cpu").or(get(c, true, "cpu"));
    // Same mapping as kubelet: 1 CPU = 1024 shares, at least 2.
    let shares = req_cpu.map(|v| ((v * 1024.0) as i64).max(2)).unwrap_or(2);
    let quota = get(c, true, "cpu")
        .map(|v| ((v * 100_000.0) as i64).max(1000))
        .unwrap_or(0);
    let memory = get(c, true, "memory").map(|v| v as i64).unwrap_or(0);
    (shares, quota, memory)
}

/// The pod's cgroup: `/kubepods/pod<uid>`, `/kubepods/burstable/pod<uid>`
/// or `/kubepods/besteffort/pod<uid>`, given as the sandbox's cgroup parent
/// (the runtime creates the directories under each controller).
pub fn pod_cgroup(pod: &Pod) -> String {
    cgroup_for(qos_class(pod), &crate::sandbox::pod_uid(pod))
}

fn cgroup_for(qos: &str, uid: &str) -> String {
    match qos {
        "Guaranteed" => format!("{KUBEPODS}/pod{uid}"),
        "Burstable" => format!("{KUBEPODS}/burstable/pod{uid}"),
        _ => format!("{KUBEPODS}/besteffort/pod{uid}"),
    }
}

/// Removes the (by now empty) cgroup directories of pod `uid` under every
/// mounted hierarchy: the runtime removes the containers' cgroups, not the
/// parents we named. `root` is `/sys/fs/cgroup` outside tests.
pub fn remove_pod_cgroups(root: &Path, uid: &str) {
    if uid.is_empty() {
        return;
    }
    // cgroup v1 has one hierarchy per controller directory; v2 is the root itself.
    let mut hierarchies = vec![root.to_path_buf()];
    if let Ok(dirs) = std::fs::read_dir(root) {
        hierarchies.extend(dirs.flatten().map(|d| d.path()).filter(|p| p.is_dir()));
    }
    for qos in ["Guaranteed", "Burstable", "BestEffort"] {
        let rel = cgroup_for(qos, uid);
        for h in &hierarchies {
            let dir = h.join(rel.trim_start_matches('/'));
            if dir.is_dir()
                && let Err(e) = std::fs::remove_dir(&dir)
            {
                tracing::debug!(dir = %dir.display(), error = %e, "removing a pod cgroup");
            }
        }
    }
}

/// The node's memory, for the Burstable OOM score (read once).
fn node_memory_bytes() -> u64 {
    static MEM: OnceLock<u64> = OnceLock::new();
    *MEM.get_or_init(|| {
        crate::node::parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
            .unwrap_or(0)
    })
}

/// The container's oom_score_adj: Guaranteed pods are killed last,
/// BestEffort first, and Burstable containers in between by how much of
/// the node's memory they requested.
pub fn oom_score_adj(pod: &Pod, c: &Container) -> i64 {
    oom_score_adj_with(qos_class(pod), get(c, false, "memory"), node_memory_bytes())
}

fn oom_score_adj_with(qos: &str, memory_request: Option<f64>, capacity: u64) -> i64 {
    match qos {
        "Guaranteed" => GUARANTEED_OOM_SCORE_ADJ,
        "BestEffort" => BEST_EFFORT_OOM_SCORE_ADJ,
        _ => {
            let request = memory_request.unwrap_or(0.0).max(0.0) as i128;
            let capacity = i128::from(capacity.max(1));
            let adj = (1000 - (1000 * request) / capacity) as i64;
            // Stay above Guaranteed pods and below BestEffort ones.
            adj.clamp(
                1000 + GUARANTEED_OOM_SCORE_ADJ,
                BEST_EFFORT_OOM_SCORE_ADJ - 1,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_scores_and_cgroups_by_qos() {
        assert_eq!(oom_score_adj_with("Guaranteed", Some(1.0), 100), -997);
        assert_eq!(oom_score_adj_with("BestEffort", None, 100), 1000);
        // A quarter of the node's memory.
        assert_eq!(oom_score_adj_with("Burstable", Some(25.0), 100), 750);
        // Almost all of it, or none: clamped into (Guaranteed, BestEffort).
        assert_eq!(oom_score_adj_with("Burstable", Some(100.0), 100), 3);
        assert_eq!(oom_score_adj_with("Burstable", None, 100), 999);
        let p = pod(serde_json::json!({"requests": {"memory": "64Mi"}}));
        assert_eq!(pod_cgroup(&p), "/kubepods/burstable/podu");
        let p = pod(serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}}));
        assert_eq!(pod_cgroup(&p), "/kubepods/podu");
        assert_eq!(
            pod_cgroup(&pod(serde_json::json!({}))),
            "/kubepods/besteffort/podu"
        );
    }

    #[test]
    fn removes_empty_pod_cgroups_in_every_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory/kubepods/burstable/podu");
        let cpu = root.path().join("cpu/kubepods/burstable/podu");
        let busy = root.path().join("pids/kubepods/burstable/podu/ctr");
        for d in [&mem, &cpu, &busy] {
            std::fs::create_dir_all(d).unwrap();
        }
        remove_pod_cgroups(root.path(), "u");
        assert!(!mem.exists() && !cpu.exists());
        // Not empty (a container cgroup still there): left alone.
        assert!(busy.exists());
        assert!(root.path().join("memory/kubepods/burstable").exists());
    }

    #[test]
    fn container_limits() {
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c", "resources": {
            "requests": {"cpu": "250m", "memory": "32Mi"},
            "limits": {"cpu": "500m", "memory": "64Mi"},
        }}))
        .unwrap();
        assert_eq!(linux_limits(&c), (256, 50_000, 64 << 20));
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c"})).unwrap();
        assert_eq!(linux_limits(&c), (2, 0, 0));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("abc"), None);
    }

    fn pod(resources: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "resources": resources}]},
        }))
        .unwrap()
    }

    #[test]
    fn qos() {
        assert_eq!(qos_class(&pod(serde_json::json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(
                serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod(serde_json::json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
    }
}
