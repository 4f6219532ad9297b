//! The scheduling loop: consumes watch events into the cache and queue, runs
//! one scheduling cycle per pending pod, and hands bindings, evictions and
//! status reports to background tasks so the loop never waits on the network.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Binding, Node, NodeSelector, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use rand::Rng;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::cache::{Cache, Change, PodInfo, pod_key};
use crate::framework::{CycleState, Diagnosis, Failure, Framework};
use crate::preemption::{self, Outcome};
use crate::queue::Queue;
use crate::recorder::{self, Recorder};

/// What the watchers feed into the loop.
pub enum ClusterEvent {
    Pod(Box<watcher::Event<Pod>>),
    Node(Box<watcher::Event<Node>>),
    /// A PersistentVolume or claim changed: volume-bound pods may fit now.
    Volume,
}

enum BindResult {
    Failed { pod: Arc<Pod>, error: kube::Error },
}

/// Counters exported on /metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub scheduled: AtomicU64,
    pub unschedulable: AtomicU64,
    pub errors: AtomicU64,
    pub preemptions: AtomicU64,
}

pub struct Scheduler {
    pub cache: Cache,
    pub queue: Queue,
    framework: Framework,
    client: kube::Client,
    recorder: Recorder,
    pvs: Store<PersistentVolume>,
    pvcs: Store<PersistentVolumeClaim>,
    pdbs: Store<PodDisruptionBudget>,
    scheduler_name: String,
    next_start: usize,
    bind_limit: Arc<Semaphore>,
    bind_tx: mpsc::UnboundedSender<BindResult>,
    bind_rx: mpsc::UnboundedReceiver<BindResult>,
    counters: Arc<Counters>,
    pods_synced: bool,
    nodes_synced: bool,
    relist_pods: Option<HashSet<String>>,
    relist_nodes: Option<HashSet<String>>,
}

/// Upstream's adaptive percentageOfNodesToScore: all of a small cluster, then
/// a shrinking share (never under 100 nodes) of a large one.
pub fn feasible_nodes_to_find(all: usize) -> usize {
    if all < 100 {
        return all;
    }
    let pct = 50usize.saturating_sub(all / 125).max(5);
    (all * pct / 100).max(100)
}

impl Scheduler {
    pub fn new(
        client: kube::Client,
        recorder: Recorder,
        pvs: Store<PersistentVolume>,
        pvcs: Store<PersistentVolumeClaim>,
        pdbs: Store<PodDisruptionBudget>,
        scheduler_name: String,
        counters: Arc<Counters>,
    ) -> Self {
        let (bind_tx, bind_rx) = mpsc::unbounded_channel();
        Self {
            cache: Cache::default(),
            queue: Queue::default(),
            framework: Framework::default(),
            client,
            recorder,
            pvs,
            pvcs,
            pdbs,
            scheduler_name,
            next_start: 0,
            bind_limit: Arc::new(Semaphore::new(64)),
            bind_tx,
            bind_rx,
            counters,
            pods_synced: false,
            nodes_synced: false,
            relist_pods: None,
            relist_nodes: None,
        }
    }

    fn responsible_for(&self, pod: &Pod) -> bool {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default-scheduler");
        name == self.scheduler_name
    }

    fn on_pod(&mut self, pod: Pod) {
        let key = pod_key(&pod);
        if let Some(seen) = self.relist_pods.as_mut() {
            seen.insert(key.clone());
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            self.on_pod_gone(&key);
            return;
        }
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if bound {
            // Bound by us or by someone else: either way it leaves the queue.
            self.queue.remove(&key);
            if self.cache.upsert_bound_pod(Arc::new(pod)) == Change::Relevant {
                self.queue.move_all();
            }
        } else if self.cache.is_assumed(&key) {
            // Our binding is in flight; this is an older view of the pod.
        } else if pod.metadata.deletion_timestamp.is_none() && self.responsible_for(&pod) {
            self.queue.add_or_update(Arc::new(pod));
        } else {
            self.queue.remove(&key);
        }
    }

    fn on_pod_gone(&mut self, key: &str) {
        self.queue.remove(key);
        if self.cache.remove_pod(key) == Change::Relevant {
            self.queue.move_all();
        }
    }

    fn on_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(seen) = self.relist_nodes.as_mut() {
            seen.insert(name);
        }
        if self.cache.upsert_node(node) == Change::Relevant {
            self.queue.move_all();
        }
    }

    pub fn handle(&mut self, ev: ClusterEvent) {
        match ev {
            ClusterEvent::Pod(ev) => match *ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => self.on_pod(p),
                watcher::Event::Delete(p) => self.on_pod_gone(&pod_key(&p)),
                watcher::Event::Init => self.relist_pods = Some(HashSet::new()),
                watcher::Event::InitDone => {
                    // Anything not in the fresh list was deleted while we were not watching.
                    if let Some(seen) = self.relist_pods.take() {
                        let known: Vec<String> = self
                            .cache
                            .pod_nodes
                            .keys()
                            .chain(self.queue.keys())
                            .filter(|k| !seen.contains(*k) && !self.cache.is_assumed(k))
                            .cloned()
                            .collect();
                        for k in known {
                            self.on_pod_gone(&k);
                        }
                    }
                    self.pods_synced = true;
                }
            },
            ClusterEvent::Node(ev) => match *ev {
                watcher::Event::Apply(n) | watcher::Event::InitApply(n) => self.on_node(n),
                watcher::Event::Delete(n) => {
                    self.cache
                        .remove_node(n.metadata.name.as_deref().unwrap_or_default());
                }
                watcher::Event::Init => self.relist_nodes = Some(HashSet::new()),
                watcher::Event::InitDone => {
                    if let Some(seen) = self.relist_nodes.take() {
                        let gone: Vec<String> = self
                            .cache
                            .order
                            .iter()
                            .filter(|n| !seen.contains(*n))
                            .cloned()
                            .collect();
                        for n in gone {
                            self.cache.remove_node(&n);
                        }
                    }
                    self.nodes_synced = true;
                    self.queue.move_all();
                }
            },
            ClusterEvent::Volume => self.queue.move_all(),
        }
    }

    fn volume_affinity(&self, pod: &Pod) -> Vec<NodeSelector> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut out = Vec::new();
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        for v in volumes.into_iter().flatten() {
            let Some(claim) = v.persistent_volume_claim.as_ref() else {
                continue;
            };
            let pvc = self.pvcs.get(&ObjectRef::new(&claim.claim_name).within(ns));
            let pv_name = pvc
                .as_ref()
                .and_then(|c| c.spec.as_ref())
                .and_then(|s| s.volume_name.clone());
            let Some(pv) = pv_name.and_then(|n| self.pvs.get(&ObjectRef::new(&n))) else {
                continue;
            };
            if let Some(req) = pv
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .and_then(|a| a.required.clone())
            {
                out.push(req);
            }
        }
        out
    }

    /// One scheduling cycle for one pod.
    pub fn schedule_one(&mut self, pod: Arc<Pod>) {
        let info = PodInfo::new(pod.clone());
        let volume_affinity = self.volume_affinity(&pod);
        let total = self.cache.order.len();
        let want = feasible_nodes_to_find(total);
        let mut feasible = Vec::new();
        let mut failures: HashMap<String, Failure> = HashMap::new();
        let mut diag = Diagnosis {
            nodes: total,
            ..Default::default()
        };
        let mut processed = 0;
        let chosen = {
            let state =
                CycleState::new(&info, &self.cache, &HashSet::new(), volume_affinity.clone());
            for i in 0..total {
                let name = &self.cache.order[(self.next_start + i) % total];
                let Some(node) = self.cache.nodes.get(name) else {
                    continue;
                };
                processed += 1;
                match self.framework.filter(&state, node) {
                    Ok(()) => {
                        feasible.push(node);
                        if feasible.len() >= want {
                            break;
                        }
                    }
                    Err(f) => {
                        diag.add(&f);
                        failures.insert(name.clone(), f);
                    }
                }
            }

            if feasible.is_empty() {
                None
            } else if feasible.len() == 1 {
                Some(feasible[0].name.clone())
            } else {
                let scores = self.framework.score(&state, &feasible, &self.cache);
                let names: Vec<&str> = feasible.iter().map(|n| n.name.as_str()).collect();
                Some(pick_best(&names, &scores))
            }
        };
        if total > 0 {
            self.next_start = (self.next_start + processed) % total;
        }
        let Some(chosen) = chosen else {
            self.handle_unschedulable(pod, &info, diag, &failures, &volume_affinity);
            return;
        };
        self.cache.assume(&pod, &chosen);
        self.queue.done(&info.key);
        self.counters.scheduled.fetch_add(1, Ordering::Relaxed);
        self.bind(pod, chosen);
    }

    fn handle_unschedulable(
        &mut self,
        pod: Arc<Pod>,
        info: &PodInfo,
        diag: Diagnosis,
        failures: &HashMap<String, Failure>,
        volume_affinity: &[NodeSelector],
    ) {
        self.counters.unschedulable.fetch_add(1, Ordering::Relaxed);
        let budgets: Vec<preemption::Budget> = self
            .pdbs
            .state()
            .iter()
            .filter_map(|p| preemption::Budget::from_pdb(p))
            .collect();
        let outcome = preemption::preempt(
            &self.framework,
            info,
            &self.cache,
            failures,
            volume_affinity,
            &budgets,
        );
        let (message, nominated) = match outcome {
            Outcome::NotPossible(tail) => (diag.message(Some(&tail)), None),
            Outcome::Victims { node, victims } => {
                self.counters.preemptions.fetch_add(1, Ordering::Relaxed);
                for v in &victims {
                    self.evict(v.clone(), &pod, &node);
                }
                self.cache.nominate(info, &node);
                (diag.message(None), Some(node))
            }
        };
        tracing::debug!(pod = %info.key, %message, "pod is unschedulable");
        self.queue.unschedulable(&info.key);
        self.recorder.pod_event(
            &pod,
            "Warning",
            "FailedScheduling",
            "Scheduling",
            message.clone(),
        );
        if !recorder::already_reported(&pod, &message, nominated.as_deref()) {
            tokio::spawn(recorder::patch_unschedulable(
                self.client.clone(),
                pod,
                message,
                nominated,
            ));
        }
    }

    fn evict(&self, victim: Arc<PodInfo>, preemptor: &Pod, node: &str) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &victim.namespace);
        let recorder = self.recorder.clone();
        let msg = format!(
            "Preempted by pod {} on node {node}",
            preemptor.metadata.uid.as_deref().unwrap_or_default()
        );
        tokio::spawn(async move {
            match api.delete(&victim.name, &DeleteParams::default()).await {
                Ok(_) => recorder.pod_event(&victim.pod, "Normal", "Preempted", "Preempting", msg),
                Err(e) => tracing::warn!(pod = %victim.key, error = %e, "could not preempt pod"),
            }
        });
    }

    fn bind(&self, pod: Arc<Pod>, node: String) {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let limit = self.bind_limit.clone();
        let tx = self.bind_tx.clone();
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            let Ok(_permit) = limit.acquire_owned().await else {
                return;
            };
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    uid: pod.metadata.uid.clone(),
                    ..ObjectMeta::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..ObjectReference::default()
                },
            };
            let res = tokio::time::timeout(
                Duration::from_secs(30),
                api.create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                ),
            )
            .await;
            match res {
                Ok(Ok(_)) => recorder.pod_event(
                    &pod,
                    "Normal",
                    "Scheduled",
                    "Binding",
                    format!("Successfully assigned {ns}/{name} to {node}"),
                ),
                Ok(Err(error)) => {
                    let _ = tx.send(BindResult::Failed { pod, error });
                }
                Err(_) => {
                    let error = kube::Error::Service("binding timed out".into());
                    let _ = tx.send(BindResult::Failed { pod, error });
                }
            }
        });
    }

    fn on_bind_result(&mut self, r: BindResult) {
        let BindResult::Failed { pod, error } = r;
        let key = pod_key(&pod);
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        if !self.cache.is_assumed(&key) {
            return;
        }
        self.cache.remove_pod(&key);
        self.queue.move_all();
        let gone = matches!(&error, kube::Error::Api(s) if s.is_not_found() || s.is_conflict());
        if gone {
            // Deleted, or bound by someone else: the watch tells us the rest.
            tracing::debug!(pod = %key, %error, "binding not needed any more");
            return;
        }
        tracing::warn!(pod = %key, %error, "binding failed; retrying after back-off");
        self.recorder.pod_event(
            &pod,
            "Warning",
            "FailedScheduling",
            "Scheduling",
            format!("Binding rejected: {error}"),
        );
        self.queue.retry_later(pod);
    }

    /// Runs until `shutdown` flips or the event source ends.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<ClusterEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        const BATCH: usize = 32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            loop {
                match events.try_recv() {
                    Ok(ev) => self.handle(ev),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            while let Ok(r) = self.bind_rx.try_recv() {
                self.on_bind_result(r);
            }
            let next_backoff = self.queue.flush();
            if self.pods_synced && self.nodes_synced && self.queue.has_active() {
                for _ in 0..BATCH {
                    let Some(pod) = self.queue.pop() else {
                        break;
                    };
                    self.schedule_one(pod);
                }
                tokio::task::yield_now().await;
                continue;
            }
            let wake = next_backoff
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(5))
                .min(Instant::now() + Duration::from_secs(5));
            tokio::select! {
                r = shutdown.changed() => if r.is_err() { return },
                ev = events.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => return,
                },
                Some(r) = self.bind_rx.recv() => self.on_bind_result(r),
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }
}

/// Highest score wins; ties are broken uniformly at random (reservoir sampling).
fn pick_best(names: &[&str], scores: &[i64]) -> String {
    let mut best = 0;
    let mut ties = 0u32;
    let mut rng = rand::rng();
    for i in 0..names.len() {
        if scores[i] > scores[best] {
            best = i;
            ties = 1;
        } else if scores[i] == scores[best] {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    names[best].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feasible_count_follows_upstream() {
        assert_eq!(feasible_nodes_to_find(3), 3);
        assert_eq!(feasible_nodes_to_find(99), 99);
        assert_eq!(feasible_nodes_to_find(500), 230);
        assert_eq!(feasible_nodes_to_find(5000), 5000 * 10 / 100);
        assert_eq!(feasible_nodes_to_find(200), 100);
    }

    #[test]
    fn best_score_wins_and_ties_spread() {
        assert_eq!(pick_best(&["a", "b", "c"], &[1, 5, 3]), "b");
        let mut seen = HashSet::new();
        for _ in 0..200 {
            seen.insert(pick_best(&["a", "b", "c"], &[5, 5, 1]));
        }
        assert_eq!(seen, HashSet::from(["a".to_string(), "b".to_string()]));
    }
}
