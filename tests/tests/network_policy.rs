//! NetworkPolicy enforcement end to end: a real apiserver + datastore, a
//! private containerd with CNI, the node agent in-process enforcing
//! policies in its own nftables table, and busybox pods on one bridge in
//! two namespaces. Every assertion is real traffic: `kubectl exec` into a
//! client pod, `nc` to the server pod. Needs root, `nft`, br_netfilter and
//! the packages scripts/setup.sh installs.

use std::path::Path;
use std::time::{Duration, Instant};

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, Containerd};
use k3rs_e2e::{Backend, TestStore};

const NODE: &str = "k3rs-np-e2e";
const POD_CIDR: &str = "10.244.120.0/24";
const BRIDGE: &str = "k3rsnp120";
const TABLE: &str = "k3rs-netpol-e2e";
const V: &str = "1.32";
/// The server's namespace (and client-a's, client-b's); client-c is in NS_B.
const NS_A: &str = "np-a";
const NS_B: &str = "np-b";

/// Removes the test's nftables table and bridge however the test ends.
struct HostGuard;

impl Drop for HostGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", TABLE])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", BRIDGE])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn nft_table() -> Option<String> {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn agent_config(
    cp: &ControlPlane,
    ctd: &Containerd,
    dir: &Path,
    enforce: bool,
) -> k3rs_node_agent::Config {
    // kubectl exec goes apiserver → kubelet API at the node's address.
    let mut c = ctd.served_agent_config(cp, NODE, POD_CIDR, BRIDGE, dir);
    c.network_policy = Some(k3rs_node_agent::netpol::NetpolConfig {
        enabled: enforce,
        table: TABLE.into(),
    });
    c
}

/// The server answers `server-ok` on 80 (named `http`), 8081 (named
/// `alt`) and 9001–9003; its readiness probe is an httpGet from the node
/// every second that one failure turns unready.
fn server_pod() -> String {
    let mut script = String::from("mkdir -p /www && echo server-ok > /www/index.html");
    for port in [8081, 9001, 9002, 9003] {
        script.push_str(&format!(" && /bin/busybox httpd -p {port} -h /www"));
    }
    script.push_str(" && exec /bin/busybox httpd -f -p 80 -h /www");
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: server
  namespace: {NS_A}
  labels: {{app: web}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: {BUSYBOX_IMAGE}
    command: ["/bin/busybox", "sh", "-c", "{script}"]
    ports:
    - {{name: http, containerPort: 80}}
    - {{name: alt, containerPort: 8081}}
    readinessProbe:
      httpGet: {{path: /, port: http}}
      periodSeconds: 1
      failureThreshold: 1
"#
    )
}

fn client_pod(ns: &str, name: &str, role: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{role: {role}}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sleep", "3600"]
"#
    )
}

/// A client pod, by namespace and name.
#[derive(Clone, Copy, Debug)]
struct Client(&'static str, &'static str);

const CLIENT_A: Client = Client(NS_A, "client-a");
const CLIENT_B: Client = Client(NS_A, "client-b");
const CLIENT_C: Client = Client(NS_B, "client-c");

/// Whether `from` gets an HTTP answer from `ip:port` (the connection
/// attempt gives up after 2 s).
async fn reaches(cp: &ControlPlane, from: Client, ip: &str, port: u16) -> bool {
    let cmd = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} {port}");
    let args = ["exec", "-n", from.0, from.1, "--", "sh", "-c", &cmd];
    match cp.kubectl_raw(V, &args).await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).contains("server-ok"),
        Err(_) => false,
    }
}

/// Waits until each `(client, port)` reaches the server exactly when
/// `want` says so, checking them side by side; then checks once more so a
/// passing state is not a passing moment.
async fn expect(cp: &ControlPlane, server: &str, step: &str, cases: &[(Client, u16, bool)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = futures::future::join_all(
            cases
                .iter()
                .map(|(c, port, _)| reaches(cp, *c, server, *port)),
        )
        .await;
        let wrong: Vec<String> = cases
            .iter()
            .zip(&got)
            .filter(|((_, _, want), got)| want != *got)
            .map(|((c, port, want), _)| format!("{}/{} -> :{port} want {want}", c.0, c.1))
            .collect();
        if wrong.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "{step}: {wrong:?}\nnft table:\n{}",
                nft_table().unwrap_or_else(|| "(none)".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let got = futures::future::join_all(
        cases
            .iter()
            .map(|(c, port, _)| reaches(cp, *c, server, *port)),
    )
    .await;
    for ((c, port, want), got) in cases.iter().zip(got) {
        assert_eq!(got, *want, "{step} (second look): {c:?} -> :{port}");
    }
}

async fn apply(cp: &ControlPlane, yaml: &str) {
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(yaml)).await;
}

async fn delete_policy(cp: &ControlPlane, ns: &str, name: &str) {
    cp.kubectl(V, &["delete", "networkpolicy", "-n", ns, name])
        .await;
}

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
    )
}

async fn ready(cp: &ControlPlane, ns: &str, pod: &str) -> String {
    cp.jsonpath(
        V,
        &["pod", "-n", ns, pod],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_policies_filter_pod_traffic() {
    let _host = HostGuard;
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let ctd = Containerd::start().await.expect("containerd");
    let dir = tempfile::tempdir().unwrap();
    let agent = k3rs_node_agent::start(agent_config(&cp, &ctd, dir.path(), true))
        .await
        .expect("start agent");
    let no_extra = String::new;
    cp.wait_for("node Ready", Duration::from_secs(60), no_extra, || async {
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
    let ca = format!("--from-file=ca.crt={}", cp.api.ca_file.display());
    for (ns, team) in [(NS_A, "a"), (NS_B, "b")] {
        cp.kubectl(V, &["create", "namespace", ns]).await;
        cp.kubectl(V, &["label", "namespace", ns, &format!("team={team}")])
            .await;
        // What the controller manager would publish (none runs here).
        cp.kubectl(V, &["create", "serviceaccount", "default", "-n", ns])
            .await;
        cp.kubectl(
            V,
            &["create", "configmap", "kube-root-ca.crt", "-n", ns, &ca],
        )
        .await;
    }
    apply(&cp, &server_pod()).await;
    apply(&cp, &client_pod(NS_A, "client-a", "client")).await;
    apply(&cp, &client_pod(NS_A, "client-b", "other")).await;
    apply(&cp, &client_pod(NS_B, "client-c", "client")).await;
    for (ns, pod) in [
        (NS_A, "server"),
        (NS_A, "client-a"),
        (NS_A, "client-b"),
        (NS_B, "client-c"),
    ] {
        cp.wait_for(
            &format!("{pod} Ready"),
            Duration::from_secs(90),
            no_extra,
            || async { (ready(&cp, ns, pod).await == "True").then_some(()) },
        )
        .await;
    }
    let server = cp
        .jsonpath(V, &["pod", "-n", NS_A, "server"], "{.status.podIP}")
        .await;
    let client_a_ip = cp
        .jsonpath(V, &["pod", "-n", NS_A, "client-a"], "{.status.podIP}")
        .await;
    assert!(server.starts_with("10.244.120."), "{server}");
    let table = nft_table().expect("the agent created its table");
    assert!(table.contains("hook forward"), "{table}");

    // 1. No policy: everyone gets through.
    expect(
        &cp,
        &server,
        "no policy",
        &[
            (CLIENT_A, 80, true),
            (CLIENT_B, 80, true),
            (CLIENT_C, 80, true),
        ],
    )
    .await;

    // 2. Default-deny ingress on the server: nobody, but the node's
    // readiness probe still passes.
    let deny = policy(
        NS_A,
        "deny-web",
        "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n",
    );
    apply(&cp, &deny).await;
    expect(
        &cp,
        &server,
        "default deny",
        &[
            (CLIENT_A, 80, false),
            (CLIENT_B, 80, false),
            (CLIENT_C, 80, false),
        ],
    )
    .await;
    // Several probe periods (1 s, one failure flips it) with traffic denied.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(ready(&cp, NS_A, "server").await, "True", "probes pass");

    // 3. podSelector role=client on port 80: client-a only (client-c has
    // the label, but in another namespace); relabelling client-b lets it in.
    let from_clients = policy(
        NS_A,
        "from-clients",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {role: client}}\n    ports:\n    - {port: 80}\n",
    );
    apply(&cp, &from_clients).await;
    expect(
        &cp,
        &server,
        "from role=client",
        &[
            (CLIENT_A, 80, true),
            (CLIENT_A, 8081, false),
            (CLIENT_B, 80, false),
            (CLIENT_C, 80, false),
        ],
    )
    .await;
    cp.kubectl(
        V,
        &[
            "label",
            "pod",
            "-n",
            NS_A,
            "client-b",
            "role=client",
            "--overwrite",
        ],
    )
    .await;
    let relabelled = Instant::now();
    expect(&cp, &server, "client-b relabelled", &[(CLIENT_B, 80, true)]).await;
    assert!(
        relabelled.elapsed() < Duration::from_secs(10),
        "{:?}",
        relabelled.elapsed()
    );
    cp.kubectl(
        V,
        &[
            "label",
            "pod",
            "-n",
            NS_A,
            "client-b",
            "role=other",
            "--overwrite",
        ],
    )
    .await;
    expect(&cp, &server, "client-b back", &[(CLIENT_B, 80, false)]).await;
    delete_policy(&cp, NS_A, "from-clients").await;

    // 4a. namespaceSelector: every pod of namespace team=b.
    let from_b = policy(
        NS_A,
        "from-team-b",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: b}}\n    ports:\n    - {port: 80, protocol: TCP}\n",
    );
    apply(&cp, &from_b).await;
    expect(
        &cp,
        &server,
        "namespaceSelector",
        &[
            (CLIENT_A, 80, false),
            (CLIENT_B, 80, false),
            (CLIENT_C, 80, true),
        ],
    )
    .await;
    delete_policy(&cp, NS_A, "from-team-b").await;

    // 4b. ipBlock with except: the pod range but client-a.
    let block = policy(
        NS_A,
        "from-block",
        &format!(
            "  podSelector: {{matchLabels: {{app: web}}}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: {POD_CIDR}, except: [{client_a_ip}/32]}}\n"
        ),
    );
    apply(&cp, &block).await;
    expect(
        &cp,
        &server,
        "ipBlock with except",
        &[
            (CLIENT_A, 80, false),
            (CLIENT_B, 80, true),
            (CLIENT_C, 8081, true),
        ],
    )
    .await;
    delete_policy(&cp, NS_A, "from-block").await;

    // 4c. A named port, resolved against the server's container ports.
    let named = policy(
        NS_A,
        "named-port",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - podSelector: {}\n    ports:\n    - {port: alt}\n",
    );
    apply(&cp, &named).await;
    expect(
        &cp,
        &server,
        "named port",
        &[
            (CLIENT_A, 8081, true),
            (CLIENT_A, 80, false),
            (CLIENT_C, 8081, false),
        ],
    )
    .await;
    delete_policy(&cp, NS_A, "named-port").await;

    // 4d. A port range (endPort), from every namespace.
    let range = policy(
        NS_A,
        "port-range",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n    ports:\n    - {port: 9001, endPort: 9002}\n",
    );
    apply(&cp, &range).await;
    expect(
        &cp,
        &server,
        "endPort",
        &[
            (CLIENT_C, 9001, true),
            (CLIENT_C, 9002, true),
            (CLIENT_C, 9003, false),
            (CLIENT_C, 80, false),
        ],
    )
    .await;
    delete_policy(&cp, NS_A, "port-range").await;
    delete_policy(&cp, NS_A, "deny-web").await;

    // 5. Egress: default deny on client-a blocks its outbound traffic; a
    // rule to the server's port 80 lets exactly that through.
    let egress_deny = policy(
        NS_A,
        "client-egress-deny",
        "  podSelector: {matchLabels: {role: client}}\n  policyTypes: [Egress]\n",
    );
    apply(&cp, &egress_deny).await;
    expect(
        &cp,
        &server,
        "egress deny",
        &[
            (CLIENT_A, 80, false),
            (CLIENT_B, 80, true),
            (CLIENT_C, 80, true),
        ],
    )
    .await;
    let egress_web = policy(
        NS_A,
        "client-egress-web",
        "  podSelector: {matchLabels: {role: client}}\n  egress:\n  - to:\n    - podSelector: {matchLabels: {app: web}}\n    ports:\n    - {port: 80}\n",
    );
    apply(&cp, &egress_web).await;
    expect(
        &cp,
        &server,
        "egress to web:80",
        &[(CLIENT_A, 80, true), (CLIENT_A, 8081, false)],
    )
    .await;

    // Both directions at once: client-a's egress rule lets the packet on to
    // the server's ingress check, which decides.
    apply(&cp, &deny).await;
    expect(
        &cp,
        &server,
        "egress allowed, ingress denied",
        &[(CLIENT_A, 80, false)],
    )
    .await;
    apply(&cp, &from_clients).await;
    expect(
        &cp,
        &server,
        "egress and ingress allowed",
        &[(CLIENT_A, 80, true), (CLIENT_B, 80, false)],
    )
    .await;
    delete_policy(&cp, NS_A, "from-clients").await;
    delete_policy(&cp, NS_A, "deny-web").await;

    // 6. Deleting the policies restores full access.
    delete_policy(&cp, NS_A, "client-egress-deny").await;
    delete_policy(&cp, NS_A, "client-egress-web").await;
    expect(
        &cp,
        &server,
        "no policies left",
        &[
            (CLIENT_A, 80, true),
            (CLIENT_A, 8081, true),
            (CLIENT_B, 80, true),
            (CLIENT_C, 9003, true),
        ],
    )
    .await;

    // An agent started with --disable-network-policy removes the table and
    // enforces nothing.
    agent.stop().await;
    assert!(nft_table().is_some(), "the table outlives the agent");
    let agent = k3rs_node_agent::start(agent_config(&cp, &ctd, dir.path(), false))
        .await
        .expect("restart agent");
    cp.wait_for(
        "the table removed",
        Duration::from_secs(30),
        no_extra,
        || async { nft_table().is_none().then_some(()) },
    )
    .await;
    apply(&cp, &deny).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    expect(&cp, &server, "disabled", &[(CLIENT_A, 80, true)]).await;
    assert!(nft_table().is_none());

    for (ns, pod) in [
        (NS_A, "server"),
        (NS_A, "client-a"),
        (NS_A, "client-b"),
        (NS_B, "client-c"),
    ] {
        cp.kubectl(
            V,
            &[
                "delete",
                "pod",
                "-n",
                ns,
                pod,
                "--wait=true",
                "--timeout=60s",
            ],
        )
        .await;
    }
    agent.stop().await;
    drop(ctd);
    cp.shutdown();
    drop(store);
}
