//! Ephemeral containers end to end: `kubectl debug -i POD --image=...
//! --target=app -- sh` adds a debug container through the apiserver's
//! `pods/ephemeralcontainers` subresource, the node agent starts it in the
//! pod's sandbox sharing the target's processes, and kubectl attaches to it
//! through the apiserver and the kubelet API. Real apiserver + datastore,
//! private containerd, kubectl as the user. Needs root and the packages
//! scripts/setup.sh installs.

use std::time::{Duration, Instant};

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, Containerd};
use k3rs_e2e::{Backend, TestStore};

const NODE: &str = "k3rs-debug-e2e";
const POD_CIDR: &str = "10.244.94.0/24";
const BRIDGE: &str = "k3rsdbg94";
const V: &str = "1.32";

async fn field(cp: &ControlPlane, pod: &str, path: &str) -> String {
    cp.jsonpath(V, &["pod", pod], path).await
}

/// Polls `f` until it returns Some; on timeout prints the pods.
async fn wait_for<T, F, Fut>(cp: &ControlPlane, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            let pods = cp.kubectl_raw(V, &["get", "pods", "-o", "yaml"]).await;
            panic!(
                "timed out waiting for {what}\npods:\n{}",
                pods.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_debug_runs_an_ephemeral_container_in_the_pod() {
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let ctd = Containerd::start().await.expect("containerd");
    let dir = tempfile::tempdir().unwrap();
    // The apiserver reaches the kubelet API at the node's address with the
    // cluster CA: serve it on loopback with a certificate for it.
    let c = ctd.served_agent_config(&cp, NODE, POD_CIDR, BRIDGE, dir.path());
    let agent = k3rs_node_agent::start(c).await.expect("start agent");

    // What the controller manager would publish; the pod's token volume
    // (added by admission) needs both.
    cp.kubectl(V, &["create", "serviceaccount", "default"])
        .await;
    let ca = format!("--from-file=ca.crt={}", cp.api.ca_file.display());
    cp.kubectl(V, &["create", "configmap", "kube-root-ca.crt", &ca])
        .await;
    let pod = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: [sleep, '3600']
"
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&pod)).await;
    wait_for(&cp, "web Ready", || async {
        let s = field(
            &cp,
            "web",
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        )
        .await;
        (s == "True").then_some(())
    })
    .await;
    let app_id = field(&cp, "web", "{.status.containerStatuses[0].containerID}").await;

    // What a user types, with the script on stdin instead of a terminal.
    // The debugger sees the target's `sleep 3600`: it shares its processes.
    // Stdin stays open until the shell exits: the runtime detaches an
    // attach whose stdin closed, as it does under kubelet.
    let mut cmd = cp
        .kubectl_command(
            V,
            &[
                "debug",
                "-i",
                "web",
                &format!("--image={BUSYBOX_IMAGE}"),
                "--target=app",
                "--",
                "sh",
            ],
        )
        .expect("kubectl");
    cmd.stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kubectl debug");
    let mut stdin = child.stdin.take().expect("stdin");
    {
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(b"echo debug-$((6*7))\nps\nexit 0\n")
            .await
            .expect("write script");
    }
    let done = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl debug finishes")
        .expect("kubectl debug output");
    drop(stdin);
    let out = String::from_utf8_lossy(&done.stdout).into_owned();
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{out}{err}");
    assert!(
        out.contains("Defaulting debug container name to debugger-"),
        "{out}{err}"
    );
    assert!(out.contains("debug-42"), "{out}{err}");
    assert!(
        out.contains("sleep 3600"),
        "target's processes visible: {out}"
    );

    // The pod shows the debug container, finished; the app was not touched.
    let name = field(&cp, "web", "{.spec.ephemeralContainers[0].name}").await;
    assert!(name.starts_with("debugger-"), "{name}");
    wait_for(&cp, "the debug container terminated", || async {
        let s = field(
            &cp,
            "web",
            "{.status.ephemeralContainerStatuses[0].name} {.status.ephemeralContainerStatuses[0].state.terminated.exitCode}",
        )
        .await;
        (s == format!("{name} 0")).then_some(())
    })
    .await;
    assert_eq!(
        field(&cp, "web", "{.status.containerStatuses[0].containerID}").await,
        app_id
    );
    assert_eq!(
        field(
            &cp,
            "web",
            "{.status.conditions[?(@.type==\"Ready\")].status} {.status.containerStatuses[0].restartCount}"
        )
        .await,
        "True 0"
    );
    // Exited debug containers are not restarted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = field(
        &cp,
        "web",
        "{.status.ephemeralContainerStatuses[0].state.terminated.reason}",
    )
    .await;
    assert_eq!(state, "Completed");

    // Ephemeral containers cannot be set on create, only through the subresource.
    let bad = pod.replace("name: web", "name: web2")
        + &format!("  ephemeralContainers:\n  - name: dbg\n    image: {BUSYBOX_IMAGE}\n");
    let err = cp.kubectl_fails(V, &["apply", "-f", "-"], Some(&bad)).await;
    assert!(err.contains("ephemeralContainers"), "{err}");

    cp.kubectl(V, &["delete", "pod", "web", "--timeout=60s"])
        .await;
    agent.stop().await;
    drop(ctd);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .status();
    cp.shutdown();
    drop(store);
}
