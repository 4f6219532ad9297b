//! Resource quantities, the pod's QoS class, and container cgroup limits.

use k8s_openapi::api::core::v1::{Container, Pod};

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

#[cfg(test)]
mod tests {
    use super::*;

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
            "metadata": {"name": "p"},
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
