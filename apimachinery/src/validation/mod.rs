//! Per-kind validation of API objects, worded like upstream so clients see
//! familiar `field: Invalid value: ...: detail` messages.
//!
//! Objects are validated after defaulting (as upstream does), but a field
//! that defaulting would fill is accepted when absent, so callers that skip
//! defaulting are not punished for it. Per-kind knowledge is a table
//! ([`KINDS`]) pointing at small rule functions.

pub mod base64;
pub mod cron;
pub mod names;
pub mod quantity;

mod apps;
mod core;
mod meta;
mod pod;

use serde_json::{Map, Value};

use crate::field::{FieldError, FieldErrors, child, index};
pub use meta::{selector_matches, validate_label_selector, validate_labels};
use names::NameFn;
pub use quantity::{Quantity, QuantityError, QuantityFormat, parse_quantity};

/// Validates an object about to be created.
pub fn validate(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
    namespaced: bool,
) -> FieldErrors {
    let _ = version; // every served version shares these rules
    let rule = kind_rule(group, kind);
    let mut errs =
        meta::validate_object_meta(obj.get("metadata"), namespaced, rule.name, "metadata");
    if let Some(f) = rule.spec {
        f(obj, &Ctx { old: None }, &mut errs);
    }
    errs
}

/// Validates an update: the new object on its own, metadata changes, and the
/// kind's immutable fields against the old object.
pub fn validate_update(
    group: &str,
    version: &str,
    kind: &str,
    new: &Value,
    old: &Value,
    namespaced: bool,
) -> FieldErrors {
    let _ = version;
    let rule = kind_rule(group, kind);
    let mut errs =
        meta::validate_object_meta(new.get("metadata"), namespaced, rule.name, "metadata");
    meta::validate_object_meta_update(new.get("metadata"), old.get("metadata"), &mut errs);
    if let Some(f) = rule.spec {
        f(new, &Ctx { old: Some(old) }, &mut errs);
    }
    if let Some(f) = rule.update {
        f(new, old, &mut errs);
    }
    errs
}

/// What a rule function knows besides the object.
pub(crate) struct Ctx<'a> {
    /// The stored object on update; `None` on create.
    pub old: Option<&'a Value>,
}

type SpecFn = fn(&Value, &Ctx, &mut FieldErrors);
type UpdateFn = fn(&Value, &Value, &mut FieldErrors);

struct KindRule {
    group: &'static str,
    kind: &'static str,
    name: NameFn,
    spec: Option<SpecFn>,
    update: Option<UpdateFn>,
}

const RBAC: &str = "rbac.authorization.k8s.io";

const fn rule(
    group: &'static str,
    kind: &'static str,
    name: NameFn,
    spec: Option<SpecFn>,
    update: Option<UpdateFn>,
) -> KindRule {
    KindRule {
        group,
        kind,
        name,
        spec,
        update,
    }
}

use names::{
    name_is_dns_label as label, name_is_dns_subdomain as subdomain,
    name_is_dns1035_label as dns1035, name_is_path_segment as segment,
};

/// Kinds with more than metadata rules. Anything not listed gets metadata
/// validation with DNS-subdomain names.
static KINDS: &[KindRule] = &[
    rule(
        "",
        "Pod",
        subdomain,
        Some(pod::validate_pod),
        Some(pod::validate_pod_update),
    ),
    rule(
        "",
        "PodTemplate",
        subdomain,
        Some(apps::validate_pod_template),
        None,
    ),
    rule(
        "",
        "ReplicationController",
        subdomain,
        Some(apps::validate_rc),
        None,
    ),
    rule(
        "",
        "Service",
        dns1035,
        Some(core::validate_service),
        Some(core::validate_service_update),
    ),
    rule(
        "",
        "ConfigMap",
        subdomain,
        Some(core::validate_config_map),
        Some(core::validate_config_map_update),
    ),
    rule(
        "",
        "Secret",
        subdomain,
        Some(core::validate_secret),
        Some(core::validate_secret_update),
    ),
    rule("", "Namespace", label, Some(core::validate_namespace), None),
    rule(
        "",
        "Node",
        subdomain,
        Some(core::validate_node),
        Some(core::validate_node_update),
    ),
    rule(
        "",
        "PersistentVolumeClaim",
        subdomain,
        Some(core::validate_pvc),
        Some(core::validate_pvc_update),
    ),
    rule("", "ServiceAccount", subdomain, None, None),
    rule(
        "apps",
        "Deployment",
        subdomain,
        Some(apps::validate_deployment),
        Some(apps::selector_immutable),
    ),
    rule(
        "apps",
        "ReplicaSet",
        subdomain,
        Some(apps::validate_replica_set),
        Some(apps::selector_immutable),
    ),
    rule(
        "apps",
        "StatefulSet",
        subdomain,
        Some(apps::validate_stateful_set),
        Some(apps::validate_stateful_set_update),
    ),
    rule(
        "apps",
        "DaemonSet",
        subdomain,
        Some(apps::validate_daemon_set),
        Some(apps::selector_immutable),
    ),
    rule(
        "batch",
        "Job",
        subdomain,
        Some(apps::validate_job),
        Some(apps::validate_job_update),
    ),
    rule(
        "batch",
        "CronJob",
        subdomain,
        Some(apps::validate_cron_job),
        None,
    ),
    rule(
        "coordination.k8s.io",
        "Lease",
        subdomain,
        Some(core::validate_lease),
        None,
    ),
    rule(
        "networking.k8s.io",
        "Ingress",
        subdomain,
        Some(core::validate_ingress),
        None,
    ),
    rule(RBAC, "Role", segment, Some(core::validate_role), None),
    rule(
        RBAC,
        "ClusterRole",
        segment,
        Some(core::validate_cluster_role),
        None,
    ),
    rule(
        RBAC,
        "RoleBinding",
        segment,
        Some(core::validate_role_binding),
        Some(core::validate_binding_update),
    ),
    rule(
        RBAC,
        "ClusterRoleBinding",
        segment,
        Some(core::validate_cluster_role_binding),
        Some(core::validate_binding_update),
    ),
];

static DEFAULT_RULE: KindRule = rule("", "", subdomain, None, None);

fn kind_rule(group: &str, kind: &str) -> &'static KindRule {
    KINDS
        .iter()
        .find(|r| r.group == group && r.kind == kind)
        .unwrap_or(&DEFAULT_RULE)
}

// ---- small JSON helpers shared by the rule modules ----------------------

pub(crate) const NEGATIVE_MSG: &str = "must be greater than or equal to 0";
pub(crate) const NOT_POSITIVE_MSG: &str = "must be greater than 0";
pub(crate) const IMMUTABLE_MSG: &str = "field is immutable";

/// A field's value, treating JSON `null` as absent.
pub(crate) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// Follows a dotted path of object keys.
pub(crate) fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, k| get(cur, k))
}

pub(crate) fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, key).and_then(Value::as_str)
}

pub(crate) fn get_array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    get(v, key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(crate) fn get_map<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    get(v, key).and_then(Value::as_object)
}

pub(crate) fn get_bool(v: &Value, key: &str) -> bool {
    get(v, key).and_then(Value::as_bool).unwrap_or(false)
}

/// An integer field; a value of another type is reported and ignored.
pub(crate) fn int_field(v: &Value, key: &str, path: &str, errs: &mut FieldErrors) -> Option<i64> {
    let x = get(v, key)?;
    match x.as_i64() {
        Some(i) => Some(i),
        None => {
            errs.push(FieldError::invalid(
                child(path, key),
                x.clone(),
                "must be an integer",
            ));
            None
        }
    }
}

/// A string field; a value of another type is reported and ignored.
pub(crate) fn str_field<'a>(
    v: &'a Value,
    key: &str,
    path: &str,
    errs: &mut FieldErrors,
) -> Option<&'a str> {
    let x = get(v, key)?;
    match x.as_str() {
        Some(s) => Some(s),
        None => {
            errs.push(FieldError::invalid(
                child(path, key),
                x.clone(),
                "must be a string",
            ));
            None
        }
    }
}

pub(crate) fn check_nonneg(v: &Value, key: &str, path: &str, errs: &mut FieldErrors) {
    if let Some(i) = int_field(v, key, path, errs)
        && i < 0
    {
        errs.push(FieldError::invalid(
            child(path, key),
            i.into(),
            NEGATIVE_MSG,
        ));
    }
}

pub(crate) fn check_positive(v: &Value, key: &str, path: &str, errs: &mut FieldErrors) {
    if let Some(i) = int_field(v, key, path, errs)
        && i <= 0
    {
        errs.push(FieldError::invalid(
            child(path, key),
            i.into(),
            NOT_POSITIVE_MSG,
        ));
    }
}

/// Checks each listed key of `v` is non-negative (a data-driven shortcut).
pub(crate) fn check_nonneg_all(v: &Value, keys: &[&str], path: &str, errs: &mut FieldErrors) {
    for k in keys {
        check_nonneg(v, k, path, errs);
    }
}

/// An enum-valued string: absent is fine (defaulting fills it), `""` is
/// required, anything else must be listed.
pub(crate) fn check_enum(
    v: &Value,
    key: &str,
    path: &str,
    allowed: &[&str],
    errs: &mut FieldErrors,
) {
    if let Some(s) = str_field(v, key, path, errs) {
        check_enum_value(s, &child(path, key), allowed, errs);
    }
}

pub(crate) fn check_enum_value(s: &str, path: &str, allowed: &[&str], errs: &mut FieldErrors) {
    if s.is_empty() {
        errs.push(FieldError::required(path, ""));
    } else if !allowed.contains(&s) {
        errs.push(FieldError::not_supported(path, s.into(), allowed));
    }
}

/// Pushes `Invalid(path, value, msg)` for each message of a format check.
pub(crate) fn push_msgs(path: &str, value: &str, msgs: Vec<String>, errs: &mut FieldErrors) {
    for m in msgs {
        errs.push(FieldError::invalid(path, value.into(), m));
    }
}

/// `Invalid(path, new, "field is immutable")` when a field changed.
pub(crate) fn immutable(
    new: Option<&Value>,
    old: Option<&Value>,
    path: &str,
    errs: &mut FieldErrors,
) {
    if new != old {
        errs.push(FieldError::invalid(
            path,
            new.cloned().unwrap_or(Value::Null),
            IMMUTABLE_MSG,
        ));
    }
}

/// Iterates over an array field with each element's path.
pub(crate) fn each<'a>(
    v: &'a Value,
    key: &str,
    path: &str,
) -> impl Iterator<Item = (String, &'a Value)> {
    let p = child(path, key);
    get_array(v, key)
        .iter()
        .enumerate()
        .map(move |(i, x)| (index(&p, i), x))
}

#[cfg(test)]
mod tests;
