//! API discovery: `/api`, `/apis`, per group-version resource lists, and the
//! aggregated discovery documents (apidiscovery.k8s.io/v2) newer clients ask
//! for first.

use serde_json::{Value, json};

use crate::resources::{self, ResourceDef};

fn sub_kind(res: &ResourceDef, sub: &str) -> (&'static str, &'static str, &'static str) {
    match sub {
        "scale" => ("autoscaling", "v1", "Scale"),
        "binding" => ("", "v1", "Binding"),
        "eviction" => ("policy", "v1", "Eviction"),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest"),
        "exec" => ("", "v1", "PodExecOptions"),
        "attach" => ("", "v1", "PodAttachOptions"),
        "portforward" => ("", "v1", "PodPortForwardOptions"),
        "proxy" if res.kind == "Node" => ("", "v1", "NodeProxyOptions"),
        "proxy" if res.kind == "Service" => ("", "v1", "ServiceProxyOptions"),
        "proxy" => ("", "v1", "PodProxyOptions"),
        _ => ("", "", ""),
    }
}

fn sub_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "status" | "scale" | "ephemeralcontainers" | "approval" => &["get", "patch", "update"],
        "finalize" => &["update"],
        "binding" | "eviction" | "token" => &["create"],
        "log" => &["get"],
        "exec" | "attach" | "portforward" => &["create", "get"],
        "proxy" => &["create", "delete", "get", "patch", "update"],
        _ => &["get"],
    }
}

/// `APIResourceList` for one group-version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut out = Vec::new();
    for r in resources::in_group_version(group, version) {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        out.push(e);
        for s in r.subresources {
            let (g, v, k) = sub_kind(r, s);
            let mut e = json!({
                "name": format!("{}/{s}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": if k.is_empty() { r.kind } else { k },
                "verbs": sub_verbs(s),
            });
            if !g.is_empty() {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            out.push(e);
        }
    }
    if out.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(g: &str, v: &str) -> Value {
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::groups()
        .iter()
        .map(|(g, v)| group_entry(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = resources::groups().into_iter().find(|(g, _)| *g == group)?;
    let mut e = group_entry(g, v);
    e["kind"] = json!("APIGroup");
    e["apiVersion"] = json!("v1");
    Some(e)
}

/// The aggregated document for `/api` (core) or `/apis` (named groups).
pub fn aggregated(core: bool) -> Value {
    let groups: Vec<(&str, &str)> = if core {
        vec![("", "v1")]
    } else {
        resources::groups()
    };
    let items: Vec<Value> = groups
        .iter()
        .map(|(g, v)| {
            let res: Vec<Value> = resources::in_group_version(g, v)
                .map(|r| {
                    let subs: Vec<Value> = r
                        .subresources
                        .iter()
                        .map(|s| {
                            let (sg, sv, sk) = sub_kind(r, s);
                            let rk = if sk.is_empty() {
                                json!({"group": r.group, "version": r.version, "kind": r.kind})
                            } else {
                                json!({"group": sg, "version": sv, "kind": sk})
                            };
                            json!({"subresource": s, "responseKind": rk, "verbs": sub_verbs(s)})
                        })
                        .collect();
                    let mut e = json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular,
                        "verbs": r.verbs(),
                    });
                    if !r.short_names.is_empty() {
                        e["shortNames"] = json!(r.short_names);
                    }
                    if !r.categories.is_empty() {
                        e["categories"] = json!(r.categories);
                    }
                    if !subs.is_empty() {
                        e["subresources"] = json!(subs);
                    }
                    e
                })
                .collect();
            let mut meta = json!({});
            if !g.is_empty() {
                meta["name"] = json!(g);
            }
            json!({"metadata": meta, "versions": [{"version": v, "resources": res, "freshness": "Current"}]})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// Whether the client asked for aggregated discovery.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.contains("as=APIGroupDiscoveryList") && accept.contains("v=v2")
}

pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
