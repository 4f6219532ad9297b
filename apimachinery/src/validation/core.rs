//! Core-group kinds without pod templates (Service, ConfigMap, Secret,
//! Namespace, Node, PersistentVolumeClaim), plus Lease, Ingress and RBAC.

use serde_json::{Map, Value};

use super::meta::{too_long, validate_label_selector, validate_labels};
use super::pod::{check_taint_effect, validate_port_num_or_name};
use super::quantity::quantity_from_value;
use super::{
    Ctx, NEGATIVE_MSG, base64, check_enum, check_enum_value, check_positive, each, get, get_array,
    get_bool, get_map, get_path, get_str, immutable, int_field, names, push_msgs, str_field,
};
use crate::field::{FieldError, FieldErrorKind, FieldErrors, child, index, key};

/// ConfigMaps and Secrets hold at most 1 MiB of data.
const MAX_DATA_SIZE: usize = 1024 * 1024;
const IMMUTABLE_SET_MSG: &str = "field is immutable when `immutable` is set";
const REDACTED: &str = "<secret contents redacted>";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const KUBELET_PORT: i64 = 10250;
const MAX_AFFINITY_SECONDS: i64 = 86400;

fn spec_of(obj: &Value) -> &Value {
    static EMPTY: Value = Value::Null;
    get(obj, "spec").unwrap_or(&EMPTY)
}

fn strs(v: &[Value]) -> Vec<&str> {
    v.iter().filter_map(Value::as_str).collect()
}

fn str_list_value(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::String((*s).to_string())).collect())
}

// ---- Service ----------------------------------------------------------------

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// `clusterIPs`, or `[clusterIP]` when only that is set: the registry keeps
/// the two in sync before validation, so either spelling is accepted.
fn cluster_ips(spec: &Value) -> Vec<&str> {
    let list = strs(get_array(spec, "clusterIPs"));
    if !list.is_empty() {
        return list;
    }
    match get_str(spec, "clusterIP") {
        Some(ip) if !ip.is_empty() => vec![ip],
        _ => Vec::new(),
    }
}

fn service_type(spec: &Value) -> &str {
    get_str(spec, "type").unwrap_or("ClusterIP")
}

fn is_headless(spec: &Value) -> bool {
    cluster_ips(spec).first() == Some(&"None")
}

fn externally_accessible(spec: &Value) -> bool {
    match service_type(spec) {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => !get_array(spec, "externalIPs").is_empty(),
        _ => false,
    }
}

pub(crate) fn validate_service(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let spec = spec_of(obj);
    let ty = service_type(spec);
    let headless = is_headless(spec);
    let ports = get_array(spec, "ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    match ty {
        "LoadBalancer" | "NodePort" => {
            if headless {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    "None".into(),
                    format!("may not be set to 'None' for {ty} services"),
                ));
            }
            if ty == "LoadBalancer" {
                for (i, p) in ports.iter().enumerate() {
                    if get(p, "port").and_then(Value::as_i64) == Some(KUBELET_PORT) {
                        errs.push(FieldError::invalid(
                            index("spec.ports", i),
                            KUBELET_PORT.into(),
                            format!("may not expose port {KUBELET_PORT} externally since it is used by kubelet"),
                        ));
                    }
                }
            }
        }
        "ExternalName" => {
            if !cluster_ips(spec).is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            if !get_array(spec, "ipFamilies").is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                ));
            }
            if get(spec, "ipFamilyPolicy").is_some() {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                ));
            }
            // A CNAME may end in a dot to mark it fully qualified.
            let cname = get_str(spec, "externalName").unwrap_or("");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            } else {
                push_msgs(
                    "spec.externalName",
                    cname,
                    names::dns1123_subdomain(cname),
                    errs,
                );
            }
        }
        _ => {}
    }
    validate_service_ports(spec, ports, headless, errs);
    if let Some(sel) = get_map(spec, "selector") {
        validate_labels(Some(sel), "spec.selector", errs);
    }
    check_enum(spec, "sessionAffinity", "spec", &["ClientIP", "None"], errs);
    validate_session_affinity_config(spec, errs);
    check_enum(spec, "type", "spec", SERVICE_TYPES, errs);
    for (p, ip) in each(spec, "externalIPs", "spec") {
        let s = ip.as_str().unwrap_or("");
        if !names::is_ip(s) {
            errs.push(FieldError::invalid(p, s.into(), names::IP_MSG));
        }
    }
    if !get_array(spec, "loadBalancerSourceRanges").is_empty() {
        if ty != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                "spec.loadBalancerSourceRanges",
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (p, r) in each(spec, "loadBalancerSourceRanges", "spec") {
            let s = r.as_str().unwrap_or("");
            if !names::is_cidr(s.trim()) {
                errs.push(FieldError::invalid(
                    p,
                    s.into(),
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ));
            }
        }
    }
    if ty == "ClusterIP" {
        for (p, port) in each(spec, "ports", "spec") {
            if get(port, "nodePort")
                .and_then(Value::as_i64)
                .is_some_and(|n| n != 0)
            {
                errs.push(FieldError::forbidden(
                    child(&p, "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    validate_traffic_policies(spec, errs);
    if ty != "ExternalName" {
        validate_cluster_ips(spec, errs);
    }
}

fn validate_service_ports(spec: &Value, ports: &[Value], headless: bool, errs: &mut FieldErrors) {
    let _ = headless; // v1 tolerates any targetPort on headless services
    let require_name = ports.len() > 1;
    let mut names_seen: Vec<&str> = Vec::new();
    let mut port_keys: Vec<(i64, &str)> = Vec::new();
    let mut node_port_keys: Vec<(i64, &str)> = Vec::new();
    for (p, sp) in each(spec, "ports", "spec") {
        let name = get_str(sp, "name").unwrap_or("");
        if require_name && name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else if !name.is_empty() {
            push_msgs(&child(&p, "name"), name, names::dns1123_label(name), errs);
            if names_seen.contains(&name) {
                errs.push(FieldError::duplicate(child(&p, "name"), name.into()));
            } else {
                names_seen.push(name);
            }
        }
        let port = int_field(sp, "port", &p, errs).unwrap_or(0);
        for m in names::port_num(port) {
            errs.push(FieldError::invalid(child(&p, "port"), port.into(), m));
        }
        check_enum(sp, "protocol", &p, PROTOCOLS, errs);
        // Absent targetPort is defaulted to `port`.
        if let Some(tp) = get(sp, "targetPort") {
            validate_port_num_or_name(Some(tp), &child(&p, "targetPort"), errs);
        }
        if let Some(ap) = get_str(sp, "appProtocol") {
            push_msgs(
                &child(&p, "appProtocol"),
                ap,
                names::qualified_name(ap),
                errs,
            );
        }
        let proto = get_str(sp, "protocol").unwrap_or("TCP");
        if port_keys.contains(&(port, proto)) {
            errs.push(FieldError::duplicate(
                p.clone(),
                serde_json::json!({"port": port, "protocol": proto}),
            ));
        } else {
            port_keys.push((port, proto));
        }
        if let Some(np) = get(sp, "nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            if node_port_keys.contains(&(np, proto)) {
                errs.push(FieldError::duplicate(child(&p, "nodePort"), np.into()));
            } else {
                node_port_keys.push((np, proto));
            }
        }
    }
}

fn validate_session_affinity_config(spec: &Value, errs: &mut FieldErrors) {
    let Some(cfg) = get(spec, "sessionAffinityConfig") else {
        return;
    };
    match get_str(spec, "sessionAffinity").unwrap_or("None") {
        "ClientIP" => {
            let p = "spec.sessionAffinityConfig.clientIP.timeoutSeconds";
            match get_path(cfg, "clientIP.timeoutSeconds") {
                None => errs.push(FieldError::required(p, "")),
                Some(t) => {
                    let n = t.as_i64().unwrap_or(0);
                    if n <= 0 || n > MAX_AFFINITY_SECONDS {
                        errs.push(FieldError::invalid(
                            p,
                            t.clone(),
                            format!("must be greater than 0 and less than {MAX_AFFINITY_SECONDS}"),
                        ));
                    }
                }
            }
        }
        other => errs.push(FieldError::invalid(
            "spec.sessionAffinityConfig",
            cfg.clone(),
            format!("must not be set when session affinity is {other}"),
        )),
    }
}

fn validate_traffic_policies(spec: &Value, errs: &mut FieldErrors) {
    match get_str(spec, "externalTrafficPolicy") {
        Some(etp) if !externally_accessible(spec) => errs.push(FieldError::invalid(
            "spec.externalTrafficPolicy",
            etp.into(),
            "may only be set for externally-accessible services",
        )),
        Some(etp) => check_enum_value(
            etp,
            "spec.externalTrafficPolicy",
            &["Cluster", "Local"],
            errs,
        ),
        None => {}
    }
    let needs_health_check = service_type(spec) == "LoadBalancer"
        && get_str(spec, "externalTrafficPolicy") == Some("Local");
    if let Some(h) = get(spec, "healthCheckNodePort")
        .and_then(Value::as_i64)
        .filter(|h| *h != 0)
    {
        if !needs_health_check {
            errs.push(FieldError::invalid(
                "spec.healthCheckNodePort",
                h.into(),
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        } else {
            for m in names::port_num(h) {
                errs.push(FieldError::invalid("spec.healthCheckNodePort", h.into(), m));
            }
        }
    }
    check_enum(
        spec,
        "internalTrafficPolicy",
        "spec",
        &["Cluster", "Local"],
        errs,
    );
}

fn validate_cluster_ips(spec: &Value, errs: &mut FieldErrors) {
    let ips = cluster_ips(spec);
    let ips_value = str_list_value(&ips);
    if let (Some(ip), Some(first)) = (
        get_str(spec, "clusterIP").filter(|s| !s.is_empty()),
        ips.first(),
    ) && ip != *first
    {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            ips_value.clone(),
            "first value must match `clusterIP`",
        ));
    }
    let families = strs(get_array(spec, "ipFamilies"));
    let mut seen: Vec<&str> = Vec::new();
    for (i, f) in families.iter().enumerate() {
        let p = index("spec.ipFamilies", i);
        if !["IPv4", "IPv6"].contains(f) {
            errs.push(FieldError::not_supported(
                &p,
                (*f).into(),
                &["IPv4", "IPv6"],
            ));
        }
        if seen.contains(f) {
            errs.push(FieldError::duplicate(p, (*f).into()));
        }
        seen.push(f);
    }
    check_enum(
        spec,
        "ipFamilyPolicy",
        "spec",
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
        errs,
    );
    let mut bad = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && *ip == "None" {
            if ips.len() > 1 {
                bad = true;
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    ips_value.clone(),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        if !names::is_ip(ip) {
            bad = true;
            errs.push(FieldError::invalid(
                index("spec.clusterIPs", i),
                (*ip).into(),
                names::IP_MSG,
            ));
        }
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            ips_value.clone(),
            "may only hold up to 2 values",
        ));
    }
    if bad {
        return;
    }
    if ips.len() == 2 && names::ip_family(ips[0]) == names::ip_family(ips[1]) {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            ips_value,
            "may specify no more than one IP for each IP family",
        ));
    }
    if ips.first() != Some(&"None") {
        for (i, (ip, fam)) in ips.iter().zip(&families).enumerate() {
            let want = match *fam {
                "IPv4" => 4,
                "IPv6" => 6,
                _ => continue,
            };
            if names::ip_family(ip) != Some(want) {
                errs.push(FieldError::invalid(
                    index("spec.clusterIPs", i),
                    (*ip).into(),
                    format!("expected an {fam} value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
}

pub(crate) fn validate_service_update(new: &Value, old: &Value, errs: &mut FieldErrors) {
    let (ns, os) = (spec_of(new), spec_of(old));
    if service_type(ns) == "ExternalName" || service_type(os) == "ExternalName" {
        return;
    }
    if is_headless(ns) && is_headless(os) {
        return;
    }
    let (new_ips, old_ips) = (cluster_ips(ns), cluster_ips(os));
    // An update that leaves the IPs out keeps the allocated ones (the
    // registry copies them over, as upstream's strategy does).
    if new_ips.is_empty() && get(ns, "clusterIP").is_none() {
        return;
    }
    let value = str_list_value(&new_ips);
    let changed = || {
        FieldError::invalid(
            "spec.clusterIPs[0]",
            value.clone(),
            "may not change once set",
        )
    };
    if new_ips.len() == old_ips.len() {
        for (i, (n, o)) in new_ips.iter().zip(&old_ips).enumerate() {
            if n != o {
                errs.push(FieldError::invalid(
                    index("spec.clusterIPs", i),
                    value.clone(),
                    "may not change once set",
                ));
            }
        }
    } else if new_ips.len() < old_ips.len() {
        if new_ips.is_empty() {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                value.clone(),
                "primary clusterIP can not be unset",
            ));
        } else if new_ips[0] != old_ips[0] {
            errs.push(changed());
        }
        if new_ips.len() == 1 && get_str(ns, "ipFamilyPolicy") != Some("SingleStack") {
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                get(ns, "ipFamilyPolicy").cloned().unwrap_or(Value::Null),
                "must be set to 'SingleStack' when releasing the secondary clusterIP",
            ));
        }
    } else if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
        errs.push(changed());
    }
}

// ---- ConfigMap / Secret -----------------------------------------------------

/// Keys of a data map; values counted into `size`.
fn validate_data_keys(
    data: Option<&Map<String, Value>>,
    path: &str,
    other: Option<(&Map<String, Value>, &str)>,
    errs: &mut FieldErrors,
) {
    for k in data.into_iter().flat_map(Map::keys) {
        let p = key(path, k);
        push_msgs(&p, k, names::config_map_key(k), errs);
        if let Some((o, oname)) = other
            && o.contains_key(k)
        {
            errs.push(FieldError::invalid(
                &p,
                k.as_str().into(),
                format!("duplicate of key present in {oname}"),
            ));
        }
    }
}

/// Size of a map of base64 values; undecodable ones are reported (without
/// echoing the secret) and counted by their text length.
fn base64_data_size(
    data: Option<&Map<String, Value>>,
    path: &str,
    redact: bool,
    errs: &mut FieldErrors,
) -> usize {
    let mut size = 0;
    for (k, v) in data.into_iter().flatten() {
        let p = key(path, k);
        match v.as_str() {
            Some(s) => match base64::decode(s) {
                Ok(b) => size += b.len(),
                Err(e) => {
                    let shown = if redact { REDACTED.into() } else { v.clone() };
                    errs.push(FieldError::invalid(p, shown, e.to_string()));
                    size += s.len();
                }
            },
            None => errs.push(FieldError::invalid(
                p,
                Value::Null,
                "must be a base64-encoded string",
            )),
        }
    }
    size
}

pub(crate) fn validate_config_map(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let data = get_map(obj, "data");
    let binary = get_map(obj, "binaryData");
    validate_data_keys(data, "data", binary.map(|b| (b, "binaryData")), errs);
    validate_data_keys(binary, "binaryData", data.map(|d| (d, "data")), errs);
    let mut size = 0;
    for (k, v) in data.into_iter().flatten() {
        match v.as_str() {
            Some(s) => size += s.len(),
            None => errs.push(FieldError::invalid(
                key("data", k),
                v.clone(),
                "must be a string",
            )),
        }
    }
    size += base64_data_size(binary, "binaryData", false, errs);
    if size > MAX_DATA_SIZE {
        // Upstream reports the whole object with an empty path.
        errs.push(too_long("", MAX_DATA_SIZE));
    }
}

/// Shared `immutable: true` rule: once set, it stays and the data is frozen.
fn frozen_data(new: &Value, old: &Value, fields: &[&str], errs: &mut FieldErrors) {
    if !get_bool(old, "immutable") {
        return;
    }
    if !get_bool(new, "immutable") {
        errs.push(FieldError::forbidden("immutable", IMMUTABLE_SET_MSG));
    }
    let empty = Map::new();
    for f in fields {
        // Absent and empty maps are the same data.
        if get_map(new, f).unwrap_or(&empty) != get_map(old, f).unwrap_or(&empty) {
            errs.push(FieldError::forbidden(*f, IMMUTABLE_SET_MSG));
        }
    }
}

pub(crate) fn validate_config_map_update(new: &Value, old: &Value, errs: &mut FieldErrors) {
    frozen_data(new, old, &["data", "binaryData"], errs);
}

pub(crate) fn validate_secret(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let data = get_map(obj, "data");
    validate_data_keys(data, "data", None, errs);
    // stringData is write-only and merged into data before storage; check
    // its keys too in case a caller validates before merging.
    validate_data_keys(get_map(obj, "stringData"), "stringData", None, errs);
    let size = base64_data_size(data, "data", true, errs);
    if size > MAX_DATA_SIZE {
        errs.push(too_long("data", MAX_DATA_SIZE));
    }
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let decoded = |k: &str| -> Option<Vec<u8>> {
        data.and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .and_then(|s| base64::decode(s).ok())
    };
    let ty = get_str(obj, "type").unwrap_or("Opaque");
    match ty {
        "kubernetes.io/service-account-token" => {
            let sa = get_path(obj, "metadata.annotations")
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if sa.is_empty() {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
            let k = if ty == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            if !has(k) {
                errs.push(FieldError::required(key("data", k), ""));
            } else if let Some(bytes) = decoded(k) {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(Value::Object(_)) => {}
                    Ok(_) => errs.push(FieldError::invalid(key("data", k), REDACTED.into(), "must be a JSON object")),
                    Err(e) => errs.push(FieldError::invalid(key("data", k), REDACTED.into(), e.to_string())),
                }
            }
        }
        "kubernetes.io/basic-auth"
            // Either may be empty, but one of the keys must be present.
            if !has("username") && !has("password") => {
                errs.push(FieldError::required("data[username]", ""));
                errs.push(FieldError::required("data[password]", ""));
            }
        "kubernetes.io/ssh-auth"
            if decoded("ssh-privatekey").is_none_or(|b| b.is_empty()) => {
                errs.push(FieldError::required("data[ssh-privatekey]", ""));
            }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(FieldError::required(key("data", k), ""));
                }
            }
        }
        _ => {}
    }
}

pub(crate) fn validate_secret_update(new: &Value, old: &Value, errs: &mut FieldErrors) {
    // An absent type means the default one.
    let ty = |v: &Value| {
        Some(Value::String(
            get_str(v, "type").unwrap_or("Opaque").to_string(),
        ))
    };
    immutable(ty(new).as_ref(), ty(old).as_ref(), "type", errs);
    frozen_data(new, old, &["data"], errs);
}

// ---- Namespace ----------------------------------------------------------------

const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

pub(crate) fn validate_namespace(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    for f in strs(get_array(spec_of(obj), "finalizers")) {
        push_msgs("spec.finalizers", f, names::qualified_name(f), errs);
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
            errs.push(FieldError::invalid(
                "spec.finalizers",
                f.into(),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

// ---- Node -----------------------------------------------------------------------

const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// `podCIDRs`, or `[podCIDR]` when only the singular field is set.
fn pod_cidrs(spec: &Value) -> Vec<&str> {
    let list = strs(get_array(spec, "podCIDRs"));
    if !list.is_empty() {
        return list;
    }
    match get_str(spec, "podCIDR") {
        Some(c) if !c.is_empty() => vec![c],
        _ => Vec::new(),
    }
}

pub(crate) fn validate_node(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let spec = spec_of(obj);
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (p, t) in each(spec, "taints", "spec") {
        let k = get_str(t, "key").unwrap_or("");
        push_msgs(&child(&p, "key"), k, names::qualified_name(k), errs);
        if let Some(v) = get_str(t, "value") {
            push_msgs(&child(&p, "value"), v, names::label_value(v), errs);
        }
        let effect = get_str(t, "effect").unwrap_or("");
        check_taint_effect(effect, &child(&p, "effect"), errs);
        if seen.contains(&(k, effect)) {
            errs.push(FieldError::new(
                FieldErrorKind::Duplicate,
                &p,
                Some(t.clone()),
                "taints must be unique by key and effect pair",
            ));
        } else {
            seen.push((k, effect));
        }
    }
    let cidrs = pod_cidrs(spec);
    for (i, c) in cidrs.iter().enumerate() {
        if !names::is_cidr(c) {
            errs.push(FieldError::invalid(
                index("spec.podCIDRs", i),
                (*c).into(),
                CIDR_MSG,
            ));
        }
    }
    if cidrs.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.podCIDRs",
            str_list_value(&cidrs),
            "may specify no more than one CIDR for each IP family",
        ));
    } else if cidrs.len() == 2 {
        let fam = |c: &str| c.split_once('/').and_then(|(ip, _)| names::ip_family(ip));
        if fam(cidrs[0]).is_some() && fam(cidrs[0]) == fam(cidrs[1]) {
            errs.push(FieldError::invalid(
                "spec.podCIDRs",
                str_list_value(&cidrs),
                "may specify no more than one CIDR for each IP family",
            ));
        }
    }
    let status = get(obj, "status").unwrap_or(&Value::Null);
    for f in ["capacity", "allocatable"] {
        for (name, q) in get_map(status, f).into_iter().flatten() {
            let p = key(&child("status", f), name);
            match quantity_from_value(q) {
                Ok(x) if x.is_negative() => {
                    errs.push(FieldError::invalid(p, q.clone(), NEGATIVE_MSG))
                }
                Ok(_) => {}
                Err(e) => errs.push(FieldError::invalid(p, q.clone(), e.to_string())),
            }
        }
    }
}

/// Spec fields a node update may change freely.
const NODE_MUTABLE_SPEC: &[&str] = &[
    "taints",
    "unschedulable",
    "configSource",
    "podCIDR",
    "podCIDRs",
    "providerID",
];

pub(crate) fn validate_node_update(new: &Value, old: &Value, errs: &mut FieldErrors) {
    let (ns, os) = (spec_of(new), spec_of(old));
    // podCIDR(s) and providerID may go from unset to set, then stay.
    let old_cidrs = pod_cidrs(os);
    if !old_cidrs.is_empty() && pod_cidrs(ns) != old_cidrs {
        errs.push(FieldError::forbidden(
            "spec.podCIDRs",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    let old_pid = get_str(os, "providerID").unwrap_or("");
    if !old_pid.is_empty() && get_str(ns, "providerID").unwrap_or("") != old_pid {
        errs.push(FieldError::forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
    let rest = |s: &Value| -> Map<String, Value> {
        let mut m = s.as_object().cloned().unwrap_or_default();
        m.retain(|k, v| !NODE_MUTABLE_SPEC.contains(&k.as_str()) && !v.is_null());
        m
    };
    if rest(ns) != rest(os) {
        // Upstream reports this against the whole object (empty path).
        errs.push(FieldError::forbidden(
            "",
            "node updates may only change labels, taints, or capacity (or configSource, if the DynamicKubeletConfig feature gate is enabled)",
        ));
    }
}

// ---- PersistentVolumeClaim -----------------------------------------------------

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

pub(crate) fn validate_pvc(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let spec = spec_of(obj);
    let modes = get_array(spec, "accessModes");
    if modes.is_empty() {
        errs.push(FieldError::required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    if let Some(sel) = get(spec, "selector") {
        validate_label_selector(sel, "spec.selector", errs);
    }
    for m in modes {
        let s = m.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&s) {
            errs.push(FieldError::not_supported(
                "spec.accessModes",
                m.clone(),
                ACCESS_MODES,
            ));
        }
    }
    if modes.len() > 1 && modes.iter().any(|m| m.as_str() == Some("ReadWriteOncePod")) {
        errs.push(FieldError::forbidden(
            "spec.accessModes",
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    let sp = "spec.resources[storage]";
    match get_path(spec, "resources.requests").and_then(|r| r.get("storage")) {
        None => errs.push(FieldError::required(sp, "")),
        Some(q) => match quantity_from_value(q) {
            Ok(x) if x.is_negative() || x.is_zero() => {
                errs.push(FieldError::invalid(
                    sp,
                    x.to_string().into(),
                    "must be greater than zero",
                ));
            }
            Ok(_) => {}
            Err(e) => errs.push(FieldError::invalid(sp, q.clone(), e.to_string())),
        },
    }
    if let Some(sc) = str_field(spec, "storageClassName", "spec", errs).filter(|s| !s.is_empty()) {
        push_msgs(
            "spec.storageClassName",
            sc,
            names::dns1123_subdomain(sc),
            errs,
        );
    }
    check_enum(spec, "volumeMode", "spec", &["Block", "Filesystem"], errs);
}

pub(crate) fn validate_pvc_update(new: &Value, old: &Value, errs: &mut FieldErrors) {
    let (ns, os) = (spec_of(new), spec_of(old));
    let mut n = ns.as_object().cloned().unwrap_or_default();
    let mut o = os.as_object().cloned().unwrap_or_default();
    // The binder sets volumeName once; a class may be set once (retroactive
    // default class); bound claims may change their storage request.
    if get_str(os, "volumeName").is_none_or(str::is_empty) {
        o.remove("volumeName");
        n.remove("volumeName");
    }
    if get_str(os, "storageClassName").is_none() {
        o.remove("storageClassName");
        n.remove("storageClassName");
    }
    n.remove("volumeAttributesClassName");
    o.remove("volumeAttributesClassName");
    let bound = get_path(new, "status.phase").and_then(Value::as_str) == Some("Bound")
        || get_path(old, "status.phase").and_then(Value::as_str) == Some("Bound");
    let storage = |s: &Value| {
        get_path(s, "resources.requests")
            .and_then(|r| r.get("storage"))
            .cloned()
    };
    if bound {
        for m in [&mut n, &mut o] {
            if let Some(req) = m
                .get_mut("resources")
                .and_then(|r| r.get_mut("requests"))
                .and_then(Value::as_object_mut)
            {
                req.remove("storage");
            }
        }
    }
    n.retain(|_, v| !v.is_null());
    o.retain(|_, v| !v.is_null());
    if n != o {
        let mut keys: Vec<&String> = n
            .keys()
            .chain(o.keys())
            .filter(|k| n.get(*k) != o.get(*k))
            .collect();
        keys.sort();
        keys.dedup();
        let changed: Vec<String> = keys.iter().map(|k| format!("spec.{k}")).collect();
        errs.push(FieldError::forbidden(
            "spec",
            format!(
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n  changed: {}",
                changed.join(", ")
            ),
        ));
    }
    let q = |v: Option<Value>| v.and_then(|v| quantity_from_value(&v).ok());
    let status_cap = q(get_path(old, "status.capacity")
        .and_then(|c| c.get("storage"))
        .cloned());
    if let (Some(new_size), Some(old_size)) = (q(storage(ns)), q(storage(os))) {
        // Shrinking is allowed only to recover from a failed expansion,
        // and never to or below what was actually provisioned.
        if new_size < old_size && status_cap.is_none_or(|cap| new_size <= cap) {
            errs.push(FieldError::forbidden(
                "spec.resources.requests.storage",
                "field can not be less than status.capacity",
            ));
        }
    }
    immutable(
        get(ns, "volumeMode"),
        get(os, "volumeMode"),
        "volumeMode",
        errs,
    );
}

// ---- Lease ----------------------------------------------------------------------

pub(crate) fn validate_lease(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let spec = spec_of(obj);
    check_positive(spec, "leaseDurationSeconds", "spec", errs);
    if let Some(t) = int_field(spec, "leaseTransitions", "spec", errs)
        && t < 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseTransitions",
            t.into(),
            NEGATIVE_MSG,
        ));
    }
    let strategy = get_str(spec, "strategy").unwrap_or("");
    if !strategy.is_empty() && strategy != "OldestEmulationVersion" {
        errs.push(FieldError::not_supported(
            "spec.strategy",
            strategy.into(),
            &["OldestEmulationVersion"],
        ));
    }
    if get_str(spec, "preferredHolder").is_some_and(|h| !h.is_empty()) && strategy.is_empty() {
        errs.push(FieldError::forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        ));
    }
}

// ---- Ingress --------------------------------------------------------------------

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
const WILDCARD_MSG: &str = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character";

fn wildcard_subdomain(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > names::DNS1123_SUBDOMAIN_MAX {
        out.push(names::max_len_error(names::DNS1123_SUBDOMAIN_MAX));
    }
    let ok = s
        .strip_prefix("*.")
        .is_some_and(|rest| names::dns1123_subdomain(rest).is_empty());
    if !ok {
        out.push(names::regex_error(
            WILDCARD_MSG,
            "\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
            &["*.example.com"],
        ));
    }
    out
}

fn validate_host(host: &str, path: &str, errs: &mut FieldErrors) {
    if host.contains('*') {
        push_msgs(path, host, wildcard_subdomain(host), errs);
    } else {
        push_msgs(path, host, names::dns1123_subdomain(host), errs);
    }
}

fn validate_ingress_backend(b: &Value, path: &str, errs: &mut FieldErrors) {
    match (get(b, "resource"), get(b, "service")) {
        (Some(_), Some(_)) => errs.push(FieldError::invalid(
            path,
            "".into(),
            "cannot set both resource and service backends",
        )),
        (Some(r), None) => {
            let rp = child(path, "resource");
            for f in ["kind", "name"] {
                if get_str(r, f).is_none_or(str::is_empty) {
                    errs.push(FieldError::required(child(&rp, f), ""));
                }
            }
        }
        (None, Some(s)) => {
            let np = child(path, "service.name");
            match get_str(s, "name").filter(|n| !n.is_empty()) {
                None => errs.push(FieldError::required(np, "")),
                Some(n) => push_msgs(&np, n, names::dns1035_label(n), errs),
            }
            let port = get(s, "port");
            let pname = port.and_then(|p| get_str(p, "name")).unwrap_or("");
            let pnum = port
                .and_then(|p| get(p, "number"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            match (pname.is_empty(), pnum == 0) {
                (false, false) => errs.push(FieldError::invalid(
                    path,
                    "".into(),
                    "cannot set both port name & port number",
                )),
                (false, true) => push_msgs(
                    &child(path, "service.port.name"),
                    pname,
                    names::port_name(pname),
                    errs,
                ),
                (true, false) => {
                    for m in names::port_num(pnum) {
                        errs.push(FieldError::invalid(
                            child(path, "service.port.number"),
                            pnum.into(),
                            m,
                        ));
                    }
                }
                (true, true) => errs.push(FieldError::required(
                    path,
                    "port name or number is required",
                )),
            }
        }
        (None, None) => errs.push(FieldError::invalid(
            path,
            "".into(),
            "resource or service backend is required",
        )),
    }
}

pub(crate) fn validate_ingress(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    let spec = spec_of(obj);
    let rules = get_array(spec, "rules");
    if rules.is_empty() && get(spec, "defaultBackend").is_none() {
        errs.push(FieldError::invalid(
            "spec",
            Value::Null,
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = get(spec, "defaultBackend") {
        validate_ingress_backend(b, "spec.defaultBackend", errs);
    }
    for (rp, rule) in each(spec, "rules", "spec") {
        if let Some(host) = get_str(rule, "host").filter(|h| !h.is_empty()) {
            let hp = child(&rp, "host");
            if names::is_ip(host) {
                errs.push(FieldError::invalid(
                    &hp,
                    host.into(),
                    "must be a DNS name, not an IP address",
                ));
            }
            validate_host(host, &hp, errs);
        }
        let Some(http) = get(rule, "http") else {
            continue;
        };
        let hp = child(&rp, "http");
        if get_array(http, "paths").is_empty() {
            errs.push(FieldError::required(child(&hp, "paths"), ""));
        }
        for (pp, path) in each(http, "paths", &hp) {
            validate_http_path(path, &pp, errs);
        }
    }
    for (tp, tls) in each(spec, "tls", "spec") {
        for (hp, h) in each(tls, "hosts", &tp) {
            validate_host(h.as_str().unwrap_or(""), &hp, errs);
        }
    }
    if let Some(c) = get_str(spec, "ingressClassName") {
        push_msgs(
            "spec.ingressClassName",
            c,
            names::dns1123_subdomain(c),
            errs,
        );
    }
}

fn validate_http_path(path: &Value, pp: &str, errs: &mut FieldErrors) {
    let Some(pt) = get_str(path, "pathType") else {
        errs.push(FieldError::required(
            child(pp, "pathType"),
            "pathType must be specified",
        ));
        return;
    };
    let p = get_str(path, "path").unwrap_or("");
    let fp = child(pp, "path");
    match pt {
        "Exact" | "Prefix" => {
            if !p.starts_with('/') {
                errs.push(FieldError::invalid(
                    &fp,
                    p.into(),
                    "must be an absolute path",
                ));
            }
            if !p.is_empty() {
                for seq in ["//", "/./", "/../", "%2f", "%2F"] {
                    if p.contains(seq) {
                        errs.push(FieldError::invalid(
                            &fp,
                            p.into(),
                            format!("must not contain '{seq}'"),
                        ));
                    }
                }
                for suf in ["/..", "/."] {
                    if p.ends_with(suf) {
                        errs.push(FieldError::invalid(
                            &fp,
                            p.into(),
                            format!("cannot end with '{suf}'"),
                        ));
                    }
                }
            }
        }
        "ImplementationSpecific" => {
            if !p.is_empty() && !p.starts_with('/') {
                errs.push(FieldError::invalid(
                    &fp,
                    p.into(),
                    "must be an absolute path",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            child(pp, "pathType"),
            other.into(),
            PATH_TYPES,
        )),
    }
    let empty = Value::Object(Map::new());
    validate_ingress_backend(
        get(path, "backend").unwrap_or(&empty),
        &child(pp, "backend"),
        errs,
    );
}

// ---- RBAC -----------------------------------------------------------------------

fn validate_policy_rules(obj: &Value, namespaced: bool, errs: &mut FieldErrors) {
    for (p, rule) in each(obj, "rules", "") {
        if get_array(rule, "verbs").is_empty() {
            errs.push(FieldError::required(
                child(&p, "verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = get_array(rule, "nonResourceURLs");
        if !urls.is_empty() {
            let up = child(&p, "nonResourceURLs");
            let urls_value = Value::Array(urls.to_vec());
            if namespaced {
                errs.push(FieldError::invalid(
                    &up,
                    urls_value.clone(),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            let has_resources = ["apiGroups", "resources", "resourceNames"]
                .iter()
                .any(|k| !get_array(rule, k).is_empty());
            if has_resources {
                errs.push(FieldError::invalid(
                    &up,
                    urls_value,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if get_array(rule, "apiGroups").is_empty() {
            errs.push(FieldError::required(
                child(&p, "apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if get_array(rule, "resources").is_empty() {
            errs.push(FieldError::required(
                child(&p, "resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

pub(crate) fn validate_role(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    validate_policy_rules(obj, true, errs);
}

pub(crate) fn validate_cluster_role(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    validate_policy_rules(obj, false, errs);
    if let Some(agg) = get(obj, "aggregationRule") {
        let p = "aggregationRule.clusterRoleSelectors";
        if get_array(agg, "clusterRoleSelectors").is_empty() {
            errs.push(FieldError::required(
                p,
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
        for (sp, sel) in each(agg, "clusterRoleSelectors", "aggregationRule") {
            validate_label_selector(sel, &sp, errs);
        }
    }
}

fn validate_binding(obj: &Value, namespaced: bool, errs: &mut FieldErrors) {
    let empty = Value::Object(Map::new());
    let rr = get(obj, "roleRef").unwrap_or(&empty);
    // An absent apiGroup is defaulted to the RBAC group.
    let group = get_str(rr, "apiGroup").unwrap_or(RBAC_GROUP);
    if group != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            group.into(),
            &[RBAC_GROUP],
        ));
    }
    let kind = get_str(rr, "kind").unwrap_or("");
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind) {
        errs.push(FieldError::not_supported(
            "roleRef.kind",
            kind.into(),
            kinds,
        ));
    }
    match get_str(rr, "name").filter(|n| !n.is_empty()) {
        None => errs.push(FieldError::required("roleRef.name", "")),
        Some(n) => push_msgs("roleRef.name", n, names::path_segment_name(n, false), errs),
    }
    for (p, s) in each(obj, "subjects", "") {
        let name = get_str(s, "name").unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        }
        let group = get_str(s, "apiGroup");
        match get_str(s, "kind").unwrap_or("") {
            "ServiceAccount" => {
                if !name.is_empty() {
                    push_msgs(
                        &child(&p, "name"),
                        name,
                        names::dns1123_subdomain(name),
                        errs,
                    );
                }
                if let Some(g) = group.filter(|g| !g.is_empty()) {
                    errs.push(FieldError::not_supported(
                        child(&p, "apiGroup"),
                        g.into(),
                        &[""],
                    ));
                }
                if !namespaced && get_str(s, "namespace").is_none_or(str::is_empty) {
                    errs.push(FieldError::required(child(&p, "namespace"), ""));
                }
            }
            "User" | "Group" => {
                let g = group.unwrap_or(RBAC_GROUP);
                if g != RBAC_GROUP {
                    errs.push(FieldError::not_supported(
                        child(&p, "apiGroup"),
                        g.into(),
                        &[RBAC_GROUP],
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                child(&p, "kind"),
                other.into(),
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}

pub(crate) fn validate_role_binding(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    validate_binding(obj, true, errs);
}

pub(crate) fn validate_cluster_role_binding(obj: &Value, _ctx: &Ctx, errs: &mut FieldErrors) {
    validate_binding(obj, false, errs);
}

pub(crate) fn validate_binding_update(new: &Value, old: &Value, errs: &mut FieldErrors) {
    // Compare with the apiGroup default applied, so omitting it is no change.
    let norm = |v: &Value| -> Value {
        let mut rr = get(v, "roleRef").cloned().unwrap_or(Value::Null);
        if let Some(m) = rr.as_object_mut() {
            m.entry("apiGroup").or_insert_with(|| RBAC_GROUP.into());
        }
        rr
    };
    let (n, o) = (norm(new), norm(old));
    if n != o {
        errs.push(FieldError::invalid("roleRef", n, "cannot change roleRef"));
    }
}
