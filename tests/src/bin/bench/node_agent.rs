//! `bench node-agent`: the `k3rs-node-agent` binary (next to this one) as
//! its own process on a private containerd, with an in-process apiserver on
//! the SQLite shim and the controller manager in-process (it turns the
//! Deployment into pods). `kubectl apply` of an N-replica Deployment of the
//! imported busybox image running `sleep`, pinned to the node by `nodeName`
//! (no scheduler in the path). Prints the time until every pod is Ready,
//! per-pod startup latency (first seen by a watch → first seen Ready, so
//! sub-second and free of the API's one-second timestamps) and the agent's
//! RSS, against the targets (p99 < 2 s, RSS < 40 MiB) and the upstream
//! startup SLO (5 s). Needs root, containerd, runc and the CNI plugins.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, Containerd};
use k3rs_e2e::{Backend, TestStore};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::watcher;

const NODE: &str = "k3rs-bench-node";
const POD_CIDR: &str = "10.244.95.0/24";
const BRIDGE: &str = "k3rsbench95";
const KUBECTL: &str = "1.32";
const TARGET_P99: Duration = Duration::from_secs(2);
const UPSTREAM_SLO: Duration = Duration::from_secs(5);
const TARGET_RSS_MB: f64 = 40.0;

pub struct Load {
    pub replicas: usize,
}

pub struct Report {
    pub all_ready: Duration,
    pub latencies: Vec<Duration>,
    pub idle_mb: f64,
    pub busy_mb: f64,
    pub settled_mb: f64,
    pub peak_mb: f64,
    pub threads: usize,
    pub deleted_in: Duration,
}

/// (VmRSS, VmHWM) in MiB, and the thread count.
fn memory(pid: u32) -> (f64, f64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        field("VmRSS:") / 1024.0,
        field("VmHWM:") / 1024.0,
        field("Threads:") as usize,
    )
}

fn deployment(replicas: usize) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: bench
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: bench}}
  template:
    metadata:
      labels: {{app: bench}}
    spec:
      nodeName: {NODE}
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {BUSYBOX_IMAGE}
        command: [sleep, '3600']
"
    )
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut v = v.to_vec();
    v.sort();
    v[(((v.len() - 1) as f64) * p).round() as usize]
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

pub async fn run(load: &Load) -> Result<Report> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .map(|d| d.join("k3rs-node-agent"))
        .context("bench binary has no directory")?;
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p k3rs-node-agent)",
            bin.display()
        );
    }
    let store = TestStore::start(Backend::Sqlite).await?;
    let cp = ControlPlane::start(store.endpoint()).await?;
    let ctd = Containerd::start().await?;
    let client = {
        let kc = kube::config::Kubeconfig::read_from(&cp.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        kube::Client::try_from(config)?
    };
    let cm_config = k3rs_controller_manager::Config::for_kubeconfig(&cp.kubeconfig);
    let controllers = tokio::spawn(async move {
        if let Err(e) = k3rs_controller_manager::run_until(cm_config, std::future::pending()).await
        {
            eprintln!("bench: controller manager: {e}");
        }
    });
    let dir = tempfile::tempdir()?;
    let mut agent = tokio::process::Command::new(&bin)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(["--node-name", NODE])
        .arg("--container-runtime-endpoint")
        .arg(ctd.endpoint())
        .arg("--root-dir")
        .arg(dir.path().join("agent"))
        .arg("--pod-logs-dir")
        .arg(dir.path().join("pod-logs"))
        .args(["--pod-cidr", POD_CIDR, "--cni-bridge", BRIDGE])
        .arg("--cni-conf-dir")
        .arg(&ctd.cni_conf_dir)
        .args(["--bind-address", "127.0.0.1", "--port", "0"])
        .args(["--node-ip", "127.0.0.1", "--healthz-port", "0"])
        .args(["--disable-cluster-dns", "--disable-kube-proxy"])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let pid = agent.id().context("node agent exited")?;

    let nodes: Api<Node> = Api::all(client.clone());
    wait_until("the node Ready", Duration::from_secs(60), || async {
        nodes.get_opt(NODE).await.ok().flatten().is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    })
    .await?;
    // The default ServiceAccount and root CA the pods' token volume needs.
    let ca_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    wait_until("kube-root-ca.crt", Duration::from_secs(60), || async {
        ca_maps
            .get_opt("kube-root-ca.crt")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_mb, _, _) = memory(pid);

    // First sighting and first Ready per pod, from one watch.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool, Instant)>();
    let watch = tokio::spawn({
        let pods = pods.clone();
        async move {
            let stream = watcher(pods, watcher::Config::default().labels("app=bench"));
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let now = Instant::now();
                if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    if tx.send((uid, is_ready(&p), now)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let start = Instant::now();
    cp.kubectl_in(
        KUBECTL,
        &["apply", "-f", "-"],
        Some(&deployment(load.replicas)),
    )
    .await;
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut ready: HashMap<String, Instant> = HashMap::new();
    let mut peak_mb: f64 = 0.0;
    let mut busy_mb: f64 = 0.0;
    let deadline = start + Duration::from_secs(300);
    while ready.len() < load.replicas {
        let (rss, hwm, _) = memory(pid);
        peak_mb = peak_mb.max(hwm);
        busy_mb = busy_mb.max(rss);
        if let Some(status) = agent.try_wait()? {
            bail!("node agent exited: {status}");
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {} pods Ready after 300 s",
                ready.len(),
                load.replicas
            );
        }
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Some((uid, is_ready, at))) => {
                seen.entry(uid.clone()).or_insert(at);
                if is_ready {
                    ready.entry(uid).or_insert(at);
                }
            }
            Ok(None) => bail!("the pod watch ended"),
            Err(_) => {}
        }
    }
    let all_ready = start.elapsed();
    let latencies: Vec<Duration> = ready
        .iter()
        .filter_map(|(uid, r)| seen.get(uid).map(|s| r.duration_since(*s)))
        .collect();
    watch.abort();
    // Settled: every pod running, probes and status writes at their steady pace.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (settled_mb, hwm, threads) = memory(pid);
    peak_mb = peak_mb.max(hwm);

    // Clean up through the agent, so no container outlives the bench.
    let deleting = Instant::now();
    cp.kubectl(KUBECTL, &["delete", "deployment", "bench"])
        .await;
    wait_until("the pods gone", Duration::from_secs(120), || async {
        pods.list_metadata(&kube::api::ListParams::default().labels("app=bench"))
            .await
            .is_ok_and(|l| l.items.is_empty())
    })
    .await?;
    let deleted_in = deleting.elapsed();
    let (_, hwm, _) = memory(pid);
    peak_mb = peak_mb.max(hwm);
    let _ = agent.kill().await;
    controllers.abort();
    drop(ctd);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .status();
    cp.shutdown();
    store.stop().await;
    Ok(Report {
        all_ready,
        latencies,
        idle_mb,
        busy_mb,
        settled_mb,
        peak_mb,
        threads,
        deleted_in,
    })
}

pub fn print(load: &Load, r: &Report) {
    let secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
    let ratio = |v: f64, t: f64| format!("{:.2}x", v / t);
    let p50 = pct(&r.latencies, 0.50);
    let p99 = pct(&r.latencies, 0.99);
    println!(
        "k3rs-node-agent: kubectl apply of a {}-replica Deployment (busybox `sleep`, imported image) on one node ({} cores, containerd, SQLite shim); no kubelet here to compare with, so targets and the upstream SLO",
        load.replicas,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("| metric | value | target | ratio | upstream SLO | ratio |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| apply → all {} pods Ready s | {} | | | | |",
        r.latencies.len(),
        secs(r.all_ready)
    );
    println!(
        "| pod startup p50 s | {} | {} | {} | {} | {} |",
        secs(p50),
        secs(TARGET_P99),
        ratio(p50.as_secs_f64(), TARGET_P99.as_secs_f64()),
        secs(UPSTREAM_SLO),
        ratio(p50.as_secs_f64(), UPSTREAM_SLO.as_secs_f64())
    );
    println!(
        "| pod startup p99 s | {} | {} | {} | {} | {} |",
        secs(p99),
        secs(TARGET_P99),
        ratio(p99.as_secs_f64(), TARGET_P99.as_secs_f64()),
        secs(UPSTREAM_SLO),
        ratio(p99.as_secs_f64(), UPSTREAM_SLO.as_secs_f64())
    );
    println!(
        "| RSS idle (node Ready, no pods) MiB | {:.1} | {TARGET_RSS_MB:.0} | {} | | |",
        r.idle_mb,
        ratio(r.idle_mb, TARGET_RSS_MB)
    );
    println!(
        "| RSS while starting pods (max) MiB | {:.1} | {TARGET_RSS_MB:.0} | {} | | |",
        r.busy_mb,
        ratio(r.busy_mb, TARGET_RSS_MB)
    );
    println!(
        "| RSS settled with {} pods MiB | {:.1} | {TARGET_RSS_MB:.0} | {} | | |",
        load.replicas,
        r.settled_mb,
        ratio(r.settled_mb, TARGET_RSS_MB)
    );
    println!(
        "| RSS peak (VmHWM, whole run) MiB | {:.1} | {TARGET_RSS_MB:.0} | {} | | |",
        r.peak_mb,
        ratio(r.peak_mb, TARGET_RSS_MB)
    );
    println!("| agent threads settled | {} | | | | |", r.threads);
    println!(
        "| delete Deployment → all pods gone s | {} | | | | |",
        secs(r.deleted_in)
    );
}
