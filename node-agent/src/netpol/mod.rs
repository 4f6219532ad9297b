//! NetworkPolicy enforcement for the pods on this node: watches
//! NetworkPolicies, Pods and Namespaces of the whole cluster (peers may live
//! anywhere), computes what the local pods may send and receive
//! ([`model`]), renders it as one nftables table ([`nft`]) and loads it
//! atomically through the service proxy's `nft` runner, again after every
//! change (bursts are coalesced).
//!
//! Pods of one node talk over a Linux bridge; bridged packets only meet the
//! `forward` hook with `br_netfilter` on, which [`enable_bridge_netfilter`]
//! makes sure of. Without `nft` on the machine policies are not enforced
//! (logged once); there is no iptables fallback.

pub mod model;
pub mod nft;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use tokio::sync::Notify;

use crate::proxy::apply::{self, ApplyError, Kernel, NftCli};
use crate::proxy::reflect;

/// The table the agent owns.
pub const DEFAULT_TABLE: &str = "k3rs-netpol";

/// How long to wait after a change for more before recomputing: a
/// Deployment rollout changes many pods at once.
const DEBOUNCE: Duration = Duration::from_millis(150);

#[derive(Debug, Clone)]
pub struct NetpolConfig {
    /// `false` (`--disable-network-policy`): remove our table, enforce nothing.
    pub enabled: bool,
    /// The nftables table (family `inet`).
    pub table: String,
}

impl Default for NetpolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            table: DEFAULT_TABLE.into(),
        }
    }
}

/// Keeps table `table` equal to the desired ruleset; replaces it whole on
/// every change (it holds only set elements and a fixed skeleton).
pub struct Syncer<K> {
    kernel: K,
    table: String,
    applied: Option<nft::Ruleset>,
}

impl<K: Kernel> Syncer<K> {
    pub fn new(kernel: K, table: impl Into<String>) -> Self {
        Self {
            kernel,
            table: table.into(),
            applied: None,
        }
    }

    /// Applies `desired` unless it is what was applied last; `Ok(true)`
    /// when the kernel was changed.
    pub fn sync(&mut self, desired: nft::Ruleset) -> Result<bool, ApplyError> {
        if self.applied.as_ref() == Some(&desired) {
            return Ok(false);
        }
        self.applied = None;
        self.kernel.apply(&nft::script(&self.table, &desired))?;
        self.applied = Some(desired);
        Ok(true)
    }

    /// Removes the table (policies disabled).
    pub fn remove(&mut self) -> Result<(), ApplyError> {
        self.applied = None;
        self.kernel.apply(&nft::remove_script(&self.table))
    }
}

/// Makes bridged IPv4 traffic (pod to pod on this node) pass the inet
/// hooks, loading `br_netfilter` if needed. Returns whether it is on.
pub fn enable_bridge_netfilter() -> bool {
    const SYSCTL: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if !std::path::Path::new(SYSCTL).exists() {
        let loaded = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        tracing::debug!(loaded, "modprobe br_netfilter");
    }
    match std::fs::read_to_string(SYSCTL) {
        Ok(v) if v.trim() == "1" => true,
        Ok(_) => match std::fs::write(SYSCTL, "1") {
            Ok(()) => {
                tracing::info!(path = SYSCTL, "enabled netfilter on bridged traffic");
                true
            }
            Err(e) => {
                tracing::warn!(path = SYSCTL, error = %e, "cannot enable netfilter on bridged traffic");
                false
            }
        },
        Err(_) => false,
    }
}

/// Runs until the task is dropped. The table stays when it stops, so a
/// restarting agent does not open the node meanwhile.
pub async fn run(client: kube::Client, config: NetpolConfig, node_name: String) {
    let table = config.table.clone();
    let nft_found = tokio::task::spawn_blocking(|| apply::available("nft"))
        .await
        .unwrap_or(false);
    if !nft_found {
        if config.enabled {
            tracing::warn!("network policy disabled: nft not found");
        }
        return;
    }
    if !config.enabled {
        let done = tokio::task::spawn_blocking(move || Syncer::new(NftCli, table).remove()).await;
        match done {
            Ok(Ok(())) => tracing::info!("network policy disabled"),
            Ok(Err(e)) => tracing::warn!(error = %e, "removing the network policy table"),
            Err(_) => {}
        }
        return;
    }
    if !tokio::task::spawn_blocking(enable_bridge_netfilter)
        .await
        .unwrap_or(false)
    {
        tracing::warn!(
            "br_netfilter is not available: traffic between pods of this node is not filtered"
        );
    }
    let changed = Arc::new(Notify::new());
    let (policies, drive_policies) = reflect(
        Api::<NetworkPolicy>::all(client.clone()),
        changed.clone(),
        "network policy",
    );
    let (pods, drive_pods) = reflect(
        Api::<Pod>::all(client.clone()),
        changed.clone(),
        "network policy",
    );
    let (namespaces, drive_namespaces) = crate::proxy::reflect(
        Api::<Namespace>::all(client),
        changed.clone(),
        "network policy",
    );
    let watches = async {
        tokio::join!(drive_policies, drive_pods, drive_namespaces);
    };
    let sync = async {
        // A partial view could isolate a pod without its allowed peers.
        for ready in [
            policies.wait_until_ready().await,
            pods.wait_until_ready().await,
            namespaces.wait_until_ready().await,
        ] {
            if ready.is_err() {
                return;
            }
        }
        tracing::info!(table = %config.table, "enforcing network policies");
        let mut syncer = Some(Syncer::new(NftCli, config.table.clone()));
        let mut backoff =
            k3rs_common::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let (pol, pod, ns) = (policies.state(), pods.state(), namespaces.state());
            let model = model::build(
                pol.iter().map(AsRef::as_ref),
                pod.iter().map(AsRef::as_ref),
                ns.iter().map(AsRef::as_ref),
                &node_name,
            );
            let ruleset = nft::render(&model);
            let Some(mut s) = syncer.take() else { return };
            let Ok((s, result)) = tokio::task::spawn_blocking(move || {
                let r = s.sync(ruleset);
                (s, r)
            })
            .await
            else {
                return;
            };
            syncer = Some(s);
            match result {
                Ok(true) => {
                    backoff.reset();
                    tracing::debug!(
                        ingress_isolated = model.ingress.isolated.len(),
                        egress_isolated = model.egress.isolated.len(),
                        "network policy rules synced"
                    );
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "programming network policy rules");
                    tokio::select! {
                        () = backoff.wait() => {}
                        () = changed.notified() => {}
                    }
                    continue;
                }
            }
            changed.notified().await;
            tokio::time::sleep(DEBOUNCE).await;
        }
    };
    tokio::select! {
        () = watches => {}
        () = sync => {}
    }
}
