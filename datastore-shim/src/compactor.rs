//! Automatic compaction (`--compact-interval`): keeps the most recent
//! revisions and compacts the rest, like K3s's kine does.

use std::sync::Arc;
use std::time::Duration;

use crate::shared::Shared;
use crate::writer::{WriteOp, Writer};

/// Revisions kept behind the current one when compacting automatically.
pub const RETAIN_REVISIONS: i64 = 1000;

pub async fn run(shared: Arc<Shared>, writer: Writer, interval: Duration) {
    let shutdown = shared.shutdown.clone();
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::shared::stopped(shutdown.clone()) => return,
        }
        let (current, compacted) = {
            let s = shared.read();
            (s.committed_rev(), s.compacted_rev())
        };
        let target = current - RETAIN_REVISIONS;
        if target <= compacted {
            continue;
        }
        match writer.submit(WriteOp::Compact(target)).await {
            Ok(_) => tracing::info!(revision = target, "compacted"),
            Err(crate::Error::Compacted) => {}
            Err(e) => tracing::warn!(error = %e, "automatic compaction failed"),
        }
    }
}
