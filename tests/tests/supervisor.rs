//! `k3rs server` end to end: the real supervisor binary starting the real
//! datastore and API server, driven with the real kubectl.

use std::time::Duration;

use k3rs_e2e::supervisor::{K3rsServer, ServerOptions, children_of, is_gone, send_signal};
use k3rs_e2e::{Backend, TestStore};

const READY: Duration = Duration::from_secs(90);
const KUBECTL: Duration = Duration::from_secs(30);
/// The supervisor's stop grace per daemon is 10 s; two daemons stop in turn.
const EXIT: Duration = Duration::from_secs(25);

const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: survivor
  namespace: default
data:
  greeting: hello from k3rs
";

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `survivor` ConfigMap's greeting, once kubectl gets an answer.
fn greeting(server: &K3rsServer) -> String {
    let args = [
        "get",
        "configmap",
        "survivor",
        "-o",
        "jsonpath={.data.greeting}",
    ];
    server.kubectl_until_ok(&args, None, KUBECTL).unwrap()
}

/// Waits until the supervisor runs a child `comm` whose pid is not `old`.
fn wait_for_new_child(server: &K3rsServer, comm: &str, old: u32) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = server.child_pid(comm)
            && pid != old
        {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{comm} was not restarted; children: {:?}",
            server.children()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, exit 0 within the grace period, no child left.
fn stop_cleanly(mut server: K3rsServer) {
    let children = server.children();
    assert!(
        children.iter().any(|(_, c)| c == "k3rs-apiserver"),
        "{children:?}"
    );
    server.signal("TERM").unwrap();
    let status = server.wait_exit(EXIT).unwrap();
    assert!(status.success(), "k3rs server exited with {status}");
    for (pid, comm) in &children {
        assert!(is_gone(*pid), "{comm} ({pid}) outlived the supervisor");
    }
    assert!(children_of(server.pid()).is_empty());
    let out = server.output().join("\n");
    assert!(out.contains("all daemons stopped"), "{out}");
}

#[test]
fn server_restarts_a_killed_apiserver_stops_cleanly_and_restarts_on_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        // Exercises the file layer: a list key and the mode key.
        config: "write-kubeconfig-mode: \"0640\"\nkube-apiserver-arg:\n  - service-node-port-range=30000-32000\n"
            .into(),
        ..Default::default()
    };
    let mut server = K3rsServer::start(dir.path(), &opts).unwrap();
    server.wait_ready(READY).unwrap();

    // First start made the data dir, the PKI, the tokens and the kubeconfig.
    let tls = server.data_dir.join("server/tls");
    let ca = read(&tls.join("server-ca.crt"));
    let token = read(&server.data_dir.join("server/token"));
    assert!(
        token.starts_with("K10") && token.contains("::server:"),
        "{token}"
    );
    assert_eq!(token, read(&server.data_dir.join("server/node-token")));
    assert!(tls.join("service.key").is_file());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&server.kubeconfig), 0o640);
        assert_eq!(mode(&server.data_dir.join("server/token")), 0o600);
        assert_eq!(mode(&server.data_dir), 0o700);
    }
    let out = server.output().join("\n");
    assert!(
        out.contains(&server.kubeconfig.display().to_string()),
        "{out}"
    );
    assert!(out.contains("k3rs agent --server https://"), "{out}");
    assert!(
        out.contains("[apiserver] "),
        "child lines are tagged: {out}"
    );

    let ns = server
        .kubectl_until_ok(&["get", "ns", "-o", "name"], None, KUBECTL)
        .unwrap();
    assert!(ns.contains("namespace/default"), "{ns}");
    server
        .kubectl_until_ok(&["apply", "-f", "-"], Some(CONFIGMAP), KUBECTL)
        .unwrap();

    // kill -9 the API server: the supervisor notices, says why, restarts it.
    // The scheduler and controller manager are built beside k3rs, so the
    // server runs them; the controller manager gives every namespace its
    // default ServiceAccount.
    for daemon in ["k3rs-scheduler", "k3rs-controller-manager"] {
        assert!(
            server.child_pid(daemon).is_some(),
            "{daemon}: {:?}",
            server.children()
        );
    }
    let sa = server
        .kubectl_until_ok(
            &["get", "sa", "default", "-n", "default", "-o", "name"],
            None,
            KUBECTL,
        )
        .unwrap();
    assert_eq!(sa.trim(), "serviceaccount/default");
    let api = server.child_pid("k3rs-apiserver").expect("apiserver child");
    let datastore = server.child_pid("k3rs-datastore").expect("datastore child");
    send_signal(api, "KILL").unwrap();
    let new_api = wait_for_new_child(&server, "k3rs-apiserver", api);
    assert_ne!(new_api, api);
    server
        .wait_for_line(
            "apiserver exited (killed by SIGKILL)",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(greeting(&server), "hello from k3rs");
    assert_eq!(
        server.child_pid("k3rs-datastore"),
        Some(datastore),
        "the datastore was left alone"
    );

    stop_cleanly(server);

    // Same data dir: same CA and token, the configmap is still there.
    let mut again = K3rsServer::start(dir.path(), &opts).unwrap();
    again.wait_ready(READY).unwrap();
    assert_eq!(read(&tls.join("server-ca.crt")), ca, "CA reused");
    assert_eq!(
        read(&again.data_dir.join("server/token")),
        token,
        "token reused"
    );
    assert_eq!(greeting(&again), "hello from k3rs");
    stop_cleanly(again);
}

/// The same server with `--datastore-endpoint` naming another datastore:
/// PostgreSQL or MariaDB under the shim, or a real etcd with no shim at all.
fn server_on(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut _db = None;
    let mut _etcd = None;
    let endpoint = match backend {
        Backend::Postgres | Backend::Mariadb => {
            let (what, addr) = match backend {
                Backend::Postgres => ("PostgreSQL", k3rs_e2e::POSTGRES_ADDR),
                _ => ("MariaDB", k3rs_e2e::MARIADB_ADDR),
            };
            if let Err(e) =
                std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))
            {
                panic!("{what} is not reachable at {addr} ({e}); run ./scripts/setup.sh");
            }
            let name = k3rs_e2e::unique_name("k3rs_sup");
            let url = match backend {
                Backend::Postgres => format!("postgres://postgres@{addr}/{name}"),
                _ => format!("mysql://root@tcp({addr})/{name}"),
            };
            _db = Some(DropDatabase(backend, name));
            url
        }
        _ => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let etcd = rt.block_on(TestStore::start(Backend::Etcd)).unwrap();
            let url = etcd.endpoint().to_string();
            _etcd = Some((rt, etcd));
            url
        }
    };
    let opts = ServerOptions {
        args: vec!["--datastore-endpoint".into(), endpoint],
        ..Default::default()
    };
    let mut server = K3rsServer::start(dir.path(), &opts).unwrap();
    server.wait_ready(READY).unwrap();
    let ns = server
        .kubectl_until_ok(&["get", "ns", "-o", "name"], None, KUBECTL)
        .unwrap();
    assert!(ns.contains("namespace/kube-system"), "{ns}");
    server
        .kubectl_until_ok(&["apply", "-f", "-"], Some(CONFIGMAP), KUBECTL)
        .unwrap();
    assert_eq!(greeting(&server), "hello from k3rs");
    // The state is in the named datastore, not in a SQLite file.
    assert!(!server.data_dir.join("server/db/state.db").exists());
    let runs_shim = server.child_pid("k3rs-datastore").is_some();
    assert_eq!(
        runs_shim,
        backend != Backend::Etcd,
        "{:?}",
        server.children()
    );
    stop_cleanly(server);
    if let Some((rt, etcd)) = _etcd {
        rt.block_on(etcd.stop());
    }
}

#[test]
fn server_on_postgresql() {
    server_on(Backend::Postgres);
}

#[test]
fn server_on_mariadb() {
    server_on(Backend::Mariadb);
}

#[test]
fn server_on_external_etcd() {
    server_on(Backend::Etcd);
}

/// Drops the test's database when the test ends, passed or not.
struct DropDatabase(Backend, String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        k3rs_e2e::drop_database(self.0, &self.1, true);
    }
}

#[test]
fn bad_config_exits_2_naming_file_and_key() {
    let bin = k3rs_e2e::supervisor::binaries().unwrap().join("k3rs");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "https-listen-port: 6443\nno-such-flag: true\n").unwrap();
    let out = std::process::Command::new(&bin)
        .arg("server")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&config.display().to_string()) && stderr.contains("no-such-flag"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

const GOOD_MANIFEST: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: deployed
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: from-manifest
data:
  version: one
";

/// Waits until `kubectl args` prints something containing `needle`.
fn wait_for_output(server: &K3rsServer, args: &[&str], needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let out = server.kubectl(args, None).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl {args:?} never showed {needle:?}; last: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn manifests_are_applied_updated_reported_and_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("data/server/manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("good.yaml"), GOOD_MANIFEST).unwrap();
    std::fs::write(manifests.join("broken.yaml"), "kind: [unclosed\n").unwrap();
    let mut server = K3rsServer::start(dir.path(), &ServerOptions::default()).unwrap();
    server.wait_ready(READY).unwrap();

    // Namespaced objects without a namespace land in kube-system, as in K3s.
    let cm = ["get", "configmap", "from-manifest", "-n", "kube-system"];
    let version = [&cm[..], &["-o", "jsonpath={.data.version}"]].concat();
    wait_for_output(&server, &version, "one");
    wait_for_output(
        &server,
        &["get", "ns", "deployed", "-o", "name"],
        "namespace/deployed",
    );
    let managers = wait_for_output(
        &server,
        &[
            &cm[..],
            &["-o", "jsonpath={.metadata.managedFields[*].manager}"],
        ]
        .concat(),
        "k3rs-deploy",
    );
    assert!(managers.contains("k3rs-deploy"), "{managers}");

    // The broken file is reported (an event and the status entry); the good one applied anyway.
    let describe = [
        "describe",
        "configmap",
        "k3rs-manifests",
        "-n",
        "kube-system",
    ];
    let text = wait_for_output(&server, &describe, "ApplyManifestFailed");
    assert!(
        text.contains("broken.yaml") && text.contains("AppliedManifest"),
        "{text}"
    );
    let status = wait_for_output(
        &server,
        &[
            "get",
            "configmap",
            "k3rs-manifests",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.data.broken\\.yaml}",
        ],
        "error",
    );
    assert!(
        status.contains("line"),
        "the parse error has a position: {status}"
    );

    // A change to the file is applied again.
    std::fs::write(
        manifests.join("good.yaml"),
        GOOD_MANIFEST.replace("version: one", "version: two"),
    )
    .unwrap();
    wait_for_output(&server, &version, "two");
    stop_cleanly(server);

    // --disable good: skipped, and what it created is removed.
    let opts = ServerOptions {
        args: vec!["--disable".into(), "good".into()],
        ..Default::default()
    };
    let mut again = K3rsServer::start(dir.path(), &opts).unwrap();
    again.wait_ready(READY).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let out = again.kubectl(&cm, None).unwrap();
        if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "from-manifest was not removed"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_for_output(&again, &describe, "RemovedManifest");
    stop_cleanly(again);
}
