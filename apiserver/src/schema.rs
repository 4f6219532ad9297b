//! The OpenAPI schemas of the built-in kinds, generated from the k8s-openapi
//! types, and the field check that upstream gets for free from decoding into
//! Go structs: unknown fields are dropped (or refused with
//! `fieldValidation=Strict`) and values of the wrong JSON type are refused.
//!
//! Objects stay JSON in k3rs, so without this an unknown field would be
//! stored and served back, which no Kubernetes client expects.
//!
//! The full schemas (with descriptions, for the OpenAPI documents) are
//! generated once on first use; the checker works on a compact graph derived
//! from them, so it costs little memory while the documents are dropped.

use std::collections::HashMap;
use std::sync::OnceLock;

use k8s_openapi::api;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value};

type AddFn = fn(&mut SchemaGenerator) -> String;

fn add<T: JsonSchema>(g: &mut SchemaGenerator) -> String {
    g.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// (group, version, kind) → the k8s-openapi type that describes it.
static KINDS: &[(&str, &str, &str, AddFn)] = &[
    ("", "v1", "Namespace", add::<api::core::v1::Namespace>),
    ("", "v1", "Pod", add::<api::core::v1::Pod>),
    ("", "v1", "Service", add::<api::core::v1::Service>),
    ("", "v1", "Endpoints", add::<api::core::v1::Endpoints>),
    ("", "v1", "ConfigMap", add::<api::core::v1::ConfigMap>),
    ("", "v1", "Secret", add::<api::core::v1::Secret>),
    (
        "",
        "v1",
        "ServiceAccount",
        add::<api::core::v1::ServiceAccount>,
    ),
    ("", "v1", "Node", add::<api::core::v1::Node>),
    ("", "v1", "Event", add::<api::core::v1::Event>),
    (
        "",
        "v1",
        "PersistentVolume",
        add::<api::core::v1::PersistentVolume>,
    ),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        add::<api::core::v1::PersistentVolumeClaim>,
    ),
    (
        "",
        "v1",
        "ResourceQuota",
        add::<api::core::v1::ResourceQuota>,
    ),
    ("", "v1", "LimitRange", add::<api::core::v1::LimitRange>),
    (
        "",
        "v1",
        "ReplicationController",
        add::<api::core::v1::ReplicationController>,
    ),
    ("", "v1", "PodTemplate", add::<api::core::v1::PodTemplate>),
    ("", "v1", "Binding", add::<api::core::v1::Binding>),
    ("apps", "v1", "Deployment", add::<api::apps::v1::Deployment>),
    ("apps", "v1", "ReplicaSet", add::<api::apps::v1::ReplicaSet>),
    (
        "apps",
        "v1",
        "StatefulSet",
        add::<api::apps::v1::StatefulSet>,
    ),
    ("apps", "v1", "DaemonSet", add::<api::apps::v1::DaemonSet>),
    (
        "apps",
        "v1",
        "ControllerRevision",
        add::<api::apps::v1::ControllerRevision>,
    ),
    (
        "autoscaling",
        "v1",
        "Scale",
        add::<api::autoscaling::v1::Scale>,
    ),
    ("batch", "v1", "Job", add::<api::batch::v1::Job>),
    ("batch", "v1", "CronJob", add::<api::batch::v1::CronJob>),
    (
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        add::<api::authentication::v1::TokenReview>,
    ),
    (
        "authentication.k8s.io",
        "v1",
        "TokenRequest",
        add::<api::authentication::v1::TokenRequest>,
    ),
    (
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        add::<api::authentication::v1::SelfSubjectReview>,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        add::<api::authorization::v1::SubjectAccessReview>,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        add::<api::authorization::v1::SelfSubjectAccessReview>,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        add::<api::authorization::v1::SelfSubjectRulesReview>,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        add::<api::authorization::v1::LocalSubjectAccessReview>,
    ),
    (
        "coordination.k8s.io",
        "v1",
        "Lease",
        add::<api::coordination::v1::Lease>,
    ),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        add::<api::discovery::v1::EndpointSlice>,
    ),
    (
        "events.k8s.io",
        "v1",
        "Event",
        add::<api::events::v1::Event>,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        add::<api::rbac::v1::ClusterRole>,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        add::<api::rbac::v1::ClusterRoleBinding>,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        add::<api::rbac::v1::Role>,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        add::<api::rbac::v1::RoleBinding>,
    ),
    (
        "networking.k8s.io",
        "v1",
        "Ingress",
        add::<api::networking::v1::Ingress>,
    ),
    (
        "networking.k8s.io",
        "v1",
        "IngressClass",
        add::<api::networking::v1::IngressClass>,
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        add::<api::networking::v1::NetworkPolicy>,
    ),
    (
        "storage.k8s.io",
        "v1",
        "StorageClass",
        add::<api::storage::v1::StorageClass>,
    ),
    (
        "storage.k8s.io",
        "v1",
        "CSIDriver",
        add::<api::storage::v1::CSIDriver>,
    ),
    (
        "storage.k8s.io",
        "v1",
        "CSINode",
        add::<api::storage::v1::CSINode>,
    ),
    (
        "storage.k8s.io",
        "v1",
        "VolumeAttachment",
        add::<api::storage::v1::VolumeAttachment>,
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        add::<api::policy::v1::PodDisruptionBudget>,
    ),
    ("policy", "v1", "Eviction", add::<api::policy::v1::Eviction>),
    (
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        add::<api::scheduling::v1::PriorityClass>,
    ),
    (
        "node.k8s.io",
        "v1",
        "RuntimeClass",
        add::<api::node::v1::RuntimeClass>,
    ),
    (
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        add::<api::certificates::v1::CertificateSigningRequest>,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        add::<api::admissionregistration::v1::MutatingWebhookConfiguration>,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        add::<api::admissionregistration::v1::ValidatingWebhookConfiguration>,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        add::<api::admissionregistration::v1::ValidatingAdmissionPolicy>,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        add::<api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>,
    ),
];

/// Types every document refers to (errors, delete options, watch events, patches).
static META: &[AddFn] = &[
    add::<meta::Status>,
    add::<meta::DeleteOptions>,
    add::<meta::WatchEvent<api::core::v1::Pod>>,
    add::<meta::Patch>,
    add::<meta::APIResourceList>,
];

/// All definitions, by OpenAPI name, plus the name of each kind's definition.
pub struct Definitions {
    pub defs: Map<String, Value>,
    pub kinds: Vec<(&'static str, &'static str, &'static str, String)>,
    pub meta: Vec<String>,
}

impl Definitions {
    /// Generates every schema; the caller keeps the result only as long as
    /// it needs it (the documents are built once and serialized).
    pub fn generate() -> Self {
        let mut g = SchemaSettings::openapi3().into_generator();
        let kinds: Vec<(&'static str, &'static str, &'static str, String)> = KINDS
            .iter()
            .map(|(gr, v, k, f)| (*gr, *v, *k, f(&mut g)))
            .collect();
        let meta: Vec<String> = META.iter().map(|f| f(&mut g)).collect();
        let mut defs = g.take_definitions(true);
        // Mark each kind's schema with its GVK, as upstream's documents do:
        // `kubectl explain` and kubectl's field-validation probe look for it.
        for (gr, v, k, name) in &kinds {
            if let Some(Value::Object(d)) = defs.get_mut(name.as_str()) {
                let entry = serde_json::json!({"group": gr, "version": v, "kind": k});
                match d.get_mut("x-kubernetes-group-version-kind") {
                    Some(Value::Array(a)) => a.push(entry),
                    _ => {
                        d.insert(
                            "x-kubernetes-group-version-kind".into(),
                            Value::Array(vec![entry]),
                        );
                    }
                }
            }
        }
        annotate_patch_strategies(&mut defs);
        Self { defs, kinds, meta }
    }

    pub fn kind_def(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.kinds
            .iter()
            .find(|(g, v, k, _)| *g == group && *v == version && *k == kind)
            .map(|(_, _, _, n)| n.as_str())
    }
}

/// Adds upstream's `x-kubernetes-patch-strategy` / `-merge-key` and list-type
/// extensions, which the k8s-openapi schemas leave out: kubectl's client-side
/// apply computes its strategic merge patches from them.
fn annotate_patch_strategies(defs: &mut Map<String, Value>) {
    use k3rs_apimachinery::patch::{PatchStrategy, field_strategy, patch_strategy_tag};
    for (name, def) in defs.iter_mut() {
        let owner = name.rsplit('.').next().unwrap_or(name).to_string();
        let Some(props) = def.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, schema) in props.iter_mut() {
            let Some(o) = schema.as_object_mut() else {
                continue;
            };
            // `retainKeys` on plain fields (Deployment `strategy`) matters too.
            if let Some(tag) = patch_strategy_tag(&owner, field) {
                o.insert("x-kubernetes-patch-strategy".into(), tag.into());
            }
            let Some(s) = field_strategy(&owner, field) else {
                continue;
            };
            if s.strategy != PatchStrategy::Merge {
                o.insert("x-kubernetes-list-type".into(), "atomic".into());
                continue;
            }
            match s.merge_key {
                Some(k) => {
                    o.insert("x-kubernetes-patch-merge-key".into(), k.into());
                    o.insert("x-kubernetes-list-type".into(), "map".into());
                    o.insert("x-kubernetes-list-map-keys".into(), serde_json::json!([k]));
                }
                None => {
                    o.insert("x-kubernetes-list-type".into(), "set".into());
                }
            }
        }
    }
}

/// The name a `$ref` (direct or wrapped in a one-element `allOf`) points at.
pub fn ref_name(s: &Value) -> Option<&str> {
    let r = s.get("$ref").or_else(|| {
        s.get("allOf")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 1)
            .and_then(|a| a[0].get("$ref"))
    })?;
    r.as_str()?.rsplit('/').next()
}

// ---- the compact checker -------------------------------------------------

/// A position in a kind's schema, for code that walks objects by type
/// (server-side apply's field sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeRef(usize);

/// What a schema position holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A struct, with its type name (`PodSpec`).
    Struct(&'static str),
    Map,
    List,
    Scalar,
    /// Anything (no schema, or free-form JSON).
    Any,
}

impl TypeRef {
    pub fn root(group: &str, version: &str, kind: &str) -> Option<TypeRef> {
        graph()
            .kinds
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .map(|i| TypeRef(*i))
    }

    pub fn shape(self) -> Shape {
        match graph().nodes.get(self.0) {
            Some(Node::Obj(name, _)) => Shape::Struct(name),
            Some(Node::Map(_)) => Shape::Map,
            Some(Node::Arr(_)) => Shape::List,
            Some(Node::Any) | None => Shape::Any,
            Some(_) => Shape::Scalar,
        }
    }

    /// A struct's field.
    pub fn field(self, name: &str) -> Option<TypeRef> {
        match graph().nodes.get(self.0) {
            Some(Node::Obj(_, fields)) => fields.get(name).map(|i| TypeRef(*i)),
            _ => None,
        }
    }

    /// A list's items or a map's values.
    pub fn elem(self) -> Option<TypeRef> {
        match graph().nodes.get(self.0) {
            Some(Node::Arr(i)) | Some(Node::Map(i)) => Some(TypeRef(*i)),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Node {
    Any,
    Str,
    Int(&'static str),
    Num,
    Bool,
    IntOrStr,
    /// A struct: its Go-style type name (for messages) and its fields.
    Obj(Box<str>, HashMap<Box<str>, usize>),
    Map(usize),
    Arr(usize),
}

struct Graph {
    nodes: Vec<Node>,
    kinds: HashMap<(String, String, String), usize>,
}

fn graph() -> &'static Graph {
    static G: OnceLock<Graph> = OnceLock::new();
    G.get_or_init(|| {
        let d = Definitions::generate();
        let mut b = Builder {
            defs: &d.defs,
            nodes: Vec::new(),
            by_name: HashMap::new(),
        };
        let mut kinds = HashMap::new();
        for (g, v, k, name) in &d.kinds {
            let idx = b.def(name);
            kinds.insert((g.to_string(), v.to_string(), k.to_string()), idx);
        }
        Graph {
            nodes: b.nodes,
            kinds,
        }
    })
}

struct Builder<'a> {
    defs: &'a Map<String, Value>,
    nodes: Vec<Node>,
    by_name: HashMap<String, usize>,
}

impl Builder<'_> {
    fn def(&mut self, name: &str) -> usize {
        if let Some(i) = self.by_name.get(name) {
            return *i;
        }
        // Reserve the slot first: definitions refer to themselves
        // (JSONSchemaProps) and to each other.
        let idx = self.push(Node::Any);
        self.by_name.insert(name.to_string(), idx);
        let short = name.rsplit('.').next().unwrap_or(name).to_string();
        if let Some(s) = self.defs.get(name).cloned() {
            let n = self.node_of(&s, &short);
            self.nodes[idx] = n;
        }
        idx
    }

    fn push(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn schema(&mut self, s: &Value, hint: &str) -> usize {
        if let Some(r) = ref_name(s) {
            return self.def(r);
        }
        let n = self.node_of(s, hint);
        self.push(n)
    }

    fn node_of(&mut self, s: &Value, type_name: &str) -> Node {
        if s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
            return Node::IntOrStr;
        }
        if s.get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Node::Any;
        }
        match s.get("type").and_then(Value::as_str) {
            Some("string") => Node::Str,
            Some("integer") => Node::Int(
                if s.get("format").and_then(Value::as_str) == Some("int32") {
                    "int32"
                } else {
                    "int64"
                },
            ),
            Some("number") => Node::Num,
            Some("boolean") => Node::Bool,
            Some("array") => match s.get("items") {
                Some(items) => Node::Arr(self.schema(items, type_name)),
                None => Node::Any,
            },
            Some("object") => {
                if let Some(props) = s.get("properties").and_then(Value::as_object) {
                    let mut fields = HashMap::new();
                    for (k, v) in props {
                        let child = self.schema(v, type_name);
                        fields.insert(k.as_str().into(), child);
                    }
                    Node::Obj(type_name.into(), fields)
                } else if let Some(ap) = s.get("additionalProperties").filter(|v| v.is_object()) {
                    Node::Map(self.schema(ap, type_name))
                } else {
                    Node::Any
                }
            }
            _ => Node::Any,
        }
    }
}

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Paths of unknown fields (`spec.template.spec.containers[0].foo`).
    pub unknown: Vec<String>,
    /// The first type error, worded like Go's JSON decoder.
    pub type_error: Option<String>,
}

/// Whether the kind has a schema to check against (CRDs and unknown kinds do not).
pub fn knows(group: &str, version: &str, kind: &str) -> bool {
    graph()
        .kinds
        .contains_key(&(group.to_string(), version.to_string(), kind.to_string()))
}

/// Checks `obj` against its kind's schema. With `prune`, unknown fields are
/// removed from `obj` (what decoding into typed structs does upstream).
pub fn check(group: &str, version: &str, kind: &str, obj: &mut Value, prune: bool) -> Report {
    let g = graph();
    let mut report = Report::default();
    if let Some(root) = g
        .kinds
        .get(&(group.to_string(), version.to_string(), kind.to_string()))
    {
        walk(g, *root, obj, "", "", prune, &mut report);
    }
    report
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn walk(
    g: &Graph,
    idx: usize,
    v: &mut Value,
    path: &str,
    parent: &str,
    prune: bool,
    r: &mut Report,
) {
    // JSON null decodes to the zero value of any Go type.
    if v.is_null() {
        return;
    }
    let Some(node) = g.nodes.get(idx) else { return };
    let got = json_type(v);
    let mismatch = |want: &str, r: &mut Report| {
        if r.type_error.is_none() {
            let field = if parent.is_empty() {
                format!("of type {want}")
            } else {
                format!("into Go struct field {parent}.{path} of type {want}")
            };
            r.type_error = Some(format!("json: cannot unmarshal {got} {field}"));
        }
    };
    match node {
        Node::Any => {}
        Node::Str => {
            if !v.is_string() {
                mismatch("string", r);
            }
        }
        Node::Int(w) => {
            if !(v.is_i64() || v.is_u64()) {
                mismatch(w, r);
            }
        }
        Node::Num => {
            if !v.is_number() {
                mismatch("float64", r);
            }
        }
        Node::Bool => {
            if !v.is_boolean() {
                mismatch("bool", r);
            }
        }
        Node::IntOrStr => {
            if !(v.is_string() || v.is_number()) {
                mismatch("intstr.IntOrString", r);
            }
        }
        Node::Arr(item) => match v.as_array_mut() {
            Some(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    walk(g, *item, x, &format!("{path}[{i}]"), parent, prune, r);
                }
            }
            None => mismatch("[]", r),
        },
        Node::Map(val) => match v.as_object_mut() {
            Some(m) => {
                for (k, x) in m.iter_mut() {
                    walk(g, *val, x, &join(path, k), parent, prune, r);
                }
            }
            None => mismatch("map[string]", r),
        },
        Node::Obj(name, fields) => {
            let Some(m) = v.as_object_mut() else {
                mismatch(&format!("v1.{name}"), r);
                return;
            };
            let mut unknown = Vec::new();
            for (k, x) in m.iter_mut() {
                match fields.get(k.as_str()) {
                    Some(child) => walk(g, *child, x, &join(path, k), name, prune, r),
                    None => unknown.push(k.clone()),
                }
            }
            for k in unknown {
                r.unknown.push(join(path, &k));
                if prune {
                    m.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_and_prunes_unknown_fields() {
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "bogus": 1},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "foo": "bar",
                        "resources": {"limits": {"cpu": "1", "memory": 1024}}}]}}}
        });
        let r = check("apps", "v1", "Deployment", &mut d, true);
        assert_eq!(
            r.unknown,
            vec!["metadata.bogus", "spec.template.spec.containers[0].foo"]
        );
        assert!(r.type_error.is_none(), "{:?}", r.type_error);
        assert!(d["metadata"].get("bogus").is_none());
        assert!(
            d["spec"]["template"]["spec"]["containers"][0]
                .get("foo")
                .is_none()
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "busybox"
        );
    }

    #[test]
    fn reports_type_errors_like_go() {
        let mut d = json!({"spec": {"replicas": "3"}});
        let r = check("apps", "v1", "Deployment", &mut d, false);
        assert_eq!(
            r.type_error.as_deref(),
            Some(
                "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
            )
        );
        let mut cm = json!({"data": {"a": 1}});
        let r = check("", "v1", "ConfigMap", &mut cm, false);
        assert!(r.type_error.unwrap().contains("cannot unmarshal number"));
    }

    #[test]
    fn every_kind_has_a_schema() {
        let d = Definitions::generate();
        for (g, v, k, name) in &d.kinds {
            let def = d
                .defs
                .get(name)
                .unwrap_or_else(|| panic!("{g}/{v} {k}: no {name}"));
            assert!(def.get("properties").is_some(), "{name}");
            assert!(knows(g, v, k));
        }
        assert!(!knows("example.com", "v1", "Widget"));
    }
}
