//! Static pods end to end: a manifest in the node agent's
//! `--pod-manifest-path` runs on a private containerd and shows in the API
//! as a mirror pod; deleting the mirror brings it back without restarting
//! the containers, editing the file replaces the pod, removing it stops the
//! pod. Real apiserver + datastore, kubectl as the user. Needs root and the
//! packages scripts/setup.sh installs.

use std::path::Path;
use std::time::{Duration, Instant};

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, Containerd};
use k3rs_e2e::{Backend, TestStore};
use k3rs_node_agent::cri::{CriClient, LABEL_POD_UID, PodSandboxFilter, Runtime};

const NODE: &str = "k3rs-static-e2e";
const POD_CIDR: &str = "10.244.93.0/24";
const BRIDGE: &str = "k3rsst93";
const V: &str = "1.33";
const MIRROR: &str = "web-k3rs-static-e2e";

fn agent_config(cp: &ControlPlane, ctd: &Containerd, dir: &Path) -> k3rs_node_agent::Config {
    let mut c = ctd.agent_config(&cp.kubeconfig, NODE, POD_CIDR, BRIDGE, dir);
    c.pod_manifest_path = Some(dir.join("manifests"));
    c
}

fn manifest(seconds: u32) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: static-web}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: [sleep, '{seconds}']
"
    )
}

async fn field(cp: &ControlPlane, path: &str) -> String {
    cp.jsonpath(V, &["pod", MIRROR], path).await
}

async fn sandboxes_of(rt: &CriClient, uid: &str) -> usize {
    rt.list_pod_sandboxes(Some(PodSandboxFilter {
        label_selector: [(LABEL_POD_UID.to_string(), uid.to_string())].into(),
        ..Default::default()
    }))
    .await
    .map(|s| s.len())
    .unwrap_or(usize::MAX)
}

/// Polls `f` until it returns Some; on timeout prints the pods and events.
async fn wait_for<T, F, Fut>(cp: &ControlPlane, what: &str, timeout: Duration, mut f: F) -> T
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
            let pods = cp.kubectl_raw(V, &["get", "pods", "-o", "yaml"]).await;
            let events = cp.kubectl_raw(V, &["get", "events"]).await;
            let out = |o: anyhow::Result<std::process::Output>| {
                o.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            };
            panic!(
                "timed out waiting for {what}\npods:\n{}\nevents:\n{}",
                out(pods),
                out(events)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The mirror pod's UID and running container once it is Running and Ready
/// with the given config hash (any hash when `hash` is empty).
async fn running_mirror(cp: &ControlPlane, hash: &str) -> (String, String, String) {
    wait_for(cp, "the mirror pod Running", Duration::from_secs(90), || async {
        let got = field(
            cp,
            "{.metadata.uid} {.metadata.annotations.kubernetes\\.io/config\\.mirror} {.status.phase} \
             {.status.conditions[?(@.type==\"Ready\")].status} {.status.containerStatuses[0].containerID}",
        )
        .await;
        match got.split(' ').collect::<Vec<_>>()[..] {
            [uid, h, "Running", "True", cid]
                if !cid.is_empty() && (hash.is_empty() || h == hash) =>
            {
                Some((uid.to_string(), h.to_string(), cid.to_string()))
            }
            _ => None,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_pods_run_from_manifests_with_mirror_pods() {
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let ctd = Containerd::start().await.expect("containerd");
    let rt = CriClient::new(&ctd.endpoint()).expect("cri client");
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let file = manifests.join("web.yaml");
    std::fs::write(&file, manifest(3600)).unwrap();
    // Not a pod: reported in the log and skipped, the rest still runs.
    std::fs::write(manifests.join("broken.yaml"), "kind: Pod\n").unwrap();
    let agent = k3rs_node_agent::start(agent_config(&cp, &ctd, dir.path()))
        .await
        .expect("start agent");

    // The pod runs, named after the node, and the API shows its mirror.
    let (mirror_uid, hash, cid) = running_mirror(&cp, "").await;
    let node_uid = cp.jsonpath(V, &["node", NODE], "{.metadata.uid}").await;
    let owner = field(
        &cp,
        "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].uid}",
    )
    .await;
    assert_eq!(owner, format!("Node/{NODE}/{node_uid}"));
    assert_eq!(field(&cp, "{.spec.nodeName}").await, NODE);
    assert_eq!(
        field(
            &cp,
            "{.metadata.annotations.kubernetes\\.io/config\\.source}"
        )
        .await,
        "file"
    );
    // The containers belong to the static pod (UID = config hash), not the mirror.
    assert_eq!(sandboxes_of(&rt, &hash).await, 1);
    let listed = cp
        .kubectl(V, &["get", "pods", "-l", "app=static-web"])
        .await;
    assert!(
        listed.contains(MIRROR) && listed.contains("Running"),
        "{listed}"
    );

    // Deleting the mirror brings a new one back; the containers keep running.
    cp.kubectl(V, &["delete", "pod", MIRROR, "--timeout=60s"])
        .await;
    let back = wait_for(&cp, "a new mirror pod", Duration::from_secs(60), || async {
        let uid = field(&cp, "{.metadata.uid}").await;
        (!uid.is_empty() && uid != mirror_uid).then_some(uid)
    })
    .await;
    let (uid2, hash2, cid2) = running_mirror(&cp, &hash).await;
    assert_eq!(uid2, back);
    assert_eq!(hash2, hash);
    assert_eq!(cid2, cid, "deleting the mirror must not restart the pod");
    assert_eq!(
        field(&cp, "{.status.containerStatuses[0].restartCount}").await,
        "0"
    );

    // Editing the manifest replaces the pod: new hash, new containers, and
    // the old sandbox is gone.
    std::fs::write(&file, manifest(3601)).unwrap();
    let new_hash = wait_for(&cp, "the edited pod", Duration::from_secs(60), || async {
        let h = field(
            &cp,
            "{.metadata.annotations.kubernetes\\.io/config\\.mirror}",
        )
        .await;
        (!h.is_empty() && h != hash).then_some(h)
    })
    .await;
    let (_, _, cid3) = running_mirror(&cp, &new_hash).await;
    assert_ne!(cid3, cid);
    let cmd = field(&cp, "{.spec.containers[0].command}").await;
    assert!(cmd.contains("3601"), "{cmd}");
    wait_for(
        &cp,
        "the old static pod stopped",
        Duration::from_secs(60),
        || async { (sandboxes_of(&rt, &hash).await == 0).then_some(()) },
    )
    .await;

    // An agent restart adopts the running static pod instead of restarting it.
    agent.stop().await;
    let agent = k3rs_node_agent::start(agent_config(&cp, &ctd, dir.path()))
        .await
        .expect("restart agent");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, _, cid4) = running_mirror(&cp, &new_hash).await;
    assert_eq!(
        cid4, cid3,
        "a restarted agent keeps the static pod's containers"
    );

    // Removing the file stops the pod and removes its mirror.
    std::fs::remove_file(&file).unwrap();
    wait_for(
        &cp,
        "the mirror pod gone",
        Duration::from_secs(60),
        || async {
            let out = cp
                .kubectl_raw(
                    V,
                    &["get", "pod", MIRROR, "--ignore-not-found", "-o", "name"],
                )
                .await
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .is_empty()
                .then_some(())
        },
    )
    .await;
    wait_for(
        &cp,
        "the static pod stopped",
        Duration::from_secs(60),
        || async { (sandboxes_of(&rt, &new_hash).await == 0).then_some(()) },
    )
    .await;

    agent.stop().await;
    drop(ctd);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .status();
    cp.shutdown();
    drop(store);
}
