//! The real `k3rs server` binary as a process, for supervisor tests: start it
//! on a data dir with free ports, wait for its ready line, find its children
//! in `/proc`, signal it, run kubectl against it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// What `k3rs server` prints once every daemon is ready.
pub const READY_LINE: &str = "k3rs server is ready";

/// The binaries the supervisor tests run.
pub const BINARIES: [&str; 6] = [
    "k3rs",
    "k3rs-datastore",
    "k3rs-apiserver",
    "k3rs-scheduler",
    "k3rs-controller-manager",
    "k3rs-node-agent",
];

/// Workspace crates those binaries are built from.
const SOURCE_CRATES: [&str; 8] = [
    "supervisor",
    "node-agent",
    "scheduler",
    "controller-manager",
    "datastore-shim",
    "apiserver",
    "apimachinery",
    "common",
];

/// The directory holding `k3rs`, `k3rs-datastore` and `k3rs-apiserver`,
/// up to date with the sources.
///
/// cargo builds a package's binaries for tests only when that package has
/// integration tests of its own, so `cargo nextest run` alone does not build
/// `k3rs-apiserver`, and a target dir reused across runs may hold a stale
/// one. `scripts/test.sh` builds every binary before the tests run; for other
/// runs, when a binary is missing or older than a source file, the first
/// call builds the three packages into the target dir this test executable
/// lives in.
pub fn binaries() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_binaries().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn workspace_root() -> Result<&'static Path> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tests/ has no parent")
}

fn build_binaries() -> Result<PathBuf> {
    // <target>/<profile>/deps/<test executable>
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable is not in <target>/<profile>/deps")?
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .context("no target dir above the profile dir")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let workspace = workspace_root()?;
    if binaries_fresh(&profile_dir, workspace) {
        return Ok(profile_dir);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .args([
            "--bins",
            "-p",
            "k3rs",
            "-p",
            "k3rs-datastore",
            "-p",
            "k3rs-apiserver",
            "-p",
            "k3rs-scheduler",
            "-p",
            "k3rs-controller-manager",
            "-p",
            "k3rs-node-agent",
        ]);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("running cargo build for the k3rs binaries")?;
    if !out.status.success() {
        bail!(
            "cargo build --workspace --bins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for b in BINARIES {
        if !profile_dir.join(b).is_file() {
            bail!(
                "{} missing after cargo build",
                profile_dir.join(b).display()
            );
        }
    }
    Ok(profile_dir)
}

/// Whether every binary exists and is newer than every source it is built
/// from (cargo's own notion of freshness is mtimes too).
fn binaries_fresh(profile_dir: &Path, workspace: &Path) -> bool {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(oldest_binary) = BINARIES
        .iter()
        .map(|b| mtime(&profile_dir.join(b)))
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().min())
    else {
        return false;
    };
    let mut newest_source = None;
    let mut consider = |p: &Path| {
        if let Some(t) = mtime(p) {
            newest_source = newest_source.max(Some(t));
        }
    };
    consider(&workspace.join("Cargo.toml"));
    consider(&workspace.join("Cargo.lock"));
    for krate in SOURCE_CRATES {
        walk(&workspace.join(krate), &mut consider);
    }
    newest_source.is_some_and(|s| s < oldest_binary)
}

/// Calls `f` on every file under `dir` except build output and tests.
fn walk(dir: &Path, f: &mut impl FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name == "tests" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, f),
            Ok(_) => f(&p),
            Err(_) => {}
        }
    }
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Extra `k3rs server` flags.
    pub args: Vec<String>,
    /// Extra lines for the config file.
    pub config: String,
    /// Also run containerd and the node agent (off by default: they need
    /// root and share host resources, so only the tests about them do).
    pub agent: bool,
}

/// A running `k3rs server` process. Dropping it kills the supervisor with
/// SIGKILL; its children follow through their parent-death signal.
pub struct K3rsServer {
    child: Child,
    /// Root of the test's files (config, kubeconfig, data dir).
    pub root: PathBuf,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub https_port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl K3rsServer {
    /// Starts `k3rs server` with its files under `root` (reused if present)
    /// on fresh free ports: API server on 127.0.0.1, datastore and its health
    /// port set through the config file.
    pub fn start(root: &Path, opts: &ServerOptions) -> Result<Self> {
        let bin = binaries()?.join("k3rs");
        let (https, etcd, health) = (
            crate::free_port()?,
            crate::free_port()?,
            crate::free_port()?,
        );
        // Tests run side by side: every health port is a free one.
        let (sched, cm) = (crate::free_port()?, crate::free_port()?);
        let data_dir = root.join("data");
        let kubeconfig = root.join("k3rs.yaml");
        let config = root.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "datastore-listen-address: 127.0.0.1:{etcd}\n\
                 datastore-arg:\n  - metrics-address=127.0.0.1:{health}\n\
                 kube-scheduler-arg:\n  - secure-port={sched}\n\
                 kube-controller-manager-arg:\n  - secure-port={cm}\n\
                 bind-address: 127.0.0.1\n{}{}",
                if opts.agent {
                    // Several nodes share this one host in tests: the
                    // cross-node pod network (flannel.1, its nft table)
                    // is host-wide, so it stays off here; tests/tests/
                    // pod_network.rs covers it with a namespace per host.
                    "flannel-backend: none\n"
                } else {
                    "disable-agent: true\n"
                },
                opts.config
            ),
        )?;
        let mut cmd = Command::new(&bin);
        cmd.arg("server")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .args(["--https-listen-port", &https.to_string()])
            .args(&opts.args);
        let (child, lines) = spawn_captured(cmd, "k3rs")?;
        Ok(Self {
            child,
            root: root.to_path_buf(),
            data_dir,
            kubeconfig,
            https_port: https,
            lines,
        })
    }

    /// Runs `k3rs <args>` with this server's config file and data dir
    /// (for the utility subcommands), returning its output.
    pub fn k3rs(&self, args: &[&str]) -> Result<Output> {
        let bin = binaries()?.join("k3rs");
        Ok(Command::new(&bin)
            .args(args)
            .arg("--config")
            .arg(self.root.join("config.yaml"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()?)
    }

    /// Starts `k3rs agent args...` (files under `root`); `kubeconfig` and
    /// `https_port` are the server's, for kubectl.
    pub fn start_agent(root: &Path, server: &K3rsServer, args: &[String]) -> Result<Self> {
        let bin = binaries()?.join("k3rs");
        std::fs::create_dir_all(root)?;
        let config = root.join("config.yaml");
        // One host, several nodes: no cross-node pod network (see `start`).
        std::fs::write(&config, "flannel-backend: none\n")?;
        let data_dir = root.join("data");
        let mut cmd = Command::new(&bin);
        cmd.arg("agent")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args);
        let (child, lines) = spawn_captured(cmd, "k3rs-agent")?;
        Ok(Self {
            child,
            root: root.to_path_buf(),
            data_dir,
            kubeconfig: server.kubeconfig.clone(),
            https_port: server.https_port,
            lines,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the supervisor printed so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for a printed line containing `needle`, failing early if the
    /// supervisor exits.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.output().into_iter().find(|l| l.contains(needle)) {
                return Ok(l);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("k3rs server exited ({status}) before printing {needle:?}");
            }
            if Instant::now() > deadline {
                bail!("k3rs server did not print {needle:?} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        self.wait_for_line(READY_LINE, timeout).map(drop)
    }

    /// Children of the supervisor as (pid, command name).
    pub fn children(&self) -> Vec<(u32, String)> {
        children_of(self.pid())
    }

    /// The pid of the child running `program` (e.g. "k3rs-apiserver").
    pub fn child_pid(&self, program: &str) -> Option<u32> {
        // The kernel keeps the first 15 bytes of a program name as `comm`.
        let comm = program.get(..15).unwrap_or(program);
        self.children()
            .into_iter()
            .find(|(_, c)| c == comm)
            .map(|(p, _)| p)
    }

    /// Sends `signal` ("TERM", "KILL", ...) to the supervisor.
    pub fn signal(&self, signal: &str) -> Result<()> {
        send_signal(self.pid(), signal)
    }

    /// Waits up to `timeout` for the supervisor to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("k3rs server did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs kubectl 1.33 (plain `kubectl` when that build is missing) with
    /// this server's kubeconfig.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        use std::io::Write;
        let kubectl = crate::cluster::kubectl_path("1.33").unwrap_or_else(|_| "kubectl".into());
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--request-timeout", "10s"])
            .args(args)
            .env("HOME", &self.root)
            .env("KUBECACHEDIR", self.root.join("kubecache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn kubectl")?;
        if let (Some(mut pipe), Some(s)) = (child.stdin.take(), stdin) {
            pipe.write_all(s.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Retries kubectl until it succeeds (or `timeout`), returning stdout.
    pub fn kubectl_until_ok(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.kubectl(args, stdin)?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            if Instant::now() > deadline {
                bail!(
                    "kubectl {args:?} kept failing for {timeout:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for K3rsServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `k3rs-node-agent` to join only (it fails before reaching the CRI
/// when the server refuses); returns (exit code, stderr).
pub fn node_agent_join(
    server: &K3rsServer,
    root: &Path,
    token: &str,
    node: &str,
    password_file: &Path,
) -> Result<(Option<i32>, String)> {
    let bin = binaries()?.join("k3rs-node-agent");
    let mut child = Command::new(bin)
        .args([
            "--server",
            &format!("https://127.0.0.1:{}", server.https_port),
            "--token",
            token,
            "--node-name",
            node,
            "--root-dir",
            &root.display().to_string(),
            "--node-password-file",
            &password_file.display().to_string(),
            "--container-runtime-endpoint",
            &format!("unix://{}", root.join("none.sock").display()),
            "--healthz-port",
            "0",
            // Side by side with other suites: no fixed kubelet port.
            "--port",
            "0",
            "--bind-address",
            "127.0.0.1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // A join that succeeds goes on to wait for the (absent) runtime.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            let out = child.wait_with_output()?;
            return Ok((
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        if root.join("kubelet.kubeconfig").exists() {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            return Ok((None, String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    bail!("k3rs-node-agent neither joined nor failed in 30s")
}

/// Spawns `cmd` with its stdout and stderr collected line by line (and
/// echoed with `tag`, shown when a test fails).
fn spawn_captured(mut cmd: Command, tag: &'static str) -> Result<(Child, Arc<Mutex<Vec<String>>>)> {
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                eprintln!("{tag}| {line}");
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
    }
    Ok((child, lines))
}

/// `kill -<signal> <pid>`.
pub fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("run kill")?;
    if !st.success() {
        bail!("kill -{signal} {pid} failed");
    }
    Ok(())
}

/// Whether `pid` is gone (or a zombie nobody has reaped yet).
pub fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat_fields(&stat).is_some_and(|(_, state, _)| state == "Z"),
    }
}

/// (comm, state, ppid) from a `/proc/<pid>/stat` line; comm may hold spaces
/// and parentheses, so it is cut at the last ')'.
fn stat_fields(stat: &str) -> Option<(String, String, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.to_string();
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Live children of `parent` as (pid, comm).
pub fn children_of(parent: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (comm, state, ppid) = stat_fields(&stat)?;
            (ppid == parent && state != "Z").then_some((pid, comm))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse() {
        let s = "123 (k3rs-apiserver) S 100 123 123 0 -1 4194560";
        assert_eq!(
            stat_fields(s),
            Some(("k3rs-apiserver".into(), "S".into(), 100))
        );
        let odd = "7 (a) b) Z 1 7";
        assert_eq!(stat_fields(odd), Some(("a) b".into(), "Z".into(), 1)));
    }

    #[test]
    fn this_process_has_a_parent_and_no_zombie_state() {
        assert!(!is_gone(std::process::id()));
    }
}
