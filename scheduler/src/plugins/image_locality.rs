//! Image locality: prefer nodes that already hold the pod's images, scaled by
//! how widely each image is spread (so one node does not attract everything).

use crate::cache::{Cache, NodeInfo, normalize_image};
use crate::framework::{CycleState, MAX_SCORE, ScorePlugin};

pub struct ImageLocality;

const MB: i64 = 1024 * 1024;
/// Below this total the images are cheap to pull anyway; above the max the score saturates.
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

impl ScorePlugin for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }

    fn weight(&self) -> i64 {
        1
    }

    fn score(&self, st: &CycleState, node: &NodeInfo, cache: &Cache) -> i64 {
        if node.images.is_empty() {
            return 0;
        }
        let total_nodes = cache.node_count().max(1) as i64;
        let mut sum = 0i64;
        let mut containers = 0i64;
        let all = st
            .spec
            .containers
            .iter()
            .chain(st.spec.init_containers.iter().flatten());
        for c in all {
            containers += 1;
            let Some(image) = c.image.as_deref() else {
                continue;
            };
            let image = normalize_image(image);
            if let Some(size) = node.images.get(&image) {
                let spread = cache.image_nodes.get(&image).copied().unwrap_or(1) as i64;
                sum += size * spread / total_nodes;
            }
        }
        let max = MAX_CONTAINER_THRESHOLD * containers.max(1);
        let clamped = sum.clamp(MIN_THRESHOLD, max);
        MAX_SCORE * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
    }
}
