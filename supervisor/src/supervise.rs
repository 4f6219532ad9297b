//! Keeping daemons running: each daemon gets a task that starts it, waits
//! for it to be ready, health-checks it, restarts it with capped exponential
//! back-off when it exits or stops answering, and reports crash loops. The
//! `Supervisor` starts daemons one after another (each once the previous is
//! ready) and stops them in reverse order.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use k3rs_common::Backoff;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::daemon::{DaemonSpec, LogSink, Running, describe_exit};

/// Timings of supervision; the defaults suit production, tests shrink them.
#[derive(Debug, Clone)]
pub struct Options {
    /// Period of liveness checks once a daemon is ready.
    pub health_interval: Duration,
    /// Consecutive failed liveness checks that get a daemon restarted.
    pub failure_threshold: u32,
    /// Period of readiness checks while a daemon starts.
    pub ready_poll: Duration,
    /// How often to say that a starting daemon is still not ready.
    pub ready_warn_every: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// More restarts than this within `crash_loop_window` is a crash loop.
    pub crash_loop_restarts: usize,
    pub crash_loop_window: Duration,
    /// A daemon healthy for this long has its back-off reset.
    pub stable_after: Duration,
    /// Time between SIGTERM and SIGKILL when stopping a daemon.
    pub stop_grace: Duration,
    /// How often the manifests directory is checked for changes.
    pub manifests_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            health_interval: Duration::from_secs(5),
            failure_threshold: 3,
            ready_poll: Duration::from_millis(200),
            ready_warn_every: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            crash_loop_restarts: 5,
            crash_loop_window: Duration::from_secs(300),
            stable_after: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
            manifests_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// It exited 2 (bad configuration, or a refused join) before it was
    /// ever ready; `reason` is its last line.
    #[error("{name} cannot run with this configuration ({status}): {reason}")]
    RejectedConfig {
        name: &'static str,
        status: String,
        reason: String,
    },
    #[error("{name} stopped being supervised")]
    Lost { name: &'static str },
}

/// Why a daemon is being restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Exited(String),
    Unhealthy(String),
    SpawnFailed(String),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Exited(s) => write!(f, "exited ({s})"),
            Cause::Unhealthy(s) => write!(f, "failed its health checks ({s})"),
            Cause::SpawnFailed(s) => write!(f, "could not be started ({s})"),
        }
    }
}

/// What to do about one restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub delay: Duration,
    /// Restarts within the crash-loop window, this one included.
    pub recent: usize,
    pub crash_loop: bool,
}

/// Restart bookkeeping for one daemon: back-off and the crash-loop window.
/// Pure logic; callers pass the current time.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    backoff: Backoff,
    restarts: VecDeque<Instant>,
    window: Duration,
    limit: usize,
    total: u64,
}

impl RestartTracker {
    pub fn new(opts: &Options) -> Self {
        Self {
            backoff: Backoff::new(opts.backoff_initial, opts.backoff_max),
            restarts: VecDeque::new(),
            window: opts.crash_loop_window,
            limit: opts.crash_loop_restarts,
            total: 0,
        }
    }

    /// Records a restart at `now` and returns how long to wait before it.
    pub fn on_restart(&mut self, now: Instant) -> Restart {
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.window)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        self.total += 1;
        let recent = self.restarts.len();
        Restart {
            delay: self.backoff.next_delay(),
            recent,
            crash_loop: recent > self.limit,
        }
    }

    /// The daemon ran healthy for a while: the next failure starts the
    /// back-off from its initial delay again.
    pub fn on_stable(&mut self) {
        self.backoff.reset();
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// A daemon's state as its task reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Starting,
    Ready {
        pid: u32,
    },
    Restarting,
    /// It cannot run with this configuration; the supervisor gives up.
    /// (exit status, the daemon's last line)
    Failed(String, String),
    Stopped,
}

struct Handle {
    name: &'static str,
    stop: watch::Sender<bool>,
    state: watch::Receiver<State>,
    task: JoinHandle<()>,
}

/// Runs daemons in order and stops them in reverse order.
pub struct Supervisor {
    opts: Options,
    sink: LogSink,
    daemons: Vec<Handle>,
}

impl Supervisor {
    pub fn new(opts: Options, sink: LogSink) -> Self {
        Self {
            opts,
            sink,
            daemons: Vec::new(),
        }
    }

    /// Starts supervising `spec` and returns once it is ready. If it exits
    /// with code 2 (bad flags) before ever being ready, that is fatal.
    pub async fn start(&mut self, spec: DaemonSpec) -> Result<(), SuperviseError> {
        let name = spec.name;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (state_tx, mut state_rx) = watch::channel(State::Starting);
        let task = tokio::spawn(supervise(
            spec,
            self.sink.clone(),
            self.opts.clone(),
            state_tx,
            stop_rx,
        ));
        // Registered before waiting, so a shutdown during start stops it.
        self.daemons.push(Handle {
            name,
            stop: stop_tx,
            state: state_rx.clone(),
            task,
        });
        let state = state_rx
            .wait_for(|s| matches!(s, State::Ready { .. } | State::Failed(..) | State::Stopped))
            .await
            .map(|s| s.clone())
            .map_err(|_| SuperviseError::Lost { name })?;
        match state {
            State::Failed(status, reason) => Err(SuperviseError::RejectedConfig {
                name,
                status,
                reason,
            }),
            State::Stopped => Err(SuperviseError::Lost { name }),
            _ => Ok(()),
        }
    }

    /// The current pid of each daemon that is ready (name, pid).
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.daemons
            .iter()
            .filter_map(|h| match *h.state.borrow() {
                State::Ready { pid } => Some((h.name, pid)),
                _ => None,
            })
            .collect()
    }

    /// Stops every daemon, the last started first.
    pub async fn stop_all(&mut self) {
        while let Some(h) = self.daemons.pop() {
            tracing::info!(daemon = h.name, "stopping");
            let _ = h.stop.send(true);
            if let Err(e) = h.task.await {
                tracing::warn!(daemon = h.name, error = %e, "supervision task ended abnormally");
            }
        }
    }
}

/// Resolves when `stop` turns true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

enum Outcome {
    Restart(Cause),
    Stop,
}

/// The life of one daemon: start, get ready, stay healthy, restart.
async fn supervise(
    spec: DaemonSpec,
    sink: LogSink,
    opts: Options,
    state: watch::Sender<State>,
    mut stop: watch::Receiver<bool>,
) {
    let name = spec.name;
    let mut tracker = RestartTracker::new(&opts);
    let mut ever_ready = false;
    loop {
        let mut last_line = None;
        let outcome = match Running::spawn(&spec, &sink) {
            Ok(mut child) => {
                tracing::info!(daemon = name, pid = child.pid(), program = %spec.program.display(), "started");
                let outcome = run_once(
                    &spec,
                    &opts,
                    &mut child,
                    &state,
                    &mut stop,
                    &mut tracker,
                    &mut ever_ready,
                )
                .await;
                match &outcome {
                    Outcome::Stop => {
                        if let Some(status) = child.stop(opts.stop_grace).await {
                            tracing::info!(daemon = name, status = %describe_exit(&status), "stopped");
                        }
                        let _ = state.send(State::Stopped);
                        return;
                    }
                    Outcome::Restart(Cause::Unhealthy(_)) => {
                        child.stop(opts.stop_grace).await;
                    }
                    Outcome::Restart(_) => child.drain_output().await,
                }
                last_line = child.last_line();
                outcome
            }
            Err(e) => Outcome::Restart(Cause::SpawnFailed(e.to_string())),
        };
        let Outcome::Restart(cause) = outcome else {
            return;
        };
        // Exit code 2 is how every k3rs daemon says "bad flags": restarting
        // cannot help, and the user needs to hear it now, not in a loop.
        if !ever_ready && cause == Cause::Exited("exit code 2".into()) {
            let reason = last_line.unwrap_or_else(|| "see its log above".into());
            tracing::error!(daemon = name, %reason, "{name} cannot run with this configuration; not restarting it");
            let _ = state.send(State::Failed("exit code 2".into(), reason));
            return;
        }
        let _ = state.send(State::Restarting);
        let r = tracker.on_restart(Instant::now());
        if r.crash_loop {
            tracing::error!(
                daemon = name,
                restarts = r.recent,
                window = ?opts.crash_loop_window,
                %cause,
                retry_in = ?r.delay,
                "crash loop: {name} keeps failing; still retrying, at most every {:?}",
                opts.backoff_max
            );
        } else {
            tracing::warn!(daemon = name, %cause, retry_in = ?r.delay, restarts = r.recent, "{name} {cause}; restarting");
        }
        tokio::select! {
            _ = tokio::time::sleep(r.delay) => {}
            _ = stopped(&mut stop) => {
                let _ = state.send(State::Stopped);
                return;
            }
        }
    }
}

/// One run of a started child, until it must be restarted or stopped.
#[allow(clippy::too_many_arguments)]
async fn run_once(
    spec: &DaemonSpec,
    opts: &Options,
    child: &mut Running,
    state: &watch::Sender<State>,
    stop: &mut watch::Receiver<bool>,
    tracker: &mut RestartTracker,
    ever_ready: &mut bool,
) -> Outcome {
    let name = spec.name;
    let started = Instant::now();
    let mut last_warn = started;
    // Wait for readiness.
    loop {
        tokio::select! {
            status = child.wait() => return Outcome::Restart(exit_cause(status)),
            _ = stopped(stop) => return Outcome::Stop,
            _ = tokio::time::sleep(opts.ready_poll) => {}
        }
        match spec.health.ready().await {
            Ok(()) => break,
            Err(e) if last_warn.elapsed() >= opts.ready_warn_every => {
                last_warn = Instant::now();
                tracing::warn!(daemon = name, waited = ?started.elapsed(), error = %e, "{name} is not ready yet");
            }
            Err(e) => tracing::debug!(daemon = name, error = %e, "not ready yet"),
        }
    }
    *ever_ready = true;
    tracing::info!(daemon = name, pid = child.pid(), took = ?started.elapsed(), "{name} is ready");
    let _ = state.send(State::Ready { pid: child.pid() });

    // Stay alive.
    let ready_at = Instant::now();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            status = child.wait() => return Outcome::Restart(exit_cause(status)),
            _ = stopped(stop) => return Outcome::Stop,
            _ = tokio::time::sleep(opts.health_interval) => {}
        }
        match spec.health.live().await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(daemon = name, "{name} answers its health checks again");
                }
                failures = 0;
                if ready_at.elapsed() >= opts.stable_after {
                    tracker.on_stable();
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(daemon = name, failures, threshold = opts.failure_threshold, error = %e, "health check failed");
                if failures >= opts.failure_threshold {
                    return Outcome::Restart(Cause::Unhealthy(format!(
                        "{failures} in a row, last: {e}"
                    )));
                }
            }
        }
    }
}

fn exit_cause(status: std::io::Result<std::process::ExitStatus>) -> Cause {
    match status {
        Ok(s) => Cause::Exited(describe_exit(&s)),
        Err(e) => Cause::Exited(format!("wait failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Endpoint, Health};

    fn opts() -> Options {
        Options {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(800),
            crash_loop_restarts: 3,
            crash_loop_window: Duration::from_secs(60),
            ..Options::default()
        }
    }

    #[test]
    fn backoff_grows_to_the_cap_and_resets_when_stable() {
        let mut t = RestartTracker::new(&opts());
        let t0 = Instant::now();
        let delays: Vec<Duration> = (0..8)
            .map(|i| t.on_restart(t0 + Duration::from_secs(100 * i)).delay)
            .collect();
        // Jitter puts each delay in [cap/2, cap] of its step.
        assert!(delays[0] <= Duration::from_millis(101), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(801)),
            "{delays:?}"
        );
        assert!(
            delays[7] >= Duration::from_millis(400),
            "capped, not reset: {delays:?}"
        );
        t.on_stable();
        let d = t.on_restart(t0 + Duration::from_secs(10_000)).delay;
        assert!(
            d <= Duration::from_millis(101),
            "reset after a stable run: {d:?}"
        );
        assert_eq!(t.total(), 9);
    }

    #[test]
    fn crash_loop_is_counted_within_the_window() {
        let mut t = RestartTracker::new(&opts());
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!t.on_restart(at(0)).crash_loop);
        assert!(!t.on_restart(at(10)).crash_loop);
        let third = t.on_restart(at(20));
        assert_eq!(third.recent, 3);
        assert!(!third.crash_loop, "3 restarts is the limit, not over it");
        let fourth = t.on_restart(at(30));
        assert!(fourth.crash_loop);
        assert_eq!(fourth.recent, 4);
        // Long after, the old restarts left the window.
        let later = t.on_restart(at(200));
        assert_eq!(later.recent, 1);
        assert!(!later.crash_loop);
    }

    /// A fake daemon: `/bin/sh -c script`, "ready" when `ready_file` exists
    /// (probed through a tiny HTTP server below would be overkill: a TCP
    /// listener started by the script stands in).
    fn sh(name: &'static str, script: &str, port: u16) -> DaemonSpec {
        DaemonSpec {
            name,
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            health: Health::standard(Endpoint::Tcp(([127, 0, 0, 1], port).into())),
            env_remove: vec![],
        }
    }

    fn fast() -> Options {
        Options {
            health_interval: Duration::from_millis(100),
            failure_threshold: 2,
            ready_poll: Duration::from_millis(50),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            stop_grace: Duration::from_secs(2),
            ..Options::default()
        }
    }

    #[tokio::test]
    async fn exit_code_2_before_ready_is_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Supervisor::new(fast(), LogSink::Dir(dir.path().into()));
        let r = s.start(sh("bad", "echo 'bad flag' >&2; exit 2", 1)).await;
        assert!(
            matches!(r, Err(SuperviseError::RejectedConfig { name: "bad", .. })),
            "{r:?}"
        );
        s.stop_all().await;
        let log = std::fs::read_to_string(dir.path().join("bad.log")).unwrap();
        assert!(log.contains("bad flag"));
        // The error carries the daemon's own explanation.
        assert!(r.unwrap_err().to_string().contains("bad flag"));
    }

    /// A shell that serves a TCP port through a child process we can kill:
    /// python3 is on every CI machine of this project, `nc` is not.
    fn listener_script(port: u16) -> String {
        format!(
            "exec python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\",{port})); s.listen(); time.sleep(3600)'"
        )
    }

    #[tokio::test]
    async fn a_killed_daemon_is_restarted_and_stop_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Supervisor::new(fast(), LogSink::Dir(dir.path().into()));
        s.start(sh("listener", &listener_script(port), port))
            .await
            .unwrap();
        let [(_, pid)] = s.pids()[..] else {
            panic!("one daemon expected: {:?}", s.pids());
        };
        // SAFETY: plain kill(2) on the child we just started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let new_pid = loop {
            if let [(_, p)] = s.pids()[..]
                && p != pid
            {
                break p;
            }
            assert!(Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        s.stop_all().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stat = std::fs::read_to_string(format!("/proc/{new_pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z"),
            "still running: {stat}"
        );
    }
}
