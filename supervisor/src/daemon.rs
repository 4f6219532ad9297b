//! One child process: how it is spawned (own process group, dies with the
//! supervisor), where its output goes, and how it is stopped.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::config::LogFormat;
use crate::probe::Health;

/// Everything needed to run one daemon.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    /// Short name used in logs and log file names ("apiserver").
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub health: Health,
    /// Environment variables not passed on (the supervisor's own `K3RS_*`
    /// settings, which the daemons would otherwise read as their own flags).
    pub env_remove: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    LogFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where children's output goes.
#[derive(Debug, Clone)]
pub enum LogSink {
    /// Into the supervisor's stderr, each line tagged with the daemon name.
    Stream(LogFormat),
    /// Into `<dir>/<name>.log`, as written.
    Dir(PathBuf),
}

impl LogSink {
    /// Whether children should print colour codes.
    fn colour(&self) -> bool {
        use std::io::IsTerminal;
        matches!(self, LogSink::Stream(LogFormat::Text)) && std::io::stderr().is_terminal()
    }
}

/// A running child.
pub struct Running {
    child: Child,
    pid: u32,
    forwarders: Vec<JoinHandle<()>>,
    /// The last non-empty line the child printed: a daemon that gives up
    /// says why in it.
    last_line: Arc<Mutex<String>>,
}

impl Running {
    /// Starts `spec` in its own process group, with SIGTERM delivered to it
    /// if the supervisor dies, and its output forwarded to `sink`.
    pub fn spawn(spec: &DaemonSpec, sink: &LogSink) -> Result<Self, DaemonError> {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: a terminal's Ctrl-C reaches only the
            // supervisor, which stops daemons in order, and stopping a daemon
            // signals everything it started.
            .process_group(0)
            // Last resort if this handle is dropped without `stop`.
            .kill_on_drop(true);
        for k in &spec.env_remove {
            cmd.env_remove(k);
        }
        if !sink.colour() {
            cmd.env("NO_COLOR", "1");
        }
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls (prctl, getppid, kill-free checks).
        unsafe {
            cmd.pre_exec(move || {
                // No orphan survives the supervisor, even after SIGKILL.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The supervisor died before prctl took effect.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("supervisor exited"));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| DaemonError::Spawn {
            program: spec.program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        let out = Output::open(spec.name, sink)?;
        let last_line = Arc::new(Mutex::new(String::new()));
        let mut forwarders = Vec::new();
        if let Some(s) = child.stdout.take() {
            forwarders.push(tokio::spawn(forward(s, out.clone(), last_line.clone())));
        }
        if let Some(s) = child.stderr.take() {
            forwarders.push(tokio::spawn(forward(s, out, last_line.clone())));
        }
        Ok(Self {
            child,
            pid,
            forwarders,
            last_line,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last line the child printed (after `drain_output` for a dead child).
    pub fn last_line(&self) -> Option<String> {
        let l = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
        (!l.is_empty()).then(|| l.clone())
    }

    /// Waits for the child to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM to the process group, up to `grace` to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => Some(s),
            _ => {
                signal_group(self.pid, libc::SIGTERM);
                match tokio::time::timeout(grace, self.child.wait()).await {
                    Ok(r) => r.ok(),
                    Err(_) => {
                        tracing::warn!(
                            pid = self.pid,
                            ?grace,
                            "did not exit in time; sending SIGKILL"
                        );
                        signal_group(self.pid, libc::SIGKILL);
                        self.child.wait().await.ok()
                    }
                }
            }
        };
        // Whatever the daemon started and left behind goes too.
        signal_group(self.pid, libc::SIGKILL);
        self.drain_output().await;
        status
    }

    /// Lets the forwarders write the last lines a dead child printed.
    pub async fn drain_output(&mut self) {
        for f in self.forwarders.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), f).await;
        }
    }
}

fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions; a negative pid names
    // the process group the child leads (it was spawned with pgid = pid).
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Human-readable exit status: "exit code 1", "killed by SIGKILL".
pub fn describe_exit(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(sig) => format!("killed by {}", signal_name(sig)),
        None => status.to_string(),
    }
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// One daemon's output destination, shared by its stdout and stderr readers.
#[derive(Clone)]
enum Output {
    Stream {
        name: &'static str,
        format: LogFormat,
    },
    File(Arc<Mutex<std::fs::File>>),
}

impl Output {
    fn open(name: &'static str, sink: &LogSink) -> Result<Self, DaemonError> {
        match sink {
            LogSink::Stream(format) => Ok(Output::Stream {
                name,
                format: *format,
            }),
            LogSink::Dir(dir) => {
                let path = dir.join(format!("{name}.log"));
                let err = |source| DaemonError::LogFile {
                    path: path.clone(),
                    source,
                };
                std::fs::create_dir_all(dir).map_err(err)?;
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(err)?;
                Ok(Output::File(Arc::new(Mutex::new(f))))
            }
        }
    }

    fn write_line(&self, line: &str) {
        match self {
            Output::Stream { name, format } => {
                let text = tag_line(name, *format, line);
                // One write per line so lines of different daemons never interleave.
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
            }
            Output::File(f) => {
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                let _ = writeln!(f, "{line}");
            }
        }
    }
}

/// A child's line as it appears in the supervisor's stream: prefixed with
/// the daemon name in text mode; in JSON mode the daemon's own JSON object
/// gains a `"daemon"` field (other lines are wrapped in one).
pub fn tag_line(name: &str, format: LogFormat, line: &str) -> String {
    match format {
        LogFormat::Text => format!("[{name}] {line}\n"),
        LogFormat::Json => {
            let value = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(mut m)) => {
                    m.insert("daemon".into(), name.into());
                    serde_json::Value::Object(m)
                }
                _ => serde_json::json!({ "daemon": name, "message": line }),
            };
            format!("{value}\n")
        }
    }
}

async fn forward(stream: impl AsyncRead + Unpin, out: Output, last: Arc<Mutex<String>>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                if !line.trim().is_empty() {
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = line.to_string();
                }
                out.write_line(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Endpoint, Health};

    fn spec(script: &str) -> DaemonSpec {
        DaemonSpec {
            name: "test",
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            health: Health::standard(Endpoint::Tcp(([127, 0, 0, 1], 1).into())),
            env_remove: vec![],
        }
    }

    #[test]
    fn lines_are_tagged() {
        assert_eq!(
            tag_line("apiserver", LogFormat::Text, "hello"),
            "[apiserver] hello\n"
        );
        let j = tag_line(
            "datastore",
            LogFormat::Json,
            r#"{"level":"INFO","msg":"x"}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["daemon"], "datastore");
        assert_eq!(v["msg"], "x");
        let j = tag_line("datastore", LogFormat::Json, "plain text");
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["message"], "plain text");
    }

    #[tokio::test]
    async fn output_goes_to_the_log_dir_and_exit_is_described() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::Dir(dir.path().to_path_buf());
        let mut r = Running::spawn(&spec("echo out; echo err >&2; exit 3"), &sink).unwrap();
        let status = r.wait().await.unwrap();
        r.drain_output().await;
        assert_eq!(describe_exit(&status), "exit code 3");
        assert_eq!(r.last_line().as_deref(), Some("err"));
        let log = std::fs::read_to_string(dir.path().join("test.log")).unwrap();
        assert!(log.contains("out\n") && log.contains("err\n"), "{log}");
    }

    #[tokio::test]
    async fn stop_terminates_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::Dir(dir.path().to_path_buf());
        // A grandchild that ignores SIGTERM must still go (SIGKILL to the group).
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!(
            "sh -c 'trap \"\" TERM; echo $$ > {}; while true; do sleep 0.1; done' & wait",
            pidfile.display()
        );
        let mut r = Running::spawn(&spec(&script), &sink).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !pidfile.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let status = r.stop(Duration::from_secs(5)).await.unwrap();
        assert_eq!(describe_exit(&status), "killed by SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for init to reap it.
        assert!(
            stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z"),
            "grandchild survived: {stat}"
        );
    }
}
