//! Strategic merge patch behaviour on real kinds, checked against what the
//! upstream apiserver returns for the same requests.

use serde_json::{Value, json};

use super::{PatchError, StrategyLookup, apply_strategic_merge_patch};

fn smp(group: &str, kind: &str, doc: Value, patch: Value) -> Value {
    let lookup = StrategyLookup::for_kind(group, kind);
    match apply_strategic_merge_patch(&doc, &patch, &lookup) {
        Ok(v) => v,
        Err(e) => panic!("patch {patch} failed: {e}"),
    }
}

fn smp_err(group: &str, kind: &str, doc: Value, patch: Value) -> PatchError {
    let lookup = StrategyLookup::for_kind(group, kind);
    match apply_strategic_merge_patch(&doc, &patch, &lookup) {
        Ok(v) => panic!("patch {patch} unexpectedly gave {v}"),
        Err(e) => e,
    }
}

fn deployment(containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers}
            }
        }
    })
}

fn containers(v: &Value) -> &Value {
    &v["spec"]["template"]["spec"]["containers"]
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn set_image_changes_one_container_and_keeps_the_others() {
    let doc = deployment(json!([
        {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
        {"name": "b", "image": "b:1"},
        {"name": "c", "image": "c:1"}
    ]));
    // What `kubectl set image deployment/web b=b:2` sends.
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}});
    let out = smp("apps", "Deployment", doc.clone(), patch);
    assert_eq!(
        containers(&out),
        &json!([
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "b:2"},
            {"name": "c", "image": "c:1"}
        ])
    );
    // Everything else untouched.
    let mut expect = doc;
    expect["spec"]["template"]["spec"]["containers"][1]["image"] = json!("b:2");
    assert_eq!(out, expect);
}

#[test]
fn env_merges_by_name() {
    let doc = deployment(
        json!([{"name": "app", "image": "x", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]),
    );
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}
    ]}}}});
    let out = smp("apps", "Deployment", doc, patch);
    // Upstream's order: patched items in patch order, interleaved with the
    // untouched ones by their old positions.
    assert_eq!(
        containers(&out)[0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
    );
    assert_eq!(containers(&out)[0]["image"], "x");
}

#[test]
fn new_elements_go_first_like_upstream() {
    // `kubectl patch` adding a container: upstream puts it ahead of the
    // existing ones (kubernetes.io docs show the same for patch-demo).
    let doc = deployment(json!([{"name": "nginx", "image": "nginx"}]));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "redis", "image": "redis"}]}}}});
    let out = smp("apps", "Deployment", doc, patch);
    assert_eq!(names(containers(&out)), ["redis", "nginx"]);
}

#[test]
fn patch_delete_removes_a_container() {
    let doc = deployment(json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete", "name": "a"}]}}}});
    let out = smp("apps", "Deployment", doc, patch);
    assert_eq!(containers(&out), &json!([{"name": "b", "image": "b"}]));
}

#[test]
fn delete_all_duplicate_entries() {
    let doc = json!({"spec": {"containers": [
        {"name": "1"}, {"name": "2", "image": "a"}, {"name": "3"}, {"name": "3"}
    ]}});
    let patch = json!({"spec": {"containers": [{"name": "1", "$patch": "delete"}, {"name": "3", "$patch": "delete"}]}});
    let out = smp("", "Pod", doc, patch);
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "2", "image": "a"}])
    );
}

#[test]
fn set_element_order_reorders() {
    let doc = deployment(
        json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "c", "image": "c"}]),
    );
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]
    }}}});
    let out = smp("apps", "Deployment", doc, patch);
    assert_eq!(names(containers(&out)), ["c", "a", "b"]);
    assert!(
        out["spec"]["template"]["spec"]
            .get("$setElementOrder/containers")
            .is_none()
    );
}

#[test]
fn set_element_order_places_new_items_and_keeps_server_only_ones() {
    // "x" was added by someone else (server only); the client's list is
    // a, new, b.
    let doc = json!({"spec": {"containers": [{"name": "a"}, {"name": "x"}, {"name": "b"}]}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "new"}, {"name": "b"}],
        "containers": [{"name": "new", "image": "n"}]
    }});
    let out = smp("", "Pod", doc, patch);
    // Upstream interleaves: a new item is placed before the first server
    // element it is compared with.
    assert_eq!(names(&out["spec"]["containers"]), ["a", "new", "x", "b"]);
}

#[test]
fn set_element_order_must_match_the_patch_list() {
    let doc = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [{"name": "b", "image": "1"}, {"name": "a", "image": "2"}]
    }});
    assert!(matches!(
        smp_err("", "Pod", doc, patch),
        PatchError::Invalid(_)
    ));
}

#[test]
fn preserves_patch_order_like_upstream_test_cases() {
    let doc = json!({"spec": {"containers": [{"name": "1"}, {"name": "2", "value": "b"}, {"name": "3"}]}});
    let patch = json!({"spec": {"containers": [
        {"name": "3", "value": "c"}, {"name": "1", "value": "a"}, {"name": "2", "other": "x"}
    ]}});
    let out = smp("", "Pod", doc.clone(), patch);
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "3", "value": "c"}, {"name": "1", "value": "a"}, {"name": "2", "value": "b", "other": "x"}])
    );
    let patch =
        json!({"spec": {"containers": [{"name": "3", "value": "c"}, {"name": "1", "value": "a"}]}});
    let out = smp("", "Pod", doc, patch);
    assert_eq!(names(&out["spec"]["containers"]), ["2", "3", "1"]);

    let doc = json!({"metadata": {"finalizers": ["1", "2", "3"]}});
    let out = smp(
        "",
        "Pod",
        doc.clone(),
        json!({"metadata": {"finalizers": ["3", "1", "2"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["3", "1", "2"]));
    let out = smp(
        "",
        "Pod",
        doc,
        json!({"metadata": {"finalizers": ["3", "1"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["2", "3", "1"]));
}

#[test]
fn retain_keys_switches_rolling_update_to_recreate() {
    let doc = deployment(json!([{"name": "a", "image": "a"}]));
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let out = smp("apps", "Deployment", doc, patch);
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));

    // Without the directive the old rollingUpdate would stay behind.
    let doc = deployment(json!([]));
    let out = smp(
        "apps",
        "Deployment",
        doc,
        json!({"spec": {"strategy": {"type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
}

#[test]
fn retain_keys_on_volume_source_switch() {
    let doc = json!({"spec": {"volumes": [
        {"name": "data", "emptyDir": {}},
        {"name": "other", "secret": {"secretName": "s"}}
    ]}});
    let patch = json!({"spec": {"volumes": [
        {"$retainKeys": ["configMap", "name"], "name": "data", "configMap": {"name": "cm"}}
    ]}});
    let out = smp("", "Pod", doc, patch);
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "data", "configMap": {"name": "cm"}}, {"name": "other", "secret": {"secretName": "s"}}])
    );
}

#[test]
fn retain_keys_errors() {
    let doc = deployment(json!([]));
    let not_list = json!({"spec": {"strategy": {"$retainKeys": "type", "type": "Recreate"}}});
    assert!(matches!(
        smp_err("apps", "Deployment", doc.clone(), not_list),
        PatchError::Invalid(_)
    ));
    let unlisted = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {}}}});
    let e = smp_err("apps", "Deployment", doc.clone(), unlisted);
    assert_eq!(e.to_string(), "invalid patch format of retainKeys");
    // Nulls need not be listed.
    let ok = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
    let out = smp("apps", "Deployment", doc, ok);
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn finalizers_union_and_delete_from_primitive_list() {
    let doc = json!({"metadata": {"name": "x", "finalizers": ["a", "b"]}, "data": {}});
    let out = smp(
        "",
        "ConfigMap",
        doc.clone(),
        json!({"metadata": {"finalizers": ["b", "c"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));

    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zzz"]}});
    let out = smp("", "ConfigMap", doc.clone(), patch);
    assert_eq!(out["metadata"]["finalizers"], json!(["b"]));

    // What kubectl sends for a3-way change a,b -> b,c.
    let patch = json!({"metadata": {
        "$setElementOrder/finalizers": ["b", "c"],
        "$deleteFromPrimitiveList/finalizers": ["a"],
        "finalizers": ["c"]
    }});
    let out = smp("", "ConfigMap", doc, patch);
    assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
    assert_eq!(out["metadata"].as_object().map(|m| m.len()), Some(2));
}

#[test]
fn owner_references_merge_by_uid() {
    let doc = json!({"metadata": {"ownerReferences": [
        {"uid": "1", "kind": "ReplicaSet", "name": "rs"}
    ]}});
    let patch = json!({"metadata": {"ownerReferences": [
        {"uid": "1", "controller": true}, {"uid": "2", "kind": "Foo", "name": "f"}
    ]}});
    let out = smp("", "Pod", doc, patch);
    assert_eq!(
        out["metadata"]["ownerReferences"],
        json!([{"uid": "1", "kind": "ReplicaSet", "name": "rs", "controller": true}, {"uid": "2", "kind": "Foo", "name": "f"}])
    );
}

#[test]
fn maps_merge_and_nulls_delete() {
    let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "annotations": {"x": "y"}}, "spec": {"nodeName": "n"}});
    let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}, "annotations": null}});
    let out = smp("", "Pod", doc, patch);
    assert_eq!(
        out,
        json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"nodeName": "n"}})
    );
}

#[test]
fn patch_replace_and_delete_on_maps() {
    let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
    let out = smp(
        "",
        "Pod",
        doc.clone(),
        json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"c": "3"}));
    // Upstream leaves an empty map behind for `$patch: delete`.
    let out = smp(
        "",
        "Pod",
        doc.clone(),
        json!({"metadata": {"labels": {"$patch": "delete"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({}));
    // Deleting an absent map adds nothing.
    let out = smp(
        "",
        "Pod",
        doc.clone(),
        json!({"metadata": {"annotations": {"$patch": "delete"}}}),
    );
    assert!(out["metadata"].get("annotations").is_none());
    // Explicit merge is the default behaviour.
    let out = smp(
        "",
        "Pod",
        doc.clone(),
        json!({"metadata": {"labels": {"$patch": "merge", "c": "3"}}}),
    );
    assert_eq!(
        out["metadata"]["labels"],
        json!({"a": "1", "b": "2", "c": "3"})
    );
    let e = smp_err(
        "",
        "Pod",
        doc,
        json!({"metadata": {"labels": {"$patch": "frob"}}}),
    );
    assert!(
        matches!(&e, PatchError::Invalid(m) if m.starts_with("unknown patch type: frob in map: ")),
        "{e}"
    );
}

#[test]
fn patch_replace_element_replaces_a_merge_list() {
    let doc =
        json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}});
    let patch =
        json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "c"}]}});
    let out = smp("", "Pod", doc.clone(), patch);
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "c", "image": "c"}])
    );
    let out = smp(
        "",
        "Pod",
        doc,
        json!({"spec": {"containers": [{"$patch": "replace"}]}}),
    );
    assert_eq!(out["spec"]["containers"], json!([]));
}

#[test]
fn lists_without_strategy_are_replaced() {
    let doc = json!({"spec": {
        "tolerations": [{"key": "a", "operator": "Exists"}],
        "containers": [{"name": "c", "args": ["1", "2"], "resizePolicy": [{"resourceName": "cpu"}]}]
    }});
    let patch = json!({"spec": {
        "tolerations": [{"key": "b", "operator": "Exists", "effect": null}],
        "containers": [{"name": "c", "args": ["3"]}]
    }});
    let out = smp("", "Pod", doc, patch);
    assert_eq!(
        out["spec"]["tolerations"],
        json!([{"key": "b", "operator": "Exists"}])
    );
    assert_eq!(out["spec"]["containers"][0]["args"], json!(["3"]));
    assert_eq!(
        out["spec"]["containers"][0]["resizePolicy"],
        json!([{"resourceName": "cpu"}])
    );
}

#[test]
fn ports_merge_by_number_value() {
    let doc = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]}});
    let patch = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80.0, "protocol": "TCP"}]}]}});
    let out = smp("", "Pod", doc, patch);
    let ports = &out["spec"]["containers"][0]["ports"];
    assert_eq!(ports.as_array().map(Vec::len), Some(2));
    assert_eq!(ports[0]["name"], "http");
    assert_eq!(ports[0]["protocol"], "TCP");
    assert_eq!(ports[1]["containerPort"], 443);
}

#[test]
fn service_ports_merge_by_port() {
    let doc = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
    let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}});
    let out = smp("", "Service", doc, patch);
    assert_eq!(
        out["spec"]["ports"],
        json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
    );
}

#[test]
fn status_conditions_merge_by_type() {
    let doc = json!({"status": {
        "conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}],
        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]
    }});
    let patch = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True"}],
        "addresses": [{"type": "Hostname", "address": "n1"}]
    }});
    let out = smp("", "Node", doc, patch);
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}])
    );
    assert_eq!(out["status"]["addresses"].as_array().map(Vec::len), Some(2));

    let doc = json!({"status": {"conditions": [{"type": "Available", "status": "True"}]}});
    let patch = json!({"status": {"conditions": [{"type": "Progressing", "status": "True"}]}});
    let out = smp("apps", "Deployment", doc, patch);
    assert_eq!(
        out["status"]["conditions"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn nested_templates_resolve() {
    let doc = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "a"}, {"name": "b", "image": "b"}
    ]}}}}}});
    let patch = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "a2"}
    ]}}}}}});
    let out = smp("batch", "CronJob", doc, patch);
    let c = &out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        c,
        &json!([{"name": "a", "image": "a2"}, {"name": "b", "image": "b"}])
    );

    // StatefulSet volumeClaimTemplates are atomic.
    let doc = json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]}});
    let patch = json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "c"}}]}});
    let out = smp("apps", "StatefulSet", doc, patch);
    assert_eq!(
        out["spec"]["volumeClaimTemplates"],
        json!([{"metadata": {"name": "c"}}])
    );
}

#[test]
fn replace_strategy_on_a_map() {
    let doc = json!({"spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "1"}}}});
    let patch = json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}});
    let out = smp("policy", "PodDisruptionBudget", doc, patch);
    assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"b": "2"}}));
}

#[test]
fn unknown_kinds_merge_maps_and_replace_lists() {
    let doc = json!({"metadata": {"finalizers": ["a"]}, "spec": {"items": [{"name": "x"}], "m": {"a": 1}}});
    let patch = json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [{"name": "y"}], "m": {"b": 2}}});
    let out = smp("example.com", "Widget", doc, patch);
    assert_eq!(
        out,
        json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [{"name": "y"}], "m": {"a": 1, "b": 2}}})
    );
}

#[test]
fn new_subtrees_are_cleaned_of_directives_and_nulls() {
    let doc = json!({"metadata": {"name": "p"}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [
            {"name": "a", "image": "a", "command": null},
            {"name": "b", "image": "b"},
            {"name": "zzz", "$patch": "delete"}
        ],
        "tolerations": [{"$patch": "replace"}, {"key": "k"}],
        "nodeSelector": {"$patch": "replace", "disk": "ssd"}
    }});
    let out = smp("", "Pod", doc, patch);
    assert_eq!(
        out["spec"],
        json!({
            "containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}],
            "tolerations": [{"key": "k"}],
            "nodeSelector": {"disk": "ssd"}
        })
    );
}

#[test]
fn kubectl_client_side_apply_three_way_patch() {
    // Live object: defaults filled in by the server, a sidecar injected by
    // someone else, and the previous apply's annotation.
    let live = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "uid": "u-1",
            "resourceVersion": "42",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{old}", "team": "a"},
            "labels": {"app": "web", "tier": "front"}
        },
        "spec": {
            "replicas": 3,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "app:1",
                            "imagePullPolicy": "IfNotPresent",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}]
                        },
                        {"name": "mesh-proxy", "image": "proxy:1"}
                    ],
                    "volumes": [{"name": "cache", "emptyDir": {}}],
                    "restartPolicy": "Always"
                }
            }
        },
        "status": {"replicas": 3}
    });
    // Last applied: app container with env A,B, label tier, RollingUpdate.
    // New config: image app:2, env B dropped and C added, a "log" sidecar
    // after app, tier label removed, Recreate strategy, cache volume now a
    // configMap. This is the patch kubectl computes for that change.
    let patch = json!({
        "metadata": {
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{new}"},
            "labels": {"tier": null}
        },
        "spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null},
            "template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "log"}],
                "$setElementOrder/volumes": [{"name": "cache"}],
                "containers": [
                    {
                        "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                        "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}],
                        "image": "app:2",
                        "name": "app"
                    },
                    {"image": "log:1", "name": "log"}
                ],
                "volumes": [
                    {"$retainKeys": ["configMap", "name"], "configMap": {"name": "cache-cm"}, "name": "cache"}
                ]
            }}
        }
    });
    let out = smp("apps", "Deployment", live.clone(), patch);

    let mut want = live;
    want["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!("{new}");
    want["metadata"]["labels"] = json!({"app": "web"});
    want["spec"]["strategy"] = json!({"type": "Recreate"});
    want["spec"]["template"]["spec"]["containers"] = json!([
        {
            "name": "app",
            "image": "app:2",
            "imagePullPolicy": "IfNotPresent",
            "env": [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}],
            "ports": [{"containerPort": 8080, "protocol": "TCP"}]
        },
        // Upstream places the client's new container before the
        // server-only one.
        {"name": "log", "image": "log:1"},
        {"name": "mesh-proxy", "image": "proxy:1"}
    ]);
    want["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "cache", "configMap": {"name": "cache-cm"}}]);
    assert_eq!(out, want);
}

#[test]
fn error_cases() {
    let pod = json!({"spec": {"containers": [{"name": "a"}]}});
    for bad in [json!([1]), json!("x"), json!(null), json!(3)] {
        assert!(matches!(
            smp_err("", "Pod", pod.clone(), bad),
            PatchError::Invalid(_)
        ));
    }
    // Wrong shapes where the schema knows better.
    let e = smp_err(
        "",
        "Pod",
        pod.clone(),
        json!({"spec": {"containers": "nope"}}),
    );
    assert!(
        matches!(&e, PatchError::Invalid(m) if m.contains("PodSpec.containers")),
        "{e}"
    );
    assert!(matches!(
        smp_err(
            "",
            "Pod",
            pod.clone(),
            json!({"spec": {"containers": {"name": "a"}}})
        ),
        PatchError::Invalid(_)
    ));
    assert!(matches!(
        smp_err("", "Pod", pod.clone(), json!({"spec": ["x"]})),
        PatchError::Invalid(_)
    ));
    assert!(matches!(
        smp_err("", "Pod", pod.clone(), json!({"spec": 7})),
        PatchError::Invalid(_)
    ));
    // Merge key missing from an element.
    let e = smp_err(
        "",
        "Pod",
        pod.clone(),
        json!({"spec": {"containers": [{"image": "x"}]}}),
    );
    assert!(
        matches!(&e, PatchError::Invalid(m) if m.contains("does not contain declared merge key: name")),
        "{e}"
    );
    let e = smp_err(
        "",
        "Pod",
        pod.clone(),
        json!({"spec": {"containers": [{"$patch": "delete"}]}}),
    );
    assert!(matches!(e, PatchError::Invalid(_)));
    // Directive values.
    let e = smp_err(
        "",
        "Pod",
        pod.clone(),
        json!({"spec": {"containers": [{"$patch": "merge"}]}}),
    );
    assert_eq!(
        e.to_string(),
        "merging lists cannot yet be specified in the patch"
    );
    let e = smp_err(
        "",
        "Pod",
        pod.clone(),
        json!({"spec": {"containers": [{"$patch": "bogus", "name": "a"}]}}),
    );
    assert!(matches!(e, PatchError::Invalid(_)));
    let e = smp_err(
        "",
        "Pod",
        pod.clone(),
        json!({"spec": {"$setElementOrder/containers": "a"}}),
    );
    assert!(matches!(e, PatchError::Invalid(_)));
    let e = smp_err(
        "",
        "Pod",
        pod.clone(),
        json!({"spec": {"$setElementOrderX": []}}),
    );
    assert_eq!(
        e.to_string(),
        "invalid patch format of setElementOrder list"
    );
    let e = smp_err(
        "",
        "Pod",
        pod.clone(),
        json!({"metadata": {"$deleteFromPrimitiveListfinalizers": []}}),
    );
    assert_eq!(e.to_string(), "invalid patch format of primitive list");
    // Mixed and nested element types in a merged list.
    let e = smp_err(
        "",
        "Pod",
        json!({"metadata": {"finalizers": ["a"]}}),
        json!({"metadata": {"finalizers": [{"a": 1}]}}),
    );
    assert!(matches!(e, PatchError::Invalid(_)));
    let e = smp_err(
        "",
        "Pod",
        json!({}),
        json!({"metadata": {"finalizers": [["a"]]}}),
    );
    assert!(
        matches!(&e, PatchError::Unprocessable(m) if m == "lists of lists are not supported"),
        "{e}"
    );
}

#[test]
fn whole_object_directives() {
    let doc = json!({"a": 1, "b": {"c": 2}});
    assert_eq!(
        smp(
            "",
            "ConfigMap",
            doc.clone(),
            json!({"$patch": "replace", "x": 1})
        ),
        json!({"x": 1})
    );
    assert_eq!(smp("", "ConfigMap", doc.clone(), json!({})), doc);
}

#[test]
fn odd_inputs_never_panic() {
    let values = [
        json!(null),
        json!(1),
        json!("s"),
        json!([]),
        json!([null, 1, "a"]),
        json!([{"name": "a"}, {"name": null}, {}]),
        json!([{"$patch": "delete"}]),
        json!([{"$patch": "replace"}, 1]),
        json!({}),
        json!({"$patch": 5}),
        json!({"$retainKeys": [1, null]}),
        json!({"$setElementOrder/": [], "": 1}),
        json!({"$deleteFromPrimitiveList/x": {"a": 1}, "x": [[1]]}),
    ];
    let fields = [
        "containers",
        "finalizers",
        "spec",
        "metadata",
        "env",
        "strategy",
        "x",
        "tolerations",
        "volumes",
    ];
    let lookups = [
        StrategyLookup::for_kind("", "Pod"),
        StrategyLookup::for_kind("apps", "Deployment"),
        StrategyLookup::for_kind("x.io", "Y"),
    ];
    for lookup in &lookups {
        for f in fields {
            for v in &values {
                for w in &values {
                    let doc = json!({"spec": {f: v}, "metadata": {f: v}, f: v});
                    let patch = json!({"spec": {f: w}, "metadata": {f: w}, f: w, format!("$setElementOrder/{f}"): w});
                    let _ = apply_strategic_merge_patch(&doc, &patch, lookup);
                    let nested = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", f: w}]}}}});
                    let _ = apply_strategic_merge_patch(&doc, &nested, lookup);
                    let _ = apply_strategic_merge_patch(v, w, lookup);
                }
            }
        }
    }
}
