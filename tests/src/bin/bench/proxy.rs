//! `bench proxy`: the node agent's service proxy programming the real
//! kernel. Loads Services × endpoints, then changes one endpoint at a time
//! and measures from the change to `nft` having committed it (model render,
//! diff, transaction). The reference, in the same run, is the same ruleset
//! through `iptables-restore` (loaded without hooks into the built-in chains).
//! Addresses come from 10.250.0.0/16 (services) and 10.251.0.0/16
//! (endpoints) and no node ports are used, so the rules catch no real
//! traffic while they exist; both are removed at the end.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k3rs_node_agent::proxy::apply::{ApplyError, IptablesRestore, Kernel, NftCli, NftSyncer};
use k3rs_node_agent::proxy::iptables::IptablesSyncer;
use k3rs_node_agent::proxy::model::{Endpoint, Model, PortRules, Protocol};
use k3rs_node_agent::proxy::nft;

use crate::Sample;

const NFT_TABLE: &str = "k3rs-bench-proxy";
const IPT_PREFIX: &str = "K3RB";

pub struct Load {
    pub services: usize,
    pub endpoints: usize,
    pub changes: usize,
}

pub struct Row {
    pub backend: &'static str,
    pub initial: Duration,
    pub change: Sample,
    /// The part of each change spent in the kernel tool (`nft`/`iptables-restore`).
    pub kernel: Sample,
}

fn ip(net: u8, i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(10, net, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn model(load: &Load) -> Model {
    let mut ports = Vec::with_capacity(load.services);
    for s in 0..load.services {
        let eps = (0..load.endpoints)
            .map(|e| Endpoint {
                ip: ip(251, s * load.endpoints + e),
                port: 8080,
            })
            .collect();
        ports.push(PortRules {
            namespace: "bench".into(),
            name: format!("svc-{s:05}"),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            cluster_ip: ip(250, s),
            port: 80,
            node_port: None,
            external_ips: vec![],
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
            cluster_endpoints: eps,
            local_endpoints: vec![],
        });
    }
    ports.sort_by_key(PortRules::id);
    Model {
        ports,
        pod_cidrs: ["10.251.0.0/16".to_string()].into(),
    }
}

/// Change `n`: one endpoint of one service moves to a fresh address (as
/// when a pod is replaced).
fn change(m: &mut Model, n: usize) {
    let svc = (n * 37) % m.ports.len();
    let p = &mut m.ports[svc];
    let slot = n % p.cluster_endpoints.len();
    p.cluster_endpoints[slot].ip =
        std::net::Ipv4Addr::new(10, 252, (n / 250) as u8, (n % 250 + 1) as u8);
}

/// `sync` returns how long the kernel tool took.
fn measure(
    load: &Load,
    mut sync: impl FnMut(&Model) -> Result<Duration>,
) -> Result<(Duration, Sample, Sample)> {
    let mut m = model(load);
    let t = Instant::now();
    sync(&m)?;
    let initial = t.elapsed();
    let mut sample = Sample::default();
    let mut kernel = Sample::default();
    let start = Instant::now();
    for n in 0..load.changes {
        change(&mut m, n);
        let t = Instant::now();
        kernel.lat.push(sync(&m)?);
        sample.lat.push(t.elapsed());
        sample.ops += 1;
    }
    sample.elapsed = start.elapsed();
    Ok((initial, sample, kernel))
}

/// Times the kernel tool's share of each sync.
struct Timed<K>(K, Arc<Mutex<Duration>>);

impl<K: Kernel> Kernel for Timed<K> {
    fn apply(&mut self, script: &str) -> Result<(), ApplyError> {
        let t = Instant::now();
        let r = self.0.apply(script);
        if let Ok(mut d) = self.1.lock() {
            *d = t.elapsed();
        }
        r
    }
}

fn remove_nft_table() {
    let _ = Command::new("nft")
        .args(["delete", "table", "ip", NFT_TABLE])
        .stderr(Stdio::null())
        .status();
}

fn remove_ipt_chains() -> Result<()> {
    let mut script = String::new();
    for table in ["nat", "filter"] {
        let out = Command::new("iptables")
            .args(["-w", "5", "-t", table, "-S"])
            .output()
            .context("iptables -S")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let chains: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("-N "))
            .filter(|c| c.starts_with(&format!("{IPT_PREFIX}-")))
            .collect();
        script.push_str(&format!("*{table}\n"));
        for c in &chains {
            script.push_str(&format!(":{c} - [0:0]\n"));
        }
        for c in &chains {
            script.push_str(&format!("-X {c}\n"));
        }
        script.push_str("COMMIT\n");
    }
    IptablesRestore.apply(&script)?;
    Ok(())
}

pub fn run(load: &Load) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    eprintln!(
        "bench: nftables, {} services x {} endpoints",
        load.services, load.endpoints
    );
    let took = Arc::new(Mutex::new(Duration::ZERO));
    let last = |took: &Arc<Mutex<Duration>>| took.lock().map(|d| *d).unwrap_or_default();
    let mut syncer = NftSyncer::new(Timed(NftCli, took.clone()), NFT_TABLE);
    let r = measure(load, |m| {
        syncer.sync(nft::render(m))?;
        Ok(last(&took))
    });
    remove_nft_table();
    let (initial, change, kernel) = r.context("nftables")?;
    rows.push(Row {
        backend: "nftables (nft -f, incremental)",
        initial,
        change,
        kernel,
    });

    eprintln!("bench: iptables-restore reference");
    let mut syncer =
        IptablesSyncer::new(Timed(IptablesRestore, took.clone()), IPT_PREFIX).unhooked();
    let r = measure(load, |m| {
        syncer.sync(m)?;
        Ok(last(&took))
    });
    let cleanup = remove_ipt_chains();
    let (initial, change, kernel) = r.context("iptables-restore")?;
    cleanup.context("removing the benchmark's iptables chains")?;
    rows.push(Row {
        backend: "iptables-restore (reference)",
        initial,
        change,
        kernel,
    });
    Ok(rows)
}

/// The target for one endpoint change reaching the kernel.
pub const TARGET: Duration = Duration::from_millis(100);

pub fn print(load: &Load, rows: &[Row]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "\nservice proxy: {} services x {} endpoints, {} single-endpoint changes (target < {} ms)\n",
        load.services,
        load.endpoints,
        load.changes,
        TARGET.as_millis()
    );
    println!(
        "| backend | initial load ms | change p50 ms | change p99 ms | in nft/iptables-restore p50 ms | p99 / target | p50 vs iptables |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let reference = rows.last().map(|r| ms(r.change.pct(0.5))).unwrap_or(0.0);
    for r in rows {
        let p50 = ms(r.change.pct(0.5));
        let p99 = ms(r.change.pct(0.99));
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2}x |",
            r.backend,
            ms(r.initial),
            p50,
            p99,
            ms(r.kernel.pct(0.5)),
            p99 / ms(TARGET),
            p50 / reference.max(1e-9),
        );
    }
}
