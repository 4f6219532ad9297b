//! The watch cache: one etcd watch on `/registry/` feeds an in-memory copy of
//! every object plus a bounded ring of recent events, so lists and watches
//! never touch the datastore per request (upstream's cacher, in one piece).
//!
//! Objects are kept as the JSON bytes served to clients (resourceVersion
//! already stamped) plus the few values selectors need, which keeps memory
//! near the size of the data itself.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{EventType, WatchOptions};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

use crate::resources;
use crate::store::{Store, StoreError};

/// Events kept for watches that resume from a resourceVersion.
const RING: usize = 20_000;
/// Per-watcher backlog before a slow watcher is dropped.
pub const WATCH_BUFFER: usize = 10_000;

/// One object as served.
#[derive(Debug)]
pub struct Entry {
    pub key: Box<str>,
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub raw: Bytes,
    pub rev: i64,
    pub labels: Box<[(Box<str>, Box<str>)]>,
    /// Values of the resource's supported field selectors.
    pub fields: Box<[(Box<str>, Box<str>)]>,
}

impl Entry {
    /// Decodes a stored object, stamping `resourceVersion` with `rev`.
    pub fn decode(key: &str, value: &[u8], rev: i64) -> Option<Entry> {
        let mut v: Value = serde_json::from_slice(value).ok()?;
        Self::from_value(key, &mut v, rev)
    }

    pub fn from_value(key: &str, v: &mut Value, rev: i64) -> Option<Entry> {
        let meta = v.get_mut("metadata")?.as_object_mut()?;
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
        let name: Box<str> = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into();
        let namespace: Box<str> = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into();
        let labels: Box<[(Box<str>, Box<str>)]> = meta
            .get("labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.as_str().into(), v.as_str().unwrap_or("").into()))
                    .collect()
            })
            .unwrap_or_default();
        let fields = resources::for_key(key)
            .map(|r| {
                r.fields
                    .iter()
                    .map(|f| ((*f).into(), field_value(v, f).into()))
                    .collect()
            })
            .unwrap_or_default();
        let raw = Bytes::from(serde_json::to_vec(&v).ok()?);
        Some(Entry {
            key: key.into(),
            namespace,
            name,
            raw,
            rev,
            labels,
            fields,
        })
    }

    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(l, _)| &**l == k)
            .map(|(_, v)| &**v)
    }

    /// A field selector value; `metadata.name`/`metadata.namespace` always work.
    pub fn field(&self, f: &str) -> Option<String> {
        match f {
            "metadata.name" => Some(self.name.to_string()),
            "metadata.namespace" => Some(self.namespace.to_string()),
            _ => self
                .fields
                .iter()
                .find(|(k, _)| &**k == f)
                .map(|(_, v)| v.to_string()),
        }
    }

    pub fn value(&self) -> Option<Value> {
        serde_json::from_slice(&self.raw).ok()
    }

    /// The same object re-stamped with another revision (a delete's last state).
    fn restamped(&self, rev: i64) -> Option<Entry> {
        let mut v = self.value()?;
        Self::from_value(&self.key, &mut v, rev)
    }
}

/// A dotted-path lookup rendered as a field selector sees it.
pub fn field_value(v: &Value, path: &str) -> String {
    // Events' `source` selector means the component.
    let path = if path == "source" {
        "source.component"
    } else {
        path
    };
    let mut cur = v;
    for p in path.split('.') {
        match cur.get(p) {
            Some(n) => cur = n,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct Event {
    pub rev: i64,
    pub kind: EventKind,
    pub obj: Arc<Entry>,
    pub prev: Option<Arc<Entry>>,
}

struct State {
    rev: i64,
    /// The oldest revision a watch may resume from (events after it are all in `ring`).
    oldest: i64,
    objects: BTreeMap<Box<str>, Arc<Entry>>,
    ring: VecDeque<Arc<Event>>,
    tx: broadcast::Sender<Arc<Event>>,
}

/// What a new watch starts from.
pub enum Start {
    /// Every current object as ADDED, then live events.
    Snapshot(Vec<Arc<Entry>>),
    /// Buffered events after the requested revision, then live events.
    Events(Vec<Arc<Event>>),
}

pub struct Subscription {
    pub start: Start,
    pub rev: i64,
    pub rx: broadcast::Receiver<Arc<Event>>,
}

pub struct WatchCache {
    state: RwLock<State>,
    rev_tx: watch::Sender<i64>,
    progress_tx: mpsc::Sender<()>,
    progress_rx: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

#[derive(Debug)]
pub struct TooOld {
    pub requested: i64,
    pub oldest: i64,
}

impl WatchCache {
    pub fn new() -> Arc<Self> {
        let (tx, _) = broadcast::channel(WATCH_BUFFER);
        let (rev_tx, _) = watch::channel(0);
        let (progress_tx, progress_rx) = mpsc::channel(1);
        Arc::new(Self {
            state: RwLock::new(State {
                rev: 0,
                oldest: 0,
                objects: BTreeMap::new(),
                ring: VecDeque::new(),
                tx,
            }),
            rev_tx,
            progress_tx,
            progress_rx: tokio::sync::Mutex::new(progress_rx),
        })
    }

    pub fn rev(&self) -> i64 {
        *self.rev_tx.borrow()
    }

    pub fn synced(&self) -> bool {
        self.rev() > 0
    }

    /// Waits until the cache has caught up with `rev`; false on timeout.
    pub async fn wait_for(&self, rev: i64, timeout: Duration) -> bool {
        let mut rx = self.rev_tx.subscribe();
        if *rx.borrow() >= rev {
            return true;
        }
        let _ = self.progress_tx.try_send(());
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let st = self.state.read().ok()?;
        st.objects.get(key).cloned()
    }

    /// Every object under `prefix`, in key order, and the cache revision.
    pub fn list(&self, prefix: &str) -> (Vec<Arc<Entry>>, i64) {
        let Ok(st) = self.state.read() else {
            return (Vec::new(), 0);
        };
        let items = st
            .objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect();
        (items, st.rev)
    }

    /// Starts a watch on `prefix`: from a snapshot (`since` None) or from the
    /// events after `since`. Subscribing under the lock means no event falls
    /// between the start and the live stream.
    pub fn subscribe(&self, prefix: &str, since: Option<i64>) -> Result<Subscription, TooOld> {
        let st = self.state.read().map_err(|_| TooOld {
            requested: since.unwrap_or(0),
            oldest: 0,
        })?;
        let rx = st.tx.subscribe();
        let start = match since {
            None => Start::Snapshot(
                st.objects
                    .range::<str, _>((
                        std::ops::Bound::Included(prefix),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(_, e)| e.clone())
                    .collect(),
            ),
            Some(rv) if rv < st.oldest => {
                return Err(TooOld {
                    requested: rv,
                    oldest: st.oldest,
                });
            }
            Some(rv) => {
                let from = st.ring.partition_point(|e| e.rev <= rv);
                Start::Events(
                    st.ring
                        .iter()
                        .skip(from)
                        .filter(|e| e.obj.key.starts_with(prefix))
                        .cloned()
                        .collect(),
                )
            }
        };
        Ok(Subscription {
            start,
            rev: st.rev,
            rx,
        })
    }

    /// Keeps the cache in step with the store, relisting when the watch breaks
    /// beyond repair (compaction); never returns.
    pub async fn run(self: Arc<Self>, store: Store) {
        let mut backoff =
            k3rs_common::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match self.sync_once(&store).await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?d, "watch cache lost its etcd watch; relisting");
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    async fn sync_once(&self, store: &Store) -> Result<(), StoreError> {
        // A consistent snapshot: every page read at the first page's revision.
        let mut objects = BTreeMap::new();
        let mut start = String::new();
        let mut rev = 0;
        loop {
            let (kvs, more, r) = store.list("/registry/", &start, 2000, rev).await?;
            if rev == 0 {
                rev = r;
            }
            for kv in &kvs {
                if let Some(e) = Entry::decode(&kv.key, &kv.value, kv.mod_rev) {
                    objects.insert(e.key.clone(), Arc::new(e));
                } else {
                    tracing::warn!(key = %kv.key, "skipping undecodable object");
                }
            }
            match kvs.last() {
                Some(last) if more => start = format!("{}\0", last.key),
                _ => break,
            }
        }
        {
            let mut st = self.state.write().map_err(|_| StoreError::Timeout)?;
            // A relist invalidates resumable history: watchers restart.
            let (tx, _) = broadcast::channel(WATCH_BUFFER);
            *st = State {
                rev,
                oldest: rev,
                objects,
                ring: VecDeque::new(),
                tx,
            };
        }
        self.rev_tx.send_replace(rev);
        tracing::info!(revision = rev, "watch cache synced");

        let mut client = store.client();
        let mut stream = client
            .watch(
                "/registry/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(rev + 1)
                        .with_progress_notify(),
                ),
            )
            .await?;
        let mut progress = self.progress_rx.lock().await;
        loop {
            let resp = tokio::select! {
                m = stream.message() => m?,
                Some(()) = progress.recv() => {
                    stream.request_progress().await?;
                    continue;
                }
            };
            let Some(resp) = resp else {
                return Err(StoreError::Etcd(etcd_client::Error::WatchError(
                    "watch stream ended".into(),
                )));
            };
            if resp.canceled() {
                return Err(StoreError::Compacted(resp.compact_revision()));
            }
            let header_rev = resp.header().map_or(0, |h| h.revision());
            if !resp.events().is_empty() {
                self.apply(resp.events())?;
            } else if resp.watch_id() >= 0 || header_rev > 0 {
                // A progress notification: nothing under /registry/ changed up to here.
                let mut st = self.state.write().map_err(|_| StoreError::Timeout)?;
                if header_rev > st.rev {
                    st.rev = header_rev;
                    drop(st);
                    self.rev_tx.send_replace(header_rev);
                }
            }
        }
    }

    fn apply(&self, events: &[etcd_client::Event]) -> Result<(), StoreError> {
        let mut st = self.state.write().map_err(|_| StoreError::Timeout)?;
        let mut last = st.rev;
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let rev = kv.mod_revision();
            let prev = st.objects.get(key.as_str()).cloned();
            let event = match ev.event_type() {
                EventType::Put => {
                    let Some(e) = Entry::decode(&key, kv.value(), rev) else {
                        tracing::warn!(key = %key, "skipping undecodable object");
                        continue;
                    };
                    let e = Arc::new(e);
                    st.objects.insert(e.key.clone(), e.clone());
                    Event {
                        rev,
                        kind: if prev.is_some() {
                            EventKind::Modified
                        } else {
                            EventKind::Added
                        },
                        obj: e,
                        prev,
                    }
                }
                EventType::Delete => {
                    st.objects.remove(key.as_str());
                    let Some(p) = prev else { continue };
                    let Some(gone) = p.restamped(rev) else {
                        continue;
                    };
                    Event {
                        rev,
                        kind: EventKind::Deleted,
                        obj: Arc::new(gone),
                        prev: Some(p),
                    }
                }
            };
            last = last.max(rev);
            let event = Arc::new(event);
            st.ring.push_back(event.clone());
            if st.ring.len() > RING
                && let Some(old) = st.ring.pop_front()
            {
                st.oldest = old.rev;
            }
            // No receivers is fine; lagging receivers find out on their next recv.
            let _ = st.tx.send(event);
        }
        st.rev = last;
        drop(st);
        self.rev_tx.send_replace(last);
        Ok(())
    }
}
