//! `kubectl get` tables (`Accept: ...;as=Table`): per-kind column definitions
//! and row cells mirroring upstream's server-side printers
//! (`pkg/printers/internalversion`, v1.33), so `kubectl get` and `-o wide`
//! print what they print against K3s.
//!
//! Data-driven: [`PRINTERS`] maps (group, kind) to a list of columns, each
//! knowing how to compute its cell. As upstream's server does, every cell is
//! produced, wide ones included; `kubectl` hides priority-1 columns unless
//! `-o wide` is given.

mod apps;
mod core;
mod misc;
mod pod;
mod time;
mod util;

use serde_json::{Value, json};

pub use time::{human_duration, parse_rfc3339};

/// How a column's cell is computed from the object and the current time.
#[derive(Clone, Copy)]
pub(crate) enum Cell {
    /// `metadata.name`.
    Name,
    /// Age of `metadata.creationTimestamp` (`HumanDuration`).
    Age,
    /// `metadata.creationTimestamp` as RFC 3339 UTC (upstream's default table).
    CreatedAt,
    /// A string at a JSON pointer; "" when absent.
    Str(&'static str),
    /// An integer at a JSON pointer; 0 when absent.
    Int(&'static str),
    /// The number of entries of the list or map at a JSON pointer.
    Len(&'static str),
    /// Anything else.
    Fn(fn(&Value, i64) -> Value),
}

/// One column: upstream's `TableColumnDefinition` plus its cell.
#[derive(Clone, Copy)]
pub(crate) struct Col {
    pub name: &'static str,
    pub ty: &'static str,
    pub format: &'static str,
    pub priority: u8,
    pub desc: &'static str,
    pub cell: Cell,
}

/// A normal column.
pub(crate) const fn col(
    name: &'static str,
    ty: &'static str,
    desc: &'static str,
    cell: Cell,
) -> Col {
    Col {
        name,
        ty,
        format: "",
        priority: 0,
        desc,
        cell,
    }
}

/// A column only `-o wide` shows.
pub(crate) const fn wide(
    name: &'static str,
    ty: &'static str,
    desc: &'static str,
    cell: Cell,
) -> Col {
    Col {
        name,
        ty,
        format: "",
        priority: 1,
        desc,
        cell,
    }
}

pub(crate) const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
pub(crate) const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
pub(crate) const CONTAINERS_DESC: &str = "Names of each container in the template.";
pub(crate) const IMAGES_DESC: &str = "Images referenced by each container in the template.";

pub(crate) const NAME: Col = Col {
    name: "Name",
    ty: "string",
    format: "name",
    priority: 0,
    desc: NAME_DESC,
    cell: Cell::Name,
};
pub(crate) const AGE: Col = col("Age", "string", AGE_DESC, Cell::Age);
const CREATED_AT: Col = col("Created At", "date", AGE_DESC, Cell::CreatedAt);

/// Upstream's default table for kinds without a printer (RBAC roles,
/// LimitRanges, CRDs...).
const DEFAULT_TABLE: &[Col] = &[NAME, CREATED_AT];
/// What kinds unknown to us get: a custom resource without printer columns
/// shows NAME and AGE upstream.
const FALLBACK: &[Col] = &[NAME, AGE];

/// (group, kind) → columns. The core group is "".
static PRINTERS: &[(&str, &str, &[Col])] = &[
    ("", "Pod", pod::POD),
    ("", "PodTemplate", apps::POD_TEMPLATE),
    ("", "ReplicationController", apps::REPLICATION_CONTROLLER),
    ("", "Service", core::SERVICE),
    ("", "Endpoints", core::ENDPOINTS),
    ("", "Node", core::NODE),
    ("", "Namespace", core::NAMESPACE),
    ("", "Event", core::EVENT),
    ("", "ConfigMap", core::CONFIG_MAP),
    ("", "Secret", core::SECRET),
    ("", "ServiceAccount", core::SERVICE_ACCOUNT),
    ("", "PersistentVolume", core::PERSISTENT_VOLUME),
    ("", "PersistentVolumeClaim", core::PERSISTENT_VOLUME_CLAIM),
    ("", "ResourceQuota", core::RESOURCE_QUOTA),
    ("", "ComponentStatus", core::COMPONENT_STATUS),
    ("", "LimitRange", DEFAULT_TABLE),
    ("events.k8s.io", "Event", core::EVENT_V1),
    ("apps", "Deployment", apps::DEPLOYMENT),
    ("apps", "ReplicaSet", apps::REPLICA_SET),
    ("apps", "StatefulSet", apps::STATEFUL_SET),
    ("apps", "DaemonSet", apps::DAEMON_SET),
    ("apps", "ControllerRevision", apps::CONTROLLER_REVISION),
    ("batch", "Job", apps::JOB),
    ("batch", "CronJob", apps::CRON_JOB),
    ("autoscaling", "HorizontalPodAutoscaler", misc::HPA),
    ("coordination.k8s.io", "Lease", misc::LEASE),
    ("discovery.k8s.io", "EndpointSlice", misc::ENDPOINT_SLICE),
    ("networking.k8s.io", "Ingress", misc::INGRESS),
    ("networking.k8s.io", "IngressClass", misc::INGRESS_CLASS),
    ("networking.k8s.io", "NetworkPolicy", misc::NETWORK_POLICY),
    ("networking.k8s.io", "ServiceCIDR", misc::SERVICE_CIDR),
    ("networking.k8s.io", "IPAddress", misc::IP_ADDRESS),
    ("storage.k8s.io", "StorageClass", misc::STORAGE_CLASS),
    (
        "storage.k8s.io",
        "VolumeAttachment",
        misc::VOLUME_ATTACHMENT,
    ),
    ("storage.k8s.io", "CSIDriver", misc::CSI_DRIVER),
    ("storage.k8s.io", "CSINode", misc::CSI_NODE),
    (
        "storage.k8s.io",
        "CSIStorageCapacity",
        misc::CSI_STORAGE_CAPACITY,
    ),
    (
        "storage.k8s.io",
        "VolumeAttributesClass",
        misc::VOLUME_ATTRIBUTES_CLASS,
    ),
    ("scheduling.k8s.io", "PriorityClass", misc::PRIORITY_CLASS),
    ("node.k8s.io", "RuntimeClass", misc::RUNTIME_CLASS),
    ("policy", "PodDisruptionBudget", misc::POD_DISRUPTION_BUDGET),
    ("rbac.authorization.k8s.io", "Role", DEFAULT_TABLE),
    ("rbac.authorization.k8s.io", "ClusterRole", DEFAULT_TABLE),
    (
        "rbac.authorization.k8s.io",
        "RoleBinding",
        misc::ROLE_BINDING,
    ),
    (
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        misc::CLUSTER_ROLE_BINDING,
    ),
    (
        "certificates.k8s.io",
        "CertificateSigningRequest",
        misc::CSR,
    ),
    (
        "certificates.k8s.io",
        "ClusterTrustBundle",
        misc::CLUSTER_TRUST_BUNDLE,
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        misc::WEBHOOK_CONFIGURATION,
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        misc::WEBHOOK_CONFIGURATION,
    ),
    (
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        DEFAULT_TABLE,
    ),
    ("apiregistration.k8s.io", "APIService", misc::API_SERVICE),
    (
        "flowcontrol.apiserver.k8s.io",
        "FlowSchema",
        misc::FLOW_SCHEMA,
    ),
    (
        "flowcontrol.apiserver.k8s.io",
        "PriorityLevelConfiguration",
        misc::PRIORITY_LEVEL,
    ),
];

fn columns(group: &str, kind: &str) -> &'static [Col] {
    PRINTERS
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map(|(_, _, cols)| *cols)
        .unwrap_or(FALLBACK)
}

/// The `columnDefinitions` of a `Table` for a kind: a JSON array of
/// `{name, type, format, description, priority}`.
pub fn column_definitions(group: &str, kind: &str) -> Value {
    Value::Array(
        columns(group, kind)
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.ty,
                    "format": c.format,
                    "description": c.desc,
                    "priority": c.priority,
                })
            })
            .collect(),
    )
}

/// The cells of one object's row, in column order; `now_unix` is the
/// current time for ages.
pub fn row_cells(group: &str, kind: &str, obj: &Value, now_unix: i64) -> Value {
    Value::Array(
        columns(group, kind)
            .iter()
            .map(|c| cell(c.cell, obj, now_unix))
            .collect(),
    )
}

fn cell(c: Cell, obj: &Value, now: i64) -> Value {
    match c {
        Cell::Name => json!(util::str_at(obj, "/metadata/name")),
        Cell::Age => json!(util::age(obj, now)),
        Cell::CreatedAt => json!(util::created_at(obj)),
        Cell::Str(p) => json!(util::str_at(obj, p)),
        Cell::Int(p) => json!(util::int_at(obj, p)),
        Cell::Len(p) => json!(util::len_at(obj, p)),
        Cell::Fn(f) => f(obj, now),
    }
}

#[cfg(test)]
mod tests;
