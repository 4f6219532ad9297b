//! `bench server`: the `k3rs server` binary as a user starts it. Cold start
//! (empty data dir: PKI, tokens, kubeconfig, datastore, apiserver) and warm
//! start (same data dir) to the ready line, then the RSS of every process in
//! the tree at idle. K3s is not installable here, so the targets
//! (< 3 s to ready, < 150 MB for the control plane) are the reference.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k3rs_e2e::{Backend, TestStore, free_port};

const READY_LINE: &str = "k3rs server is ready";
const COLD_TARGET: Duration = Duration::from_secs(3);
const RSS_TARGET_MB: f64 = 150.0;

struct Started {
    child: Child,
    took: Duration,
}

impl Drop for Started {
    fn drop(&mut self) {
        // SIGTERM and wait, so the next run finds its ports free.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn k3rs_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .map(|d| d.join("k3rs"))
        .context("bench binary has no directory")?;
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p k3rs -p k3rs-datastore -p k3rs-apiserver)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Starts `k3rs server --disable-agent` on `root` and waits for its ready line.
fn start(bin: &Path, root: &Path, endpoint: Option<&str>) -> Result<Started> {
    let (https, etcd, health) = (free_port()?, free_port()?, free_port()?);
    let began = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.arg("server")
        .arg("--config")
        .arg(root.join("none.yaml"))
        .arg("--data-dir")
        .arg(root.join("data"))
        .arg("--write-kubeconfig")
        .arg(root.join("k3rs.yaml"))
        .args(["--https-listen-port", &https.to_string()])
        .args(["--bind-address", "127.0.0.1", "--disable-agent"])
        .args(["--datastore-listen-address", &format!("127.0.0.1:{etcd}")])
        .args([
            "--datastore-arg",
            &format!("metrics-address=127.0.0.1:{health}"),
        ])
        // Health ports of the scheduler and controller manager, if installed.
        .args([
            "--kube-scheduler-arg",
            &format!("secure-port={}", free_port()?),
        ])
        .args([
            "--kube-controller-manager-arg",
            &format!("secure-port={}", free_port()?),
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(e) = endpoint {
        cmd.args(["--datastore-endpoint", e]);
    }
    std::fs::write(root.join("none.yaml"), "")?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains(READY_LINE) {
                let _ = tx.send(());
            }
        }
    });
    let mut started = Started {
        child,
        took: Duration::ZERO,
    };
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => {
            started.took = began.elapsed();
            Ok(started)
        }
        Err(_) => bail!("k3rs server did not become ready within 60 s"),
    }
}

/// (command name, RSS MiB) of `pid` and its children.
fn tree_rss(pid: u32) -> Vec<(String, f64)> {
    let mut out = vec![(comm(pid), rss_mb(pid))];
    for child in k3rs_e2e::supervisor::children_of(pid) {
        out.push((child.1, rss_mb(child.0)));
    }
    out
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `runs` cold and warm starts on each datastore and prints the tables.
pub async fn run(runs: usize, datastores: &str) -> Result<()> {
    let bin = k3rs_binary()?;
    let mut starts = Vec::new();
    let mut memory = Vec::new();
    for target in datastores
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        // PostgreSQL and MariaDB get a fresh database the datastore creates;
        // etcd is a real etcd 3.4 started for the run.
        let (store, endpoint) = match target.parse::<Backend>()? {
            Backend::Sqlite => (None, None),
            Backend::Postgres => {
                let db = k3rs_e2e::unique_name("k3rs_bench_server");
                let url = format!("postgres://postgres@{}/{db}", k3rs_e2e::POSTGRES_ADDR);
                (None, Some(url))
            }
            Backend::Mariadb => {
                let db = k3rs_e2e::unique_name("k3rs_bench_server");
                let url = format!("mysql://root@tcp({})/{db}", k3rs_e2e::MARIADB_ADDR);
                (None, Some(url))
            }
            Backend::Etcd => {
                let store = TestStore::start(Backend::Etcd).await?;
                let url = store.endpoint().to_string();
                (Some(store), Some(url))
            }
        };
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        for i in 0..runs.max(1) {
            let dir = tempfile::tempdir()?;
            let first = start(&bin, dir.path(), endpoint.as_deref())?;
            cold.push(first.took);
            drop(first);
            let again = start(&bin, dir.path(), endpoint.as_deref())?;
            warm.push(again.took);
            if i == 0 {
                // Idle: let start-up allocations settle, as a user would see it.
                std::thread::sleep(Duration::from_secs(5));
                memory.push((target.to_string(), tree_rss(again.child.id())));
            }
        }
        if let (Some(url), Ok(backend)) = (&endpoint, target.parse::<Backend>())
            && let Some(db) = url.rsplit('/').next()
            && store.is_none()
        {
            k3rs_e2e::drop_database(backend, db, true);
        }
        cold.sort();
        warm.sort();
        starts.push((target.to_string(), cold, warm));
        if let Some(s) = store {
            s.stop().await;
        }
    }

    println!(
        "k3rs server --disable-agent, start to ready ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| datastore | runs | cold p50 ms | cold max ms | warm p50 ms | warm max ms | cold max vs 3 s target |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (t, cold, warm) in &starts {
        let max = cold.last().copied().unwrap_or_default();
        println!(
            "| {t} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x |",
            cold.len(),
            ms(cold[cold.len() / 2]),
            ms(max),
            ms(warm[warm.len() / 2]),
            ms(warm.last().copied().unwrap_or_default()),
            max.as_secs_f64() / COLD_TARGET.as_secs_f64()
        );
    }
    println!();
    println!("| datastore | process | RSS at idle MiB |");
    println!("|---|---|---:|");
    for (t, procs) in &memory {
        let total: f64 = procs.iter().map(|(_, r)| r).sum();
        for (name, rss) in procs {
            println!("| {t} | {name} | {rss:.1} |");
        }
        println!(
            "| {t} | **all** | **{total:.1}** ({:.2}x of the {RSS_TARGET_MB:.0} MB target) |",
            total / RSS_TARGET_MB
        );
    }
    Ok(())
}
