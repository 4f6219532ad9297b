//! Filter and score plugins, one domain concept per module (named after the
//! upstream plugins they mirror).

pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_ports;
pub mod node_ready;
pub mod node_resources;
pub mod node_unschedulable;
pub mod taint_toleration;
pub mod topology_spread;
pub mod volume_binding;

#[cfg(test)]
mod tests {
    //! The cluster-aware filters over an in-memory cache.

    use std::collections::HashSet;
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Pod;
    use serde_json::{Value, json};

    use crate::cache::{Cache, PodInfo};
    use crate::framework::{CycleState, Framework};

    fn pod(name: &str, node: Option<&str>, labels: Value, spec: Value) -> Arc<Pod> {
        let mut spec = spec;
        spec["nodeName"] = json!(node);
        spec["containers"] = json!([{"name": "c"}]);
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "labels": labels},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    fn cluster() -> Cache {
        let mut c = Cache::default();
        for (n, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            c.upsert_node(
                serde_json::from_value(json!({
                    "metadata": {"name": n, "labels": {"zone": zone, "kubernetes.io/hostname": n}},
                    "status": {"allocatable": {"cpu": "4", "pods": "10"},
                               "conditions": [{"type": "Ready", "status": "True"}]}}))
                .unwrap(),
            );
        }
        c
    }

    fn feasible(c: &Cache, p: &Arc<Pod>) -> Vec<String> {
        let info = PodInfo::new(p.clone());
        let st = CycleState::new(&info, c, &HashSet::new(), vec![]);
        let fw = Framework::default();
        c.order
            .iter()
            .filter(|n| fw.filter(&st, &c.nodes[*n]).is_ok())
            .cloned()
            .collect()
    }

    #[test]
    fn spread_keeps_skew_within_max() {
        let mut c = cluster();
        let spec = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "x"}}}]});
        c.upsert_bound_pod(pod("x1", Some("a1"), json!({"app": "x"}), spec.clone()));
        // Zone a has one, zone b none: only zone b keeps the skew at 1.
        assert_eq!(
            feasible(&c, &pod("x2", None, json!({"app": "x"}), spec.clone())),
            ["b1"]
        );
        c.upsert_bound_pod(pod("x2", Some("b1"), json!({"app": "x"}), spec.clone()));
        assert_eq!(
            feasible(&c, &pod("x3", None, json!({"app": "x"}), spec)),
            ["a1", "a2", "b1"]
        );
    }

    #[test]
    fn affinity_and_symmetric_anti_affinity() {
        let mut c = cluster();
        let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}});
        c.upsert_bound_pod(pod("db1", Some("a1"), json!({"app": "db"}), anti.clone()));
        // The placed pod's anti-affinity keeps other db pods out of zone a, even without own terms.
        assert_eq!(
            feasible(&c, &pod("db2", None, json!({"app": "db"}), json!({}))),
            ["b1"]
        );
        // Unrelated pods are not affected.
        assert_eq!(
            feasible(&c, &pod("web", None, json!({"app": "web"}), json!({}))).len(),
            3
        );
        // Required affinity to db pods: zone a only.
        let aff = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}});
        assert_eq!(
            feasible(&c, &pod("cache", None, json!({}), aff)),
            ["a1", "a2"]
        );
        // The first pod of a self-affine group may go anywhere.
        let selfaff = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "grp"}}, "topologyKey": "zone"}]}}});
        assert_eq!(
            feasible(&c, &pod("g1", None, json!({"app": "grp"}), selfaff)).len(),
            3
        );
    }
}
