//! Volume node affinity: a pod mounting a bound PersistentVolume can only run
//! where that volume's `spec.nodeAffinity` allows.

use crate::cache::NodeInfo;
use crate::framework::{CycleState, Failure, FilterPlugin, FilterResult};
use crate::selectors::node_selector_terms_match;

pub struct VolumeNodeAffinity;

pub const REASON: &str = "node(s) had volume node affinity conflict";

impl FilterPlugin for VolumeNodeAffinity {
    fn name(&self) -> &'static str {
        "VolumeBinding"
    }

    fn filter(&self, st: &CycleState, node: &NodeInfo) -> FilterResult {
        let Some(n) = node.node.as_ref() else {
            return Ok(());
        };
        if st
            .volume_affinity
            .iter()
            .all(|sel| node_selector_terms_match(&sel.node_selector_terms, n))
        {
            Ok(())
        } else {
            Err(Failure::unresolvable(REASON))
        }
    }
}
