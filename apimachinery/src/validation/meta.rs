//! ObjectMeta, labels, annotations and label selectors.

use serde_json::{Map, Value};

use super::names::{self, NameFn};
use super::{IMMUTABLE_MSG, check_nonneg, each, get, get_array, get_map, get_str, push_msgs};
use crate::field::{FieldError, FieldErrorKind, FieldErrors, child};

pub(crate) const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

pub(crate) fn validate_object_meta(
    meta: Option<&Value>,
    namespaced: bool,
    name_fn: NameFn,
    path: &str,
) -> FieldErrors {
    let mut errs = Vec::new();
    let empty = Value::Object(Map::new());
    let meta = meta.unwrap_or(&empty);
    if let Some(g) = get_str(meta, "generateName").filter(|g| !g.is_empty()) {
        push_msgs(&child(path, "generateName"), g, name_fn(g, true), &mut errs);
    }
    match get_str(meta, "name").filter(|n| !n.is_empty()) {
        None => errs.push(FieldError::required(
            child(path, "name"),
            "name or generateName is required",
        )),
        Some(n) => push_msgs(&child(path, "name"), n, name_fn(n, false), &mut errs),
    }
    let ns = get_str(meta, "namespace").filter(|n| !n.is_empty());
    match (namespaced, ns) {
        (true, None) => errs.push(FieldError::required(child(path, "namespace"), "")),
        (true, Some(n)) => push_msgs(
            &child(path, "namespace"),
            n,
            names::dns1123_label(n),
            &mut errs,
        ),
        (false, Some(_)) => errs.push(FieldError::forbidden(
            child(path, "namespace"),
            "not allowed on this type",
        )),
        (false, None) => {}
    }
    check_nonneg(meta, "generation", path, &mut errs);
    validate_labels(get_map(meta, "labels"), &child(path, "labels"), &mut errs);
    validate_annotations(
        get_map(meta, "annotations"),
        &child(path, "annotations"),
        &mut errs,
    );
    validate_owner_references(meta, &child(path, "ownerReferences"), &mut errs);
    validate_finalizers(meta, &child(path, "finalizers"), &mut errs);
    errs
}

pub(crate) fn validate_object_meta_update(
    new: Option<&Value>,
    old: Option<&Value>,
    errs: &mut FieldErrors,
) {
    let empty = Value::Object(Map::new());
    let new = new.unwrap_or(&empty);
    let old = old.unwrap_or(&empty);
    for f in ["name", "namespace", "uid", "creationTimestamp"] {
        let (n, o) = (get(new, f), get(old, f));
        // A missing uid/creationTimestamp means "unchanged": upstream copies
        // them from the stored object before validating.
        let carried = n.is_none() && matches!(f, "uid" | "creationTimestamp");
        if n != o && !carried {
            errs.push(FieldError::invalid(
                child("metadata", f),
                n.cloned().unwrap_or(Value::Null),
                IMMUTABLE_MSG,
            ));
        }
    }
    if get(old, "deletionTimestamp").is_some() {
        let old_f: Vec<&str> = get_array(old, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let extra: Vec<&str> = get_array(new, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| !old_f.contains(f))
            .collect();
        if !extra.is_empty() {
            let list: Vec<String> = extra.iter().map(|f| format!("{f:?}")).collect();
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    list.join(", ")
                ),
            ));
        }
    }
}

/// Label keys are qualified names and values label values; errors carry the
/// map's path (not the key), as upstream reports them.
pub fn validate_labels(labels: Option<&Map<String, Value>>, path: &str, errs: &mut FieldErrors) {
    let Some(labels) = labels else { return };
    for (k, v) in labels {
        push_msgs(path, k, names::qualified_name(k), errs);
        match v.as_str() {
            Some(s) => push_msgs(path, s, names::label_value(s), errs),
            None => errs.push(FieldError::invalid(path, v.clone(), "must be a string")),
        }
    }
}

pub(crate) fn validate_annotations(
    ann: Option<&Map<String, Value>>,
    path: &str,
    errs: &mut FieldErrors,
) {
    let Some(ann) = ann else { return };
    let mut size = 0;
    for (k, v) in ann {
        // Annotation keys are qualified names in any case.
        push_msgs(path, k, names::qualified_name(&k.to_lowercase()), errs);
        size += k.len();
        match v.as_str() {
            Some(s) => size += s.len(),
            None => errs.push(FieldError::invalid(path, v.clone(), "must be a string")),
        }
    }
    if size > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

pub(crate) fn too_long(path: &str, max: usize) -> FieldError {
    FieldError::new(
        FieldErrorKind::TooLong,
        path,
        None,
        format!("may not be more than {max} bytes"),
    )
}

fn validate_owner_references(meta: &Value, path: &str, errs: &mut FieldErrors) {
    let mut controller: Option<&str> = None;
    for (_, r) in each(meta, "ownerReferences", "metadata") {
        let api_version = get_str(r, "apiVersion").unwrap_or("");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(FieldError::invalid(
                child(path, "apiVersion"),
                api_version.into(),
                "version must not be empty",
            ));
        }
        for (f, msg) in [
            ("kind", "kind must not be empty"),
            ("name", "name must not be empty"),
            ("uid", "uid must not be empty"),
        ] {
            let s = get_str(r, f).unwrap_or("");
            if s.is_empty() {
                errs.push(FieldError::invalid(child(path, f), s.into(), msg));
            }
        }
        if get(r, "controller").and_then(Value::as_bool) == Some(true) {
            let name = get_str(r, "name").unwrap_or("");
            match controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    meta.get("ownerReferences").cloned().unwrap_or(Value::Null),
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {name}"
                    ),
                )),
                None => controller = Some(name),
            }
        }
    }
}

fn validate_finalizers(meta: &Value, path: &str, errs: &mut FieldErrors) {
    let list: Vec<&str> = get_array(meta, "finalizers")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for f in &list {
        push_msgs(path, f, names::qualified_name(f), errs);
    }
    if list.contains(&"orphan") && list.contains(&"foregroundDeletion") {
        errs.push(FieldError::invalid(
            path,
            meta.get("finalizers").cloned().unwrap_or(Value::Null),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// A `metav1.LabelSelector` (matchLabels + matchExpressions).
pub fn validate_label_selector(sel: &Value, path: &str, errs: &mut FieldErrors) {
    validate_labels(
        get_map(sel, "matchLabels"),
        &child(path, "matchLabels"),
        errs,
    );
    for (p, expr) in each(sel, "matchExpressions", path) {
        let op = get_str(expr, "operator").unwrap_or("");
        let values = get_array(expr, "values");
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        child(&p, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        child(&p, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            _ => errs.push(FieldError::invalid(
                child(&p, "operator"),
                op.into(),
                "not a valid selector operator",
            )),
        }
        let key = get_str(expr, "key").unwrap_or("");
        push_msgs(&child(&p, "key"), key, names::qualified_name(key), errs);
        for (vp, v) in each(expr, "values", &p) {
            let s = v.as_str().unwrap_or("");
            push_msgs(&vp, s, names::label_value(s), errs);
        }
    }
}

/// Whether a label selector selects a label set. An empty selector selects
/// everything; an unknown operator selects nothing.
pub fn selector_matches(sel: &Value, labels: Option<&Map<String, Value>>) -> bool {
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let match_labels = get_map(sel, "matchLabels")
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k).is_some() && label(k) == v.as_str());
    match_labels
        && get_array(sel, "matchExpressions").iter().all(|e| {
            let key = get_str(e, "key").unwrap_or("");
            let mut values = get_array(e, "values").iter().filter_map(Value::as_str);
            match (get_str(e, "operator").unwrap_or(""), label(key)) {
                ("In", Some(v)) => values.any(|x| x == v),
                ("In", None) => false,
                ("NotIn", Some(v)) => !values.any(|x| x == v),
                ("NotIn", None) => true,
                ("Exists", l) => l.is_some(),
                ("DoesNotExist", l) => l.is_none(),
                _ => false,
            }
        })
}

/// Whether a selector has no requirements at all.
pub(crate) fn selector_is_empty(sel: &Value) -> bool {
    get_map(sel, "matchLabels").is_none_or(Map::is_empty)
        && get_array(sel, "matchExpressions").is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match() {
        let labels = json!({"app": "web", "tier": "fe"});
        let l = labels.as_object();
        assert!(selector_matches(&json!({"matchLabels": {"app": "web"}}), l));
        assert!(!selector_matches(&json!({"matchLabels": {"app": "db"}}), l));
        assert!(selector_matches(&json!({}), l));
        let e = json!({"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe", "be"]},
            {"key": "x", "operator": "DoesNotExist"},
            {"key": "app", "operator": "NotIn", "values": ["db"]},
            {"key": "app", "operator": "Exists"}
        ]});
        assert!(selector_matches(&e, l));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}),
            l
        ));
    }

    #[test]
    fn selector_validation() {
        let mut errs = Vec::new();
        validate_label_selector(
            &json!({"matchExpressions": [
                {"key": "a", "operator": "In"},
                {"key": "b", "operator": "Exists", "values": ["x"]},
                {"key": "c", "operator": "Near"}
            ]}),
            "spec.selector",
            &mut errs,
        );
        let got: Vec<(&str, FieldErrorKind)> =
            errs.iter().map(|e| (e.field.as_str(), e.kind)).collect();
        assert_eq!(
            got,
            vec![
                (
                    "spec.selector.matchExpressions[0].values",
                    FieldErrorKind::Required
                ),
                (
                    "spec.selector.matchExpressions[1].values",
                    FieldErrorKind::Forbidden
                ),
                (
                    "spec.selector.matchExpressions[2].operator",
                    FieldErrorKind::Invalid
                ),
            ]
        );
    }
}
