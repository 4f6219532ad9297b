//! The in-memory multi-version index: every key's history since the last
//! compaction, and the ordered event log watchers read from.
//!
//! The SQL database is the durable copy; this index is rebuilt from it at start
//! and kept in step by the writer (local writes) and the follower (writes made
//! by other instances sharing the database). Reads never touch the database.
//!
//! Revisions above `committed` belong to a batch that is still being written to
//! the database: readers and watchers never see them, and `rollback` drops them
//! if the commit fails.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;

use crate::error::Error;
use crate::proto::mvccpb::event::EventType;
use crate::proto::{Event, KeyValue};

/// A (main, sub) revision: `main` is the store revision, `sub` orders the
/// changes made by one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

/// One version of one key. `value == None` marks a deletion (tombstone).
#[derive(Debug, Clone)]
pub struct Entry {
    pub rev: Rev,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
    pub value: Option<Bytes>,
}

impl Entry {
    fn to_kv(&self, key: &Bytes) -> Option<KeyValue> {
        self.value.as_ref().map(|v| KeyValue {
            key: key.clone(),
            create_revision: self.create,
            mod_revision: self.rev.main,
            version: self.version,
            value: v.clone(),
            lease: self.lease,
        })
    }
}

/// One row of the persisted revision log.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: Bytes,
    pub entry: Entry,
}

/// A change as watchers see it; `prev` is the key's previous live version.
#[derive(Debug, Clone)]
pub struct EventRec {
    pub rev: Rev,
    pub event: Event,
}

type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// A key range as etcd encodes it: empty `end` = the single key `start`,
/// `end == [0]` = every key >= `start`, otherwise the half-open `[start, end)`.
#[derive(Debug, Clone)]
pub struct KeyRange {
    pub start: Bytes,
    pub end: Bytes,
}

impl KeyRange {
    pub fn new(start: Bytes, end: Bytes) -> Self {
        Self { start, end }
    }

    pub fn is_single(&self) -> bool {
        self.end.is_empty()
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            key == &self.start[..]
        } else if self.end[..] == [0u8] {
            key >= &self.start[..]
        } else {
            key >= &self.start[..] && key < &self.end[..]
        }
    }

    /// `None` when the range is empty (start >= end).
    fn bounds(&self) -> Option<KeyBounds<'_>> {
        let start = Bound::Included(&self.start[..]);
        if self.end.is_empty() {
            Some((start, Bound::Included(&self.start[..])))
        } else if self.end[..] == [0u8] {
            Some((start, Bound::Unbounded))
        } else if self.start >= self.end {
            None
        } else {
            Some((start, Bound::Excluded(&self.end[..])))
        }
    }
}

/// The multi-version state of the whole keyspace.
#[derive(Debug, Default)]
pub struct Store {
    keys: BTreeMap<Bytes, Vec<Entry>>,
    events: VecDeque<EventRec>,
    lease_keys: HashMap<i64, BTreeSet<Bytes>>,
    /// Highest revision present, including an uncommitted batch.
    current: i64,
    /// Highest revision durable in the database; what readers see.
    committed: i64,
    /// Revisions below this one have been compacted away.
    compacted: i64,
    /// Keys touched by the uncommitted batch, for rollback.
    dirty: Vec<Bytes>,
}

impl Store {
    /// An empty store at revision `rev` (etcd starts at 1).
    pub fn new(rev: i64, compacted: i64) -> Self {
        Self {
            current: rev,
            committed: rev,
            compacted,
            ..Default::default()
        }
    }

    pub fn current_rev(&self) -> i64 {
        self.current
    }

    pub fn committed_rev(&self) -> i64 {
        self.committed
    }

    pub fn compacted_rev(&self) -> i64 {
        self.compacted
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Checks that `rev` (0 = latest visible) can be read and returns the revision to read at.
    pub fn read_rev(&self, rev: i64, uncommitted: bool) -> Result<i64, Error> {
        let latest = if uncommitted {
            self.current
        } else {
            self.committed
        };
        if rev <= 0 {
            return Ok(latest);
        }
        if rev > latest {
            return Err(Error::FutureRev);
        }
        if rev < self.compacted {
            return Err(Error::Compacted);
        }
        Ok(rev)
    }

    fn entry_at(hist: &[Entry], rev: i64) -> Option<&Entry> {
        let idx = hist.partition_point(|e| e.rev.main <= rev);
        if idx == 0 {
            return None;
        }
        let e = &hist[idx - 1];
        e.value.as_ref().map(|_| e)
    }

    /// The live version of `key` at `rev`.
    pub fn get(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        let (k, hist) = self.keys.get_key_value(key)?;
        Self::entry_at(hist, rev).and_then(|e| e.to_kv(k))
    }

    /// Calls `f` for every live key in `range` at `rev`, in key order, until it returns false.
    pub fn scan(&self, range: &KeyRange, rev: i64, mut f: impl FnMut(&Bytes, &Entry) -> bool) {
        let Some(bounds) = range.bounds() else {
            return;
        };
        for (k, hist) in self.keys.range::<[u8], _>(bounds) {
            if let Some(e) = Self::entry_at(hist, rev)
                && !f(k, e)
            {
                break;
            }
        }
    }

    /// Live key/values in `range` at `rev`.
    pub fn range_kvs(&self, range: &KeyRange, rev: i64) -> Vec<KeyValue> {
        let mut out = Vec::new();
        self.scan(range, rev, |k, e| {
            if let Some(kv) = e.to_kv(k) {
                out.push(kv);
            }
            true
        });
        out
    }

    pub fn keys_of_lease(&self, lease: i64) -> Vec<Bytes> {
        self.lease_keys
            .get(&lease)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Starts a new main revision for a write; the caller must then record at least one change.
    pub fn next_rev(&self) -> i64 {
        self.current + 1
    }

    /// Records a put of `key` at `rev`, computing version and create revision.
    /// Returns the persisted row and the previous live value.
    pub fn put(
        &mut self,
        rev: Rev,
        key: Bytes,
        value: Bytes,
        lease: i64,
    ) -> (Row, Option<KeyValue>) {
        let prev = self
            .keys
            .get(&key)
            .and_then(|h| h.last())
            .and_then(|e| e.to_kv(&key));
        let (create, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (rev.main, 1),
        };
        let entry = Entry {
            rev,
            create,
            version,
            lease,
            value: Some(value),
        };
        let row = Row {
            key: key.clone(),
            entry: entry.clone(),
        };
        self.push(key, entry, true);
        (row, prev)
    }

    /// Records a deletion of `key` at `rev` if it is live. Returns the row and the deleted value.
    pub fn delete(&mut self, rev: Rev, key: &Bytes) -> Option<(Row, KeyValue)> {
        let prev = self
            .keys
            .get(key)
            .and_then(|h| h.last())
            .and_then(|e| e.to_kv(key))?;
        let entry = Entry {
            rev,
            create: 0,
            version: 0,
            lease: 0,
            value: None,
        };
        let row = Row {
            key: key.clone(),
            entry: entry.clone(),
        };
        self.push(key.clone(), entry, true);
        Some((row, prev))
    }

    /// Appends rows read from the database (written by this or another
    /// instance, in revision order) as committed. Revisions this store already
    /// holds are skipped: the writer and the follower may fetch the same rows,
    /// and the follower may fetch this instance's own batch between its
    /// database commit and `commit` (the batch is then already here, above
    /// `committed`: while it is in flight the writer holds the database lock,
    /// so no other instance can have written those revisions).
    pub fn apply_committed(&mut self, rows: Vec<Row>) {
        let known = self.current;
        for row in rows {
            if row.entry.rev.main <= known {
                continue;
            }
            let main = row.entry.rev.main;
            self.push(row.key, row.entry, false);
            self.committed = self.committed.max(main);
        }
        self.current = self.current.max(self.committed);
    }

    fn push(&mut self, key: Bytes, entry: Entry, dirty: bool) {
        let hist = self.keys.entry(key.clone()).or_default();
        let prev = hist.last().and_then(|e| e.to_kv(&key));
        if let Some(p) = &prev
            && p.lease != 0
            && let Some(set) = self.lease_keys.get_mut(&p.lease)
        {
            set.remove(&key);
            if set.is_empty() {
                self.lease_keys.remove(&p.lease);
            }
        }
        if entry.lease != 0 && entry.value.is_some() {
            self.lease_keys
                .entry(entry.lease)
                .or_default()
                .insert(key.clone());
        }
        let event = match entry.to_kv(&key) {
            Some(kv) => Event {
                r#type: EventType::Put as i32,
                kv: Some(kv),
                prev_kv: prev,
            },
            None => Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: key.clone(),
                    mod_revision: entry.rev.main,
                    ..Default::default()
                }),
                prev_kv: prev,
            },
        };
        self.current = self.current.max(entry.rev.main);
        self.events.push_back(EventRec {
            rev: entry.rev,
            event,
        });
        hist.push(entry);
        if dirty {
            self.dirty.push(key);
        }
    }

    /// Makes everything up to `rev` visible to readers.
    pub fn commit(&mut self, rev: i64) {
        self.committed = self.committed.max(rev);
        self.current = self.current.max(self.committed);
        // A later batch may still be in flight (the follower commits what it
        // saw in the database): keep what rolling that batch back needs.
        if self.committed >= self.current {
            self.dirty.clear();
        }
    }

    /// Drops every change above the committed revision (its batch failed to persist).
    pub fn rollback(&mut self) {
        self.rollback_to(0, self.committed);
    }

    /// A marker to undo one request of a batch with `rollback_to`.
    pub fn savepoint(&self) -> (usize, i64) {
        (self.dirty.len(), self.current)
    }

    /// Undoes every uncommitted change made after `savepoint()` returned `(dirty, rev)`.
    pub fn rollback_to_savepoint(&mut self, sp: (usize, i64)) {
        self.rollback_to(sp.0, sp.1);
    }

    fn rollback_to(&mut self, dirty_from: usize, rev: i64) {
        let dirty = self.dirty.split_off(dirty_from.min(self.dirty.len()));
        for key in dirty {
            let Some(hist) = self.keys.get_mut(&key) else {
                continue;
            };
            while hist.last().is_some_and(|e| e.rev.main > rev) {
                if let Some(e) = hist.pop()
                    && e.lease != 0
                    && let Some(set) = self.lease_keys.get_mut(&e.lease)
                {
                    set.remove(&key);
                    if set.is_empty() {
                        self.lease_keys.remove(&e.lease);
                    }
                }
            }
            match hist.last() {
                None => {
                    self.keys.remove(&key);
                }
                Some(e) => {
                    if e.lease != 0 && e.value.is_some() {
                        self.lease_keys
                            .entry(e.lease)
                            .or_default()
                            .insert(key.clone());
                    }
                }
            }
        }
        while self.events.back().is_some_and(|e| e.rev.main > rev) {
            self.events.pop_back();
        }
        self.current = rev;
    }

    /// Forgets history below `rev`: each key keeps its newest version at or
    /// below `rev` unless that is a deletion. Returns the revisions of the
    /// dropped versions so the database can delete the same rows.
    pub fn compact(&mut self, rev: i64) -> Vec<Rev> {
        let mut dropped = Vec::new();
        if rev <= self.compacted {
            return dropped;
        }
        self.keys.retain(|_, hist| {
            let idx = hist.partition_point(|e| e.rev.main <= rev);
            if idx == 0 {
                return true;
            }
            let keep_from = if hist[idx - 1].value.is_none() {
                idx
            } else {
                idx - 1
            };
            dropped.extend(hist.drain(..keep_from).map(|e| e.rev));
            !hist.is_empty()
        });
        while self.events.front().is_some_and(|e| e.rev.main < rev) {
            self.events.pop_front();
        }
        self.compacted = rev;
        dropped
    }

    /// Copies up to `max` events with revision >= `from` (and <= committed) that
    /// pass `keep`. Returns the events and the position to continue from.
    /// One revision is never split, so a batch may exceed `max` slightly.
    pub fn events_since(
        &self,
        from: Rev,
        max: usize,
        mut keep: impl FnMut(&Event) -> bool,
    ) -> (Vec<EventRec>, Rev) {
        let start = self.events.partition_point(|e| e.rev < from);
        let mut out = Vec::new();
        let mut next = from;
        let mut exhausted = true;
        for rec in self.events.range(start..) {
            if rec.rev.main > self.committed {
                break;
            }
            if out.len() >= max && rec.rev.main != next.main {
                exhausted = false;
                break;
            }
            next = Rev {
                main: rec.rev.main,
                sub: rec.rev.sub + 1,
            };
            if keep(&rec.event) {
                out.push(rec.clone());
            }
        }
        if exhausted {
            next = next.max(Rev {
                main: self.committed + 1,
                sub: 0,
            });
        }
        (out, next)
    }

    /// Rough size of the data held, in bytes (for status and metrics).
    pub fn approx_bytes(&self) -> i64 {
        let mut n = 0usize;
        for (k, hist) in &self.keys {
            for e in hist {
                n += k.len() + e.value.as_ref().map_or(0, |v| v.len()) + 48;
            }
        }
        n as i64
    }

    /// A hash of all versions up to `rev`, for the Maintenance Hash/HashKV RPCs.
    pub fn hash_kv(&self, rev: i64) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                h ^= u32::from(*b);
                h = h.wrapping_mul(0x0100_0193);
            }
        };
        for (k, hist) in &self.keys {
            for e in hist.iter().filter(|e| e.rev.main <= rev) {
                feed(k);
                feed(&e.rev.main.to_be_bytes());
                feed(&e.rev.sub.to_be_bytes());
                if let Some(v) = &e.value {
                    feed(v);
                }
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn rev(main: i64) -> Rev {
        Rev { main, sub: 0 }
    }

    #[test]
    fn versions_and_generations() {
        let mut s = Store::new(1, 0);
        s.put(rev(2), b("a"), b("1"), 0);
        s.put(rev(3), b("a"), b("2"), 0);
        s.commit(3);
        let kv = s.get(b"a", 3).expect("live");
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        s.delete(rev(4), &b("a"));
        s.put(rev(5), b("a"), b("3"), 0);
        s.commit(5);
        let kv = s.get(b"a", 5).expect("live");
        assert_eq!((kv.create_revision, kv.version), (5, 1));
        assert!(s.get(b"a", 4).is_none());
        assert_eq!(s.get(b"a", 2).expect("old").value, b("1"));
    }

    #[test]
    fn rollback_drops_uncommitted() {
        let mut s = Store::new(1, 0);
        s.put(rev(2), b("a"), b("1"), 7);
        s.commit(2);
        s.put(rev(3), b("a"), b("2"), 0);
        s.put(rev(4), b("b"), b("x"), 0);
        assert!(
            s.get(b"b", 2).is_none(),
            "readers at committed rev do not see it"
        );
        s.rollback();
        assert_eq!(s.current_rev(), 2);
        assert!(s.get(b"b", 4).is_none());
        assert_eq!(s.get(b"a", 2).expect("a").value, b("1"));
        assert_eq!(s.keys_of_lease(7), vec![b("a")]);
        assert_eq!(s.event_count(), 1);
    }

    #[test]
    fn compaction_keeps_latest_and_drops_tombstones() {
        let mut s = Store::new(1, 0);
        s.put(rev(2), b("a"), b("1"), 0);
        s.put(rev(3), b("a"), b("2"), 0);
        s.put(rev(4), b("b"), b("1"), 0);
        s.delete(rev(5), &b("b"));
        s.put(rev(6), b("c"), b("1"), 0);
        s.commit(6);
        let mut dropped = s.compact(5);
        dropped.sort();
        assert_eq!(dropped, vec![rev(2), rev(4), rev(5)]);
        assert_eq!(
            s.read_rev(4, false).unwrap_err().to_string(),
            Error::Compacted.to_string()
        );
        assert_eq!(s.get(b"a", 5).expect("a").value, b("2"));
        assert_eq!(s.key_count(), 2);
    }

    #[test]
    fn ranges_and_bounds() {
        let mut s = Store::new(1, 0);
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            s.put(rev(2 + i as i64), b(k), b("v"), 0);
        }
        s.commit(5);
        let keys = |r: KeyRange| -> Vec<Bytes> {
            s.range_kvs(&r, 5).into_iter().map(|kv| kv.key).collect()
        };
        assert_eq!(keys(KeyRange::new(b("b"), b("d"))), vec![b("b"), b("c")]);
        assert_eq!(
            keys(KeyRange::new(b("b"), Bytes::from_static(&[0]))).len(),
            3
        );
        assert!(keys(KeyRange::new(b("d"), b("a"))).is_empty());
        assert_eq!(keys(KeyRange::new(b("c"), Bytes::new())), vec![b("c")]);
    }

    #[test]
    fn own_rows_fetched_back_before_commit_are_not_applied_twice() {
        // The writer has put revision 2 in memory and committed it to the
        // database; the follower reads it back before the writer's `commit`.
        let mut s = Store::new(1, 0);
        let (row, _) = s.put(rev(2), b("a"), b("1"), 0);
        s.apply_committed(vec![row]);
        s.commit(2);
        assert_eq!(s.event_count(), 1, "one event for revision 2");
        let (evs, _) = s.events_since(rev(2), 10, |_| true);
        assert_eq!(evs.len(), 1);
        assert_eq!(s.get(b"a", 2).expect("a").version, 1);
    }

    #[test]
    fn commit_of_an_older_revision_keeps_the_batch_in_flight_undoable() {
        let mut s = Store::new(1, 0);
        s.put(rev(2), b("a"), b("1"), 0);
        s.commit(2);
        s.put(rev(3), b("b"), b("1"), 0);
        // The follower publishes revision 2 again while batch 3 is in flight.
        s.commit(2);
        s.rollback();
        assert_eq!(s.current_rev(), 2);
        assert!(s.get(b"b", 3).is_none(), "batch 3 was rolled back");
        assert_eq!(s.key_count(), 1);
    }

    #[test]
    fn events_since_respects_committed_and_max() {
        let mut s = Store::new(1, 0);
        s.put(rev(2), b("a"), b("1"), 0);
        s.put(Rev { main: 3, sub: 0 }, b("b"), b("1"), 0);
        s.put(Rev { main: 3, sub: 1 }, b("c"), b("1"), 0);
        s.commit(3);
        s.put(rev(4), b("d"), b("1"), 0);
        let (evs, next) = s.events_since(rev(2), 1, |_| true);
        assert_eq!(evs.len(), 1);
        assert_eq!(next, Rev { main: 2, sub: 1 });
        let (evs, next) = s.events_since(next, 1, |_| true);
        assert_eq!(evs.len(), 2, "one revision is never split");
        assert_eq!(next, rev(4));
        let (evs, _) = s.events_since(next, 10, |_| true);
        assert!(evs.is_empty(), "uncommitted revision 4 is invisible");
    }
}
