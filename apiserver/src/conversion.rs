//! The storage boundary for resources stored in another group's shape
//! (`events.k8s.io/v1` Events live in the core `v1` shape, as upstream; see
//! `k3rs_apimachinery::conversion`). Requests for such a resource convert
//! what they read from etcd or the watch cache into the served shape and
//! what they write back into the stored shape; every other resource passes
//! through untouched (and without re-encoding).

use bytes::Bytes;
use k3rs_apimachinery::conversion as conv;
use serde_json::Value;

use crate::resources::ResourceDef;
use crate::store::Kv;

fn converts(res: &ResourceDef) -> bool {
    conv::is_converted(res.group, res.kind)
}

/// A stored object as `res` serves it.
pub fn served_value(res: &ResourceDef, v: &mut Value) {
    if converts(res) {
        conv::event_to_events_v1(v);
    }
}

/// Stored bytes (e.g. a watch-cache entry) as `res` serves them.
pub fn served_raw(res: &ResourceDef, raw: &Bytes) -> Bytes {
    if !converts(res) {
        return raw.clone();
    }
    match serde_json::from_slice::<Value>(raw) {
        Ok(mut v) => {
            conv::event_to_events_v1(&mut v);
            serde_json::to_vec(&v)
                .map(Bytes::from)
                .unwrap_or_else(|_| raw.clone())
        }
        Err(_) => raw.clone(),
    }
}

/// A key-value read from etcd, its value in the served shape.
pub fn served_kv(res: &ResourceDef, mut kv: Kv) -> Kv {
    if converts(res) {
        kv.value = served_raw(res, &Bytes::from(kv.value)).to_vec();
    }
    kv
}

/// The bytes to write to etcd for an object in `res`'s served shape.
pub fn stored_bytes(res: &ResourceDef, v: &Value) -> serde_json::Result<Vec<u8>> {
    if converts(res) {
        let mut stored = v.clone();
        conv::events_v1_to_event(&mut stored);
        return serde_json::to_vec(&stored);
    }
    serde_json::to_vec(v)
}

/// The stored field a field selector on `res` names.
pub fn stored_field(res: &ResourceDef, field: &str) -> String {
    if converts(res) {
        return conv::events_v1_field_to_event(field);
    }
    field.to_string()
}
