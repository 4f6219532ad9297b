//! The built-in resources k3rs serves, as one data table. Everything that is
//! per resource (URL names, scope, etcd key, field selectors, subresources)
//! lives here so that one generic REST path serves all of them.

/// How a resource is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Persisted under `/registry/<key>/...`.
    Etcd(&'static str),
    /// Create-only review objects answered on the spot, never stored.
    Virtual,
}

#[derive(Debug)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [&'static str],
    pub storage: Storage,
    /// Field selectors beyond `metadata.name` / `metadata.namespace`.
    pub fields: &'static [&'static str],
}

impl ResourceDef {
    /// `apiVersion` as written in objects: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn has_subresource(&self, s: &str) -> bool {
        self.subresources.contains(&s)
    }

    /// The etcd key prefix of all objects (ends with `/`), or of one namespace.
    pub fn key_prefix(&self, namespace: Option<&str>) -> Option<String> {
        let Storage::Etcd(k) = self.storage else {
            return None;
        };
        Some(match namespace {
            Some(ns) if self.namespaced => format!("/registry/{k}/{ns}/"),
            _ => format!("/registry/{k}/"),
        })
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> Option<String> {
        self.key_prefix(namespace).map(|p| format!("{p}{name}"))
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        match self.storage {
            Storage::Virtual => &["create"],
            Storage::Etcd(_) => &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        }
    }
}

const NONE: &[&str] = &[];
const ALL: &[&str] = &["all"];
const STATUS: &[&str] = &["status"];
const STATUS_SCALE: &[&str] = &["status", "scale"];
const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

macro_rules! res {
    ($g:expr, $v:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr, $storage:expr, $fields:expr) => {
        ResourceDef {
            group: $g,
            version: $v,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            storage: $storage,
            fields: $fields,
        }
    };
}

use Storage::{Etcd, Virtual};

/// Every built-in resource, grouped by API group in discovery order.
#[rustfmt::skip] // one row per resource reads as a table
pub static RESOURCES: &[ResourceDef] = &[
    // core/v1
    res!("", "v1", "Namespace", "namespaces", "namespace", false, &["ns"], NONE, &["status", "finalize"], Etcd("namespaces"), &["status.phase"]),
    res!("", "v1", "Pod", "pods", "pod", true, &["po"], ALL, &["status", "binding", "eviction", "ephemeralcontainers", "log", "exec", "attach", "portforward", "proxy"], Etcd("pods"), POD_FIELDS),
    res!("", "v1", "Service", "services", "service", true, &["svc"], ALL, &["status", "proxy"], Etcd("services/specs"), NONE),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", true, &["ep"], NONE, NONE, Etcd("services/endpoints"), NONE),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", true, &["cm"], NONE, NONE, Etcd("configmaps"), NONE),
    res!("", "v1", "Secret", "secrets", "secret", true, NONE, NONE, NONE, Etcd("secrets"), &["type"]),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, &["sa"], NONE, &["token"], Etcd("serviceaccounts"), NONE),
    res!("", "v1", "Node", "nodes", "node", false, &["no"], NONE, &["status", "proxy"], Etcd("minions"), &["spec.unschedulable"]),
    res!("", "v1", "Event", "events", "event", true, &["ev"], NONE, NONE, Etcd("events"), EVENT_FIELDS),
    res!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false, &["pv"], NONE, STATUS, Etcd("persistentvolumes"), NONE),
    res!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true, &["pvc"], NONE, STATUS, Etcd("persistentvolumeclaims"), NONE),
    res!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", true, &["quota"], NONE, STATUS, Etcd("resourcequotas"), NONE),
    res!("", "v1", "LimitRange", "limitranges", "limitrange", true, &["limits"], NONE, NONE, Etcd("limitranges"), NONE),
    res!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", true, &["rc"], ALL, &["status", "scale"], Etcd("controllers"), &["status.replicas"]),
    res!("", "v1", "PodTemplate", "podtemplates", "podtemplate", true, NONE, NONE, NONE, Etcd("podtemplates"), NONE),
    // apps/v1
    res!("apps", "v1", "Deployment", "deployments", "deployment", true, &["deploy"], ALL, STATUS_SCALE, Etcd("deployments"), NONE),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, &["rs"], ALL, STATUS_SCALE, Etcd("replicasets"), &["status.replicas"]),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, &["sts"], ALL, STATUS_SCALE, Etcd("statefulsets"), NONE),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, &["ds"], ALL, STATUS, Etcd("daemonsets"), NONE),
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, NONE, NONE, NONE, Etcd("controllerrevisions"), NONE),
    // batch/v1
    res!("batch", "v1", "Job", "jobs", "job", true, NONE, ALL, STATUS, Etcd("jobs"), &["status.successful"]),
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, &["cj"], ALL, STATUS, Etcd("cronjobs"), NONE),
    // authentication / authorization (virtual)
    res!("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", "tokenreview", false, NONE, NONE, NONE, Virtual, NONE),
    res!("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview", false, NONE, NONE, NONE, Virtual, NONE),
    res!("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews", "subjectaccessreview", false, NONE, NONE, NONE, Virtual, NONE),
    res!("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", "selfsubjectaccessreview", false, NONE, NONE, NONE, Virtual, NONE),
    res!("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", "selfsubjectrulesreview", false, NONE, NONE, NONE, Virtual, NONE),
    res!("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews", "localsubjectaccessreview", true, NONE, NONE, NONE, Virtual, NONE),
    // coordination, discovery, events
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, NONE, NONE, NONE, Etcd("leases"), NONE),
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, NONE, NONE, NONE, Etcd("endpointslices"), NONE),
    res!("events.k8s.io", "v1", "Event", "events", "event", true, &["ev"], NONE, NONE, Etcd("events"), EVENT_FIELDS),
    // rbac
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, NONE, NONE, NONE, Etcd("clusterroles"), NONE),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", false, NONE, NONE, NONE, Etcd("clusterrolebindings"), NONE),
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, NONE, NONE, NONE, Etcd("roles"), NONE),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, NONE, NONE, NONE, Etcd("rolebindings"), NONE),
    // networking
    res!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, &["ing"], NONE, STATUS, Etcd("ingress"), NONE),
    res!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", false, NONE, NONE, NONE, Etcd("ingressclasses"), NONE),
    res!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", true, &["netpol"], NONE, NONE, Etcd("networkpolicies"), NONE),
    // storage
    res!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", false, &["sc"], NONE, NONE, Etcd("storageclasses"), NONE),
    res!("storage.k8s.io", "v1", "CSIDriver", "csidrivers", "csidriver", false, NONE, NONE, NONE, Etcd("csidrivers"), NONE),
    res!("storage.k8s.io", "v1", "CSINode", "csinodes", "csinode", false, NONE, NONE, NONE, Etcd("csinodes"), NONE),
    res!("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", "volumeattachment", false, NONE, NONE, STATUS, Etcd("volumeattachments"), NONE),
    // policy, scheduling, node, certificates
    res!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true, &["pdb"], NONE, STATUS, Etcd("poddisruptionbudgets"), NONE),
    res!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", false, &["pc"], NONE, NONE, Etcd("priorityclasses"), NONE),
    res!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", false, NONE, NONE, NONE, Etcd("runtimeclasses"), NONE),
    res!("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest", false, &["csr"], NONE, &["status", "approval"], Etcd("certificatesigningrequests"), &["spec.signerName"]),
    // admissionregistration
    res!("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", "mutatingwebhookconfiguration", false, NONE, &["api-extensions"], NONE, Etcd("mutatingwebhookconfigurations"), NONE),
    res!("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", "validatingwebhookconfiguration", false, NONE, &["api-extensions"], NONE, Etcd("validatingwebhookconfigurations"), NONE),
    res!("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", "validatingadmissionpolicy", false, NONE, &["api-extensions"], STATUS, Etcd("validatingadmissionpolicies"), NONE),
    res!("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", "validatingadmissionpolicybinding", false, NONE, &["api-extensions"], NONE, Etcd("validatingadmissionpolicybindings"), NONE),
];

/// Looks a resource up by URL coordinates.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by group/version/kind.
pub fn find_kind(group: &str, version: &str, kind: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// The groups in discovery order, each with its (single, preferred) version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

pub fn in_group_version(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceDef> {
    let (g, v) = (group.to_string(), version.to_string());
    RESOURCES
        .iter()
        .filter(move |r| r.group == g && r.version == v)
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// The resource whose etcd prefix holds `key` (the longest match wins, so
/// `services/specs` and `services/endpoints` stay apart).
pub fn for_key(key: &str) -> Option<&'static ResourceDef> {
    let rest = key.strip_prefix("/registry/")?;
    RESOURCES
        .iter()
        .filter(|r| match r.storage {
            Storage::Etcd(k) => rest.starts_with(k) && rest.as_bytes().get(k.len()) == Some(&b'/'),
            Storage::Virtual => false,
        })
        .max_by_key(|r| match r.storage {
            Storage::Etcd(k) => k.len(),
            Storage::Virtual => 0,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "duplicate {}/{}",
                    a.group,
                    a.plural
                );
            }
        }
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key(Some("default"), "x").unwrap(),
            "/registry/pods/default/x"
        );
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(
            ns.key(Some("ignored"), "kube-system").unwrap(),
            "/registry/namespaces/kube-system"
        );
        assert_eq!(
            find_kind("apps", "v1", "Deployment").unwrap().plural,
            "deployments"
        );
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
    }
}
