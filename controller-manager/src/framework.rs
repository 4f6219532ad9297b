//! The shared controller framework: one watch + reflector store per kind that
//! every controller shares (client-go's shared informers), rate-limited work
//! queues, the `--controllers` table, creation/deletion expectations,
//! owner-reference helpers, label selectors and event recording.
//!
//! kube-runtime's `Controller` can only share a watch behind its unstable
//! features, and controllers here need the old object on updates and
//! per-owner expectations, so the queue and fan-out are ours; the watching,
//! relisting (410 Gone, apiserver restarts) and caching are kube-runtime's.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k3rs_common::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::Error;

/// The field manager / event reporter name this process writes with.
pub const MANAGER: &str = "k3rs-controller-manager";

/// What a kind needs to be cached and shared.
pub trait Kind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> Kind for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// A change a controller hears about from a shared informer.
pub enum Change<'a, K> {
    /// Created or updated; `old` is the cached object before this event.
    Applied {
        old: Option<Arc<K>>,
        new: &'a K,
    },
    Deleted(&'a K),
}

type Handler<K> = Box<dyn Fn(&Change<'_, K>) + Send + Sync>;

/// One kind's shared watch: a store every controller reads and the handlers
/// that turn changes into queue keys.
pub struct Informer<K: Kind> {
    pub store: Store<K>,
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    handlers: RwLock<Vec<Handler<K>>>,
    config: watcher::Config,
}

impl<K: Kind> Informer<K> {
    pub fn on_change(&self, f: impl Fn(&Change<'_, K>) + Send + Sync + 'static) {
        if let Ok(mut h) = self.handlers.write() {
            h.push(Box::new(f));
        }
    }

    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let mut r = ObjectRef::new(name);
        if let Some(ns) = namespace {
            r = r.within(ns);
        }
        self.store.get(&r)
    }

    /// Every cached object in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.store
            .state_filter(|o| o.meta().namespace.as_deref() == Some(namespace))
    }

    fn notify(&self, change: &Change<'_, K>) {
        if let Ok(h) = self.handlers.read() {
            for f in h.iter() {
                f(change);
            }
        }
    }

    fn start(self: Arc<Self>, client: Client, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(mut writer) = self.writer.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        let api: Api<K> = Api::all(client);
        let config = self.config.clone();
        tokio::spawn(async move {
            // The watcher relists on 410 Gone and on reconnect, backing off on errors.
            let stream = watcher(api, config).default_backoff();
            futures::pin_mut!(stream);
            let mut relist: Vec<K> = Vec::new();
            loop {
                let ev = tokio::select! {
                    ev = stream.next() => ev,
                    _ = stop.wait_for(|v| *v) => None,
                };
                let Some(ev) = ev else { break };
                let mut ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                        continue;
                    }
                };
                // No controller reads managedFields; not caching them saves
                // a large share of memory.
                match &mut ev {
                    watcher::Event::Apply(o)
                    | watcher::Event::Delete(o)
                    | watcher::Event::InitApply(o) => {
                        o.meta_mut().managed_fields = None;
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
                match &ev {
                    watcher::Event::Apply(obj) => {
                        let old = self.store.get(&ObjectRef::from_obj(obj));
                        writer.apply_watcher_event(&ev);
                        self.notify(&Change::Applied { old, new: obj });
                    }
                    watcher::Event::Delete(obj) => {
                        writer.apply_watcher_event(&ev);
                        self.notify(&Change::Deleted(obj));
                    }
                    watcher::Event::Init => {
                        relist.clear();
                        writer.apply_watcher_event(&ev);
                    }
                    watcher::Event::InitApply(obj) => {
                        relist.push(obj.clone());
                        writer.apply_watcher_event(&ev);
                    }
                    watcher::Event::InitDone => {
                        tracing::debug!(kind = %K::kind(&()), objects = relist.len(), "listed");
                        // Tell handlers about the whole new list, and about
                        // whatever vanished while we were not watching.
                        let before = self.store.state();
                        writer.apply_watcher_event(&ev);
                        let seen: HashSet<ObjectRef<K>> =
                            relist.iter().map(ObjectRef::from_obj).collect();
                        let mut before_map = HashMap::new();
                        for o in before {
                            let r = ObjectRef::from_obj(o.as_ref());
                            if !seen.contains(&r) {
                                self.notify(&Change::Deleted(o.as_ref()));
                            }
                            before_map.insert(r, o);
                        }
                        for obj in relist.drain(..) {
                            let old = before_map.remove(&ObjectRef::from_obj(&obj));
                            self.notify(&Change::Applied { old, new: &obj });
                        }
                        relist.shrink_to_fit();
                    }
                }
            }
        });
    }
}

trait Startable: Send + Sync {
    fn start_dyn(self: Arc<Self>, client: Client, stop: tokio::sync::watch::Receiver<bool>);
    fn wait_ready(&self) -> futures::future::BoxFuture<'static, ()>;
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<K: Kind> Startable for Informer<K> {
    fn start_dyn(self: Arc<Self>, client: Client, stop: tokio::sync::watch::Receiver<bool>) {
        self.start(client, stop)
    }
    fn wait_ready(&self) -> futures::future::BoxFuture<'static, ()> {
        let store = self.store.clone();
        Box::pin(async move {
            let _ = store.wait_until_ready().await;
        })
    }
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// The shared informers, one per kind, created on first use and started
/// together once every controller has registered its handlers.
#[derive(Clone)]
pub struct Informers {
    inner: Arc<Mutex<HashMap<TypeId, Arc<dyn Startable>>>>,
    synced: Arc<tokio::sync::watch::Sender<bool>>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Informers {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            synced: Arc::new(tokio::sync::watch::Sender::new(false)),
            stop: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }
}

impl Informers {
    /// The shared informer for `K` (all namespaces).
    pub fn get<K: Kind>(&self) -> Arc<Informer<K>> {
        self.get_with(watcher::Config::default())
    }

    /// Like [`Informers::get`], but the first caller picks the watch's
    /// selectors (for kinds only one controller wants a slice of).
    pub fn get_with<K: Kind>(&self, config: watcher::Config) -> Arc<Informer<K>> {
        let mut map = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let entry = map.entry(TypeId::of::<K>()).or_insert_with(|| {
            let (store, writer) = reflector::store::<K>();
            Arc::new(Informer {
                store,
                writer: Mutex::new(Some(writer)),
                handlers: RwLock::new(Vec::new()),
                config,
            })
        });
        match entry.clone().as_any().downcast::<Informer<K>>() {
            Ok(i) => i,
            // TypeId keys make a mismatch impossible; keep a working fallback anyway.
            Err(_) => unreachable_informer(),
        }
    }

    pub fn start(&self, client: &Client) {
        let all: Vec<_> = match self.inner.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        };
        let waits: Vec<_> = all.iter().map(|i| i.wait_ready()).collect();
        for i in all {
            i.start_dyn(client.clone(), self.stop.subscribe());
        }
        // A store's readiness wakes only one waiter, so one task waits for
        // all of them and broadcasts.
        let synced = self.synced.clone();
        tokio::spawn(async move {
            futures::future::join_all(waits).await;
            synced.send_replace(true);
        });
    }

    /// Stops every watch and worker (the controller manager is shutting down).
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves once `shutdown` was called.
    pub async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Resolves once every informer has listed its kind once.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

fn unreachable_informer<K: Kind>() -> Arc<Informer<K>> {
    let (store, writer) = reflector::store::<K>();
    Arc::new(Informer {
        store,
        writer: Mutex::new(Some(writer)),
        handlers: RwLock::new(Vec::new()),
        config: watcher::Config::default(),
    })
}

/// A deduplicating work queue with per-key exponential backoff: a key is
/// never processed by two workers at once, and one added while it is being
/// processed is processed again afterwards.
#[derive(Default)]
pub struct WorkQueue {
    inner: Mutex<QueueState>,
    notify: Notify,
}

#[derive(Default)]
struct QueueState {
    queue: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
}

impl WorkQueue {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        match self.inner.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.state();
        if !s.dirty.insert(key.clone()) {
            return;
        }
        if !s.processing.contains(&key) {
            s.queue.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    pub fn add_after(self: &Arc<Self>, key: impl Into<String>, after: Duration) {
        let key = key.into();
        let q = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(q) = q.upgrade() {
                q.add(key);
            }
        });
    }

    /// Requeues after a failure: 5 ms doubling per consecutive failure, at most 5 min.
    pub fn add_rate_limited(self: &Arc<Self>, key: String) {
        let n = {
            let mut s = self.state();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let delay = Duration::from_millis(5u64.saturating_mul(1u64 << n.min(20)))
            .min(Duration::from_secs(300));
        self.add_after(key, delay);
    }

    pub fn forget(&self, key: &str) {
        self.state().failures.remove(key);
    }

    pub async fn next(&self) -> String {
        loop {
            let notified = self.notify.notified();
            futures::pin_mut!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state();
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    if !s.queue.is_empty() {
                        self.notify.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    pub fn done(&self, key: &str) {
        let mut s = self.state();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.state().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a reconcile asks of the queue.
pub enum Action {
    Done,
    RequeueAfter(Duration),
}

/// Spawns `workers` tasks that feed keys from `queue` into `reconcile` once
/// every informer has synced; errors requeue the key with backoff.
pub fn run_workers<F, Fut>(
    ctx: &Ctx,
    name: &'static str,
    queue: Arc<WorkQueue>,
    workers: usize,
    reconcile: F,
) where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    for _ in 0..workers {
        let queue = queue.clone();
        let reconcile = reconcile.clone();
        let informers = ctx.informers.clone();
        tokio::spawn(async move {
            // Acting on a partial cache would, for example, create pods that already exist.
            tokio::select! {
                _ = informers.wait_synced() => {}
                _ = informers.stopped() => return,
            }
            loop {
                let key = tokio::select! {
                    k = queue.next() => k,
                    _ = informers.stopped() => return,
                };
                let res = reconcile(key.clone()).await;
                match res {
                    Ok(Action::Done) => queue.forget(&key),
                    Ok(Action::RequeueAfter(d)) => {
                        queue.forget(&key);
                        queue.add_after(key.clone(), d);
                    }
                    Err(e) => {
                        if e.is_conflict() {
                            tracing::debug!(controller = name, %key, "conflict; retrying");
                        } else {
                            tracing::warn!(controller = name, %key, error = %e, "sync failed; retrying with backoff");
                        }
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
}

/// Everything a controller gets at start.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub informers: Informers,
    pub events: Events,
    pub config: Arc<crate::Config>,
    /// The cluster CA (PEM) from the kubeconfig, published as `kube-root-ca.crt`.
    pub root_ca: Option<String>,
    pub clock: Clock,
}

/// The controllers' notion of "now"; tests may shift it forward.
#[derive(Clone, Default)]
pub struct Clock {
    offset_secs: Arc<std::sync::atomic::AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> k8s_openapi::jiff::Timestamp {
        let off = self.offset_secs.load(std::sync::atomic::Ordering::Relaxed);
        let now = k8s_openapi::jiff::Timestamp::now();
        now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(off))
            .unwrap_or(now)
    }
    pub fn advance(&self, secs: i64) {
        self.offset_secs
            .fetch_add(secs, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Starts one controller: registers its handlers on the shared informers
/// and spawns its workers.
pub type StartFn = fn(&Ctx) -> Result<(), Error>;

/// `--controllers`: `*` enables the defaults, `name` enables one, `-name` disables one.
pub fn enabled(spec: &[String], name: &str) -> bool {
    let mut on = false;
    for s in spec {
        let s = s.trim();
        if s == name {
            return true;
        }
        if s.strip_prefix('-') == Some(name) {
            return false;
        }
        if s == "*" {
            on = true;
        }
    }
    on
}

/// The message of an API error as upstream controllers word their events
/// and conditions: the server's `Status.message`, not the client's debug form.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Event recording through events.k8s.io/v1, fire-and-forget so a slow or
/// failing event write never holds up a sync.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    /// Bounds event writes in flight, so a burst queues cheaply instead of
    /// holding thousands of requests open.
    inflight: Arc<tokio::sync::Semaphore>,
}

impl Events {
    pub fn new(client: Client) -> Self {
        Self {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: MANAGER.into(),
                    instance: std::env::var("HOSTNAME").ok(),
                },
            ),
            inflight: Arc::new(tokio::sync::Semaphore::new(8)),
        }
    }

    pub fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.publish(obj, EventType::Normal, reason, note)
    }

    pub fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.publish(obj, EventType::Warning, reason, note)
    }

    fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let reference = object_reference(obj);
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        let inflight = self.inflight.clone();
        tokio::spawn(async move {
            let Ok(_permit) = inflight.acquire().await else {
                return;
            };
            if let Err(e) = recorder.publish(&ev, &reference).await {
                tracing::debug!(error = %e, "event not recorded");
            }
        });
    }
}

pub fn object_reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let m = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

/// `namespace/name` (or `name`) — the queue key of an object.
pub fn key_of<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// The controlling owner reference, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// A controller owner reference to `owner` that blocks its foreground deletion.
pub fn owner_ref_to<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `selector` matches `labels` (an empty selector matches everything,
/// as for ReplicaSets; a missing one matches nothing).
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    if let Some(ml) = &selector.match_labels {
        for (k, v) in ml {
            if labels.get(k) != Some(v) {
                return false;
            }
        }
    }
    for req in selector.match_expressions.iter().flatten() {
        if !requirement_matches(req, labels) {
            return false;
        }
    }
    true
}

fn requirement_matches(req: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let vals = req.values.as_deref().unwrap_or_default();
    let got = labels.get(&req.key);
    match req.operator.as_str() {
        "In" => got.is_some_and(|v| vals.contains(v)),
        "NotIn" => got.is_none_or(|v| !vals.contains(v)),
        "Exists" => got.is_some(),
        "DoesNotExist" => got.is_none(),
        // An operator the apiserver should have rejected matches nothing.
        _ => false,
    }
}

/// Whether a selector is empty (selects everything): such a workload
/// selector is invalid for controllers, which then do nothing.
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty())
}

/// Pending creations/deletions per owner key: after creating N pods a
/// controller waits to see N pod adds in its cache before counting again,
/// so a stale cache never makes it create twice (expires after 5 min, as upstream).
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expect>>,
}

struct Expect {
    adds: i64,
    dels: i64,
    at: Instant,
}

const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);

impl Expectations {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expect>> {
        match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    pub fn satisfied(&self, key: &str) -> bool {
        match self.map().get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.dels <= 0) || e.at.elapsed() > EXPECTATIONS_TTL,
        }
    }

    pub fn expect(&self, key: &str, adds: i64, dels: i64) {
        self.map().insert(
            key.to_string(),
            Expect {
                adds,
                dels,
                at: Instant::now(),
            },
        );
    }

    pub fn observed_add(&self, key: &str) {
        if let Some(e) = self.map().get_mut(key) {
            e.adds -= 1;
        }
    }

    pub fn observed_del(&self, key: &str) {
        if let Some(e) = self.map().get_mut(key) {
            e.dels -= 1;
        }
    }

    pub fn forget(&self, key: &str) {
        self.map().remove(key);
    }
}

/// Adopts (`adopt`) or releases a dependent by patching its owner
/// references, with the dependent's UID as precondition.
pub async fn patch_owner_refs<K: Kind + serde::Serialize>(
    api: &Api<K>,
    dependent: &K,
    owner_refs: Vec<OwnerReference>,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "metadata": {
            "ownerReferences": owner_refs,
            "uid": dependent.meta().uid,
        }
    });
    match api
        .patch(
            &dependent.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing to adopt or release.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether a pod counts: not finished and not being deleted.
/// A write whose object is already gone needs nothing more.
pub fn ignore_not_found<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn pod_is_active(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    p.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

pub fn pod_ready_since(
    p: &k8s_openapi::api::core::v1::Pod,
) -> Option<k8s_openapi::jiff::Timestamp> {
    let conds = p.status.as_ref()?.conditions.as_ref()?;
    let c = conds.iter().find(|c| c.type_ == "Ready")?;
    if c.status != "True" {
        return None;
    }
    Some(
        c.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(|| {
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH, |t| t.0)
            }),
    )
}

pub fn pod_is_ready(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod_ready_since(p).is_some()
}

/// Ready for at least `min_ready` seconds at `now`.
pub fn pod_is_available(
    p: &k8s_openapi::api::core::v1::Pod,
    min_ready: i32,
    now: k8s_openapi::jiff::Timestamp,
) -> bool {
    match pod_ready_since(p) {
        None => false,
        Some(_) if min_ready <= 0 => true,
        Some(t) => t
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
                min_ready,
            )))
            .is_ok_and(|t| t <= now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_flag() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(enabled(&s(&["*"]), "deployment"));
        assert!(!enabled(&s(&["*", "-deployment"]), "deployment"));
        assert!(enabled(&s(&["*", "-deployment"]), "replicaset"));
        assert!(!enabled(&s(&["replicaset"]), "deployment"));
        assert!(enabled(&s(&["replicaset"]), "replicaset"));
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".into(), "fe".into()),
        ]
        .into();
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["fe".into(), "be".into()]),
            }]),
        };
        assert!(selector_matches(&sel, Some(&labels)));
        let not = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(!selector_matches(&not, Some(&labels)));
        assert!(selector_matches(&not, None));
    }

    #[tokio::test]
    async fn queue_dedups_and_requeues_keys_added_while_processing() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.next().await;
        assert_eq!(k, "a");
        q.add("a"); // while processing: parked until done
        assert_eq!(q.len(), 1);
        q.done("a");
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn expectations() {
        let e = Expectations::default();
        assert!(e.satisfied("x"));
        e.expect("x", 2, 0);
        assert!(!e.satisfied("x"));
        e.observed_add("x");
        e.observed_add("x");
        assert!(e.satisfied("x"));
    }
}
