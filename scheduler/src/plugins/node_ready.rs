//! Nodes whose Ready condition is not True take no new pods, unless the pod
//! tolerates the not-ready taint (as DaemonSet pods do).

use k8s_openapi::api::core::v1::Taint;

use crate::cache::NodeInfo;
use crate::framework::{CycleState, Failure, FilterPlugin, FilterResult};
use crate::selectors::tolerated;

pub struct NodeReady;

pub const REASON: &str = "node(s) were not ready";

impl FilterPlugin for NodeReady {
    fn name(&self) -> &'static str {
        "NodeReady"
    }

    fn filter(&self, st: &CycleState, node: &NodeInfo) -> FilterResult {
        let ready = node
            .node
            .as_ref()
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        if ready {
            return Ok(());
        }
        let taint = Taint {
            key: "node.kubernetes.io/not-ready".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if tolerated(st.tolerations, &taint) {
            return Ok(());
        }
        Err(Failure::unresolvable(REASON))
    }
}
