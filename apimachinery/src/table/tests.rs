//! Row and column checks against what `kubectl get` shows upstream.

use serde_json::{Value, json};

use super::*;

/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200;

fn ts(secs_after_t0: i64) -> String {
    time::format_rfc3339(T0 + secs_after_t0)
}

fn names(group: &str, kind: &str) -> Vec<String> {
    column_definitions(group, kind)
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_uppercase();
            if c["priority"] == 1 {
                format!("{name}*")
            } else {
                name
            }
        })
        .collect()
}

fn row(group: &str, kind: &str, obj: &Value, now: i64) -> Vec<Value> {
    let cells = row_cells(group, kind, obj, now);
    let cells = cells.as_array().unwrap().clone();
    assert_eq!(
        cells.len(),
        column_definitions(group, kind).as_array().unwrap().len(),
        "one cell per column for {kind}"
    );
    cells
}

fn pod(status: Value) -> Value {
    json!({
        "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ts(0)},
        "spec": {"nodeName": "node1", "containers": [{"name": "app", "image": "nginx"}]},
        "status": status,
    })
}

#[test]
fn pod_columns() {
    assert_eq!(
        names("", "Pod"),
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP*",
            "NODE*",
            "NOMINATED NODE*",
            "READINESS GATES*"
        ]
    );
    let defs = column_definitions("", "Pod");
    assert_eq!(defs[0]["format"], "name");
    assert_eq!(defs[0]["type"], "string");
    assert_eq!(defs[3]["type"], "string");
}

#[test]
fn running_pod() {
    let p = pod(json!({
        "phase": "Running",
        "podIP": "10.42.0.5",
        "podIPs": [{"ip": "10.42.0.5"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{
            "name": "app", "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": ts(5)}}
        }]
    }));
    assert_eq!(
        row("", "Pod", &p, T0 + 3600),
        [
            json!("web-1"),
            json!("1/1"),
            json!("Running"),
            json!("0"),
            json!("60m"),
            json!("10.42.0.5"),
            json!("node1"),
            json!("<none>"),
            json!("<none>")
        ]
    );
}

#[test]
fn pending_pod_container_creating() {
    let p = pod(json!({
        "phase": "Pending",
        "containerStatuses": [{
            "name": "app", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}
        }]
    }));
    let r = row("", "Pod", &p, T0 + 4);
    assert_eq!(r[1], "0/1");
    assert_eq!(r[2], "ContainerCreating");
    assert_eq!(r[3], "0");
    assert_eq!(r[4], "4s");
    assert_eq!(r[5], "<none>");

    // Not yet scheduled: no statuses at all.
    let p = json!({"metadata": {"name": "x"}, "spec": {"containers": [{}, {}]}, "status": {"phase": "Pending"}});
    let r = row("", "Pod", &p, T0);
    assert_eq!(r[1], "0/2");
    assert_eq!(r[2], "Pending");
    assert_eq!(r[4], "<unknown>");
    assert_eq!(r[6], "<none>");
}

#[test]
fn crash_loop_back_off_with_last_restart() {
    let p = pod(json!({
        "phase": "Running",
        "containerStatuses": [{
            "name": "app", "ready": false, "restartCount": 5,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ts(600)}}
        }]
    }));
    let r = row("", "Pod", &p, T0 + 900);
    assert_eq!(r[1], "0/1");
    assert_eq!(r[2], "CrashLoopBackOff");
    assert_eq!(r[3], "5 (5m ago)");
    assert_eq!(r[4], "15m");
}

#[test]
fn image_pull_errors_and_exit_codes() {
    let p = pod(json!({
        "phase": "Pending",
        "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ErrImagePull"}}}]
    }));
    assert_eq!(row("", "Pod", &p, T0)[2], "ErrImagePull");
    let p = pod(json!({
        "phase": "Failed",
        "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]
    }));
    assert_eq!(row("", "Pod", &p, T0)[2], "Signal:9");
    let p = pod(json!({
        "phase": "Failed",
        "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 3}}}]
    }));
    assert_eq!(row("", "Pod", &p, T0)[2], "ExitCode:3");
    let p = pod(json!({"phase": "Failed", "reason": "Evicted"}));
    assert_eq!(row("", "Pod", &p, T0)[2], "Evicted");
}

#[test]
fn init_containers() {
    let mut p = pod(json!({
        "phase": "Pending",
        "initContainerStatuses": [{
            "name": "init", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "PodInitializing"}}
        }],
        "containerStatuses": [{
            "name": "app", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "PodInitializing"}}
        }]
    }));
    p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
    let r = row("", "Pod", &p, T0);
    assert_eq!(r[1], "0/1");
    assert_eq!(r[2], "Init:0/1");

    // Init done, main container still starting.
    p["status"]["initContainerStatuses"][0]["state"] =
        json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
    assert_eq!(row("", "Pod", &p, T0)[2], "PodInitializing");

    // Init failing.
    p["status"]["initContainerStatuses"][0]["state"] =
        json!({"terminated": {"exitCode": 1, "reason": "Error"}});
    assert_eq!(row("", "Pod", &p, T0)[2], "Init:Error");
    p["status"]["initContainerStatuses"][0]["state"] =
        json!({"waiting": {"reason": "CrashLoopBackOff"}});
    p["status"]["initContainerStatuses"][0]["restartCount"] = json!(3);
    p["status"]["initContainerStatuses"][0]["lastState"] =
        json!({"terminated": {"exitCode": 1, "finishedAt": ts(100)}});
    let r = row("", "Pod", &p, T0 + 160);
    assert_eq!(r[2], "Init:CrashLoopBackOff");
    assert_eq!(r[3], "3 (60s ago)");
}

#[test]
fn sidecar_counts_towards_ready() {
    let p = json!({
        "metadata": {"name": "p"},
        "spec": {
            "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "app"}]
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true,
                "state": {"running": {}}}],
            "containerStatuses": [{"name": "app", "ready": true, "state": {"running": {}}}]
        }
    });
    let r = row("", "Pod", &p, T0);
    assert_eq!(r[1], "2/2");
    assert_eq!(r[2], "Running");
}

#[test]
fn completed_pod() {
    let p = pod(json!({
        "phase": "Succeeded",
        "containerStatuses": [{
            "name": "app", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
        }]
    }));
    let r = row("", "Pod", &p, T0);
    assert_eq!(r[1], "0/1");
    assert_eq!(r[2], "Completed");
    // Completed with another container still running reads Running/NotReady.
    let mut p2 = p.clone();
    p2["spec"]["containers"] = json!([{"name": "a"}, {"name": "b"}]);
    p2["status"] = json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {"name": "a", "ready": true, "state": {"running": {}}},
            {"name": "b", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ]
    });
    assert_eq!(row("", "Pod", &p2, T0)[2], "NotReady");
}

#[test]
fn terminating_pod() {
    let mut p = pod(json!({
        "phase": "Running",
        "containerStatuses": [{"name": "app", "ready": true, "state": {"running": {}}}]
    }));
    p["metadata"]["deletionTimestamp"] = json!(ts(30));
    assert_eq!(row("", "Pod", &p, T0 + 40)[2], "Terminating");
    // A finished pod being deleted keeps its final status.
    p["status"]["phase"] = json!("Succeeded");
    p["status"]["containerStatuses"][0]["state"] =
        json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
    assert_eq!(row("", "Pod", &p, T0 + 40)[2], "Completed");
    // Node lost.
    p["status"]["reason"] = json!("NodeLost");
    assert_eq!(row("", "Pod", &p, T0 + 40)[2], "Unknown");
}

#[test]
fn readiness_gates_and_nominated_node() {
    let mut p = pod(json!({
        "phase": "Running",
        "nominatedNodeName": "node2",
        "conditions": [{"type": "example.com/gate", "status": "True"}]
    }));
    p["spec"]["readinessGates"] =
        json!([{"conditionType": "example.com/gate"}, {"conditionType": "other"}]);
    let r = row("", "Pod", &p, T0);
    assert_eq!(r[7], "node2");
    assert_eq!(r[8], "1/2");
}

#[test]
fn deployment_counts() {
    assert_eq!(
        names("apps", "Deployment"),
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS*",
            "IMAGES*",
            "SELECTOR*"
        ]
    );
    let d = json!({
        "metadata": {"name": "web", "creationTimestamp": ts(0)},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:1.27"},
                {"name": "sidecar", "image": "envoy"}
            ]}}
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    });
    assert_eq!(
        row("apps", "Deployment", &d, T0 + 2 * 86_400 + 3 * 3600),
        [
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("2d3h"),
            json!("app,sidecar"),
            json!("nginx:1.27,envoy"),
            json!("app=web")
        ]
    );
    // Fresh deployment: no status yet, replicas defaulted.
    let d = json!({"metadata": {"name": "x"}, "spec": {}});
    let r = row("apps", "Deployment", &d, T0);
    assert_eq!(r[1], "0/1");
    assert_eq!(r[2], 0);
    assert_eq!(r[7], "");
}

#[test]
fn replica_set_daemon_set_stateful_set() {
    let rs = json!({
        "metadata": {"name": "web-abc"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "abc"}}},
        "status": {"replicas": 2, "readyReplicas": 1}
    });
    let r = row("apps", "ReplicaSet", &rs, T0);
    assert_eq!(&r[1..4], &[json!(2), json!(2), json!(1)]);
    assert_eq!(r[7], "app=web,pod-template-hash=abc");

    let ds = json!({
        "metadata": {"name": "svclb"},
        "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
        "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                   "updatedNumberScheduled": 3, "numberAvailable": 2}
    });
    assert_eq!(
        names("apps", "DaemonSet"),
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE",
            "CONTAINERS*",
            "IMAGES*",
            "SELECTOR*"
        ]
    );
    let r = row("apps", "DaemonSet", &ds, T0);
    assert_eq!(
        &r[1..7],
        &[
            json!(3),
            json!(3),
            json!(2),
            json!(3),
            json!(2),
            json!("kubernetes.io/os=linux")
        ]
    );
    assert_eq!(r[10], "<none>");

    let sts = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
    assert_eq!(row("apps", "StatefulSet", &sts, T0)[1], "3/3");
}

#[test]
fn jobs_and_cron_jobs() {
    let job = json!({
        "metadata": {"name": "pi", "creationTimestamp": ts(0)},
        "spec": {"completions": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}},
        "status": {"succeeded": 1, "startTime": ts(0), "completionTime": ts(75),
                   "conditions": [{"type": "Complete", "status": "True"}]}
    });
    let r = row("batch", "Job", &job, T0 + 600);
    assert_eq!(
        &r[1..5],
        &[json!("Complete"), json!("1/1"), json!("75s"), json!("10m")]
    );
    assert_eq!(r[7], "batch.kubernetes.io/controller-uid=u1");

    let running = json!({"metadata": {"name": "j"}, "spec": {"parallelism": 3},
                         "status": {"startTime": ts(0), "active": 3}});
    let r = row("batch", "Job", &running, T0 + 30);
    assert_eq!(
        &r[1..4],
        &[json!("Running"), json!("0/1 of 3"), json!("30s")]
    );
    let suspended = json!({"metadata": {"name": "j"}, "spec": {"completions": 2},
        "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
    let r = row("batch", "Job", &suspended, T0);
    assert_eq!(&r[1..4], &[json!("Suspended"), json!("0/2"), json!("")]);
    let failed = json!({"metadata": {"name": "j"},
        "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
    assert_eq!(row("batch", "Job", &failed, T0)[1], "Failed");

    assert_eq!(
        names("batch", "CronJob"),
        [
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE",
            "CONTAINERS*",
            "IMAGES*",
            "SELECTOR*"
        ]
    );
    let cj = json!({
        "metadata": {"name": "nightly", "creationTimestamp": ts(0)},
        "spec": {"schedule": "0 3 * * *", "suspend": false, "jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "busybox"}]}}}}},
        "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": ts(3600)}
    });
    let r = row("batch", "CronJob", &cj, T0 + 7200);
    assert_eq!(
        r,
        [
            json!("nightly"),
            json!("0 3 * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("60m"),
            json!("120m"),
            json!("c"),
            json!("busybox"),
            json!("<none>")
        ]
    );
}

#[test]
fn service_ports_and_ips() {
    assert_eq!(
        names("", "Service"),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR*"
        ]
    );
    let svc = json!({
        "metadata": {"name": "kubernetes", "creationTimestamp": ts(0)},
        "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.1", "clusterIPs": ["10.43.0.1"],
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
    });
    assert_eq!(
        row("", "Service", &svc, T0 + 10),
        [
            json!("kubernetes"),
            json!("ClusterIP"),
            json!("10.43.0.1"),
            json!("<none>"),
            json!("443/TCP"),
            json!("10s"),
            json!("<none>")
        ]
    );
    let np = json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "clusterIPs": ["10.43.5.5"], "selector": {"app": "web"},
                 "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                           {"port": 53, "nodePort": 30053, "protocol": "UDP"}]}
    });
    let r = row("", "Service", &np, T0);
    assert_eq!(r[4], "80:30080/TCP,53:30053/UDP");
    assert_eq!(r[6], "app=web");

    let mut lb = json!({
        "metadata": {"name": "traefik"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.43.9.9", "ports": [{"port": 80, "nodePort": 31000}]}
    });
    assert_eq!(row("", "Service", &lb, T0)[3], "<pending>");
    assert_eq!(row("", "Service", &lb, T0)[4], "80:31000/TCP");
    lb["status"] =
        json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.3"}, {"ip": "192.168.1.2"}]}});
    assert_eq!(row("", "Service", &lb, T0)[3], "192.168.1.2,192.168.1.3");
    lb["spec"]["externalIPs"] = json!(["1.2.3.4"]);
    assert_eq!(
        row("", "Service", &lb, T0)[3],
        "192.168.1.2,192.168.1.3,1.2.3.4"
    );

    let headless =
        json!({"metadata": {"name": "h"}, "spec": {"type": "ClusterIP", "clusterIP": "None"}});
    let r = row("", "Service", &headless, T0);
    assert_eq!(&r[2..5], &[json!("None"), json!("<none>"), json!("<none>")]);
    let ext = json!({"metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "example.com"}});
    assert_eq!(row("", "Service", &ext, T0)[3], "example.com");
}

#[test]
fn endpoints_list() {
    let ep = json!({
        "metadata": {"name": "web"},
        "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}],
            "ports": [{"port": 80}, {"port": 443}]
        }]
    });
    assert_eq!(
        row("", "Endpoints", &ep, T0)[1],
        "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 3 more..."
    );
    let empty = json!({"metadata": {"name": "web"}});
    assert_eq!(row("", "Endpoints", &empty, T0)[1], "<none>");
}

#[test]
fn node_status_and_roles() {
    assert_eq!(
        names("", "Node"),
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP*",
            "EXTERNAL-IP*",
            "OS-IMAGE*",
            "KERNEL-VERSION*",
            "CONTAINER-RUNTIME*"
        ]
    );
    let node = json!({
        "metadata": {"name": "server", "creationTimestamp": ts(0), "labels": {
            "node-role.kubernetes.io/control-plane": "true",
            "node-role.kubernetes.io/master": "true",
            "kubernetes.io/hostname": "server"
        }},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "server"}],
            "nodeInfo": {"kubeletVersion": "v1.33.1+k3rs", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://2.0.5"}
        }
    });
    assert_eq!(
        row("", "Node", &node, T0 + 3 * 86_400),
        [
            json!("server"),
            json!("Ready"),
            json!("control-plane,master"),
            json!("3d"),
            json!("v1.33.1+k3rs"),
            json!("192.168.1.10"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.1.0"),
            json!("containerd://2.0.5")
        ]
    );
    let cordoned = json!({
        "metadata": {"name": "agent", "labels": {"kubernetes.io/role": "worker", "node-role.kubernetes.io/": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}
    });
    let r = row("", "Node", &cordoned, T0);
    assert_eq!(
        &r[1..3],
        &[json!("NotReady,SchedulingDisabled"), json!("worker")]
    );
    assert_eq!(r[7], "<unknown>");
    let bare = json!({"metadata": {"name": "new"}});
    let r = row("", "Node", &bare, T0);
    assert_eq!(&r[1..3], &[json!("Unknown"), json!("<none>")]);
}

#[test]
fn events_core_and_v1() {
    assert_eq!(
        names("", "Event"),
        [
            "LAST SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "SUBOBJECT*",
            "SOURCE*",
            "MESSAGE",
            "FIRST SEEN*",
            "COUNT*",
            "NAME*"
        ]
    );
    let ev = json!({
        "metadata": {"name": "web-1.17a"},
        "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
        "type": "Normal", "reason": "Pulled", "message": "  Container image pulled \n",
        "source": {"component": "kubelet", "host": "node1"},
        "firstTimestamp": ts(0), "lastTimestamp": ts(100), "count": 4
    });
    assert_eq!(
        row("", "Event", &ev, T0 + 160),
        [
            json!("60s"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web-1"),
            json!("spec.containers{app}"),
            json!("kubelet, node1"),
            json!("Container image pulled"),
            json!("2m40s"),
            json!(4),
            json!("web-1.17a")
        ]
    );
    let v1 = json!({
        "metadata": {"name": "e"},
        "regarding": {"kind": "Node", "name": "n1"},
        "type": "Warning", "reason": "Rebooted", "note": "rebooted",
        "eventTime": ts(0), "reportingController": "k3rs-node-agent", "reportingInstance": "n1"
    });
    let r = row("events.k8s.io", "Event", &v1, T0 + 5);
    assert_eq!(
        r,
        [
            json!("5s"),
            json!("Warning"),
            json!("Rebooted"),
            json!("node/n1"),
            json!(""),
            json!("k3rs-node-agent, n1"),
            json!("rebooted"),
            json!("5s"),
            json!(1),
            json!("e")
        ]
    );
    let series = json!({"metadata": {"name": "s"}, "involvedObject": {"kind": "Node"},
        "eventTime": ts(0), "series": {"count": 9, "lastObservedTime": ts(50)}});
    let r = row("", "Event", &series, T0 + 60);
    assert_eq!(
        (&r[0], &r[3], &r[8]),
        (&json!("10s"), &json!("node"), &json!(9))
    );
}

#[test]
fn small_core_kinds() {
    let ns = json!({"metadata": {"name": "kube-system", "creationTimestamp": ts(0)}, "status": {"phase": "Active"}});
    assert_eq!(
        row("", "Namespace", &ns, T0 + 60),
        [json!("kube-system"), json!("Active"), json!("60s")]
    );
    let cm =
        json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}});
    assert_eq!(row("", "ConfigMap", &cm, T0)[1], 3);
    let s = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
    assert_eq!(
        &row("", "Secret", &s, T0)[1..3],
        &[json!("Opaque"), json!(1)]
    );
    let sa = json!({"metadata": {"name": "default"}});
    assert_eq!(row("", "ServiceAccount", &sa, T0)[1], 0);

    let pv = json!({
        "metadata": {"name": "pv1"},
        "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                 "claimRef": {"namespace": "default", "name": "data"}},
        "status": {"phase": "Bound"}
    });
    assert_eq!(
        row("", "PersistentVolume", &pv, T0),
        [
            json!("pv1"),
            json!("10Gi"),
            json!("RWO,RWX"),
            json!("Delete"),
            json!("Bound"),
            json!("default/data"),
            json!("local-path"),
            json!("<unset>"),
            json!(""),
            json!("<unknown>"),
            json!("<unset>")
        ]
    );
    let pvc = json!({
        "metadata": {"name": "data"},
        "spec": {"storageClassName": "local-path", "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Pending"}
    });
    assert_eq!(
        &row("", "PersistentVolumeClaim", &pvc, T0)[1..7],
        &[
            json!("Pending"),
            json!(""),
            json!(""),
            json!(""),
            json!("local-path"),
            json!("<unset>")
        ]
    );

    assert_eq!(
        names("", "ResourceQuota"),
        ["NAME", "REQUEST", "LIMIT", "AGE"]
    );
    let rq = json!({"metadata": {"name": "q"}, "status": {
        "hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"},
        "used": {"pods": "3", "requests.cpu": "500m"}}});
    let r = row("", "ResourceQuota", &rq, T0);
    assert_eq!(
        &r[1..3],
        &[
            json!("pods: 3/10, requests.cpu: 500m/1"),
            json!("limits.cpu: 0/2")
        ]
    );
}

#[test]
fn other_groups() {
    let sc = json!({"metadata": {"name": "local-path", "annotations": {
        "storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
    assert_eq!(
        row("storage.k8s.io", "StorageClass", &sc, T0),
        [
            json!("local-path (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("WaitForFirstConsumer"),
            json!(false),
            json!("<unknown>")
        ]
    );
    let pc = json!({"metadata": {"name": "system-node-critical"}, "value": 2000001000,
                    "preemptionPolicy": "PreemptLowerPriority"});
    assert_eq!(
        names("scheduling.k8s.io", "PriorityClass"),
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    );
    assert_eq!(
        &row("scheduling.k8s.io", "PriorityClass", &pc, T0)[1..3],
        &[json!(2000001000), json!(false)]
    );
    let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
    assert_eq!(
        &row("policy", "PodDisruptionBudget", &pdb, T0)[1..4],
        &[json!("50%"), json!("N/A"), json!(1)]
    );
    let rb = json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                     {"kind": "ServiceAccount", "namespace": "ci", "name": "bot"}, {"kind": "User", "name": "bob"}]});
    assert_eq!(
        row("rbac.authorization.k8s.io", "RoleBinding", &rb, T0),
        [
            json!("rb"),
            json!("ClusterRole/view"),
            json!("<unknown>"),
            json!("alice, bob"),
            json!("devs"),
            json!("ci/bot")
        ]
    );
    let role = json!({"metadata": {"name": "r", "creationTimestamp": "2024-01-01T01:00:00+01:00"}});
    assert_eq!(
        names("rbac.authorization.k8s.io", "Role"),
        ["NAME", "CREATED AT"]
    );
    assert_eq!(
        row("rbac.authorization.k8s.io", "Role", &role, T0)[1],
        "2024-01-01T00:00:00Z"
    );
    assert_eq!(
        column_definitions("apiextensions.k8s.io", "CustomResourceDefinition")[1]["type"],
        "date"
    );

    let ing = json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": "traefik",
        "rules": [{"host": "a.example"}, {}, {"host": "b.example"}, {"host": "c.example"}, {"host": "d.example"}],
        "tls": [{}]}, "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}});
    assert_eq!(
        row("networking.k8s.io", "Ingress", &ing, T0)[1..5],
        [
            json!("traefik"),
            json!("a.example,b.example,c.example + 2 more..."),
            json!("lb.example"),
            json!("80, 443")
        ]
    );
    let np = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
    assert_eq!(
        row("networking.k8s.io", "NetworkPolicy", &np, T0)[1],
        "<none>"
    );

    let es = json!({"metadata": {"name": "web-x"}, "addressType": "IPv4",
        "ports": [{"port": 80}, {"name": "metrics"}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3", "10.0.0.4"]}]});
    assert_eq!(
        row("discovery.k8s.io", "EndpointSlice", &es, T0)[1..4],
        [
            json!("IPv4"),
            json!("80,metrics"),
            json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...")
        ]
    );
    let empty_es = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
    assert_eq!(
        row("discovery.k8s.io", "EndpointSlice", &empty_es, T0)[2],
        "<unset>"
    );

    let lease = json!({"metadata": {"name": "node1"}, "spec": {"holderIdentity": "node1"}});
    assert_eq!(row("coordination.k8s.io", "Lease", &lease, T0)[1], "node1");

    let csr = json!({"metadata": {"name": "csr-1"}, "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
        "username": "system:node:n1", "expirationSeconds": 86400},
        "status": {"conditions": [{"type": "Approved"}], "certificate": "LS0t"}});
    assert_eq!(
        row("certificates.k8s.io", "CertificateSigningRequest", &csr, T0)[2..6],
        [
            json!("kubernetes.io/kube-apiserver-client-kubelet"),
            json!("system:node:n1"),
            json!("24h"),
            json!("Approved,Issued")
        ]
    );

    let cr = json!({"metadata": {"name": "web-7d9", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}, "revision": 2});
    assert_eq!(
        row("apps", "ControllerRevision", &cr, T0)[1..3],
        [json!("statefulset.apps/web"), json!(2)]
    );

    let hpa = json!({"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
        "maxReplicas": 5, "metrics": [{"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 80}}}]},
        "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
        "current": {"averageUtilization": 12}}}]}});
    assert_eq!(
        row("autoscaling", "HorizontalPodAutoscaler", &hpa, T0)[1..6],
        [
            json!("Deployment/web"),
            json!("cpu: 12%/80%"),
            json!("<unset>"),
            json!(5),
            json!(2)
        ]
    );
}

#[test]
fn unknown_kinds_get_name_and_age() {
    assert_eq!(names("example.com", "Widget"), ["NAME", "AGE"]);
    let w = json!({"metadata": {"name": "w", "creationTimestamp": ts(0)}});
    assert_eq!(
        row("example.com", "Widget", &w, T0 + 42),
        [json!("w"), json!("42s")]
    );
}

#[test]
fn first_column_is_name_and_nothing_panics_on_garbage() {
    let garbage = [
        json!(null),
        json!(42),
        json!("pod"),
        json!([]),
        json!({"metadata": 5, "spec": [], "status": "x"}),
        json!({"metadata": {"name": 1, "creationTimestamp": "not a time", "labels": []},
               "spec": {"containers": "x", "ports": [1, null, {"port": "80"}], "replicas": "3",
                        "selector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}},
               "status": {"conditions": [null, 1, {"type": 3}], "containerStatuses": [null, {"state": 1}],
                          "initContainerStatuses": [{"state": {"terminated": null}}],
                          "hard": {"pods": {}}, "loadBalancer": {"ingress": "x"}},
               "subsets": [{"addresses": [1], "ports": [{}]}], "series": {},
               "endpoints": [{"addresses": [1, 2, 3, 4, 5]}]}),
    ];
    for (group, kind, cols) in PRINTERS {
        let defs = column_definitions(group, kind);
        let first = &defs[0];
        if *kind != "Event" {
            assert_eq!(first["name"], "Name", "{group}/{kind}");
            assert_eq!(first["format"], "name", "{group}/{kind}");
        }
        for g in &garbage {
            for now in [0, T0, i64::MIN, i64::MAX] {
                let cells = row_cells(group, kind, g, now);
                assert_eq!(
                    cells.as_array().map(Vec::len),
                    Some(cols.len()),
                    "{group}/{kind}"
                );
            }
        }
    }
}

#[test]
fn huge_counts_do_not_overflow() {
    let p = json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{}, {}]},
        "status": {"containerStatuses": [
            {"restartCount": i64::MAX, "lastState": {"terminated": {"finishedAt": "9999-12-31T23:59:59Z"}}},
            {"restartCount": i64::MAX}
        ]}
    });
    let r = row("", "Pod", &p, 0);
    assert_eq!(r[3], format!("{} (<invalid> ago)", i64::MAX));
}
