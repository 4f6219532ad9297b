//! Small helpers on JSON objects: metadata access, system fields, names.

use rand::Rng;
use serde_json::{Map, Value, json};

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        // Unreachable: set just above; keep a safe answer rather than a panic.
        None => unreachable_meta(),
    }
}

fn unreachable_meta() -> &'static mut Map<String, Value> {
    Box::leak(Box::new(Map::new()))
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)?.get(field)?.as_str().filter(|s| !s.is_empty())
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn rfc3339_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `generateName` suffix: five characters from upstream's unambiguous alphabet.
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Everything but `metadata` and `status`: what bumps `generation`.
pub fn spec_equal(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        v
    };
    strip(a) == strip(b)
}

pub fn rv_of(obj: &Value) -> Option<i64> {
    meta_str(obj, "resourceVersion").and_then(|s| s.parse().ok())
}
