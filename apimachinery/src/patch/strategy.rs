//! Which lists of the built-in API types merge (and by which key) under a
//! strategic merge patch.
//!
//! Upstream reads this from `patchStrategy`/`patchMergeKey` struct tags; we
//! keep the same facts as data (taken from the v1.33 `k8s.io/api` types): one
//! table of rules `(type, field) -> (value type, shape, strategy, merge key)`
//! and one table mapping kinds to their root type. Only fields that have a
//! strategy, or lead to a type that has one, are listed; everything else is a
//! plain map (merged key by key) or an atomic list (replaced wholesale).

/// How a list (or map) field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchStrategy {
    /// Replaced wholesale by the patch value (upstream's default for lists).
    Replace,
    /// Merged element by element (by merge key, or as a set of primitives).
    Merge,
}

/// The patch strategy of one list field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListStrategy {
    pub strategy: PatchStrategy,
    /// Field identifying an element in a merged list of objects; `None` for
    /// lists of primitives (merged as sets) and for replaced lists.
    pub merge_key: Option<&'static str>,
    /// Elements carry `patchStrategy: retainKeys` (e.g. pod `volumes`): a
    /// client sending one element means "these keys and no others".
    pub retain_keys: bool,
}

/// The `patchStrategy` tag of a field, as upstream spells its combinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    None,
    Merge,
    MergeRetainKeys,
    RetainKeys,
    Replace,
}

use Tag::{Merge as MERGE, MergeRetainKeys as MERGE_RETAIN, None as NONE};

/// One field of one API type.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    pub owner: &'static str,
    pub field: &'static str,
    /// Type of the value (of each element, for lists); "" when nothing below
    /// the field has a strategy.
    pub ty: &'static str,
    pub list: bool,
    pub tag: Tag,
    pub key: &'static str,
}

impl Rule {
    pub(super) fn merges(&self) -> bool {
        matches!(self.tag, Tag::Merge | Tag::MergeRetainKeys)
    }

    pub(super) fn merge_key(&self) -> Option<&'static str> {
        (!self.key.is_empty()).then_some(self.key)
    }

    fn list_strategy(&self) -> Option<ListStrategy> {
        self.list.then(|| ListStrategy {
            strategy: if self.merges() {
                PatchStrategy::Merge
            } else {
                PatchStrategy::Replace
            },
            merge_key: self.merge_key(),
            retain_keys: self.tag == Tag::MergeRetainKeys,
        })
    }
}

const fn obj(owner: &'static str, field: &'static str, ty: &'static str) -> Rule {
    Rule {
        owner,
        field,
        ty,
        list: false,
        tag: Tag::None,
        key: "",
    }
}

const fn list(
    owner: &'static str,
    field: &'static str,
    ty: &'static str,
    tag: Tag,
    key: &'static str,
) -> Rule {
    Rule {
        owner,
        field,
        ty,
        list: true,
        tag,
        key,
    }
}

const fn map_field(owner: &'static str, field: &'static str, tag: Tag) -> Rule {
    Rule {
        owner,
        field,
        ty: "",
        list: false,
        tag,
        key: "",
    }
}

/// Root type of kinds that have nothing but `metadata` to know about.
const GENERIC: &str = "Object";

#[rustfmt::skip]
static RULES: &[Rule] = &[
    obj(GENERIC, "metadata", "ObjectMeta"),
    // meta/v1
    list("ObjectMeta", "ownerReferences", "", MERGE, "uid"),
    list("ObjectMeta", "finalizers", "", MERGE, ""),
    // core/v1: pods and their templates
    obj("Pod", "metadata", "ObjectMeta"),
    obj("Pod", "spec", "PodSpec"),
    obj("Pod", "status", "PodStatus"),
    obj("PodTemplate", "metadata", "ObjectMeta"),
    obj("PodTemplate", "template", "PodTemplateSpec"),
    obj("PodTemplateSpec", "metadata", "ObjectMeta"),
    obj("PodTemplateSpec", "spec", "PodSpec"),
    list("PodSpec", "volumes", "Volume", MERGE_RETAIN, "name"),
    list("PodSpec", "initContainers", "Container", MERGE, "name"),
    list("PodSpec", "containers", "Container", MERGE, "name"),
    list("PodSpec", "ephemeralContainers", "EphemeralContainer", MERGE, "name"),
    list("PodSpec", "imagePullSecrets", "", MERGE, "name"),
    list("PodSpec", "hostAliases", "", MERGE, "ip"),
    list("PodSpec", "topologySpreadConstraints", "", MERGE, "topologyKey"),
    list("PodSpec", "schedulingGates", "", MERGE, "name"),
    list("PodSpec", "resourceClaims", "", MERGE_RETAIN, "name"),
    // Atomic upstream (no tag); listed so `list_strategy` can say so.
    list("PodSpec", "tolerations", "", NONE, ""),
    list("Container", "ports", "", MERGE, "containerPort"),
    list("Container", "env", "", MERGE, "name"),
    list("Container", "volumeMounts", "", MERGE, "mountPath"),
    list("Container", "volumeDevices", "", MERGE, "devicePath"),
    list("Container", "resizePolicy", "", NONE, ""),
    list("EphemeralContainer", "ports", "", MERGE, "containerPort"),
    list("EphemeralContainer", "env", "", MERGE, "name"),
    list("EphemeralContainer", "volumeMounts", "", MERGE, "mountPath"),
    list("EphemeralContainer", "volumeDevices", "", MERGE, "devicePath"),
    list("EphemeralContainer", "resizePolicy", "", NONE, ""),
    obj("Volume", "ephemeral", "EphemeralVolumeSource"),
    obj("EphemeralVolumeSource", "volumeClaimTemplate", "PersistentVolumeClaimTemplate"),
    obj("PersistentVolumeClaimTemplate", "metadata", "ObjectMeta"),
    list("PodStatus", "conditions", "", MERGE, "type"),
    list("PodStatus", "hostIPs", "", MERGE, "ip"),
    list("PodStatus", "podIPs", "", MERGE, "ip"),
    list("PodStatus", "initContainerStatuses", "ContainerStatus", NONE, ""),
    list("PodStatus", "containerStatuses", "ContainerStatus", NONE, ""),
    list("PodStatus", "ephemeralContainerStatuses", "ContainerStatus", NONE, ""),
    list("PodStatus", "resourceClaimStatuses", "", MERGE_RETAIN, "name"),
    list("ContainerStatus", "volumeMounts", "", MERGE, "mountPath"),
    list("ContainerStatus", "allocatedResourcesStatus", "", MERGE, "name"),
    // core/v1: other kinds
    obj("ReplicationController", "metadata", "ObjectMeta"),
    obj("ReplicationController", "spec", "ReplicationControllerSpec"),
    obj("ReplicationController", "status", "ReplicationControllerStatus"),
    obj("ReplicationControllerSpec", "template", "PodTemplateSpec"),
    list("ReplicationControllerStatus", "conditions", "", MERGE, "type"),
    obj("Service", "metadata", "ObjectMeta"),
    obj("Service", "spec", "ServiceSpec"),
    obj("Service", "status", "ServiceStatus"),
    list("ServiceSpec", "ports", "", MERGE, "port"),
    list("ServiceStatus", "conditions", "", MERGE, "type"),
    obj("Node", "metadata", "ObjectMeta"),
    obj("Node", "spec", "NodeSpec"),
    obj("Node", "status", "NodeStatus"),
    list("NodeSpec", "podCIDRs", "", MERGE, ""),
    list("NodeSpec", "taints", "", NONE, ""),
    list("NodeStatus", "conditions", "", MERGE, "type"),
    list("NodeStatus", "addresses", "", MERGE, "type"),
    obj("Namespace", "metadata", "ObjectMeta"),
    obj("Namespace", "status", "NamespaceStatus"),
    list("NamespaceStatus", "conditions", "", MERGE, "type"),
    obj("ServiceAccount", "metadata", "ObjectMeta"),
    list("ServiceAccount", "secrets", "", MERGE, "name"),
    list("ServiceAccount", "imagePullSecrets", "", NONE, ""),
    obj("Endpoints", "metadata", "ObjectMeta"),
    list("Endpoints", "subsets", "", NONE, ""),
    obj("PersistentVolumeClaim", "metadata", "ObjectMeta"),
    obj("PersistentVolumeClaim", "status", "PersistentVolumeClaimStatus"),
    list("PersistentVolumeClaimStatus", "conditions", "", MERGE, "type"),
    obj("ComponentStatus", "metadata", "ObjectMeta"),
    list("ComponentStatus", "conditions", "", MERGE, "type"),
    // apps/v1
    obj("Deployment", "metadata", "ObjectMeta"),
    obj("Deployment", "spec", "DeploymentSpec"),
    obj("Deployment", "status", "DeploymentStatus"),
    obj("DeploymentSpec", "template", "PodTemplateSpec"),
    map_field("DeploymentSpec", "strategy", Tag::RetainKeys),
    list("DeploymentStatus", "conditions", "", MERGE, "type"),
    obj("ReplicaSet", "metadata", "ObjectMeta"),
    obj("ReplicaSet", "spec", "ReplicaSetSpec"),
    obj("ReplicaSet", "status", "ReplicaSetStatus"),
    obj("ReplicaSetSpec", "template", "PodTemplateSpec"),
    list("ReplicaSetStatus", "conditions", "", MERGE, "type"),
    obj("StatefulSet", "metadata", "ObjectMeta"),
    obj("StatefulSet", "spec", "StatefulSetSpec"),
    obj("StatefulSet", "status", "StatefulSetStatus"),
    obj("StatefulSetSpec", "template", "PodTemplateSpec"),
    list("StatefulSetSpec", "volumeClaimTemplates", "PersistentVolumeClaim", NONE, ""),
    list("StatefulSetStatus", "conditions", "", MERGE, "type"),
    obj("DaemonSet", "metadata", "ObjectMeta"),
    obj("DaemonSet", "spec", "DaemonSetSpec"),
    obj("DaemonSet", "status", "DaemonSetStatus"),
    obj("DaemonSetSpec", "template", "PodTemplateSpec"),
    list("DaemonSetStatus", "conditions", "", MERGE, "type"),
    // batch/v1
    obj("Job", "metadata", "ObjectMeta"),
    obj("Job", "spec", "JobSpec"),
    obj("Job", "status", "JobStatus"),
    obj("JobSpec", "template", "PodTemplateSpec"),
    list("JobStatus", "conditions", "", MERGE, "type"),
    obj("CronJob", "metadata", "ObjectMeta"),
    obj("CronJob", "spec", "CronJobSpec"),
    obj("CronJobSpec", "jobTemplate", "JobTemplateSpec"),
    obj("JobTemplateSpec", "metadata", "ObjectMeta"),
    obj("JobTemplateSpec", "spec", "JobSpec"),
    // autoscaling/v2
    obj("HorizontalPodAutoscaler", "metadata", "ObjectMeta"),
    obj("HorizontalPodAutoscaler", "status", "HorizontalPodAutoscalerStatus"),
    list("HorizontalPodAutoscalerStatus", "conditions", "", MERGE, "type"),
    // policy/v1
    obj("PodDisruptionBudget", "metadata", "ObjectMeta"),
    obj("PodDisruptionBudget", "spec", "PodDisruptionBudgetSpec"),
    obj("PodDisruptionBudget", "status", "PodDisruptionBudgetStatus"),
    map_field("PodDisruptionBudgetSpec", "selector", Tag::Replace),
    list("PodDisruptionBudgetStatus", "conditions", "", MERGE, "type"),
    // admissionregistration.k8s.io/v1
    obj("ValidatingWebhookConfiguration", "metadata", "ObjectMeta"),
    list("ValidatingWebhookConfiguration", "webhooks", "ValidatingWebhook", MERGE, "name"),
    list("ValidatingWebhook", "matchConditions", "", MERGE, "name"),
    obj("MutatingWebhookConfiguration", "metadata", "ObjectMeta"),
    list("MutatingWebhookConfiguration", "webhooks", "MutatingWebhook", MERGE, "name"),
    list("MutatingWebhook", "matchConditions", "", MERGE, "name"),
    obj("ValidatingAdmissionPolicy", "metadata", "ObjectMeta"),
    obj("ValidatingAdmissionPolicy", "spec", "ValidatingAdmissionPolicySpec"),
    list("ValidatingAdmissionPolicySpec", "matchConditions", "", MERGE, "name"),
    list("ValidatingAdmissionPolicySpec", "variables", "", MERGE, "name"),
    // flowcontrol.apiserver.k8s.io/v1
    obj("FlowSchema", "metadata", "ObjectMeta"),
    obj("FlowSchema", "status", "FlowSchemaStatus"),
    list("FlowSchemaStatus", "conditions", "", MERGE, "type"),
    obj("PriorityLevelConfiguration", "metadata", "ObjectMeta"),
    obj("PriorityLevelConfiguration", "status", "PriorityLevelConfigurationStatus"),
    list("PriorityLevelConfigurationStatus", "conditions", "", MERGE, "type"),
    // resource.k8s.io/v1beta2
    obj("ResourceClaim", "metadata", "ObjectMeta"),
    obj("ResourceClaim", "status", "ResourceClaimStatus"),
    list("ResourceClaimStatus", "reservedFor", "", MERGE, "uid"),
    obj("ResourceClaimTemplate", "metadata", "ObjectMeta"),
    obj("ResourceClaimTemplate", "spec", "ResourceClaimTemplateSpec"),
    obj("ResourceClaimTemplateSpec", "metadata", "ObjectMeta"),
    // storage.k8s.io/v1
    obj("CSINode", "metadata", "ObjectMeta"),
    obj("CSINode", "spec", "CSINodeSpec"),
    list("CSINodeSpec", "drivers", "", MERGE, "name"),
];

/// `(group, kind, root type)` for kinds with more than metadata to know
/// about; other kinds of a built-in group use [`GENERIC`].
#[rustfmt::skip]
static KINDS: &[(&str, &str, &str)] = &[
    ("", "Pod", "Pod"),
    ("", "PodTemplate", "PodTemplate"),
    ("", "ReplicationController", "ReplicationController"),
    ("", "Service", "Service"),
    ("", "Node", "Node"),
    ("", "Namespace", "Namespace"),
    ("", "ServiceAccount", "ServiceAccount"),
    ("", "Endpoints", "Endpoints"),
    ("", "PersistentVolumeClaim", "PersistentVolumeClaim"),
    ("", "ComponentStatus", "ComponentStatus"),
    ("apps", "Deployment", "Deployment"),
    ("apps", "ReplicaSet", "ReplicaSet"),
    ("apps", "StatefulSet", "StatefulSet"),
    ("apps", "DaemonSet", "DaemonSet"),
    ("batch", "Job", "Job"),
    ("batch", "CronJob", "CronJob"),
    ("autoscaling", "HorizontalPodAutoscaler", "HorizontalPodAutoscaler"),
    ("policy", "PodDisruptionBudget", "PodDisruptionBudget"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicy"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration", "PriorityLevelConfiguration"),
    ("resource.k8s.io", "ResourceClaim", "ResourceClaim"),
    ("resource.k8s.io", "ResourceClaimTemplate", "ResourceClaimTemplate"),
    ("storage.k8s.io", "CSINode", "CSINode"),
];

/// API groups served from compiled-in Go types upstream: every kind in them
/// accepts strategic merge patches. Any other group is a CRD or an
/// aggregated API, for which upstream answers 415.
static BUILTIN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// Patch strategies of one kind, resolved field by field while walking a
/// document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrategyLookup {
    /// Root type name; `None` for kinds we know nothing about.
    root: Option<&'static str>,
}

impl StrategyLookup {
    /// The strategies of `kind` in API group `group` ("" = core).
    pub fn for_kind(group: &str, kind: &str) -> StrategyLookup {
        if !BUILTIN_GROUPS.contains(&group) {
            return StrategyLookup { root: None };
        }
        let root = KINDS
            .iter()
            .find(|(g, k, _)| *g == group && *k == kind)
            .map_or(GENERIC, |(_, _, ty)| ty);
        StrategyLookup { root: Some(root) }
    }

    /// Whether strategic merge patch is allowed (the kind is built in).
    pub fn is_known(&self) -> bool {
        self.root.is_some()
    }

    /// The strategy of the list at `path` (field names from the object root,
    /// no indexes: list elements are stepped into implicitly), or `None`
    /// when the path does not name a list we have rules for.
    pub fn list_strategy(&self, path: &[&str]) -> Option<ListStrategy> {
        let (last, parents) = path.split_last()?;
        let mut ty = self.root?;
        for name in parents {
            ty = rule(ty, name)?.ty;
        }
        rule(ty, last).and_then(Rule::list_strategy)
    }

    /// Root type name for the strategic merge walk ("" when unknown).
    pub(super) fn root(&self) -> &'static str {
        self.root.unwrap_or("")
    }
}

/// The strategy of list field `field` of API type `owner` (the type's name
/// as in OpenAPI definitions, e.g. `PodSpec`, `ObjectMeta`); `None` when it
/// is not a list the table knows.
pub fn field_strategy(owner: &str, field: &str) -> Option<ListStrategy> {
    rule(owner, field).and_then(Rule::list_strategy)
}

/// Upstream's `patchStrategy` tag of `owner.field` (`merge`,
/// `merge,retainKeys`, `retainKeys` or `replace`), the value OpenAPI
/// publishes as `x-kubernetes-patch-strategy`. Unlike [`field_strategy`]
/// this also covers map fields such as `DeploymentSpec.strategy`, whose
/// `retainKeys` kubectl needs to switch a Deployment to `Recreate`.
pub fn patch_strategy_tag(owner: &str, field: &str) -> Option<&'static str> {
    match rule(owner, field)?.tag {
        Tag::None => None,
        Tag::Merge => Some("merge"),
        Tag::MergeRetainKeys => Some("merge,retainKeys"),
        Tag::RetainKeys => Some("retainKeys"),
        Tag::Replace => Some("replace"),
    }
}

/// The rule for `field` of type `ty`, if the table has one.
pub(super) fn rule(ty: &str, field: &str) -> Option<&'static Rule> {
    if ty.is_empty() {
        return None;
    }
    RULES.iter().find(|r| r.owner == ty && r.field == field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_unique_and_types_resolve() {
        for (i, r) in RULES.iter().enumerate() {
            assert!(
                !RULES[..i]
                    .iter()
                    .any(|o| o.owner == r.owner && o.field == r.field),
                "duplicate rule {}.{}",
                r.owner,
                r.field
            );
            if !r.ty.is_empty() {
                assert!(
                    RULES.iter().any(|o| o.owner == r.ty),
                    "{}.{} leads to unknown type {}",
                    r.owner,
                    r.field,
                    r.ty
                );
            }
            if !r.key.is_empty() {
                assert!(
                    r.list && r.merges(),
                    "merge key on a non-merge field {}.{}",
                    r.owner,
                    r.field
                );
            }
        }
        for (g, k, ty) in KINDS {
            assert!(BUILTIN_GROUPS.contains(g), "{k} in unknown group {g}");
            assert!(
                rule(ty, "metadata").is_some(),
                "{k} root has no metadata rule"
            );
        }
    }

    #[test]
    fn resolves_nested_lists() {
        let d = StrategyLookup::for_kind("apps", "Deployment");
        let c = d
            .list_strategy(&["spec", "template", "spec", "containers"])
            .unwrap();
        assert_eq!(c.strategy, PatchStrategy::Merge);
        assert_eq!(c.merge_key, Some("name"));
        let env = d
            .list_strategy(&["spec", "template", "spec", "containers", "env"])
            .unwrap();
        assert_eq!(env.merge_key, Some("name"));
        let ports = d
            .list_strategy(&["spec", "template", "spec", "containers", "ports"])
            .unwrap();
        assert_eq!(ports.merge_key, Some("containerPort"));
        let vols = d
            .list_strategy(&["spec", "template", "spec", "volumes"])
            .unwrap();
        assert!(vols.retain_keys);
        let tol = d
            .list_strategy(&["spec", "template", "spec", "tolerations"])
            .unwrap();
        assert_eq!(tol.strategy, PatchStrategy::Replace);
        assert_eq!(d.list_strategy(&["spec", "template", "spec", "nope"]), None);
        assert_eq!(d.list_strategy(&[]), None);

        let cj = StrategyLookup::for_kind("batch", "CronJob");
        let c = cj.list_strategy(&[
            "spec",
            "jobTemplate",
            "spec",
            "template",
            "spec",
            "initContainers",
        ]);
        assert_eq!(c.and_then(|c| c.merge_key), Some("name"));

        let fin = StrategyLookup::for_kind("", "ConfigMap")
            .list_strategy(&["metadata", "finalizers"])
            .unwrap();
        assert_eq!((fin.strategy, fin.merge_key), (PatchStrategy::Merge, None));
        let owners = StrategyLookup::for_kind("rbac.authorization.k8s.io", "Role")
            .list_strategy(&["metadata", "ownerReferences"])
            .unwrap();
        assert_eq!(owners.merge_key, Some("uid"));
        let svc = StrategyLookup::for_kind("", "Service")
            .list_strategy(&["spec", "ports"])
            .unwrap();
        assert_eq!(svc.merge_key, Some("port"));
        let node = StrategyLookup::for_kind("", "Node");
        assert_eq!(
            node.list_strategy(&["status", "addresses"])
                .unwrap()
                .merge_key,
            Some("type")
        );
    }

    #[test]
    fn by_type_name() {
        let env = field_strategy("Container", "env").unwrap();
        assert_eq!(
            (env.strategy, env.merge_key),
            (PatchStrategy::Merge, Some("name"))
        );
        assert!(field_strategy("PodSpec", "volumes").unwrap().retain_keys);
        let tol = field_strategy("PodSpec", "tolerations").unwrap();
        assert_eq!(tol.strategy, PatchStrategy::Replace);
        // Map fields are not lists.
        assert_eq!(field_strategy("DeploymentSpec", "strategy"), None);
        assert_eq!(field_strategy("PodSpec", "nodeSelector"), None);
        assert_eq!(
            patch_strategy_tag("DeploymentSpec", "strategy"),
            Some("retainKeys")
        );
        assert_eq!(
            patch_strategy_tag("PodSpec", "volumes"),
            Some("merge,retainKeys")
        );
        assert_eq!(
            patch_strategy_tag("ObjectMeta", "finalizers"),
            Some("merge")
        );
        assert_eq!(
            patch_strategy_tag("PodDisruptionBudgetSpec", "selector"),
            Some("replace")
        );
        assert_eq!(patch_strategy_tag("PodSpec", "tolerations"), None);
        assert_eq!(patch_strategy_tag("Pod", "spec"), None);
    }

    #[test]
    fn known_kinds() {
        assert!(StrategyLookup::for_kind("", "Pod").is_known());
        assert!(StrategyLookup::for_kind("", "ConfigMap").is_known());
        assert!(StrategyLookup::for_kind("networking.k8s.io", "Ingress").is_known());
        assert!(
            StrategyLookup::for_kind("apiextensions.k8s.io", "CustomResourceDefinition").is_known()
        );
        assert!(!StrategyLookup::for_kind("example.com", "Widget").is_known());
        assert!(!StrategyLookup::for_kind("snapshot.storage.k8s.io", "VolumeSnapshot").is_known());
        let crd = StrategyLookup::for_kind("example.com", "Widget");
        assert_eq!(crd.list_strategy(&["metadata", "finalizers"]), None);
    }
}
