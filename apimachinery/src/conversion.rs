//! Conversion between API groups that share one storage.
//!
//! `events.k8s.io/v1` Events and core `v1` Events are the same objects, as
//! upstream: they are stored in the core shape (under `/registry/events`), so
//! an event a controller records through `events.k8s.io` (kube-rs's
//! `Recorder` does) shows up in `kubectl describe`, which reads core events,
//! and the other way round. Only the field names differ.

use serde_json::{Map, Value};

/// Core `v1` Event field ↔ `events.k8s.io/v1` Event field. Fields not listed
/// (`eventTime`, `series`, `action`, `reason`, `related`, `type`,
/// `reportingInstance`, `metadata`) have the same name in both.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// Whether objects of `group`/`kind` are stored in another group's shape.
pub fn is_converted(group: &str, kind: &str) -> bool {
    group == "events.k8s.io" && kind == "Event"
}

/// The stored (core) object as the `events.k8s.io/v1` client sees it.
pub fn event_to_events_v1(obj: &mut Value) {
    rename(obj, |(core, events)| (core, events));
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), "events.k8s.io/v1".into());
        m.insert("kind".into(), "Event".into());
    }
}

/// An `events.k8s.io/v1` object in the stored (core `v1`) shape.
pub fn events_v1_to_event(obj: &mut Value) {
    rename(obj, |(core, events)| (events, core));
    // A repeated event carries its tally in `series`; core readers (`kubectl
    // get events`, `describe`'s "x3 over") look at `count`/`lastTimestamp`.
    let series = obj.get("series").cloned();
    if let (Some(m), Some(s)) = (obj.as_object_mut(), series) {
        if let Some(c) = s.get("count").filter(|c| c.is_i64()) {
            m.insert("count".into(), c.clone());
        }
        if let Some(t) = s.get("lastObservedTime").and_then(Value::as_str) {
            // MicroTime → Time: core timestamps have whole seconds.
            let whole = match (t.find('.'), t.strip_suffix('Z')) {
                (Some(dot), Some(_)) => format!("{}Z", &t[..dot]),
                _ => t.to_string(),
            };
            m.insert("lastTimestamp".into(), Value::String(whole));
        }
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), "v1".into());
        m.insert("kind".into(), "Event".into());
    }
}

/// The field a selector on the `events.k8s.io` view means in storage
/// (`regarding.name` → `involvedObject.name`).
pub fn events_v1_field_to_event(field: &str) -> String {
    for (core, events) in EVENT_FIELDS {
        if field == *events {
            return (*core).to_string();
        }
        if let Some(rest) = field.strip_prefix(events).and_then(|r| r.strip_prefix('.')) {
            return format!("{core}.{rest}");
        }
    }
    field.to_string()
}

fn rename(
    obj: &mut Value,
    dir: impl Fn((&'static str, &'static str)) -> (&'static str, &'static str),
) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    let mut moved = Map::new();
    for pair in EVENT_FIELDS {
        let (from, to) = dir(*pair);
        if let Some(v) = m.remove(from) {
            moved.insert(to.to_string(), v);
        }
    }
    m.extend(moved);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_groups() {
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Scheduled", "message": "Successfully assigned default/web to n1",
            "source": {"component": "default-scheduler"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:05Z",
            "count": 2, "type": "Normal", "reportingComponent": "default-scheduler",
            "reportingInstance": "s1", "action": "Binding"
        });
        let mut v = core.clone();
        event_to_events_v1(&mut v);
        assert_eq!(v["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v["regarding"]["name"], "web");
        assert_eq!(v["note"], "Successfully assigned default/web to n1");
        assert_eq!(v["reportingController"], "default-scheduler");
        assert_eq!(v["deprecatedSource"]["component"], "default-scheduler");
        assert_eq!(v["deprecatedCount"], 2);
        assert_eq!(v["reason"], "Scheduled");
        assert_eq!(v["reportingInstance"], "s1");
        assert!(v.get("involvedObject").is_none() && v.get("message").is_none());
        events_v1_to_event(&mut v);
        assert_eq!(v, core);
    }

    #[test]
    fn a_series_sets_the_core_count() {
        let mut v = serde_json::json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "note": "again", "series": {"count": 7, "lastObservedTime": "2026-01-01T00:00:07.000000Z"},
        });
        events_v1_to_event(&mut v);
        assert_eq!(v["count"], 7);
        assert_eq!(v["lastTimestamp"], "2026-01-01T00:00:07Z");
        assert_eq!(v["message"], "again");
    }

    #[test]
    fn selector_fields_map_to_storage() {
        assert_eq!(
            events_v1_field_to_event("regarding.name"),
            "involvedObject.name"
        );
        assert_eq!(
            events_v1_field_to_event("reportingController"),
            "reportingComponent"
        );
        assert_eq!(events_v1_field_to_event("reason"), "reason");
        assert_eq!(events_v1_field_to_event("metadata.name"), "metadata.name");
        assert_eq!(events_v1_field_to_event("regardingX"), "regardingX");
    }
}
