//! State shared by the services, the writer and the background tasks of one
//! datastore instance.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use crate::backend::Db;
use crate::metrics::Metrics;
use crate::mvcc::{Row, Store};
use crate::proto::ResponseHeader;

pub struct Shared {
    store: RwLock<Store>,
    /// The committed revision; watchers wait on it.
    committed: watch::Sender<i64>,
    pub db: Db,
    pub cluster_id: u64,
    pub member_id: u64,
    /// The URL clients reach this instance at (for MemberList).
    pub client_url: String,
    pub readiness: k3rs_common::Readiness,
    pub metrics: Metrics,
    /// Flips to true when the server shuts down; long-lived streams end on it.
    pub shutdown: watch::Receiver<bool>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        db: Db,
        cluster_id: u64,
        member_id: u64,
        client_url: String,
        readiness: k3rs_common::Readiness,
        metrics: Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let (committed, _) = watch::channel(store.committed_rev());
        Arc::new(Self {
            store: RwLock::new(store),
            committed,
            db,
            cluster_id,
            member_id,
            client_url,
            readiness,
            metrics,
            shutdown,
        })
    }

    /// Read access to the store. A poisoned lock only means another task
    /// panicked mid-update; the data is still the best we have.
    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.committed.subscribe()
    }

    /// Publishes a committed revision to readers and watchers.
    pub fn commit(&self, rev: i64) {
        let committed = {
            let mut s = self.write();
            s.commit(rev);
            s.committed_rev()
        };
        self.metrics.revision.set(committed);
        self.committed.send_replace(committed);
    }

    /// Applies rows written by another instance (or found in the database at start).
    pub fn apply_remote(&self, rows: Vec<Row>, db_rev: i64, db_compacted: i64) {
        let committed = {
            let mut s = self.write();
            s.apply_committed(rows);
            s.commit(db_rev);
            if db_compacted > s.compacted_rev() {
                // The instance that compacted deletes the rows; we only forget them.
                s.compact(db_compacted);
            }
            s.committed_rev()
        };
        self.metrics.revision.set(committed);
        self.committed.send_replace(committed);
    }

    /// Compacts memory at `rev` and deletes the dropped rows in the background,
    /// in small chunks so writers are never stalled.
    pub fn compact(self: &Arc<Self>, rev: i64) {
        let dropped = self.write().compact(rev);
        if dropped.is_empty() {
            return;
        }
        let db = self.db.clone();
        tokio::spawn(async move {
            if let Err(e) = db.delete_revs(&dropped).await {
                // Harmless: the rows are below the compaction point and the next start re-deletes them.
                tracing::warn!(error = %e, rows = dropped.len(), "physical compaction incomplete");
            }
        });
    }

    pub fn header(&self, rev: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: rev,
            raft_term: RAFT_TERM,
        }
    }

    /// Fills the identity fields of a header computed by the store.
    pub fn fill(&self, h: &mut Option<ResponseHeader>) {
        let rev = h
            .as_ref()
            .map_or_else(|| self.read().committed_rev(), |h| h.revision);
        *h = Some(self.header(rev));
    }

    pub fn set_available(&self, ok: bool) {
        self.readiness.set(ok);
        self.metrics.db_up.set(i64::from(ok));
    }
}

/// There is no raft; a constant non-zero term keeps clients that look at it content.
pub const RAFT_TERM: u64 = 2;

/// Resolves once `rx` reports shutdown (or its sender is gone).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
