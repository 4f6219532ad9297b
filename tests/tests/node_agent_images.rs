//! Image pulls end to end: two private registries on loopback (Debian's
//! `docker-registry`, basic auth), containerd configured from a
//! `registries.yaml` exactly as `k3rs server` renders it, the node agent
//! in-process, kubectl as the user. Covers a mirror with a login from
//! registries.yaml, a tag that does not exist (`ErrImagePull`, then
//! `ImagePullBackOff` with 10 s doubling back-off), `imagePullPolicy: Never`,
//! and `imagePullSecrets`. Needs root and the packages scripts/setup.sh installs.

use std::path::Path;
use std::time::{Duration, Instant};

use k3rs::registries::Registries;
use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::Containerd;
use k3rs_e2e::registry::LocalRegistry;
use k3rs_e2e::{Backend, TestStore};
use tokio::io::AsyncBufReadExt;

const NODE: &str = "k3rs-na-images";
const POD_CIDR: &str = "10.244.86.0/24";
const BRIDGE: &str = "k3rsimg86";
const V: &str = "1.33";

/// `kubectl logs` goes through the apiserver to this agent's kubelet API.
fn agent_config(cp: &ControlPlane, ctd: &Containerd, dir: &Path) -> k3rs_node_agent::Config {
    ctd.served_agent_config(cp, NODE, POD_CIDR, BRIDGE, dir)
}

fn pod(name: &str, image: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
{extra}  containers:
  - name: app
    image: {image}
    command: ["sh", "-c", "echo running-{name}; sleep 3600"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_pull_through_mirrors_with_logins_and_back_off() {
    let mirror = LocalRegistry::start(Some(("bob", "mirror-pw")))
        .await
        .expect("mirror registry");
    mirror.push_busybox("busybox", "1").expect("push to mirror");
    let private = LocalRegistry::start(Some(("alice", "secret-pw")))
        .await
        .expect("private registry");
    private
        .push_busybox("team/busybox", "2")
        .expect("push to private registry");

    // `k3rs.test` does not resolve: only its mirror can serve it. The
    // private registry speaks plain HTTP, so it is its own mirror; its login
    // comes only from the pod's pull secret.
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"mirrors:
  k3rs.test:
    endpoint: ["http://{m}"]
  "{p}":
    endpoint: ["http://{p}"]
configs:
  "{m}":
    auth:
      username: bob
      password: mirror-pw
"#,
        m = mirror.addr,
        p = private.addr
    );
    let reg_file = dir.path().join("registries.yaml");
    std::fs::write(&reg_file, yaml).unwrap();
    let registries = Registries::load(&reg_file).expect("registries.yaml");

    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let ctd = Containerd::start_with_registries(&registries)
        .await
        .expect("containerd");
    let _agent = k3rs_node_agent::start(agent_config(&cp, &ctd, dir.path()))
        .await
        .expect("start agent");
    let diag = || {
        let log = ctd.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        format!(
            "containerd log (newest first):\n{}\nmirror log:\n{}",
            tail.join("\n"),
            mirror.log()
        )
    };
    cp.kubectl(V, &["create", "serviceaccount", "default"])
        .await;
    let ca = format!("--from-file=ca.crt={}", cp.api.ca_file.display());
    cp.kubectl(V, &["create", "configmap", "kube-root-ca.crt", &ca])
        .await;
    let waiting = |name: &'static str| {
        let cp = &cp;
        async move {
            cp.jsonpath(
                V,
                &["pod", name],
                "{.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}",
            )
            .await
        }
    };

    // A mirrored image, pulled with the mirror's login from registries.yaml.
    cp.kubectl_in(
        V,
        &["apply", "-f", "-"],
        Some(&pod("mirrored", "k3rs.test/busybox:1", "")),
    )
    .await;
    cp.wait_for(
        "the mirrored image to run",
        Duration::from_secs(120),
        diag,
        || async {
            let phase = cp
                .jsonpath(V, &["pod", "mirrored"], "{.status.phase}")
                .await;
            (phase == "Running").then_some(())
        },
    )
    .await;
    cp.wait_for("its log", Duration::from_secs(30), diag, || async {
        let out = cp.kubectl_raw(V, &["logs", "mirrored"]).await.ok()?;
        String::from_utf8_lossy(&out.stdout)
            .contains("running-mirrored")
            .then_some(())
    })
    .await;
    let pulled = cp.kubectl(V, &["describe", "pod", "mirrored"]).await;
    assert!(
        pulled.contains("Successfully pulled image \"k3rs.test/busybox:1\""),
        "{pulled}"
    );

    // A tag the registry does not have: ErrImagePull with the runtime's
    // message, then ImagePullBackOff; retries 10 s, then 20 s apart.
    cp.kubectl_in(
        V,
        &["apply", "-f", "-"],
        Some(&pod("missing-tag", "k3rs.test/busybox:nope", "")),
    )
    .await;
    let mut watch = cp
        .kubectl_command(V, &["get", "pod", "missing-tag", "-w", "--no-headers"])
        .unwrap()
        .spawn()
        .expect("kubectl get -w");
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut pulls_failed: Vec<Instant> = Vec::new();
    let mut saw_backoff = false;
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(150);
    while pulls_failed.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            other => panic!(
                "watch ended ({other:?}) after {} failed pulls\n{}",
                pulls_failed.len(),
                diag()
            ),
        };
        let status = line
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        if status == "ErrImagePull" && last != "ErrImagePull" {
            pulls_failed.push(Instant::now());
        }
        if status == "ImagePullBackOff" {
            saw_backoff = true;
        }
        last = status;
    }
    drop(watch);
    assert!(saw_backoff, "kubectl get pod showed ImagePullBackOff");
    let first = pulls_failed[1] - pulls_failed[0];
    let second = pulls_failed[2] - pulls_failed[1];
    assert!(
        first >= Duration::from_secs(9) && second >= Duration::from_secs(19),
        "pull retries after {first:?}, then {second:?} (want 10 s, then 20 s)"
    );
    assert!(
        second > first + Duration::from_secs(5),
        "back-off doubles: {first:?}, {second:?}"
    );
    let (reason, message) = cp
        .wait_for(
            "ImagePullBackOff",
            Duration::from_secs(60),
            diag,
            || async {
                let s = waiting("missing-tag").await;
                let (r, m) = s.split_once('|')?;
                (r == "ImagePullBackOff").then(|| (r.to_string(), m.to_string()))
            },
        )
        .await;
    assert_eq!(reason, "ImagePullBackOff");
    assert_eq!(message, "Back-off pulling image \"k3rs.test/busybox:nope\"");
    let described = cp.kubectl(V, &["describe", "pod", "missing-tag"]).await;
    for want in [
        "ImagePullBackOff",
        "Pulling image \"k3rs.test/busybox:nope\"",
        "Failed to pull image \"k3rs.test/busybox:nope\"",
        "Back-off pulling image \"k3rs.test/busybox:nope\"",
    ] {
        assert!(
            described.contains(want),
            "describe lacks {want:?}:\n{described}"
        );
    }
    // The failed pull's message is the runtime's: the mirror has no such
    // tag, so containerd falls back to the registry itself, which does not
    // resolve (as with K3s).
    assert!(
        described.contains("rpc error: code = ")
            && described.contains("failed to resolve reference \"k3rs.test/busybox:nope\""),
        "{described}"
    );

    // The other pod never noticed.
    let restarts = cp
        .jsonpath(
            V,
            &["pod", "mirrored"],
            "{.status.phase} {.status.containerStatuses[0].restartCount}",
        )
        .await;
    assert_eq!(restarts, "Running 0");

    // Never + an image not on the node.
    let never = pod("never", "k3rs.test/busybox:absent", "").replace(
        "    image: k3rs.test/busybox:absent\n",
        "    image: k3rs.test/busybox:absent\n    imagePullPolicy: Never\n",
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&never)).await;
    let never_msg = cp
        .wait_for(
            "ErrImageNeverPull",
            Duration::from_secs(60),
            diag,
            || async {
                let s = waiting("never").await;
                let (r, m) = s.split_once('|')?;
                (r == "ErrImageNeverPull").then(|| m.to_string())
            },
        )
        .await;
    assert!(never_msg.contains("pull policy of Never"), "{never_msg}");

    // The private registry refuses an anonymous pull ...
    let private_image = format!("{}/team/busybox:2", private.addr);
    cp.kubectl_in(
        V,
        &["apply", "-f", "-"],
        Some(&pod("no-secret", &private_image, "")),
    )
    .await;
    let denied = cp
        .wait_for(
            "an anonymous pull to fail",
            Duration::from_secs(60),
            diag,
            || async {
                let s = waiting("no-secret").await;
                let (r, m) = s.split_once('|')?;
                matches!(r, "ErrImagePull" | "ImagePullBackOff").then(|| m.to_string())
            },
        )
        .await;
    assert!(!denied.is_empty());
    let described = cp.kubectl(V, &["describe", "pod", "no-secret"]).await;
    assert!(
        described.contains("401") || described.to_lowercase().contains("authoriz"),
        "{described}"
    );
    // ... and serves the pod that brings the login as an imagePullSecret.
    cp.kubectl(
        V,
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            &format!("--docker-server={}", private.addr),
            "--docker-username=alice",
            "--docker-password=secret-pw",
        ],
    )
    .await;
    cp.kubectl_in(
        V,
        &["apply", "-f", "-"],
        Some(&pod(
            "with-secret",
            &private_image,
            "  imagePullSecrets:\n  - name: regcred\n",
        )),
    )
    .await;
    cp.wait_for(
        "the pod with a pull secret to run",
        Duration::from_secs(90),
        diag,
        || async {
            let phase = cp
                .jsonpath(V, &["pod", "with-secret"], "{.status.phase}")
                .await;
            (phase == "Running").then_some(())
        },
    )
    .await;
    let out = cp.kubectl(V, &["logs", "with-secret"]).await;
    assert!(out.contains("running-with-secret"), "{out}");

    // A tag the registry does not have, asked for with the right login:
    // the registry's own answer (not found) reaches the pod status.
    let missing = format!("{}/team/busybox:nope", private.addr);
    cp.kubectl_in(
        V,
        &["apply", "-f", "-"],
        Some(&pod(
            "private-missing",
            &missing,
            "  imagePullSecrets:\n  - name: regcred\n",
        )),
    )
    .await;
    // The ErrImagePull status lasts until the next pass turns it into
    // ImagePullBackOff; the Failed event keeps the message.
    let described = cp
        .wait_for(
            "a Failed event from the registry",
            Duration::from_secs(60),
            diag,
            || async {
                let d = cp.kubectl(V, &["describe", "pod", "private-missing"]).await;
                d.contains("Failed to pull image").then_some(d)
            },
        )
        .await;
    assert!(
        described.contains("code = NotFound")
            && described.contains(&format!("{missing}: not found")),
        "{described}"
    );

    cp.kubectl(
        V,
        &["delete", "pod", "--all", "--wait=true", "--timeout=60s"],
    )
    .await;
}
