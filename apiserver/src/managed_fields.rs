//! `metadata.managedFields`: which manager last set which fields, and a
//! first cut of server-side apply.
//!
//! Known gap: apply merges the applied configuration like a strategic merge
//! patch and records ownership, but does not yet detect conflicts between
//! managers nor remove fields a manager stopped applying.

use k3rs_apimachinery::patch::{self, PatchError, StrategyLookup};
use serde_json::{Map, Value, json};

/// Metadata fields the server owns; never part of anyone's field set.
const SYSTEM_META: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "name",
    "namespace",
];

/// The `fieldsV1` set of every field present in `v` (lists are atomic).
pub fn field_set(v: &Value, top: bool) -> Value {
    let mut out = Map::new();
    if let Some(o) = v.as_object() {
        for (k, child) in o {
            if top && (k == "apiVersion" || k == "kind" || k == "status") {
                continue;
            }
            let sub = if top && k == "metadata" {
                let mut m = child.clone();
                if let Some(mo) = m.as_object_mut() {
                    for f in SYSTEM_META {
                        mo.remove(*f);
                    }
                    if mo.is_empty() {
                        continue;
                    }
                }
                field_set(&m, false)
            } else if child.is_object() {
                let mut s = field_set(child, false);
                if let Some(so) = s.as_object_mut() {
                    so.insert(".".into(), json!({}));
                }
                s
            } else {
                json!({})
            };
            out.insert(format!("f:{k}"), sub);
        }
    }
    Value::Object(out)
}

/// Records that `manager` wrote `obj` with `operation` (`Update` or `Apply`).
pub fn record(obj: &mut Value, _old: Option<&Value>, manager: &str, operation: &str) {
    let fields = field_set(obj, true);
    let api_version = obj["apiVersion"].clone();
    let entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": crate::object::now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    let meta = crate::object::meta_mut(obj);
    let mut list: Vec<Value> = meta
        .get("managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.retain(|e| !(e["manager"] == manager && e["operation"] == operation));
    list.push(entry);
    meta.insert("managedFields".into(), Value::Array(list));
}

/// Server-side apply of `applied` onto `current` by `manager`.
pub fn apply(
    current: &Value,
    applied: &Value,
    lookup: &StrategyLookup,
    _force: bool,
    manager: &str,
) -> Result<Value, PatchError> {
    if applied.get("kind").is_none() || applied.get("apiVersion").is_none() {
        return Err(PatchError::Invalid(
            "apply patches must set apiVersion and kind".into(),
        ));
    }
    let mut merged = if lookup.is_known() {
        patch::apply_strategic_merge_patch(current, applied, lookup)?
    } else {
        patch::apply_merge_patch(current, applied)
    };
    record(&mut merged, Some(current), manager, "Apply");
    Ok(merged)
}
