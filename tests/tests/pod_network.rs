//! The multi-node pod network end to end: two "hosts" (network namespaces
//! on a bridge in the root namespace), each with its own containerd and the
//! real `k3rs-node-agent` binary, a control plane (apiserver + controller
//! manager with node IPAM) in the root namespace. Per backend (host-gw,
//! vxlan): a pod on host A reaches a pod on host B by pod IP and B sees A's
//! pod IP (no NAT); egress to outside the cluster CIDR is masqueraded; a
//! ClusterIP Service answers from pods on both hosts; the Node annotations,
//! routes and VXLAN entries exist; deleting a Node removes its entries on
//! the other host. Needs root, containerd, the CNI plugins, `nft`,
//! `nsenter` and the kernel's vxlan module.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, Containerd};
use k3rs_e2e::netns::{Host, Lan, Process};
use k3rs_e2e::{Backend, TestStore};

const V: &str = "1.33";
const WAIT: Duration = Duration::from_secs(120);
/// The controller manager's node-monitor grace period here: twice the
/// agents' 10 s lease renewal, so a live node never looks lost.
const NODE_GRACE: Duration = Duration::from_secs(20);

/// Per-backend names and ranges, so both tests run side by side.
struct Net {
    backend: &'static str,
    /// LAN bridge and netns prefix (≤ 12 chars).
    lan: &'static str,
    /// The LAN's gateway (root namespace side); each test has half of
    /// 172.31.100.0/24.
    gateway: [u8; 4],
    cluster_cidr: &'static str,
    /// The pod bridge inside each host.
    pod_bridge: &'static str,
}

const HOST_GW: Net = Net {
    backend: "host-gw",
    lan: "k3rsnhg",
    gateway: [172, 31, 100, 1],
    cluster_cidr: "10.245.0.0/17",
    pod_bridge: "k3rsnbr0",
};

const VXLAN: Net = Net {
    backend: "vxlan",
    lan: "k3rsnvx",
    gateway: [172, 31, 100, 129],
    cluster_cidr: "10.245.128.0/17",
    pod_bridge: "k3rsnbr1",
};

/// One node: its host, containerd and agent process.
struct Node {
    name: String,
    host: Host,
    // Dropped before containerd (declaration order): the agent first.
    agent: Process,
    /// The agent's command line, to restart it.
    program: String,
    args: Vec<String>,
    ctd: Containerd,
}

impl Node {
    fn restart_agent(&self) {
        let mut cmd = self.host.command(&self.program);
        cmd.args(&self.args);
        self.agent.restart(cmd).expect("restart the agent");
    }

    fn logs(&self) -> String {
        format!(
            "--- agent {} log:\n{}\n--- containerd log (tail):\n{}\n--- routes:\n{}\n--- fdb:\n{}\n--- nft:\n{}",
            self.name,
            tail(&self.agent.log(), 80),
            tail(&self.ctd.log(), 40),
            self.host.stdout("ip", &["route"]),
            self.host
                .stdout("bridge", &["fdb", "show", "dev", "flannel.1"]),
            self.host.stdout("nft", &["list", "ruleset"]),
        )
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn start_node(
    cp: &ControlPlane,
    net: &Net,
    host: &Host,
    name: &str,
    dir: &Path,
    bin: &Path,
    gateway: IpAddr,
) -> Node {
    let ctd = Containerd::start_in_netns(&host.netns)
        .await
        .expect("containerd in the host");
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap();
    let kubeconfig = root.join("kubeconfig");
    cp.kubeconfig_at(gateway, &kubeconfig).unwrap();
    // A serving cert from the cluster CA, so `kubectl logs/exec` through
    // the apiserver trust this kubelet.
    let (crt, key) = cp
        .issue_kubelet_serving(name, IpAddr::V4(host.ip), &root.join("pki"))
        .unwrap();
    let args: Vec<String> = [
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--node-name",
        name,
        "--node-ip",
        &host.ip.to_string(),
        "--bind-address",
        &host.ip.to_string(),
        "--container-runtime-endpoint",
        &ctd.endpoint(),
        "--root-dir",
        &root.join("agent").display().to_string(),
        "--pod-logs-dir",
        &root.join("pod-logs").display().to_string(),
        "--cni-conf-dir",
        &ctd.cni_conf_dir.display().to_string(),
        "--cni-bridge",
        net.pod_bridge,
        "--tls-cert-file",
        &crt.display().to_string(),
        "--tls-private-key-file",
        &key.display().to_string(),
        "--client-ca-file",
        &cp.api.ca_file.display().to_string(),
        "--flannel-backend",
        net.backend,
        "--cluster-cidr",
        net.cluster_cidr,
        "--healthz-port",
        "0",
        "--disable-cluster-dns",
        "-v",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let program = bin.join("k3rs-node-agent").display().to_string();
    let mut cmd = host.command(&program);
    cmd.args(&args);
    let agent = Process::spawn(name, cmd, &root.join("agent.log")).expect("agent");
    Node {
        name: name.to_string(),
        host: host.clone(),
        agent,
        program,
        args,
        ctd,
    }
}

fn pod(name: &str, node: &str, label: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {label}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX_IMAGE}
    command: ["/bin/busybox", "sh", "-c", {script:?}]
"#
    )
}

/// `kubectl exec` a shell line in a pod; stdout, or None when it failed.
async fn exec(cp: &ControlPlane, pod: &str, line: &str) -> Option<String> {
    let out = cp
        .kubectl_raw(V, &["exec", pod, "--", "/bin/busybox", "sh", "-c", line])
        .await
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "exec in {pod}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn http_get(ip: &str, port: u16) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}")
}

async fn scenario(net: Net) {
    let bin = k3rs_e2e::supervisor::binaries().expect("built binaries");
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let lan = Lan::new(net.lan, Ipv4Addr::from(net.gateway), 25, 2).expect("LAN");
    let gateway = IpAddr::V4(lan.gateway);
    let cp = ControlPlane::start_reachable(store.endpoint(), gateway)
        .await
        .expect("apiserver");
    let mut cm = k3rs_controller_manager::Config::for_kubeconfig(&cp.kubeconfig);
    cm.cluster_cidr = Some(net.cluster_cidr.into());
    cm.node_cidr_mask_size = 24;
    cm.health_addr = None;
    cm.leader_elect = false;
    cm.node_monitor_grace_period = NODE_GRACE;
    cm.node_monitor_period = Duration::from_secs(1);
    let _cm = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = k3rs_controller_manager::run_until(cm, std::future::pending()).await {
            eprintln!("controller manager: {e}");
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let (a_name, b_name) = (format!("{}-a", net.lan), format!("{}-b", net.lan));
    let a = start_node(&cp, &net, &lan.hosts[0], &a_name, dir.path(), &bin, gateway).await;
    let b = start_node(&cp, &net, &lan.hosts[1], &b_name, dir.path(), &bin, gateway).await;
    let logs = || format!("{}\n{}", a.logs(), b.logs());

    step(&net, "agents started; waiting for Ready nodes");
    // Both nodes Ready with a pod range each.
    let mut cidrs = Vec::new();
    for n in [&a_name, &b_name] {
        let cidr = cp
            .wait_for(&format!("{n} Ready with a podCIDR"), WAIT, logs, || async {
                let ready = cp
                    .jsonpath(
                        V,
                        &["node", n],
                        "{.status.conditions[?(@.type=='Ready')].status}",
                    )
                    .await;
                let cidr = cp.jsonpath(V, &["node", n], "{.spec.podCIDR}").await;
                (ready == "True" && !cidr.is_empty()).then_some(cidr)
            })
            .await;
        cidrs.push(cidr);
    }
    let (a_cidr, b_cidr) = (cidrs[0].clone(), cidrs[1].clone());
    assert_ne!(a_cidr, b_cidr);

    step(&net, "nodes ready");
    // The annotations flannel's tools read.
    let mut macs = Vec::new();
    for (n, node) in [(&a_name, &a), (&b_name, &b)] {
        let ann = cp
            .wait_for(&format!("{n} annotations"), WAIT, logs, || async {
                let ann = cp
                    .jsonpath(V, &["node", n], "{.metadata.annotations}")
                    .await;
                ann.contains("flannel.alpha.coreos.com/backend-type")
                    .then_some(ann)
            })
            .await;
        let ann: serde_json::Value = serde_json::from_str(&ann).expect("annotations JSON");
        let get = |k: &str| {
            ann[format!("flannel.alpha.coreos.com/{k}")]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(get("public-ip"), node.host.ip.to_string(), "{ann}");
        assert_eq!(get("backend-type"), net.backend, "{ann}");
        assert_eq!(get("kube-subnet-manager"), "true", "{ann}");
        if net.backend == "vxlan" {
            let data: serde_json::Value =
                serde_json::from_str(&get("backend-data")).expect("backend-data JSON");
            assert_eq!(data["VNI"], 1, "{data}");
            let mac = data["VtepMAC"].as_str().unwrap_or_default().to_string();
            let link = node
                .host
                .stdout("ip", &["-j", "link", "show", "dev", "flannel.1"]);
            assert!(
                !mac.is_empty() && link.contains(&mac),
                "VtepMAC {mac} is flannel.1's: {link}"
            );
            macs.push(mac);
        }
    }

    step(&net, "annotations checked");
    // Each host routes the other's pod range.
    let expect_route = |peer_cidr: &str, peer_ip: Ipv4Addr| -> String {
        if net.backend == "vxlan" {
            let gw = peer_cidr.split('/').next().unwrap_or_default().to_string();
            format!("{peer_cidr} via {gw} dev flannel.1")
        } else {
            format!("{peer_cidr} via {peer_ip} dev eth0")
        }
    };
    for (node, peer_cidr, peer_ip) in [(&a, &b_cidr, b.host.ip), (&b, &a_cidr, a.host.ip)] {
        let want = expect_route(peer_cidr, peer_ip);
        cp.wait_for(
            &format!("route {want} on {}", node.name),
            WAIT,
            logs,
            || async {
                node.host
                    .stdout("ip", &["route", "show", "proto", "108"])
                    .contains(&want)
                    .then_some(())
            },
        )
        .await;
    }
    if net.backend == "vxlan" {
        // A's FDB sends B's VTEP MAC to B's address, and ARP resolves B's
        // VTEP address to it.
        let fdb = a
            .host
            .stdout("bridge", &["fdb", "show", "dev", "flannel.1"]);
        assert!(
            fdb.contains(&format!("{} dst {}", macs[1], b.host.ip)),
            "{fdb}"
        );
        let neigh = a.host.stdout("ip", &["neigh", "show", "dev", "flannel.1"]);
        let b_gw = b_cidr.split('/').next().unwrap_or_default();
        assert!(
            neigh.contains(&format!("{b_gw} lladdr {}", macs[1])),
            "{neigh}"
        );
    }

    step(&net, "routes present");
    // Pods: an httpd on B, clients on A and B.
    let web = pod(
        "web",
        &b_name,
        "web",
        "mkdir -p /www && echo hello-from-b > /www/index.html && exec /bin/busybox httpd -f -vv -p 80 -h /www",
    );
    let client_a = pod("client-a", &a_name, "client", "exec sleep 100000");
    let client_b = pod("client-b", &b_name, "client", "exec sleep 100000");
    for p in [&web, &client_a, &client_b] {
        cp.kubectl_in(V, &["apply", "-f", "-"], Some(p)).await;
    }
    let mut ips = Vec::new();
    for p in ["web", "client-a", "client-b"] {
        let ip = cp
            .wait_for(&format!("pod {p} running"), WAIT, logs, || async {
                let phase = cp.jsonpath(V, &["pod", p], "{.status.phase}").await;
                let ip = cp.jsonpath(V, &["pod", p], "{.status.podIP}").await;
                (phase == "Running" && !ip.is_empty()).then_some(ip)
            })
            .await;
        ips.push(ip);
    }
    let (web_ip, a_pod_ip) = (ips[0].clone(), ips[1].clone());
    assert!(
        net_contains(&b_cidr, &web_ip),
        "web {web_ip} in B's {b_cidr}"
    );
    assert!(
        net_contains(&a_cidr, &a_pod_ip),
        "client-a {a_pod_ip} in A's {a_cidr}"
    );

    step(&net, "pods running");
    // Pod on A → pod on B by pod IP.
    cp.wait_for("client-a reaches web across nodes", WAIT, logs, || async {
        exec(&cp, "client-a", &http_get(&web_ip, 80))
            .await
            .filter(|o| o.contains("hello-from-b"))
    })
    .await;
    // B saw A's pod address, not A's node address: no NAT between pods.
    let web_log = cp
        .wait_for("web logged client-a's address", WAIT, logs, || async {
            let l = cp.kubectl_raw(V, &["logs", "web"]).await.ok()?;
            let l = String::from_utf8_lossy(&l.stdout).into_owned();
            l.contains(&a_pod_ip).then_some(l)
        })
        .await;
    assert!(!web_log.contains(&a.host.ip.to_string()), "{web_log}");

    step(&net, "pod to pod across nodes without NAT");
    // Egress to outside the cluster CIDR leaves with A's node address.
    let listener = tokio::net::TcpListener::bind((lan.gateway, 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(60), listener.accept())
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|(_, peer)| peer.ip())
    });
    let send = format!("echo hi | nc -w 3 {} {port}", lan.gateway);
    cp.wait_for(
        "client-a connects to the LAN gateway",
        WAIT,
        logs,
        || async { exec(&cp, "client-a", &send).await.map(|_| ()) },
    )
    .await;
    let peer = accept.await.unwrap();
    assert_eq!(
        peer,
        Some(IpAddr::V4(a.host.ip)),
        "pod egress is masqueraded to the node address"
    );

    step(&net, "egress masqueraded");
    // A NodePort Service over the pod on B: its ClusterIP from a pod on
    // each host, its node port on every host's address.
    cp.kubectl_in(
        V,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 80}]\n"),
    )
    .await;
    let cluster_ip = cp.jsonpath(V, &["svc", "web"], "{.spec.clusterIP}").await;
    assert!(!cluster_ip.is_empty());
    for client in ["client-a", "client-b"] {
        cp.wait_for(
            &format!("{client} reaches the ClusterIP"),
            WAIT,
            logs,
            || async {
                exec(&cp, client, &http_get(&cluster_ip, 80))
                    .await
                    .filter(|o| o.contains("hello-from-b"))
            },
        )
        .await;
    }

    // And from each host itself (host-originated traffic to a ClusterIP).
    for node in [&a, &b] {
        let get =
            format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 3 {cluster_ip} 80");
        cp.wait_for(
            &format!("host {} reaches the ClusterIP", node.host.ip),
            WAIT,
            logs,
            || async {
                let out = node.host.stdout("/bin/busybox", &["sh", "-c", &get]);
                out.contains("hello-from-b").then_some(())
            },
        )
        .await;
    }

    let node_port: u16 = cp
        .jsonpath(V, &["svc", "web"], "{.spec.ports[0].nodePort}")
        .await
        .parse()
        .expect("a node port");
    for node in [&a, &b] {
        let addr = std::net::SocketAddr::from((node.host.ip, node_port));
        cp.wait_for(&format!("NodePort {addr} answers"), WAIT, logs, || async {
            http_from_here(addr)
                .await
                .filter(|o| o.contains("hello-from-b"))
        })
        .await;
    }
    step(
        &net,
        "ClusterIP reachable from both hosts, NodePort on both",
    );
    // ServiceLB: a LoadBalancer Service gets both hosts' addresses and is
    // answered on each of them.
    cp.kubectl_in(
        V,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Service\nmetadata: {name: web-lb}\nspec:\n  type: LoadBalancer\n  selector: {app: web}\n  ports: [{port: 8080, targetPort: 80}]\n"),
    )
    .await;
    let mut want = vec![a.host.ip.to_string(), b.host.ip.to_string()];
    want.sort();
    cp.wait_for("web-lb has both hosts' addresses", WAIT, logs, || async {
        let got = cp
            .jsonpath(
                V,
                &["svc", "web-lb"],
                "{.status.loadBalancer.ingress[*].ip}",
            )
            .await;
        let mut got: Vec<String> = got.split_whitespace().map(String::from).collect();
        got.sort();
        (got == want).then_some(())
    })
    .await;
    for node in [&a, &b] {
        let addr = std::net::SocketAddr::from((node.host.ip, 8080));
        cp.wait_for(
            &format!("load balancer {addr} answers"),
            WAIT,
            logs,
            || async {
                http_from_here(addr)
                    .await
                    .filter(|o| o.contains("hello-from-b"))
            },
        )
        .await;
    }
    step(&net, "LoadBalancer answered on every host");
    // A restarted agent adopts what is there: same VTEP MAC, one route and
    // one FDB entry per peer, traffic still flows.
    let ann_before = cp
        .jsonpath(V, &["node", &a_name], "{.metadata.annotations}")
        .await;
    let routes_before = a.host.stdout("ip", &["route", "show", "proto", "108"]);
    let fdb_before = a
        .host
        .stdout("bridge", &["fdb", "show", "dev", "flannel.1"]);
    let seen = a.agent.log().len();
    a.restart_agent();
    // Its first reconcile (after the full Node list) has run.
    cp.wait_for("A's restarted agent reconciled", WAIT, logs, || async {
        let log = a.agent.log();
        log.get(seen..)
            .is_some_and(|l| l.contains("pod network reconciled"))
            .then_some(())
    })
    .await;
    assert_eq!(
        a.host.stdout("ip", &["route", "show", "proto", "108"]),
        routes_before
    );
    assert_eq!(
        a.host
            .stdout("bridge", &["fdb", "show", "dev", "flannel.1"]),
        fdb_before
    );
    assert_eq!(
        cp.jsonpath(V, &["node", &a_name], "{.metadata.annotations}")
            .await,
        ann_before,
        "annotations (VtepMAC) survive a restart"
    );
    cp.wait_for(
        "client-a reaches web after A's agent restarted",
        WAIT,
        logs,
        || async {
            exec(&cp, "client-a", &http_get(&web_ip, 80))
                .await
                .filter(|o| o.contains("hello-from-b"))
        },
    )
    .await;
    step(&net, "restart converged");
    // Node B goes away: its agent stops. Once its lease is older than the
    // node-monitor grace period the node lifecycle controller marks its
    // pods not ready, and web (on B) leaves the Service's endpoints.
    b.agent.stop();
    let stopped = std::time::Instant::now();
    cp.wait_for("web's endpoint turns not ready", WAIT, logs, || async {
        let ready = cp
            .jsonpath(
                V,
                &["endpointslices", "-l", "kubernetes.io/service-name=web"],
                "{.items[*].endpoints[*].conditions.ready}",
            )
            .await;
        (ready == "false").then_some(())
    })
    .await;
    let took = stopped.elapsed();
    assert!(
        took < NODE_GRACE + Duration::from_secs(15),
        "endpoints removed {took:?} after the agent stopped (grace {NODE_GRACE:?})"
    );
    eprintln!("pod_network: endpoints of the lost node removed after {took:?}");
    cp.wait_for(
        "the ClusterIP no longer answers from A",
        WAIT,
        logs,
        || async {
            exec(&cp, "client-a", &http_get(&cluster_ip, 80))
                .await
                .is_none_or(|o| !o.contains("hello-from-b"))
                .then_some(())
        },
    )
    .await;
    // Then the Node is deleted; A drops every entry it had for B.
    cp.kubectl(V, &["delete", "node", &b_name, "--wait=false"])
        .await;
    let b_ip = b.host.ip.to_string();
    let gone = || {
        let routes = a.host.stdout("ip", &["route", "show", "proto", "108"]);
        let fdb = a
            .host
            .stdout("bridge", &["fdb", "show", "dev", "flannel.1"]);
        let neigh = a.host.stdout("ip", &["neigh", "show", "dev", "flannel.1"]);
        let b_gw = b_cidr.split('/').next().unwrap_or_default();
        !routes.contains(&b_cidr) && !fdb.contains(&b_ip) && !neigh.contains(&format!("{b_gw} "))
    };
    cp.wait_for(
        "B's route and VXLAN entries removed on A",
        WAIT,
        logs,
        || async { gone().then_some(()) },
    )
    .await;
    assert!(a.agent.log().contains("pod network routes updated"));
    drop(a);
    drop(b);
}

/// One HTTP/1.0 GET from the test (the LAN's gateway side); the response.
async fn http_from_here(addr: std::net::SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let mut c = tokio::net::TcpStream::connect(addr).await?;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
        let mut out = String::new();
        c.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .ok()?
        .ok()
}

/// Progress on stderr (nextest shows it for a failed or slow test).
fn step(net: &Net, what: &str) {
    eprintln!("[pod_network {}] {what}", net.backend);
}

fn net_contains(cidr: &str, ip: &str) -> bool {
    let (Some((net, len)), Ok(ip)) = (cidr.split_once('/'), ip.parse::<Ipv4Addr>()) else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_gw_routes_pods_between_hosts() {
    scenario(HOST_GW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vxlan_routes_pods_between_hosts() {
    scenario(VXLAN).await;
}
