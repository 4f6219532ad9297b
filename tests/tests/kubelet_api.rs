//! The kubelet API end to end: a real apiserver + datastore, a private
//! containerd, the node agent in-process serving its kubelet API with a
//! certificate from the cluster CA, and kubectl (1.32, which tries
//! WebSocket first, and 1.27, SPDY only) running logs, exec, attach, cp and
//! port-forward through the API server; the kubelet API's authorization
//! (SubjectAccessReview against RBAC) for a user of its own; and the API
//! server's pods/proxy and services/proxy to a real pod. Needs root and the
//! packages scripts/setup.sh installs.

use std::time::{Duration, Instant};

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, Containerd};
use k3rs_e2e::{Backend, TestStore};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const NODE: &str = "k3rs-kubelet-e2e";
const POD_CIDR: &str = "10.244.82.0/24";
const VERSIONS: [&str; 2] = ["1.32", "1.27"];
const V: &str = "1.32";
/// This test's own CNI bridge (removed at the end).
const BRIDGE: &str = "k3rskl0";

async fn jsonpath(cp: &ControlPlane, what: &[&str], path: &str) -> String {
    cp.jsonpath(V, what, path).await
}

async fn wait_for<T, F, Fut>(cp: &ControlPlane, ctd: &Containerd, what: &str, mut f: F) -> T
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
            let pods = cp
                .kubectl_raw(V, &["get", "pods", "-o", "yaml"])
                .await
                .unwrap();
            let log = ctd.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "timed out waiting for {what}\npods:\n{}\ncontainerd log (newest first):\n{}",
                String::from_utf8_lossy(&pods.stdout),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_running(cp: &ControlPlane, ctd: &Containerd, pod: &str) {
    wait_for(cp, ctd, &format!("{pod} Running"), || async {
        let s = jsonpath(cp, &["pod", pod], "{.status.phase}").await;
        (s == "Running").then_some(())
    })
    .await;
}

fn pod_yaml(name: &str, script: &str, extra: &str) -> String {
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
{extra}"#
    )
}

/// Reads lines from a running kubectl until one satisfies `want`.
async fn read_until(
    child: &mut tokio::process::Child,
    want: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let Some(out) = child.stdout.take() else {
        return Err("no stdout".into());
    };
    let mut lines = BufReader::new(out).lines();
    let mut seen = String::new();
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            seen.push_str(&l);
            seen.push('\n');
            if want(&l) {
                return Some(l);
            }
        }
        None
    })
    .await;
    // Keep draining: kubectl (Go) dies of SIGPIPE writing to a closed stdout.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    match r {
        Ok(Some(l)) => Ok(l),
        _ => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut err)).await;
            }
            Err(format!("stdout so far:\n{seen}\nstderr:\n{err}"))
        }
    }
}

fn tick_of(line: &str) -> Option<u64> {
    line.trim().strip_prefix("tick-")?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_logs_exec_cp_port_forward_through_the_kubelet_api() {
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let ctd = Containerd::start().await.expect("containerd");
    let dir = tempfile::tempdir().unwrap();
    let c = ctd.served_agent_config(&cp, NODE, POD_CIDR, BRIDGE, dir.path());
    let agent = k3rs_node_agent::start(c).await.expect("start agent");
    let port = agent.kubelet_addr.port();

    wait_for(&cp, &ctd, "node Ready", || async {
        let s = jsonpath(
            &cp,
            &["node", NODE],
            "{.status.conditions[?(@.type==\"Ready\")].status} {.status.daemonEndpoints.kubeletEndpoint.Port}",
        )
        .await;
        (s == format!("True {port}")).then_some(())
    })
    .await;
    cp.kubectl(V, &["create", "serviceaccount", "default"])
        .await;
    let ca = format!("--from-file=ca.crt={}", cp.api.ca_file.display());
    cp.kubectl(V, &["create", "configmap", "kube-root-ca.crt", &ca])
        .await;

    // Without a client certificate the kubelet API refuses; /healthz is open.
    unauthenticated_is_refused(agent.kubelet_addr).await;

    let web = pod_yaml(
        "web",
        "echo hello-1; echo hello-2 >&2; echo hello-3; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done",
        "",
    );
    let pf = pod_yaml(
        "pf",
        "mkdir -p /www && echo pf-ok > /www/index.html && exec httpd -f -p 8080 -h /www",
        "",
    );
    let again = pod_yaml(
        "again",
        "if [ -f /data/once ]; then echo second-run; sleep 3600; else touch /data/once; echo first-run; exit 1; fi",
        "    volumeMounts:\n    - {name: data, mountPath: /data}\n  volumes:\n  - name: data\n    emptyDir: {}\n",
    );
    for y in [&web, &pf, &again] {
        cp.kubectl_in(V, &["apply", "-f", "-"], Some(y)).await;
    }
    wait_running(&cp, &ctd, "web").await;
    wait_running(&cp, &ctd, "pf").await;
    // A CA-signed user without RBAC is refused; the binding made here is
    // checked after the kubectl rounds, once the cached denial expired.
    let alice = alice_is_forbidden(&cp, agent.kubelet_addr, dir.path()).await;

    for v in VERSIONS {
        // logs, --tail, --timestamps.
        let logs = wait_for(&cp, &ctd, "web's logs", || async {
            let l = cp.kubectl(v, &["logs", "web"]).await;
            l.contains("tick-4").then_some(l)
        })
        .await;
        // stdout and stderr both show (their relative order is the runtime's).
        assert!(
            logs.contains("hello-1\n") && logs.contains("hello-2\n") && logs.contains("hello-3\n"),
            "{v}: {logs}"
        );
        let tail = cp.kubectl(v, &["logs", "web", "--tail=1"]).await;
        assert_eq!(tail.lines().count(), 1, "{v}: {tail}");
        assert!(tail.starts_with("tick-"), "{v}: {tail}");
        let ts = cp
            .kubectl(v, &["logs", "web", "--timestamps", "--tail=3"])
            .await;
        for l in ts.lines() {
            let (t, rest) = l.split_once(' ').unwrap_or_default();
            assert!(
                t.ends_with('Z') && t.contains('T') && rest.starts_with("tick-"),
                "{v}: {ts}"
            );
        }
        let limited = cp.kubectl(v, &["logs", "web", "--limit-bytes=8"]).await;
        assert!(
            limited.len() == 8 && limited.starts_with("hello-"),
            "{v}: {limited}"
        );
        let since = cp.kubectl(v, &["logs", "web", "--since=2s"]).await;
        assert!(!since.contains("hello-1"), "{v}: {since}");

        // logs -f sees a line written after it started.
        let last = logs.lines().filter_map(tick_of).max().unwrap_or(0);
        let mut child = cp
            .kubectl_command(v, &["logs", "-f", "web", "--tail=1"])
            .unwrap()
            .spawn()
            .unwrap();
        let got = read_until(&mut child, |l| tick_of(l).is_some_and(|n| n > last + 1)).await;
        let _ = child.kill().await;
        got.unwrap_or_else(|e| panic!("{v} logs -f: {e}"));

        // exec: a command's output, stdin piped in, exit codes.
        let host = cp
            .kubectl(v, &["exec", "web", "--", "cat", "/etc/hostname"])
            .await;
        assert_eq!(host.trim(), "web", "{v}");
        let echoed = cp
            .kubectl_in(
                v,
                &["exec", "-i", "web", "--", "cat"],
                Some("piped-through-stdin\n"),
            )
            .await;
        assert_eq!(echoed, "piped-through-stdin\n", "{v}");
        let counted = cp
            .kubectl_in(
                v,
                &["exec", "-i", "web", "--", "sh", "-c", "wc -c; echo err >&2"],
                Some("12345"),
            )
            .await;
        assert_eq!(counted.trim(), "5", "{v}");
        let out = cp
            .kubectl_with(v, &["exec", "web", "--", "sh", "-c", "exit 3"], None, &[])
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{v}: {out:?}");
        let err = cp
            .kubectl_fails(v, &["exec", "web", "-c", "nope", "--", "true"], None)
            .await;
        assert!(
            err.contains("container nope is not valid for pod web"),
            "{v}: {err}"
        );
        let err = cp
            .kubectl_fails(v, &["exec", "ghost", "--", "true"], None)
            .await;
        assert!(err.contains("pods \"ghost\" not found"), "{v}: {err}");

        // -it: script(1) gives kubectl a real terminal, so a TTY is used end to end.
        let tty = exec_tty(&cp, v).await;
        assert!(
            tty.contains("/dev/pts/") && tty.contains("tty-ok"),
            "{v}: {tty}"
        );

        // cp in and out (tar over exec with stdin closed at the end).
        let local = dir.path().join(format!("in-{v}.txt"));
        std::fs::write(&local, format!("copied by kubectl {v}\n")).unwrap();
        let target = format!("web:/tmp/in-{v}.txt");
        cp.kubectl(v, &["cp", &local.display().to_string(), &target])
            .await;
        let inside = cp
            .kubectl(
                v,
                &["exec", "web", "--", "cat", &format!("/tmp/in-{v}.txt")],
            )
            .await;
        assert_eq!(inside, format!("copied by kubectl {v}\n"), "{v}");
        let back = dir.path().join(format!("out-{v}.txt"));
        cp.kubectl(v, &["cp", &target, &back.display().to_string()])
            .await;
        assert_eq!(
            std::fs::read_to_string(&back).unwrap_or_default(),
            format!("copied by kubectl {v}\n"),
            "{v}"
        );

        // attach streams the main process's output.
        let mut child = cp
            .kubectl_command(v, &["attach", "web", "-c", "app"])
            .unwrap()
            .spawn()
            .unwrap();
        let got = read_until(&mut child, |l| tick_of(l).is_some()).await;
        let _ = child.kill().await;
        got.unwrap_or_else(|e| panic!("{v} attach: {e}"));

        // port-forward to busybox httpd.
        let inside = cp
            .kubectl(
                v,
                &[
                    "exec",
                    "pf",
                    "--",
                    "wget",
                    "-qO-",
                    "http://127.0.0.1:8080/index.html",
                ],
            )
            .await;
        assert_eq!(inside, "pf-ok\n", "{v}: httpd answers inside the pod");
        port_forward(&cp, v).await;
    }

    alice_is_allowed_after_binding(agent.kubelet_addr, &alice).await;
    pod_and_service_proxy(&cp).await;

    // --previous after a restart.
    let restarted = wait_for(&cp, &ctd, "again restarted", || async {
        let s = jsonpath(
            &cp,
            &["pod", "again"],
            "{.status.containerStatuses[0].restartCount} {.status.phase}",
        )
        .await;
        let l = cp.kubectl_raw(V, &["logs", "again"]).await.ok()?;
        let text = String::from_utf8_lossy(&l.stdout).into_owned();
        (s.starts_with('1') && text.contains("second-run")).then_some(text)
    })
    .await;
    assert_eq!(restarted, "second-run\n");
    for v in VERSIONS {
        let prev = cp.kubectl(v, &["logs", "again", "--previous"]).await;
        assert_eq!(prev, "first-run\n", "{v}");
        let err = cp
            .kubectl_fails(v, &["logs", "web", "--previous"], None)
            .await;
        assert!(
            err.contains("previous terminated container \"app\" in pod \"web\" not found"),
            "{v}: {err}"
        );
    }

    // A pod whose container never starts answers like upstream.
    let stuck = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stuck\nspec:\n  nodeName: {NODE}\n  containers:\n  - name: app\n    image: k3rs.local/missing:1\n"
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&stuck)).await;
    let err = wait_for(&cp, &ctd, "stuck's waiting reason", || async {
        let out = cp.kubectl_raw(V, &["logs", "stuck"]).await.ok()?;
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        (e.contains("is waiting to start: ") && !e.contains("ContainerCreating")).then_some(e)
    })
    .await;
    assert!(
        err.contains("container \"app\" in pod \"stuck\" is waiting to start:"),
        "{err}"
    );

    // The node proxy reaches the kubelet's stats and pod list.
    let raw = cp
        .kubectl(
            V,
            &[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{NODE}/proxy/stats/summary"),
            ],
        )
        .await;
    let summary: serde_json::Value = serde_json::from_str(&raw).expect("summary JSON");
    assert_eq!(summary["node"]["nodeName"], NODE, "{raw}");
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{raw}"
    );
    let pods: Vec<&str> = summary["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["podRef"]["name"].as_str())
        .collect();
    assert!(pods.contains(&"web"), "{raw}");
    let raw = cp
        .kubectl(
            V,
            &["get", "--raw", &format!("/api/v1/nodes/{NODE}/proxy/pods")],
        )
        .await;
    assert!(
        raw.contains("\"kind\":\"PodList\"") && raw.contains("\"web\""),
        "{raw}"
    );
    let raw = cp
        .kubectl(
            V,
            &[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{NODE}/proxy/metrics/resource"),
            ],
        )
        .await;
    assert!(raw.contains("node_memory_working_set_bytes"), "{raw}");

    for p in ["web", "pf", "again", "stuck"] {
        let _ = cp
            .kubectl_raw(V, &["delete", "pod", p, "--grace-period=1", "--wait=false"])
            .await;
    }
    wait_for(&cp, &ctd, "pods gone", || async {
        let s = cp.kubectl(V, &["get", "pods", "-o", "name"]).await;
        s.trim().is_empty().then_some(())
    })
    .await;
    agent.stop().await;
    cp.shutdown();
    drop(ctd);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .status();
}

type ClientCert = (std::path::PathBuf, std::path::PathBuf);

/// The raw HTTP/1.1 answer of the kubelet API to `method path`.
/// `client`: the client certificate and key to present.
async fn kubelet_request(
    addr: std::net::SocketAddr,
    client: Option<&ClientCert>,
    method: &str,
    path: &str,
) -> String {
    let tls = k3rs_common::tls::client_config_opt_ca(
        None,
        client.map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .expect("tls");
    let io = k3rs_common::http_proxy::connect_tls(
        &addr.to_string(),
        &addr.ip().to_string(),
        std::sync::Arc::new(tls),
    )
    .await
    .expect("dial kubelet");
    let (mut r, mut w) = tokio::io::split(io);
    w.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), r.read_to_string(&mut out)).await;
    out
}

async fn unauthenticated_is_refused(addr: std::net::SocketAddr) {
    for (path, code) in [("/healthz", "200"), ("/pods", "401")] {
        let out = kubelet_request(addr, None, "GET", path).await;
        assert!(
            out.starts_with(&format!("HTTP/1.1 {code}")),
            "{path}: {out}"
        );
    }
}

/// What the API server's SubjectAccessReview says about `user` and `verb`
/// on nodes/`sub` of our node.
async fn access_review(cp: &ControlPlane, user: &str, verb: &str, sub: &str) -> String {
    let sar = format!(
        "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: {user}\n  groups: [devs, system:authenticated]\n  resourceAttributes: {{verb: {verb}, resource: nodes, subresource: {sub}, name: {NODE}}}\n"
    );
    cp.kubectl_in(
        V,
        &[
            "create",
            "--validate=false",
            "-f",
            "-",
            "-o",
            "jsonpath={.status.allowed}",
        ],
        Some(&sar),
    )
    .await
}

/// Alice has a certificate from the cluster CA but no RBAC: the kubelet API
/// authenticates her and refuses with kubelet's message. Then she is bound
/// to a role with `nodes/proxy get`; her client TLS config is returned.
async fn alice_is_forbidden(
    cp: &ControlPlane,
    addr: std::net::SocketAddr,
    dir: &std::path::Path,
) -> ClientCert {
    let tls = cp
        .issue_client("alice", &["devs"], &dir.join("alice"))
        .expect("alice's cert");
    for (method, path, verb, sub) in [
        ("GET", "/pods", "get", "proxy"),
        ("GET", "/containerLogs/default/web/app", "get", "proxy"),
        ("GET", "/stats/summary", "get", "stats"),
        (
            "POST",
            "/exec/default/web/app?command=true",
            "create",
            "proxy",
        ),
    ] {
        let out = kubelet_request(addr, Some(&tls), method, path).await;
        assert!(out.starts_with("HTTP/1.1 403"), "{path}: {out}");
        let want =
            format!("Forbidden (user=alice, verb={verb}, resource=nodes, subresource(s)=[{sub}])");
        assert!(out.contains(&want), "{path}: {out}");
    }
    assert_eq!(access_review(cp, "alice", "get", "proxy").await, "false");
    let rbac = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-proxy-reader}
rules:
- apiGroups: [\"\"]
  resources: [nodes/proxy]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: alice-node-proxy}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-proxy-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}
";
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(rbac)).await;
    // The API server answers from RBAC at once (the kubelet caches).
    assert_eq!(access_review(cp, "alice", "get", "proxy").await, "true");
    assert_eq!(access_review(cp, "alice", "create", "proxy").await, "false");
    assert_eq!(access_review(cp, "alice", "get", "stats").await, "false");
    assert_eq!(access_review(cp, "bob", "get", "proxy").await, "false");
    tls
}

/// Once the kubelet's cached denial (30 s) has expired, the binding lets
/// Alice read pods and logs, but nothing the role does not grant.
async fn alice_is_allowed_after_binding(addr: std::net::SocketAddr, tls: &ClientCert) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let out = kubelet_request(addr, Some(tls), "GET", "/pods").await;
        if out.starts_with("HTTP/1.1 200") {
            assert!(out.contains("\"kind\":\"PodList\""), "{out}");
            break;
        }
        assert!(
            out.starts_with("HTTP/1.1 403") && Instant::now() < deadline,
            "alice still refused: {out}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let out = kubelet_request(
        addr,
        Some(tls),
        "GET",
        "/containerLogs/default/web/app?tailLines=1",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("tick-"),
        "{out}"
    );
    for (method, path) in [
        ("GET", "/stats/summary"),
        ("POST", "/exec/default/web/app?command=true"),
    ] {
        let out = kubelet_request(addr, Some(tls), method, path).await;
        assert!(out.starts_with("HTTP/1.1 403"), "{path}: {out}");
    }
}

/// pods/proxy and services/proxy reach busybox httpd in pod `pf` (port
/// 8080), through `kubectl get --raw` and through `kubectl proxy`.
async fn pod_and_service_proxy(cp: &ControlPlane) {
    let raw = |p: String| async move { cp.kubectl(V, &["get", "--raw", &p]).await };
    let fails = |p: String| async move { cp.kubectl_fails(V, &["get", "--raw", &p], None).await };
    let base = "/api/v1/namespaces/default";
    assert_eq!(
        raw(format!("{base}/pods/pf:8080/proxy/index.html")).await,
        "pf-ok\n"
    );
    assert_eq!(
        raw(format!("{base}/pods/http:pf:8080/proxy/index.html")).await,
        "pf-ok\n"
    );
    let err = fails(format!("{base}/pods/ghost:8080/proxy/")).await;
    assert!(err.contains("pods \"ghost\" not found"), "{err}");
    let err = fails(format!("{base}/pods/pf:http/proxy/")).await;
    assert!(
        err.contains("BadRequest") && err.contains("no port named"),
        "{err}"
    );

    // A Service without a selector and a hand-made EndpointSlice (no
    // controller manager runs here), plus one with no endpoints at all.
    let ip = jsonpath(cp, &["pod", "pf"], "{.status.podIP}").await;
    let objs = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: pfsvc}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: pfsvc-1
  labels: {{kubernetes.io/service-name: pfsvc}}
addressType: IPv4
endpoints:
- addresses: [\"{ip}\"]
  conditions: {{ready: true}}
ports: [{{name: http, port: 8080, protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: empty}}
spec:
  ports: [{{port: 80}}]
"
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&objs)).await;
    for id in ["pfsvc:http", "pfsvc:80", "http:pfsvc:80"] {
        assert_eq!(
            raw(format!("{base}/services/{id}/proxy/index.html")).await,
            "pf-ok\n",
            "{id}"
        );
    }
    let err = fails(format!("{base}/services/empty/proxy/")).await;
    assert!(
        err.contains("ServiceUnavailable")
            && err.contains("no endpoints available for service \"empty\""),
        "{err}"
    );
    let err = fails(format!("{base}/services/pfsvc:81/proxy/")).await;
    assert!(
        err.contains("no service port 81 found for service \"pfsvc\""),
        "{err}"
    );
    let err = fails(format!("{base}/services/ftp:pfsvc:21/proxy/")).await;
    assert!(err.contains("BadRequest"), "{err}");

    // kubectl proxy on a free port, then plain HTTP through it.
    let mut child = cp
        .kubectl_command(V, &["proxy", "--port=0", "--address=127.0.0.1"])
        .unwrap()
        .spawn()
        .unwrap();
    let line = read_until(&mut child, |l| l.starts_with("Starting to serve on "))
        .await
        .unwrap_or_else(|e| panic!("kubectl proxy: {e}"));
    let at = line
        .trim_start_matches("Starting to serve on ")
        .trim()
        .to_string();
    for path in [
        format!("{base}/services/pfsvc:http/proxy/index.html"),
        format!("{base}/pods/pf:8080/proxy/index.html"),
    ] {
        let mut s = tokio::net::TcpStream::connect(&at)
            .await
            .unwrap_or_else(|e| panic!("connect to kubectl proxy at {at}: {e}"));
        // kubectl proxy only accepts local Host headers; HTTP/1.0 keeps
        // the body unchunked.
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut resp = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut resp)).await;
        assert!(
            resp.contains(" 200 OK") && resp.ends_with("pf-ok\n"),
            "{path}: {resp}"
        );
    }
    let _ = child.kill().await;
    cp.kubectl(V, &["delete", "service", "pfsvc", "empty"])
        .await;
}

async fn exec_tty(cp: &ControlPlane, v: &str) -> String {
    let kubectl = k3rs_e2e::cluster::kubectl_path(v).expect("kubectl");
    let cmd = format!(
        "{} --kubeconfig {} exec -it web -- sh -c 'tty; echo tty-ok'",
        kubectl.display(),
        cp.kubeconfig.display()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("HOME", cp.dir.path())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl exec -it timed out")
    .expect("script");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn port_forward(cp: &ControlPlane, v: &str) {
    let mut child = cp
        .kubectl_command(
            v,
            &["port-forward", "pod/pf", ":8080", "--address", "127.0.0.1"],
        )
        .unwrap()
        .spawn()
        .unwrap();
    let line = read_until(&mut child, |l| l.starts_with("Forwarding from 127.0.0.1:"))
        .await
        .unwrap_or_else(|e| panic!("{v} port-forward: {e}"));
    let port = line
        .trim_start_matches("Forwarding from 127.0.0.1:")
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("{v}: connect to {port}: {e}"));
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut resp = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut resp)).await;
        if !(resp.contains("200 OK") && resp.contains("pf-ok")) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = child.kill().await;
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err).await;
            }
            panic!("{v}: port-forward answered {resp:?}; kubectl said: {err}");
        }
    }
    let _ = child.kill().await;
}
