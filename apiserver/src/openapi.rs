//! `/openapi/v2` and `/openapi/v3`: the documents kubectl reads for
//! `kubectl explain`, for client-side apply's patch metadata and to learn
//! that the server validates fields itself (`fieldValidation` on PATCH).
//!
//! Schemas come from the k8s-openapi types ([`crate::schema`]); paths come
//! from the resource table. Documents are built once, on first request, and
//! kept as bytes.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::resources::{self, ResourceDef, Storage};
use crate::schema::{Definitions, ref_name};

pub struct Documents {
    /// `api/v1`, `apis/apps/v1`, ... → (document, hash).
    pub v3: BTreeMap<String, (Bytes, String)>,
    pub v3_root: Bytes,
    pub v2: Bytes,
}

pub fn documents() -> &'static Documents {
    static DOCS: OnceLock<Documents> = OnceLock::new();
    DOCS.get_or_init(build)
}

fn info() -> Value {
    json!({"title": "Kubernetes", "version": crate::server::version()["gitVersion"]})
}

fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn hash_hex(b: &[u8]) -> String {
    // FNV-1a, 64 bit, twice with different seeds: a cache key, not security.
    let h = |seed: u64| {
        b.iter().fold(seed, |h, x| {
            (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    format!(
        "{:016X}{:016X}",
        h(0xcbf2_9ce4_8422_2325),
        h(0x8422_2325_cbf2_9ce4)
    )
}

fn build() -> Documents {
    let defs = Definitions::generate();
    let mut gvs: Vec<(&str, &str)> = vec![("", "v1")];
    gvs.extend(resources::groups());
    let mut v3 = BTreeMap::new();
    let mut v2_paths = Map::new();
    for (g, v) in gvs {
        let paths = paths_for(&defs, g, v);
        let schemas = closure(&defs, g, v);
        for (p, item) in &paths {
            v2_paths.insert(p.clone(), to_v2_path(item));
        }
        let doc = json!({
            "openapi": "3.0.0",
            "info": info(),
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header", "description": "Bearer Token authentication"}},
            },
        });
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let hash = hash_hex(&bytes);
        v3.insert(gv_key(g, v), (Bytes::from(bytes), hash));
    }
    let root_paths: Map<String, Value> = v3
        .iter()
        .map(|(k, (_, h))| {
            (
                k.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={h}")}),
            )
        })
        .collect();
    let v3_root = serde_json::to_vec(&json!({"paths": root_paths})).unwrap_or_default();
    let v2_defs: Map<String, Value> = defs
        .defs
        .iter()
        .map(|(k, v)| (k.clone(), to_v2_schema(v)))
        .collect();
    let v2 = json!({
        "swagger": "2.0",
        "info": info(),
        "paths": v2_paths,
        "definitions": v2_defs,
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    });
    Documents {
        v3,
        v3_root: Bytes::from(v3_root),
        v2: Bytes::from(serde_json::to_vec(&v2).unwrap_or_default()),
    }
}

/// Every definition reachable from the group-version's kinds, plus the meta types.
fn closure(defs: &Definitions, group: &str, version: &str) -> Map<String, Value> {
    let mut todo: Vec<String> = defs
        .kinds
        .iter()
        .filter(|(g, v, _, _)| *g == group && *v == version)
        .map(|(_, _, _, n)| n.clone())
        .collect();
    todo.extend(defs.meta.iter().cloned());
    if (group == "apps" || group.is_empty())
        && let Some(n) = defs.kind_def("autoscaling", "v1", "Scale")
    {
        todo.push(n.to_string());
    }
    let mut out = Map::new();
    while let Some(n) = todo.pop() {
        if out.contains_key(&n) {
            continue;
        }
        let Some(d) = defs.defs.get(&n) else { continue };
        collect_refs(d, &mut todo);
        out.insert(n, d.clone());
    }
    out
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str)
                && let Some(n) = r.rsplit('/').next()
            {
                out.push(n.to_string());
            }
            for x in m.values() {
                collect_refs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn query_param(name: &str, ty: &str, desc: &str) -> Value {
    json!({"name": name, "in": "query", "description": desc, "schema": {"type": ty, "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": format!("{name} of the resource"), "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        query_param(
            "dryRun",
            "string",
            "When present, indicates that modifications should not be persisted.",
        ),
        query_param(
            "fieldManager",
            "string",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        query_param(
            "fieldValidation",
            "string",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn (default) or Strict.",
        ),
    ];
    if patch {
        p.push(query_param(
            "force",
            "boolean",
            "Force is going to \"force\" Apply requests.",
        ));
    }
    p
}

fn list_params() -> Vec<Value> {
    [
        ("allowWatchBookmarks", "boolean"),
        ("continue", "string"),
        ("fieldSelector", "string"),
        ("labelSelector", "string"),
        ("limit", "integer"),
        ("resourceVersion", "string"),
        ("resourceVersionMatch", "string"),
        ("sendInitialEvents", "boolean"),
        ("timeoutSeconds", "integer"),
        ("watch", "boolean"),
    ]
    .iter()
    .map(|(n, t)| query_param(n, t, ""))
    .collect()
}

fn camel(s: &str) -> String {
    let mut out = String::new();
    for part in s.split(['.', '-']) {
        let mut c = part.chars();
        if let Some(f) = c.next() {
            out.extend(f.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    out
}

fn op_id(verb: &str, res: &ResourceDef, namespaced: bool, suffix: &str) -> String {
    let group = if res.group.is_empty() {
        "Core".to_string()
    } else {
        camel(
            res.group
                .trim_end_matches(".k8s.io")
                .trim_end_matches(".authorization"),
        )
    };
    format!(
        "{verb}{group}{}{}{}{suffix}",
        camel(res.version),
        if namespaced { "Namespaced" } else { "" },
        res.kind
    )
}

fn json_body(schema: Value) -> Value {
    json!({"content": {"*/*": {"schema": schema}}, "required": true})
}

fn ok(schema: Value, codes: &[&str]) -> Value {
    let mut m = Map::new();
    for c in codes {
        m.insert(
            (*c).to_string(),
            json!({"description": "OK", "content": {"application/json": {"schema": schema}, "application/yaml": {"schema": schema}}}),
        );
    }
    m.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(m)
}

#[allow(clippy::too_many_arguments)]
fn operation(
    id: String,
    action: &str,
    gvk: &Value,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "description": format!("{action} the resource"),
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    });
    if let Some(b) = body {
        op["requestBody"] = b;
    }
    op
}

fn patch_body() -> Value {
    let s = schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch");
    json!({"content": {
        "application/apply-patch+yaml": {"schema": s},
        "application/json-patch+json": {"schema": s},
        "application/merge-patch+json": {"schema": s},
        "application/strategic-merge-patch+json": {"schema": s},
    }, "required": true})
}

fn paths_for(defs: &Definitions, group: &str, version: &str) -> Map<String, Value> {
    let mut paths = Map::new();
    let prefix = format!("/{}", gv_key(group, version));
    for res in resources::in_group_version(group, version) {
        let Some(def) = defs.kind_def(res.group, res.version, res.kind) else {
            continue;
        };
        let gvk = json!({"group": res.group, "version": res.version, "kind": res.kind});
        let obj = schema_ref(def);
        let ns_seg = if res.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let ns_params: Vec<Value> = if res.namespaced {
            vec![path_param("namespace")]
        } else {
            vec![]
        };
        let collection = format!("{prefix}{ns_seg}/{}", res.plural);
        if res.storage == Storage::Virtual {
            paths.insert(
                collection,
                json!({
                    "parameters": ns_params,
                    "post": operation(op_id("create", res, res.namespaced, ""), "post", &gvk, write_params(false), Some(json_body(obj.clone())), ok(obj.clone(), &["200", "201", "202"])),
                }),
            );
            continue;
        }
        let list_schema = json!({"type": "object"});
        let del = schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions");
        let status = schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Status");
        paths.insert(
            collection.clone(),
            json!({
                "parameters": ns_params,
                "get": operation(op_id("list", res, res.namespaced, ""), "list", &gvk, list_params(), None, ok(list_schema.clone(), &["200"])),
                "post": operation(op_id("create", res, res.namespaced, ""), "post", &gvk, write_params(false), Some(json_body(obj.clone())), ok(obj.clone(), &["200", "201", "202"])),
                "delete": operation(op_id("deleteCollection", res, res.namespaced, ""), "deletecollection", &gvk, list_params(), Some(json_body(del.clone())), ok(status.clone(), &["200"])),
            }),
        );
        if res.namespaced {
            paths.insert(
                format!("{prefix}/{}", res.plural),
                json!({"get": operation(op_id("list", res, false, "ForAllNamespaces"), "list", &gvk, list_params(), None, ok(list_schema, &["200"]))}),
            );
        }
        let mut item_params = vec![path_param("name")];
        if res.namespaced {
            item_params.push(path_param("namespace"));
        }
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "parameters": item_params,
                "get": operation(op_id("read", res, res.namespaced, ""), "get", &gvk, vec![], None, ok(obj.clone(), &["200"])),
                "put": operation(op_id("replace", res, res.namespaced, ""), "put", &gvk, write_params(false), Some(json_body(obj.clone())), ok(obj.clone(), &["200", "201"])),
                "patch": operation(op_id("patch", res, res.namespaced, ""), "patch", &gvk, write_params(true), Some(patch_body()), ok(obj.clone(), &["200", "201"])),
                "delete": operation(op_id("delete", res, res.namespaced, ""), "delete", &gvk, vec![query_param("gracePeriodSeconds", "integer", ""), query_param("propagationPolicy", "string", ""), query_param("dryRun", "string", "")], Some(json_body(del)), ok(status, &["200", "202"])),
            }),
        );
        for sub in ["status", "scale"] {
            if !res.has_subresource(sub) {
                continue;
            }
            let (sgvk, sobj, suffix) = if sub == "scale" {
                let Some(scale) = defs.kind_def("autoscaling", "v1", "Scale") else {
                    continue;
                };
                (
                    json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
                    schema_ref(scale),
                    "Scale",
                )
            } else {
                (gvk.clone(), obj.clone(), "Status")
            };
            paths.insert(
                format!("{collection}/{{name}}/{sub}"),
                json!({
                    "parameters": item_params,
                    "get": operation(op_id("read", res, res.namespaced, suffix), "get", &sgvk, vec![], None, ok(sobj.clone(), &["200"])),
                    "put": operation(op_id("replace", res, res.namespaced, suffix), "put", &sgvk, write_params(false), Some(json_body(sobj.clone())), ok(sobj.clone(), &["200", "201"])),
                    "patch": operation(op_id("patch", res, res.namespaced, suffix), "patch", &sgvk, write_params(true), Some(patch_body()), ok(sobj, &["200", "201"])),
                }),
            );
        }
    }
    paths
}

// ---- OpenAPI v3 → Swagger 2.0 ------------------------------------------

fn to_v2_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                if k == "$ref" {
                    let s = x
                        .as_str()
                        .unwrap_or("")
                        .replace("#/components/schemas/", "#/definitions/");
                    out.insert(k.clone(), Value::String(s));
                } else if k == "nullable" {
                    continue;
                } else {
                    out.insert(k.clone(), to_v2_schema(x));
                }
            }
            // Swagger 2.0 tooling expects a plain `$ref` where v3 wraps it.
            if let Some(r) = ref_name(&Value::Object(out.clone()))
                && out.contains_key("allOf")
            {
                out.remove("allOf");
                out.insert("$ref".into(), json!(format!("#/definitions/{r}")));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_v2_schema).collect()),
        other => other.clone(),
    }
}

fn to_v2_param(p: &Value) -> Value {
    let mut out = p.clone();
    if let Some(o) = out.as_object_mut()
        && let Some(Value::Object(s)) = o.remove("schema")
    {
        for (k, v) in s {
            o.insert(k, v);
        }
    }
    out
}

fn to_v2_path(item: &Value) -> Value {
    let mut out = Map::new();
    let Some(m) = item.as_object() else {
        return json!({});
    };
    for (k, v) in m {
        if k == "parameters" {
            out.insert(
                k.clone(),
                Value::Array(
                    v.as_array()
                        .map(|a| a.iter().map(to_v2_param).collect())
                        .unwrap_or_default(),
                ),
            );
            continue;
        }
        let mut op = v.clone();
        if let Some(o) = op.as_object_mut() {
            let mut params: Vec<Value> = o
                .remove("parameters")
                .and_then(|p| p.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(to_v2_param)
                .collect();
            let consumes: Vec<String> = match o.remove("requestBody") {
                Some(b) => {
                    let content = b["content"].as_object().cloned().unwrap_or_default();
                    if let Some(schema) = content.values().next().map(|c| c["schema"].clone()) {
                        params.push(json!({"name": "body", "in": "body", "required": true, "schema": to_v2_schema(&schema)}));
                    }
                    content.keys().cloned().collect()
                }
                None => vec![],
            };
            o.insert("parameters".into(), Value::Array(params));
            if !consumes.is_empty() {
                o.insert("consumes".into(), json!(consumes));
            }
            o.insert(
                "produces".into(),
                json!(["application/json", "application/yaml"]),
            );
            if let Some(Value::Object(rs)) = o.get_mut("responses") {
                for r in rs.values_mut() {
                    if let Some(ro) = r.as_object_mut()
                        && let Some(c) = ro.remove("content")
                        && let Some(s) = c["application/json"].get("schema")
                    {
                        ro.insert("schema".into(), to_v2_schema(s));
                    }
                }
            }
        }
        out.insert(k.clone(), op);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(key: &str) -> Value {
        let (b, _) = documents().v3.get(key).expect(key);
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn v3_documents_let_kubectl_use_server_side_validation() {
        let root: Value = serde_json::from_slice(&documents().v3_root).unwrap();
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
        let d = doc("apis/apps/v1");
        let patch = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let dep = &d["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            dep["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        // Everything referenced is in the document.
        let mut refs = Vec::new();
        collect_refs(&d, &mut refs);
        for r in refs {
            assert!(d["components"]["schemas"].get(&r).is_some(), "missing {r}");
        }
        let core = doc("api/v1");
        assert!(
            core["paths"]
                .get("/api/v1/namespaces/{namespace}/pods/{name}/status")
                .is_some()
        );
    }

    #[test]
    fn v2_document_uses_definitions() {
        let v2: Value = serde_json::from_slice(&documents().v2).unwrap();
        assert_eq!(v2["swagger"], "2.0");
        let pod = &v2["definitions"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.PodSpec"
        );
        let s = serde_json::to_string(&v2).unwrap();
        assert!(!s.contains("#/components/schemas/"));
    }
}
