//! The scheduling queue (upstream's three queues): an active heap ordered by
//! priority then arrival, a back-off heap, and a parking lot of unschedulable
//! pods that wait for a cluster change instead of spinning.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::cache::{pod_key, pod_priority};

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Unschedulable pods are retried at least this often even without events.
pub const MAX_UNSCHEDULABLE_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Active,
    Backoff,
    Unschedulable,
    /// Popped and being scheduled right now.
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<Pod>,
    attempts: u32,
    backoff_until: Instant,
    parked_at: Instant,
    place: Where,
    /// Generation guards lazy deletion in the heaps.
    generation: u64,
    /// A relevant cluster change happened while the pod was in flight.
    moved_while_in_flight: bool,
}

#[derive(Default)]
pub struct Queue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<(i32, Reverse<u64>, String, u64)>,
    backoff: BinaryHeap<Reverse<(Instant, String, u64)>>,
    seq: u64,
}

/// Back-off for the n-th failed attempt: 1 s doubling, capped at 10 s.
pub fn backoff_for(attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(10);
    INITIAL_BACKOFF
        .saturating_mul(1u32 << shift)
        .min(MAX_BACKOFF)
}

impl Queue {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    fn push_active(&mut self, key: &str) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        self.seq += 1;
        e.place = Where::Active;
        e.generation = self.seq;
        self.active.push((
            pod_priority(&e.pod),
            Reverse(self.seq),
            key.to_string(),
            self.seq,
        ));
    }

    fn push_backoff(&mut self, key: &str) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        self.seq += 1;
        e.place = Where::Backoff;
        e.generation = self.seq;
        self.backoff
            .push(Reverse((e.backoff_until, key.to_string(), self.seq)));
    }

    /// A new or updated pending pod. Updates of a parked pod only refresh it
    /// (its own status patches must not cause a retry loop), unless its spec changed.
    pub fn add_or_update(&mut self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        match self.entries.get_mut(&key) {
            Some(e) => {
                let spec_changed =
                    e.pod.spec != pod.spec || e.pod.metadata.labels != pod.metadata.labels;
                e.pod = pod;
                if spec_changed && e.place == Where::Unschedulable {
                    self.push_active(&key);
                }
            }
            None => {
                let now = Instant::now();
                self.entries.insert(
                    key.clone(),
                    Entry {
                        pod,
                        attempts: 0,
                        backoff_until: now,
                        parked_at: now,
                        place: Where::Active,
                        generation: 0,
                        moved_while_in_flight: false,
                    },
                );
                self.push_active(&key);
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// The highest-priority active pod, now in flight.
    pub fn pop(&mut self) -> Option<Arc<Pod>> {
        while let Some((_, _, key, generation)) = self.active.pop() {
            if let Some(e) = self.entries.get_mut(&key)
                && e.place == Where::Active
                && e.generation == generation
            {
                e.place = Where::InFlight;
                e.moved_while_in_flight = false;
                return Some(e.pod.clone());
            }
        }
        None
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// Scheduled: forget the pod.
    pub fn done(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Could not be placed: park it until a change (or back off if one already came).
    pub fn unschedulable(&mut self, key: &str) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.attempts += 1;
        let now = Instant::now();
        e.backoff_until = now + backoff_for(e.attempts);
        e.parked_at = now;
        if e.moved_while_in_flight {
            self.push_backoff(key);
        } else {
            e.place = Where::Unschedulable;
        }
    }

    /// A transient error (API failure): retry after back-off.
    pub fn retry_later(&mut self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        let e = self.entries.entry(key.clone()).or_insert_with(|| Entry {
            pod: pod.clone(),
            attempts: 0,
            backoff_until: Instant::now(),
            parked_at: Instant::now(),
            place: Where::Backoff,
            generation: 0,
            moved_while_in_flight: false,
        });
        e.pod = pod;
        e.attempts += 1;
        e.backoff_until = Instant::now() + backoff_for(e.attempts);
        self.push_backoff(&key);
    }

    /// A node or placed pod changed: parked pods get another go once their back-off ends.
    pub fn move_all(&mut self) {
        let now = Instant::now();
        let mut to_active = Vec::new();
        let mut to_backoff = Vec::new();
        for (k, e) in self.entries.iter_mut() {
            match e.place {
                Where::Unschedulable if e.backoff_until <= now => to_active.push(k.clone()),
                Where::Unschedulable => to_backoff.push(k.clone()),
                Where::InFlight => e.moved_while_in_flight = true,
                _ => {}
            }
        }
        for k in to_active {
            self.push_active(&k);
        }
        for k in to_backoff {
            self.push_backoff(&k);
        }
    }

    /// Moves finished back-offs to active and long-parked pods to active; returns
    /// when the next back-off ends.
    pub fn flush(&mut self) -> Option<Instant> {
        let now = Instant::now();
        while let Some(Reverse((until, key, generation))) = self.backoff.peek().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop();
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.place == Where::Backoff && e.generation == generation)
            {
                self.push_active(&key);
            }
        }
        let stale: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.place == Where::Unschedulable
                    && now.duration_since(e.parked_at) >= MAX_UNSCHEDULABLE_WAIT
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.push_active(&k);
        }
        self.backoff.peek().map(|Reverse((t, _, _))| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, prio: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {"priority": prio, "containers": []}}))
                .unwrap(),
        )
    }

    #[test]
    fn priority_then_fifo() {
        let mut q = Queue::default();
        q.add_or_update(pod("low1", 0));
        q.add_or_update(pod("high", 100));
        q.add_or_update(pod("low2", 0));
        let names: Vec<String> = std::iter::from_fn(|| q.pop())
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["high", "low1", "low2"]);
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        assert_eq!(backoff_for(1), Duration::from_secs(1));
        assert_eq!(backoff_for(2), Duration::from_secs(2));
        assert_eq!(backoff_for(4), Duration::from_secs(8));
        assert_eq!(backoff_for(5), Duration::from_secs(10));
        assert_eq!(backoff_for(50), Duration::from_secs(10));
    }

    #[test]
    fn parked_pods_wait_for_a_change() {
        let mut q = Queue::default();
        q.add_or_update(pod("p", 0));
        assert!(q.pop().is_some());
        q.unschedulable("ns/p");
        // Its own status update does not wake it.
        q.add_or_update(pod("p", 0));
        q.flush();
        assert!(q.pop().is_none());
        // A change moves it to back-off; after the back-off it is active again.
        q.move_all();
        assert!(q.pop().is_none());
        let next = q.flush().expect("in back-off");
        assert!(next > Instant::now());
        std::thread::sleep(Duration::from_millis(1100));
        q.flush();
        assert!(q.pop().is_some());
    }

    #[test]
    fn change_during_attempt_is_not_lost() {
        let mut q = Queue::default();
        q.add_or_update(pod("p", 0));
        assert!(q.pop().is_some());
        q.move_all();
        q.unschedulable("ns/p");
        std::thread::sleep(Duration::from_millis(1100));
        q.flush();
        assert!(q.pop().is_some());
    }
}
