//! The k3rs benchmark program. `bench datastore` runs the same load against a
//! real etcd 3.4 and against k3rs-datastore on SQLite, PostgreSQL and MariaDB
//! in one invocation and prints throughput, latency and the ratio to etcd.
//! `bench apiserver` runs the k3rs-apiserver binary over the shim and over a
//! real etcd and prints per-verb latency, the ratio and the apiserver's RSS.
//!
//!     cargo run --release -p k3rs-e2e --bin bench -- datastore
//!     cargo build --release -p k3rs-apiserver -p k3rs-e2e --bins
//!     $CARGO_TARGET_DIR/release/bench apiserver
//!     $CARGO_TARGET_DIR/release/bench server      # needs the k3rs binaries built too
//!     $CARGO_TARGET_DIR/release/bench proxy       # root, nft and iptables-restore
//!     $CARGO_TARGET_DIR/release/bench node-agent  # root, containerd; k3rs-node-agent built
//!     $CARGO_TARGET_DIR/release/bench dns         # cluster DNS q/s on one core

mod apiserver;
mod controllers;
mod dns;
mod node_agent;
mod proxy;
mod scheduler;
mod server;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use k3rs_e2e::{Backend, TestStore, etcd_version};
use tokio_stream::StreamExt;

#[derive(Parser)]
#[command(name = "bench", about = "k3rs benchmarks against their reference")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// k3rs-datastore vs etcd 3.4: txn creates/updates, paged prefix range, watch fan-out.
    Datastore {
        /// Seconds per create/update phase.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Comma-separated targets: etcd, sqlite, postgres, mariadb.
        #[arg(long, default_value = "etcd,sqlite,postgres,mariadb")]
        targets: String,
    },
    /// `k3rs server --disable-agent`: cold and warm start to ready, RSS of
    /// every process at idle, on each datastore.
    Server {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Comma-separated datastores: sqlite, postgres, mariadb, etcd.
        #[arg(long, default_value = "sqlite,postgres,mariadb,etcd")]
        datastores: String,
    },
    /// k3rs-scheduler: fake nodes, many pods, pods/s first create → all bound,
    /// create→bound p50/p99, and the ratio to the 500 pods/s target.
    Scheduler {
        #[arg(long, default_value_t = 500)]
        nodes: usize,
        #[arg(long, default_value_t = 5_000)]
        pods: usize,
        #[arg(long, default_value_t = 32)]
        clients: usize,
    },
    /// k3rs-controller-manager (as a process): Deployments x replicas created
    /// at once until every ReplicaSet and pod exists; time and RSS.
    Controllers {
        #[arg(long, default_value_t = 1_000)]
        deployments: usize,
        #[arg(long, default_value_t = 3)]
        replicas: i32,
        #[arg(long, default_value_t = 16)]
        clients: usize,
    },
    /// The node agent's service proxy: Services x endpoints loaded into the
    /// kernel, then single-endpoint changes timed until applied; nftables
    /// against iptables-restore.
    Proxy {
        #[arg(long, default_value_t = 1_000)]
        services: usize,
        #[arg(long, default_value_t = 10)]
        endpoints: usize,
        #[arg(long, default_value_t = 20)]
        changes: usize,
    },
    /// k3rs-node-agent (as a process) on containerd: a Deployment's pods
    /// from `kubectl apply` to Ready, per-pod startup p50/p99, agent RSS.
    NodeAgent {
        #[arg(long, default_value_t = 30)]
        replicas: usize,
    },
    /// The node agent's cluster DNS server pinned to one core: q/s and
    /// p50/p99 per query kind against the 20,000 q/s target.
    Dns {
        /// Seconds per query kind.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Client sockets with a query in flight each.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Endpoints of the headless Service.
        #[arg(long, default_value_t = 3)]
        endpoints: usize,
    },
    /// k3rs-apiserver over the shim vs over etcd 3.4: creates, gets, patches,
    /// lists, watch fan-out, deletes; RSS with every object stored.
    Apiserver {
        /// Comma-separated datastores under the apiserver: etcd, sqlite, postgres, mariadb.
        #[arg(long, default_value = "etcd,sqlite")]
        targets: String,
        #[arg(long, default_value_t = 10_000)]
        configmaps: usize,
        #[arg(long, default_value_t = 5_000)]
        pods: usize,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        watchers: usize,
    },
}

/// Latency samples of one measurement.
#[derive(Default, Clone)]
struct Sample {
    ops: usize,
    elapsed: Duration,
    lat: Vec<Duration>,
}

impl Sample {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn pct(&self, p: f64) -> Duration {
        if self.lat.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.lat.clone();
        v.sort();
        let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[idx.min(v.len() - 1)]
    }
}

const VALUE_BYTES: usize = 1024;
const CONCURRENCY: [usize; 3] = [1, 16, 64];

/// Creates (`mod_revision == 0 → put`) for `secs`, then updates each created
/// key (`mod_revision == rv → put`), as the Kubernetes apiserver does.
async fn creates_updates(client: &Client, workers: usize, secs: u64) -> Result<(Sample, Sample)> {
    let value = vec![b'x'; VALUE_BYTES];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut c = client.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut created = Vec::new();
            let mut i = 0usize;
            while Instant::now() < deadline {
                let key = format!("/registry/bench/c{workers}/w{w}/{i}");
                let t = Instant::now();
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), value.clone(), None)])
                    .or_else([TxnOp::get(key.clone(), None)]);
                let r = c.txn(txn).await?;
                lat.push(t.elapsed());
                if !r.succeeded() {
                    bail!("create of {key} failed its compare");
                }
                created.push((key, r.header().map_or(0, |h| h.revision())));
                i += 1;
            }
            Ok::<_, anyhow::Error>((lat, created))
        }));
    }
    let mut create = Sample::default();
    let mut all_created = Vec::new();
    for t in tasks {
        let (lat, created) = t.await??;
        create.ops += lat.len();
        create.lat.extend(lat);
        all_created.push(created);
    }
    create.elapsed = start.elapsed();

    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for created in all_created {
        let mut c = client.clone();
        let value = vec![b'y'; VALUE_BYTES];
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for (key, rev) in created {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::put(key.clone(), value.clone(), None)])
                    .or_else([TxnOp::get(key.clone(), None)]);
                let r = c.txn(txn).await?;
                lat.push(t.elapsed());
                if !r.succeeded() {
                    bail!("update of {key} at {rev} failed its compare");
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut update = Sample::default();
    for t in tasks {
        let lat = t.await??;
        update.ops += lat.len();
        update.lat.extend(lat);
    }
    update.elapsed = start.elapsed();
    Ok((create, update))
}

/// Loads 10k keys, then pages through them 500 at a time, repeatedly.
async fn paged_range(client: &Client) -> Result<Sample> {
    let prefix = "/registry/pods/bench/";
    let value = vec![b'p'; VALUE_BYTES];
    let mut tasks = Vec::new();
    for w in 0..32usize {
        let mut c = client.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..10_000).step_by(32) {
                c.put(format!("{prefix}{i:05}"), value.clone(), None)
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut c = client.clone();
    let mut s = Sample::default();
    let start = Instant::now();
    for _ in 0..10 {
        let mut from = prefix.to_string();
        loop {
            let end = format!("{prefix}\u{7f}");
            let t = Instant::now();
            let r = c
                .get(
                    from.clone(),
                    Some(GetOptions::new().with_range(end).with_limit(500)),
                )
                .await?;
            s.lat.push(t.elapsed());
            s.ops += 1;
            let Some(last) = r.kvs().last() else { break };
            if !r.more() {
                break;
            }
            let mut next = last.key().to_vec();
            next.push(0);
            from = String::from_utf8(next).context("bench keys are UTF-8")?;
        }
    }
    s.elapsed = start.elapsed();
    Ok(s)
}

/// 100 watchers on one prefix; a writer puts 200 keys 5 ms apart; the
/// latency of each delivery is measured from just before the put.
async fn watch_fanout(client: &Client) -> Result<Sample> {
    let prefix = "/registry/events/bench/";
    let sent: Arc<std::sync::Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let n_keys = 200usize;
    let mut tasks = Vec::new();
    let mut ready = Vec::new();
    for _ in 0..100 {
        let mut c = client.clone();
        let sent = sent.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        tasks.push(tokio::spawn(async move {
            let mut stream = c
                .watch(prefix, Some(WatchOptions::new().with_prefix()))
                .await?;
            // The first response confirms the watch exists; only then may writes start.
            match stream.next().await {
                Some(Ok(r)) if r.created() => {}
                other => bail!("watch was not created: {other:?}"),
            }
            let _ = tx.send(());
            let mut lat = Vec::new();
            while lat.len() < n_keys {
                let Some(resp) = stream.next().await else {
                    break;
                };
                let resp = resp?;
                let now = Instant::now();
                for ev in resp.events() {
                    if let Some(kv) = ev.kv() {
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let sent_at = sent.lock().ok().and_then(|m| m.get(&key).copied());
                        if let Some(t) = sent_at {
                            lat.push(now.duration_since(t));
                        }
                    }
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    for r in ready {
        r.await.context("watcher failed to start")?;
    }
    let mut c = client.clone();
    let start = Instant::now();
    for i in 0..n_keys {
        let key = format!("{prefix}{i:04}");
        if let Ok(mut m) = sent.lock() {
            m.insert(key.clone(), Instant::now());
        }
        c.put(key, "e", None).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut s = Sample::default();
    for t in tasks {
        let lat = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .context("watchers did not receive every event")???;
        s.ops += lat.len();
        s.lat.extend(lat);
    }
    s.elapsed = start.elapsed();
    Ok(s)
}

struct Row {
    test: String,
    target: String,
    sample: Sample,
}

async fn bench_target(target: &str, seconds: u64, rows: &mut Vec<Row>) -> Result<()> {
    let backend: Backend = target.parse()?;
    let target = backend.name();
    let store = TestStore::start(backend).await?;
    let client = store.client().await?;
    eprintln!("bench: {target} at {}", store.endpoint());
    for c in CONCURRENCY {
        let (create, update) = creates_updates(&client, c, seconds).await?;
        rows.push(Row {
            test: format!("txn create, {c:>2} clients"),
            target: target.into(),
            sample: create,
        });
        rows.push(Row {
            test: format!("txn update, {c:>2} clients"),
            target: target.into(),
            sample: update,
        });
    }
    rows.push(Row {
        test: "range 10k keys, limit 500".into(),
        target: target.into(),
        sample: paged_range(&client).await?,
    });
    rows.push(Row {
        test: "watch, 100 watchers, delivery".into(),
        target: target.into(),
        sample: watch_fanout(&client).await?,
    });
    drop(client);
    store.stop().await;
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn print_table(rows: &[Row]) {
    println!(
        "| test | target | ops/s | p50 ms | p99 ms | ops/s vs etcd | p50 vs etcd | p99 vs etcd |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut tests: Vec<&str> = Vec::new();
    for r in rows {
        if !tests.contains(&r.test.as_str()) {
            tests.push(&r.test);
        }
    }
    for t in tests {
        let reference = rows.iter().find(|r| r.test == t && r.target == "etcd");
        for r in rows.iter().filter(|r| r.test == t) {
            let lat_ratio = |e: &Sample, p: f64| {
                format!(
                    "{:.2}x",
                    r.sample.pct(p).as_secs_f64() / e.pct(p).as_secs_f64().max(1e-9)
                )
            };
            let (ratio, p50r, p99r) = match reference {
                Some(e) if r.target != "etcd" => (
                    format!(
                        "{:.2}x",
                        r.sample.ops_per_sec() / e.sample.ops_per_sec().max(1e-9)
                    ),
                    lat_ratio(&e.sample, 0.5),
                    lat_ratio(&e.sample, 0.99),
                ),
                _ => (String::new(), String::new(), String::new()),
            };
            let watch = t.starts_with("watch");
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.test,
                r.target,
                if watch {
                    "-".into()
                } else {
                    format!("{:.0}", r.sample.ops_per_sec())
                },
                ms(r.sample.pct(0.5)),
                ms(r.sample.pct(0.99)),
                if watch { "".into() } else { ratio },
                p50r,
                p99r,
            );
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Datastore { seconds, targets } => rt.block_on(async {
            let mut rows = Vec::new();
            for t in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                bench_target(t, seconds, &mut rows)
                    .await
                    .with_context(|| format!("benchmark on {t}"))?;
            }
            println!(
                "k3rs-datastore vs etcd {} ({} cores, {} B values)",
                etcd_version(),
                std::thread::available_parallelism().map_or(0, |n| n.get()),
                VALUE_BYTES
            );
            print_table(&rows);
            Ok(())
        }),
        Cmd::Server { runs, datastores } => rt.block_on(server::run(runs, &datastores)),
        Cmd::Scheduler {
            nodes,
            pods,
            clients,
        } => rt.block_on(async {
            let load = scheduler::Load {
                nodes,
                pods,
                clients,
            };
            let r = scheduler::run(&load).await.context("scheduler benchmark")?;
            scheduler::print(&load, &r);
            Ok(())
        }),
        Cmd::Proxy {
            services,
            endpoints,
            changes,
        } => {
            let load = proxy::Load {
                services,
                endpoints,
                changes,
            };
            let rows = proxy::run(&load).context("proxy benchmark")?;
            proxy::print(&load, &rows);
            Ok(())
        }
        Cmd::Controllers {
            deployments,
            replicas,
            clients,
        } => rt.block_on(async {
            let load = controllers::Load {
                deployments,
                replicas,
                clients,
            };
            let r = controllers::run(&load).await.context("controllers benchmark")?;
            controllers::print(&load, &r);
            Ok(())
        }),
        Cmd::NodeAgent { replicas } => rt.block_on(async {
            let load = node_agent::Load { replicas };
            let r = node_agent::run(&load).await.context("node agent benchmark")?;
            node_agent::print(&load, &r);
            Ok(())
        }),
        Cmd::Dns {
            seconds,
            clients,
            endpoints,
        } => rt.block_on(async {
            let load = dns::Load {
                seconds,
                clients,
                endpoints,
            };
            let (rows, cpu, upstream) = dns::run(&load).await.context("DNS benchmark")?;
            dns::print(&load, &rows, cpu, upstream);
            Ok(())
        }),
        Cmd::Apiserver {
            targets,
            configmaps,
            pods,
            clients,
            watchers,
        } => rt.block_on(async {
            let load = apiserver::Load {
                configmaps,
                pods,
                clients,
                watchers,
            };
            let mut rows = Vec::new();
            let mut memory = Vec::new();
            for t in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                memory.push(
                    apiserver::bench_target(t, &load, &mut rows)
                        .await
                        .with_context(|| format!("apiserver benchmark on {t}"))?,
                );
            }
            println!(
                "k3rs-apiserver over the shim vs over etcd {} ({} cores); target = the datastore under the apiserver",
                etcd_version(),
                std::thread::available_parallelism().map_or(0, |n| n.get()),
            );
            print_table(&rows);
            println!();
            println!("| apiserver memory | RSS with {} objects MiB | peak RSS over the run MiB |", configmaps + pods);
            println!("|---|---:|---:|");
            for m in &memory {
                println!("| over {} | {:.1} | {:.1} |", m.target, m.rss_mb, m.peak_mb);
            }
            println!();
            apiserver::print_targets(&rows, &memory);
            Ok(())
        }),
    }
}
