//! The single writer. Every mutation (puts, deletes, write txns, compaction,
//! lease changes) is queued here; the writer drains whatever is queued into
//! one batch, evaluates it against the in-memory store, and persists it in one
//! database transaction (group commit). Only after the commit do readers and
//! watchers see the new revisions, and only then are callers answered.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::backend::{LeaseChange, LeaseRow, now_ms};
use crate::error::Error;
use crate::proto::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, ResponseHeader, TxnRequest,
    TxnResponse,
};
use crate::shared::Shared;
use crate::txn::{WriteCtx, leases_used};

/// Most requests folded into one database transaction.
const MAX_BATCH: usize = 512;

/// A mutation waiting for the writer.
#[derive(Debug)]
pub enum WriteOp {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(i64),
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke(i64),
    LeaseKeepAlive(i64),
    /// Revoke these leases if they are still expired when the batch runs.
    ExpireLeases(Vec<i64>),
}

/// What a write produced; `rev` is the store revision after it.
#[derive(Debug)]
pub enum WriteReply {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compacted {
        rev: i64,
    },
    LeaseGranted {
        id: i64,
        ttl: i64,
        rev: i64,
    },
    LeaseRevoked {
        rev: i64,
    },
    /// `ttl` is 0 when the lease does not exist.
    KeptAlive {
        ttl: i64,
        rev: i64,
    },
    Expired,
}

struct Pending {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteReply, Error>>,
}

/// Handle for queueing writes.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Pending>,
}

impl Writer {
    /// Starts the writer task.
    pub fn spawn(shared: Arc<Shared>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        let task = tokio::spawn(run(shared, rx));
        (Self { tx }, task)
    }

    /// Queues a write and waits until it is durable (or failed).
    pub async fn submit(&self, op: WriteOp) -> Result<WriteReply, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { op, reply })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }
}

async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let started = std::time::Instant::now();
        process(&shared, std::mem::take(&mut batch)).await;
        shared.metrics.observe_batch(n, started.elapsed());
    }
    tracing::debug!("writer stopped");
}

/// Lease ids a batch needs to look up.
fn lease_ids(batch: &[Pending]) -> Vec<i64> {
    let mut ids = Vec::new();
    for p in batch {
        match &p.op {
            WriteOp::Put(r) if r.lease != 0 => ids.push(r.lease),
            WriteOp::Txn(t) => {
                leases_used(&t.success, &mut ids);
                leases_used(&t.failure, &mut ids);
            }
            WriteOp::LeaseGrant { id, .. } => ids.push(*id),
            WriteOp::LeaseRevoke(id) | WriteOp::LeaseKeepAlive(id) => ids.push(*id),
            WriteOp::ExpireLeases(v) => ids.extend(v),
            _ => {}
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

async fn process(shared: &Arc<Shared>, batch: Vec<Pending>) {
    match persist_batch(shared, &batch).await {
        Ok(results) => {
            for (p, r) in batch.into_iter().zip(results) {
                let _ = p.reply.send(r);
            }
            shared.set_available(true);
        }
        Err(e) => {
            tracing::warn!(error = %e, requests = batch.len(), "write batch failed; the database is unavailable");
            shared.set_available(false);
            let msg = e.to_string();
            for p in batch {
                let _ = p.reply.send(Err(Error::Unavailable(msg.clone())));
            }
        }
    }
}

/// Runs one batch: lock, catch up, evaluate, persist, commit. On `Err` nothing
/// of the batch is visible and every request must be answered Unavailable.
async fn persist_batch(
    shared: &Arc<Shared>,
    batch: &[Pending],
) -> Result<Vec<Result<WriteReply, Error>>, Error> {
    let db = &shared.db;
    let (mut tx, db_rev, db_compacted) = db.begin_batch().await?;

    // Other instances (or an ambiguous earlier commit of ours) may have moved the database on.
    let local = shared.read().committed_rev();
    if db_rev > local {
        let rows = tx.rows_after(db, local).await?;
        shared.apply_remote(rows, db_rev, db_compacted);
    } else if db_rev < local {
        return Err(Error::Unavailable(format!(
            "database revision {db_rev} is behind this instance ({local}); was it restored from a backup?"
        )));
    } else if db_compacted > shared.read().compacted_rev() {
        shared.apply_remote(Vec::new(), db_rev, db_compacted);
    }

    let mut leases: HashMap<i64, LeaseRow> = tx.leases(&lease_ids(batch)).await?;
    let mut results = Vec::with_capacity(batch.len());
    let mut rows = Vec::new();
    let mut lease_changes = Vec::new();
    let mut compact_to: Option<i64> = None;
    let new_rev;
    {
        let mut store = shared.write();
        let now = now_ms();
        for p in batch {
            let sp = store.savepoint();
            let mut ctx = WriteCtx::new(&mut store);
            let mut changes = Vec::new();
            let r = apply(
                &mut ctx,
                &p.op,
                &mut leases,
                &mut changes,
                &mut compact_to,
                now,
            );
            match r {
                Ok(reply) => {
                    rows.append(&mut ctx.rows);
                    lease_changes.append(&mut changes);
                    results.push(Ok(reply));
                }
                Err(e) => {
                    drop(ctx);
                    store.rollback_to_savepoint(sp);
                    results.push(Err(e));
                }
            }
        }
        new_rev = store.current_rev();
    }

    if rows.is_empty() && lease_changes.is_empty() && compact_to.is_none() {
        // Nothing to persist (only failed requests or no-op deletes).
        drop(tx);
        return Ok(results);
    }
    let compacted = compact_to.unwrap_or(db_compacted).max(db_compacted);
    let persisted = async {
        tx.insert_rows(&rows).await?;
        tx.lease_changes(&lease_changes).await?;
        tx.commit(new_rev, compacted).await
    }
    .await;
    if let Err(e) = persisted {
        shared.write().rollback();
        return Err(e);
    }
    shared.commit(new_rev);
    if let Some(c) = compact_to {
        shared.compact(c);
    }
    Ok(results)
}

fn header(rev: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision: rev,
        ..Default::default()
    })
}

/// Applies one request to the store inside the batch.
fn apply(
    ctx: &mut WriteCtx<'_>,
    op: &WriteOp,
    leases: &mut HashMap<i64, LeaseRow>,
    changes: &mut Vec<LeaseChange>,
    compact_to: &mut Option<i64>,
    now: i64,
) -> Result<WriteReply, Error> {
    match op {
        WriteOp::Put(p) => ctx.put(p, leases).map(WriteReply::Put),
        WriteOp::DeleteRange(d) => {
            let mut resp = ctx.delete(d);
            resp.header = header(ctx.revision());
            Ok(WriteReply::DeleteRange(resp))
        }
        WriteOp::Txn(t) => {
            let mut resp = ctx.txn(t, leases)?;
            ctx.finish_txn(&mut resp);
            Ok(WriteReply::Txn(resp))
        }
        WriteOp::Compact(rev) => {
            let compacted = compact_to.unwrap_or(ctx.store.compacted_rev());
            if *rev <= compacted {
                return Err(Error::Compacted);
            }
            if *rev > ctx.store.current_rev() {
                return Err(Error::FutureRev);
            }
            *compact_to = Some(*rev);
            Ok(WriteReply::Compacted {
                rev: ctx.store.current_rev(),
            })
        }
        WriteOp::LeaseGrant { id, ttl } => {
            if leases.contains_key(id) {
                return Err(Error::LeaseExists);
            }
            let expiry = now + ttl * 1000;
            leases.insert(*id, (*ttl, expiry));
            changes.push(LeaseChange::Insert {
                id: *id,
                ttl: *ttl,
                expiry,
            });
            Ok(WriteReply::LeaseGranted {
                id: *id,
                ttl: *ttl,
                rev: ctx.revision(),
            })
        }
        WriteOp::LeaseRevoke(id) => {
            if leases.remove(id).is_none() {
                return Err(Error::LeaseNotFound);
            }
            let keys = ctx.store.keys_of_lease(*id);
            ctx.delete_keys(&keys);
            changes.push(LeaseChange::Delete { id: *id });
            Ok(WriteReply::LeaseRevoked {
                rev: ctx.revision(),
            })
        }
        WriteOp::LeaseKeepAlive(id) => match leases.get_mut(id) {
            None => Ok(WriteReply::KeptAlive {
                ttl: 0,
                rev: ctx.revision(),
            }),
            Some((ttl, expiry)) => {
                *expiry = now + *ttl * 1000;
                changes.push(LeaseChange::Refresh {
                    id: *id,
                    expiry: *expiry,
                });
                Ok(WriteReply::KeptAlive {
                    ttl: *ttl,
                    rev: ctx.revision(),
                })
            }
        },
        WriteOp::ExpireLeases(ids) => {
            // The expiry task sends one lease per request, so that each
            // revocation gets its own revision as in etcd.
            for id in ids {
                if leases.get(id).is_some_and(|(_, expiry)| *expiry <= now) {
                    leases.remove(id);
                    let keys = ctx.store.keys_of_lease(*id);
                    ctx.delete_keys(&keys);
                    changes.push(LeaseChange::Delete { id: *id });
                }
            }
            Ok(WriteReply::Expired)
        }
    }
}
