//! etcd request semantics evaluated against the in-memory store: Range, Put,
//! DeleteRange, Txn and its compares. Reads run against the committed
//! revision; writes run inside the writer's batch (see `writer`).

use std::collections::HashMap;

use bytes::Bytes;

use crate::error::Error;
use crate::mvcc::{KeyRange, Rev, Row, Store};
use crate::proto::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::range_request::{SortOrder, SortTarget};
use crate::proto::request_op::Request;
use crate::proto::response_op::Response;
use crate::proto::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, KeyValue, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};

/// etcd's default limit on operations in one Txn.
pub const MAX_TXN_OPS: usize = 128;

fn header(rev: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision: rev,
        ..Default::default()
    })
}

// ---------------------------------------------------------------- validation

/// Checks done before a request reaches the store, as etcd does them.
pub fn validate_range(r: &RangeRequest) -> Result<(), Error> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

pub fn validate_put(r: &PutRequest) -> Result<(), Error> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

pub fn validate_delete(r: &DeleteRangeRequest) -> Result<(), Error> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

pub fn validate_txn(t: &TxnRequest) -> Result<(), Error> {
    validate_ops(t, MAX_TXN_OPS)?;
    check_intervals(&t.success)?;
    check_intervals(&t.failure)?;
    Ok(())
}

/// etcd's `checkTxnRequest`: a nested txn may only use the operations its
/// parent left over (`max` minus the parent's largest list).
fn validate_ops(t: &TxnRequest, max: usize) -> Result<(), Error> {
    let used = t.compare.len().max(t.success.len()).max(t.failure.len());
    if used > max {
        return Err(Error::TooManyOps);
    }
    for c in &t.compare {
        if c.key.is_empty() {
            return Err(Error::EmptyKey);
        }
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => validate_range(r)?,
            Some(Request::RequestPut(r)) => validate_put(r)?,
            Some(Request::RequestDeleteRange(r)) => validate_delete(r)?,
            Some(Request::RequestTxn(t)) => validate_ops(t, max - used)?,
            None => {}
        }
    }
    Ok(())
}

/// etcd's `checkIntervals`, rule for rule: a branch may not put the same key
/// twice, nor put a key that a delete of the same level (or of an earlier
/// nested txn) covers ("duplicate key given in txn request"). The two branches
/// of a nested txn may put the same key. Returns the puts and deletes of `ops`.
fn check_intervals(ops: &[RequestOp]) -> Result<(Vec<Bytes>, Vec<KeyRange>), Error> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => {
                Some(KeyRange::new(d.key.clone(), d.range_end.clone()))
            }
            _ => None,
        })
        .collect();
    let mut puts: Vec<Bytes> = Vec::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.iter().any(|d| deletes(d, k)) {
                return Err(Error::DuplicateKey);
            }
            puts.push(k.clone());
        }
        for k in &puts_else {
            // A key put by both branches is fine: only one of them runs.
            if puts.contains(k) && !puts_then.contains(k) {
                return Err(Error::DuplicateKey);
            }
            if dels.iter().any(|d| deletes(d, k)) {
                return Err(Error::DuplicateKey);
            }
            puts.push(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || dels.iter().any(|d| deletes(d, &p.key)) {
            return Err(Error::DuplicateKey);
        }
        puts.push(p.key.clone());
    }
    Ok((puts, dels))
}

/// Whether a delete overlaps a put of `key` in etcd's interval check. etcd
/// takes a range end literally there, so a from-key delete (end `\0`) never
/// overlaps anything.
fn deletes(d: &KeyRange, key: &[u8]) -> bool {
    if d.end.is_empty() {
        d.start[..] == *key
    } else {
        d.start[..] <= *key && *key < d.end[..]
    }
}

/// Whether a txn can change anything (else it can be served as a read).
pub fn txn_writes(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => true,
            Some(Request::RequestTxn(t)) => txn_writes(t),
            _ => false,
        })
}

/// Every lease id a request may attach keys to.
pub fn leases_used(ops: &[RequestOp], out: &mut Vec<i64>) {
    for op in ops {
        match &op.request {
            Some(Request::RequestPut(p)) if p.lease != 0 => out.push(p.lease),
            Some(Request::RequestTxn(t)) => {
                leases_used(&t.success, out);
                leases_used(&t.failure, out);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- range

/// Range at `rev` (already validated by `Store::read_rev`).
pub fn range(store: &Store, r: &RangeRequest, rev: i64, header_rev: i64) -> RangeResponse {
    let kr = KeyRange::new(r.key.clone(), r.range_end.clone());
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    let sort_order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let sort_target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    // Sorting or filtering needs every match; otherwise stop one past the limit.
    let fetch_limit = if sort_order != SortOrder::None || filtered || r.limit <= 0 {
        usize::MAX
    } else {
        r.limit as usize + 1
    };
    let mut count = 0i64;
    let mut kvs: Vec<KeyValue> = Vec::new();
    store.scan(&kr, rev, |k, e| {
        count += 1;
        if !r.count_only && kvs.len() < fetch_limit {
            kvs.push(KeyValue {
                key: k.clone(),
                create_revision: e.create,
                mod_revision: e.rev.main,
                version: e.version,
                value: if r.keys_only {
                    Bytes::new()
                } else {
                    e.value.clone().unwrap_or_default()
                },
                lease: e.lease,
            });
        }
        true
    });
    if filtered {
        kvs.retain(|kv| {
            (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
                && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
        });
    }
    let order = if sort_target != SortTarget::Key && sort_order == SortOrder::None {
        // Results come key-ordered; another target implies ascending.
        SortOrder::Ascend
    } else {
        sort_order
    };
    if order != SortOrder::None {
        let cmp = |a: &KeyValue, b: &KeyValue| match sort_target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        // Stable both ways: equal elements stay in key order, as etcd returns them.
        if order == SortOrder::Descend {
            kvs.sort_by(|a, b| cmp(b, a));
        } else {
            kvs.sort_by(cmp);
        }
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    RangeResponse {
        header: header(header_rev),
        kvs,
        more,
        count,
    }
}

// ---------------------------------------------------------------- writes

/// Lease state visible to the writer while it evaluates a batch.
pub trait LeaseCheck {
    fn exists(&self, id: i64) -> bool;
}

impl LeaseCheck for HashMap<i64, (i64, i64)> {
    fn exists(&self, id: i64) -> bool {
        self.contains_key(&id)
    }
}

/// One write request being applied: assigns the (main, sub) revisions and
/// collects the rows to persist.
pub struct WriteCtx<'a> {
    pub store: &'a mut Store,
    pub rows: Vec<Row>,
    main: i64,
    sub: i64,
}

impl<'a> WriteCtx<'a> {
    pub fn new(store: &'a mut Store) -> Self {
        let main = store.next_rev();
        Self {
            store,
            rows: Vec::new(),
            main,
            sub: 0,
        }
    }

    fn next(&mut self) -> Rev {
        let r = Rev {
            main: self.main,
            sub: self.sub,
        };
        self.sub += 1;
        r
    }

    /// The revision the request ends at: its own if it wrote, else the current one.
    pub fn revision(&self) -> i64 {
        if self.rows.is_empty() {
            self.main - 1
        } else {
            self.main
        }
    }

    pub fn put(&mut self, p: &PutRequest, leases: &dyn LeaseCheck) -> Result<PutResponse, Error> {
        let prev = self.store.get(&p.key, self.store.current_rev());
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(Error::KeyNotFound);
        }
        let value = if p.ignore_value {
            prev.as_ref().map(|kv| kv.value.clone()).unwrap_or_default()
        } else {
            p.value.clone()
        };
        let lease = if p.ignore_lease {
            prev.as_ref().map_or(0, |kv| kv.lease)
        } else {
            p.lease
        };
        // Only a lease named by the request is checked (as etcd does): one kept
        // by ignore_lease is attached to a live key, so it exists, and the
        // writer has not loaded it.
        if p.lease != 0 && !leases.exists(p.lease) {
            return Err(Error::LeaseNotFound);
        }
        let rev = self.next();
        let (row, prev) = self.store.put(rev, p.key.clone(), value, lease);
        self.rows.push(row);
        Ok(PutResponse {
            header: header(self.main),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    pub fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let kr = KeyRange::new(d.key.clone(), d.range_end.clone());
        let keys = self
            .store
            .range_kvs(&kr, self.store.current_rev())
            .into_iter()
            .map(|kv| kv.key)
            .collect::<Vec<_>>();
        let mut prev_kvs = Vec::new();
        for k in &keys {
            let rev = self.next();
            if let Some((row, prev)) = self.store.delete(rev, k) {
                self.rows.push(row);
                if d.prev_kv {
                    prev_kvs.push(prev);
                }
            }
        }
        DeleteRangeResponse {
            header: None,
            deleted: keys.len() as i64,
            prev_kvs,
        }
    }

    /// Deletes the keys attached to a revoked lease, in key order.
    pub fn delete_keys(&mut self, keys: &[Bytes]) {
        let mut keys = keys.to_vec();
        keys.sort();
        for k in &keys {
            let rev = self.next();
            if let Some((row, _)) = self.store.delete(rev, k) {
                self.rows.push(row);
            }
        }
    }

    /// Evaluates a txn. An error inside leaves the store with partial changes:
    /// the caller must roll the whole request back (etcd fails the txn as a whole).
    pub fn txn(&mut self, t: &TxnRequest, leases: &dyn LeaseCheck) -> Result<TxnResponse, Error> {
        let begin = self.main - 1;
        self.txn_at(t, leases, begin)
    }

    /// Like etcd, every compare (nested txns' too) sees the store as it was
    /// before the txn (`begin`), while ranges see the txn's earlier writes.
    /// Sub-responses carry the revision etcd gives them: a range the revision
    /// it read, a put the new one, a delete the new one if anything changed so
    /// far, and a nested txn an empty header.
    fn txn_at(
        &mut self,
        t: &TxnRequest,
        leases: &dyn LeaseCheck,
        begin: i64,
    ) -> Result<TxnResponse, Error> {
        let succeeded = t.compare.iter().all(|c| compare(self.store, c, begin));
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let resp = match &op.request {
                Some(Request::RequestRange(r)) => {
                    // An explicit revision must exist before the txn.
                    if r.revision > begin {
                        return Err(Error::FutureRev);
                    }
                    let cur = self.store.current_rev();
                    let at = self.store.read_rev(r.revision, true)?;
                    Response::ResponseRange(range(self.store, r, at, cur))
                }
                Some(Request::RequestPut(p)) => Response::ResponsePut(self.put(p, leases)?),
                Some(Request::RequestDeleteRange(d)) => {
                    let mut resp = self.delete(d);
                    resp.header = header(self.revision());
                    Response::ResponseDeleteRange(resp)
                }
                Some(Request::RequestTxn(t)) => {
                    let mut resp = self.txn_at(t, leases, begin)?;
                    resp.header = Some(ResponseHeader::default());
                    Response::ResponseTxn(resp)
                }
                None => continue,
            };
            responses.push(ResponseOp {
                response: Some(resp),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    /// Stamps the final revision into the header of a finished txn response.
    pub fn finish_txn(&self, resp: &mut TxnResponse) {
        resp.header = header(self.revision());
    }
}

/// A read-only txn evaluated against the committed revision.
pub fn read_txn(store: &Store, t: &TxnRequest) -> Result<TxnResponse, Error> {
    let rev = store.committed_rev();
    let mut resp = read_txn_at(store, t, rev)?;
    resp.header = header(rev);
    Ok(resp)
}

fn read_txn_at(store: &Store, t: &TxnRequest, rev: i64) -> Result<TxnResponse, Error> {
    let succeeded = t.compare.iter().all(|c| compare(store, c, rev));
    let ops = if succeeded { &t.success } else { &t.failure };
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let resp = match &op.request {
            Some(Request::RequestRange(r)) => {
                let at = store.read_rev(r.revision, false)?;
                Response::ResponseRange(range(store, r, at, rev))
            }
            Some(Request::RequestTxn(t)) => {
                let mut resp = read_txn_at(store, t, rev)?;
                resp.header = Some(ResponseHeader::default());
                Response::ResponseTxn(resp)
            }
            _ => continue,
        };
        responses.push(ResponseOp {
            response: Some(resp),
        });
    }
    Ok(TxnResponse {
        header: None,
        succeeded,
        responses,
    })
}

/// One compare of a txn. With a range_end it must hold for every key in the range.
fn compare(store: &Store, c: &Compare, rev: i64) -> bool {
    let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
    let kvs = if c.range_end.is_empty() {
        store.get(&c.key, rev).into_iter().collect::<Vec<_>>()
    } else {
        store.range_kvs(&KeyRange::new(c.key.clone(), c.range_end.clone()), rev)
    };
    if kvs.is_empty() {
        // A missing key has no value to compare (etcd fails such compares); for
        // the other targets it behaves as all-zero.
        if target == CompareTarget::Value {
            return false;
        }
        return compare_kv(c, target, &KeyValue::default());
    }
    kvs.iter().all(|kv| compare_kv(c, target, kv))
}

fn compare_kv(c: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord = match (target, &c.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value[..].cmp(&v[..]),
        (CompareTarget::Value, _) => kv.value[..].cmp(&[][..]),
        (CompareTarget::Version, tu) => kv.version.cmp(&int_target(tu)),
        (CompareTarget::Create, tu) => kv.create_revision.cmp(&int_target(tu)),
        (CompareTarget::Mod, tu) => kv.mod_revision.cmp(&int_target(tu)),
        (CompareTarget::Lease, tu) => kv.lease.cmp(&int_target(tu)),
    };
    match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

fn int_target(tu: &Option<TargetUnion>) -> i64 {
    match tu {
        Some(TargetUnion::Version(v))
        | Some(TargetUnion::CreateRevision(v))
        | Some(TargetUnion::ModRevision(v))
        | Some(TargetUnion::Lease(v)) => *v,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::copy_from_slice(k.as_bytes()),
                value: Bytes::copy_from_slice(v.as_bytes()),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn duplicate_puts_are_rejected() {
        let t = TxnRequest {
            success: vec![put("a", "1"), put("a", "2")],
            ..Default::default()
        };
        assert!(matches!(validate_txn(&t), Err(Error::DuplicateKey)));
        let ok = TxnRequest {
            success: vec![put("a", "1")],
            failure: vec![put("a", "2")],
            ..Default::default()
        };
        assert!(validate_txn(&ok).is_ok());
    }

    #[test]
    fn txn_reads_its_own_writes_and_stamps_revision() {
        let mut store = Store::new(1, 0);
        let leases: HashMap<i64, (i64, i64)> = HashMap::new();
        let t = TxnRequest {
            success: vec![
                put("a", "1"),
                put("b", "2"),
                RequestOp {
                    request: Some(Request::RequestRange(RangeRequest {
                        key: Bytes::from_static(b"a"),
                        range_end: Bytes::from_static(b"c"),
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        };
        let mut ctx = WriteCtx::new(&mut store);
        let mut resp = ctx.txn(&t, &leases).expect("txn");
        ctx.finish_txn(&mut resp);
        assert!(resp.succeeded);
        assert_eq!(resp.header.as_ref().map(|h| h.revision), Some(2));
        match &resp.responses[2].response {
            Some(Response::ResponseRange(r)) => assert_eq!(r.count, 2),
            other => panic!("unexpected {other:?}"),
        }
    }
}
