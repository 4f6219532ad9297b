//! Embedded etcd HA through the real `k3rs` binary: `k3rs server
//! --cluster-init` runs a real etcd member (the Debian `etcd`, TLS with
//! client-certificate auth), two more servers join it with `--server
//! --token`, and the cluster survives the loss of one server. Three servers,
//! because two etcd members cannot lose one and keep quorum.

use std::process::Command;
use std::time::Duration;

use k3rs_e2e::supervisor::{K3rsServer, ServerOptions, is_gone, send_signal};

const READY: Duration = Duration::from_secs(180);
const KUBECTL: Duration = Duration::from_secs(60);

/// One server's etcd ports (client, peer, metrics), chosen once so that a
/// restart of the server keeps its member's URLs.
struct EtcdPorts([u16; 3]);

impl EtcdPorts {
    fn free() -> Self {
        let p = || k3rs_e2e::free_port().unwrap();
        Self([p(), p(), p()])
    }

    fn args(&self) -> Vec<String> {
        let [c, p, m] = self.0;
        vec![
            "--etcd-client-port".into(),
            c.to_string(),
            "--etcd-peer-port".into(),
            p.to_string(),
            "--etcd-metrics-port".into(),
            m.to_string(),
        ]
    }
}

fn start(root: &std::path::Path, mut args: Vec<String>, ports: &EtcdPorts) -> K3rsServer {
    std::fs::create_dir_all(root).unwrap();
    args.extend(ports.args());
    let mut s = K3rsServer::start(
        root,
        &ServerOptions {
            args,
            ..Default::default()
        },
    )
    .unwrap();
    s.wait_ready(READY).unwrap();
    s
}

fn configmap_value(server: &K3rsServer, name: &str) -> String {
    server
        .kubectl_until_ok(
            &["get", "configmap", name, "-o", "jsonpath={.data.v}"],
            None,
            KUBECTL,
        )
        .unwrap()
}

/// `etcdctl member list` against `server`'s member, with its client cert.
fn member_list(server: &K3rsServer, client_port: u16) -> String {
    let tls = server.data_dir.join("server/tls/etcd");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://127.0.0.1:{client_port}"))
        .arg(format!("--cacert={}", tls.join("server-ca.crt").display()))
        .arg(format!("--cert={}", tls.join("client.crt").display()))
        .arg(format!("--key={}", tls.join("client.key").display()))
        .args(["member", "list", "-w", "simple"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn three_servers_share_one_etcd_and_survive_losing_one() {
    let tmp = tempfile::Builder::new()
        .prefix("k3rs-ha")
        .tempdir()
        .unwrap();
    let ports: Vec<EtcdPorts> = (0..3).map(|_| EtcdPorts::free()).collect();

    let s1 = start(
        &tmp.path().join("s1"),
        vec!["--cluster-init".into()],
        &ports[0],
    );
    let tls = s1.data_dir.join("server/tls/etcd");
    for f in [
        "server-ca.crt",
        "peer-ca.crt",
        "client.crt",
        "server-client.crt",
    ] {
        assert!(tls.join(f).is_file(), "{f} missing");
    }
    assert!(s1.data_dir.join("server/db/etcd/member").is_dir());
    // Client certificate auth: without a certificate etcd refuses.
    let [c1, ..] = ports[0].0;
    let anon = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://127.0.0.1:{c1}"))
        .arg(format!("--cacert={}", tls.join("server-ca.crt").display()))
        .args([
            "--command-timeout=3s",
            "get",
            "/registry",
            "--prefix",
            "--keys-only",
        ])
        .output()
        .unwrap();
    assert!(
        !anon.status.success(),
        "etcd answered a client without a certificate"
    );

    s1.kubectl_until_ok(
        &[
            "create",
            "configmap",
            "written-on-1",
            "--from-literal=v=one",
        ],
        None,
        KUBECTL,
    )
    .unwrap();
    let token = std::fs::read_to_string(s1.data_dir.join("server/token"))
        .unwrap()
        .trim()
        .to_string();
    let join = vec![
        "--server".to_string(),
        format!("https://127.0.0.1:{}", s1.https_port),
        "--token".into(),
        token.clone(),
    ];
    let s2 = start(&tmp.path().join("s2"), join.clone(), &ports[1]);
    let s3 = start(&tmp.path().join("s3"), join, &ports[2]);

    // One cluster: same CA, three members, data written on 1 read on 3.
    assert_eq!(
        std::fs::read(s3.data_dir.join("server/tls/server-ca.crt")).unwrap(),
        std::fs::read(s1.data_dir.join("server/tls/server-ca.crt")).unwrap()
    );
    let members = member_list(&s3, ports[2].0[0]);
    assert_eq!(members.lines().count(), 3, "{members}");
    assert!(
        members.lines().all(|l| l.contains(", started, ")),
        "{members}"
    );
    assert_eq!(configmap_value(&s3, "written-on-1"), "one");

    // Server 1 dies with its whole tree, no chance to clean up.
    let tree = s1.children();
    assert!(tree.iter().any(|(_, c)| c == "etcd"), "{tree:?}");
    let s1_pid = s1.pid();
    send_signal(s1_pid, "KILL").unwrap();
    for (pid, _) in &tree {
        let _ = send_signal(*pid, "KILL");
    }
    let mut s1 = s1;
    s1.wait_exit(Duration::from_secs(10)).unwrap();
    for (pid, comm) in &tree {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !is_gone(*pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(is_gone(*pid), "{comm} ({pid}) survived SIGKILL");
    }

    // The two left keep quorum: server 2 reads and writes.
    assert_eq!(configmap_value(&s2, "written-on-1"), "one");
    s2.kubectl_until_ok(
        &[
            "create",
            "configmap",
            "written-on-2",
            "--from-literal=v=two",
        ],
        None,
        KUBECTL,
    )
    .unwrap();
    assert_eq!(configmap_value(&s3, "written-on-2"), "two");

    // Server 1 comes back on its data dir as the same member and catches up.
    drop(s1);
    let s1 = start(
        &tmp.path().join("s1"),
        vec!["--cluster-init".into()],
        &ports[0],
    );
    assert_eq!(configmap_value(&s1, "written-on-2"), "two");
    let members = member_list(&s1, ports[0].0[0]);
    assert_eq!(
        members.lines().count(),
        3,
        "a restart adds no member: {members}"
    );
}

#[test]
fn joining_with_a_wrong_token_is_refused() {
    let tmp = tempfile::Builder::new()
        .prefix("k3rs-ha-bad")
        .tempdir()
        .unwrap();
    let s1 = start(
        &tmp.path().join("s1"),
        vec!["--cluster-init".into()],
        &EtcdPorts::free(),
    );
    let token = std::fs::read_to_string(s1.data_dir.join("server/token")).unwrap();
    let (prefix, _) = token.trim().rsplit_once(':').unwrap();
    let url = format!("https://127.0.0.1:{}", s1.https_port);
    for (bad, expect) in [
        (format!("{prefix}:wrongsecret"), "401"),
        (
            format!("K10{}::server:wrongsecret", "0".repeat(64)),
            "does not match the hash in --token",
        ),
    ] {
        let root = tmp.path().join(format!("bad-{}", expect.len()));
        std::fs::create_dir_all(&root).unwrap();
        let mut args = vec!["--server".to_string(), url.clone(), "--token".into(), bad];
        args.extend(EtcdPorts::free().args());
        let mut s = K3rsServer::start(
            &root,
            &ServerOptions {
                args,
                ..Default::default()
            },
        )
        .unwrap();
        let status = s.wait_exit(Duration::from_secs(60)).unwrap();
        assert_eq!(status.code(), Some(2), "{:?}", s.output());
        let out = s.output().join("\n");
        assert!(out.contains(expect), "{out}");
        assert!(
            !root.join("data/server/tls/server-ca.key").exists(),
            "a refused server got the CA key"
        );
    }
}
