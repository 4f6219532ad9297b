//! The node agent through outages of what it depends on: containerd
//! crashing and coming back (the node stays registered, pods keep their last
//! status and keep running, the agent reconnects and carries on), and the
//! API server going away (running pods are left running). Real apiserver,
//! real containerd, the agent in-process. Needs root and the packages
//! scripts/setup.sh installs.

use std::path::Path;
use std::time::{Duration, Instant};

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, Containerd};
use k3rs_e2e::{Backend, TestStore};
use k3rs_node_agent::cri::{ContainerFilter, ContainerState, CriClient, Runtime};

const NODE: &str = "k3rs-faults-e2e";
const POD_CIDR: &str = "10.244.96.0/24";
const BRIDGE: &str = "k3rsflt96";
const V: &str = "1.32";
const WAIT: Duration = Duration::from_secs(90);

fn agent_config(cp: &ControlPlane, ctd: &Containerd, dir: &Path) -> k3rs_node_agent::Config {
    ctd.agent_config(&cp.kubeconfig, NODE, POD_CIDR, BRIDGE, dir)
}

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: {BUSYBOX_IMAGE}\n    command: [\"sleep\", \"100000\"]\n"
    )
}

/// `phase containerID restartCount` of a pod.
async fn state(cp: &ControlPlane, name: &str) -> String {
    cp.jsonpath(
        V,
        &["pod", name],
        "{.status.phase} {.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}",
    )
    .await
}

/// Whether the container (CRI id) runs, asked of containerd directly.
async fn running(endpoint: &str, id: &str) -> bool {
    let Ok(rt) = CriClient::new(endpoint) else {
        return false;
    };
    rt.list_containers(Some(ContainerFilter {
        id: id.to_string(),
        ..Default::default()
    }))
    .await
    .is_ok_and(|cs| {
        cs.iter()
            .any(|c| c.state == ContainerState::ContainerRunning as i32)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_survive_containerd_and_apiserver_outages() {
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let mut ctd = Containerd::start().await.expect("containerd");
    let dir = tempfile::tempdir().unwrap();
    let agent = k3rs_node_agent::start(agent_config(&cp, &ctd, dir.path()))
        .await
        .expect("start agent");
    let nothing = String::new;
    cp.wait_for("node Ready", WAIT, nothing, || async {
        let s = cp
            .jsonpath(
                V,
                &["node", NODE],
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            )
            .await;
        (s == "True").then_some(())
    })
    .await;
    // No controller manager here: what it would publish per namespace.
    cp.kubectl(V, &["create", "serviceaccount", "default"])
        .await;
    let ca = format!("--from-file=ca.crt={}", cp.api.ca_file.display());
    cp.kubectl(V, &["create", "configmap", "kube-root-ca.crt", &ca])
        .await;
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&pod("steady")))
        .await;
    let before = cp
        .wait_for("steady Running", WAIT, nothing, || async {
            let s = state(&cp, "steady").await;
            s.starts_with("Running containerd://").then_some(s)
        })
        .await;
    let cid = before
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.strip_prefix("containerd://"))
        .expect("container id")
        .to_string();

    // containerd dies: the node stays registered, the pod keeps its last
    // status, and the container (its shim survives) keeps running.
    ctd.crash();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        cp.jsonpath(V, &["node", NODE], "{.metadata.name}").await,
        NODE,
        "the node stays registered"
    );
    assert_eq!(state(&cp, "steady").await, before, "last status kept");

    // containerd is back: the agent reconnects, adopts the running
    // container (same ID, no restart) and starts new pods again.
    ctd.restart().await.expect("containerd restarts");
    assert!(
        running(&ctd.endpoint(), &cid).await,
        "the container outlived containerd's crash"
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&pod("after")))
        .await;
    cp.wait_for(
        "a new pod runs after containerd came back",
        WAIT,
        || ctd.log(),
        || async {
            state(&cp, "after")
                .await
                .starts_with("Running containerd://")
                .then_some(())
        },
    )
    .await;
    assert_eq!(state(&cp, "steady").await, before, "not restarted");
    cp.wait_for("node Ready again", WAIT, nothing, || async {
        let s = cp
            .jsonpath(
                V,
                &["node", NODE],
                "{.status.conditions[?(@.type==\"Ready\")].status}",
            )
            .await;
        (s == "True").then_some(())
    })
    .await;

    // The API server goes away: running pods are left running.
    let endpoint = ctd.endpoint();
    cp.shutdown();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        assert!(
            running(&endpoint, &cid).await,
            "the container stopped {:?} after the API server went away",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    agent.stop().await;
    drop(ctd);
    drop(store);
}
