//! Core-group printers other than pods and controllers.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::time::since;
use super::util::{
    arr_at, condition, int_at, is_set, join_host_port, len_at, load_balancer_ingress, map_at,
    opt_int, opt_str, or_none, quantity, str_at,
};
use super::{AGE, Cell, Col, NAME, NAME_DESC, col, wide};
use crate::selector::format_labels;

pub(super) const SERVICE: &[Col] = &[
    NAME,
    col(
        "Type",
        "string",
        "type determines how the Service is exposed.",
        Cell::Str("/spec/type"),
    ),
    col(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
        Cell::Fn(cluster_ip),
    ),
    col(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
        Cell::Fn(external_ip),
    ),
    col(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service.",
        Cell::Fn(ports),
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector.",
        Cell::Fn(|o, _| json!(format_labels(map_at(o, "/spec/selector")))),
    ),
];

fn cluster_ip(svc: &Value, _: i64) -> Value {
    let ip = svc
        .pointer("/spec/clusterIPs/0")
        .and_then(Value::as_str)
        .or_else(|| opt_str(svc, "/spec/clusterIP"))
        .unwrap_or("");
    json!(or_none(ip))
}

fn external_ip(svc: &Value, _: i64) -> Value {
    let external: Vec<&str> = arr_at(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let text = match str_at(svc, "/spec/type") {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(svc, "/status/loadBalancer/ingress");
            if !external.is_empty() {
                let mut all: Vec<&str> = lb.split(',').filter(|s| !s.is_empty()).collect();
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    };
    json!(text)
}

/// `80/TCP`, `80:30080/TCP` (with a node port), comma-joined.
fn ports(svc: &Value, _: i64) -> Value {
    let parts: Vec<String> = arr_at(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int_at(p, "/port");
            let proto = match str_at(p, "/protocol") {
                "" => "TCP",
                other => other,
            };
            match int_at(p, "/nodePort") {
                n if n > 0 => format!("{port}:{n}/{proto}"),
                _ => format!("{port}/{proto}"),
            }
        })
        .collect();
    json!(if parts.is_empty() {
        "<none>".to_string()
    } else {
        parts.join(",")
    })
}

pub(super) const ENDPOINTS: &[Col] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
        Cell::Fn(endpoints),
    ),
    AGE,
];

/// Upstream's `formatEndpoints`: the first three `ip:port` pairs, then
/// ` + N more...`.
fn endpoints(ep: &Value, _: i64) -> Value {
    let subsets = arr_at(ep, "/subsets");
    if subsets.is_empty() {
        return json!("<none>");
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addrs = arr_at(ss, "/addresses");
        let ports = arr_at(ss, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(a, "/ip").to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(a, "/ip"), int_at(p, "/port")));
            }
        }
    }
    let ret = list.join(",");
    json!(if more {
        format!("{ret} + {} more...", count.saturating_sub(MAX))
    } else {
        ret
    })
}

pub(super) const NODE: &[Col] = &[
    NAME,
    col(
        "Status",
        "string",
        "The status of the node",
        Cell::Fn(node_status),
    ),
    col(
        "Roles",
        "string",
        "The roles of the node",
        Cell::Fn(node_roles),
    ),
    AGE,
    col(
        "Version",
        "string",
        "Kubelet Version reported by the node.",
        Cell::Str("/status/nodeInfo/kubeletVersion"),
    ),
    wide(
        "Internal-IP",
        "string",
        "List of addresses reachable to the node.",
        Cell::Fn(|o, _| json!(node_address(o, "InternalIP"))),
    ),
    wide(
        "External-IP",
        "string",
        "List of addresses reachable to the node.",
        Cell::Fn(|o, _| json!(node_address(o, "ExternalIP"))),
    ),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        Cell::Fn(|o, _| json!(or_unknown(str_at(o, "/status/nodeInfo/osImage")))),
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        Cell::Fn(|o, _| json!(or_unknown(str_at(o, "/status/nodeInfo/kernelVersion")))),
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        Cell::Fn(|o, _| {
            json!(or_unknown(str_at(
                o,
                "/status/nodeInfo/containerRuntimeVersion"
            )))
        }),
    ),
];

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "<unknown>" } else { s }
}

/// `Ready` / `NotReady` / `Unknown` from the Ready condition, plus
/// `SchedulingDisabled` for a cordoned node.
pub(super) fn node_status(node: &Value, _: i64) -> Value {
    // Upstream keeps the last condition of each type.
    let ready = arr_at(node, "/status/conditions")
        .iter()
        .rfind(|c| str_at(c, "/type") == "Ready");
    let mut parts = vec![match ready {
        Some(c) if str_at(c, "/status") == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        parts.push("SchedulingDisabled");
    }
    json!(parts.join(","))
}

/// Roles from `node-role.kubernetes.io/<role>` keys and the legacy
/// `kubernetes.io/role=<role>` label; `<none>` without any.
pub(super) fn node_roles(node: &Value, _: i64) -> Value {
    let mut roles = BTreeSet::new();
    for (k, v) in map_at(node, "/metadata/labels").into_iter().flatten() {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if k == "kubernetes.io/role"
            && let Some(v) = v.as_str().filter(|v| !v.is_empty())
        {
            roles.insert(v.to_string());
        }
    }
    let roles: Vec<String> = roles.into_iter().collect();
    json!(if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    })
}

fn node_address<'a>(node: &'a Value, ty: &str) -> &'a str {
    arr_at(node, "/status/addresses")
        .iter()
        .find(|a| str_at(a, "/type") == ty)
        .map(|a| str_at(a, "/address"))
        .unwrap_or("<none>")
}

pub(super) const NAMESPACE: &[Col] = &[
    NAME,
    col(
        "Status",
        "string",
        "The status of the namespace",
        Cell::Str("/status/phase"),
    ),
    AGE,
];

pub(super) const CONFIG_MAP: &[Col] = &[
    NAME,
    col(
        "Data",
        "string",
        "Data contains the configuration data.",
        Cell::Fn(|o, _| json!(len_at(o, "/data") + len_at(o, "/binaryData"))),
    ),
    AGE,
];

pub(super) const SECRET: &[Col] = &[
    NAME,
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
        Cell::Str("/type"),
    ),
    col(
        "Data",
        "string",
        "Data contains the secret data.",
        Cell::Len("/data"),
    ),
    AGE,
];

pub(super) const SERVICE_ACCOUNT: &[Col] = &[
    NAME,
    col(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
        Cell::Len("/secrets"),
    ),
    AGE,
];

const STORAGE_CLASS_ANNOTATION: &str =
    "/metadata/annotations/volume.beta.kubernetes.io~1storage-class";

/// Upstream's `GetAccessModesAsString`: fixed order, duplicates dropped.
fn access_modes(obj: &Value, ptr: &str) -> String {
    let modes: Vec<&str> = arr_at(obj, ptr).iter().filter_map(Value::as_str).collect();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| modes.contains(m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The beta annotation wins over `spec.storageClassName`, as upstream.
fn storage_class(obj: &Value) -> String {
    opt_str(obj, STORAGE_CLASS_ANNOTATION)
        .unwrap_or_else(|| str_at(obj, "/spec/storageClassName"))
        .to_string()
}

fn phase_or_terminating(obj: &Value) -> String {
    if is_set(obj, "/metadata/deletionTimestamp") {
        "Terminating".into()
    } else {
        str_at(obj, "/status/phase").to_string()
    }
}

fn str_or_unset(obj: &Value, ptr: &str) -> String {
    opt_str(obj, ptr).unwrap_or("<unset>").to_string()
}

pub(super) const PERSISTENT_VOLUME: &[Col] = &[
    NAME,
    col(
        "Capacity",
        "string",
        "capacity is the description of the persistent volume's resources and capacity.",
        Cell::Fn(|o, _| json!(quantity(o.pointer("/spec/capacity/storage")))),
    ),
    col(
        "Access Modes",
        "string",
        "accessModes contains all ways the volume can be mounted.",
        Cell::Fn(|o, _| json!(access_modes(o, "/spec/accessModes"))),
    ),
    col(
        "Reclaim Policy",
        "string",
        "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
        Cell::Str("/spec/persistentVolumeReclaimPolicy"),
    ),
    col(
        "Status",
        "string",
        "phase indicates if a volume is available, bound to a claim, or released by a claim.",
        Cell::Fn(|o, _| json!(phase_or_terminating(o))),
    ),
    col(
        "Claim",
        "string",
        "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
        Cell::Fn(|o, _| {
            json!(if is_set(o, "/spec/claimRef") {
                format!(
                    "{}/{}",
                    str_at(o, "/spec/claimRef/namespace"),
                    str_at(o, "/spec/claimRef/name")
                )
            } else {
                String::new()
            })
        }),
    ),
    col(
        "StorageClass",
        "string",
        "StorageClass of the pv",
        Cell::Fn(|o, _| json!(storage_class(o))),
    ),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pv",
        Cell::Fn(|o, _| json!(str_or_unset(o, "/spec/volumeAttributesClassName"))),
    ),
    col(
        "Reason",
        "string",
        "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
        Cell::Str("/status/reason"),
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
        Cell::Fn(|o, _| json!(str_or_unset(o, "/spec/volumeMode"))),
    ),
];

pub(super) const PERSISTENT_VOLUME_CLAIM: &[Col] = &[
    NAME,
    col(
        "Status",
        "string",
        "phase represents the current phase of PersistentVolumeClaim.",
        Cell::Fn(|o, _| json!(phase_or_terminating(o))),
    ),
    col(
        "Volume",
        "string",
        "volumeName is the binding reference to the PersistentVolume backing this claim.",
        Cell::Str("/spec/volumeName"),
    ),
    // Capacity and access modes show only once the claim is bound.
    col(
        "Capacity",
        "string",
        "capacity represents the actual resources of the underlying volume.",
        Cell::Fn(|o, _| {
            json!(if str_at(o, "/spec/volumeName").is_empty() {
                String::new()
            } else {
                quantity(o.pointer("/status/capacity/storage"))
            })
        }),
    ),
    col(
        "Access Modes",
        "string",
        "accessModes contains the actual access modes the volume backing the PVC has.",
        Cell::Fn(|o, _| {
            json!(if str_at(o, "/spec/volumeName").is_empty() {
                String::new()
            } else {
                access_modes(o, "/status/accessModes")
            })
        }),
    ),
    col(
        "StorageClass",
        "string",
        "StorageClass of the pvc",
        Cell::Fn(|o, _| json!(storage_class(o))),
    ),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pvc",
        Cell::Fn(|o, _| json!(str_or_unset(o, "/spec/volumeAttributesClassName"))),
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines what type of volume is required by the claim.",
        Cell::Fn(|o, _| json!(str_or_unset(o, "/spec/volumeMode"))),
    ),
];

pub(super) const RESOURCE_QUOTA: &[Col] = &[
    NAME,
    col(
        "Request",
        "string",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
        Cell::Fn(|o, _| json!(quota_column(o, false))),
    ),
    col(
        "Limit",
        "string",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
        Cell::Fn(|o, _| json!(quota_column(o, true))),
    ),
    AGE,
];

/// `resource: used/hard` pairs sorted by resource; `limits.*` resources go to
/// the LIMIT column, everything else to REQUEST.
fn quota_column(rq: &Value, limits: bool) -> String {
    let Some(hard) = map_at(rq, "/status/hard") else {
        return String::new();
    };
    let used = map_at(rq, "/status/used");
    // serde_json maps iterate in key order, which is upstream's sort.
    hard.iter()
        .filter(|(res, _)| res.starts_with("limits.") == limits)
        .map(|(res, h)| {
            let u = quantity(used.and_then(|m| m.get(res)));
            format!("{res}: {u}/{}", quantity(Some(h)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) const COMPONENT_STATUS: &[Col] = &[
    NAME,
    col(
        "Status",
        "string",
        "Status of the component conditions",
        Cell::Fn(|o, _| json!(component_condition(o).0)),
    ),
    col(
        "Message",
        "string",
        "Message of the component conditions",
        Cell::Fn(|o, _| json!(component_condition(o).1)),
    ),
    col(
        "Error",
        "string",
        "Error of the component conditions",
        Cell::Fn(|o, _| json!(component_condition(o).2)),
    ),
];

fn component_condition(cs: &Value) -> (&str, &str, &str) {
    match condition(cs, "/conditions", "Healthy") {
        Some(c) => (
            if str_at(c, "/status") == "True" {
                "Healthy"
            } else {
                "Unhealthy"
            },
            str_at(c, "/message"),
            str_at(c, "/error"),
        ),
        None => ("Unknown", "", ""),
    }
}

// ---- events ----------------------------------------------------------------

/// Where core/v1 and events.k8s.io/v1 keep the fields the event printer
/// reads (upstream prints both from the same internal type).
struct EventFields {
    first: &'static str,
    last: &'static str,
    count: &'static str,
    object: &'static str,
    message: &'static str,
    source: &'static str,
    reporting_controller: &'static str,
}

const CORE_EVENT: EventFields = EventFields {
    first: "/firstTimestamp",
    last: "/lastTimestamp",
    count: "/count",
    object: "/involvedObject",
    message: "/message",
    source: "/source",
    reporting_controller: "/reportingComponent",
};

const EVENTS_V1: EventFields = EventFields {
    first: "/deprecatedFirstTimestamp",
    last: "/deprecatedLastTimestamp",
    count: "/deprecatedCount",
    object: "/regarding",
    message: "/note",
    source: "/deprecatedSource",
    reporting_controller: "/reportingController",
};

fn ts_set(ev: &Value, ptr: &str) -> bool {
    opt_str(ev, ptr).is_some_and(|s| !s.is_empty())
}

fn event_first_seen(ev: &Value, f: &EventFields, now: i64) -> String {
    if ts_set(ev, f.first) {
        since(ev.pointer(f.first), now)
    } else {
        since(ev.pointer("/eventTime"), now)
    }
}

fn event_last_seen(ev: &Value, f: &EventFields, now: i64) -> String {
    if is_set(ev, "/series") {
        return since(ev.pointer("/series/lastObservedTime"), now);
    }
    if ts_set(ev, f.last) {
        since(ev.pointer(f.last), now)
    } else {
        event_first_seen(ev, f, now)
    }
}

fn event_count(ev: &Value, f: &EventFields) -> i64 {
    if is_set(ev, "/series") {
        return int_at(ev, "/series/count");
    }
    // Singleton events of the new API carry no count.
    match opt_int(ev, f.count).unwrap_or(0) {
        0 => 1,
        n => n,
    }
}

fn event_object(ev: &Value, f: &EventFields) -> String {
    let kind = str_at(ev, &format!("{}/kind", f.object)).to_lowercase();
    let name = str_at(ev, &format!("{}/name", f.object));
    if name.is_empty() {
        kind
    } else {
        format!("{kind}/{name}")
    }
}

/// `component, host`, falling back to the reporting controller/instance.
fn event_source(ev: &Value, f: &EventFields) -> String {
    let pick = |a: &str, b: &str| -> String {
        let a = str_at(ev, a);
        if a.is_empty() { str_at(ev, b) } else { a }.to_string()
    };
    let component = pick(&format!("{}/component", f.source), f.reporting_controller);
    let instance = pick(&format!("{}/host", f.source), "/reportingInstance");
    if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    }
}

macro_rules! event_columns {
    ($f:expr) => {
        &[
            col(
                "Last Seen",
                "string",
                "The time at which the most recent occurrence of this event was recorded.",
                Cell::Fn(|o, now| json!(event_last_seen(o, &$f, now))),
            ),
            col(
                "Type",
                "string",
                "Type of this event (Normal, Warning), new types could be added in the future",
                Cell::Str("/type"),
            ),
            col(
                "Reason",
                "string",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                Cell::Str("/reason"),
            ),
            col(
                "Object",
                "string",
                "The object that this event is about.",
                Cell::Fn(|o, _| json!(event_object(o, &$f))),
            ),
            wide(
                "Subobject",
                "string",
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
                Cell::Fn(|o, _| json!(str_at(o, &format!("{}/fieldPath", $f.object)))),
            ),
            wide(
                "Source",
                "string",
                "The component reporting this event. Should be a short machine understandable string.",
                Cell::Fn(|o, _| json!(event_source(o, &$f))),
            ),
            col(
                "Message",
                "string",
                "A human-readable description of the status of this operation.",
                Cell::Fn(|o, _| json!(str_at(o, $f.message).trim())),
            ),
            wide(
                "First Seen",
                "string",
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
                Cell::Fn(|o, now| json!(event_first_seen(o, &$f, now))),
            ),
            wide(
                "Count",
                "string",
                "The number of times this event has occurred.",
                Cell::Fn(|o, _| json!(event_count(o, &$f))),
            ),
            Col {
                name: "Name",
                ty: "string",
                format: "name",
                priority: 1,
                desc: NAME_DESC,
                cell: Cell::Name,
            },
        ]
    };
}

pub(super) const EVENT: &[Col] = event_columns!(CORE_EVENT);
pub(super) const EVENT_V1: &[Col] = event_columns!(EVENTS_V1);
