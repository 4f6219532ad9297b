//! Cordoned nodes (`spec.unschedulable`) only take pods tolerating
//! `node.kubernetes.io/unschedulable:NoSchedule`.

use k8s_openapi::api::core::v1::Taint;

use crate::cache::NodeInfo;
use crate::framework::{CycleState, Failure, FilterPlugin, FilterResult};
use crate::selectors::tolerated;

pub struct NodeUnschedulable;

pub const REASON: &str = "node(s) were unschedulable";

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, st: &CycleState, node: &NodeInfo) -> FilterResult {
        let cordoned = node
            .node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !cordoned {
            return Ok(());
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if tolerated(st.tolerations, &taint) {
            Ok(())
        } else {
            Err(Failure::unresolvable(REASON))
        }
    }
}
