//! Test fixtures shared by the k3rs cross-daemon tests and the bench program.
//!
//! The main one is [`TestStore`]: an etcd v3 endpoint backed either by a real
//! etcd 3.4 process (started on free loopback ports in a fresh temp dir) or by
//! an in-process k3rs-datastore on SQLite (fresh temp dir), PostgreSQL or
//! MariaDB (a fresh, uniquely named database that is dropped afterwards).
//!
//! A store whose prerequisite is missing (no `etcd` binary, database down)
//! fails to start with an error saying what to install or start; tests never
//! skip themselves.

pub mod cluster;
pub mod containerd;
pub mod fake_dns;
pub mod fake_node;
pub mod netns;
pub mod registry;
pub mod supervisor;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::Client;

/// PostgreSQL the tests use (DESIGN.md §6): trust auth for user `postgres`.
pub const POSTGRES_ADDR: &str = "127.0.0.1:5432";
/// MariaDB the tests use (DESIGN.md §6): user `root`, empty password.
pub const MARIADB_ADDR: &str = "127.0.0.1:3306";

/// How long a store may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What serves the etcd v3 API in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// A real etcd 3.4 process: the reference.
    Etcd,
    /// k3rs-datastore on a SQLite file.
    Sqlite,
    /// k3rs-datastore on PostgreSQL.
    Postgres,
    /// k3rs-datastore on MariaDB / MySQL.
    Mariadb,
}

impl Backend {
    /// Every backend, the reference first.
    pub const ALL: [Backend; 4] = [
        Backend::Etcd,
        Backend::Sqlite,
        Backend::Postgres,
        Backend::Mariadb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Etcd => "etcd",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mariadb => "mariadb",
        }
    }

    /// Whether this is k3rs-datastore (rather than the etcd reference).
    pub fn is_shim(self) -> bool {
        self != Backend::Etcd
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "etcd" => Ok(Backend::Etcd),
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" | "pg" => Ok(Backend::Postgres),
            "mariadb" | "mysql" => Ok(Backend::Mariadb),
            other => bail!("unknown backend {other:?} (etcd, sqlite, postgres, mariadb)"),
        }
    }
}

/// Knobs of a [`TestStore`] that tests may need to turn.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Period of watch progress notifications (etcd
    /// `--experimental-watch-progress-notify-interval`; the shim's
    /// `Config::progress_notify_interval`). `None` keeps each default (10 min).
    pub progress_notify_interval: Option<Duration>,
}

enum Kind {
    Etcd(Child),
    /// `None` once shut down.
    Shim(Option<k3rs_datastore::Server>),
}

/// A running etcd v3 endpoint for one test. Stop it with [`TestStore::stop`];
/// dropping it also cleans up, best effort (kills etcd, drops the database).
pub struct TestStore {
    backend: Backend,
    endpoint: String,
    kind: Kind,
    /// A database created for this store, dropped at the end.
    database: Option<String>,
    dir: tempfile::TempDir,
}

impl TestStore {
    /// Starts `backend` with default options.
    pub async fn start(backend: Backend) -> Result<TestStore> {
        Self::start_with(backend, &StoreOptions::default()).await
    }

    /// Starts `backend`: a fresh etcd process, or an in-process shim on a
    /// fresh SQLite file / uniquely named PostgreSQL or MariaDB database.
    pub async fn start_with(backend: Backend, opts: &StoreOptions) -> Result<TestStore> {
        let started = tokio::time::timeout(START_TIMEOUT, async {
            match backend {
                Backend::Etcd => start_etcd(opts).await,
                _ => start_shim(backend, opts).await,
            }
        })
        .await;
        match started {
            Ok(r) => r.with_context(|| format!("starting the {backend} test store")),
            Err(_) => bail!("the {backend} test store did not start within {START_TIMEOUT:?}"),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `127.0.0.1:PORT` (what `etcdctl --endpoints` takes).
    pub fn host_port(&self) -> &str {
        self.endpoint
            .strip_prefix("http://")
            .unwrap_or(&self.endpoint)
    }

    /// The store's scratch directory (etcd data dir / SQLite file live below it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The database created for this store (PostgreSQL / MariaDB only).
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// A new client connected to this store.
    pub async fn client(&self) -> Result<Client> {
        Client::connect([self.endpoint.as_str()], None)
            .await
            .with_context(|| format!("connect to {} at {}", self.backend, self.endpoint))
    }

    /// Shuts the store down and drops its database.
    pub async fn stop(mut self) {
        match &mut self.kind {
            Kind::Etcd(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Kind::Shim(server) => {
                if let Some(server) = server.take() {
                    server.shutdown().await;
                }
            }
        }
        if let Some(db) = self.database.take() {
            let backend = self.backend;
            let dropped = tokio::time::timeout(
                Duration::from_secs(20),
                tokio::task::spawn_blocking(move || drop_database(backend, &db, true)),
            )
            .await;
            if dropped.is_err() {
                eprintln!("warning: dropping the {backend} test database timed out");
            }
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Kind::Etcd(child) = &mut self.kind {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Not stopped (a test failed): the shim may still hold connections, so
        // do not wait for the drop; it completes once this process exits.
        if let Some(db) = self.database.take() {
            drop_database(self.backend, &db, false);
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; callers retry on a race).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A name no other test (in this or a concurrent process) uses: lower-case
/// ASCII, digits and `_`, valid as a PostgreSQL/MariaDB database name.
pub fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The version `etcd --version` reports, or "?".
pub fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim_start_matches("etcd Version: ").to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// Waits until a client can connect and `Status` answers.
async fn wait_ready(endpoint: &str, deadline: Instant) -> Result<()> {
    let mut last = String::new();
    while Instant::now() < deadline {
        match Client::connect([endpoint], None).await {
            Ok(mut c) => match c.status().await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{endpoint} did not answer Status in time (last error: {last})")
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

async fn start_etcd(opts: &StoreOptions) -> Result<TestStore> {
    let mut last_err = anyhow!("etcd did not start");
    // Ports are picked then released; another process may grab one first.
    for _attempt in 0..3 {
        let dir = tempfile::tempdir()?;
        let (client, peer) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "k3rs-test", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("k3rs-test={peer_url}")])
            .args(["--log-level", "warn"]);
        if let Some(d) = opts.progress_notify_interval {
            cmd.arg(format!(
                "--experimental-watch-progress-notify-interval={}ms",
                d.as_millis()
            ));
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| {
                anyhow!(
                    "cannot run `etcd` ({e}): etcd 3.4 must be on PATH \
                     (run ./scripts/setup.sh, or apt-get install etcd-server)"
                )
            })?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = async {
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("etcd exited with {status}:\n{}", tail(&log_path));
                }
                if let Ok(mut c) = Client::connect([endpoint.as_str()], None).await
                    && c.status().await.is_ok()
                {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("etcd did not become ready:\n{}", tail(&log_path));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        .await;
        match ready {
            Ok(()) => {
                return Ok(TestStore {
                    backend: Backend::Etcd,
                    endpoint,
                    kind: Kind::Etcd(child),
                    database: None,
                    dir,
                });
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                last_err = e;
            }
        }
    }
    Err(last_err)
}

/// Fails fast, with what to do, when a database server is not listening
/// (the shim would otherwise retry opening it forever).
async fn require_listening(addr: &str, what: &str) -> Result<()> {
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!(
            "{what} is not reachable at {addr} ({e}); the tests need it running \
             (run ./scripts/setup.sh)"
        ),
        Err(_) => bail!("{what} at {addr} did not accept a connection within 3s"),
    }
}

async fn start_shim(backend: Backend, opts: &StoreOptions) -> Result<TestStore> {
    let dir = tempfile::tempdir()?;
    let (endpoint, database) = match backend {
        Backend::Sqlite => (String::new(), None),
        Backend::Postgres => {
            require_listening(POSTGRES_ADDR, "PostgreSQL").await?;
            let db = unique_name("k3rs_t");
            (
                format!("postgres://postgres@{POSTGRES_ADDR}/{db}"),
                Some(db),
            )
        }
        Backend::Mariadb => {
            require_listening(MARIADB_ADDR, "MariaDB").await?;
            let db = unique_name("k3rs_t");
            (format!("mysql://root@tcp({MARIADB_ADDR})/{db}"), Some(db))
        }
        Backend::Etcd => bail!("etcd is not a k3rs-datastore backend"),
    };
    let mut config = k3rs_datastore::Config::new(endpoint, dir.path());
    if let Some(d) = opts.progress_notify_interval {
        config.progress_notify_interval = d;
    }
    let server = k3rs_datastore::start(config).await?;
    let addr = server
        .grpc_addr()
        .context("k3rs-datastore did not listen on TCP")?;
    let endpoint = format!("http://{addr}");
    // Build the store first so that a failure below still drops the database.
    let store = TestStore {
        backend,
        endpoint,
        kind: Kind::Shim(Some(server)),
        database,
        dir,
    };
    wait_ready(&store.endpoint, Instant::now() + Duration::from_secs(10)).await?;
    Ok(store)
}

/// Drops a test database with the database's CLI. With `wait` false the
/// command runs detached (it may block until this process's connections close).
pub fn drop_database(backend: Backend, db: &str, wait: bool) {
    let (host, port) = match backend {
        Backend::Postgres => POSTGRES_ADDR.split_once(':'),
        Backend::Mariadb => MARIADB_ADDR.split_once(':'),
        _ => None,
    }
    .unwrap_or(("127.0.0.1", ""));
    let mut cmd = match backend {
        Backend::Postgres => {
            let mut c = Command::new("psql");
            c.args(["-h", host, "-p", port, "-U", "postgres", "-qc"])
                .arg(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
            c
        }
        Backend::Mariadb => {
            let mut c = Command::new("mariadb");
            c.args(["-uroot", "-h", host, "-P", port, "-e"])
                .arg(format!("DROP DATABASE IF EXISTS `{db}`"));
            c
        }
        _ => return,
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if wait {
        let _ = cmd.status();
    } else {
        let _ = cmd.spawn();
    }
}

/// The first `etcdctl` on PATH.
pub fn etcdctl_path() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("etcdctl"))
        .find(|p| p.is_file())
        .context("etcdctl is not on PATH (run ./scripts/setup.sh, or apt-get install etcd-client)")
}

/// Compares transcripts (one line per observation) of the same scenario run on
/// several backends with the first one (the reference). Returns a readable
/// report of every backend that differs.
pub fn compare_transcripts(results: &[(Backend, Vec<String>)]) -> Result<(), String> {
    let Some((reference, expected)) = results.first() else {
        return Ok(());
    };
    let mut report = String::new();
    for (backend, got) in &results[1..] {
        if got != expected {
            report.push_str(&format!(
                "\n===== {backend} differs from {reference} (- {reference}, + {backend}) =====\n"
            ));
            report.push_str(&diff(expected, got));
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

/// A line diff (longest common subsequence) with 3 lines of context.
pub fn diff(a: &[String], b: &[String]) -> String {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j] = LCS length of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // (tag, line): ' ' common, '-' only in a, '+' only in b.
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', &a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', &b[j]));
            j += 1;
        } else {
            ops.push(('-', &a[i]));
            i += 1;
        }
    }
    let changed: Vec<bool> = ops.iter().map(|(t, _)| *t != ' ').collect();
    let near = |k: usize| {
        let lo = k.saturating_sub(3);
        let hi = (k + 4).min(ops.len());
        changed[lo..hi].iter().any(|c| *c)
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (tag, line)) in ops.iter().enumerate() {
        if near(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            out.push_str(&format!("{tag} {line}\n"));
        } else {
            skipped = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn diff_marks_changes_with_context() {
        let d = diff(&lines("a b c d e f g h i"), &lines("a b c d e X g h i j"));
        assert!(d.contains("- f\n+ X\n") || d.contains("+ X\n- f\n"), "{d}");
        assert!(d.contains("+ j"), "{d}");
        assert!(!d.contains("  a\n"), "far context is elided: {d}");
    }

    #[test]
    fn backends_parse() {
        for b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
        }
        assert!("oracle".parse::<Backend>().is_err());
    }

    #[test]
    fn unique_names_are_valid_database_names() {
        let a = unique_name("k3rs_t");
        let b = unique_name("k3rs_t");
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }
}
