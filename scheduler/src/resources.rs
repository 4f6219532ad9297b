//! Resource arithmetic: what a pod requests and what a node can still hold.

use std::collections::BTreeMap;

use k3rs_apimachinery::validation::parse_quantity;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Requests assumed for a container that sets none, when *scoring* only
/// (upstream's non-zero defaults: 100m CPU, 200 MiB memory).
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// A bundle of resource amounts: CPU in millicores, everything else in units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    /// Extended resources (`example.com/gpu`, `hugepages-2Mi`, ...).
    pub scalar: BTreeMap<String, i64>,
}

/// Millicores, rounded up.
pub fn milli_value(q: &Quantity) -> i64 {
    parse_quantity(&q.0)
        .map(|v| {
            let n = v.nanos();
            let m = n / 1_000_000 + i128::from(n % 1_000_000 > 0);
            m.clamp(0, i64::MAX as i128) as i64
        })
        .unwrap_or(0)
}

/// Whole units, rounded up.
pub fn value(q: &Quantity) -> i64 {
    parse_quantity(&q.0)
        .map(|v| {
            let n = v.nanos();
            let u = n / 1_000_000_000 + i128::from(n % 1_000_000_000 > 0);
            u.clamp(0, i64::MAX as i128) as i64
        })
        .unwrap_or(0)
}

impl Resources {
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, q);
        }
        r
    }

    fn set(&mut self, name: &str, q: &Quantity) {
        match name {
            "cpu" => self.milli_cpu = milli_value(q),
            "memory" => self.memory = value(q),
            "ephemeral-storage" => self.ephemeral_storage = value(q),
            "pods" => self.pods = value(q),
            other if is_scalar(other) => {
                self.scalar.insert(other.to_string(), value(q));
            }
            _ => {}
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Element-wise maximum (init containers run one at a time).
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// Extended resources and huge pages; other names (e.g. `storage`) are ignored.
fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/') && !name.starts_with("kubernetes.io/"))
}

fn container_requests(c: &Container) -> Resources {
    let res = c.resources.as_ref();
    // Limits stand in for unset requests, as API defaulting does.
    let mut r = Resources::from_list(res.and_then(|r| r.limits.as_ref()));
    let req = Resources::from_list(res.and_then(|r| r.requests.as_ref()));
    let req_list = res.and_then(|r| r.requests.as_ref());
    if req_list.is_some_and(|l| l.contains_key("cpu")) {
        r.milli_cpu = req.milli_cpu;
    }
    if req_list.is_some_and(|l| l.contains_key("memory")) {
        r.memory = req.memory;
    }
    if req_list.is_some_and(|l| l.contains_key("ephemeral-storage")) {
        r.ephemeral_storage = req.ephemeral_storage;
    }
    for (k, v) in req.scalar {
        r.scalar.insert(k, v);
    }
    r
}

/// The effective request of a pod: max(sum of containers + restartable init
/// containers, each init container) + overhead, and one pod slot.
pub fn pod_requests(pod: &Pod) -> Resources {
    let mut total = Resources::default();
    let Some(spec) = pod.spec.as_ref() else {
        total.pods = 1;
        return total;
    };
    for c in &spec.containers {
        total.add(&container_requests(c));
    }
    // Sidecars (restartPolicy Always init containers) keep running next to the app.
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            total.add(&r);
        } else {
            let mut with_sidecars = r;
            with_sidecars.add(&sidecars);
            init_max.max_with(&with_sidecars);
        }
    }
    total.max_with(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        total.add(&Resources::from_list(Some(overhead)));
    }
    total.pods = 1;
    total
}

/// CPU and memory with upstream's non-zero defaults, for the scoring plugins.
pub fn pod_nonzero_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = pod.spec.as_ref() else {
        return (DEFAULT_MILLI_CPU, DEFAULT_MEMORY);
    };
    let (mut cpu, mut mem) = (0, 0);
    for c in &spec.containers {
        let r = container_requests(c);
        cpu += if r.milli_cpu == 0 {
            DEFAULT_MILLI_CPU
        } else {
            r.milli_cpu
        };
        mem += if r.memory == 0 {
            DEFAULT_MEMORY
        } else {
            r.memory
        };
    }
    (cpu, mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn quantities_round_up() {
        assert_eq!(milli_value(&Quantity("1".into())), 1000);
        assert_eq!(milli_value(&Quantity("250m".into())), 250);
        assert_eq!(milli_value(&Quantity("0.5".into())), 500);
        assert_eq!(value(&Quantity("1Gi".into())), 1 << 30);
        assert_eq!(value(&Quantity("1500m".into())), 2);
        assert_eq!(value(&Quantity("garbage".into())), 0);
    }

    #[test]
    fn init_containers_take_the_max_and_overhead_adds() {
        let p = pod(json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "200m", "memory": "100Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "300m", "example.com/gpu": "1"}}}
            ],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}
            ],
            "overhead": {"cpu": "50m"}
        }}));
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 1050);
        assert_eq!(r.memory, 100 << 20);
        assert_eq!(r.pods, 1);
        assert_eq!(r.scalar.get("example.com/gpu"), Some(&1));
    }

    #[test]
    fn nonzero_defaults_only_for_unset_requests() {
        let p = pod(json!({"spec": {"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"requests": {"cpu": "1"}}}
        ]}}));
        assert_eq!(pod_nonzero_requests(&p), (1100, 2 * DEFAULT_MEMORY));
        assert_eq!(pod_requests(&p).milli_cpu, 1000);
    }
}
