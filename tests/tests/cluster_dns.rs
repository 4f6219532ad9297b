//! Cluster DNS served by the node agent: the DNS component against a real
//! apiserver + datastore on a loopback port (every record kind, live
//! updates, forwarding to a fake upstream with caching), and end to end: a
//! busybox pod on a private containerd resolves `kubernetes.default`
//! through the cluster DNS address on the node. The second test needs root.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, Containerd};
use k3rs_e2e::fake_dns::FakeUpstream;
use k3rs_e2e::{Backend, TestStore};
use k3rs_node_agent::dns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const V: &str = "1.33";
/// The bundled kube-dns Service manifest, exactly as `k3rs server` deploys it.
const KUBE_DNS_MANIFEST: &str = include_str!("../../supervisor/manifests/coredns.yaml");

fn query_bytes(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

/// One query over UDP, as a stub resolver sends it.
async fn ask(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(server).await.unwrap();
    let q = query_bytes(name, t);
    sock.send(&q).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer for {name} {t}"))
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, Message::from_vec(&q).unwrap().metadata.id);
    m
}

/// One query over TCP.
async fn ask_tcp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let mut s = TcpStream::connect(server).await.unwrap();
    let q = query_bytes(name, t);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// The answer section as sorted strings (`rdata`).
fn rdata(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

async fn jsonpath(cp: &ControlPlane, what: &[&str], path: &str) -> String {
    cp.jsonpath(V, what, path).await
}

const OBJECTS: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, protocol: TCP}
  - {name: metrics, port: 9100, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  selector: {app: db}
  ports:
  - {name: sql, port: 5432}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: default
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports:
- {name: sql, port: 5432, protocol: TCP}
endpoints:
- addresses: [10.244.85.21]
  hostname: db-0
  conditions: {ready: true}
- addresses: [10.244.85.22]
  conditions: {ready: true}
- addresses: [10.244.85.23]
  hostname: db-2
  conditions: {ready: false}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec:
  type: ExternalName
  externalName: www.example.org
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  NodeHosts: |
    192.168.85.10 node-a
    192.168.85.11 node-b
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_from_the_api() {
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let upstream = FakeUpstream::start().await.unwrap();
    let settings = dns::Settings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        upstreams: vec![upstream.addr],
        ..Default::default()
    };
    let client = k3rs_node_agent::client_from_kubeconfig(&cp.kubeconfig)
        .await
        .unwrap();
    let server = dns::start(client, &settings, &[], "cluster.local")
        .await
        .expect("dns");
    let at = server.local_addr;

    // The kube-dns Service K3s users look for, with the address pods use.
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(KUBE_DNS_MANIFEST))
        .await;
    let kube_dns = jsonpath(
        &cp,
        &["svc", "-n", "kube-system", "kube-dns"],
        "{.spec.clusterIP}",
    )
    .await;
    assert_eq!(kube_dns, "10.43.0.10");
    let found = cp
        .kubectl(
            V,
            &["get", "svc", "-n", "kube-system", "-l", "k8s-app=kube-dns"],
        )
        .await;
    assert!(found.contains("53/UDP,53/TCP,9153/TCP"), "{found}");

    let api_ip = jsonpath(&cp, &["svc", "kubernetes"], "{.spec.clusterIP}").await;
    assert!(!api_ip.is_empty());
    let m = ask(at, "kubernetes.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m), [api_ip.as_str()]);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers[0].ttl, 5);
    // The same over TCP.
    let m = ask_tcp(at, "kubernetes.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m), [api_ip.as_str()]);
    // IPv4-only: AAAA is NODATA (NOERROR, no answers, SOA) not NXDOMAIN.
    let m = ask(
        at,
        "kubernetes.default.svc.cluster.local.",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    // Search-path expansions of `kubernetes.default` are denied locally.
    for name in [
        "kubernetes.default.default.svc.cluster.local.",
        "kubernetes.default.cluster.local.",
    ] {
        let m = ask(at, name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
    assert_eq!(upstream.count(), 0);

    cp.kubectl_in(V, &["apply", "-f", "-"], Some(OBJECTS)).await;
    let web_ip = jsonpath(&cp, &["svc", "web"], "{.spec.clusterIP}").await;
    // Wait for the watch to deliver.
    let deadline = Instant::now() + Duration::from_secs(5);
    while rdata(&ask(at, "node-b.", RecordType::A).await).is_empty() {
        assert!(Instant::now() < deadline, "objects never showed up in DNS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = ask(at, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m), [web_ip.as_str()]);

    // SRV for named ports, with the target's address as additional data.
    let m = ask(
        at,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(rdata(&m), ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(m.additionals[0].data.to_string(), web_ip);
    let m = ask(
        at,
        "_metrics._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(rdata(&m), ["0 100 9100 web.default.svc.cluster.local."]);
    let m = ask(
        at,
        "_nope._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

    // Headless: the ready endpoints, by hostname or dashed address.
    let m = ask(at, "db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m), ["10.244.85.21", "10.244.85.22"]);
    let m = ask(at, "db-0.db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m), ["10.244.85.21"]);
    let m = ask(at, "db-2.db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "not ready"
    );
    let m = ask(
        at,
        "_sql._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(
        rdata(&m),
        [
            "0 100 5432 10-244-85-22.db.default.svc.cluster.local.",
            "0 100 5432 db-0.db.default.svc.cluster.local.",
        ]
    );

    // PTR for a service address and a headless endpoint.
    let rev = |ip: &str| {
        let o: Vec<&str> = ip.split('.').rev().collect();
        format!("{}.in-addr.arpa.", o.join("."))
    };
    let m = ask(at, &rev(&web_ip), RecordType::PTR).await;
    assert_eq!(rdata(&m), ["web.default.svc.cluster.local."]);
    let m = ask(at, &rev("10.244.85.21"), RecordType::PTR).await;
    assert_eq!(rdata(&m), ["db-0.db.default.svc.cluster.local."]);

    // Pod names.
    let m = ask(at, "10-244-85-9.default.pod.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&m), ["10.244.85.9"]);

    // NodeHosts from the coredns ConfigMap, forward and reverse.
    let m = ask(at, "node-a.", RecordType::A).await;
    assert_eq!(rdata(&m), ["192.168.85.10"]);
    let m = ask(at, &rev("192.168.85.11"), RecordType::PTR).await;
    assert_eq!(rdata(&m), ["node-b."]);

    // ExternalName: a CNAME, chased through the upstream.
    let m = ask(at, "ext.default.svc.cluster.local.", RecordType::A).await;
    let kinds: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(kinds, [RecordType::CNAME, RecordType::A], "{m:?}");
    assert_eq!(m.answers[0].data.to_string(), "www.example.org.");
    assert_eq!(m.answers[1].data.to_string(), "192.0.2.7");

    // Other names are forwarded, and the answer is cached with its TTL counting down.
    let before = upstream.count();
    let m = ask(at, "api.example.org.", RecordType::A).await;
    assert_eq!(rdata(&m), ["192.0.2.7"]);
    assert_eq!(upstream.count(), before + 1);
    for _ in 0..5 {
        let m = ask(at, "API.example.org.", RecordType::A).await;
        assert_eq!(rdata(&m), ["192.0.2.7"]);
        assert!(m.answers[0].ttl <= 30, "capped: {}", m.answers[0].ttl);
    }
    assert_eq!(upstream.count(), before + 1, "cached");
    let m = ask(at, "nowhere.invalid.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

    // A Service created now resolves within a second; deleted, it is gone.
    cp.kubectl(
        V,
        &["create", "service", "clusterip", "late", "--tcp=8080:8080"],
    )
    .await;
    let created = Instant::now();
    let late_ip = jsonpath(&cp, &["svc", "late"], "{.spec.clusterIP}").await;
    loop {
        let m = ask(at, "late.default.svc.cluster.local.", RecordType::A).await;
        if rdata(&m) == [late_ip.as_str()] {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(1),
            "late service not resolvable after {:?}",
            created.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cp.kubectl(V, &["delete", "service", "late"]).await;
    let deleted = Instant::now();
    loop {
        let m = ask(at, "late.default.svc.cluster.local.", RecordType::A).await;
        if m.metadata.response_code == ResponseCode::NXDomain {
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(2),
            "late still resolves"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.stop().await;
    drop(upstream);
    cp.shutdown();
    drop(store);
}

// ---- end to end: a pod resolves through the node ----

const NODE: &str = "k3rs-dns-e2e";
const POD_CIDR: &str = "10.244.85.0/24";
/// Not the default 10.43.0.10: other tests on this host may serve that one.
const DNS_IP: &str = "10.43.85.10";
const LINK: &str = "k3rs-dnst85";
/// This test's own pod bridge: the bridge plugin refuses a second IPv4
/// gateway on one bridge, so tests of other pod CIDRs running at the same
/// time cannot share `cni0`.
const BRIDGE: &str = "k3rsdnsbr85";

/// Removes the test's links however the test ends.
struct LinkGuard;

impl Drop for LinkGuard {
    fn drop(&mut self) {
        for l in [LINK, BRIDGE] {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", l])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn log_file(logs: &Path, name: &str, uid: &str, container: &str) -> PathBuf {
    logs.join(format!("default_{name}_{uid}"))
        .join(container)
        .join("0.log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pod_resolves_the_kubernetes_service() {
    let _link = LinkGuard;
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let ctd = Containerd::start().await.expect("containerd");
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("pods-logs");
    let mut c = k3rs_node_agent::Config::new(cp.kubeconfig.clone(), NODE.into());
    c.container_runtime_endpoint = ctd.endpoint();
    c.root_dir = dir.path().join("agent");
    c.pod_logs_dir = logs.clone();
    c.pod_cidr = Some(POD_CIDR.into());
    c.cni_conf_dir = ctd.cni_conf_dir.clone();
    // Tests run side by side: each node gets its own bridge.
    c.cni_bridge = BRIDGE.into();
    // The kubelet API on a free loopback port: tests run side by side.
    c.bind_address = std::net::IpAddr::from([127, 0, 0, 1]);
    c.port = 0;
    c.healthz_addr = None;
    c.cluster_dns = vec![DNS_IP.parse::<IpAddr>().unwrap()];
    c.dns.enabled = true;
    c.dns.link_name = LINK.into();
    // Names outside the cluster stay on this machine too.
    let upstream = FakeUpstream::start().await.unwrap();
    c.dns.upstreams = vec![upstream.addr];
    let agent = k3rs_node_agent::start(c).await.expect("start agent");

    // The agent put the address on its link and answers there.
    let at: SocketAddr = format!("{DNS_IP}:53").parse().unwrap();
    let api_ip = jsonpath(&cp, &["svc", "kubernetes"], "{.spec.clusterIP}").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sock = UdpSocket::bind("0.0.0.0:0").await.unwrap();
        let q = query_bytes("kubernetes.default.svc.cluster.local.", RecordType::A);
        let answered = async {
            sock.send_to(&q, at).await.ok()?;
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf))
                .await
                .ok()?
                .ok()?;
            Message::from_vec(&buf[..n]).ok()
        }
        .await;
        if answered.is_some_and(|m| rdata(&m) == [api_ip.as_str()]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cluster DNS never answered on {at}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let addrs = std::process::Command::new("ip")
        .args(["-o", "addr", "show", "dev", LINK])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&addrs.stdout).contains(&format!("{DNS_IP}/32")),
        "{addrs:?}"
    );

    // What the controller manager would publish; the pod's token volume needs both.
    cp.kubectl(V, &["create", "serviceaccount", "default"])
        .await;
    let ca = format!("--from-file=ca.crt={}", cp.api.ca_file.display());
    cp.kubectl(V, &["create", "configmap", "kube-root-ca.crt", &ca])
        .await;
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: lookup
spec:
  nodeName: {NODE}
  restartPolicy: Never
  containers:
  - name: main
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "cat /etc/resolv.conf; nslookup kubernetes.default.svc.cluster.local; echo fqdn-rc=$?; nslookup kubernetes; echo search-rc=$?; ping -I lo -c1 -W1 kubernetes.default; echo ping-rc=$?"]
"#
    );
    cp.kubectl_in(V, &["apply", "-f", "-"], Some(&pod)).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let phase = jsonpath(&cp, &["pod", "lookup"], "{.status.phase}").await;
        if phase == "Succeeded" || phase == "Failed" {
            break;
        }
        if Instant::now() > deadline {
            let pods = cp.kubectl(V, &["get", "pods", "-o", "yaml"]).await;
            panic!("pod did not finish: {pods}\ncontainerd:\n{}", ctd.log());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let uid = jsonpath(&cp, &["pod", "lookup"], "{.metadata.uid}").await;
    let text = std::fs::read_to_string(log_file(&logs, "lookup", &uid, "main")).unwrap();
    assert!(text.contains(&format!("nameserver {DNS_IP}")), "{text}");
    // nslookup of the full name.
    let (fqdn, rest) = text
        .split_once("fqdn-rc=")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(rest.starts_with('0'), "{text}");
    assert!(
        fqdn.contains("Name:\tkubernetes.default.svc.cluster.local"),
        "{text}"
    );
    assert!(fqdn.contains(&format!("Address: {api_ip}")), "{text}");
    // nslookup walks the search path itself (it reports the other
    // expansions' NXDOMAIN too, so its exit code says nothing).
    let (search, rest) = rest
        .split_once("search-rc=")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        search.contains("Name:\tkubernetes.default.svc.cluster.local"),
        "{text}"
    );
    assert!(search.contains(&format!("Address: {api_ip}")), "{text}");
    // The libc resolver (ndots:5 + search list) turns `kubernetes.default`
    // into the Service address. The ping is pinned to the pod's loopback so
    // no packet leaves the pod (there is no service proxy in this test).
    assert!(
        rest.contains(&format!("PING kubernetes.default ({api_ip})")),
        "{text}"
    );

    cp.kubectl(
        V,
        &["delete", "pod", "lookup", "--wait=true", "--timeout=60s"],
    )
    .await;
    agent.stop().await;
    drop(upstream);
    drop(ctd);
    cp.shutdown();
    drop(store);
}
