//! `bench controllers`: N Deployments × R replicas created at once against
//! an in-process apiserver on the SQLite shim; the `k3rs-controller-manager`
//! binary (next to this one) runs as its own process. Prints the time until
//! every Deployment has its ReplicaSet and pods, the create rate, and the
//! controller manager's RSS against the 80 MiB target.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::{Backend, TestStore};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};

pub struct Load {
    pub deployments: usize,
    pub replicas: i32,
    pub clients: usize,
}

pub struct Report {
    pub created_in: Duration,
    pub settled_in: Duration,
    pub pods: usize,
    pub rss_mb: f64,
    pub peak_mb: f64,
    pub idle_rss_mb: f64,
}

fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

fn deployment(i: usize, replicas: i32) -> Result<Deployment> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("bench-{i:05}")},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": format!("bench-{i:05}")}},
            "template": {
                "metadata": {"labels": {"app": format!("bench-{i:05}")}},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }))?)
}

pub async fn run(load: &Load) -> Result<Report> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .map(|d| d.join("k3rs-controller-manager"))
        .context("bench binary has no directory")?;
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p k3rs-controller-manager)",
            bin.display()
        );
    }
    let store = TestStore::start(Backend::Sqlite).await?;
    let cp = ControlPlane::start(store.endpoint()).await?;
    let kc = kube::config::Kubeconfig::read_from(&cp.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;

    let mut child = tokio::process::Command::new(&bin)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(["--leader-elect=false", "--secure-port", "0"])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let pid = child.id().context("controller manager exited")?;
    // Idle: caches of an empty cluster.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_rss_mb, _) = memory(pid);

    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..load.clients {
        let deploys = deploys.clone();
        let (n, clients, replicas) = (load.deployments, load.clients, load.replicas);
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(clients) {
                deploys
                    .create(&PostParams::default(), &deployment(i, replicas)?)
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created_in = start.elapsed();

    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let want_pods = load.deployments * load.replicas as usize;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut peak_mb: f64 = 0.0;
    let pod_count;
    loop {
        let (_, hwm) = memory(pid);
        peak_mb = peak_mb.max(hwm);
        if let Some(status) = child.try_wait()? {
            bail!("controller manager exited: {status}");
        }
        let rs = sets
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len();
        let p = pods
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len();
        if rs >= load.deployments && p >= want_pods {
            pod_count = p;
            break;
        }
        if Instant::now() > deadline {
            bail!("not settled after 900 s: {rs} ReplicaSets, {p} pods");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled_in = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_mb, hwm) = memory(pid);
    peak_mb = peak_mb.max(hwm);
    let _ = child.kill().await;
    cp.shutdown();
    store.stop().await;
    Ok(Report {
        created_in,
        settled_in,
        pods: pod_count,
        rss_mb,
        peak_mb,
        idle_rss_mb,
    })
}

pub fn print(load: &Load, r: &Report) {
    println!(
        "k3rs-controller-manager: {} Deployments x {} replicas created at once ({} cores, SQLite shim, in-process apiserver)",
        load.deployments,
        load.replicas,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("| metric | value | target | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| Deployments created (client side) s | {:.2} | | |",
        r.created_in.as_secs_f64()
    );
    println!(
        "| all ReplicaSets + {} pods exist s | {:.2} | | |",
        r.pods,
        r.settled_in.as_secs_f64()
    );
    println!(
        "| pods created /s | {:.0} | | |",
        r.pods as f64 / r.settled_in.as_secs_f64().max(1e-9)
    );
    println!("| RSS idle MiB | {:.1} | | |", r.idle_rss_mb);
    println!(
        "| RSS settled MiB | {:.1} | 80 | {:.2}x |",
        r.rss_mb,
        r.rss_mb / 80.0
    );
    println!(
        "| RSS peak MiB | {:.1} | 80 | {:.2}x |",
        r.peak_mb,
        r.peak_mb / 80.0
    );
}
