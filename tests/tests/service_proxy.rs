//! The node agent's service proxy end to end: a real apiserver + datastore,
//! a private containerd with CNI, the agent in-process with its proxy on a
//! private nftables table, busybox `httpd` pods behind Services, and
//! clients both in a pod and on the host. Needs root, `nft` and the packages
//! scripts/setup.sh installs. The test creates the EndpointSlices itself
//! (no controller manager runs here), in upstream's format.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, Containerd};
use k3rs_e2e::{Backend, TestStore};
use k3rs_node_agent::proxy::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NODE: &str = "k3rs-px-e2e";
const POD_CIDR: &str = "10.244.84.0/24";
const TABLE: &str = "k3rs-px-e2e";
const NODE_PORT: u16 = 30884;
/// The LoadBalancer Services' port on the node address.
const LB_PORT: u16 = 18088;
const V: &str = "1.33";
/// A bridge of our own: the bridge plugin refuses to put a second subnet on
/// a `cni0` another test holds with its own.
const BRIDGE: &str = "k3rspx0";

/// Removes the test's nftables table and bridge however the test ends.
struct HostGuard;

impl Drop for HostGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", TABLE])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", BRIDGE])
            .stderr(std::process::Stdio::null())
            .status();
        remove_iptables_rules();
    }
}

/// The iptables fallback's chain prefix for our table name.
const IPT_PREFIX: &str = "K3RSP-";

fn iptables(table: &str, args: &[&str]) -> String {
    std::process::Command::new("iptables")
        .args(["-w", "5", "-t", table])
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Unhooks and deletes the chains the iptables scenario created.
fn remove_iptables_rules() {
    for table in ["nat", "filter"] {
        let rules = iptables(table, &["-S"]);
        for line in rules.lines() {
            let Some(rule) = line.strip_prefix("-A ") else {
                continue;
            };
            let mut words = rule.split_whitespace();
            let chain = words.next().unwrap_or_default();
            if !chain.starts_with(IPT_PREFIX) && rule.contains(IPT_PREFIX) {
                let mut args = vec!["-D", chain];
                args.extend(words);
                iptables(table, &args);
            }
        }
        let chains: Vec<&str> = rules
            .lines()
            .filter_map(|l| l.strip_prefix("-N "))
            .filter(|c| c.starts_with(IPT_PREFIX))
            .collect();
        for c in &chains {
            iptables(table, &["-F", c]);
        }
        for c in &chains {
            iptables(table, &["-X", c]);
        }
    }
}

fn agent_config(
    cp: &ControlPlane,
    ctd: &Containerd,
    dir: &Path,
    mode: Mode,
) -> k3rs_node_agent::Config {
    let mut c = k3rs_node_agent::Config::new(cp.kubeconfig.clone(), NODE.into());
    c.container_runtime_endpoint = ctd.endpoint();
    c.root_dir = dir.join("agent");
    c.pod_logs_dir = dir.join("pods-logs");
    c.pod_cidr = Some(POD_CIDR.into());
    c.cni_conf_dir = ctd.cni_conf_dir.clone();
    // Tests run side by side: each node gets its own bridge.
    c.cni_bridge = BRIDGE.into();
    // The kubelet API on a free loopback port: tests run side by side.
    c.bind_address = std::net::IpAddr::from([127, 0, 0, 1]);
    c.port = 0;
    c.healthz_addr = None;
    c.proxy = Some(k3rs_node_agent::proxy::ProxyConfig {
        mode,
        table: TABLE.into(),
    });
    c
}

async fn jsonpath(cp: &ControlPlane, what: &[&str], path: &str) -> String {
    cp.jsonpath(V, what, path).await
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
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
            let rules = std::process::Command::new("nft")
                .args(["list", "table", "ip", TABLE])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!("timed out waiting for {what}\nnft table:\n{rules}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One HTTP/1.0 GET; the body, or the error.
async fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let work = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        Ok(text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.trim().to_string())
            .unwrap_or(text))
    };
    tokio::time::timeout(Duration::from_secs(3), work)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}

/// Which backends answer `tries` requests to `addr`.
async fn backends(addr: SocketAddr, tries: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..tries {
        match http_get(addr).await {
            Ok(body) => seen.push(body),
            Err(e) => seen.push(format!("error: {e}")),
        }
    }
    seen
}

fn httpd_pod(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: {BUSYBOX_IMAGE}
    command: ["/bin/busybox", "sh", "-c", "mkdir -p /www && echo {name} > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]
"#
    )
}

fn slice(ips: &[&str]) -> String {
    slice_for("web", ips)
}

/// An EndpointSlice as the EndpointSlice controller writes it.
fn slice_for(svc: &str, ips: &[&str]) -> String {
    let mut eps = String::from("endpoints:\n");
    for ip in ips {
        eps.push_str(&format!(
            "- addresses: [\"{ip}\"]\n  conditions: {{ready: true, serving: true, terminating: false}}\n  nodeName: {NODE}\n"
        ));
    }
    if ips.is_empty() {
        eps = "endpoints: []\n".into();
    }
    format!(
        r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {svc}-abcde
  labels:
    kubernetes.io/service-name: {svc}
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
{eps}"#
    )
}

/// ServiceLB: the controller manager's `servicelb` controller gives a
/// LoadBalancer Service the node's address and the proxy answers there; a
/// second Service on the same port is kept off the node (the older one
/// keeps it), and a node opted out with the enablelb label carries none.
async fn load_balancer(cp: &ControlPlane, node_ip: IpAddr, ips: &[&str]) {
    let mut cm = k3rs_controller_manager::Config::for_kubeconfig(&cp.kubeconfig);
    cm.controllers = vec!["servicelb".into()];
    let cm = tokio::spawn(k3rs_controller_manager::run_until(
        cm,
        std::future::pending(),
    ));
    let lb = |name: &str| {
        format!(
            r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports:
  - name: http
    port: {LB_PORT}
    targetPort: 8080
"#
        )
    };
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&lb("lb")))
        .await;
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&slice_for("lb", ips)))
        .await;
    let ingress = "{.status.loadBalancer.ingress[*].ip}";
    wait_for(
        "lb gets the node's address",
        Duration::from_secs(30),
        || async {
            (jsonpath(cp, &["svc", "lb"], ingress).await == node_ip.to_string()).then_some(())
        },
    )
    .await;
    let addr = SocketAddr::new(node_ip, LB_PORT);
    wait_for(
        "the load balancer answers",
        Duration::from_secs(30),
        || async { http_get(addr).await.ok() },
    )
    .await;
    let seen = backends(addr, 10).await;
    assert!(
        seen.iter().all(|b| b == "web-a" || b == "web-b"),
        "{addr}: {seen:?}"
    );
    let wide = cp.kubectl(V, &["get", "svc", "lb"]).await;
    assert!(
        wide.contains(&node_ip.to_string()),
        "EXTERNAL-IP column: {wide}"
    );

    // The same port again: the newer Service gets no address, and says why.
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&lb("lb-late")))
        .await;
    wait_for(
        "lb-late's PortInUse event",
        Duration::from_secs(30),
        || async {
            let ev = cp
                .kubectl(
                    V,
                    &[
                        "get",
                        "events",
                        "--field-selector",
                        "involvedObject.name=lb-late",
                    ],
                )
                .await;
            ev.contains("PortInUse").then_some(())
        },
    )
    .await;
    assert_eq!(jsonpath(cp, &["svc", "lb-late"], ingress).await, "");
    // Deleting the holder hands the port over.
    cp.kubectl(V, &["delete", "svc", "lb"]).await;
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&slice_for("lb-late", ips)))
        .await;
    wait_for("lb-late takes over", Duration::from_secs(30), || async {
        (jsonpath(cp, &["svc", "lb-late"], ingress).await == node_ip.to_string()).then_some(())
    })
    .await;

    // Opting the only node out withdraws the address and the forwarding.
    let label = format!(
        "{}=false",
        k3rs_controller_manager::servicelb::ENABLE_LB_LABEL
    );
    cp.kubectl(V, &["label", "node", NODE, &label]).await;
    wait_for(
        "lb-late loses its address",
        Duration::from_secs(30),
        || async {
            jsonpath(cp, &["svc", "lb-late"], ingress)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    wait_for(
        "the load balancer port closes",
        Duration::from_secs(30),
        || async {
            matches!(
                TcpStream::connect(addr).await,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )
            .then_some(())
        },
    )
    .await;
    let unlabel = format!("{}-", k3rs_controller_manager::servicelb::ENABLE_LB_LABEL);
    cp.kubectl(V, &["label", "node", NODE, &unlabel]).await;
    cp.kubectl(V, &["delete", "svc", "lb-late"]).await;
    cm.abort();
}

async fn running_ip(cp: &ControlPlane, pod: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = jsonpath(cp, &["pod", pod], "{.status.phase} {.status.podIP}").await;
        let mut it = s.split_whitespace();
        if let (Some("Running"), Some(ip)) = (it.next(), it.next()) {
            return ip.to_string();
        }
        if Instant::now() > deadline {
            let pods = cp
                .kubectl_raw(V, &["get", "pods", "-o", "yaml"])
                .await
                .unwrap();
            let events = cp.kubectl_raw(V, &["get", "events", "-A"]).await.unwrap();
            panic!(
                "{pod} not Running\n{}\n{}",
                String::from_utf8_lossy(&pods.stdout),
                String::from_utf8_lossy(&events.stdout)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The same scenario through nftables and through the iptables-restore
/// fallback, one after the other (they share the bridge and the node port).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_proxy_routes_cluster_ips_and_node_ports() {
    scenario(Mode::Nftables).await;
    scenario(Mode::Iptables).await;
}

async fn scenario(mode: Mode) {
    eprintln!("service proxy scenario: {mode:?}");
    let _host = HostGuard;
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let ctd = Containerd::start().await.expect("containerd");
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("pods-logs");
    let agent = k3rs_node_agent::start(agent_config(&cp, &ctd, dir.path(), mode))
        .await
        .expect("start agent");
    wait_for("node Ready", Duration::from_secs(60), || async {
        let s = jsonpath(
            &cp,
            &["node", NODE],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        )
        .await;
        (s == "True").then_some(())
    })
    .await;
    cp.kubectl(V, &["create", "serviceaccount", "default"])
        .await;
    let ca = format!("--from-file=ca.crt={}", cp.api.ca_file.display());
    cp.kubectl(V, &["create", "configmap", "kube-root-ca.crt", &ca])
        .await;

    // Two web servers that answer with their own name.
    for name in ["web-a", "web-b"] {
        cp.kubectl_in(V, &["apply", "-f", "-"], Some(&httpd_pod(name)))
            .await;
    }
    let ip_a = running_ip(&cp, "web-a").await;
    let ip_b = running_ip(&cp, "web-b").await;

    let svc = format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {{app: web}}
  ports:
  - name: http
    port: 80
    targetPort: 8080
    nodePort: {NODE_PORT}
---
apiVersion: v1
kind: Service
metadata:
  name: sticky
spec:
  selector: {{app: web}}
  sessionAffinity: ClientIP
  ports:
  - name: http
    port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: self
spec:
  selector: {{app: loop}}
  ports:
  - name: http
    port: 80
---
apiVersion: v1
kind: Service
metadata:
  name: empty
spec:
  selector: {{app: nothing}}
  ports:
  - port: 80
"#
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&svc)).await;
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&slice(&[&ip_a, &ip_b])))
        .await;
    let cluster_ip: IpAddr = jsonpath(&cp, &["svc", "web"], "{.spec.clusterIP}")
        .await
        .parse()
        .expect("cluster IP");
    let empty_ip: IpAddr = jsonpath(&cp, &["svc", "empty"], "{.spec.clusterIP}")
        .await
        .parse()
        .expect("cluster IP");
    let svc_addr = SocketAddr::new(cluster_ip, 80);

    // From the host: the cluster IP reaches both backends.
    wait_for(
        "the cluster IP answers from the host",
        Duration::from_secs(30),
        || async { http_get(svc_addr).await.ok() },
    )
    .await;
    let seen = backends(svc_addr, 30).await;
    assert!(
        seen.iter().all(|b| b == "web-a" || b == "web-b"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|b| b == "web-a"),
        "web-a answered: {seen:?}"
    );
    assert!(
        seen.iter().any(|b| b == "web-b"),
        "web-b answered: {seen:?}"
    );

    // The node port answers on the node's address.
    let node_ip: IpAddr = jsonpath(
        &cp,
        &["node", NODE],
        "{.status.addresses[?(@.type==\"InternalIP\")].address}",
    )
    .await
    .parse()
    .expect("node InternalIP");
    let np = backends(SocketAddr::new(node_ip, NODE_PORT), 10).await;
    assert!(
        np.iter().all(|b| b == "web-a" || b == "web-b"),
        "node port {node_ip}:{NODE_PORT}: {np:?}"
    );

    if mode == Mode::Nftables {
        load_balancer(&cp, node_ip, &[&ip_a, &ip_b]).await;
        // A Service with two ports on one port/protocol is refused whole:
        // nothing is stored, nothing reaches the kernel.
        let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: twice}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: a, port: 81, targetPort: 8080}\n  - {name: b, port: 81, targetPort: 8080}\n";
        let out = cp
            .kubectl_with(V, &["apply", "-f", "-"], Some(bad), &[])
            .await
            .expect("kubectl runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("spec.ports[1]")
                && err.contains("Duplicate value"),
            "{err}"
        );
        let get = cp
            .kubectl_with(V, &["get", "svc", "twice"], None, &[])
            .await
            .expect("kubectl runs");
        assert!(!get.status.success(), "the refused Service was not stored");
    }

    // A Service without endpoints refuses at once instead of timing out.
    let started = Instant::now();
    let err = TcpStream::connect(SocketAddr::new(empty_ip, 80))
        .await
        .expect_err("no endpoints: refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // From a pod: the client fetches through the cluster IP in a loop
    // (busybox's static wget crashes; nc speaks HTTP/1.0 just as well).
    let client = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "i=0; while test $i -lt 30; do echo \"got=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {cluster_ip} 80 | tail -n 1)\"; i=$((i+1)); done; echo done; sleep 3600"]
"#
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&client)).await;
    running_ip(&cp, "client").await;
    let uid = jsonpath(&cp, &["pod", "client"], "{.metadata.uid}").await;
    let log = logs.join(format!("default_client_{uid}/app/0.log"));
    let text = wait_for(
        "the client pod's fetches",
        Duration::from_secs(60),
        || async {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            t.contains("stdout F done").then_some(t)
        },
    )
    .await;
    let got: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("got=").nth(1))
        .collect();
    assert_eq!(got.len(), 30, "{text}");
    assert!(got.iter().all(|g| *g == "web-a" || *g == "web-b"), "{text}");
    assert!(got.contains(&"web-a") && got.contains(&"web-b"), "{text}");

    // Session affinity: one client keeps its backend.
    cp.kubectl_in(
        V,
        &["apply", "-f", "-"],
        Some(&slice_for("sticky", &[&ip_a, &ip_b])),
    )
    .await;
    let sticky_ip: IpAddr = jsonpath(&cp, &["svc", "sticky"], "{.spec.clusterIP}")
        .await
        .parse()
        .expect("cluster IP");
    let sticky = SocketAddr::new(sticky_ip, 80);
    wait_for("sticky answers", Duration::from_secs(30), || async {
        http_get(sticky).await.ok()
    })
    .await;
    let seen = backends(sticky, 12).await;
    assert!(
        seen.iter().all(|b| *b == seen[0]) && (seen[0] == "web-a" || seen[0] == "web-b"),
        "{seen:?}"
    );

    // Hairpin: a pod reaches itself through its own Service.
    let self_ip = jsonpath(&cp, &["svc", "self"], "{.spec.clusterIP}").await;
    let looper = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: loop
  labels: {{app: loop}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo loop > /www/index.html && /bin/busybox httpd -p 8080 -h /www; i=0; while test $i -lt 120; do echo \"got=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {self_ip} 80 | tail -n 1)\"; sleep 0.5; i=$((i+1)); done; sleep 3600"]
"#
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&looper)).await;
    let loop_ip = running_ip(&cp, "loop").await;
    cp.kubectl_in(
        V,
        &["apply", "-f", "-"],
        Some(&slice_for("self", &[&loop_ip])),
    )
    .await;
    let uid = jsonpath(&cp, &["pod", "loop"], "{.metadata.uid}").await;
    let log = logs.join(format!("default_loop_{uid}/app/0.log"));
    wait_for(
        "the pod reaches itself",
        Duration::from_secs(60),
        || async {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            t.contains("got=loop").then_some(())
        },
    )
    .await;

    // An established connection survives an agent restart (the table is
    // replaced, conntrack is not touched): half a request before, the rest
    // after.
    let mut held = TcpStream::connect(svc_addr).await.expect("connect");
    held.write_all(b"GET / HTTP/1.0\r\n").await.unwrap();
    agent.stop().await;
    let agent = k3rs_node_agent::start(agent_config(&cp, &ctd, dir.path(), mode))
        .await
        .expect("restart agent");
    // Let the new agent list everything and replace the table.
    tokio::time::sleep(Duration::from_secs(5)).await;
    held.write_all(b"\r\n").await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), held.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.starts_with("HTTP/1.") && (text.contains("web-a") || text.contains("web-b")),
        "{text}"
    );

    // Removing an endpoint stops new traffic to it.
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&slice(&[&ip_a])))
        .await;
    wait_for(
        "web-b leaves the rotation",
        Duration::from_secs(30),
        || async {
            let seen = backends(svc_addr, 10).await;
            seen.iter().all(|b| b == "web-a").then_some(())
        },
    )
    .await;
    let seen = backends(svc_addr, 20).await;
    assert!(seen.iter().all(|b| b == "web-a"), "{seen:?}");

    // No endpoints left: refused from the host, through the node port too.
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&slice(&[])))
        .await;
    wait_for("web refuses", Duration::from_secs(30), || async {
        matches!(
            TcpStream::connect(svc_addr).await,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
        .then_some(())
    })
    .await;
    let err = TcpStream::connect(SocketAddr::new(node_ip, NODE_PORT))
        .await
        .expect_err("node port without endpoints");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    for pod in ["client", "loop", "web-a", "web-b"] {
        cp.kubectl(V, &["delete", "pod", pod, "--wait=true", "--timeout=60s"])
            .await;
    }
    agent.stop().await;
    drop(ctd);
    cp.shutdown();
    drop(store);
}
