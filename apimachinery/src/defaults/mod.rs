//! Defaulting: fills the fields upstream's v1 defaulters (and the few
//! registry strategies users notice, such as a Service's `ipFamilyPolicy`)
//! fill, so stored objects read back as they would from a real cluster.
//!
//! Defaults are data: per kind a list of `(path, JSON value)` entries, applied
//! in order where the path's parent exists and the field is absent; a handful
//! of rules that depend on other fields are small functions. A value that is
//! present is never replaced, so applying defaults twice changes nothing.

mod kinds;
mod pod;

use serde_json::{Map, Value};

pub use kinds::prepare_service_update;

/// One default: set `path` to `json` when absent (and `when` holds).
///
/// A path is dot-separated object keys; a segment ending in `[]` walks every
/// element of that array. Missing intermediate objects are not created, so
/// e.g. a `secret` volume's `defaultMode` is only set on secret volumes; a
/// parent that should exist gets its own `{}` entry first.
pub(crate) struct Default {
    pub path: &'static str,
    pub json: &'static str,
    pub when: Option<fn(&Value) -> bool>,
}

pub(crate) const fn d(path: &'static str, json: &'static str) -> Default {
    Default {
        path,
        json,
        when: None,
    }
}

pub(crate) const fn when(
    path: &'static str,
    json: &'static str,
    cond: fn(&Value) -> bool,
) -> Default {
    Default {
        path,
        json,
        when: Some(cond),
    }
}

/// Fills the defaults of `group`/`kind` into `obj`. Unknown kinds and
/// objects of the wrong shape are left as they are.
pub fn apply_defaults(group: &str, version: &str, kind: &str, obj: &mut Value) {
    let _ = version; // every served version shares these defaults
    if !obj.is_object() {
        return;
    }
    let Some(rule) = kinds::KINDS
        .iter()
        .find(|r| r.group == group && r.kind == kind)
    else {
        return;
    };
    if let Some(f) = rule.before {
        f(obj);
    }
    apply_table(obj, rule.table);
    for path in rule.pod_specs {
        for_each_at(obj, path, &mut |spec| {
            pod::default_pod_spec(spec, rule.kind == "Pod")
        });
    }
    if let Some(f) = rule.after {
        f(obj);
    }
}

/// Applies a table of defaults to `root`.
pub(crate) fn apply_table(root: &mut Value, table: &[Default]) {
    for def in table {
        if def.when.is_some_and(|c| !c(root)) {
            continue;
        }
        let (parent, last) = def.path.rsplit_once('.').unwrap_or(("", def.path));
        let mut set = |m: &mut Value| {
            if let Some(m) = m.as_object_mut()
                && m.get(last).is_none_or(Value::is_null)
            {
                // The tables are literals checked by tests; a bad one is
                // skipped rather than trusted.
                if let Ok(v) = serde_json::from_str(def.json) {
                    m.insert(last.to_string(), v);
                }
            }
        };
        if parent.is_empty() {
            set(root);
        } else {
            for_each_at(root, parent, &mut set);
        }
    }
}

/// Calls `f` on every value at `path` (see [`Default`] for the syntax).
pub(crate) fn for_each_at(v: &mut Value, path: &str, f: &mut dyn FnMut(&mut Value)) {
    let (seg, rest) = match path.split_once('.') {
        Some((s, r)) => (s, Some(r)),
        None => (path, None),
    };
    let (key, each) = match seg.strip_suffix("[]") {
        Some(k) => (k, true),
        None => (seg, false),
    };
    let Some(next) = v.as_object_mut().and_then(|m| m.get_mut(key)) else {
        return;
    };
    let mut visit = |x: &mut Value| match rest {
        Some(r) => for_each_at(x, r, f),
        None => f(x),
    };
    if each {
        if let Some(items) = next.as_array_mut() {
            items.iter_mut().for_each(&mut visit);
        }
    } else if !next.is_null() {
        visit(next);
    }
}

/// The object at `key` of `v`, created when absent (only if `v` is an object).
pub(crate) fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let slot = m.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

pub(crate) fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    path.split('.')
        .try_fold(v, |cur, k| cur.get(k))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests;
