//! The scheduler's view of the cluster: nodes and the pods bound (or assumed
//! bound by us) to them, with per-node allocation totals kept incrementally so
//! a scheduling cycle never lists anything.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::resources::{Resources, pod_nonzero_requests, pod_requests};
use crate::selectors::Labels;

/// A host port a pod claims: (host IP, protocol, port).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Two claims conflict on the same port+protocol when either binds all addresses.
    pub fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || self.ip == "0.0.0.0" || o.ip == "0.0.0.0")
    }
}

/// What the scheduler needs of one pod, computed once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub key: String,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub requests: Resources,
    pub nonzero: (i64, i64),
    pub host_ports: Vec<HostPort>,
    pub priority: i32,
    pub has_required_anti_affinity: bool,
    pub pod: Arc<Pod>,
}

pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

pub fn pod_priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Self {
        let mut host_ports = Vec::new();
        if let Some(spec) = pod.spec.as_ref() {
            let all = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten());
            for c in all {
                for p in c.ports.iter().flatten() {
                    if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                        host_ports.push(HostPort {
                            ip: p
                                .host_ip
                                .clone()
                                .filter(|s| !s.is_empty())
                                .unwrap_or_else(|| "0.0.0.0".into()),
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            port: hp,
                        });
                    }
                }
            }
        }
        Self {
            key: pod_key(&pod),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            requests: pod_requests(&pod),
            nonzero: pod_nonzero_requests(&pod),
            host_ports,
            priority: pod_priority(&pod),
            has_required_anti_affinity: pod
                .spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .is_some_and(|t| !t.is_empty()),
            pod,
        }
    }

    pub fn node_name(&self) -> Option<&str> {
        self.pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
    }
}

/// One node and what is placed on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    /// `None` while pods reference a node we have not seen (yet).
    pub node: Option<Arc<Node>>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub nonzero_requested: (i64, i64),
    pub pods: BTreeMap<String, Arc<PodInfo>>,
    pub images: HashMap<String, i64>,
    /// Preemptors nominated to this node: (pod key, priority, requests). Their
    /// room is kept free for them against pods of no higher priority.
    pub nominated: Vec<(String, i32, Resources)>,
    /// Pods here with required anti-affinity terms (they constrain every newcomer).
    pub anti_affinity_pods: usize,
}

impl NodeInfo {
    pub fn labels(&self) -> Option<&Labels> {
        self.node.as_ref().and_then(|n| n.metadata.labels.as_ref())
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels().and_then(|l| l.get(key)).map(String::as_str)
    }

    fn set_node(&mut self, node: Arc<Node>) {
        let status = node.status.as_ref();
        self.allocatable = Resources::from_list(
            status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())),
        );
        self.images.clear();
        for img in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            for name in img.names.iter().flatten() {
                self.images
                    .insert(normalize_image(name), img.size_bytes.unwrap_or(0));
            }
        }
        self.node = Some(node);
    }

    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        if let Some(old) = self.pods.insert(p.key.clone(), p.clone()) {
            self.account(&old, false);
        }
        self.account(&p, true);
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let old = self.pods.remove(key)?;
        self.account(&old, false);
        Some(old)
    }

    fn account(&mut self, p: &PodInfo, add: bool) {
        if p.has_required_anti_affinity {
            if add {
                self.anti_affinity_pods += 1;
            } else {
                self.anti_affinity_pods -= 1;
            }
        }
        if add {
            self.requested.add(&p.requests);
            self.nonzero_requested.0 += p.nonzero.0;
            self.nonzero_requested.1 += p.nonzero.1;
        } else {
            self.requested.sub(&p.requests);
            self.nonzero_requested.0 -= p.nonzero.0;
            self.nonzero_requested.1 -= p.nonzero.1;
        }
    }

    pub fn used_ports(&self) -> impl Iterator<Item = &HostPort> {
        self.pods.values().flat_map(|p| p.host_ports.iter())
    }
}

/// `nginx` and `docker.io/library/nginx:latest` are the same image.
pub fn normalize_image(name: &str) -> String {
    let mut n = name.to_string();
    let last = n.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !last.contains('@') {
        n.push_str(":latest");
    }
    if !n.contains('/') {
        n = format!("docker.io/library/{n}");
    } else {
        let first = n.split('/').next().unwrap_or("");
        if !first.contains('.') && !first.contains(':') && first != "localhost" {
            n = format!("docker.io/{n}");
        }
    }
    n
}

#[derive(Debug, Default)]
pub struct Cache {
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Bound and assumed pods → node name.
    pub pod_nodes: HashMap<String, String>,
    /// Pods we decided on whose binding the watch has not confirmed yet.
    pub assumed: HashSet<String>,
    /// Node names in a stable order, for round-robin starts.
    pub order: Vec<String>,
    /// Number of nodes holding each image (image locality spreads by it).
    pub image_nodes: HashMap<String, usize>,
    /// Nominated pod key → node.
    pub nominations: HashMap<String, String>,
}

/// What changed, so the queue can decide whether retrying pods makes sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Relevant,
}

impl Cache {
    pub fn ready_nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|n| n.node.is_some())
    }

    pub fn node_count(&self) -> usize {
        self.order.len()
    }

    fn rebuild_order(&mut self) {
        self.order = self
            .nodes
            .values()
            .filter(|n| n.node.is_some())
            .map(|n| n.name.clone())
            .collect();
        self.image_nodes.clear();
        for n in self.nodes.values() {
            for img in n.images.keys() {
                *self.image_nodes.entry(img.clone()).or_default() += 1;
            }
        }
    }

    pub fn upsert_node(&mut self, node: Node) -> Change {
        let name = node.metadata.name.clone().unwrap_or_default();
        let entry = self.nodes.entry(name.clone()).or_insert_with(|| NodeInfo {
            name: name.clone(),
            ..NodeInfo::default()
        });
        let change = match &entry.node {
            Some(old)
                if old.spec == node.spec
                    && old.metadata.labels == node.metadata.labels
                    && scheduling_status(old) == scheduling_status(&node) =>
            {
                Change::None
            }
            _ => Change::Relevant,
        };
        let was_known = entry.node.is_some();
        entry.set_node(Arc::new(node));
        if !was_known || change == Change::Relevant {
            self.rebuild_order();
        }
        change
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(n) = self.nodes.get_mut(name) {
            n.node = None;
            if n.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
        self.rebuild_order();
    }

    /// Adds or replaces a bound pod (a watch confirmation of an assumed pod too).
    pub fn upsert_bound_pod(&mut self, pod: Arc<Pod>) -> Change {
        let info = Arc::new(PodInfo::new(pod));
        let Some(node) = info.node_name().map(str::to_string) else {
            return Change::None;
        };
        let was_assumed = self.assumed.remove(&info.key);
        self.clear_nomination(&info.key);
        let mut change = Change::Relevant;
        if let Some(old_node) = self.pod_nodes.get(&info.key).cloned()
            && let Some(n) = self.nodes.get_mut(&old_node)
            && let Some(old) = n.remove_pod(&info.key)
            && (was_assumed || (old.labels == info.labels && old_node == node))
        {
            // Our own binding arriving, or a status-only update: nothing new to try.
            change = Change::None;
        }
        self.pod_nodes.insert(info.key.clone(), node.clone());
        self.nodes
            .entry(node.clone())
            .or_insert_with(|| NodeInfo {
                name: node,
                ..NodeInfo::default()
            })
            .add_pod(info);
        change
    }

    /// Records our decision before the binding is confirmed.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let mut bound = pod.clone();
        if let Some(spec) = bound.spec.as_mut() {
            spec.node_name = Some(node.to_string());
        }
        let key = pod_key(pod);
        self.upsert_bound_pod(Arc::new(bound));
        self.assumed.insert(key);
    }

    pub fn remove_pod(&mut self, key: &str) -> Change {
        self.assumed.remove(key);
        self.clear_nomination(key);
        let Some(node) = self.pod_nodes.remove(key) else {
            return Change::None;
        };
        if let Some(n) = self.nodes.get_mut(&node) {
            n.remove_pod(key);
            if n.node.is_none() && n.pods.is_empty() {
                self.nodes.remove(&node);
            }
        }
        Change::Relevant
    }

    /// Reserves room on `node` for a preemptor until it is bound or gone.
    pub fn nominate(&mut self, pod: &PodInfo, node: &str) {
        self.clear_nomination(&pod.key);
        if let Some(n) = self.nodes.get_mut(node) {
            n.nominated
                .push((pod.key.clone(), pod.priority, pod.requests.clone()));
            self.nominations.insert(pod.key.clone(), node.to_string());
        }
    }

    pub fn clear_nomination(&mut self, key: &str) {
        if let Some(node) = self.nominations.remove(key)
            && let Some(n) = self.nodes.get_mut(&node)
        {
            n.nominated.retain(|(k, _, _)| k != key);
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains(key)
    }

    pub fn all_pods(&self) -> impl Iterator<Item = (&NodeInfo, &Arc<PodInfo>)> {
        self.nodes
            .values()
            .flat_map(|n| n.pods.values().map(move |p| (n, p)))
    }
}

/// The parts of a node's status that can change a scheduling outcome.
fn scheduling_status(n: &Node) -> (Option<String>, String, usize) {
    let s = n.status.as_ref();
    let ready = s
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    let alloc = format!("{:?}", s.and_then(|s| s.allocatable.as_ref()));
    let images = s.and_then(|s| s.images.as_ref()).map_or(0, Vec::len);
    (ready, alloc, images)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, cpu: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn allocations_follow_adds_moves_and_removes() {
        let mut c = Cache::default();
        c.upsert_node(
            serde_json::from_value(
                json!({"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "2"}}}),
            )
            .unwrap(),
        );
        c.upsert_bound_pod(pod("a", Some("n1"), "500m"));
        c.upsert_bound_pod(pod("b", Some("n1"), "250m"));
        assert_eq!(c.nodes["n1"].requested.milli_cpu, 750);
        // A replacement does not double count.
        c.upsert_bound_pod(pod("b", Some("n1"), "250m"));
        assert_eq!(c.nodes["n1"].requested.milli_cpu, 750);
        assert_eq!(c.nodes["n1"].requested.pods, 2);
        c.remove_pod("default/a");
        assert_eq!(c.nodes["n1"].requested.milli_cpu, 250);
        // An assumed pod counts until removed; its confirmation is not a new change.
        let p = pod("d", None, "1");
        c.assume(&p, "n1");
        assert_eq!(c.nodes["n1"].requested.milli_cpu, 1250);
        assert_eq!(c.upsert_bound_pod(pod("d", Some("n1"), "1")), Change::None);
        assert!(!c.is_assumed("default/d"));
        assert_eq!(c.nodes["n1"].requested.milli_cpu, 1250);
    }

    #[test]
    fn image_names_normalize() {
        assert_eq!(normalize_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalize_image("foo/bar:1"), "docker.io/foo/bar:1");
        assert_eq!(normalize_image("reg.io:5000/x"), "reg.io:5000/x:latest");
    }
}
