//! Validation as a user sees it: the rendered `field: Type: value: detail`
//! lines, checked against the wording upstream v1.33 uses.

use serde_json::{Value, json};

use super::{validate, validate_update};
use crate::defaults::apply_defaults;

fn render(errs: &crate::FieldErrors) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

/// Validates a create as the apiserver does: defaults first.
fn create(group: &str, kind: &str, mut obj: Value) -> Vec<String> {
    let namespaced = !matches!(
        kind,
        "Namespace" | "Node" | "ClusterRole" | "ClusterRoleBinding" | "PersistentVolume"
    );
    apply_defaults(group, "v1", kind, &mut obj);
    render(&validate(group, "v1", kind, &obj, namespaced))
}

fn update(group: &str, kind: &str, mut new: Value, mut old: Value) -> Vec<String> {
    let namespaced = !matches!(
        kind,
        "Namespace" | "Node" | "ClusterRole" | "ClusterRoleBinding"
    );
    apply_defaults(group, "v1", kind, &mut new);
    apply_defaults(group, "v1", kind, &mut old);
    render(&validate_update(group, "v1", kind, &new, &old, namespaced))
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default"})
}

fn pod(name: &str, containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta(name), "spec": {"containers": containers}})
}

fn deployment(replicas: i64, selector: Value, labels: Value) -> Value {
    json!({
        "metadata": meta("web"),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
            }
        }
    })
}

fn service(ports: Value) -> Value {
    json!({"metadata": meta("web"), "spec": {"selector": {"app": "web"}, "ports": ports}})
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

// ---- metadata -----------------------------------------------------------------

#[test]
fn bad_name_renders_like_upstream() {
    let errs = create(
        "",
        "Pod",
        pod("Foo", json!([{"name": "c", "image": "busybox"}])),
    );
    assert_eq!(
        errs,
        vec![format!(
            "metadata.name: Invalid value: \"Foo\": {SUBDOMAIN_MSG}"
        )]
    );
}

#[test]
fn missing_name_and_namespace() {
    let errs = render(&validate(
        "",
        "v1",
        "ConfigMap",
        &json!({"metadata": {}}),
        true,
    ));
    assert_eq!(
        errs,
        vec![
            "metadata.name: Required value: name or generateName is required",
            "metadata.namespace: Required value",
        ]
    );
    let errs = render(&validate(
        "",
        "v1",
        "Namespace",
        &json!({"metadata": {"name": "a.b"}}),
        false,
    ));
    assert_eq!(
        errs,
        vec!["metadata.name: Invalid value: \"a.b\": must not contain dots"]
    );
    let errs = render(&validate(
        "",
        "v1",
        "Node",
        &json!({"metadata": {"name": "n1", "namespace": "x"}}),
        false,
    ));
    assert_eq!(
        errs,
        vec!["metadata.namespace: Forbidden: not allowed on this type"]
    );
}

#[test]
fn generate_name_prefix_may_end_in_dash() {
    let obj = json!({"metadata": {"generateName": "web-", "name": "web-x7k2p", "namespace": "d"}});
    assert!(validate("", "v1", "ConfigMap", &obj, true).is_empty());
}

#[test]
fn labels_are_checked() {
    let obj = json!({"metadata": {"name": "c", "namespace": "d", "labels": {"app": "-bad"}}});
    assert_eq!(
        render(&validate("", "v1", "ConfigMap", &obj, true)),
        vec![
            "metadata.labels: Invalid value: \"-bad\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        ]
    );
}

#[test]
fn metadata_name_is_immutable() {
    let old = json!({"metadata": {"name": "a", "namespace": "d", "uid": "u1"}});
    let new = json!({"metadata": {"name": "b", "namespace": "d"}});
    assert_eq!(
        render(&validate_update("", "v1", "ConfigMap", &new, &old, true)),
        vec!["metadata.name: Invalid value: \"b\": field is immutable"]
    );
}

// ---- pods ---------------------------------------------------------------------

#[test]
fn pod_requires_containers_and_images() {
    assert_eq!(
        create("", "Pod", pod("p", json!([]))),
        vec!["spec.containers: Required value"]
    );
    assert_eq!(
        create("", "Pod", pod("p", json!([{"name": "c"}]))),
        vec!["spec.containers[0].image: Required value"]
    );
    assert_eq!(
        create(
            "",
            "Pod",
            pod(
                "p",
                json!([{"name": "c", "image": "a"}, {"name": "c", "image": "b"}])
            )
        ),
        vec!["spec.containers[1].name: Duplicate value: \"c\""]
    );
}

#[test]
fn pod_field_errors() {
    let p = pod(
        "p",
        json!([{
            "name": "c",
            "image": "busybox",
            "ports": [{"containerPort": 70000, "protocol": "ICMP"}],
            "imagePullPolicy": "Sometimes"
        }]),
    );
    assert_eq!(
        create("", "Pod", p),
        vec![
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ]
    );
    let mut p = pod("p", json!([{"name": "c", "image": "busybox"}]));
    p["spec"]["restartPolicy"] = json!("Sometimes");
    assert_eq!(
        create("", "Pod", p),
        vec![
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        ]
    );
}

#[test]
fn pod_volume_mounts_must_name_volumes() {
    let p = pod(
        "p",
        json!([{"name": "c", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]),
    );
    assert_eq!(
        create("", "Pod", p),
        vec!["spec.containers[0].volumeMounts[0].name: Not found: \"data\""]
    );
}

#[test]
fn pod_update_allows_image_only() {
    let old = pod("p", json!([{"name": "c", "image": "busybox:1"}]));
    let mut new = pod("p", json!([{"name": "c", "image": "busybox:2"}]));
    assert!(update("", "Pod", new.clone(), old.clone()).is_empty());
    new["spec"]["containers"][0]["command"] = json!(["sh"]);
    let errs = update("", "Pod", new, old);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with(
        "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
    ));
    assert!(errs[0].ends_with("changed: spec.containers"), "{}", errs[0]);
}

// ---- workloads ----------------------------------------------------------------

#[test]
fn deployment_replicas_and_selector() {
    let d = deployment(-1, json!({"app": "web"}), json!({"app": "web"}));
    assert_eq!(
        create("apps", "Deployment", d),
        vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
    );
    let d = deployment(1, json!({"app": "web"}), json!({"app": "x"}));
    assert_eq!(
        create("apps", "Deployment", d),
        vec![
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"
        ]
    );
    let d = deployment(1, json!({}), json!({"app": "x"}));
    assert_eq!(
        create("apps", "Deployment", d),
        vec![
            "spec.selector: Invalid value: {\"matchLabels\":{}}: empty selector is invalid for deployment"
        ]
    );
}

#[test]
fn deployment_strategy_rules() {
    let mut d = deployment(1, json!({"app": "web"}), json!({"app": "web"}));
    d["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
    assert_eq!(
        create("apps", "Deployment", d),
        vec![
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"
        ]
    );
    let mut d = deployment(1, json!({"app": "web"}), json!({"app": "web"}));
    d["spec"]["strategy"] =
        json!({"rollingUpdate": {"maxSurge": "200%", "maxUnavailable": "150%"}});
    assert_eq!(
        create("apps", "Deployment", d),
        vec![
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"
        ]
    );
    let mut d = deployment(1, json!({"app": "web"}), json!({"app": "web"}));
    d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    assert_eq!(
        create("apps", "Deployment", d),
        vec![
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
        ]
    );
    let mut d = deployment(1, json!({"app": "web"}), json!({"app": "web"}));
    d["spec"]["minReadySeconds"] = json!(700);
    assert_eq!(
        create("apps", "Deployment", d),
        vec![
            "spec.progressDeadlineSeconds: Invalid value: 600: must be greater than minReadySeconds"
        ]
    );
}

#[test]
fn deployment_selector_is_immutable() {
    let old = deployment(1, json!({"app": "web"}), json!({"app": "web", "v": "2"}));
    let new = deployment(
        1,
        json!({"app": "web", "v": "2"}),
        json!({"app": "web", "v": "2"}),
    );
    let errs = update("apps", "Deployment", new, old);
    assert_eq!(
        errs,
        vec![
            "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"v\":\"2\"}}: field is immutable"
        ]
    );
}

#[test]
fn defaulted_workloads_are_valid() {
    let tmpl = json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let sel = json!({"matchLabels": {"app": "a"}});
    let cases = [
        (
            "apps",
            "Deployment",
            json!({"metadata": meta("a"), "spec": {"selector": sel, "template": tmpl}}),
        ),
        (
            "apps",
            "ReplicaSet",
            json!({"metadata": meta("a"), "spec": {"selector": sel, "template": tmpl}}),
        ),
        (
            "apps",
            "DaemonSet",
            json!({"metadata": meta("a"), "spec": {"selector": sel, "template": tmpl}}),
        ),
        (
            "apps",
            "StatefulSet",
            json!({"metadata": meta("a"), "spec": {"selector": sel, "serviceName": "a", "template": tmpl,
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}),
        ),
        (
            "",
            "ReplicationController",
            json!({"metadata": meta("a"), "spec": {"template": tmpl}}),
        ),
        (
            "",
            "PodTemplate",
            json!({"metadata": meta("a"), "template": tmpl}),
        ),
    ];
    for (g, k, obj) in cases {
        assert_eq!(create(g, k, obj), Vec::<String>::new(), "{k}");
    }
}

#[test]
fn daemon_set_rolling_update_rules() {
    let tmpl = json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let ds = json!({"metadata": meta("a"), "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": tmpl,
        "updateStrategy": {"rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}}});
    assert_eq!(
        create("apps", "DaemonSet", ds),
        vec![
            "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"
        ]
    );
}

#[test]
fn stateful_set_update_is_limited() {
    let base = json!({"metadata": meta("a"), "spec": {"selector": {"matchLabels": {"app": "a"}}, "serviceName": "a",
        "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let mut scaled = base.clone();
    scaled["spec"]["replicas"] = json!(3);
    assert!(update("apps", "StatefulSet", scaled, base.clone()).is_empty());
    let mut renamed = base.clone();
    renamed["spec"]["serviceName"] = json!("b");
    assert_eq!(
        update("apps", "StatefulSet", renamed, base),
        vec![
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
        ]
    );
}

#[test]
fn jobs_need_a_non_always_restart_policy() {
    let job = |rp: Option<&str>| {
        let mut j = json!({"metadata": meta("j"), "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        if let Some(rp) = rp {
            j["spec"]["template"]["spec"]["restartPolicy"] = json!(rp);
        }
        j
    };
    assert_eq!(
        create("batch", "Job", job(None)),
        vec![
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        ]
    );
    assert!(create("batch", "Job", job(Some("Never"))).is_empty());
    let mut old = job(Some("Never"));
    apply_defaults("batch", "v1", "Job", &mut old);
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2");
    let errs = update("batch", "Job", new, old);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("spec.template: Invalid value: "));
    assert!(errs[0].ends_with(": field is immutable"));
}

#[test]
fn cron_job_schedules() {
    let cj = |schedule: &str| {
        json!({"metadata": meta("backup"), "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}})
    };
    assert!(create("batch", "CronJob", cj("*/5 * * * *")).is_empty());
    assert!(create("batch", "CronJob", cj("@hourly")).is_empty());
    assert_eq!(
        create("batch", "CronJob", cj("* * * *")),
        vec![
            "spec.schedule: Invalid value: \"* * * *\": expected exactly 5 fields, found 4: [* * * *]"
        ]
    );
    assert_eq!(
        create("batch", "CronJob", cj("0 24 * * *")),
        vec![
            "spec.schedule: Invalid value: \"0 24 * * *\": end of range (24) above maximum (23): 24"
        ]
    );
    assert_eq!(
        create("batch", "CronJob", cj("TZ=UTC 0 0 * * *")),
        vec![
            "spec.schedule: Invalid value: \"TZ=UTC 0 0 * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
        ]
    );
    assert_eq!(
        create("batch", "CronJob", cj("")),
        vec!["spec.schedule: Required value"]
    );
    let mut tz = cj("0 0 * * *");
    tz["spec"]["timeZone"] = json!("Europe/Berlin");
    assert!(create("batch", "CronJob", tz.clone()).is_empty());
    tz["spec"]["timeZone"] = json!("Local");
    assert_eq!(
        create("batch", "CronJob", tz),
        vec![
            "spec.timeZone: Invalid value: \"Local\": timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
        ]
    );
    let mut long = cj("@daily");
    long["metadata"]["name"] = json!("a".repeat(53));
    assert_eq!(
        create("batch", "CronJob", long),
        vec![format!(
            "metadata.name: Invalid value: \"{}\": must be no more than 52 characters",
            "a".repeat(53)
        )]
    );
}

// ---- services -----------------------------------------------------------------

#[test]
fn service_ports() {
    assert_eq!(
        create("", "Service", service(json!([{"port": 0}]))),
        // targetPort defaults to the port, so upstream reports it too.
        vec![
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
        ]
    );
    assert_eq!(
        create(
            "",
            "Service",
            service(json!([{"port": 80}, {"port": 443, "name": "https"}]))
        ),
        vec!["spec.ports[0].name: Required value"]
    );
    assert_eq!(
        create("", "Service", service(json!([]))),
        vec!["spec.ports: Required value"]
    );
    assert_eq!(
        create(
            "",
            "Service",
            service(json!([{"port": 80, "targetPort": "HTTP"}]))
        ),
        vec![
            "spec.ports[0].targetPort: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            "spec.ports[0].targetPort: Invalid value: \"HTTP\": must contain at least one letter (a-z)",
        ]
    );
    assert!(
        create(
            "",
            "Service",
            service(json!([{"port": 80, "targetPort": "http"}]))
        )
        .is_empty()
    );
}

#[test]
fn service_types_and_policies() {
    let mut s = service(json!([{"port": 80}]));
    s["spec"]["type"] = json!("Balanced");
    assert_eq!(
        create("", "Service", s),
        vec![
            "spec.type: Unsupported value: \"Balanced\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
        ]
    );
    let mut s = service(json!([{"port": 80}]));
    s["spec"]["externalTrafficPolicy"] = json!("Local");
    assert_eq!(
        create("", "Service", s),
        vec![
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services"
        ]
    );
    let mut s = service(json!([{"port": 80, "nodePort": 30080}]));
    s["spec"]["type"] = json!("NodePort");
    assert!(create("", "Service", s).is_empty());
    let s = json!({"metadata": meta("db"), "spec": {"type": "ExternalName", "externalName": "db.example.com."}});
    assert!(create("", "Service", s).is_empty());
    let s = json!({"metadata": meta("db"), "spec": {"type": "ExternalName"}});
    assert_eq!(
        create("", "Service", s),
        vec!["spec.externalName: Required value"]
    );
    let s = json!({"metadata": meta("1db"), "spec": {"clusterIP": "None"}});
    assert_eq!(
        create("", "Service", s),
        vec![
            "metadata.name: Invalid value: \"1db\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
}

#[test]
fn service_cluster_ip_may_not_change() {
    let mut old = service(json!([{"port": 80}]));
    old["spec"]["clusterIP"] = json!("10.43.0.10");
    old["spec"]["clusterIPs"] = json!(["10.43.0.10"]);
    let mut new = old.clone();
    new["spec"]["clusterIP"] = json!("10.43.0.20");
    new["spec"]["clusterIPs"] = json!(["10.43.0.20"]);
    assert_eq!(
        update("", "Service", new, old.clone()),
        vec![
            "spec.clusterIPs[0]: Invalid value: []string{\"10.43.0.20\"}: may not change once set"
        ]
    );
    // Leaving the IP out keeps the allocated one.
    let mut new = service(json!([{"port": 80}]));
    crate::defaults::prepare_service_update(&mut new, &old);
    assert_eq!(new["spec"]["clusterIP"], json!("10.43.0.10"));
    assert!(update("", "Service", new, old.clone()).is_empty());
    // Changing to ExternalName drops the IP legitimately.
    let new = json!({"metadata": meta("web"), "spec": {"type": "ExternalName", "externalName": "x.example.com"}});
    assert!(update("", "Service", new, old).is_empty());
}

#[test]
fn service_cluster_ips_must_be_consistent() {
    let mut s = service(json!([{"port": 80}]));
    s["spec"]["clusterIP"] = json!("10.43.0.10");
    s["spec"]["clusterIPs"] = json!(["10.43.0.11"]);
    assert_eq!(
        create("", "Service", s),
        vec![
            "spec.clusterIPs: Invalid value: []string{\"10.43.0.11\"}: first value must match `clusterIP`"
        ]
    );
    let mut s = service(json!([{"port": 80}]));
    s["spec"]["clusterIP"] = json!("10.43.0.300");
    assert_eq!(
        create("", "Service", s),
        vec![
            "spec.clusterIPs[0]: Invalid value: \"10.43.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        ]
    );
}

// ---- ConfigMaps and Secrets ---------------------------------------------------

#[test]
fn config_map_keys() {
    let cm = json!({"metadata": meta("c"), "data": {"bad key": "v", "good.key": "v"}});
    assert_eq!(
        create("", "ConfigMap", cm),
        vec![
            "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
        ]
    );
    let cm = json!({"metadata": meta("c"), "data": {"k": "v"}, "binaryData": {"k": "AAE="}});
    assert_eq!(
        create("", "ConfigMap", cm),
        vec![
            "data[k]: Invalid value: \"k\": duplicate of key present in binaryData",
            "binaryData[k]: Invalid value: \"k\": duplicate of key present in data",
        ]
    );
    let cm = json!({"metadata": meta("c"), "data": {"k": "x".repeat(1024 * 1024 + 1)}});
    assert_eq!(
        create("", "ConfigMap", cm),
        vec![": Too long: may not be more than 1048576 bytes"]
    );
}

#[test]
fn immutable_config_maps_and_secrets() {
    let old = json!({"metadata": meta("c"), "immutable": true, "data": {"k": "v"}});
    let mut new = old.clone();
    new["data"]["k"] = json!("w");
    assert_eq!(
        update("", "ConfigMap", new, old.clone()),
        vec!["data: Forbidden: field is immutable when `immutable` is set"]
    );
    let mut new = old.clone();
    new["immutable"] = json!(false);
    assert_eq!(
        update("", "ConfigMap", new, old),
        vec!["immutable: Forbidden: field is immutable when `immutable` is set"]
    );
    // Mutable ones may change, and may become immutable.
    let old = json!({"metadata": meta("c"), "data": {"k": "v"}});
    let new = json!({"metadata": meta("c"), "immutable": true, "data": {"k": "w"}});
    assert!(update("", "ConfigMap", new, old).is_empty());

    let old = json!({"metadata": meta("s"), "immutable": true, "data": {"k": "dg=="}});
    let new = json!({"metadata": meta("s"), "immutable": true, "data": {"k": "dw=="}});
    assert_eq!(
        update("", "Secret", new, old),
        vec!["data: Forbidden: field is immutable when `immutable` is set"]
    );
}

#[test]
fn secret_type_is_immutable_and_checked() {
    let old = json!({"metadata": meta("s"), "data": {"k": "dg=="}});
    let new = json!({"metadata": meta("s"), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
    assert_eq!(
        update("", "Secret", new, old),
        vec!["type: Invalid value: \"kubernetes.io/tls\": field is immutable"]
    );
    let tls = json!({"metadata": meta("s"), "type": "kubernetes.io/tls", "data": {}});
    assert_eq!(
        create("", "Secret", tls),
        vec![
            "data[tls.crt]: Required value",
            "data[tls.key]: Required value"
        ]
    );
    let sa = json!({"metadata": meta("s"), "type": "kubernetes.io/service-account-token"});
    assert_eq!(
        create("", "Secret", sa),
        vec!["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
    );
    let bad = json!({"metadata": meta("s"), "data": {"k": "not base64"}});
    assert_eq!(
        create("", "Secret", bad),
        vec![
            "data[k]: Invalid value: \"<secret contents redacted>\": illegal base64 data at input byte 3"
        ]
    );
    let docker =
        json!({"metadata": meta("s"), "type": "kubernetes.io/dockerconfigjson", "data": {}});
    assert_eq!(
        create("", "Secret", docker),
        vec!["data[.dockerconfigjson]: Required value"]
    );
}

#[test]
fn secret_string_data_is_merged_then_valid() {
    let s = json!({"metadata": meta("s"), "type": "kubernetes.io/basic-auth", "stringData": {"username": "admin"}});
    assert!(create("", "Secret", s).is_empty());
}

// ---- cluster objects ----------------------------------------------------------

#[test]
fn namespace_finalizers() {
    let ns = json!({"metadata": {"name": "team-a"}, "spec": {"finalizers": ["custom"]}});
    assert_eq!(
        create("", "Namespace", ns),
        vec![
            "spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
        ]
    );
    assert!(create("", "Namespace", json!({"metadata": {"name": "team-a"}})).is_empty());
}

#[test]
fn node_pod_cidr_is_set_once() {
    let old = json!({"metadata": {"name": "n1"}, "spec": {}});
    let set = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"]}});
    assert!(update("", "Node", set.clone(), old).is_empty());
    let changed = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]}});
    assert_eq!(
        update("", "Node", changed, set.clone()),
        vec![
            "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"
        ]
    );
    let mut cordoned = set.clone();
    cordoned["spec"]["unschedulable"] = json!(true);
    cordoned["spec"]["taints"] = json!([{"key": "k", "effect": "NoSchedule"}]);
    assert!(update("", "Node", cordoned, set.clone()).is_empty());
    let mut other = set.clone();
    other["spec"]["externalID"] = json!("x");
    assert_eq!(
        update("", "Node", other, set),
        vec![
            ": Forbidden: node updates may only change labels, taints, or capacity (or configSource, if the DynamicKubeletConfig feature gate is enabled)"
        ]
    );
    let bad = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.42.0.0/33", "taints": [{"key": "k", "effect": "Sometimes"}]}});
    assert_eq!(
        create("", "Node", bad),
        vec![
            "spec.taints[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
            "spec.podCIDRs[0]: Invalid value: \"10.42.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ]
    );
}

#[test]
fn pvc_rules() {
    let pvc = |size: &str| json!({"metadata": meta("data"), "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}});
    assert!(create("", "PersistentVolumeClaim", pvc("1Gi")).is_empty());
    assert_eq!(
        create(
            "",
            "PersistentVolumeClaim",
            json!({"metadata": meta("data"), "spec": {}})
        ),
        vec![
            "spec.accessModes: Required value: at least 1 access mode is required",
            "spec.resources[storage]: Required value",
        ]
    );
    assert_eq!(
        create("", "PersistentVolumeClaim", pvc("0")),
        vec!["spec.resources[storage]: Invalid value: \"0\": must be greater than zero"]
    );
    // Unbound claims are immutable; bound ones may grow.
    let errs = update("", "PersistentVolumeClaim", pvc("2Gi"), pvc("1Gi"));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with(
        "spec: Forbidden: spec is immutable after creation except resources.requests"
    ));
    let bound = |size: &str| {
        let mut p = pvc(size);
        p["spec"]["volumeName"] = json!("pv-1");
        p["status"] = json!({"phase": "Bound", "capacity": {"storage": "1Gi"}});
        p
    };
    assert!(update("", "PersistentVolumeClaim", bound("2Gi"), bound("1Gi")).is_empty());
    assert_eq!(
        update("", "PersistentVolumeClaim", bound("1Gi"), bound("2Gi")),
        vec![
            "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
        ]
    );
    // The binder may fill volumeName once.
    let mut named = pvc("1Gi");
    named["spec"]["volumeName"] = json!("pv-1");
    assert!(update("", "PersistentVolumeClaim", named, pvc("1Gi")).is_empty());
}

#[test]
fn lease_and_ingress() {
    let lease = json!({"metadata": meta("l"), "spec": {"leaseDurationSeconds": 0}});
    assert_eq!(
        create("coordination.k8s.io", "Lease", lease),
        vec!["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
    );
    let ing = json!({"metadata": meta("i"), "spec": {"rules": [{"host": "10.0.0.1", "http": {"paths": [
        {"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
        {"path": "api", "pathType": "Prefix", "backend": {"service": {"name": "web"}}}
    ]}}]}});
    assert_eq!(
        create("networking.k8s.io", "Ingress", ing),
        vec![
            "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
            "spec.rules[0].http.paths[1].path: Invalid value: \"api\": must be an absolute path",
            "spec.rules[0].http.paths[1].backend: Required value: port name or number is required",
        ]
    );
    let ok = json!({"metadata": meta("i"), "spec": {"ingressClassName": "traefik", "rules": [{"host": "*.example.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}});
    assert!(create("networking.k8s.io", "Ingress", ok).is_empty());
    assert_eq!(
        create(
            "networking.k8s.io",
            "Ingress",
            json!({"metadata": meta("i"), "spec": {}})
        ),
        vec!["spec: Invalid value: null: either `defaultBackend` or `rules` must be specified"]
    );
}

#[test]
fn rbac_rules_and_bindings() {
    let role = json!({"metadata": meta("r"), "rules": [{"verbs": ["get"], "resources": ["pods"]}, {"verbs": [], "nonResourceURLs": ["/healthz"]}]});
    assert_eq!(
        create("rbac.authorization.k8s.io", "Role", role),
        vec![
            "rules[0].apiGroups: Required value: resource rules must supply at least one api group",
            "rules[1].verbs: Required value: verbs must contain at least one value",
            "rules[1].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs",
        ]
    );
    let crb = json!({"metadata": {"name": "admin:me"}, "roleRef": {"kind": "Role", "name": "x"},
        "subjects": [{"kind": "ServiceAccount", "name": "default"}, {"kind": "User", "name": "me"}, {"kind": "Robot", "name": "r"}]});
    assert_eq!(
        create("rbac.authorization.k8s.io", "ClusterRoleBinding", crb),
        vec![
            "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
            "subjects[0].namespace: Required value",
            "subjects[2].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
        ]
    );
    let old =
        json!({"metadata": meta("b"), "roleRef": {"kind": "Role", "name": "a"}, "subjects": []});
    let new = json!({"metadata": meta("b"), "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "b"}, "subjects": []});
    assert_eq!(
        update("rbac.authorization.k8s.io", "RoleBinding", new, old.clone()),
        vec![
            "roleRef: Invalid value: map[string]string{\"apiGroup\":\"rbac.authorization.k8s.io\", \"kind\":\"Role\", \"name\":\"b\"}: cannot change roleRef"
        ]
    );
    assert!(update("rbac.authorization.k8s.io", "RoleBinding", old.clone(), old).is_empty());
}

// ---- robustness ---------------------------------------------------------------

const ALL_KINDS: &[(&str, &str)] = &[
    ("", "Pod"),
    ("", "PodTemplate"),
    ("", "ReplicationController"),
    ("", "Service"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolumeClaim"),
    ("", "PersistentVolume"),
    ("", "Endpoints"),
    ("", "ServiceAccount"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("coordination.k8s.io", "Lease"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "StorageClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
];

/// Odd shapes in every position a rule reads.
fn garbage() -> Vec<Value> {
    let weird = [
        json!(null),
        json!(7),
        json!(-1),
        json!("x"),
        json!([1, "a", null]),
        json!({"a": [null]}),
        json!(true),
    ];
    let mut out = vec![json!(null), json!([]), json!("str"), json!({})];
    for w in &weird {
        out.push(json!({"metadata": w, "spec": w, "data": w, "rules": w, "subjects": w, "roleRef": w, "status": w}));
        out.push(json!({"metadata": {"name": w, "namespace": w, "labels": w, "annotations": w, "finalizers": w, "ownerReferences": [w]},
            "spec": {"containers": [w, {"name": w, "image": w, "ports": [w], "env": [w], "resources": {"limits": {"cpu": w}, "requests": w},
                "volumeMounts": [w], "livenessProbe": {"httpGet": {"port": w}}, "securityContext": w}],
                "volumes": [w, {"name": "v", "secret": w}, {"name": "v", "projected": {"sources": [w]}}],
                "ports": [w, {"port": w, "targetPort": w, "nodePort": w}], "selector": w, "template": w, "jobTemplate": {"spec": w},
                "schedule": w, "replicas": w, "strategy": {"rollingUpdate": {"maxSurge": w, "maxUnavailable": w}},
                "updateStrategy": {"type": w, "rollingUpdate": w}, "clusterIP": w, "clusterIPs": w, "taints": [w],
                "podCIDRs": w, "accessModes": w, "resources": {"requests": {"storage": w}}, "rules": [w, {"http": {"paths": [w]}}],
                "tls": [w], "egress": w, "policyTypes": w, "tolerations": [w], "dnsConfig": w},
            "data": {"k": w}, "binaryData": {"k": w}, "stringData": {"k": w}, "type": w, "immutable": w,
            "rules": [w], "subjects": [w], "roleRef": {"kind": w}, "webhooks": [w], "template": w}));
    }
    out
}

#[test]
fn no_panics_on_garbage() {
    let inputs = garbage();
    for (g, k) in ALL_KINDS {
        for a in &inputs {
            let mut a2 = a.clone();
            apply_defaults(g, "v1", k, &mut a2);
            let mut again = a2.clone();
            apply_defaults(g, "v1", k, &mut again);
            assert_eq!(a2, again, "defaults not idempotent for {k}: {a}");
            let _ = validate(g, "v1", k, a, true);
            let _ = validate(g, "v1", k, &a2, false);
            for b in &inputs {
                let _ = validate_update(g, "v1", k, a, b, true);
            }
        }
    }
}
