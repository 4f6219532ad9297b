//! Defaulted objects as a user reads them back.

use serde_json::{Value, json};

use super::{apply_defaults, pod::image_pull_policy};

fn defaulted(group: &str, kind: &str, mut obj: Value) -> Value {
    apply_defaults(group, "v1", kind, &mut obj);
    let mut again = obj.clone();
    apply_defaults(group, "v1", kind, &mut again);
    assert_eq!(obj, again, "defaulting {kind} twice changed it");
    obj
}

#[test]
fn every_table_entry_is_valid_json() {
    for rule in super::kinds::KINDS {
        for d in rule.table {
            assert!(
                serde_json::from_str::<Value>(d.json).is_ok(),
                "{} {}",
                rule.kind,
                d.path
            );
        }
    }
}

#[test]
fn pod_defaults() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"metadata": {"name": "p"}, "spec": {
            "containers": [
                {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
                 "resources": {"limits": {"cpu": "500m"}},
                 "livenessProbe": {"httpGet": {"port": 80}},
                 "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
                {"name": "b", "image": "registry.local:5000/app:1.2"}
            ],
            "initContainers": [{"name": "i", "image": "busybox@sha256:abcd"}],
            "volumes": [
                {"name": "s", "secret": {"secretName": "x"}},
                {"name": "c", "configMap": {"name": "x", "defaultMode": 256}},
                {"name": "e"}
            ]
        }}),
    );
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["securityContext"], json!({}));
    assert_eq!(spec["enableServiceLinks"], true);
    assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
    assert_eq!(spec["priority"], 0);
    let a = &spec["containers"][0];
    assert_eq!(a["imagePullPolicy"], "Always");
    assert_eq!(a["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(a["terminationMessagePolicy"], "File");
    assert_eq!(a["ports"][0]["protocol"], "TCP");
    assert_eq!(a["resources"]["requests"], json!({"cpu": "500m"}));
    assert_eq!(
        a["livenessProbe"],
        json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
               "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(a["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    let b = &spec["containers"][1];
    assert_eq!(b["imagePullPolicy"], "IfNotPresent");
    assert_eq!(b["resources"], json!({}));
    assert_eq!(spec["initContainers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        spec["initContainers"][0]["terminationMessagePolicy"],
        "File"
    );
    assert_eq!(spec["volumes"][0]["secret"]["defaultMode"], 420);
    assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 256);
    assert_eq!(spec["volumes"][2]["emptyDir"], json!({}));
    assert!(pod.get("status").is_none());
}

#[test]
fn pull_policy_follows_the_tag() {
    assert_eq!(image_pull_policy("nginx"), "Always");
    assert_eq!(image_pull_policy("nginx:latest"), "Always");
    assert_eq!(image_pull_policy("localhost:5000/nginx"), "Always");
    assert_eq!(
        image_pull_policy("localhost:5000/nginx:1.27"),
        "IfNotPresent"
    );
    assert_eq!(image_pull_policy("nginx@sha256:00"), "IfNotPresent");
    assert_eq!(image_pull_policy("nginx:latest@sha256:00"), "Always");
    assert_eq!(image_pull_policy(""), "IfNotPresent");
}

#[test]
fn templates_get_pod_defaults_without_admission_fields() {
    let d = defaulted(
        "apps",
        "Deployment",
        json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "nginx:1", "resources": {"limits": {"cpu": "1"}}}]}}}}),
    );
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert!(pod.get("priority").is_none());
    assert!(pod.get("preemptionPolicy").is_none());
    // Requests are copied from limits on Pods only.
    assert!(pod["containers"][0]["resources"].get("requests").is_none());

    let recreate = defaulted(
        "apps",
        "Deployment",
        json!({"spec": {"strategy": {"type": "Recreate"}, "replicas": 3}}),
    );
    assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(recreate["spec"]["replicas"], 3);
}

#[test]
fn workload_defaults() {
    let sts = defaulted(
        "apps",
        "StatefulSet",
        json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}]}}),
    );
    assert_eq!(sts["spec"]["replicas"], 1);
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(sts["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(
        sts["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"],
        "Filesystem"
    );
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["status"]["phase"],
        "Pending"
    );
    let on_delete = defaulted(
        "apps",
        "StatefulSet",
        json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}),
    );
    assert_eq!(
        on_delete["spec"]["updateStrategy"],
        json!({"type": "OnDelete"})
    );

    let ds = defaulted("apps", "DaemonSet", json!({"spec": {}}));
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);

    let rs = defaulted("apps", "ReplicaSet", json!({"spec": {}}));
    assert_eq!(rs["spec"]["replicas"], 1);

    let rc = defaulted(
        "",
        "ReplicationController",
        json!({"metadata": {"name": "r"}, "spec": {"template": {"metadata": {"labels": {"app": "r"}}}}}),
    );
    assert_eq!(rc["spec"]["replicas"], 1);
    assert_eq!(rc["spec"]["selector"], json!({"app": "r"}));
    assert_eq!(rc["metadata"]["labels"], json!({"app": "r"}));
}

#[test]
fn job_and_cron_job_defaults() {
    let job = defaulted(
        "batch",
        "Job",
        json!({"metadata": {"name": "j"}, "spec": {"template": {"metadata": {"labels": {"app": "j"}}, "spec": {}}}}),
    );
    let s = &job["spec"];
    assert_eq!(
        (s["completions"].clone(), s["parallelism"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(s["backoffLimit"], 6);
    assert_eq!(s["completionMode"], "NonIndexed");
    assert_eq!(s["suspend"], false);
    assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
    assert!(s.get("manualSelector").is_none());
    assert_eq!(job["metadata"]["labels"], json!({"app": "j"}));
    // Parallel work queue: completions stays unset.
    let queue = defaulted("batch", "Job", json!({"spec": {"parallelism": 3}}));
    assert!(queue["spec"].get("completions").is_none());
    let fixed = defaulted("batch", "Job", json!({"spec": {"completions": 5}}));
    assert_eq!(fixed["spec"]["parallelism"], 1);
    let pfp = defaulted(
        "batch",
        "Job",
        json!({"spec": {"backoffLimitPerIndex": 1, "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}}),
    );
    assert_eq!(pfp["spec"]["backoffLimit"], 2_147_483_647);
    assert_eq!(pfp["spec"]["podReplacementPolicy"], "Failed");
    assert_eq!(
        pfp["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
        "True"
    );

    let cj = defaulted(
        "batch",
        "CronJob",
        json!({"spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}}}),
    );
    let s = &cj["spec"];
    assert_eq!(s["concurrencyPolicy"], "Allow");
    assert_eq!(s["suspend"], false);
    assert_eq!(s["successfulJobsHistoryLimit"], 3);
    assert_eq!(s["failedJobsHistoryLimit"], 1);
    assert_eq!(
        s["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
        "ClusterFirst"
    );
    assert_eq!(
        s["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
}

#[test]
fn service_defaults() {
    let svc = defaulted(
        "",
        "Service",
        json!({"spec": {"selector": {"app": "a"}, "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}}),
    );
    let s = &svc["spec"];
    assert_eq!(s["type"], "ClusterIP");
    assert_eq!(s["sessionAffinity"], "None");
    assert_eq!(s["internalTrafficPolicy"], "Cluster");
    assert_eq!(s["ipFamilyPolicy"], "SingleStack");
    assert!(s.get("externalTrafficPolicy").is_none());
    assert_eq!(
        s["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    assert_eq!(
        s["ports"][1],
        json!({"port": 53, "protocol": "UDP", "targetPort": "dns"})
    );

    let lb = defaulted(
        "",
        "Service",
        json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
    );
    assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);

    let headless = defaulted("", "Service", json!({"spec": {"clusterIP": "None"}}));
    assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");

    let ext = defaulted(
        "",
        "Service",
        json!({"spec": {"type": "ExternalName", "externalName": "a.b"}}),
    );
    assert!(ext["spec"].get("ipFamilyPolicy").is_none());
    assert!(ext["spec"].get("internalTrafficPolicy").is_none());

    let sticky = defaulted(
        "",
        "Service",
        json!({"spec": {"sessionAffinity": "ClientIP"}}),
    );
    assert_eq!(
        sticky["spec"]["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );
    let none = defaulted(
        "",
        "Service",
        json!({"spec": {"sessionAffinity": "None", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}}),
    );
    assert!(none["spec"].get("sessionAffinityConfig").is_none());
}

#[test]
fn core_object_defaults() {
    let ns = defaulted("", "Namespace", json!({"metadata": {"name": "team"}}));
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team"
    );

    let secret = defaulted(
        "",
        "Secret",
        json!({"data": {"a": "eA==", "b": "eA=="}, "stringData": {"b": "hello", "c": ""}}),
    );
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["data"],
        json!({"a": "eA==", "b": "aGVsbG8=", "c": ""})
    );
    assert!(secret.get("stringData").is_none());
    let typed = defaulted("", "Secret", json!({"type": "kubernetes.io/tls"}));
    assert_eq!(typed["type"], "kubernetes.io/tls");

    let pvc = defaulted(
        "",
        "PersistentVolumeClaim",
        json!({"spec": {"accessModes": ["ReadWriteOnce"]}}),
    );
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");
    let pv = defaulted(
        "",
        "PersistentVolume",
        json!({"spec": {"hostPath": {"path": "/x"}}}),
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pv["spec"]["hostPath"]["type"], "");

    let ep = defaulted(
        "",
        "Endpoints",
        json!({"subsets": [{"ports": [{"port": 80}]}]}),
    );
    assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
    let eps = defaulted(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"ports": [{"port": 80}]}),
    );
    assert_eq!(
        eps["ports"][0],
        json!({"port": 80, "protocol": "TCP", "name": ""})
    );

    let node = defaulted("", "Node", json!({"status": {"capacity": {"cpu": "4"}}}));
    assert_eq!(node["status"]["allocatable"], json!({"cpu": "4"}));
}

#[test]
fn other_group_defaults() {
    let np = defaulted(
        "networking.k8s.io",
        "NetworkPolicy",
        json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}}),
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
    let np = defaulted(
        "networking.k8s.io",
        "NetworkPolicy",
        json!({"spec": {"podSelector": {}}}),
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));

    let rb = defaulted(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        json!({"roleRef": {"kind": "Role", "name": "r"}, "subjects": [
            {"kind": "User", "name": "u"}, {"kind": "Group", "name": "g"}, {"kind": "ServiceAccount", "name": "s"}]}),
    );
    assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][1]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][2]["apiGroup"], "");

    let pc = defaulted("scheduling.k8s.io", "PriorityClass", json!({"value": 1000}));
    assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
    let sc = defaulted(
        "storage.k8s.io",
        "StorageClass",
        json!({"provisioner": "x"}),
    );
    assert_eq!(
        (sc["reclaimPolicy"].clone(), sc["volumeBindingMode"].clone()),
        (json!("Delete"), json!("Immediate"))
    );
    let csi = defaulted(
        "storage.k8s.io",
        "CSIDriver",
        json!({"metadata": {"name": "x"}}),
    );
    assert_eq!(
        csi["spec"],
        json!({"attachRequired": true, "podInfoOnMount": false, "volumeLifecycleModes": ["Persistent"],
               "fsGroupPolicy": "ReadWriteOnceWithFSType", "storageCapacity": false,
               "requiresRepublish": false, "seLinuxMount": false})
    );
    let lease = defaulted("coordination.k8s.io", "Lease", json!({"spec": {}}));
    assert_eq!(lease, json!({"spec": {}}));
}

#[test]
fn present_values_are_kept() {
    let d = defaulted(
        "apps",
        "Deployment",
        json!({"spec": {"replicas": 0, "revisionHistoryLimit": 0, "strategy": {"rollingUpdate": {"maxSurge": 1}},
            "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"image": "a", "imagePullPolicy": "Never"}]}}}}),
    );
    assert_eq!(d["spec"]["replicas"], 0);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 0);
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"],
        json!({"maxSurge": 1, "maxUnavailable": "25%"})
    );
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "OnFailure");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Never"
    );
}

#[test]
fn odd_shapes_are_left_alone() {
    for obj in [
        json!(null),
        json!([1]),
        json!("x"),
        json!({"spec": 3}),
        json!({"spec": {"containers": "x", "volumes": [1]}}),
    ] {
        let before = obj.clone();
        let mut o = obj;
        apply_defaults("", "v1", "Pod", &mut o);
        apply_defaults("apps", "v1", "Deployment", &mut o);
        if !before.is_object() {
            assert_eq!(o, before);
        }
    }
    let mut unknown = json!({"spec": {}});
    apply_defaults("example.com", "v1", "Widget", &mut unknown);
    assert_eq!(unknown, json!({"spec": {}}));
}
