//! The kernel side: feeding a ruleset transaction to `nft -f -` (or
//! `iptables-restore`), behind [`Kernel`] so the sync logic is testable
//! without root. [`NftSyncer`] remembers what it applied last and sends only
//! the difference; after any failure it replaces the whole table.

use std::io::Write;
use std::process::{Command, Stdio};

use super::nft::{self, Ruleset};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("running {program}: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("{program} rejected the ruleset: {stderr}")]
    Rejected {
        program: &'static str,
        stderr: String,
    },
}

/// Something that loads a ruleset script atomically.
pub trait Kernel: Send + 'static {
    fn apply(&mut self, script: &str) -> Result<(), ApplyError>;

    /// Makes sure `chain` in `table` holds `rule` (iptables only: the hooks
    /// from built-in chains, which a restore cannot add idempotently).
    fn ensure_rule(&mut self, _table: &str, _chain: &str, _rule: &str) -> Result<(), ApplyError> {
        Ok(())
    }
}

impl<K: Kernel + ?Sized> Kernel for Box<K> {
    fn apply(&mut self, script: &str) -> Result<(), ApplyError> {
        (**self).apply(script)
    }
    fn ensure_rule(&mut self, table: &str, chain: &str, rule: &str) -> Result<(), ApplyError> {
        (**self).ensure_rule(table, chain, rule)
    }
}

/// Runs `program args…` with `script` on stdin (the pod network's
/// masquerade table loads through it too).
pub(crate) fn run_with_stdin(
    program: &'static str,
    args: &[&str],
    script: &str,
) -> Result<(), ApplyError> {
    let spawn = |source| ApplyError::Spawn { program, source };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as the program's failure below.
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ApplyError::Rejected {
            program,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The real `nft` binary: one `nft -f -` call is one kernel transaction.
#[derive(Debug, Default)]
pub struct NftCli;

impl Kernel for NftCli {
    fn apply(&mut self, script: &str) -> Result<(), ApplyError> {
        run_with_stdin("nft", &["-f", "-"], script)
    }
}

/// `iptables-restore --noflush`: replaces only the chains named in the
/// script, atomically per table.
#[derive(Debug, Default)]
pub struct IptablesRestore;

impl Kernel for IptablesRestore {
    fn apply(&mut self, script: &str) -> Result<(), ApplyError> {
        run_with_stdin("iptables-restore", &["--noflush", "-w", "5"], script)
    }

    fn ensure_rule(&mut self, table: &str, chain: &str, rule: &str) -> Result<(), ApplyError> {
        let rule: Vec<&str> = rule.split_whitespace().collect();
        let check = Command::new("iptables")
            .args(["-w", "5", "-t", table, "-C", chain])
            .args(&rule)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| ApplyError::Spawn {
                program: "iptables",
                source,
            })?;
        if check.success() {
            return Ok(());
        }
        let mut args = vec!["-w", "5", "-t", table, "-I", chain, "1"];
        args.extend(rule);
        run_with_stdin("iptables", &args, "")
    }
}

/// Whether `program` runs here.
pub fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How a sync went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    Unchanged,
    Incremental,
    Full,
}

/// Keeps one nftables table equal to the desired [`Ruleset`].
pub struct NftSyncer<K> {
    kernel: K,
    table: String,
    applied: Option<Ruleset>,
}

impl<K: Kernel> NftSyncer<K> {
    pub fn new(kernel: K, table: impl Into<String>) -> Self {
        Self {
            kernel,
            table: table.into(),
            applied: None,
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Applies `desired`: the difference to the last applied ruleset, or the
    /// whole table on the first call and whenever the difference fails
    /// (someone changed the table behind our back).
    pub fn sync(&mut self, desired: Ruleset) -> Result<Synced, ApplyError> {
        if let Some(old) = &self.applied {
            if *old == desired {
                return Ok(Synced::Unchanged);
            }
            if let Some(tx) = nft::diff(&self.table, old, &desired) {
                match self.kernel.apply(&tx) {
                    Ok(()) => {
                        self.applied = Some(desired);
                        return Ok(Synced::Incremental);
                    }
                    Err(e) => {
                        tracing::warn!(table = %self.table, error = %e, "incremental nftables update failed; replacing the table");
                    }
                }
            }
        }
        self.applied = None;
        self.kernel.apply(&nft::full(&self.table, &desired))?;
        self.applied = Some(desired);
        Ok(Synced::Full)
    }

    /// Forgets what was applied: the next sync replaces the whole table.
    pub fn invalidate(&mut self) {
        self.applied = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::{Endpoint, Model, PortRules, Protocol};
    use std::sync::{Arc, Mutex};

    /// Records scripts; fails while `fail` is set.
    #[derive(Clone, Default)]
    struct FakeKernel {
        scripts: Arc<Mutex<Vec<String>>>,
        fail: Arc<Mutex<bool>>,
    }

    impl Kernel for FakeKernel {
        fn apply(&mut self, script: &str) -> Result<(), ApplyError> {
            self.scripts.lock().unwrap().push(script.to_string());
            if *self.fail.lock().unwrap() {
                return Err(ApplyError::Rejected {
                    program: "nft",
                    stderr: "No such file or directory".into(),
                });
            }
            Ok(())
        }
    }

    fn model(endpoints: &[[u8; 4]]) -> Model {
        Model {
            ports: vec![PortRules {
                namespace: "default".into(),
                name: "web".into(),
                port_name: "80".into(),
                protocol: Protocol::Tcp,
                cluster_ip: [10, 43, 0, 5].into(),
                port: 80,
                node_port: None,
                external_ips: vec![],
                affinity_timeout: None,
                external_local: false,
                internal_local: false,
                cluster_endpoints: endpoints
                    .iter()
                    .map(|ip| Endpoint {
                        ip: (*ip).into(),
                        port: 8080,
                    })
                    .collect(),
                local_endpoints: vec![],
            }],
            pod_cidrs: Default::default(),
        }
    }

    #[test]
    fn full_first_then_incremental_then_full_after_failure() {
        let k = FakeKernel::default();
        let mut s = NftSyncer::new(k.clone(), "t");
        let m1 = model(&[[10, 42, 0, 5]]);
        assert_eq!(s.sync(nft::render(&m1)).unwrap(), Synced::Full);
        assert_eq!(s.sync(nft::render(&m1)).unwrap(), Synced::Unchanged);
        let m2 = model(&[[10, 42, 0, 5], [10, 42, 0, 6]]);
        assert_eq!(s.sync(nft::render(&m2)).unwrap(), Synced::Incremental);
        {
            let scripts = k.scripts.lock().unwrap();
            assert_eq!(scripts.len(), 2);
            assert!(scripts[0].contains("delete table ip t"));
            assert!(!scripts[1].contains("table"), "{}", scripts[1]);
        }
        // The table was changed behind our back: the incremental update
        // fails, and the whole table is replaced.
        *k.fail.lock().unwrap() = true;
        assert!(s.sync(nft::render(&m1)).is_err());
        *k.fail.lock().unwrap() = false;
        assert_eq!(s.sync(nft::render(&m1)).unwrap(), Synced::Full);
        let scripts = k.scripts.lock().unwrap();
        assert!(scripts.last().unwrap().contains("delete table ip t"));
    }
}
