//! `bench apiserver`: the k3rs-apiserver binary, as its own process, over
//! the shim on SQLite and over a real etcd 3.4 (the reference) in the same
//! run. 32 clients create 10k ConfigMaps and 5k Pods, get and update them,
//! list them whole, 100 watchers follow updates, and the apiserver's RSS is
//! read from /proc with all 15k objects stored.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k3rs_e2e::{Backend, TestStore, free_port};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::{Row, Sample};

/// What to create and how hard to push.
pub struct Load {
    pub configmaps: usize,
    pub pods: usize,
    pub clients: usize,
    pub watchers: usize,
}

/// Memory of one apiserver run.
pub struct Memory {
    pub target: String,
    pub rss_mb: f64,
    pub peak_mb: f64,
}

const NS: &str = "bench";

/// The apiserver as a child process; killed on drop.
struct ApiProcess {
    child: tokio::process::Child,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl ApiProcess {
    async fn start(etcd: &str) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let bin = exe
            .parent()
            .map(|d| d.join("k3rs-apiserver"))
            .context("bench binary has no directory")?;
        if !bin.exists() {
            bail!(
                "{} not found: build it first (cargo build --release -p k3rs-apiserver)",
                bin.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let child = tokio::process::Command::new(&bin)
            .args(["--etcd-servers", etcd, "--bind-address", "127.0.0.1"])
            .args(["--secure-port", &port.to_string()])
            .arg("--cert-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        Ok(Self {
            child,
            kubeconfig: dir.path().join("admin.kubeconfig"),
            _dir: dir,
        })
    }

    async fn client(&self) -> Result<kube::Client> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(kc) = Kubeconfig::read_from(&self.kubeconfig) {
                let config =
                    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
                let client = kube::Client::try_from(config)?;
                let ns: Api<Namespace> = Api::all(client.clone());
                if ns.get("kube-system").await.is_ok() {
                    return Ok(client);
                }
            }
            if Instant::now() > deadline {
                bail!("apiserver not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (VmRSS, VmHWM) in MiB.
    fn memory(&self) -> Result<(f64, f64)> {
        let pid = self.child.id().context("apiserver exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb = |field: &str| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok((kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0))
    }
}

/// Runs `n` operations over `clients` concurrent tasks; `op(i)` does the i-th.
async fn concurrent<F, Fut>(n: usize, clients: usize, op: F) -> Result<Sample>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut sample = Sample::default();
    for t in tasks {
        sample.lat.extend(t.await??);
    }
    sample.ops = n;
    sample.elapsed = started.elapsed();
    Ok(sample)
}

fn configmap(i: usize) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": format!("cm-{i:05}"), "labels": {"bench": "k3rs", "shard": format!("{}", i % 10)}},
        "data": {"config.yaml": "x".repeat(256), "index": i.to_string()},
    }))
    .unwrap_or_default()
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i:05}"), "labels": {"app": format!("app-{}", i % 50)}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"],
                                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))
    .unwrap_or_default()
}

/// Every phase against one datastore; rows are named after the target.
pub async fn bench_target(target: &str, load: &Load, rows: &mut Vec<Row>) -> Result<Memory> {
    let backend: Backend = target.parse()?;
    let target = backend.name().to_string();
    let store = TestStore::start(backend).await?;
    let api = ApiProcess::start(store.endpoint()).await?;
    let client = api.client().await?;
    eprintln!("bench: apiserver over {target} at {}", store.endpoint());
    let push = |rows: &mut Vec<Row>, test: String, sample: Sample| {
        rows.push(Row {
            test,
            target: target.clone(),
            sample,
        });
    };

    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
    )
    .await?;
    // The controller manager creates it in a real cluster; pods look it up.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "default"}}))?,
    )
    .await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let c = load.clients;

    let a = cms.clone();
    let s = concurrent(load.configmaps, c, move |i| {
        let a = a.clone();
        async move {
            a.create(&PostParams::default(), &configmap(i)).await?;
            Ok(())
        }
    })
    .await?;
    push(
        rows,
        format!("create configmap ({} total, {c} clients)", load.configmaps),
        s,
    );

    let a = pods.clone();
    let s = concurrent(load.pods, c, move |i| {
        let a = a.clone();
        async move {
            a.create(&PostParams::default(), &pod(i)).await?;
            Ok(())
        }
    })
    .await?;
    push(
        rows,
        format!("create pod ({} total, {c} clients)", load.pods),
        s,
    );
    let (rss, _) = api.memory()?;

    let a = cms.clone();
    let n = load.configmaps;
    let s = concurrent(5000, c, move |i| {
        let a = a.clone();
        async move {
            a.get(&format!("cm-{:05}", (i * 7919) % n)).await?;
            Ok(())
        }
    })
    .await?;
    push(rows, format!("get configmap ({c} clients)"), s);

    let a = cms.clone();
    let s = concurrent(5000, c, move |i| {
        let a = a.clone();
        async move {
            let patch = json!({"data": {"index": format!("updated-{i}")}});
            a.patch(
                &format!("cm-{:05}", (i * 7919) % n),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    push(rows, format!("patch configmap ({c} clients)"), s);

    let mut s = Sample::default();
    let started = Instant::now();
    for _ in 0..10 {
        let t = Instant::now();
        let list = pods.list(&ListParams::default()).await?;
        s.lat.push(t.elapsed());
        if list.items.len() != load.pods {
            bail!("listed {} pods, expected {}", list.items.len(), load.pods);
        }
    }
    s.ops = 10;
    s.elapsed = started.elapsed();
    push(rows, format!("list {} pods (one request)", load.pods), s);

    let mut s = Sample::default();
    let started = Instant::now();
    for _ in 0..5 {
        let t = Instant::now();
        let list = cms.list(&ListParams::default().labels("shard=3")).await?;
        s.lat.push(t.elapsed());
        if list.items.len() != load.configmaps / 10 {
            bail!("label-selected {} configmaps", list.items.len());
        }
    }
    s.ops = 5;
    s.elapsed = started.elapsed();
    push(
        rows,
        format!(
            "list configmaps, label selector (1/10 of {})",
            load.configmaps
        ),
        s,
    );

    push(
        rows,
        format!("watch, {} watchers, delivery", load.watchers),
        watch_fanout(&cms, load.watchers).await?,
    );

    let a = cms.clone();
    let s = concurrent(2000, c, move |i| {
        let a = a.clone();
        async move {
            a.delete(&format!("cm-{i:05}"), &Default::default()).await?;
            Ok(())
        }
    })
    .await?;
    push(rows, format!("delete configmap ({c} clients)"), s);

    // The high-water mark over every phase (lists and watch fan-out included).
    let (_, peak) = api.memory()?;
    drop(api);
    store.stop().await;
    Ok(Memory {
        target,
        rss_mb: rss,
        peak_mb: peak,
    })
}

/// `watchers` watches on the ConfigMaps; 100 updates, one every 10 ms; the
/// latency of each event is receipt minus the moment its update was sent.
async fn watch_fanout(cms: &Api<ConfigMap>, watchers: usize) -> Result<Sample> {
    const UPDATES: usize = 100;
    let rv = cms
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let mut tasks = Vec::new();
    let ready = Arc::new(AtomicUsize::new(0));
    for _ in 0..watchers {
        let (cms, sent, rv, ready) = (cms.clone(), sent.clone(), rv.clone(), ready.clone());
        tasks.push(tokio::spawn(async move {
            let wp = WatchParams::default()
                .fields("metadata.name=cm-00001")
                .timeout(60);
            let mut stream = cms.watch(&wp, &rv).await?.boxed();
            ready.fetch_add(1, Ordering::Relaxed);
            let mut lat = Vec::new();
            while lat.len() < UPDATES {
                let Some(ev) = stream.try_next().await? else {
                    bail!("watch ended after {} events", lat.len());
                };
                if let WatchEvent::Modified(cm) = ev {
                    let v = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get("watch"))
                        .cloned()
                        .unwrap_or_default();
                    let at = sent.lock().ok().and_then(|m| m.get(&v).copied());
                    if let Some(at) = at {
                        lat.push(at.elapsed());
                    }
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    while ready.load(Ordering::Relaxed) < watchers {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give the last watch requests time to be registered server-side.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    for i in 0..UPDATES {
        let v = format!("w{i}");
        if let Ok(mut m) = sent.lock() {
            m.insert(v.clone(), Instant::now());
        }
        cms.patch(
            "cm-00001",
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"watch": v}})),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sample = Sample::default();
    for t in tasks {
        sample.lat.extend(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .context("watchers did not get every event within 60 s")???,
        );
    }
    sample.ops = sample.lat.len();
    sample.elapsed = started.elapsed();
    Ok(sample)
}

/// The targets, checked against the measured rows.
pub fn print_targets(rows: &[Row], memory: &[Memory]) {
    println!("| target (issue 3) | over | measured | met |");
    println!("|---|---|---:|---|");
    let mark = |ok: bool| if ok { "yes" } else { "NO" };
    for r in rows {
        let mutating = ["create", "patch", "delete"]
            .iter()
            .any(|v| r.test.starts_with(v));
        if mutating {
            let p99 = r.sample.pct(0.99).as_secs_f64() * 1000.0;
            println!(
                "| p99 {} < 50 ms | {} | {p99:.1} ms | {} |",
                r.test.split(" (").next().unwrap_or(""),
                r.target,
                mark(p99 < 50.0)
            );
        }
        if r.test.starts_with("list") && r.test.contains("pods") {
            let p99 = r.sample.pct(0.99).as_secs_f64() * 1000.0;
            println!(
                "| {} < 300 ms (p99) | {} | {p99:.1} ms | {} |",
                r.test,
                r.target,
                mark(p99 < 300.0)
            );
        }
    }
    for m in memory {
        println!(
            "| apiserver RSS < 150 MiB with 15k objects | {} | {:.1} MiB | {} |",
            m.target,
            m.rss_mb,
            mark(m.rss_mb < 150.0)
        );
    }
}
