//! `bench dns`: the node agent's cluster DNS server, fed from a real
//! apiserver (Services, a headless Service with its EndpointSlice) and
//! forwarding to a loopback stand-in upstream. The server runs alone on a
//! single-threaded runtime in its own thread pinned to one core; N client
//! sockets on the other threads keep queries in flight for a fixed time per
//! query kind. The target (k3rs issue 7) is ≥ 20,000 q/s on one core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k3rs_e2e::cluster::{ControlPlane, KUBECTL_DEFAULT};
use k3rs_e2e::fake_dns::FakeUpstream;
use k3rs_e2e::{Backend, TestStore};
use k3rs_node_agent::dns;
use tokio::net::UdpSocket;

use crate::Sample;

pub const TARGET_QPS: f64 = 20_000.0;

pub struct Load {
    pub seconds: u64,
    pub clients: usize,
    /// Endpoints of the headless Service (its A answer's size).
    pub endpoints: usize,
}

pub struct Row {
    pub kind: &'static str,
    pub name: &'static str,
    pub qtype: RecordType,
    pub sample: Sample,
    /// Queries with no answer within a second (dropped or lost).
    pub lost: usize,
    /// Answers with an unexpected response code.
    pub wrong: usize,
}

/// What the table measures: kind, name, type, the expected response code.
const KINDS: [(&str, &str, RecordType, ResponseCode); 5] = [
    (
        "service A",
        "web.default.svc.cluster.local.",
        RecordType::A,
        ResponseCode::NoError,
    ),
    (
        "headless A",
        "db.default.svc.cluster.local.",
        RecordType::A,
        ResponseCode::NoError,
    ),
    (
        "SRV",
        "_sql._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
        ResponseCode::NoError,
    ),
    (
        "NXDOMAIN",
        "nope.default.svc.cluster.local.",
        RecordType::A,
        ResponseCode::NXDomain,
    ),
    (
        "cached forward",
        "api.example.org.",
        RecordType::A,
        ResponseCode::NoError,
    ),
];

fn objects(endpoints: usize) -> String {
    let eps: String = (0..endpoints)
        .map(|i| {
            format!(
                "- addresses: [10.244.131.{}]\n  hostname: db-{i}\n  conditions: {{ready: true}}\n",
                i % 250 + 1
            )
        })
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: default}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: sql, port: 5432}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: default
  labels: {{kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{{name: sql, port: 5432, protocol: TCP}}]
endpoints:
{eps}"
    )
}

fn query(name: &str, t: RecordType) -> Result<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name)?, t));
    Ok(m.to_vec()?)
}

/// Pins the calling thread to `cpu`; false when the kernel refuses.
fn pin_to(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it
    // and sched_setaffinity(0) only reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// The DNS server on its own thread and runtime; stops when `stop` is set.
struct Server {
    addr: SocketAddr,
    cpu: Option<usize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(kubeconfig: std::path::PathBuf, upstream: SocketAddr) -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // The last core: the tokio workers of the clients start on the first.
        let cpu = cores - 1;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Result<(SocketAddr, bool), String>>();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-dns-server".into())
            .spawn(move || {
                let pinned = pin_to(cpu);
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let settings = dns::Settings {
                        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                        upstreams: vec![upstream],
                        ..Default::default()
                    };
                    let handle = async {
                        let client = k3rs_node_agent::client_from_kubeconfig(&kubeconfig)
                            .await
                            .map_err(|e| e.to_string())?;
                        dns::start(client, &settings, &[], "cluster.local")
                            .await
                            .map_err(|e| e.to_string())
                    }
                    .await;
                    match handle {
                        Ok(h) => {
                            let _ = tx.send(Ok((h.local_addr, pinned)));
                            while !stop2.load(Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            h.stop().await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })?;
        let (addr, pinned) = rx
            .recv_timeout(Duration::from_secs(30))
            .context("the DNS server thread did not start")?
            .map_err(|e| anyhow!("starting the DNS server: {e}"))?;
        Ok(Self {
            addr,
            cpu: pinned.then_some(cpu),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One answer to `q` (the id patched to `id`): its response code.
async fn ask_once(sock: &UdpSocket, q: &mut [u8], id: u16, buf: &mut [u8]) -> Option<u8> {
    q[..2].copy_from_slice(&id.to_be_bytes());
    sock.send(q).await.ok()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(buf))
            .await
            .ok()?
            .ok()?;
        // A late answer to an earlier query: keep waiting for ours.
        if n >= 4 && buf[..2] == id.to_be_bytes() {
            return Some(buf[3] & 0x0f);
        }
    }
}

/// `clients` sockets asking `q` back to back for `secs`.
async fn blast(
    at: SocketAddr,
    q: &[u8],
    want: ResponseCode,
    clients: usize,
    secs: u64,
) -> Result<(Sample, usize, usize)> {
    let until = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        sock.connect(at).await?;
        let mut q = q.to_vec();
        let want = (u16::from(want) & 0x0f) as u8;
        tasks.spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut lat = Vec::new();
            let (mut lost, mut wrong) = (0usize, 0usize);
            let mut id = (c as u16).wrapping_mul(7919);
            while Instant::now() < until {
                id = id.wrapping_add(1);
                let t = Instant::now();
                match ask_once(&sock, &mut q, id, &mut buf).await {
                    Some(code) => {
                        lat.push(t.elapsed());
                        if code != want {
                            wrong += 1;
                        }
                    }
                    None => lost += 1,
                }
            }
            (lat, lost, wrong)
        });
    }
    let mut sample = Sample::default();
    let (mut lost, mut wrong) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (lat, l, w) = r?;
        sample.ops += lat.len();
        sample.lat.extend(lat);
        lost += l;
        wrong += w;
    }
    sample.elapsed = start.elapsed();
    Ok((sample, lost, wrong))
}

/// Asks once and parses the answer, to check the zone is loaded before timing.
async fn answer(at: SocketAddr, name: &str, t: RecordType) -> Result<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(at).await?;
    sock.send(&query(name, t)?).await?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
        .await
        .map_err(|_| anyhow!("no answer for {name}"))??;
    Ok(Message::from_vec(&buf[..n])?)
}

pub async fn run(load: &Load) -> Result<(Vec<Row>, Option<usize>, usize)> {
    let store = TestStore::start(Backend::Sqlite).await?;
    let cp = ControlPlane::start(store.endpoint()).await?;
    let out = cp
        .kubectl_with(
            KUBECTL_DEFAULT,
            &["apply", "-f", "-"],
            Some(&objects(load.endpoints)),
            &[],
        )
        .await?;
    if !out.status.success() {
        bail!(
            "creating the Services: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let upstream = FakeUpstream::start().await?;
    let server = Server::start(cp.kubeconfig.clone(), upstream.addr)?;
    let at = server.addr;
    // The zone fills from the API's watch: wait for the headless endpoints.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = answer(at, "db.default.svc.cluster.local.", RecordType::A).await;
        if m.as_ref().is_ok_and(|m| m.answers.len() == load.endpoints) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the DNS server never answered the headless Service: {m:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut rows = Vec::new();
    for (kind, name, qtype, want) in KINDS {
        let m = answer(at, name, qtype).await?;
        if m.metadata.response_code != want {
            bail!("{kind}: {name} {qtype} answered {m:?}");
        }
        let q = query(name, qtype)?;
        // A short warm-up (fills the forward cache, wakes the sockets).
        blast(at, &q, want, load.clients, 1).await?;
        let (sample, lost, wrong) = blast(at, &q, want, load.clients, load.seconds).await?;
        rows.push(Row {
            kind,
            name,
            qtype,
            sample,
            lost,
            wrong,
        });
    }
    let upstream_queries = upstream.count();
    let cpu = server.cpu;
    drop(server);
    cp.shutdown();
    drop(store);
    Ok((rows, cpu, upstream_queries))
}

pub fn print(load: &Load, rows: &[Row], cpu: Option<usize>, upstream_queries: usize) {
    let build = if cfg!(debug_assertions) {
        "debug build: numbers are not representative"
    } else {
        "release build"
    };
    let pinned = match cpu {
        Some(c) => format!("pinned to CPU {c}"),
        None => "NOT pinned (sched_setaffinity refused)".into(),
    };
    println!(
        "cluster DNS server on one single-threaded runtime, {pinned}; {} client sockets, {} s per row, {} cores; {build}",
        load.clients,
        load.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "| query | name | q/s | p50 | p99 | vs target {TARGET_QPS:.0} q/s | lost | wrong rcode |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let qps = r.sample.ops_per_sec();
        println!(
            "| {} | {} {} | {:.0} | {:?} | {:?} | {:.2}x | {} | {} |",
            r.kind,
            r.name,
            r.qtype,
            qps,
            r.sample.pct(0.5),
            r.sample.pct(0.99),
            qps / TARGET_QPS,
            r.lost,
            r.wrong,
        );
    }
    println!("upstream queries (the forward cache in front of it): {upstream_queries}");
}
