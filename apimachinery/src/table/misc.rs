//! Printers for the smaller API groups: networking, storage, RBAC,
//! scheduling, policy, certificates, coordination, discovery, admission,
//! autoscaling, flow control and API registration.

use serde_json::{Value, json};

use super::time::human_duration;
use super::util::{
    arr_at, bool_at, condition, format_label_selector, int_or_string, is_set, list_with_more,
    load_balancer_ingress, opt_int, opt_str, quantity, str_at,
};
use super::{AGE, Cell, Col, NAME, col, wide};

pub(super) const LEASE: &[Col] = &[
    NAME,
    col(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
        Cell::Str("/spec/holderIdentity"),
    ),
    AGE,
];

pub(super) const ENDPOINT_SLICE: &[Col] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice.",
        Cell::Str("/addressType"),
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
        Cell::Fn(slice_ports),
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
        Cell::Fn(slice_endpoints),
    ),
    AGE,
];

const LIST_MAX: usize = 3;

fn slice_ports(es: &Value, _: i64) -> Value {
    let ports = arr_at(es, "/ports");
    let list: Vec<String> = ports
        .iter()
        .take(LIST_MAX)
        .map(|p| match (opt_int(p, "/port"), opt_str(p, "/name")) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    json!(list_with_more(
        &list,
        ports.len() > LIST_MAX,
        ports.len(),
        LIST_MAX
    ))
}

fn slice_endpoints(es: &Value, _: i64) -> Value {
    let addrs: Vec<String> = arr_at(es, "/endpoints")
        .iter()
        .flat_map(|e| arr_at(e, "/addresses"))
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    let count = addrs.len();
    let list = &addrs[..count.min(LIST_MAX)];
    json!(list_with_more(list, count > LIST_MAX, count, LIST_MAX))
}

pub(super) const INGRESS: &[Col] = &[
    NAME,
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
        Cell::Fn(|o, _| json!(opt_str(o, "/spec/ingressClassName").unwrap_or("<none>"))),
    ),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
        Cell::Fn(ingress_hosts),
    ),
    col(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
        Cell::Fn(|o, _| json!(load_balancer_ingress(o, "/status/loadBalancer/ingress"))),
    ),
    col(
        "Ports",
        "string",
        "Ports of TLS configurations that open",
        Cell::Fn(|o, _| {
            json!(if arr_at(o, "/spec/tls").is_empty() {
                "80"
            } else {
                "80, 443"
            })
        }),
    ),
    AGE,
];

/// Upstream's `formatHosts`, including its counting quirk: the "more" count
/// is over all rules, hostless ones too.
fn ingress_hosts(ing: &Value, _: i64) -> Value {
    let rules = arr_at(ing, "/spec/rules");
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for r in rules {
        if list.len() == LIST_MAX {
            more = true;
        }
        let host = str_at(r, "/host");
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return json!("*");
    }
    let ret = list.join(",");
    json!(if more {
        format!("{ret} + {} more...", rules.len().saturating_sub(LIST_MAX))
    } else {
        ret
    })
}

pub(super) const INGRESS_CLASS: &[Col] = &[
    NAME,
    col(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
        Cell::Str("/spec/controller"),
    ),
    col(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
        Cell::Fn(|o, _| {
            let Some(p) = o.pointer("/spec/parameters").filter(|p| !p.is_null()) else {
                return json!("<none>");
            };
            let mut s = str_at(p, "/kind").to_string();
            if let Some(g) = opt_str(p, "/apiGroup") {
                s = format!("{s}.{g}");
            }
            json!(format!("{s}/{}", str_at(p, "/name")))
        }),
    ),
    AGE,
];

pub(super) const NETWORK_POLICY: &[Col] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        "Selects the pods to which this NetworkPolicy object applies.",
        Cell::Fn(|o, _| {
            // A missing podSelector is the empty (select-all) selector.
            let sel = o.pointer("/spec/podSelector").cloned().unwrap_or(json!({}));
            json!(format_label_selector(Some(&sel)))
        }),
    ),
    AGE,
];

pub(super) const SERVICE_CIDR: &[Col] = &[
    NAME,
    col(
        "CIDRs",
        "string",
        "CIDRs defines the IP blocks in CIDR notation from which to assign service cluster IPs.",
        Cell::Fn(|o, _| json!(strings(o, "/spec/cidrs").join(","))),
    ),
    AGE,
];

pub(super) const IP_ADDRESS: &[Col] = &[
    NAME,
    col(
        "ParentRef",
        "string",
        "ParentRef references the resource that an IPAddress is attached to.",
        Cell::Fn(|o, _| {
            let Some(p) = o.pointer("/spec/parentRef").filter(|p| !p.is_null()) else {
                return json!("<none>");
            };
            let (group, resource) = (str_at(p, "/group"), str_at(p, "/resource"));
            let mut s = if group.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}.{group}")
            }
            .to_lowercase();
            let ns = str_at(p, "/namespace");
            if !ns.is_empty() {
                s = format!("{s}/{ns}");
            }
            json!(format!("{s}/{}", str_at(p, "/name")))
        }),
    ),
];

fn strings<'a>(v: &'a Value, ptr: &str) -> Vec<&'a str> {
    arr_at(v, ptr).iter().filter_map(Value::as_str).collect()
}

fn annotation_true(obj: &Value, key: &str) -> bool {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        == Some("true")
}

pub(super) const STORAGE_CLASS: &[Col] = &[
    Col {
        cell: Cell::Fn(|o, _| {
            let name = str_at(o, "/metadata/name");
            let default = annotation_true(o, "storageclass.kubernetes.io/is-default-class")
                || annotation_true(o, "storageclass.beta.kubernetes.io/is-default-class");
            json!(if default {
                format!("{name} (default)")
            } else {
                name.to_string()
            })
        }),
        ..NAME
    },
    col(
        "Provisioner",
        "string",
        "provisioner indicates the type of the provisioner.",
        Cell::Str("/provisioner"),
    ),
    col(
        "ReclaimPolicy",
        "string",
        "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class.",
        Cell::Fn(|o, _| json!(opt_str(o, "/reclaimPolicy").unwrap_or("Delete"))),
    ),
    col(
        "VolumeBindingMode",
        "string",
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.",
        Cell::Fn(|o, _| json!(opt_str(o, "/volumeBindingMode").unwrap_or("Immediate"))),
    ),
    col(
        "AllowVolumeExpansion",
        "string",
        "allowVolumeExpansion shows whether the storage class allow volume expand.",
        Cell::Fn(|o, _| json!(bool_at(o, "/allowVolumeExpansion").unwrap_or(false))),
    ),
    AGE,
];

pub(super) const VOLUME_ATTACHMENT: &[Col] = &[
    NAME,
    Col {
        format: "name",
        ..col(
            "Attacher",
            "string",
            "attacher indicates the name of the volume driver that MUST handle this request.",
            Cell::Str("/spec/attacher"),
        )
    },
    col(
        "PV",
        "string",
        "persistentVolumeName represents the name of the persistent volume to attach.",
        Cell::Str("/spec/source/persistentVolumeName"),
    ),
    col(
        "Node",
        "string",
        "nodeName represents the node that the volume should be attached to.",
        Cell::Str("/spec/nodeName"),
    ),
    col(
        "Attached",
        "boolean",
        "attached indicates the volume is successfully attached.",
        Cell::Fn(|o, _| json!(bool_at(o, "/status/attached").unwrap_or(false))),
    ),
    AGE,
];

pub(super) const CSI_DRIVER: &[Col] = &[
    NAME,
    col(
        "AttachRequired",
        "boolean",
        "attachRequired indicates this CSI volume driver requires an attach operation.",
        Cell::Fn(|o, _| json!(bool_at(o, "/spec/attachRequired").unwrap_or(true))),
    ),
    col(
        "PodInfoOnMount",
        "boolean",
        "podInfoOnMount indicates this CSI volume driver requires additional pod information during mount operations.",
        Cell::Fn(|o, _| json!(bool_at(o, "/spec/podInfoOnMount").unwrap_or(false))),
    ),
    col(
        "StorageCapacity",
        "boolean",
        "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity.",
        Cell::Fn(|o, _| json!(bool_at(o, "/spec/storageCapacity").unwrap_or(false))),
    ),
    col(
        "TokenRequests",
        "string",
        "tokenRequests indicates the CSI driver needs pods' service account tokens it is mounting volume for.",
        Cell::Fn(|o, _| {
            if !is_set(o, "/spec/tokenRequests") {
                return json!("<unset>");
            }
            let auds: Vec<&str> = arr_at(o, "/spec/tokenRequests")
                .iter()
                .map(|t| str_at(t, "/audience"))
                .collect();
            json!(auds.join(","))
        }),
    ),
    col(
        "RequiresRepublish",
        "boolean",
        "requiresRepublish indicates the CSI driver wants NodePublishVolume being periodically called.",
        Cell::Fn(|o, _| json!(bool_at(o, "/spec/requiresRepublish").unwrap_or(false))),
    ),
    col(
        "Modes",
        "string",
        "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports.",
        Cell::Fn(|o, _| {
            let modes = strings(o, "/spec/volumeLifecycleModes").join(",");
            json!(if modes.is_empty() {
                "<none>".into()
            } else {
                modes
            })
        }),
    ),
    AGE,
];

pub(super) const CSI_NODE: &[Col] = &[
    NAME,
    col(
        "Drivers",
        "integer",
        "Drivers indicates the number of CSI drivers registered on the node",
        Cell::Len("/spec/drivers"),
    ),
    AGE,
];

pub(super) const CSI_STORAGE_CAPACITY: &[Col] = &[
    NAME,
    col(
        "StorageClassName",
        "string",
        "storageClassName represents the name of the StorageClass that the reported capacity applies to.",
        Cell::Str("/storageClassName"),
    ),
    col(
        "Capacity",
        "string",
        "capacity is the value reported by the CSI driver in its GetCapacityResponse for a GetCapacityRequest.",
        Cell::Fn(|o, _| {
            json!(if is_set(o, "/capacity") {
                quantity(o.pointer("/capacity"))
            } else {
                "<unset>".into()
            })
        }),
    ),
];

pub(super) const VOLUME_ATTRIBUTES_CLASS: &[Col] = &[
    NAME,
    col(
        "DriverName",
        "string",
        "Name of the CSI driver",
        Cell::Str("/driverName"),
    ),
    AGE,
];

pub(super) const PRIORITY_CLASS: &[Col] = &[
    NAME,
    col(
        "Value",
        "integer",
        "value represents the integer value of this priority class.",
        Cell::Int("/value"),
    ),
    col(
        "Global-Default",
        "boolean",
        "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class.",
        Cell::Fn(|o, _| json!(bool_at(o, "/globalDefault").unwrap_or(false))),
    ),
    AGE,
    col(
        "PreemptionPolicy",
        "string",
        "preemptionPolicy is the Policy for preempting pods with lower priority.",
        Cell::Str("/preemptionPolicy"),
    ),
];

pub(super) const RUNTIME_CLASS: &[Col] = &[
    NAME,
    col(
        "Handler",
        "string",
        "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class.",
        Cell::Str("/handler"),
    ),
    AGE,
];

pub(super) const POD_DISRUPTION_BUDGET: &[Col] = &[
    NAME,
    col(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
        Cell::Fn(|o, _| {
            json!(int_or_string(o.pointer("/spec/minAvailable")).unwrap_or("N/A".into()))
        }),
    ),
    col(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
        Cell::Fn(|o, _| {
            json!(int_or_string(o.pointer("/spec/maxUnavailable")).unwrap_or("N/A".into()))
        }),
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
        Cell::Int("/status/disruptionsAllowed"),
    ),
    AGE,
];

/// Upstream's `rbac.SubjectsStrings`: users, groups, service accounts.
fn subjects(rb: &Value, kind: &str) -> String {
    let out: Vec<String> = arr_at(rb, "/subjects")
        .iter()
        .filter(|s| str_at(s, "/kind") == kind)
        .map(|s| {
            if kind == "ServiceAccount" {
                format!("{}/{}", str_at(s, "/namespace"), str_at(s, "/name"))
            } else {
                str_at(s, "/name").to_string()
            }
        })
        .collect();
    out.join(", ")
}

macro_rules! binding_columns {
    ($what:literal) => {
        &[
            NAME,
            col(
                "Role",
                "string",
                "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
                Cell::Fn(|o, _| {
                    json!(format!(
                        "{}/{}",
                        str_at(o, "/roleRef/kind"),
                        str_at(o, "/roleRef/name")
                    ))
                }),
            ),
            AGE,
            wide(
                "Users",
                "string",
                concat!("Users in the ", $what),
                Cell::Fn(|o, _| json!(subjects(o, "User"))),
            ),
            wide(
                "Groups",
                "string",
                concat!("Groups in the ", $what),
                Cell::Fn(|o, _| json!(subjects(o, "Group"))),
            ),
            wide(
                "ServiceAccounts",
                "string",
                concat!("ServiceAccounts in the ", $what),
                Cell::Fn(|o, _| json!(subjects(o, "ServiceAccount"))),
            ),
        ]
    };
}

pub(super) const ROLE_BINDING: &[Col] = binding_columns!("roleBinding");
pub(super) const CLUSTER_ROLE_BINDING: &[Col] = binding_columns!("clusterRoleBinding");

pub(super) const CSR: &[Col] = &[
    NAME,
    AGE,
    col(
        "SignerName",
        "string",
        "Requested signer for the request.",
        Cell::Fn(|o, _| json!(non_empty_or(str_at(o, "/spec/signerName"), "<none>"))),
    ),
    col(
        "Requestor",
        "string",
        "Base64-encoded PKCS#10 CSR data",
        Cell::Str("/spec/username"),
    ),
    col(
        "RequestedDuration",
        "string",
        "expirationSeconds is the requested duration of validity of the issued certificate.",
        Cell::Fn(|o, _| match opt_int(o, "/spec/expirationSeconds") {
            Some(s) => json!(human_duration(s)),
            None => json!("<none>"),
        }),
    ),
    col(
        "Condition",
        "string",
        "Conditions applied to the request, such as approval or denial.",
        Cell::Fn(csr_condition),
    ),
];

fn non_empty_or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

fn csr_condition(csr: &Value, _: i64) -> Value {
    let has = |ty: &str| {
        arr_at(csr, "/status/conditions")
            .iter()
            .any(|c| str_at(c, "/type") == ty)
    };
    let mut s = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        s.push_str(",Failed");
    }
    if !str_at(csr, "/status/certificate").is_empty() {
        s.push_str(",Issued");
    }
    json!(s)
}

pub(super) const CLUSTER_TRUST_BUNDLE: &[Col] = &[
    NAME,
    col(
        "SignerName",
        "string",
        "signerName indicates the associated signer, if any.",
        Cell::Fn(|o, _| json!(non_empty_or(str_at(o, "/spec/signerName"), "<none>"))),
    ),
];

pub(super) const WEBHOOK_CONFIGURATION: &[Col] = &[
    NAME,
    col(
        "Webhooks",
        "integer",
        "Webhooks indicates the number of webhooks registered in this configuration",
        Cell::Len("/webhooks"),
    ),
    AGE,
];

pub(super) const API_SERVICE: &[Col] = &[
    NAME,
    col(
        "Service",
        "string",
        "The reference to the service that hosts this API endpoint.",
        Cell::Fn(|o, _| {
            json!(match o.pointer("/spec/service").filter(|s| !s.is_null()) {
                Some(s) => format!("{}/{}", str_at(s, "/namespace"), str_at(s, "/name")),
                None => "Local".into(),
            })
        }),
    ),
    col(
        "Available",
        "string",
        "Whether this service is available.",
        Cell::Fn(|o, _| {
            json!(match condition(o, "/status/conditions", "Available") {
                None => "Unknown".to_string(),
                Some(c) => {
                    let (status, reason) = (str_at(c, "/status"), str_at(c, "/reason"));
                    if status == "True" || reason.is_empty() {
                        status.to_string()
                    } else {
                        format!("{status} ({reason})")
                    }
                }
            })
        }),
    ),
    AGE,
];

pub(super) const FLOW_SCHEMA: &[Col] = &[
    NAME,
    col(
        "PriorityLevel",
        "string",
        "`name` is the name of the priority level configuration being referenced",
        Cell::Str("/spec/priorityLevelConfiguration/name"),
    ),
    col(
        "MatchingPrecedence",
        "string",
        "`matchingPrecedence` is used to choose among the FlowSchemas that match a given request.",
        Cell::Int("/spec/matchingPrecedence"),
    ),
    col(
        "DistinguisherMethod",
        "string",
        "`distinguisherMethod` defines how to compute the flow distinguisher for requests that match this schema.",
        Cell::Fn(|o, _| json!(opt_str(o, "/spec/distinguisherMethod/type").unwrap_or("<none>"))),
    ),
    AGE,
    col(
        "MissingPL",
        "string",
        "references a broken or non-existent PriorityLevelConfiguration",
        Cell::Fn(|o, _| {
            let dangling = condition(o, "/status/conditions", "Dangling");
            json!(dangling.map(|c| str_at(c, "/status")).unwrap_or("?"))
        }),
    ),
];

/// A number when set, `<none>` otherwise (upstream mixes the two types).
fn int_or_none(v: &Value, ptr: &str) -> Value {
    match opt_int(v, ptr) {
        Some(n) => json!(n),
        None => json!("<none>"),
    }
}

pub(super) const PRIORITY_LEVEL: &[Col] = &[
    NAME,
    col(
        "Type",
        "string",
        "`type` indicates whether this priority level is subject to limitation on request execution.",
        Cell::Str("/spec/type"),
    ),
    col(
        "NominalConcurrencyShares",
        "string",
        "`nominalConcurrencyShares` (NCS) contributes to the computation of the NominalConcurrencyLimit (NominalCL) of this level.",
        Cell::Fn(|o, _| int_or_none(o, "/spec/limited/nominalConcurrencyShares")),
    ),
    col(
        "Queues",
        "string",
        "`queues` is the number of queues for this priority level.",
        Cell::Fn(|o, _| int_or_none(o, "/spec/limited/limitResponse/queuing/queues")),
    ),
    col(
        "HandSize",
        "string",
        "`handSize` is a small positive number that configures the shuffle sharding of requests into queues.",
        Cell::Fn(|o, _| int_or_none(o, "/spec/limited/limitResponse/queuing/handSize")),
    ),
    col(
        "QueueLengthLimit",
        "string",
        "`queueLengthLimit` is the maximum number of requests allowed to be waiting in a given queue of this priority level at a time.",
        Cell::Fn(|o, _| int_or_none(o, "/spec/limited/limitResponse/queuing/queueLengthLimit")),
    ),
    AGE,
];

pub(super) const HPA: &[Col] = &[
    NAME,
    col(
        "Reference",
        "string",
        "reference to scaled resource; horizontal pod autoscaler will learn the current resource consumption and will set the desired number of pods by using its Scale subresource.",
        Cell::Fn(|o, _| {
            json!(format!(
                "{}/{}",
                str_at(o, "/spec/scaleTargetRef/kind"),
                str_at(o, "/spec/scaleTargetRef/name")
            ))
        }),
    ),
    col(
        "Targets",
        "string",
        "metrics contains the specifications for which to use to calculate the desired replica count.",
        Cell::Fn(hpa_targets),
    ),
    col(
        "MinPods",
        "string",
        "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
        Cell::Fn(|o, _| {
            json!(match opt_int(o, "/spec/minReplicas") {
                Some(n) => n.to_string(),
                None => "<unset>".into(),
            })
        }),
    ),
    col(
        "MaxPods",
        "string",
        "maxReplicas is the upper limit for the number of pods that can be set by the autoscaler.",
        Cell::Int("/spec/maxReplicas"),
    ),
    col(
        "Replicas",
        "string",
        "currentReplicas is current number of replicas of pods managed by this autoscaler.",
        Cell::Int("/status/currentReplicas"),
    ),
    AGE,
];

/// Upstream's `formatHPAMetrics` over autoscaling/v2 objects (v1 objects'
/// CPU target is read as the one Resource metric it converts to).
fn hpa_targets(hpa: &Value, _: i64) -> Value {
    let specs = arr_at(hpa, "/spec/metrics");
    if specs.is_empty() {
        if let Some(target) = opt_int(hpa, "/spec/targetCPUUtilizationPercentage") {
            let current = match opt_int(hpa, "/status/currentCPUUtilizationPercentage") {
                Some(c) => format!("{c}%"),
                None => "<unknown>".into(),
            };
            return json!(format!("cpu: {current}/{target}%"));
        }
        return json!("<none>");
    }
    let statuses = arr_at(hpa, "/status/currentMetrics");
    const MAX: usize = 2;
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| hpa_metric(spec, statuses.get(i)))
        .collect();
    let ret = list[..list.len().min(MAX)].join(", ");
    json!(if list.len() > MAX {
        format!("{ret} + {} more...", list.len() - MAX)
    } else {
        ret
    })
}

fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let unknown = || "<unknown>".to_string();
    // The status entry of the same source, if reported.
    let st = |source: &str| status.and_then(|s| s.get(source)).filter(|v| !v.is_null());
    let q = |v: &Value, p: &str| quantity(v.pointer(p));
    match str_at(spec, "/type") {
        "External" | "Object" => {
            let source = if str_at(spec, "/type") == "External" {
                "external"
            } else {
                "object"
            };
            let target = spec
                .get(source)
                .map(|s| &s["target"])
                .unwrap_or(&Value::Null);
            if is_set(target, "/averageValue") {
                let cur = st(source)
                    .filter(|s| is_set(s, "/current/averageValue"))
                    .map(|s| q(s, "/current/averageValue"))
                    .unwrap_or_else(unknown);
                format!("{cur}/{} (avg)", q(target, "/averageValue"))
            } else {
                let cur = st(source)
                    .map(|s| q(s, "/current/value"))
                    .unwrap_or_else(unknown);
                format!("{cur}/{}", q(target, "/value"))
            }
        }
        "Pods" => {
            let cur = st("pods")
                .map(|s| q(s, "/current/averageValue"))
                .unwrap_or_else(unknown);
            format!("{cur}/{}", q(spec, "/pods/target/averageValue"))
        }
        "Resource" | "ContainerResource" => {
            let source = if str_at(spec, "/type") == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let src = spec.get(source).unwrap_or(&Value::Null);
            let name = str_at(src, "/name");
            if is_set(src, "/target/averageValue") {
                let cur = st(source)
                    .map(|s| q(s, "/current/averageValue"))
                    .unwrap_or_else(unknown);
                format!("{name}: {cur}/{}", q(src, "/target/averageValue"))
            } else {
                let cur = st(source)
                    .and_then(|s| opt_int(s, "/current/averageUtilization"))
                    .map(|u| format!("{u}%"))
                    .unwrap_or_else(unknown);
                let target = opt_int(src, "/target/averageUtilization")
                    .map(|u| format!("{u}%"))
                    .unwrap_or_else(|| "<auto>".into());
                format!("{name}: {cur}/{target}")
            }
        }
        _ => "<unknown type>".into(),
    }
}
