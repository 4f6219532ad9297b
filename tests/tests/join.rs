//! Nodes through the real `k3rs` binary: `k3rs server` running containerd
//! and its own node agent, a pod from an airgap image, a second node joined
//! with `k3rs agent --server --token`, and the join refusals (a token for
//! another CA, a taken node name) a user would hit. Needs root and the
//! packages scripts/setup.sh installs (containerd, runc, CNI plugins,
//! busybox-static).
//!
//! One test drives every scenario in sequence: the nodes share the host's
//! `cni0` bridge (each with its own pod CIDR, which the bridge plugin
//! accepts as a second gateway address).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, write_busybox_image};
use k3rs_e2e::supervisor::{K3rsServer, ServerOptions, is_gone, node_agent_join};

const SERVER_NODE: &str = "k3rs-join-srv";
const AGENT_NODE: &str = "k3rs-join-agent";
const SERVER_POD_CIDR: &str = "10.244.81.0/24";
const AGENT_POD_CIDR: &str = "10.244.91.0/24";
/// Bridges of our own: the host's `cni0` may carry another test's range,
/// and the bridge plugin refuses a bridge with a different gateway address.
const SERVER_BRIDGE: &str = "k3rsjoin81";
const AGENT_BRIDGE: &str = "k3rsjoin91";

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Polls kubectl until `f(stdout)` holds.
fn kubectl_until(
    k: &K3rsServer,
    args: &[&str],
    timeout: Duration,
    what: &str,
    f: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = k.kubectl(args, None)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && f(&text) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!("timed out waiting for {what} (kubectl {args:?}): {text}{err}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn node_ready(k: &K3rsServer, node: &str, timeout: Duration) -> Result<()> {
    kubectl_until(
        k,
        &[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        timeout,
        &format!("node {node} Ready"),
        |t| t.trim() == "True",
    )
    .map(drop)
}

/// Kills what containerd left running for `dir` (shims of pods that were
/// not deleted) and unmounts what is mounted below it.
fn clean_host(dir: &Path) {
    let needle = s(dir);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.filter_map(Result::ok) {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("containerd-shim") && cmdline.contains(&needle) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&needle))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        clean_host(&self.0);
        for bridge in [SERVER_BRIDGE, AGENT_BRIDGE] {
            let _ = Command::new("ip")
                .args(["link", "delete", bridge])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

#[test]
fn server_runs_a_node_and_agents_join() -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("k3rs-join").tempdir()?;
    let root = tmp.path().to_path_buf();
    let _cleanup = Cleanup(root.clone());

    // An airgap image for the pod: imported by the server at start.
    let images = root.join("server/data/agent/images");
    std::fs::create_dir_all(&images)?;
    write_busybox_image(&images.join("busybox.tar"), BUSYBOX_IMAGE, None)?;

    let free = || k3rs_e2e::free_port().map(|p| p.to_string());
    let server_args: Vec<String> = [
        "--cluster-cidr",
        SERVER_POD_CIDR,
        "--node-name",
        SERVER_NODE,
        "--containerd-socket",
        &s(&root.join("ctd-server.sock")),
        "--kubelet-arg",
        &format!("healthz-port={}", free()?),
        "--kubelet-arg",
        &format!("port={}", free()?),
        "--kubelet-arg",
        &format!("cni-bridge={SERVER_BRIDGE}"),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    std::fs::create_dir_all(root.join("server"))?;
    let mut server = K3rsServer::start(
        &root.join("server"),
        &ServerOptions {
            args: server_args,
            agent: true,
            ..Default::default()
        },
    )?;
    server.wait_ready(Duration::from_secs(240))?;
    let containerd_pid = server.child_pid("containerd").context("containerd child")?;
    let agent_pid = server
        .child_pid("k3rs-node-agent")
        .context("node agent child")?;

    eprintln!("join-test: The server is a Ready control-plane node.");
    // The server is a Ready control-plane node.
    node_ready(&server, SERVER_NODE, Duration::from_secs(60))?;
    let labels = server.kubectl_until_ok(
        &["get", "node", SERVER_NODE, "--show-labels"],
        None,
        Duration::from_secs(10),
    )?;
    assert!(
        labels.contains("node-role.kubernetes.io/control-plane=true"),
        "{labels}"
    );
    let out = server.kubectl_until_ok(&["get", "nodes"], None, Duration::from_secs(10))?;
    assert!(out.contains(SERVER_NODE) && out.contains("Ready"), "{out}");

    eprintln!("join-test: A pod from the airgap image runs on it.");
    // A pod from the airgap image runs on it.
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: airgap\nspec:\n  containers:\n  - name: c\n    image: {BUSYBOX_IMAGE}\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", \"echo hello from airgap; exec sleep 3600\"]\n"
    );
    server.kubectl_until_ok(&["apply", "-f", "-"], Some(&pod), Duration::from_secs(20))?;
    kubectl_until(
        &server,
        &[
            "get",
            "pod",
            "airgap",
            "-o",
            "jsonpath={.status.phase} {.status.podIP} {.spec.nodeName}",
        ],
        Duration::from_secs(120),
        "pod airgap Running",
        |t| t.starts_with("Running 10.244.81.") && t.ends_with(SERVER_NODE),
    )?;
    // Logs and exec go apiserver → kubelet API with the certificates the
    // supervisor issued (kubelet client cert, CA-signed serving cert).
    let logs = server.kubectl_until_ok(&["logs", "airgap"], None, Duration::from_secs(30))?;
    assert_eq!(logs.trim(), "hello from airgap");
    let host = server.kubectl_until_ok(
        &["exec", "airgap", "--", "cat", "/etc/hostname"],
        None,
        Duration::from_secs(30),
    )?;
    assert_eq!(host.trim(), "airgap");

    eprintln!("join-test: A second node joins with the node token.");
    // A second node joins with the node token.
    let token = std::fs::read_to_string(server.data_dir.join("server/node-token"))?
        .trim()
        .to_string();
    let url = format!("https://127.0.0.1:{}", server.https_port);
    let agent_root = root.join("agent");
    let agent_args = |password: &Path| -> Result<Vec<String>> {
        Ok([
            "--server",
            &url,
            "--token",
            &token,
            "--node-name",
            AGENT_NODE,
            "--containerd-socket",
            &s(&root.join("ctd-agent.sock")),
            "--kubelet-arg",
            &format!("healthz-port={}", free()?),
            "--kubelet-arg",
            &format!("port={}", free()?),
            "--kubelet-arg",
            &format!("pod-cidr={AGENT_POD_CIDR}"),
            "--kubelet-arg",
            &format!("node-password-file={}", s(password)),
            "--kubelet-arg",
            &format!("cni-bridge={AGENT_BRIDGE}"),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect())
    };
    let password = agent_root.join("password");
    let mut agent = K3rsServer::start_agent(&agent_root, &server, &agent_args(&password)?)?;
    agent.wait_for_line("k3rs agent is ready", Duration::from_secs(180))?;
    node_ready(&server, AGENT_NODE, Duration::from_secs(60))?;
    let secret = server.kubectl_until_ok(
        &[
            "get",
            "secret",
            "-n",
            "kube-system",
            &format!("{AGENT_NODE}.node-password.k3rs"),
            "-o",
            "jsonpath={.type}",
        ],
        None,
        Duration::from_secs(10),
    )?;
    assert_eq!(secret, "k3rs.io/node-password");
    for f in [
        "pki/ca.crt",
        "pki/client-kubelet.crt",
        "pki/client-kubelet.key",
        "pki/serving-kubelet.crt",
        "pki/serving-kubelet.key",
        "kubelet.kubeconfig",
    ] {
        assert!(
            agent.data_dir.join("agent").join(f).is_file(),
            "{f} missing"
        );
    }

    eprintln!("join-test: A token made for another CA is refused before anything is sent.");
    // A token made for another CA is refused before anything is sent.
    let other_ca = format!(
        "K10{}::server:{}",
        "0".repeat(64),
        token.rsplit(':').next().unwrap_or_default()
    );
    let scratch = root.join("scratch");
    let (code, err) = node_agent_join(
        &server,
        &scratch.join("a"),
        &other_ca,
        "k3rs-join-other",
        &scratch.join("a-password"),
    )?;
    // Exit 2: a refusal no restart can fix (supervisors give up on it).
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not match the hash in --token"), "{err}");

    eprintln!("join-test: The agent's name with another password is taken.");
    // The agent's name with another password is taken.
    let (code, err) = node_agent_join(
        &server,
        &scratch.join("b"),
        &token,
        AGENT_NODE,
        &scratch.join("b-password"),
    )?;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("is taken") && err.contains("kubectl delete node"),
        "{err}"
    );

    eprintln!("join-test: k3rs agent stops on the refusal instead of restarting forever.");
    // The same through `k3rs agent` (on the server's containerd, so only the
    // node agent runs): the supervisor exits 1 with the server's reason.
    let refused_root = root.join("agent-refused");
    let mut refused_args = agent_args(&scratch.join("d-password"))?;
    refused_args.extend([
        "--container-runtime-endpoint".to_string(),
        format!("unix://{}", s(&root.join("ctd-server.sock"))),
    ]);
    let mut refused = K3rsServer::start_agent(&refused_root, &server, &refused_args)?;
    let status = refused.wait_exit(Duration::from_secs(60))?;
    let out = refused.output();
    assert_eq!(status.code(), Some(1), "{out:?}");
    let last = out.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("k3rs: ") && last.contains("is taken"),
        "last line: {last}"
    );
    let starts = out
        .iter()
        .filter(|l| l.contains("started") && l.contains("k3rs-node-agent"))
        .count();
    assert_eq!(starts, 1, "the node agent was restarted: {out:?}");

    eprintln!("join-test: Stop the agent (its heartbeat");
    // Stop the agent (its heartbeat would register the Node again), delete
    // the Node: the name is free for another password.
    let agent_children = agent.children();
    agent.signal("TERM")?;
    assert!(agent.wait_exit(Duration::from_secs(60))?.success());
    for (pid, comm) in agent_children {
        assert!(is_gone(pid), "{comm} ({pid}) outlived k3rs agent");
    }
    server.kubectl_until_ok(
        &["delete", "node", AGENT_NODE],
        None,
        Duration::from_secs(20),
    )?;
    let (code, err) = node_agent_join(
        &server,
        &scratch.join("c"),
        &token,
        AGENT_NODE,
        &scratch.join("c-password"),
    )?;
    assert_eq!(code, None, "the join should go through: {err}");

    eprintln!("join-test: SIGTERM stops the server's containerd");
    // SIGTERM stops the server's containerd and node agent too.
    server.kubectl_until_ok(
        &["delete", "pod", "airgap", "--wait=true", "--timeout=60s"],
        None,
        Duration::from_secs(90),
    )?;
    server.signal("TERM")?;
    assert!(server.wait_exit(Duration::from_secs(90))?.success());
    for (pid, what) in [(containerd_pid, "containerd"), (agent_pid, "node agent")] {
        assert!(is_gone(pid), "{what} ({pid}) outlived k3rs server");
    }
    Ok(())
}
