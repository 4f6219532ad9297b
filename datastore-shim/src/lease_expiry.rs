//! Revokes expired leases (deleting their keys) twice a second.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::now_ms;
use crate::shared::Shared;
use crate::writer::{WriteOp, Writer};

const TICK: Duration = Duration::from_millis(500);

pub async fn run(shared: Arc<Shared>, writer: Writer) {
    let shutdown = shared.shutdown.clone();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::shared::stopped(shutdown.clone()) => return,
        }
        let expired = match shared.db.expired_leases(now_ms()).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::debug!(error = %e, "cannot check lease expiry");
                continue;
            }
        };
        if expired.is_empty() {
            continue;
        }
        tracing::debug!(leases = expired.len(), "revoking expired leases");
        // One request per lease, as etcd revokes each in its own revision;
        // submitted together, they still share one database transaction.
        let revokes = expired
            .into_iter()
            .map(|id| writer.submit(WriteOp::ExpireLeases(vec![id])));
        for r in futures::future::join_all(revokes).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "lease expiry failed; will retry");
            }
        }
    }
}
