//! One event recorder for every daemon: `events.k8s.io/v1` Events, with a
//! repeat of the same event (same object, type, reason, action and note)
//! folded into the first one's `series` the way upstream's recorder does.
//!
//! kube-runtime's `Recorder` keeps a full copy of every event it wrote for
//! six minutes and scans all of them on each publish; a controller burst of
//! thousands of events made that the controller manager's largest cache and
//! an O(n²) loop, and it folded events by reason alone, losing new notes.
//! Here the correlation cache holds only a hash, the event's name and its
//! count, and is bounded.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
pub use kube::runtime::events::{Event, EventType, Reporter};

/// How long a written event can absorb repeats (upstream: 6 minutes).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// Events remembered for folding; the oldest are forgotten first.
const CAPACITY: usize = 4096;

struct Written {
    name: String,
    count: i32,
    at: Instant,
}

#[derive(Default)]
struct Cache {
    by_key: HashMap<u64, Written>,
    /// Insertion order, for eviction.
    order: VecDeque<u64>,
}

impl Cache {
    fn get(&mut self, key: u64, now: Instant) -> Option<(String, i32)> {
        let w = self.by_key.get(&key)?;
        if now.duration_since(w.at) > SERIES_WINDOW {
            self.by_key.remove(&key);
            return None;
        }
        Some((w.name.clone(), w.count))
    }

    fn put(&mut self, key: u64, name: String, count: i32, now: Instant) {
        if self
            .by_key
            .insert(
                key,
                Written {
                    name,
                    count,
                    at: now,
                },
            )
            .is_none()
        {
            self.order.push_back(key);
        }
        while self.by_key.len() > CAPACITY || self.order.len() > 2 * CAPACITY {
            match self.order.pop_front() {
                Some(old) if old != key => {
                    self.by_key.remove(&old);
                }
                Some(_) => {}
                None => break,
            }
        }
    }
}

/// Writes events for one reporting component; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    reporter: Arc<Reporter>,
    cache: Arc<Mutex<Cache>>,
}

impl Recorder {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter: Arc::new(reporter),
            cache: Arc::default(),
        }
    }
}

/// What makes two events the same event: the object, type, reason, action and note.
fn event_key(ev: &Event, regarding: &ObjectReference) -> u64 {
    {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        matches!(ev.type_, EventType::Warning).hash(&mut h);
        ev.reason.hash(&mut h);
        ev.action.hash(&mut h);
        ev.note.hash(&mut h);
        for part in [
            &regarding.kind,
            &regarding.namespace,
            &regarding.name,
            &regarding.uid,
            &regarding.field_path,
        ] {
            part.hash(&mut h);
        }
        h.finish()
    }
}

impl Recorder {
    /// Writes `ev` about `regarding` (a new Event, or one more in the series
    /// of the same event written within the last six minutes).
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = event_key(ev, regarding);
        let now = Instant::now();
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &ns);
        let seen = self.cache.lock().ok().and_then(|mut c| c.get(key, now));
        if let Some((name, count)) = seen {
            let count = count + 1;
            let patch = serde_json::json!({"series": EventSeries {
                count,
                last_observed_time: MicroTime(Timestamp::now()),
            }});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    if let Ok(mut c) = self.cache.lock() {
                        c.put(key, name, count, now);
                    }
                    return Ok(());
                }
                // Expired or deleted meanwhile: start a new one.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.new_event(ev, regarding, &ns);
        let created = api.create(&PostParams::default(), &event).await?;
        if let (Some(name), Ok(mut c)) = (created.metadata.name, self.cache.lock()) {
            c.put(key, name, 1, now);
        }
        Ok(())
    }

    fn new_event(&self, ev: &Event, regarding: &ObjectReference, ns: &str) -> K8sEvent {
        let now = Timestamp::now();
        let base = regarding
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{base}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.to_string()),
                ..ObjectMeta::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..K8sEvent::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded_and_forgets_the_oldest() {
        let mut c = Cache::default();
        let now = Instant::now();
        for k in 0..(CAPACITY as u64 + 10) {
            c.put(k, format!("e{k}"), 1, now);
        }
        assert_eq!(c.by_key.len(), CAPACITY);
        assert!(c.get(0, now).is_none());
        assert_eq!(
            c.get(CAPACITY as u64 + 9, now),
            Some((format!("e{}", CAPACITY + 9), 1))
        );
        // Re-putting a key counts it once.
        c.put(CAPACITY as u64 + 9, "x".into(), 2, now);
        assert_eq!(c.by_key.len(), CAPACITY);
    }

    #[test]
    fn a_new_note_is_a_new_event() {
        let ev = |note: &str| Event {
            type_: EventType::Warning,
            reason: "BackOff".into(),
            note: Some(note.into()),
            action: "Sync".into(),
            secondary: None,
        };
        let pod = ObjectReference {
            kind: Some("Pod".into()),
            name: Some("p".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..ObjectReference::default()
        };
        assert_eq!(event_key(&ev("a"), &pod), event_key(&ev("a"), &pod));
        assert_ne!(event_key(&ev("a"), &pod), event_key(&ev("b"), &pod));
        let other = ObjectReference {
            uid: Some("u2".into()),
            ..pod.clone()
        };
        assert_ne!(event_key(&ev("a"), &pod), event_key(&ev("a"), &other));
    }

    #[test]
    fn repeats_fold_only_within_the_window() {
        let mut c = Cache::default();
        let then = Instant::now();
        c.put(7, "e".into(), 3, then);
        assert_eq!(
            c.get(7, then + Duration::from_secs(60)),
            Some(("e".into(), 3))
        );
        assert_eq!(
            c.get(7, then + SERIES_WINDOW + Duration::from_secs(1)),
            None
        );
    }
}
