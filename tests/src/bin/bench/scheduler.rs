//! `bench scheduler`: k3rs-scheduler in-process against an in-process
//! k3rs-apiserver on the SQLite shim. Registers fake Nodes (objects only),
//! creates pods with concurrent clients, and measures scheduling throughput
//! from the first create to the last binding, plus per-pod create→bound
//! latency. There is no upstream scheduler on this machine, so the reference
//! is the target of 500 pods/s and the ratio to it is printed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::{Backend, TestStore};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::Sample;

/// The throughput the scheduler is expected to reach on a small machine.
pub const TARGET_PODS_PER_SEC: f64 = 500.0;
const NS: &str = "bench-sched";

pub struct Load {
    pub nodes: usize,
    pub pods: usize,
    pub clients: usize,
}

async fn add_nodes(client: &kube::Client, n: usize, clients: usize) -> Result<()> {
    let mut tasks = Vec::new();
    for w in 0..clients {
        let nodes: Api<Node> = Api::all(client.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(clients) {
                let name = format!("bench-node-{i:04}");
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {
                        "kubernetes.io/hostname": name,
                        "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
                    }},
                }))?;
                nodes.create(&PostParams::default(), &node).await?;
                let res = json!({"cpu": "32", "memory": "64Gi", "pods": "110"});
                let status = json!({"status": {"capacity": res, "allocatable": res,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "lastHeartbeatTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}});
                nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

pub struct Outcome {
    /// First create → last binding, creates racing the scheduler.
    pub end_to_end: Sample,
    /// Pods created while no scheduler ran; scheduler start → last binding.
    pub backlog: Sample,
}

/// When each pod was first seen bound, a signal that the watch is established, and the watch task.
type Watch = (
    Arc<Mutex<HashMap<String, Instant>>>,
    tokio::sync::oneshot::Receiver<()>,
    tokio::task::JoinHandle<()>,
);

/// Records when each pod in `pods` is first seen bound.
fn watch_bindings(pods: Api<Pod>) -> Watch {
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = {
        let bound = bound.clone();
        let stream = watcher(pods, watcher::Config::default());
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                let pod = match ev {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => p,
                    _ => continue,
                };
                if pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some()
                {
                    let name = pod.metadata.name.unwrap_or_default();
                    if let Ok(mut m) = bound.lock() {
                        m.entry(name).or_insert_with(Instant::now);
                    }
                }
            }
        })
    };
    (bound, ready_rx, task)
}

/// Creates `n` pods with `clients` concurrent clients; returns each one's create start.
async fn create_pods(
    pods: &Api<Pod>,
    n: usize,
    clients: usize,
) -> Result<HashMap<String, Instant>> {
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let pods = pods.clone();
        let created = created.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(clients) {
                let name = format!("pod-{i:05}");
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"app": format!("app-{}", i % 50)}},
                    "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
                }))?;
                let t = Instant::now();
                pods.create(&PostParams::default(), &pod).await?;
                if let Ok(mut m) = created.lock() {
                    m.insert(name, t);
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    created
        .lock()
        .map(|m| m.clone())
        .ok()
        .context("created map")
}

async fn wait_all_bound(
    bound: &Mutex<HashMap<String, Instant>>,
    n: usize,
) -> Result<HashMap<String, Instant>> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let got = bound.lock().map(|m| m.len()).unwrap_or(0);
        if got >= n {
            return bound.lock().map(|m| m.clone()).ok().context("bound map");
        }
        if Instant::now() > deadline {
            bail!("only {got}/{n} pods were bound within 300s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn namespace(client: &kube::Client, name: &str) -> Result<Api<Pod>> {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}}))?,
    )
    .await?;
    Ok(Api::namespaced(client.clone(), name))
}

fn start_scheduler(
    cp: &ControlPlane,
) -> impl std::future::Future<Output = Result<k3rs_scheduler::Handle, k3rs_scheduler::Error>> {
    let mut config = k3rs_scheduler::Config::new(cp.kubeconfig.clone());
    config.health_addr = None;
    config.leader_election = None;
    k3rs_scheduler::start(config)
}

pub async fn run(load: &Load) -> Result<Outcome> {
    let store = TestStore::start(Backend::Sqlite).await?;
    let cp = ControlPlane::start(store.endpoint()).await?;
    let client = k3rs_scheduler::client_from_kubeconfig(&cp.kubeconfig).await?;
    let t = Instant::now();
    add_nodes(&client, load.nodes, load.clients).await?;
    eprintln!(
        "bench: {} nodes registered in {:.1}s",
        load.nodes,
        t.elapsed().as_secs_f64()
    );

    // Phase 1: pods are created while the scheduler runs.
    let pods = namespace(&client, NS).await?;
    let sched = start_scheduler(&cp).await?;
    let (bound, ready, watch_task) = watch_bindings(pods.clone());
    let _ = ready.await;
    let start = Instant::now();
    let created = create_pods(&pods, load.pods, load.clients).await?;
    let create_elapsed = start.elapsed();
    let bound_at = wait_all_bound(&bound, load.pods).await?;
    watch_task.abort();
    let last = bound_at.values().max().copied().context("no bindings")?;
    let end_to_end = Sample {
        ops: load.pods,
        elapsed: last.duration_since(start),
        lat: created
            .iter()
            .filter_map(|(k, c)| bound_at.get(k).map(|b| b.saturating_duration_since(*c)))
            .collect(),
    };
    eprintln!(
        "bench: {} pods created in {:.1}s, all bound after {:.1}s",
        load.pods,
        create_elapsed.as_secs_f64(),
        end_to_end.elapsed.as_secs_f64()
    );
    sched.stop().await?;

    // Phase 2: a backlog of pods exists before the scheduler starts.
    let pods = namespace(&client, &format!("{NS}-backlog")).await?;
    create_pods(&pods, load.pods, load.clients).await?;
    let (bound, ready, watch_task) = watch_bindings(pods.clone());
    let _ = ready.await;
    let start = Instant::now();
    let sched = start_scheduler(&cp).await?;
    let bound_at = wait_all_bound(&bound, load.pods).await?;
    watch_task.abort();
    let last = bound_at.values().max().copied().context("no bindings")?;
    let backlog = Sample {
        ops: load.pods,
        elapsed: last.duration_since(start),
        lat: bound_at
            .values()
            .map(|b| b.saturating_duration_since(start))
            .collect(),
    };
    eprintln!(
        "bench: backlog of {} pods bound after {:.1}s",
        load.pods,
        backlog.elapsed.as_secs_f64()
    );
    sched.stop().await?;
    cp.shutdown();
    store.stop().await;
    Ok(Outcome {
        end_to_end,
        backlog,
    })
}

pub fn print(load: &Load, r: &Outcome) {
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    println!(
        "k3rs-scheduler: {} pods onto {} fake nodes, {} creating clients, apiserver on the SQLite shim ({} cores)",
        load.pods,
        load.nodes,
        load.clients,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("| test | pods/s | p50 ms | p99 ms | target pods/s | ratio to target |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, s) in [
        (
            "first create → all bound (latency: create → bound)",
            &r.end_to_end,
        ),
        (
            "backlog: scheduler start → all bound (latency: start → bound)",
            &r.backlog,
        ),
    ] {
        println!(
            "| {name} | {:.0} | {} | {} | {:.0} | {:.2}x |",
            s.ops_per_sec(),
            ms(s.pct(0.5)),
            ms(s.pct(0.99)),
            TARGET_PODS_PER_SEC,
            s.ops_per_sec() / TARGET_PODS_PER_SEC
        );
    }
}
