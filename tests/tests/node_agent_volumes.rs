//! Pod volumes end to end: hostPath with its `type` checks, a memory-backed
//! emptyDir with a size limit, a persistentVolumeClaim bound to a hostPath
//! PV, and a missing configMap, through a real apiserver, a private
//! containerd, the node agent in-process and kubectl. A bad reference
//! leaves the pod ContainerCreating with a FailedMount event until it is
//! fixed. Needs root and the packages scripts/setup.sh installs.

use std::path::Path;
use std::time::Duration;

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, Containerd};
use k3rs_e2e::{Backend, TestStore};

const NODE: &str = "k3rs-na-volumes";
const POD_CIDR: &str = "10.244.87.0/24";
const BRIDGE: &str = "k3rsvol87";
const V: &str = "1.33";

/// `kubectl logs` goes through the apiserver to this agent's kubelet API.
fn agent_config(cp: &ControlPlane, ctd: &Containerd, dir: &Path) -> k3rs_node_agent::Config {
    ctd.served_agent_config(cp, NODE, POD_CIDR, BRIDGE, dir)
}

fn pod(name: &str, script: &str, mounts: &str, volumes: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", {script:?}]
    volumeMounts:
{mounts}  volumes:
{volumes}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_host_path_memory_claims_and_bad_references() {
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let ctd = Containerd::start().await.expect("containerd");
    let dir = tempfile::tempdir().unwrap();
    let _agent = k3rs_node_agent::start(agent_config(&cp, &ctd, dir.path()))
        .await
        .expect("start agent");
    let diag = || {
        let log = ctd.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        format!("containerd log (newest first):\n{}", tail.join("\n"))
    };
    cp.kubectl(V, &["create", "serviceaccount", "default"])
        .await;
    let ca = format!("--from-file=ca.crt={}", cp.api.ca_file.display());
    cp.kubectl(V, &["create", "configmap", "kube-root-ca.crt", &ca])
        .await;
    let running = |name: &'static str| {
        let cp = &cp;
        async move {
            let phase = cp.jsonpath(V, &["pod", name], "{.status.phase}").await;
            (phase == "Running").then_some(())
        }
    };
    let logs_contain = |name: &'static str, want: &'static str| {
        let cp = &cp;
        async move {
            let out = cp.kubectl_raw(V, &["logs", name]).await.ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains(want).then_some(text)
        }
    };
    // A pod stuck on a volume: ContainerCreating in `kubectl get pod` and a
    // FailedMount event saying why.
    let stuck = |name: &'static str, want: String| {
        let cp = &cp;
        async move {
            let get = cp.kubectl(V, &["get", "pod", name, "--no-headers"]).await;
            if !get.contains("ContainerCreating") {
                return None;
            }
            // The event says FailedMount; the container's waiting message
            // says what is wrong now (the event recorder folds later
            // FailedMount notes into the first one's series).
            let d = cp.kubectl(V, &["describe", "pod", name]).await;
            let message = cp
                .jsonpath(
                    V,
                    &["pod", name],
                    "{.status.containerStatuses[0].state.waiting.message}",
                )
                .await;
            (d.contains("FailedMount") && message.contains(&want)).then_some(())
        }
    };

    // hostPath of every checked type.
    let host = dir.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let sock = host.join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let created_dir = host.join("made/by/kubelet");
    let created_file = host.join("files/made.txt");
    let types = pod(
        "hp-types",
        "test -d /made && test -f /file && test -S /sock && test -c /null && echo hi > /made/out && echo types-ok; sleep 3600",
        "    - {name: made, mountPath: /made}\n    - {name: file, mountPath: /file}\n    - {name: sock, mountPath: /sock}\n    - {name: devnull, mountPath: /null}\n",
        &format!(
            "  - {{name: made, hostPath: {{path: {}, type: DirectoryOrCreate}}}}\n  - {{name: file, hostPath: {{path: {}, type: FileOrCreate}}}}\n  - {{name: sock, hostPath: {{path: {}, type: Socket}}}}\n  - {{name: devnull, hostPath: {{path: /dev/null, type: CharDevice}}}}\n",
            created_dir.display(),
            created_file.display(),
            sock.display()
        ),
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&types)).await;
    cp.wait_for("hp-types Running", Duration::from_secs(90), diag, || {
        running("hp-types")
    })
    .await;
    cp.wait_for("hp-types checks", Duration::from_secs(30), diag, || {
        logs_contain("hp-types", "types-ok")
    })
    .await;
    assert!(created_file.is_file());
    assert_eq!(
        std::fs::read_to_string(created_dir.join("out")).unwrap(),
        "hi\n"
    );

    // A hostPath of the wrong type (a file where a directory is wanted, a
    // directory where a block device is) never starts.
    let wrong = pod(
        "hp-wrong",
        "sleep 3600",
        "    - {name: d, mountPath: /d}\n    - {name: b, mountPath: /b}\n",
        &format!(
            "  - {{name: d, hostPath: {{path: {}, type: Directory}}}}\n  - {{name: b, hostPath: {{path: {}, type: BlockDevice}}}}\n",
            created_file.display(),
            host.display()
        ),
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&wrong)).await;
    let msg = format!(
        "hostPath type check failed: {} is not a directory",
        created_file.display()
    );
    cp.wait_for(
        "hp-wrong FailedMount",
        Duration::from_secs(60),
        diag,
        || stuck("hp-wrong", msg.clone()),
    )
    .await;
    let containers = cp
        .jsonpath(
            V,
            &["pod", "hp-wrong"],
            "{.status.containerStatuses[0].state.waiting.reason}",
        )
        .await;
    assert_eq!(containers, "ContainerCreating");

    // emptyDir in memory: a tmpfs of the given size.
    let mem = pod(
        "mem",
        "grep ' /cache tmpfs ' /proc/mounts && head -c 4194304 /dev/zero > /cache/small && echo small-ok; head -c 16777216 /dev/zero > /cache/big || echo big-refused; sleep 3600",
        "    - {name: cache, mountPath: /cache}\n",
        "  - {name: cache, emptyDir: {medium: Memory, sizeLimit: 8Mi}}\n",
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&mem)).await;
    cp.wait_for("mem Running", Duration::from_secs(90), diag, || {
        running("mem")
    })
    .await;
    let out = cp
        .wait_for("the tmpfs checks", Duration::from_secs(30), diag, || {
            logs_contain("mem", "big-refused")
        })
        .await;
    assert!(out.contains("tmpfs") && out.contains("small-ok"), "{out}");
    assert!(
        out.contains("size=8192k") || out.contains("size=8m"),
        "the limit is the tmpfs size: {out}"
    );
    let uid = cp.jsonpath(V, &["pod", "mem"], "{.metadata.uid}").await;
    let host_mount = dir
        .path()
        .join("agent/pods")
        .join(&uid)
        .join("volumes/kubernetes.io~empty-dir/cache");
    let mounted = |p: &Path| {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&p.display().to_string()))
    };
    assert!(mounted(&host_mount), "tmpfs at {}", host_mount.display());
    cp.kubectl(V, &["delete", "pod", "mem", "--wait=true", "--timeout=60s"])
        .await;
    assert!(!mounted(&host_mount), "the tmpfs is unmounted with the pod");
    assert!(!host_mount.exists());

    // A claim that does not exist, then one not bound yet, then bound to a
    // hostPath PV: the pod waits in ContainerCreating and then runs.
    let pv_dir = dir.path().join("pv-data");
    let claim_pod = pod(
        "claim-user",
        "echo stored > /data/hello && echo claim-ok; sleep 3600",
        "    - {name: data, mountPath: /data}\n",
        "  - {name: data, persistentVolumeClaim: {claimName: data}}\n",
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&claim_pod))
        .await;
    cp.wait_for("claim not found", Duration::from_secs(60), diag, || {
        stuck(
            "claim-user",
            "persistentvolumeclaim \"data\" not found".to_string(),
        )
    })
    .await;
    let pvc = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
  volumeName: data-pv
"#;
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(pvc)).await;
    cp.wait_for("claim not bound", Duration::from_secs(60), diag, || {
        stuck(
            "claim-user",
            "persistentvolumeclaim \"data\" is not bound".to_string(),
        )
    })
    .await;
    let pv = format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: data-pv
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  claimRef: {{namespace: default, name: data}}
  hostPath: {{path: {}, type: DirectoryOrCreate}}
"#,
        pv_dir.display()
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&pv)).await;
    // No controller manager runs here: bind the claim as its PV controller would.
    cp.kubectl(
        V,
        &[
            "patch",
            "pvc",
            "data",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Bound"}}"#,
        ],
    )
    .await;
    cp.wait_for("claim-user Running", Duration::from_secs(90), diag, || {
        running("claim-user")
    })
    .await;
    cp.wait_for("claim-user wrote", Duration::from_secs(30), diag, || {
        logs_contain("claim-user", "claim-ok")
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(pv_dir.join("hello")).unwrap(),
        "stored\n"
    );

    // A configMap volume whose configMap does not exist yet.
    let cm_pod = pod(
        "cm-late",
        "cat /cfg/greeting; echo; sleep 3600",
        "    - {name: cfg, mountPath: /cfg}\n",
        "  - {name: cfg, configMap: {name: late}}\n",
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&cm_pod)).await;
    cp.wait_for("configmap not found", Duration::from_secs(60), diag, || {
        stuck("cm-late", "configmap \"late\" not found".to_string())
    })
    .await;
    cp.kubectl(
        V,
        &[
            "create",
            "configmap",
            "late",
            "--from-literal=greeting=finally",
        ],
    )
    .await;
    cp.wait_for("cm-late Running", Duration::from_secs(90), diag, || {
        running("cm-late")
    })
    .await;
    cp.wait_for("cm-late content", Duration::from_secs(30), diag, || {
        logs_contain("cm-late", "finally")
    })
    .await;

    cp.kubectl(
        V,
        &["delete", "pod", "--all", "--wait=true", "--timeout=60s"],
    )
    .await;
}
