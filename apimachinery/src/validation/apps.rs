//! Workloads: everything that carries a pod template.

use serde_json::{Map, Value};

use super::meta::{selector_is_empty, selector_matches, validate_label_selector, validate_labels};
use super::pod::validate_pod_template_spec;
use super::{
    Ctx, IMMUTABLE_MSG, check_enum, check_nonneg, check_nonneg_all, cron, get, get_map, get_path,
    get_str, immutable, int_field, names,
};
use crate::field::{FieldError, FieldErrors, child};

fn spec_of(obj: &Value) -> &Value {
    static EMPTY: Value = Value::Null;
    get(obj, "spec").unwrap_or(&EMPTY)
}

fn template_labels(tmpl: Option<&Value>) -> Option<&Map<String, Value>> {
    tmpl.and_then(|t| get_path(t, "metadata.labels"))
        .and_then(Value::as_object)
}

fn template_labels_value(tmpl: Option<&Value>) -> Value {
    template_labels(tmpl).map_or(Value::Null, |m| Value::Object(m.clone()))
}

/// The `restartPolicy` a workload's template must use (absent = Always).
fn check_template_restart(
    tmpl: Option<&Value>,
    path: &str,
    allowed: &[&str],
    errs: &mut FieldErrors,
) {
    let rp = tmpl
        .and_then(|t| get_path(t, "spec.restartPolicy"))
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if !allowed.contains(&rp) {
        errs.push(FieldError::not_supported(
            child(path, "spec.restartPolicy"),
            rp.into(),
            allowed,
        ));
    }
}

/// Selector + template rules shared by Deployment, ReplicaSet, StatefulSet
/// and DaemonSet. `what` names the kind in the empty-selector message.
fn validate_selected_template(spec: &Value, what: &str, errs: &mut FieldErrors) {
    let tmpl = get(spec, "template");
    match get(spec, "selector") {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            validate_label_selector(sel, "spec.selector", errs);
            if selector_is_empty(sel) {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    sel.clone(),
                    format!("empty selector is invalid for {what}"),
                ));
            } else if tmpl.is_some() && !selector_matches(sel, template_labels(tmpl)) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    template_labels_value(tmpl),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    validate_pod_template_spec(tmpl, "spec.template", errs);
    if tmpl.is_some() {
        check_template_restart(tmpl, "spec.template", &["Always"], errs);
    }
}

fn forbid_active_deadline(spec: &Value, what: &str, errs: &mut FieldErrors) {
    if get_path(spec, "template.spec.activeDeadlineSeconds").is_some() {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            format!("activeDeadlineSeconds in {what} is not Supported"),
        ));
    }
}

/// An IntOrString that must be a non-negative int or a percent; `cap`
/// also rejects percentages above 100.
fn int_or_percent(v: Option<&Value>, path: &str, cap: bool, errs: &mut FieldErrors) -> Option<i64> {
    match v? {
        Value::String(s) => {
            let msgs = names::percent(s);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(FieldError::invalid(path, s.as_str().into(), m));
                }
                return None;
            }
            let n: i64 = s.trim_end_matches('%').parse().ok()?;
            if cap && n > 100 {
                errs.push(FieldError::invalid(
                    path,
                    s.as_str().into(),
                    "must not be greater than 100%",
                ));
            }
            Some(n)
        }
        x => match x.as_i64() {
            Some(n) if n < 0 => {
                errs.push(FieldError::invalid(path, n.into(), super::NEGATIVE_MSG));
                None
            }
            Some(n) => Some(n),
            None => {
                errs.push(FieldError::invalid(
                    path,
                    x.clone(),
                    "must be an integer or percentage (e.g '5%')",
                ));
                None
            }
        },
    }
}

/// Deployment maxUnavailable/maxSurge; both zero would stall a rollout.
/// Only maxUnavailable is capped at 100% (surge may exceed it).
fn validate_rolling(ru: &Value, path: &str, errs: &mut FieldErrors) {
    let mu_path = child(path, "maxUnavailable");
    let mu = int_or_percent(get(ru, "maxUnavailable"), &mu_path, false, errs);
    let ms = int_or_percent(get(ru, "maxSurge"), &child(path, "maxSurge"), false, errs);
    if mu == Some(0) && ms == Some(0) {
        errs.push(FieldError::invalid(
            &mu_path,
            get(ru, "maxUnavailable").cloned().unwrap_or(Value::Null),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    if mu.is_some_and(|n| n > 100) && get(ru, "maxUnavailable").is_some_and(Value::is_string) {
        errs.push(FieldError::invalid(
            mu_path,
            get(ru, "maxUnavailable").cloned().unwrap_or(Value::Null),
            "must not be greater than 100%",
        ));
    }
}

/// DaemonSet rolling update: both capped at 100%, exactly one non-zero.
fn validate_daemon_rolling(ru: &Value, path: &str, errs: &mut FieldErrors) {
    let mu_path = child(path, "maxUnavailable");
    let ms_path = child(path, "maxSurge");
    let mu = int_or_percent(get(ru, "maxUnavailable"), &mu_path, true, errs);
    let ms = int_or_percent(get(ru, "maxSurge"), &ms_path, true, errs);
    let shown = |k: &str| get(ru, k).cloned().unwrap_or(Value::Null);
    let has_mu = mu.is_some_and(|n| n != 0);
    let has_ms = ms.is_some_and(|n| n != 0);
    if has_mu && has_ms {
        errs.push(FieldError::invalid(
            ms_path,
            shown("maxSurge"),
            "may not be set when maxUnavailable is non-zero",
        ));
    } else if !has_mu && !has_ms && mu.is_some() {
        errs.push(FieldError::invalid(
            mu_path,
            shown("maxUnavailable"),
            "cannot be 0 when maxSurge is 0",
        ));
    }
}

pub(crate) fn validate_deployment(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let spec = spec_of(obj);
    // Upstream's order, so multi-error messages list fields the same way.
    check_nonneg(spec, "replicas", "spec", errs);
    validate_selected_template(spec, "deployment", errs);
    forbid_active_deadline(spec, "ReplicaSet", errs);
    if let Some(st) = get(spec, "strategy") {
        let ty = get_str(st, "type").unwrap_or("RollingUpdate");
        match ty {
            "Recreate" => {
                if get(st, "rollingUpdate").is_some() {
                    errs.push(FieldError::forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            "RollingUpdate" => {
                if let Some(ru) = get(st, "rollingUpdate") {
                    validate_rolling(ru, "spec.strategy.rollingUpdate", errs);
                }
            }
            other => errs.push(FieldError::not_supported(
                "spec.strategy.type",
                other.into(),
                &["Recreate", "RollingUpdate"],
            )),
        }
    }
    check_nonneg_all(
        spec,
        &["minReadySeconds", "revisionHistoryLimit"],
        "spec",
        errs,
    );
    if let Some(pd) = int_field(spec, "progressDeadlineSeconds", "spec", errs) {
        let min_ready = get(spec, "minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if pd < 0 {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                pd.into(),
                super::NEGATIVE_MSG,
            ));
        }
        if pd <= min_ready {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                pd.into(),
                "must be greater than minReadySeconds",
            ));
        }
    }
}

pub(crate) fn validate_replica_set(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let spec = spec_of(obj);
    check_nonneg_all(spec, &["replicas", "minReadySeconds"], "spec", errs);
    // Upstream's ReplicaSet message also says "deployment".
    validate_selected_template(spec, "deployment", errs);
    forbid_active_deadline(spec, "ReplicaSet", errs);
}

pub(crate) fn validate_stateful_set(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let spec = spec_of(obj);
    check_nonneg_all(
        spec,
        &["replicas", "minReadySeconds", "revisionHistoryLimit"],
        "spec",
        errs,
    );
    match get_str(spec, "podManagementPolicy") {
        None | Some("OrderedReady") | Some("Parallel") => {}
        Some("") => errs.push(FieldError::required("spec.podManagementPolicy", "")),
        Some(o) => errs.push(FieldError::invalid(
            "spec.podManagementPolicy",
            o.into(),
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    if let Some(us) = get(spec, "updateStrategy") {
        match get_str(us, "type").unwrap_or("RollingUpdate") {
            "RollingUpdate" => {
                if let Some(ru) = get(us, "rollingUpdate") {
                    check_nonneg(ru, "partition", "spec.updateStrategy.rollingUpdate", errs);
                    let p = "spec.updateStrategy.rollingUpdate.maxUnavailable";
                    if int_or_percent(get(ru, "maxUnavailable"), p, true, errs) == Some(0) {
                        errs.push(FieldError::invalid(
                            p,
                            get(ru, "maxUnavailable").cloned().unwrap_or(Value::Null),
                            super::NOT_POSITIVE_MSG,
                        ));
                    }
                }
            }
            "OnDelete" => {
                if let Some(ru) = get(us, "rollingUpdate") {
                    errs.push(FieldError::invalid(
                        "spec.updateStrategy.rollingUpdate",
                        ru.clone(),
                        "only allowed for updateStrategy 'RollingUpdate'",
                    ));
                }
            }
            "" => errs.push(FieldError::required("spec.updateStrategy", "")),
            _ => errs.push(FieldError::invalid(
                "spec.updateStrategy",
                us.clone(),
                "must be 'RollingUpdate' or 'OnDelete'",
            )),
        }
    }
    if let Some(rp) = get(spec, "persistentVolumeClaimRetentionPolicy") {
        for k in ["whenDeleted", "whenScaled"] {
            check_enum(
                rp,
                k,
                "spec.persistentVolumeClaimRetentionPolicy",
                &["Retain", "Delete"],
                errs,
            );
        }
    }
    if let Some(sn) = get_str(spec, "serviceName").filter(|s| !s.is_empty()) {
        super::push_msgs("spec.serviceName", sn, names::dns1123_label(sn), errs);
    }
    validate_selected_template(spec, "statefulset", errs);
    forbid_active_deadline(spec, "StatefulSet", errs);
    for (p, t) in super::each(spec, "volumeClaimTemplates", "spec") {
        let n = get_path(t, "metadata.name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if n.is_empty() {
            errs.push(FieldError::required(child(&p, "metadata.name"), ""));
        } else {
            super::push_msgs(
                &child(&p, "metadata.name"),
                n,
                names::dns1123_subdomain(n),
                errs,
            );
        }
    }
}

pub(crate) fn validate_daemon_set(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let spec = spec_of(obj);
    check_nonneg_all(
        spec,
        &[
            "minReadySeconds",
            "templateGeneration",
            "revisionHistoryLimit",
        ],
        "spec",
        errs,
    );
    validate_selected_template(spec, "daemonset", errs);
    if let Some(a) = get_path(spec, "template.spec.activeDeadlineSeconds") {
        errs.push(FieldError::invalid(
            "spec.template.spec.activeDeadlineSeconds",
            a.clone(),
            "activeDeadlineSeconds must be nil for daemons",
        ));
    }
    if let Some(us) = get(spec, "updateStrategy") {
        match get_str(us, "type").unwrap_or("RollingUpdate") {
            "RollingUpdate" => {
                if let Some(ru) = get(us, "rollingUpdate") {
                    validate_daemon_rolling(ru, "spec.updateStrategy.rollingUpdate", errs);
                }
            }
            "OnDelete" => {}
            o => errs.push(FieldError::not_supported(
                "spec.updateStrategy",
                o.into(),
                &["RollingUpdate", "OnDelete"],
            )),
        }
    }
}

pub(crate) fn validate_rc(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let spec = spec_of(obj);
    check_nonneg_all(spec, &["replicas", "minReadySeconds"], "spec", errs);
    let sel = get_map(spec, "selector");
    validate_labels(sel, "spec.selector", errs);
    let tmpl = get(spec, "template");
    match sel {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(m) if m.is_empty() => errs.push(FieldError::required("spec.selector", "")),
        Some(m) => {
            let labels = template_labels(tmpl);
            let matches = m
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
            if tmpl.is_some() && !matches {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    template_labels_value(tmpl),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    validate_pod_template_spec(tmpl, "spec.template", errs);
    if tmpl.is_some() {
        check_template_restart(tmpl, "spec.template", &["Always"], errs);
    }
    forbid_active_deadline(spec, "ReplicationController", errs);
}

pub(crate) fn validate_pod_template(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    validate_pod_template_spec(get(obj, "template"), "template", errs);
}

/// JobSpec rules shared by Jobs and CronJob job templates.
fn validate_job_spec(spec: &Value, path: &str, errs: &mut FieldErrors) {
    check_nonneg_all(
        spec,
        &[
            "parallelism",
            "completions",
            "activeDeadlineSeconds",
            "backoffLimit",
            "ttlSecondsAfterFinished",
            "backoffLimitPerIndex",
            "maxFailedIndexes",
        ],
        path,
        errs,
    );
    let mode = get_str(spec, "completionMode");
    if let Some(m) = mode
        && m != "NonIndexed"
        && m != "Indexed"
    {
        errs.push(FieldError::not_supported(
            child(path, "completionMode"),
            m.into(),
            &["NonIndexed", "Indexed"],
        ));
    }
    if mode == Some("Indexed") {
        if get(spec, "completions").is_none() {
            errs.push(FieldError::required(
                child(path, "completions"),
                "when completion mode is Indexed",
            ));
        }
        if let Some(p) = get(spec, "parallelism")
            .and_then(Value::as_i64)
            .filter(|p| *p > 100_000)
        {
            errs.push(FieldError::invalid(
                child(path, "parallelism"),
                p.into(),
                "must be less than or equal to 100000 when completion mode is Indexed",
            ));
        }
    }
    check_enum(
        spec,
        "podReplacementPolicy",
        path,
        &["TerminatingOrFailed", "Failed"],
        errs,
    );
    let tmpl_path = child(path, "template");
    let tmpl = get(spec, "template");
    validate_pod_template_spec(tmpl, &tmpl_path, errs);
    if tmpl.is_some() {
        let rp = tmpl
            .and_then(|t| get_path(t, "spec.restartPolicy"))
            .and_then(Value::as_str)
            .unwrap_or("Always");
        if rp != "OnFailure" && rp != "Never" {
            errs.push(FieldError::not_supported(
                child(&tmpl_path, "spec.restartPolicy"),
                rp.into(),
                &["OnFailure", "Never"],
            ));
        }
    }
}

pub(crate) fn validate_job(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let spec = spec_of(obj);
    validate_job_spec(spec, "spec", errs);
    let manual = get(spec, "manualSelector").and_then(Value::as_bool) == Some(true);
    match get(spec, "selector") {
        // The apiserver generates the selector unless it is manual.
        None if manual => errs.push(FieldError::required("spec.selector", "")),
        None => {}
        Some(sel) => {
            validate_label_selector(sel, "spec.selector", errs);
            let tmpl = get(spec, "template");
            if !selector_matches(sel, template_labels(tmpl)) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    template_labels_value(tmpl),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
}

pub(crate) fn validate_cron_job(obj: &Value, ctx: &Ctx, errs: &mut FieldErrors) {
    let name = get_path(obj, "metadata.name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.len() > 52 {
        errs.push(FieldError::invalid(
            "metadata.name",
            name.into(),
            "must be no more than 52 characters",
        ));
    }
    let spec = spec_of(obj);
    match get_str(spec, "schedule") {
        None | Some("") => errs.push(FieldError::required("spec.schedule", "")),
        Some(s) => {
            if let Err(e) = cron::parse_cron(s) {
                errs.push(FieldError::invalid("spec.schedule", s.into(), e));
            }
            // A TZ in the schedule survives only if the stored object had one.
            let old_had_tz = ctx
                .old
                .and_then(|o| get_path(o, "spec.schedule"))
                .and_then(Value::as_str)
                .is_some_and(|o| o.contains("TZ"));
            if s.contains("TZ") {
                if !old_had_tz {
                    errs.push(FieldError::invalid(
                        "spec.schedule",
                        s.into(),
                        "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                    ));
                } else if get(spec, "timeZone").is_some() {
                    errs.push(FieldError::invalid(
                        "spec.schedule",
                        s.into(),
                        "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                    ));
                }
            }
        }
    }
    if let Some(tz) = get_str(spec, "timeZone") {
        validate_time_zone(tz, errs);
    }
    check_nonneg_all(
        spec,
        &[
            "startingDeadlineSeconds",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
        ],
        "spec",
        errs,
    );
    check_enum(
        spec,
        "concurrencyPolicy",
        "spec",
        &["Allow", "Forbid", "Replace"],
        errs,
    );
    let empty = Value::Object(Map::new());
    let jt = get(spec, "jobTemplate").unwrap_or(&empty);
    let jmeta = get(jt, "metadata").unwrap_or(&empty);
    validate_labels(get_map(jmeta, "labels"), "spec.jobTemplate.labels", errs);
    let jspec = get(jt, "spec").unwrap_or(&empty);
    validate_job_spec(jspec, "spec.jobTemplate.spec", errs);
    if let Some(sel) = get(jspec, "selector") {
        errs.push(FieldError::invalid(
            "spec.jobTemplate.spec.selector",
            sel.clone(),
            "`selector` will be auto-generated",
        ));
    }
    if get(jspec, "manualSelector").and_then(Value::as_bool) == Some(true) {
        errs.push(FieldError::not_supported(
            "spec.jobTemplate.spec.manualSelector",
            true.into(),
            &["nil", "false"],
        ));
    }
}

fn validate_time_zone(tz: &str, errs: &mut FieldErrors) {
    let p = "spec.timeZone";
    if tz.is_empty() {
        errs.push(FieldError::invalid(
            p,
            tz.into(),
            "timeZone must be nil or non-empty string",
        ));
        return;
    }
    if tz.eq_ignore_ascii_case("local") {
        errs.push(FieldError::invalid(
            p,
            tz.into(),
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
        return;
    }
    // Without a tz database here, check the IANA name shape only.
    let bad = tz.split('/').any(|part| {
        part == "."
            || part == ".."
            || part.starts_with('-')
            || part.is_empty()
            || part.len() > 14
            || !part
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'))
    });
    if bad {
        errs.push(FieldError::invalid(
            p,
            tz.into(),
            format!("unknown time zone {tz}"),
        ));
    }
}

// ---- updates ----------------------------------------------------------------

/// apps/v1 workloads cannot change their selector.
pub(crate) fn selector_immutable(new: &Value, old: &Value, errs: &mut FieldErrors) {
    immutable(
        get(spec_of(new), "selector"),
        get(spec_of(old), "selector"),
        "spec.selector",
        errs,
    );
}

const STS_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "revisionHistoryLimit",
];

pub(crate) fn validate_stateful_set_update(new: &Value, old: &Value, errs: &mut FieldErrors) {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.retain(|k, x| !STS_MUTABLE.contains(&k.as_str()) && !x.is_null());
        m
    };
    if strip(spec_of(new)) != strip(spec_of(old)) {
        errs.push(FieldError::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
}

pub(crate) fn validate_job_update(new: &Value, old: &Value, errs: &mut FieldErrors) {
    let (ns, os) = (spec_of(new), spec_of(old));
    immutable(
        get(ns, "selector"),
        get(os, "selector"),
        "spec.selector",
        errs,
    );
    for k in ["completionMode", "podFailurePolicy", "backoffLimitPerIndex"] {
        immutable(get(ns, k), get(os, k), &child("spec", k), errs);
    }
    // Indexed jobs scale elastically when completions tracks parallelism.
    let elastic = get_str(ns, "completionMode") == Some("Indexed")
        && get(ns, "completions").is_some()
        && get(ns, "completions") == get(ns, "parallelism")
        && get(os, "completions") == get(os, "parallelism");
    if !elastic {
        immutable(
            get(ns, "completions"),
            get(os, "completions"),
            "spec.completions",
            errs,
        );
    }
    // Suspended jobs that never started may retarget their pods' scheduling.
    let mutable_sched = get(ns, "suspend").and_then(Value::as_bool) == Some(true)
        && get_path(old, "status.startTime").is_none();
    let mask = |t: Option<&Value>| -> Option<Value> {
        let mut t = t?.clone();
        if mutable_sched {
            if let Some(s) = t.get_mut("spec").and_then(Value::as_object_mut) {
                for k in ["nodeSelector", "affinity", "tolerations", "schedulingGates"] {
                    s.remove(k);
                }
            }
            if let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("labels");
                m.remove("annotations");
            }
        }
        Some(t)
    };
    let (nt, ot) = (mask(get(ns, "template")), mask(get(os, "template")));
    if nt != ot {
        errs.push(FieldError::invalid(
            "spec.template",
            get(ns, "template").cloned().unwrap_or(Value::Null),
            IMMUTABLE_MSG,
        ));
    }
}
