//! k3rs-scheduler against a real k3rs-apiserver on the SQLite shim: pods are
//! created with kubectl against Node objects the test registers, and land where
//! kube-scheduler would put them; failures show upstream's message in
//! `kubectl describe`; leader election lets only one scheduler act.

use std::time::{Duration, Instant};

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::{Backend, TestStore};
use k3rs_scheduler::{Config, LeaderElectionConfig};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const KUBECTL: &str = "1.33";

async fn client(cp: &ControlPlane) -> kube::Client {
    k3rs_scheduler::client_from_kubeconfig(&cp.kubeconfig)
        .await
        .expect("client")
}

struct NodeSpec<'a> {
    name: &'a str,
    cpu: &'a str,
    memory: &'a str,
    labels: serde_json::Value,
    taints: serde_json::Value,
}

/// Registers a Node object and gives it a Ready status with allocatable resources,
/// the way a kubelet would.
async fn add_node(client: &kube::Client, n: NodeSpec<'_>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels = n.labels.clone();
    labels["kubernetes.io/hostname"] = json!(n.name);
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": n.name, "labels": labels},
        "spec": {"taints": n.taints},
    }))
    .unwrap();
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let res = json!({"cpu": n.cpu, "memory": n.memory, "pods": "110"});
    let status = json!({"status": {
        "capacity": res, "allocatable": res,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "test node", "lastHeartbeatTime": "2025-01-01T00:00:00Z",
                        "lastTransitionTime": "2025-01-01T00:00:00Z"}],
    }});
    nodes
        .patch_status(n.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch node status");
}

fn pod_yaml(name: &str, spec: serde_json::Value, labels: serde_json::Value) -> String {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
    }
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": spec,
    });
    serde_json::to_string(&pod).unwrap()
}

fn cpu(c: &str) -> serde_json::Value {
    json!([{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": c, "memory": "10Mi"}}}])
}

async fn create_pod(
    cp: &ControlPlane,
    name: &str,
    spec: serde_json::Value,
    labels: serde_json::Value,
) {
    cp.kubectl_in(
        KUBECTL,
        &["apply", "-f", "-"],
        Some(&pod_yaml(name, spec, labels)),
    )
    .await;
}

async fn wait_bound(pods: &Api<Pod>, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(p) = pods.get(name).await
            && let Some(n) = p.spec.and_then(|s| s.node_name)
        {
            return n;
        }
        assert!(Instant::now() < deadline, "pod {name} was never bound");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_condition_message(pods: &Api<Pod>, name: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        if let Ok(p) = pods.get(name).await {
            let cond = p
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "PodScheduled");
            if let Some(c) = cond {
                last = format!("{} {:?} {:?}", c.status, c.reason, c.message);
                if c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.message.as_deref() == Some(want)
                {
                    return last;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} never got condition {want:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn node_of(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get(name)
        .await
        .ok()
        .and_then(|p| p.spec.and_then(|s| s.node_name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_land_where_upstream_would_put_them() {
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let client = client(&cp).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    add_node(
        &client,
        NodeSpec {
            name: "n-small",
            cpu: "1",
            memory: "2Gi",
            labels: json!({"zone": "a", "disk": "hdd"}),
            taints: json!([]),
        },
    )
    .await;
    add_node(
        &client,
        NodeSpec {
            name: "n-big",
            cpu: "4",
            memory: "8Gi",
            labels: json!({"zone": "b", "disk": "ssd"}),
            taints: json!([]),
        },
    )
    .await;
    add_node(
        &client,
        NodeSpec {
            name: "n-tainted",
            cpu: "8",
            memory: "16Gi",
            labels: json!({"zone": "c"}),
            taints: json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        },
    )
    .await;

    let mut config = Config::new(cp.kubeconfig.clone());
    config.health_addr = Some("127.0.0.1:0".parse().unwrap());
    config.leader_election = None;
    let sched = k3rs_scheduler::start(config)
        .await
        .expect("start scheduler");
    let health = sched.health_addr.expect("health endpoint");

    // Resources: only n-big has 2 free CPUs (n-tainted is tainted).
    create_pod(
        &cp,
        "needs-2cpu",
        json!({"containers": cpu("2")}),
        json!({}),
    )
    .await;
    assert_eq!(wait_bound(&pods, "needs-2cpu").await, "n-big");
    // The Scheduled event is what `kubectl describe` shows.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = cp
            .kubectl(KUBECTL, &["describe", "pod", "needs-2cpu"])
            .await;
        if d.contains("Successfully assigned default/needs-2cpu to n-big") {
            assert!(
                d.contains("Scheduled") && d.contains("default-scheduler"),
                "{d}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no Scheduled event: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // nodeSelector.
    create_pod(
        &cp,
        "wants-hdd",
        json!({"nodeSelector": {"disk": "hdd"}}),
        json!({}),
    )
    .await;
    assert_eq!(wait_bound(&pods, "wants-hdd").await, "n-small");

    // Required node affinity (NotIn + matchFields) leaves only n-big.
    create_pod(&cp, "affinity", json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}],
         "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n-big", "n-tainted"]}]}
    ]}}}}), json!({})).await;
    assert_eq!(wait_bound(&pods, "affinity").await, "n-big");

    // Tolerations open the tainted node.
    create_pod(&cp, "tolerates", json!({
        "nodeSelector": {"zone": "c"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
    }), json!({})).await;
    assert_eq!(wait_bound(&pods, "tolerates").await, "n-tainted");

    // Host ports: two pods wanting host port 8080 among zones a and b split up.
    let ports = |_: ()| {
        json!({
            "containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80, "hostPort": 8080}]}],
            "nodeSelector": {},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}},
        })
    };
    create_pod(&cp, "port-1", ports(()), json!({})).await;
    let first = wait_bound(&pods, "port-1").await;
    create_pod(&cp, "port-2", ports(()), json!({})).await;
    let second = wait_bound(&pods, "port-2").await;
    assert_ne!(first, second, "host port 8080 given twice on {first}");
    // A third has nowhere to go.
    create_pod(&cp, "port-3", ports(()), json!({})).await;
    wait_condition_message(&pods, "port-3",
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't have free ports for the requested pod ports. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.").await;

    // Required anti-affinity on the hostname: replicas never share a node.
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "anti"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    create_pod(&cp, "anti-1", anti.clone(), json!({"app": "anti"})).await;
    create_pod(&cp, "anti-2", anti.clone(), json!({"app": "anti"})).await;
    let a1 = wait_bound(&pods, "anti-1").await;
    let a2 = wait_bound(&pods, "anti-2").await;
    assert_ne!(a1, a2);
    create_pod(&cp, "anti-3", anti.clone(), json!({"app": "anti"})).await;
    wait_condition_message(&pods, "anti-3",
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.").await;

    // Topology spread over zones (DoNotSchedule, maxSkew 1): 6 pods, 2 per zone.
    let spread = json!({
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                                       "labelSelector": {"matchLabels": {"app": "spread"}}}],
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
    });
    let mut per_zone = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..6 {
        let name = format!("spread-{i}");
        create_pod(&cp, &name, spread.clone(), json!({"app": "spread"})).await;
        let node = wait_bound(&pods, &name).await;
        *per_zone.entry(node).or_default() += 1;
    }
    assert_eq!(
        per_zone.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{per_zone:?}"
    );

    // Too big for every node: upstream's message in the condition and in describe.
    create_pod(&cp, "too-big", json!({"containers": cpu("100")}), json!({})).await;
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.";
    wait_condition_message(&pods, "too-big", want).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = cp.kubectl(KUBECTL, &["describe", "pod", "too-big"]).await;
        if d.contains("FailedScheduling") && d.contains(want) {
            assert!(d.contains("PodScheduled") && d.contains("False"), "{d}");
            break;
        }
        assert!(Instant::now() < deadline, "no FailedScheduling event: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A node that fits arrives later: the parked pod is scheduled without a restart.
    add_node(
        &client,
        NodeSpec {
            name: "n-huge",
            cpu: "128",
            memory: "64Gi",
            labels: json!({"zone": "d"}),
            taints: json!([]),
        },
    )
    .await;
    assert_eq!(wait_bound(&pods, "too-big").await, "n-huge");

    // Preemption: a high-priority pod evicts a low-priority one from a full node.
    add_node(
        &client,
        NodeSpec {
            name: "n-prio",
            cpu: "1",
            memory: "1Gi",
            labels: json!({"role": "prio"}),
            taints: json!([]),
        },
    )
    .await;
    create_pod(&cp, "low", json!({"containers": cpu("800m"), "nodeSelector": {"role": "prio"}, "priority": 0, "terminationGracePeriodSeconds": 0}), json!({})).await;
    assert_eq!(wait_bound(&pods, "low").await, "n-prio");
    create_pod(&cp, "never", json!({"containers": cpu("800m"), "nodeSelector": {"role": "prio"}, "priority": 500, "preemptionPolicy": "Never"}), json!({})).await;
    wait_condition_message(&pods, "never",
        "0/5 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}, 3 node(s) didn't match Pod's node affinity/selector. preemption: not eligible due to preemptionPolicy=Never.").await;
    create_pod(
        &cp,
        "high",
        json!({"containers": cpu("800m"), "nodeSelector": {"role": "prio"}, "priority": 1000}),
        json!({}),
    )
    .await;
    assert_eq!(wait_bound(&pods, "high").await, "n-prio");
    assert!(
        pods.get_opt("low").await.unwrap().is_none(),
        "the victim was deleted"
    );
    assert_eq!(
        node_of(&pods, "never").await,
        None,
        "preemptionPolicy Never does not evict"
    );

    // A PodDisruptionBudget steers preemption: of two otherwise equal
    // victims, the one whose budget has no disruptions left is spared.
    for n in ["n-pdb1", "n-pdb2"] {
        add_node(
            &client,
            NodeSpec {
                name: n,
                cpu: "1",
                memory: "1Gi",
                labels: json!({"role": "pdb"}),
                taints: json!([]),
            },
        )
        .await;
    }
    create_pod(&cp, "guarded", json!({"containers": cpu("800m"), "nodeName": "n-pdb1", "priority": 0, "terminationGracePeriodSeconds": 0}), json!({"app": "db"})).await;
    create_pod(&cp, "spare", json!({"containers": cpu("800m"), "nodeName": "n-pdb2", "priority": 0, "terminationGracePeriodSeconds": 0}), json!({"app": "web"})).await;
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(client.clone(), "default");
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "db"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}},
        }))
        .unwrap(),
    )
    .await
    .expect("create pdb");
    // The disruption controller's part, played here: no disruptions allowed.
    pdbs.patch_status(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1, "observedGeneration": 1}})),
    )
    .await
    .expect("pdb status");
    // Let the scheduler's budget cache see it before the preemptor arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    create_pod(
        &cp,
        "urgent",
        json!({"containers": cpu("800m"), "nodeSelector": {"role": "pdb"}, "priority": 1000}),
        json!({}),
    )
    .await;
    assert_eq!(wait_bound(&pods, "urgent").await, "n-pdb2");
    assert!(
        pods.get_opt("spare").await.unwrap().is_none(),
        "spare was the victim"
    );
    assert!(
        pods.get_opt("guarded").await.unwrap().is_some(),
        "the budget held"
    );

    // Health and metrics.
    let body = http_get(health, "/healthz").await;
    assert!(body.ends_with("ok"), "{body}");
    let metrics = http_get(health, "/metrics").await;
    assert!(metrics.contains("scheduler_pods_scheduled"), "{metrics}");

    sched.stop().await.expect("stop");
    cp.shutdown();
    store.stop().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect health");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn short_lease(name: &str) -> LeaderElectionConfig {
    let mut le = LeaderElectionConfig::new(name);
    le.lease_duration = Duration::from_secs(3);
    le.renew_deadline = Duration::from_secs(2);
    le.retry_period = Duration::from_millis(300);
    le
}

async fn holder(leases: &Api<Lease>, name: &str) -> (Option<String>, i32) {
    let l = leases.get(name).await.expect("lease");
    let spec = l.spec.unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_takes_over_after_the_leader_stops_renewing() {
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let client = client(&cp).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");

    let a = short_lease("e2e-election");
    let b = short_lease("e2e-election");
    let (a_id, b_id) = (a.identity.clone(), b.identity.clone());
    let (a_leads_tx, mut a_leads) = tokio::sync::mpsc::unbounded_channel();
    let task_a = tokio::spawn(k3rs_scheduler::run_while_leader(
        client.clone(),
        a,
        move || async move {
            let _ = a_leads_tx.send(());
            std::future::pending::<()>().await
        },
    ));
    tokio::time::timeout(Duration::from_secs(10), a_leads.recv())
        .await
        .expect("a leads");
    assert_eq!(
        holder(&leases, "e2e-election").await.0.as_deref(),
        Some(a_id.as_str())
    );

    let (b_leads_tx, mut b_leads) = tokio::sync::mpsc::unbounded_channel();
    let (b_done_tx, b_done) = tokio::sync::oneshot::channel::<()>();
    let task_b = tokio::spawn(k3rs_scheduler::run_while_leader(
        client.clone(),
        b,
        move || async move {
            let _ = b_leads_tx.send(());
            let _ = b_done.await;
        },
    ));
    // While a keeps renewing, b waits (well past one lease duration).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        b_leads.try_recv().is_err(),
        "b must not lead while a renews"
    );
    assert_eq!(
        holder(&leases, "e2e-election").await.0.as_deref(),
        Some(a_id.as_str())
    );

    // a stops renewing (crash: no release); b takes over after the lease expires.
    task_a.abort();
    let stopped = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), b_leads.recv())
        .await
        .expect("b takes over");
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "took over before the lease expired"
    );
    let (h, transitions) = holder(&leases, "e2e-election").await;
    assert_eq!(h.as_deref(), Some(b_id.as_str()));
    assert_eq!(transitions, 1);

    // b's work ends: the lease is released for the next candidate.
    b_done_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task_b)
        .await
        .expect("b returns")
        .unwrap()
        .expect("no error");
    assert_eq!(holder(&leases, "e2e-election").await.0, None);
    cp.shutdown();
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leading_scheduler_binds() {
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let client = client(&cp).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    add_node(
        &client,
        NodeSpec {
            name: "n1",
            cpu: "4",
            memory: "8Gi",
            labels: json!({}),
            taints: json!([]),
        },
    )
    .await;

    let start = |le: LeaderElectionConfig| {
        let mut c = Config::new(cp.kubeconfig.clone());
        c.health_addr = None;
        c.leader_election = Some(le);
        k3rs_scheduler::start(c)
    };
    let first = short_lease("kube-scheduler");
    let first_id = first.identity.clone();
    let s1 = start(first).await.expect("start first");
    let deadline = Instant::now() + Duration::from_secs(10);
    while holder_opt(&leases).await.as_deref() != Some(first_id.as_str()) {
        assert!(Instant::now() < deadline, "first scheduler never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = short_lease("kube-scheduler");
    let second_id = second.identity.clone();
    let s2 = start(second).await.expect("start second");

    create_pod(&cp, "p1", json!({}), json!({})).await;
    wait_bound(&pods, "p1").await;
    assert_eq!(scheduled_by(&client, "p1").await, vec![first_id.clone()]);

    // The leader goes away without releasing; the standby takes over and binds.
    s1.kill();
    create_pod(&cp, "p2", json!({}), json!({})).await;
    wait_bound(&pods, "p2").await;
    assert_eq!(scheduled_by(&client, "p2").await, vec![second_id.clone()]);
    assert_eq!(
        holder_opt(&leases).await.as_deref(),
        Some(second_id.as_str())
    );

    s2.stop().await.expect("stop");
    // A clean stop hands the lease back.
    assert_eq!(holder_opt(&leases).await, None);
    cp.shutdown();
    store.stop().await;
}

async fn holder_opt(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("kube-scheduler")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// The reportingInstance of every Scheduled event about `pod` (waits for one).
async fn scheduled_by(client: &kube::Client, pod: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = events.list(&ListParams::default()).await.expect("events");
        let mut by: Vec<String> = list
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("Scheduled")
                    && e.involved_object.name.as_deref() == Some(pod)
            })
            .filter_map(|e| e.reporting_instance)
            .collect();
        if !by.is_empty() {
            by.sort();
            return by;
        }
        assert!(Instant::now() < deadline, "no Scheduled event for {pod}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
