//! Pods, pod templates and everything inside a PodSpec.

use serde_json::{Map, Value};

use super::meta::{validate_annotations, validate_labels};
use super::names;
use super::quantity::{Quantity, quantity_from_value};
use super::{
    Ctx, check_enum, check_enum_value, check_nonneg, each, get, get_array, get_map, get_str,
    int_field, push_msgs, str_field,
};
use crate::field::{FieldError, FieldErrorKind, FieldErrors, child, key};

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";
const INIT_ONLY_SIDECAR: &str = "may not be set for init containers without restartPolicy=Always";

/// Volume source fields, in the order upstream checks them.
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "projected",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// String fields each volume source must set.
const VOLUME_REQUIRED: &[(&str, &[&str])] = &[
    ("hostPath", &["path"]),
    ("secret", &["secretName"]),
    ("configMap", &["name"]),
    ("persistentVolumeClaim", &["claimName"]),
    ("nfs", &["server", "path"]),
    ("gitRepo", &["repository"]),
    ("iscsi", &["targetPortal", "iqn"]),
    ("glusterfs", &["endpoints", "path"]),
    ("csi", &["driver"]),
    ("azureDisk", &["diskName", "diskURI"]),
    ("azureFile", &["secretName", "shareName"]),
    ("flexVolume", &["driver"]),
    ("image", &["reference"]),
];

const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

const RESOURCE_FIELD_REFS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

pub(crate) fn validate_pod(obj: &Value, ctx: &Ctx, errs: &mut FieldErrors) {
    let empty = Value::Object(Map::new());
    let spec = get(obj, "spec").unwrap_or(&empty);
    validate_pod_spec(spec, "spec", true, errs);
    if ctx.old.is_none() && !get_array(spec, "ephemeralContainers").is_empty() {
        errs.push(FieldError::forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        ));
    }
}

/// A PodTemplateSpec at `path` (e.g. `spec.template`).
pub(crate) fn validate_pod_template_spec(tmpl: Option<&Value>, path: &str, errs: &mut FieldErrors) {
    let Some(tmpl) = tmpl else {
        errs.push(FieldError::required(path, ""));
        return;
    };
    let empty = Value::Object(Map::new());
    let meta = get(tmpl, "metadata").unwrap_or(&empty);
    // Upstream reports template labels at `<path>.labels`.
    validate_labels(get_map(meta, "labels"), &child(path, "labels"), errs);
    validate_annotations(
        get_map(meta, "annotations"),
        &child(path, "annotations"),
        errs,
    );
    let spec = get(tmpl, "spec").unwrap_or(&empty);
    let spec_path = child(path, "spec");
    validate_pod_spec(spec, &spec_path, false, errs);
    if !get_array(spec, "ephemeralContainers").is_empty() {
        errs.push(FieldError::forbidden(
            child(&spec_path, "ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
}

pub(crate) fn validate_pod_spec(spec: &Value, path: &str, is_pod: bool, errs: &mut FieldErrors) {
    let volumes = validate_volumes(spec, path, errs);
    let mut names: Vec<String> = Vec::new();
    let host_network = get(spec, "hostNetwork").and_then(Value::as_bool) == Some(true);
    let grace = get(spec, "terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    let cc = ContainerCtx {
        volumes: &volumes,
        is_pod,
        host_network,
        grace,
    };
    if get_array(spec, "containers").is_empty() {
        errs.push(FieldError::required(child(path, "containers"), ""));
    }
    for (p, c) in each(spec, "containers", path) {
        validate_container(c, &p, &cc, false, &mut names, errs);
    }
    for (p, c) in each(spec, "initContainers", path) {
        validate_container(c, &p, &cc, true, &mut names, errs);
    }
    check_enum(
        spec,
        "restartPolicy",
        path,
        &["Always", "OnFailure", "Never"],
        errs,
    );
    check_enum(
        spec,
        "dnsPolicy",
        path,
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        errs,
    );
    check_enum(
        spec,
        "preemptionPolicy",
        path,
        &["PreemptLowerPriority", "Never"],
        errs,
    );
    validate_labels(
        get_map(spec, "nodeSelector"),
        &child(path, "nodeSelector"),
        errs,
    );
    for (k, f) in [
        (
            "serviceAccountName",
            names::dns1123_subdomain as fn(&str) -> Vec<String>,
        ),
        ("nodeName", names::dns1123_subdomain),
        ("priorityClassName", names::dns1123_subdomain),
        ("hostname", names::dns1123_label),
        ("subdomain", names::dns1123_label),
        ("runtimeClassName", names::dns1123_subdomain),
        ("schedulerName", names::dns1123_subdomain),
    ] {
        if let Some(s) = str_field(spec, k, path, errs).filter(|s| !s.is_empty()) {
            push_msgs(&child(path, k), s, f(s), errs);
        }
    }
    if let Some(a) = int_field(spec, "activeDeadlineSeconds", path, errs)
        && !(1..=i64::from(i32::MAX)).contains(&a)
    {
        errs.push(FieldError::invalid(
            child(path, "activeDeadlineSeconds"),
            a.into(),
            names::inclusive_range_error(1, i64::from(i32::MAX)),
        ));
    }
    check_nonneg(spec, "terminationGracePeriodSeconds", path, errs);
    validate_tolerations(spec, path, errs);
    for (p, s) in each(spec, "imagePullSecrets", path) {
        if get_str(s, "name").is_none_or(str::is_empty) {
            errs.push(FieldError::required(child(&p, "name"), ""));
        }
    }
    for (p, g) in each(spec, "readinessGates", path) {
        let t = get_str(g, "conditionType").unwrap_or("");
        push_msgs(
            &child(&p, "conditionType"),
            t,
            names::qualified_name(t),
            errs,
        );
    }
    for (p, h) in each(spec, "hostAliases", path) {
        let ip = get_str(h, "ip").unwrap_or("");
        if !names::is_ip(ip) {
            errs.push(FieldError::invalid(
                child(&p, "ip"),
                ip.into(),
                names::IP_MSG,
            ));
        }
    }
    if let Some(sc) = get(spec, "securityContext") {
        validate_security_context_ids(sc, &child(path, "securityContext"), errs);
    }
    validate_dns_config(spec, path, errs);
}

fn validate_dns_config(spec: &Value, path: &str, errs: &mut FieldErrors) {
    let p = child(path, "dnsConfig");
    let cfg = get(spec, "dnsConfig");
    if get_str(spec, "dnsPolicy") == Some("None") {
        match cfg {
            None => {
                errs.push(FieldError::required(
                    &p,
                    "must provide `dnsConfig` when `dnsPolicy` is None",
                ));
                return;
            }
            Some(c) if get_array(c, "nameservers").is_empty() => errs.push(FieldError::required(
                child(&p, "nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            )),
            _ => {}
        }
    }
    let Some(cfg) = cfg else { return };
    let ns = get_array(cfg, "nameservers");
    if ns.len() > 3 {
        errs.push(FieldError::invalid(
            child(&p, "nameservers"),
            Value::Array(ns.to_vec()),
            "must not have more than 3 nameservers",
        ));
    }
    for (np, n) in each(cfg, "nameservers", &p) {
        let s = n.as_str().unwrap_or("");
        if !names::is_ip(s) {
            errs.push(FieldError::invalid(np, s.into(), names::IP_MSG));
        }
    }
    if get_array(cfg, "searches").len() > 32 {
        errs.push(FieldError::invalid(
            child(&p, "searches"),
            Value::Array(get_array(cfg, "searches").to_vec()),
            "must not have more than 32 search paths",
        ));
    }
}

/// User and group ids in a (pod or container) security context.
fn validate_security_context_ids(sc: &Value, path: &str, errs: &mut FieldErrors) {
    for k in ["runAsUser", "runAsGroup", "fsGroup"] {
        if let Some(id) = int_field(sc, k, path, errs)
            && !(0..=i64::from(i32::MAX)).contains(&id)
        {
            errs.push(FieldError::invalid(
                child(path, k),
                id.into(),
                names::inclusive_range_error(0, i64::from(i32::MAX)),
            ));
        }
    }
}

pub(crate) fn validate_tolerations(spec: &Value, path: &str, errs: &mut FieldErrors) {
    for (p, t) in each(spec, "tolerations", path) {
        let key = get_str(t, "key").unwrap_or("");
        let op = get_str(t, "operator").unwrap_or("");
        let value = get_str(t, "value").unwrap_or("");
        let effect = get_str(t, "effect").unwrap_or("");
        if !key.is_empty() {
            push_msgs(&child(&p, "key"), key, names::qualified_name(key), errs);
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                child(&p, "operator"),
                op.into(),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if get(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                child(&p, "effect"),
                effect.into(),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "" | "Equal" => push_msgs(
                &child(&p, "operator"),
                value,
                names::label_value(value),
                errs,
            ),
            "Exists" => {
                if !value.is_empty() {
                    errs.push(FieldError::invalid(
                        child(&p, "operator"),
                        t.clone(),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            _ => errs.push(FieldError::not_supported(
                child(&p, "operator"),
                op.into(),
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() {
            check_taint_effect(effect, &child(&p, "effect"), errs);
        }
    }
}

pub(crate) fn check_taint_effect(effect: &str, path: &str, errs: &mut FieldErrors) {
    check_enum_value(
        effect,
        path,
        &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        errs,
    );
}

fn validate_volumes(spec: &Value, path: &str, errs: &mut FieldErrors) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for (p, v) in each(spec, "volumes", path) {
        let name = get_str(v, "name").unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else {
            push_msgs(&child(&p, "name"), name, names::dns1123_label(name), errs);
        }
        if seen.iter().any(|s| s == name) {
            errs.push(FieldError::duplicate(child(&p, "name"), name.into()));
        } else {
            seen.push(name.to_string());
        }
        let mut found = false;
        for src in VOLUME_SOURCES {
            let Some(s) = get(v, src) else { continue };
            let sp = child(&p, src);
            if found {
                errs.push(FieldError::forbidden(
                    sp,
                    "may not specify more than 1 volume type",
                ));
            } else {
                found = true;
                validate_volume_source(src, s, &sp, errs);
            }
        }
        if !found {
            errs.push(FieldError::required(&p, "must specify a volume type"));
        }
    }
    seen
}

fn validate_volume_source(src: &str, s: &Value, path: &str, errs: &mut FieldErrors) {
    if let Some((_, fields)) = VOLUME_REQUIRED.iter().find(|(k, _)| *k == src) {
        for f in *fields {
            if get_str(s, f).is_none_or(str::is_empty) {
                errs.push(FieldError::required(child(path, f), ""));
            }
        }
    }
    check_file_mode(s, "defaultMode", path, errs);
    match src {
        "hostPath" => {
            if let Some(t) = get_str(s, "type")
                && !HOST_PATH_TYPES.contains(&t)
            {
                errs.push(FieldError::not_supported(
                    child(path, "type"),
                    t.into(),
                    HOST_PATH_TYPES,
                ));
            }
        }
        "emptyDir" => check_quantity_nonneg(s, "sizeLimit", path, errs),
        "nfs" => {
            if let Some(np) = get_str(s, "path").filter(|x| !x.is_empty() && !x.starts_with('/')) {
                errs.push(FieldError::invalid(
                    child(path, "path"),
                    np.into(),
                    "must be an absolute path",
                ));
            }
        }
        "secret" | "configMap" => validate_key_to_paths(s, path, errs),
        "downwardAPI" => validate_downward_items(s, path, errs),
        "projected" => validate_projected(s, path, errs),
        _ => {}
    }
}

fn check_file_mode(v: &Value, k: &str, path: &str, errs: &mut FieldErrors) {
    if let Some(m) = int_field(v, k, path, errs)
        && !(0..=0o777).contains(&m)
    {
        errs.push(FieldError::invalid(child(path, k), m.into(), FILE_MODE_MSG));
    }
}

fn validate_key_to_paths(s: &Value, path: &str, errs: &mut FieldErrors) {
    for (p, item) in each(s, "items", path) {
        if get_str(item, "key").is_none_or(str::is_empty) {
            errs.push(FieldError::required(child(&p, "key"), ""));
        }
        validate_item_path(item, &p, errs);
        check_file_mode(item, "mode", &p, errs);
    }
}

fn validate_item_path(item: &Value, p: &str, errs: &mut FieldErrors) {
    let ip = child(p, "path");
    match get_str(item, "path").filter(|x| !x.is_empty()) {
        None => errs.push(FieldError::required(ip, "")),
        Some(x) => {
            if x.starts_with('/') {
                errs.push(FieldError::invalid(
                    &ip,
                    x.into(),
                    "must be a relative path",
                ));
            }
            if x.split('/').any(|seg| seg == "..") {
                errs.push(FieldError::invalid(&ip, x.into(), "must not contain '..'"));
            }
            if x.starts_with("..") {
                errs.push(FieldError::invalid(
                    &ip,
                    x.into(),
                    "must not start with '..'",
                ));
            }
        }
    }
}

fn validate_downward_items(s: &Value, path: &str, errs: &mut FieldErrors) {
    for (p, item) in each(s, "items", path) {
        validate_item_path(item, &p, errs);
        check_file_mode(item, "mode", &p, errs);
        match (get(item, "fieldRef"), get(item, "resourceFieldRef")) {
            (Some(f), None) => {
                validate_field_ref(f, &child(&p, "fieldRef"), VOLUME_FIELD_PATHS, errs)
            }
            (None, Some(r)) => validate_resource_field_ref(r, &child(&p, "resourceFieldRef"), errs),
            (Some(_), Some(_)) => errs.push(FieldError::invalid(
                &p,
                Value::String("resource".into()),
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            )),
            (None, None) => errs.push(FieldError::required(
                &p,
                "one of fieldRef and resourceFieldRef is required",
            )),
        }
    }
}

fn validate_projected(s: &Value, path: &str, errs: &mut FieldErrors) {
    for (p, src) in each(s, "sources", path) {
        let mut n = 0;
        for (k, name_key) in [("secret", "name"), ("configMap", "name")] {
            if let Some(x) = get(src, k) {
                n += 1;
                let kp = child(&p, k);
                if get_str(x, name_key).is_none_or(str::is_empty) {
                    errs.push(FieldError::required(child(&kp, name_key), ""));
                }
                validate_key_to_paths(x, &kp, errs);
            }
        }
        if let Some(x) = get(src, "downwardAPI") {
            n += 1;
            validate_downward_items(x, &child(&p, "downwardAPI"), errs);
        }
        if let Some(x) = get(src, "serviceAccountToken") {
            n += 1;
            let kp = child(&p, "serviceAccountToken");
            if let Some(e) = int_field(x, "expirationSeconds", &kp, errs) {
                if e < 600 {
                    errs.push(FieldError::invalid(
                        child(&kp, "expirationSeconds"),
                        e.into(),
                        "may not specify a duration less than 10 minutes",
                    ));
                } else if e > 1 << 32 {
                    errs.push(FieldError::invalid(
                        child(&kp, "expirationSeconds"),
                        e.into(),
                        "may not specify a duration larger than 2^32 seconds",
                    ));
                }
            }
            if get_str(x, "path").is_none_or(str::is_empty) {
                errs.push(FieldError::required(child(path, "path"), ""));
            }
        }
        if get(src, "clusterTrustBundle").is_some() {
            n += 1;
        }
        if n > 1 {
            errs.push(FieldError::forbidden(
                &p,
                "may not specify more than 1 volume type per source",
            ));
        }
    }
}

struct ContainerCtx<'a> {
    volumes: &'a [String],
    is_pod: bool,
    host_network: bool,
    grace: i64,
}

fn validate_container(
    c: &Value,
    path: &str,
    cc: &ContainerCtx,
    init: bool,
    seen: &mut Vec<String>,
    errs: &mut FieldErrors,
) {
    let name = get_str(c, "name").unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required(child(path, "name"), ""));
    } else {
        push_msgs(&child(path, "name"), name, names::dns1123_label(name), errs);
    }
    if seen.iter().any(|s| s == name) {
        errs.push(FieldError::duplicate(child(path, "name"), name.into()));
    } else {
        seen.push(name.to_string());
    }
    match str_field(c, "image", path, errs) {
        None | Some("") => errs.push(FieldError::required(child(path, "image"), "")),
        // Templates tolerate stray whitespace for compatibility; pods do not.
        Some(img) if cc.is_pod && img.trim() != img => errs.push(FieldError::invalid(
            child(path, "image"),
            img.into(),
            "must not have leading or trailing whitespace",
        )),
        _ => {}
    }
    check_enum(
        c,
        "imagePullPolicy",
        path,
        &["Always", "IfNotPresent", "Never"],
        errs,
    );
    match get_str(c, "terminationMessagePolicy") {
        None | Some("File") | Some("FallbackToLogsOnError") => {}
        Some("") => errs.push(FieldError::required(
            child(path, "terminationMessagePolicy"),
            "must be 'File' or 'FallbackToLogsOnError'",
        )),
        Some(other) => errs.push(FieldError::not_supported(
            child(path, "terminationMessagePolicy"),
            other.into(),
            &["File", "FallbackToLogsOnError"],
        )),
    }
    let sidecar = init && get_str(c, "restartPolicy") == Some("Always");
    if let Some(rp) = get_str(c, "restartPolicy") {
        if !init {
            errs.push(FieldError::forbidden(
                child(path, "restartPolicy"),
                "may not be set for non-init containers",
            ));
        } else if rp != "Always" {
            errs.push(FieldError::not_supported(
                child(path, "restartPolicy"),
                rp.into(),
                &["Always"],
            ));
        }
    }
    validate_ports(c, path, cc.host_network, errs);
    validate_env(c, path, errs);
    validate_volume_mounts(c, path, cc.volumes, errs);
    if let Some(r) = get(c, "resources") {
        validate_resources(r, &child(path, "resources"), errs);
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(p) = get(c, probe) else { continue };
        let pp = child(path, probe);
        if init && !sidecar {
            errs.push(FieldError::forbidden(pp, INIT_ONLY_SIDECAR));
            continue;
        }
        validate_probe(p, &pp, errs);
        if probe != "readinessProbe"
            && let Some(s) = get(p, "successThreshold")
                .and_then(Value::as_i64)
                .filter(|s| *s != 1)
        {
            errs.push(FieldError::invalid(
                child(&pp, "successThreshold"),
                s.into(),
                "must be 1",
            ));
        }
    }
    if let Some(l) = get(c, "lifecycle") {
        let lp = child(path, "lifecycle");
        if init && !sidecar {
            errs.push(FieldError::forbidden(lp, INIT_ONLY_SIDECAR));
        } else {
            for hook in ["postStart", "preStop"] {
                if let Some(h) = get(l, hook) {
                    validate_handler(
                        h,
                        &child(&lp, hook),
                        &["exec", "httpGet", "tcpSocket", "sleep"],
                        cc.grace,
                        errs,
                    );
                }
            }
        }
    }
    if let Some(sc) = get(c, "securityContext") {
        let sp = child(path, "securityContext");
        validate_security_context_ids(sc, &sp, errs);
        if get(sc, "privileged").and_then(Value::as_bool) == Some(true)
            && get(sc, "allowPrivilegeEscalation").and_then(Value::as_bool) == Some(false)
        {
            errs.push(FieldError::invalid(
                sp,
                sc.clone(),
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
    }
}

fn validate_ports(c: &Value, path: &str, host_network: bool, errs: &mut FieldErrors) {
    let mut seen: Vec<&str> = Vec::new();
    for (p, port) in each(c, "ports", path) {
        if let Some(name) = get_str(port, "name").filter(|n| !n.is_empty()) {
            let msgs = names::port_name(name);
            if !msgs.is_empty() {
                push_msgs(&child(&p, "name"), name, msgs, errs);
            } else if seen.contains(&name) {
                errs.push(FieldError::duplicate(child(&p, "name"), name.into()));
            } else {
                seen.push(name);
            }
        }
        let cp = int_field(port, "containerPort", &p, errs).unwrap_or(0);
        if cp == 0 {
            errs.push(FieldError::required(child(&p, "containerPort"), ""));
        } else {
            for m in names::port_num(cp) {
                errs.push(FieldError::invalid(
                    child(&p, "containerPort"),
                    cp.into(),
                    m,
                ));
            }
        }
        let hp = int_field(port, "hostPort", &p, errs).unwrap_or(0);
        if hp != 0 {
            for m in names::port_num(hp) {
                errs.push(FieldError::invalid(child(&p, "hostPort"), hp.into(), m));
            }
            if host_network && hp != cp {
                errs.push(FieldError::invalid(
                    child(&p, "hostPort"),
                    hp.into(),
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
        check_enum(port, "protocol", &p, PROTOCOLS, errs);
    }
}

fn validate_env(c: &Value, path: &str, errs: &mut FieldErrors) {
    for (p, ev) in each(c, "env", path) {
        let name = get_str(ev, "name").unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else {
            push_msgs(&child(&p, "name"), name, names::env_var_name(name), errs);
        }
        let Some(vf) = get(ev, "valueFrom") else {
            continue;
        };
        let vp = child(&p, "valueFrom");
        let mut n = 0;
        if let Some(f) = get(vf, "fieldRef") {
            n += 1;
            validate_field_ref(f, &child(&vp, "fieldRef"), ENV_FIELD_PATHS, errs);
        }
        if let Some(r) = get(vf, "resourceFieldRef") {
            n += 1;
            validate_resource_field_ref(r, &child(&vp, "resourceFieldRef"), errs);
        }
        for k in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(r) = get(vf, k) {
                n += 1;
                let kp = child(&vp, k);
                let rn = get_str(r, "name").unwrap_or("");
                push_msgs(&child(&kp, "name"), rn, names::dns1123_subdomain(rn), errs);
                match get_str(r, "key").filter(|x| !x.is_empty()) {
                    None => errs.push(FieldError::required(child(&kp, "key"), "")),
                    Some(key) => {
                        push_msgs(&child(&kp, "key"), key, names::config_map_key(key), errs)
                    }
                }
            }
        }
        if get(vf, "fileKeyRef").is_some() {
            n += 1;
        }
        if get_str(ev, "value").is_some_and(|v| !v.is_empty()) {
            errs.push(FieldError::invalid(
                &vp,
                "".into(),
                "may not be specified when `value` is not empty",
            ));
        }
        if n == 0 {
            errs.push(FieldError::invalid(
                &vp,
                "".into(),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if n > 1 {
            errs.push(FieldError::invalid(
                &vp,
                "".into(),
                "may not have more than one field specified at a time",
            ));
        }
    }
    for (p, ef) in each(c, "envFrom", path) {
        let mut n = 0;
        for k in ["configMapRef", "secretRef"] {
            if let Some(r) = get(ef, k) {
                n += 1;
                let rn = get_str(r, "name").unwrap_or("");
                push_msgs(
                    &child(&child(&p, k), "name"),
                    rn,
                    names::dns1123_subdomain(rn),
                    errs,
                );
            }
        }
        if n == 0 {
            errs.push(FieldError::invalid(
                &p,
                "".into(),
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if n > 1 {
            errs.push(FieldError::invalid(
                &p,
                "".into(),
                "may not have more than one field specified at a time",
            ));
        }
        if let Some(prefix) = get_str(ef, "prefix").filter(|x| !x.is_empty()) {
            push_msgs(
                &child(&p, "prefix"),
                prefix,
                names::env_var_name(prefix),
                errs,
            );
        }
    }
}

fn validate_field_ref(f: &Value, path: &str, allowed: &[&str], errs: &mut FieldErrors) {
    if get_str(f, "apiVersion") == Some("") {
        errs.push(FieldError::required(child(path, "apiVersion"), ""));
    }
    let fp = get_str(f, "fieldPath").unwrap_or("");
    let pp = child(path, "fieldPath");
    if fp.is_empty() {
        errs.push(FieldError::required(pp, ""));
        return;
    }
    // `metadata.labels['key']` / `metadata.annotations['key']` pick one entry.
    let subscript = ["metadata.labels['", "metadata.annotations['"]
        .iter()
        .find_map(|pre| fp.strip_prefix(pre))
        .and_then(|rest| rest.strip_suffix("']"));
    match subscript {
        Some(k) => push_msgs(&pp, k, names::qualified_name(&k.to_lowercase()), errs),
        None if allowed.contains(&fp) => {}
        None => errs.push(FieldError::not_supported(pp, fp.into(), allowed)),
    }
}

fn validate_resource_field_ref(r: &Value, path: &str, errs: &mut FieldErrors) {
    let res = get_str(r, "resource").unwrap_or("");
    let rp = child(path, "resource");
    if res.is_empty() {
        errs.push(FieldError::required(rp, ""));
    } else if !RESOURCE_FIELD_REFS.contains(&res)
        && !res.starts_with("limits.hugepages-")
        && !res.starts_with("requests.hugepages-")
    {
        errs.push(FieldError::not_supported(
            rp,
            res.into(),
            RESOURCE_FIELD_REFS,
        ));
    }
    check_quantity_nonneg(r, "divisor", path, errs);
}

fn validate_volume_mounts(c: &Value, path: &str, volumes: &[String], errs: &mut FieldErrors) {
    let mut mount_points: Vec<&str> = Vec::new();
    for (p, m) in each(c, "volumeMounts", path) {
        let name = get_str(m, "name").unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        }
        if !volumes.iter().any(|v| v == name) {
            errs.push(FieldError::new(
                FieldErrorKind::NotFound,
                child(&p, "name"),
                Some(name.into()),
                "",
            ));
        }
        let mp = get_str(m, "mountPath").unwrap_or("");
        if mp.is_empty() {
            errs.push(FieldError::required(child(&p, "mountPath"), ""));
        }
        if mount_points.contains(&mp) {
            errs.push(FieldError::invalid(
                child(&p, "mountPath"),
                mp.into(),
                "must be unique",
            ));
        }
        mount_points.push(mp);
        if let Some(sub) = get_str(m, "subPath").filter(|s| !s.is_empty()) {
            let sp = child(&p, "subPath");
            if sub.starts_with('/') {
                errs.push(FieldError::invalid(
                    &sp,
                    sub.into(),
                    "must be a relative path",
                ));
            }
            if sub.split('/').any(|s| s == "..") {
                errs.push(FieldError::invalid(
                    &sp,
                    sub.into(),
                    "must not contain '..'",
                ));
            }
        }
        check_enum(
            m,
            "mountPropagation",
            &p,
            &["Bidirectional", "HostToContainer", "None"],
            errs,
        );
    }
}

/// A quantity field that must parse and not be negative.
fn check_quantity_nonneg(v: &Value, k: &str, path: &str, errs: &mut FieldErrors) {
    if let Some(q) = get(v, k) {
        parse_nonneg_quantity(q, &child(path, k), errs);
    }
}

fn parse_nonneg_quantity(raw: &Value, path: &str, errs: &mut FieldErrors) -> Option<Quantity> {
    match quantity_from_value(raw) {
        Ok(q) if q.is_negative() => {
            errs.push(FieldError::invalid(
                path,
                q.to_string().into(),
                super::NEGATIVE_MSG,
            ));
            None
        }
        Ok(q) => Some(q),
        Err(e) => {
            errs.push(FieldError::invalid(path, raw.clone(), e.to_string()));
            None
        }
    }
}

fn is_standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

/// Native resources may be requested below their limit; extended ones and
/// huge pages must request exactly their limit.
fn overcommit_allowed(name: &str) -> bool {
    let native = !name.contains('/') || name.contains("kubernetes.io/");
    native && !name.starts_with("hugepages-")
}

/// Resources counted in whole units.
fn is_integer_resource(name: &str) -> bool {
    !overcommit_allowed(name) && !name.starts_with("hugepages-")
}

pub(crate) fn validate_resources(r: &Value, path: &str, errs: &mut FieldErrors) {
    let lim_path = child(path, "limits");
    let req_path = child(path, "requests");
    let mut limits: Vec<(&str, Quantity)> = Vec::new();
    let check = |name: &str, raw: &Value, p: &str, errs: &mut FieldErrors| -> Option<Quantity> {
        push_msgs(p, name, names::qualified_name(name), errs);
        if !name.contains('/') && !is_standard_container_resource(name) {
            errs.push(FieldError::invalid(
                p,
                name.into(),
                "must be a standard resource for containers",
            ));
        }
        let q = parse_nonneg_quantity(raw, p, errs)?;
        if is_integer_resource(name) && q.nanos() % 1_000_000_000 != 0 {
            errs.push(FieldError::invalid(
                p,
                q.to_string().into(),
                "must be an integer",
            ));
        }
        Some(q)
    };
    for (name, raw) in get_map(r, "limits").into_iter().flatten() {
        if let Some(q) = check(name, raw, &key(&lim_path, name), errs) {
            limits.push((name, q));
        }
    }
    for (name, raw) in get_map(r, "requests").into_iter().flatten() {
        let Some(q) = check(name, raw, &key(&req_path, name), errs) else {
            continue;
        };
        match limits.iter().find(|(n, _)| n == name) {
            Some((_, lim)) if q != *lim && !overcommit_allowed(name) => {
                errs.push(FieldError::invalid(
                    &req_path,
                    q.to_string().into(),
                    format!("must be equal to {name} limit of {lim}"),
                ))
            }
            Some((_, lim)) if q > *lim => errs.push(FieldError::invalid(
                &req_path,
                q.to_string().into(),
                format!("must be less than or equal to {name} limit of {lim}"),
            )),
            None if !overcommit_allowed(name) => errs.push(FieldError::required(
                &lim_path,
                "Limit must be set for non overcommitable resources",
            )),
            _ => {}
        }
    }
}

fn validate_probe(p: &Value, path: &str, errs: &mut FieldErrors) {
    validate_handler(p, path, &["exec", "httpGet", "tcpSocket", "grpc"], 30, errs);
    for k in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        check_nonneg(p, k, path, errs);
    }
    if let Some(t) = int_field(p, "terminationGracePeriodSeconds", path, errs)
        && t <= 0
    {
        errs.push(FieldError::invalid(
            child(path, "terminationGracePeriodSeconds"),
            t.into(),
            super::NOT_POSITIVE_MSG,
        ));
    }
}

/// Probe/lifecycle handlers: exactly one of `kinds`.
fn validate_handler(h: &Value, path: &str, kinds: &[&str], grace: i64, errs: &mut FieldErrors) {
    let mut found = false;
    for k in kinds {
        let Some(x) = get(h, k) else { continue };
        let kp = child(path, k);
        if found {
            errs.push(FieldError::forbidden(
                kp,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        found = true;
        match *k {
            "exec" if get_array(x, "command").is_empty() => {
                errs.push(FieldError::required(child(&kp, "command"), ""));
            }
            "httpGet" => {
                if get_str(x, "path") == Some("") {
                    errs.push(FieldError::required(child(&kp, "path"), ""));
                }
                validate_port_num_or_name(get(x, "port"), &child(&kp, "port"), errs);
                if let Some(s) = get_str(x, "scheme")
                    && s != "HTTP"
                    && s != "HTTPS"
                {
                    errs.push(FieldError::not_supported(
                        child(&kp, "scheme"),
                        s.into(),
                        &["HTTP", "HTTPS"],
                    ));
                }
            }
            "tcpSocket" => validate_port_num_or_name(get(x, "port"), &child(&kp, "port"), errs),
            "grpc" => {
                let port = int_field(x, "port", &kp, errs).unwrap_or(0);
                for m in names::port_num(port) {
                    errs.push(FieldError::invalid(child(&kp, "port"), port.into(), m));
                }
            }
            "sleep" => {
                let s = int_field(x, "seconds", &kp, errs).unwrap_or(0);
                if s < 0 || s > grace {
                    errs.push(FieldError::invalid(
                        child(&kp, "seconds"),
                        s.into(),
                        format!("must be non-negative and less than terminationGracePeriodSeconds ({grace})"),
                    ));
                }
            }
            _ => {}
        }
    }
    if !found {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
}

/// An IntOrString port: a number 1-65535 or an IANA service name.
pub(crate) fn validate_port_num_or_name(v: Option<&Value>, path: &str, errs: &mut FieldErrors) {
    match v {
        None => errs.push(FieldError::required(path, "")),
        Some(Value::String(s)) => push_msgs(path, s, names::port_name(s), errs),
        Some(x) => {
            let n = x.as_i64().unwrap_or(0);
            for m in names::port_num(n) {
                errs.push(FieldError::invalid(path, x.clone(), m));
            }
        }
    }
}

// ---- update ---------------------------------------------------------------

const POD_UPDATE_MSG: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

pub(crate) fn validate_pod_update(new: &Value, old: &Value, errs: &mut FieldErrors) {
    let empty = Value::Object(Map::new());
    let ns = get(new, "spec").unwrap_or(&empty);
    let os = get(old, "spec").unwrap_or(&empty);
    let mut munged = ns.clone();
    // Images may change: take the old ones so they compare equal.
    for list in ["containers", "initContainers"] {
        let old_list = get_array(os, list);
        if let Some(arr) = munged.get_mut(list).and_then(Value::as_array_mut)
            && arr.len() == old_list.len()
        {
            for (c, oc) in arr.iter_mut().zip(old_list) {
                if let (Some(obj), Some(img)) = (c.as_object_mut(), oc.get("image")) {
                    obj.insert("image".into(), img.clone());
                }
            }
        }
    }
    let restore = |k: &str, munged: &mut Value| {
        if let Some(m) = munged.as_object_mut() {
            match os.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
    };
    // activeDeadlineSeconds may be set or lowered, never raised or removed.
    let new_ads = get(ns, "activeDeadlineSeconds").and_then(Value::as_i64);
    let old_ads = get(os, "activeDeadlineSeconds").and_then(Value::as_i64);
    match (new_ads, old_ads) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            n.into(),
            names::inclusive_range_error(0, i64::from(i32::MAX)),
        )),
        (Some(n), Some(o)) if o < n => errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            n.into(),
            "must be less than or equal to previous value",
        )),
        (None, Some(_)) => errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    restore("activeDeadlineSeconds", &mut munged);
    let new_grace = get(ns, "terminationGracePeriodSeconds").and_then(Value::as_i64);
    let old_grace = get(os, "terminationGracePeriodSeconds").and_then(Value::as_i64);
    if new_grace == Some(1) && old_grace.is_some_and(|g| g < 0) {
        restore("terminationGracePeriodSeconds", &mut munged);
    }
    // Tolerations: existing ones stay (tolerationSeconds aside), new ones may be added.
    let strip = |t: &Value| {
        let mut t = t.clone();
        if let Some(o) = t.as_object_mut() {
            o.remove("tolerationSeconds");
        }
        t
    };
    let new_tols: Vec<Value> = get_array(ns, "tolerations").iter().map(strip).collect();
    for ot in get_array(os, "tolerations") {
        if !new_tols.contains(&strip(ot)) {
            errs.push(FieldError::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    restore("tolerations", &mut munged);
    // Scheduling gates may only be removed.
    let old_gates = get_array(os, "schedulingGates");
    let new_gates = get_array(ns, "schedulingGates");
    if new_gates.iter().all(|g| old_gates.contains(g)) {
        restore("schedulingGates", &mut munged);
    } else {
        errs.push(FieldError::forbidden(
            "spec.schedulingGates",
            "only deletion is allowed, but found new scheduling gate",
        ));
        restore("schedulingGates", &mut munged);
    }
    // Ephemeral containers change through their own subresource.
    restore("ephemeralContainers", &mut munged);
    if &munged != os {
        let fields = differing_fields(&munged, os);
        errs.push(FieldError::forbidden(
            "spec",
            format!("{POD_UPDATE_MSG}\n  changed: {}", fields.join(", ")),
        ));
    }
}

/// Top-level spec keys that differ, to say what was changed.
fn differing_fields(a: &Value, b: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["spec".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("spec.{k}"))
        .collect()
}
