//! JSON accessors that never fail (missing or mistyped fields read as their
//! zero value, like Go structs) and formatters shared by several printers.

use serde_json::{Map, Value};

use super::time::{format_rfc3339, parse_rfc3339, since};
use crate::selector::LabelSelector;

pub fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

pub fn opt_str<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

pub fn opt_int(v: &Value, ptr: &str) -> Option<i64> {
    let n = v.pointer(ptr)?;
    // Whole-valued floats happen when a client wrote `3.0`.
    n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))
}

pub fn int_at(v: &Value, ptr: &str) -> i64 {
    opt_int(v, ptr).unwrap_or(0)
}

pub fn bool_at(v: &Value, ptr: &str) -> Option<bool> {
    v.pointer(ptr).and_then(Value::as_bool)
}

pub fn arr_at<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub fn map_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a Map<String, Value>> {
    v.pointer(ptr).and_then(Value::as_object)
}

pub fn len_at(v: &Value, ptr: &str) -> usize {
    match v.pointer(ptr) {
        Some(Value::Array(a)) => a.len(),
        Some(Value::Object(o)) => o.len(),
        _ => 0,
    }
}

/// Whether a field holds something (a set pointer, in Go terms).
pub fn is_set(v: &Value, ptr: &str) -> bool {
    v.pointer(ptr).is_some_and(|x| !x.is_null())
}

pub fn age(obj: &Value, now: i64) -> String {
    since(obj.pointer("/metadata/creationTimestamp"), now)
}

/// Upstream's default-table "Created At": RFC 3339 UTC; Go's zero time when
/// unset.
pub fn created_at(obj: &Value) -> String {
    opt_str(obj, "/metadata/creationTimestamp")
        .and_then(parse_rfc3339)
        .map(format_rfc3339)
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// A quantity as text (`10Gi`); stored quantities are strings, but a client
/// may have sent a bare number. Go's zero quantity prints "0".
pub fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".into(),
    }
}

/// An int-or-string (`1` or `50%`) as text.
pub fn int_or_string(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Upstream's `layoutContainerCells`: names and images, comma-joined.
pub fn containers_images(pod_spec: Option<&Value>) -> (String, String) {
    let containers = pod_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// Upstream's `metav1.FormatLabelSelector`: `<none>` when it selects
/// everything (or is unset), `<error>` when it is invalid.
pub fn format_label_selector(sel: Option<&Value>) -> String {
    match LabelSelector::from_label_selector_json(sel.unwrap_or(&Value::Null)) {
        Ok(s) => {
            let text = s.to_string();
            if text.is_empty() {
                "<none>".into()
            } else {
                text
            }
        }
        Err(_) => "<error>".into(),
    }
}

/// Go's `net.JoinHostPort`: IPv6 literals get brackets.
pub fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream's `listWithMoreString`.
pub fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count.saturating_sub(max));
    }
    if ret.is_empty() {
        "<unset>".into()
    } else {
        ret
    }
}

/// Load-balancer ingress points (`ip`, else `hostname`), sorted and
/// de-duplicated as upstream's string set does. Never clipped: the server
/// always prints the wide form.
pub fn load_balancer_ingress(status: &Value, ptr: &str) -> String {
    let mut points: Vec<&str> = arr_at(status, ptr)
        .iter()
        .filter_map(|i| {
            let ip = str_at(i, "/ip");
            let host = str_at(i, "/hostname");
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    points.sort_unstable();
    points.dedup();
    points.join(",")
}

/// The first condition of a type in a conditions list, if present.
pub fn condition<'a>(obj: &'a Value, conds_ptr: &str, ty: &str) -> Option<&'a Value> {
    arr_at(obj, conds_ptr)
        .iter()
        .find(|c| str_at(c, "/type") == ty)
}

pub fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}
