//! Host ports: a node cannot give the same host port/protocol/IP to two pods.

use crate::cache::NodeInfo;
use crate::framework::{CycleState, Failure, FilterPlugin, FilterResult};

pub struct NodePorts;

pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, st: &CycleState, node: &NodeInfo) -> FilterResult {
        if st.pod.host_ports.is_empty() {
            return Ok(());
        }
        let conflict = node
            .used_ports()
            .any(|used| st.pod.host_ports.iter().any(|want| want.conflicts(used)));
        if conflict {
            Err(Failure::resolvable(REASON))
        } else {
            Ok(())
        }
    }
}
