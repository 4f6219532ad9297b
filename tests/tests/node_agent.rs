//! k3rs-node-agent end to end: a real apiserver + datastore, a private
//! containerd with runc and CNI, the agent in-process, and kubectl as the
//! user. Needs root and the packages scripts/setup.sh installs.
//!
//! One test drives every scenario in sequence: they share one containerd and
//! one pod bridge. (Other test files use bridges of their own: the bridge
//! plugin refuses a second pod subnet on one bridge.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, Containerd};
use k3rs_e2e::{Backend, TestStore};
use k3rs_node_agent::cri::{CriClient, LABEL_POD_UID, PodSandboxFilter, Runtime};

const NODE: &str = "k3rs-na-e2e";
const POD_CIDR: &str = "10.244.77.0/24";
const BRIDGE: &str = "k3rsna0";
const V: &str = "1.33";

fn agent_config(cp: &ControlPlane, ctd: &Containerd, dir: &Path) -> k3rs_node_agent::Config {
    ctd.agent_config(&cp.kubeconfig, NODE, POD_CIDR, BRIDGE, dir)
}

async fn jsonpath(cp: &ControlPlane, what: &[&str], path: &str) -> String {
    cp.jsonpath(V, what, path).await
}

/// Polls `f` until it returns Some; on timeout prints the pods, events and
/// containerd's log, then fails with `what`.
async fn wait_for<T, F, Fut>(
    cp: &ControlPlane,
    ctd: &Containerd,
    what: &str,
    timeout: Duration,
    mut f: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            let pods = cp
                .kubectl_raw(V, &["get", "pods", "-o", "yaml"])
                .await
                .unwrap();
            let events = cp.kubectl_raw(V, &["get", "events", "-A"]).await.unwrap();
            let log = ctd.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            panic!(
                "timed out waiting for {what}\npods:\n{}\nevents:\n{}{}\ncontainerd log (newest first):\n{}",
                String::from_utf8_lossy(&pods.stdout),
                String::from_utf8_lossy(&events.stdout),
                String::from_utf8_lossy(&events.stderr),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn in_pod_cidr(ip: &str) -> bool {
    ip.starts_with("10.244.77.") && ip != "10.244.77.0" && ip != "10.244.77.255"
}

fn log_file(logs: &Path, name: &str, uid: &str, container: &str, attempt: u32) -> PathBuf {
    logs.join(format!("default_{name}_{uid}"))
        .join(container)
        .join(format!("{attempt}.log"))
}

async fn sandboxes_of(rt: &CriClient, uid: &str) -> usize {
    rt.list_pod_sandboxes(Some(PodSandboxFilter {
        label_selector: [(LABEL_POD_UID.to_string(), uid.to_string())].into(),
        ..Default::default()
    }))
    .await
    .expect("list sandboxes")
    .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_agent_runs_pods_on_containerd() {
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let ctd = Containerd::start().await.expect("containerd");
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("pods-logs");
    let agent = k3rs_node_agent::start(agent_config(&cp, &ctd, dir.path()))
        .await
        .expect("start agent");

    // The node registers, turns Ready and keeps a lease.
    wait_for(&cp, &ctd, "node Ready", Duration::from_secs(60), || async {
        let s = jsonpath(
            &cp,
            &["node", NODE],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        )
        .await;
        (s == "True").then_some(())
    })
    .await;
    let nodes = cp.kubectl(V, &["get", "nodes", "-o", "wide"]).await;
    assert!(nodes.contains(NODE) && nodes.contains("Ready"), "{nodes}");
    assert!(
        nodes.contains("containerd://"),
        "runtime version shown: {nodes}"
    );
    let labels = cp.kubectl(V, &["get", "node", NODE, "--show-labels"]).await;
    assert!(
        labels.contains(&format!("kubernetes.io/hostname={NODE}")),
        "{labels}"
    );
    assert!(labels.contains("kubernetes.io/os=linux"), "{labels}");
    let cap = jsonpath(&cp, &["node", NODE], "{.status.capacity.pods}").await;
    assert_eq!(cap, "110");
    let holder = jsonpath(
        &cp,
        &["lease", "-n", "kube-node-lease", NODE],
        "{.spec.holderIdentity}",
    )
    .await;
    assert_eq!(holder, NODE);
    let conflist = std::fs::read_to_string(ctd.cni_conf_dir.join("10-k3rs.conflist")).unwrap();
    assert!(conflist.contains(POD_CIDR), "{conflist}");

    // What the controller manager would publish; the pod's token volume
    // (added by admission) needs both.
    cp.kubectl(V, &["create", "serviceaccount", "default"])
        .await;
    let ca = format!("--from-file=ca.crt={}", cp.api.ca_file.display());
    cp.kubectl(V, &["create", "configmap", "kube-root-ca.crt", &ca])
        .await;
    // A pod with env from a ConfigMap runs and gets an address from the CNI range.
    cp.kubectl(
        V,
        &[
            "create",
            "configmap",
            "greeting",
            "--from-literal=GREETING=hello-from-cm",
            "--from-literal=extra=x",
        ],
    )
    .await;
    let hello = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  nodeName: {NODE}
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "trap 'echo got-term; exit 0' TERM; echo hello; echo \"cm=$GREETING pref=$CFG_extra pod=$POD_NAME\"; echo \"api=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT\"; sleep 3600 & wait"]
    envFrom:
    - configMapRef: {{name: greeting}}
      prefix: CFG_
    env:
    - name: GREETING
      valueFrom:
        configMapKeyRef: {{name: greeting, key: GREETING}}
    - name: POD_NAME
      valueFrom:
        fieldRef: {{fieldPath: metadata.name}}
"#
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&hello)).await;
    let ip = wait_for(
        &cp,
        &ctd,
        "hello Running",
        Duration::from_secs(90),
        || async {
            let s = jsonpath(&cp, &["pod", "hello"], "{.status.phase} {.status.podIP}").await;
            let mut it = s.split_whitespace();
            match (it.next(), it.next()) {
                (Some("Running"), Some(ip)) => Some(ip.to_string()),
                _ => None,
            }
        },
    )
    .await;
    assert!(in_pod_cidr(&ip), "pod IP {ip} from {POD_CIDR}");
    let wide = cp.kubectl(V, &["get", "pod", "hello", "-o", "wide"]).await;
    assert!(
        wide.contains(&ip) && wide.contains(NODE) && wide.contains("1/1"),
        "{wide}"
    );
    assert!(wide.contains("Running"), "{wide}");
    let conds = jsonpath(
        &cp,
        &["pod", "hello"],
        "{range .status.conditions[*]}{.type}={.status} {end}",
    )
    .await;
    for c in [
        "PodScheduled=True",
        "Initialized=True",
        "ContainersReady=True",
        "Ready=True",
        "PodReadyToStartContainers=True",
    ] {
        assert!(conds.contains(c), "{c} in {conds}");
    }
    let cid = jsonpath(
        &cp,
        &["pod", "hello"],
        "{.status.containerStatuses[0].containerID}",
    )
    .await;
    assert!(cid.starts_with("containerd://"), "{cid}");
    let qos = jsonpath(&cp, &["pod", "hello"], "{.status.qosClass}").await;
    assert_eq!(qos, "BestEffort");
    let uid = jsonpath(&cp, &["pod", "hello"], "{.metadata.uid}").await;
    let log = log_file(&logs, "hello", &uid, "app", 0);
    let text = wait_for(
        &cp,
        &ctd,
        "hello's log",
        Duration::from_secs(20),
        || async {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            t.contains("api=").then_some(t)
        },
    )
    .await;
    assert!(text.contains("stdout F hello"), "{text}");
    assert!(text.contains("cm=hello-from-cm pref=x pod=hello"), "{text}");
    // In-cluster clients find the API server through the service variables.
    let api_ip = jsonpath(&cp, &["svc", "kubernetes"], "{.spec.clusterIP}").await;
    assert!(text.contains(&format!("api={api_ip}:443")), "{text}");

    // A container that exits 1 under restartPolicy Always is restarted with
    // growing back-off and shows CrashLoopBackOff.
    let crasher = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: crasher
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "echo crashing; exit 1"]
"#
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&crasher))
        .await;
    let t0 = Instant::now();
    let mut seen_crashloop = false;
    let mut restart_at: Vec<Duration> = Vec::new();
    while restart_at.len() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(100),
            "crasher restarts: {restart_at:?}"
        );
        let out = cp
            .kubectl(V, &["get", "pod", "crasher", "--no-headers"])
            .await;
        if out.contains("CrashLoopBackOff") {
            seen_crashloop = true;
        }
        let n: usize = jsonpath(
            &cp,
            &["pod", "crasher"],
            "{.status.containerStatuses[0].restartCount}",
        )
        .await
        .parse()
        .unwrap_or(0);
        while restart_at.len() < n.min(2) {
            restart_at.push(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(seen_crashloop, "kubectl get pod showed CrashLoopBackOff");
    let first_gap = restart_at[0];
    let second_gap = restart_at[1] - restart_at[0];
    assert!(
        first_gap >= Duration::from_secs(8),
        "first back-off ~10s: {restart_at:?}"
    );
    assert!(
        second_gap >= first_gap + Duration::from_secs(5),
        "back-off grows: {restart_at:?}"
    );
    let last = jsonpath(
        &cp,
        &["pod", "crasher"],
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
    )
    .await;
    assert_eq!(last, "1");
    let phase = jsonpath(&cp, &["pod", "crasher"], "{.status.phase}").await;
    assert_eq!(phase, "Running");

    // A restarted agent adopts the running container instead of starting a
    // new one, and removes the pod that was force-deleted while it was down.
    let orphan = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: orphan
spec:
  nodeName: {NODE}
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sleep", "3600"]
"#
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&orphan)).await;
    wait_for(
        &cp,
        &ctd,
        "orphan Running",
        Duration::from_secs(60),
        || async {
            let s = jsonpath(&cp, &["pod", "orphan"], "{.status.phase}").await;
            (s == "Running").then_some(())
        },
    )
    .await;
    let orphan_uid = jsonpath(&cp, &["pod", "orphan"], "{.metadata.uid}").await;
    let rt = CriClient::new(&ctd.endpoint()).unwrap();
    agent.stop().await;
    cp.kubectl(
        V,
        &["delete", "pod", "orphan", "--grace-period=0", "--force"],
    )
    .await;
    assert_eq!(sandboxes_of(&rt, &orphan_uid).await, 1, "orphan still runs");
    let agent = k3rs_node_agent::start(agent_config(&cp, &ctd, dir.path()))
        .await
        .expect("restart agent");
    tokio::time::sleep(Duration::from_secs(6)).await;
    wait_for(
        &cp,
        &ctd,
        "orphan removed",
        Duration::from_secs(30),
        || async { (sandboxes_of(&rt, &orphan_uid).await == 0).then_some(()) },
    )
    .await;
    let after = jsonpath(&cp, &["pod", "hello"], "{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount} {.status.phase}").await;
    assert_eq!(after, format!("{cid} 0 Running"));
    assert_eq!(sandboxes_of(&rt, &uid).await, 1, "one sandbox for hello");

    // kubectl delete stops the container gracefully (SIGTERM, well within the
    // 30 s grace period) and the Pod object goes away.
    let started = Instant::now();
    cp.kubectl(
        V,
        &["delete", "pod", "hello", "--wait=true", "--timeout=60s"],
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "deleting took {took:?}");
    let gone = cp.kubectl_fails(V, &["get", "pod", "hello"], None).await;
    assert!(gone.contains("NotFound"), "{gone}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("got-term"), "SIGTERM delivered: {text}");
    assert_eq!(sandboxes_of(&rt, &uid).await, 0, "sandbox removed");
    let events = cp
        .kubectl(
            V,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=hello",
            ],
        )
        .await;
    for reason in ["Pulled", "Created", "Started", "Killing"] {
        assert!(
            events.contains(reason),
            "{reason} event for hello:\n{events}"
        );
    }
    let events = cp
        .kubectl(
            V,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=crasher",
            ],
        )
        .await;
    assert!(
        events.contains("BackOff"),
        "BackOff event for crasher:\n{events}"
    );

    // Volumes: an init container fills an emptyDir, the app container reads
    // it, a ConfigMap, the downward API and the service-account token
    // volume; restartPolicy Never ends in Succeeded.
    let vol = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: vol
  labels: {{app: vol}}
spec:
  nodeName: {NODE}
  restartPolicy: Never
  initContainers:
  - name: prep
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "echo from-init > /work/init.txt"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: {BUSYBOX_IMAGE}
    command:
    - sh
    - -c
    - |
      cat /work/init.txt
      echo "cfg=$(cat /cfg/GREETING)"
      echo "ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"
      test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token-ok
      grep -q BEGIN /var/run/secrets/kubernetes.io/serviceaccount/ca.crt && echo ca-ok
      cat /podinfo/labels
    volumeMounts:
    - {{name: work, mountPath: /work}}
    - {{name: cfg, mountPath: /cfg}}
    - {{name: podinfo, mountPath: /podinfo}}
  volumes:
  - name: work
    emptyDir: {{}}
  - name: cfg
    configMap: {{name: greeting}}
  - name: podinfo
    downwardAPI:
      items:
      - path: labels
        fieldRef: {{fieldPath: metadata.labels}}
"#
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&vol)).await;
    wait_for(
        &cp,
        &ctd,
        "vol Succeeded",
        Duration::from_secs(90),
        || async {
            let s = jsonpath(&cp, &["pod", "vol"], "{.status.phase}").await;
            (s == "Succeeded").then_some(())
        },
    )
    .await;
    let row = cp.kubectl(V, &["get", "pod", "vol", "--no-headers"]).await;
    assert!(row.contains("Completed") && row.contains("0/1"), "{row}");
    let init = jsonpath(
        &cp,
        &["pod", "vol"],
        "{.status.initContainerStatuses[0].state.terminated.reason}",
    )
    .await;
    assert_eq!(init, "Completed");
    let vol_uid = jsonpath(&cp, &["pod", "vol"], "{.metadata.uid}").await;
    let text = std::fs::read_to_string(log_file(&logs, "vol", &vol_uid, "main", 0)).unwrap();
    for want in [
        "from-init",
        "cfg=hello-from-cm",
        "ns=default",
        "token-ok",
        "ca-ok",
        "app=\"vol\"",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    cp.kubectl(V, &["delete", "pod", "vol", "--wait=true", "--timeout=60s"])
        .await;

    cp.kubectl(
        V,
        &["delete", "pod", "crasher", "--wait=true", "--timeout=60s"],
    )
    .await;
    agent.stop().await;
    drop(ctd);
    cp.shutdown();
    drop(store);
}
