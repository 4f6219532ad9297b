//! Container probes: startup, liveness and readiness, each an exec (CRI
//! `ExecSync`), an HTTP GET, a TCP connect or a gRPC health check, counted
//! against their thresholds the way kubelet does.
//!
//! The [`Prober`] lives as long as the pod's worker and is handed the pod
//! and what the runtime shows on every pass; it runs the probes that are
//! due and answers which containers are started and ready, which events to
//! publish and which containers to kill.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cri::{CriError, Runtime};
use crate::pod_sync::{Observed, PodEvent, is_running};

/// `User-Agent` of HTTP probes; servers and their logs match on the prefix.
const USER_AGENT: &str = "kube-probe/1.33";

/// Passes run about every second, so a probe counts as due slightly before
/// its period is over rather than a whole pass after it.
const SLACK_NANOS: i64 = 200_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    fn probe(self, c: &Container) -> Option<&Probe> {
        match self {
            Kind::Startup => c.startup_probe.as_ref(),
            Kind::Liveness => c.liveness_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
        }
    }
}

/// What one probe run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// The probe ran and the container answered badly (the output says how).
    Failure(String),
    /// The probe could not be run at all; counts as a failure.
    Error(String),
}

/// Whether a container is started (startup probe passed) and ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub started: bool,
    pub ready: bool,
}

impl Health {
    /// Before any probe ran: a container without a startup probe counts as
    /// started, one without a readiness probe as ready once started.
    pub fn initial(c: &Container) -> Self {
        let started = c.startup_probe.is_none();
        Self {
            started,
            ready: started && c.readiness_probe.is_none(),
        }
    }
}

/// A container a failed liveness or startup probe wants restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub container_id: String,
    pub name: String,
    /// Seconds between SIGTERM and SIGKILL.
    pub grace: i64,
    pub kind: Kind,
}

impl Kill {
    /// The `Killing` event's message, word for word as kubelet writes it.
    pub fn message(&self) -> String {
        format!(
            "Container {} failed {} probe, will be restarted",
            self.name,
            self.kind.name().to_lowercase()
        )
    }
}

#[derive(Debug, Default)]
pub struct Report {
    /// Per container ID.
    pub health: HashMap<String, Health>,
    pub events: Vec<PodEvent>,
    pub kills: Vec<Kill>,
}

#[derive(Debug, Default, Clone)]
struct Counter {
    successes: i32,
    failures: i32,
    /// The probe's current result once a threshold was crossed.
    result: Option<bool>,
    last_run: Option<i64>,
}

#[derive(Debug, Clone)]
struct ContainerState {
    health: Health,
    counters: HashMap<Kind, Counter>,
}

/// Probe state per container instance (container ID): a restarted container
/// starts from scratch, as under kubelet.
#[derive(Debug, Default)]
pub struct Prober {
    states: HashMap<String, ContainerState>,
}

struct Due {
    container: Container,
    id: String,
    kind: Kind,
    probe: Probe,
}

fn seconds(v: Option<i32>, default: i32, min: i32) -> i64 {
    i64::from(v.unwrap_or(default).max(min))
}

impl Prober {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the probes of the pod's running containers that are due at
    /// `now_nanos` (wall clock, CRI's unit).
    pub async fn run<R: Runtime>(
        &mut self,
        rt: &R,
        pod: &Pod,
        observed: &Observed,
        now_nanos: i64,
    ) -> Report {
        let spec = pod.spec.clone().unwrap_or_default();
        let pod_ip = observed
            .sandbox
            .as_ref()
            .and_then(|s| s.ips.first().cloned())
            .unwrap_or_default();
        let mut running = HashSet::new();
        let mut due = Vec::new();
        for c in &spec.containers {
            let Some(s) = observed.latest(&c.name).filter(|s| is_running(s)) else {
                continue;
            };
            running.insert(s.id.clone());
            let state = self
                .states
                .entry(s.id.clone())
                .or_insert_with(|| ContainerState {
                    health: Health::initial(c),
                    counters: HashMap::new(),
                });
            // Liveness and readiness wait for the startup probe to pass.
            let kinds: &[Kind] = if state.health.started {
                &[Kind::Liveness, Kind::Readiness]
            } else {
                &[Kind::Startup]
            };
            for &kind in kinds {
                let Some(probe) = kind.probe(c) else { continue };
                let counter = state.counters.entry(kind).or_default();
                let delay = seconds(probe.initial_delay_seconds, 0, 0) * 1_000_000_000;
                let period = seconds(probe.period_seconds, 10, 1) * 1_000_000_000;
                let is_due = now_nanos >= s.started_at + delay
                    && counter
                        .last_run
                        .is_none_or(|t| now_nanos - t + SLACK_NANOS >= period);
                if is_due {
                    counter.last_run = Some(now_nanos);
                    due.push(Due {
                        container: c.clone(),
                        id: s.id.clone(),
                        kind,
                        probe: probe.clone(),
                    });
                }
            }
        }
        self.states.retain(|id, _| running.contains(id));

        let verdicts = futures::future::join_all(
            due.iter()
                .map(|d| execute(rt, &d.probe, &d.container, &d.id, &pod_ip)),
        )
        .await;

        let mut report = Report::default();
        let pod_grace = crate::sandbox::termination_grace(pod);
        for (d, verdict) in due.iter().zip(verdicts) {
            let Some(state) = self.states.get_mut(&d.id) else {
                continue;
            };
            let counter = state.counters.entry(d.kind).or_default();
            let failed = match &verdict {
                Verdict::Success => {
                    counter.successes += 1;
                    counter.failures = 0;
                    false
                }
                Verdict::Failure(msg) | Verdict::Error(msg) => {
                    counter.failures += 1;
                    counter.successes = 0;
                    let how = if matches!(verdict, Verdict::Error(_)) {
                        "errored"
                    } else {
                        "failed"
                    };
                    report.events.push(PodEvent {
                        warning: true,
                        reason: "Unhealthy",
                        note: format!("{} probe {how}: {}", d.kind.name(), msg.trim_end()),
                        field_path: Some(format!("spec.containers{{{}}}", d.container.name)),
                    });
                    true
                }
            };
            let success_threshold = seconds(d.probe.success_threshold, 1, 1) as i32;
            let failure_threshold = seconds(d.probe.failure_threshold, 3, 1) as i32;
            if !failed && counter.successes >= success_threshold {
                counter.result = Some(true);
            } else if failed && counter.failures >= failure_threshold {
                counter.result = Some(false);
            }
            match (d.kind, counter.result) {
                (Kind::Startup, Some(true)) => state.health.started = true,
                (Kind::Readiness, Some(r)) => state.health.ready = r,
                (Kind::Liveness | Kind::Startup, Some(false)) => {
                    // Counted again from zero should the kill not take.
                    counter.failures = 0;
                    counter.result = None;
                    report.kills.push(Kill {
                        container_id: d.id.clone(),
                        name: d.container.name.clone(),
                        grace: d
                            .probe
                            .termination_grace_period_seconds
                            .unwrap_or(pod_grace)
                            .max(0),
                        kind: d.kind,
                    });
                }
                _ => {}
            }
            if state.health.started && d.kind == Kind::Startup {
                // Without a readiness probe the container is ready as soon as it started.
                state.health.ready = d.container.readiness_probe.is_none();
            }
        }
        for (id, state) in &self.states {
            report.health.insert(id.clone(), state.health);
        }
        report
    }
}

/// The port a probe names: a number, or the name of one of the container's ports.
fn port(c: &Container, p: &IntOrString) -> Result<u16, String> {
    let n = match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .map(|cp| cp.container_port)
                .ok_or_else(|| format!("unable to find port {name:?} in container {}", c.name))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connect errors in the words Go's net package uses (what users search for).
fn dial_error(addr: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("dial tcp {addr}: connect: connection refused")
        }
        std::io::ErrorKind::TimedOut => format!("dial tcp {addr}: i/o timeout"),
        _ => format!("dial tcp {addr}: {e}"),
    }
}

async fn connect(addr: &str, timeout: Duration) -> Result<tokio::net::TcpStream, String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            // Probes close with a reset, not a FIN: otherwise every probe
            // leaves a TIME-WAIT socket behind (in the pod or here), and at
            // one probe a second a reused port's SYN can hit one and stall.
            // (Deprecated because a non-zero linger blocks on drop; zero does not.)
            #[allow(deprecated)]
            let lingered = s.set_linger(Some(Duration::ZERO));
            if let Err(e) = lingered {
                tracing::debug!(%addr, error = %e, "setting SO_LINGER on a probe connection");
            }
            Ok(s)
        }
        Ok(Err(e)) => Err(dial_error(addr, &e)),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// Runs one probe once.
pub async fn execute<R: Runtime>(
    rt: &R,
    p: &Probe,
    c: &Container,
    container_id: &str,
    pod_ip: &str,
) -> Verdict {
    let timeout = Duration::from_secs(seconds(p.timeout_seconds, 1, 1) as u64);
    if let Some(exec) = &p.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return exec_probe(rt, container_id, cmd, timeout).await;
    }
    if let Some(h) = &p.http_get {
        let port = match port(c, &h.port) {
            Ok(p) => p,
            Err(e) => return Verdict::Error(e),
        };
        let host = h.host.clone().filter(|h| !h.is_empty());
        let host = host.as_deref().unwrap_or(pod_ip);
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let scheme = h.scheme.as_deref().unwrap_or("HTTP");
        let path = h.path.as_deref().unwrap_or("/");
        return http_probe(scheme, host, port, path, &headers, timeout).await;
    }
    if let Some(t) = &p.tcp_socket {
        let port = match port(c, &t.port) {
            Ok(p) => p,
            Err(e) => return Verdict::Error(e),
        };
        let host = t.host.clone().filter(|h| !h.is_empty());
        let addr = host_port(host.as_deref().unwrap_or(pod_ip), port);
        return match connect(&addr, timeout).await {
            Ok(_) => Verdict::Success,
            Err(e) => Verdict::Failure(e),
        };
    }
    if let Some(g) = &p.grpc {
        let port = match u16::try_from(g.port).ok().filter(|p| *p > 0) {
            Some(p) => p,
            None => return Verdict::Error(format!("invalid port number: {}", g.port)),
        };
        let service = g.service.clone().unwrap_or_default();
        return grpc_probe(&host_port(pod_ip, port), &service, timeout).await;
    }
    Verdict::Error("probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
}

async fn exec_probe<R: Runtime>(
    rt: &R,
    container_id: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Verdict {
    let timed_out = || Verdict::Failure(format!("command {:?} timed out", cmd.join(" ")));
    // The runtime enforces the timeout; ours is a backstop against a stuck runtime.
    let call = rt.exec_sync(container_id, cmd.clone(), timeout);
    match tokio::time::timeout(timeout + Duration::from_secs(5), call).await {
        Err(_) => timed_out(),
        Ok(Ok(r)) => {
            let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
            out.push_str(&String::from_utf8_lossy(&r.stderr));
            if r.exit_code == 0 {
                Verdict::Success
            } else {
                Verdict::Failure(out)
            }
        }
        Ok(Err(CriError::Timeout(_))) => timed_out(),
        Ok(Err(CriError::Rpc { status, .. }))
            if status.code() == tonic::Code::DeadlineExceeded
                || status.message().contains("timeout") =>
        {
            timed_out()
        }
        Ok(Err(e)) => Verdict::Error(e.to_string()),
    }
}

async fn http_probe(
    scheme: &str,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Verdict {
    let authority = host_port(host, port);
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let url = format!("{}://{authority}{path}", scheme.to_lowercase());
    let https = scheme.eq_ignore_ascii_case("HTTPS");
    if !https && !scheme.eq_ignore_ascii_case("HTTP") {
        return Verdict::Error(format!(
            "Get {url:?}: unsupported protocol scheme {scheme:?}"
        ));
    }
    let mut req = http::Request::get(path.as_str());
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("host") {
        req = req.header(http::header::HOST, authority.as_str());
    }
    if !has("user-agent") {
        req = req.header(http::header::USER_AGENT, USER_AGENT);
    }
    if !has("accept") {
        req = req.header(http::header::ACCEPT, "*/*");
    }
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = match req.body(http_body_util::Empty::<bytes::Bytes>::new()) {
        Ok(r) => r,
        Err(e) => return Verdict::Error(format!("Get {url:?}: {e}")),
    };
    let attempt = async {
        let stream = connect(&authority, timeout).await?;
        if https {
            let tls = tokio_rustls::TlsConnector::from(insecure_tls()?)
                .connect(server_name(host)?, stream)
                .await
                .map_err(|e| e.to_string())?;
            send(tls, req).await
        } else {
            send(stream, req).await
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Verdict::Failure(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
        Ok(Err(e)) => Verdict::Failure(format!("Get {url:?}: {e}")),
        Ok(Ok(code)) if (200..400).contains(&code) => Verdict::Success,
        Ok(Ok(code)) => Verdict::Failure(format!("HTTP probe failed with statuscode: {code}")),
    }
}

/// One HTTP/1.1 request over an established connection; the status code.
async fn send<IO>(
    io: IO,
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<u16, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

/// HTTPS probes do not verify the server's certificate (kubelet skips
/// verification too: pods serve self-signed certificates for their IPs).
fn insecure_tls() -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<std::sync::Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            k3rs_common::tls::client_config_opt_ca(None, None)
                .map(std::sync::Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// The TLS server name for `host`: an IP address or a DNS name.
fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(bare.to_string())
        .map_err(|_| format!("invalid TLS server name {host:?}"))
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; status 1 is SERVING.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

fn serving_status_name(s: i32) -> &'static str {
    match s {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

async fn grpc_probe(addr: &str, service: &str, timeout: Duration) -> Verdict {
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return Verdict::Error(e.to_string()),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            return Verdict::Failure(format!(
                "timeout: failed to connect service {addr:?} within {}s: {e}",
                timeout.as_secs()
            ));
        }
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        return Verdict::Failure(format!("failed to connect service {addr:?}: {e}"));
    }
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let req = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    match tokio::time::timeout(timeout, grpc.unary(req, path, codec)).await {
        Err(_) => Verdict::Failure(format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )),
        Ok(Err(s)) => Verdict::Failure(format!("error: health rpc probe failed: {}", s.message())),
        Ok(Ok(r)) if r.get_ref().status == 1 => Verdict::Success,
        Ok(Ok(r)) => Verdict::Failure(format!(
            "service unhealthy (responded with {:?})",
            serving_status_name(r.get_ref().status)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeRuntime;
    use crate::pod_sync::{Inputs, Syncer, observe};
    use crate::sandbox::PodDefaults;

    const SEC: i64 = 1_000_000_000;

    fn pod(container: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "uid-p"},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]},
        }))
        .unwrap()
    }

    fn defaults() -> PodDefaults {
        PodDefaults {
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
            pod_logs_dir: std::env::temp_dir().join("k3rs-na-unit-probe-logs"),
            host_resolv_conf: "/etc/resolv.conf".into(),
        }
    }

    /// Starts the pod on the fake runtime; returns the container's start time.
    async fn started(rt: &FakeRuntime, p: &Pod) -> (Observed, i64) {
        let d = defaults();
        let s = Syncer {
            rt,
            defaults: &d,
            cgroup_parent: String::new(),
            pods_dir: None,
            now_nanos: 0,
            image_backoff: &crate::images::PullBackoff::default(),
        };
        s.sync(p, &Inputs::default()).await.unwrap();
        let o = observe(rt, "uid-p").await.unwrap();
        let at = o.latest("app").unwrap().started_at;
        (o, at)
    }

    fn id(o: &Observed) -> String {
        o.latest("app").unwrap().id.clone()
    }

    #[tokio::test]
    async fn readiness_waits_for_delay_and_success_threshold() {
        let rt = FakeRuntime::new();
        let p = pod(
            serde_json::json!({"name": "app", "image": "busybox", "readinessProbe": {
                "exec": {"command": ["cat", "/tmp/ready"]},
                "initialDelaySeconds": 5, "periodSeconds": 2, "successThreshold": 2,
            }}),
        );
        let (o, t0) = started(&rt, &p).await;
        let mut pr = Prober::new();
        // Not ready, and not probed, before the initial delay.
        let r = pr.run(&rt, &p, &o, t0 + SEC).await;
        assert_eq!(
            r.health[&id(&o)],
            Health {
                started: true,
                ready: false
            }
        );
        assert!(!rt.calls().iter().any(|c| c.starts_with("ExecSync")));
        // One success is not enough with successThreshold 2.
        let r = pr.run(&rt, &p, &o, t0 + 5 * SEC).await;
        assert!(!r.health[&id(&o)].ready);
        assert!(
            rt.calls()
                .contains(&"ExecSync app cat /tmp/ready".to_string())
        );
        // Not due again within the period.
        pr.run(&rt, &p, &o, t0 + 6 * SEC).await;
        let execs = |rt: &FakeRuntime| {
            rt.calls()
                .iter()
                .filter(|c| c.starts_with("ExecSync"))
                .count()
        };
        assert_eq!(execs(&rt), 1);
        let r = pr.run(&rt, &p, &o, t0 + 7 * SEC).await;
        assert!(r.health[&id(&o)].ready);
        assert_eq!(execs(&rt), 2);
        // Failing takes failureThreshold (default 3) runs to turn unready.
        rt.set_exec("app", 1, "cat: can't open '/tmp/ready'\n");
        let r = pr.run(&rt, &p, &o, t0 + 9 * SEC).await;
        assert!(r.health[&id(&o)].ready);
        assert_eq!(
            r.events[0].note,
            "Readiness probe failed: cat: can't open '/tmp/ready'"
        );
        assert_eq!(r.events[0].reason, "Unhealthy");
        pr.run(&rt, &p, &o, t0 + 11 * SEC).await;
        let r = pr.run(&rt, &p, &o, t0 + 13 * SEC).await;
        assert!(!r.health[&id(&o)].ready);
        assert!(r.kills.is_empty(), "readiness never restarts");
    }

    #[tokio::test]
    async fn liveness_failures_kill_after_threshold() {
        let rt = FakeRuntime::new();
        let p = pod(
            serde_json::json!({"name": "app", "image": "busybox", "livenessProbe": {
                "exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2,
            }}),
        );
        let (o, t0) = started(&rt, &p).await;
        let mut pr = Prober::new();
        rt.set_exec("app", 1, "");
        let r = pr.run(&rt, &p, &o, t0 + SEC).await;
        assert!(r.kills.is_empty());
        assert_eq!(r.events[0].note, "Liveness probe failed: ");
        // Ready all along: liveness does not drive readiness.
        assert!(r.health[&id(&o)].ready);
        let r = pr.run(&rt, &p, &o, t0 + 2 * SEC).await;
        assert_eq!(r.kills.len(), 1);
        let k = &r.kills[0];
        assert_eq!(k.container_id, id(&o));
        assert_eq!(k.grace, 5);
        assert_eq!(
            k.message(),
            "Container app failed liveness probe, will be restarted"
        );
        // A success in between resets the count.
        let mut pr = Prober::new();
        pr.run(&rt, &p, &o, t0 + SEC).await;
        rt.set_exec("app", 0, "");
        pr.run(&rt, &p, &o, t0 + 2 * SEC).await;
        rt.set_exec("app", 1, "");
        let r = pr.run(&rt, &p, &o, t0 + 3 * SEC).await;
        assert!(r.kills.is_empty());
    }

    #[tokio::test]
    async fn startup_gates_liveness_and_readiness() {
        let rt = FakeRuntime::new();
        let p = pod(serde_json::json!({"name": "app", "image": "busybox",
            "startupProbe": {"exec": {"command": ["startup"]}, "periodSeconds": 1, "failureThreshold": 3,
                "terminationGracePeriodSeconds": 1},
            "livenessProbe": {"exec": {"command": ["live"]}, "periodSeconds": 1},
        }));
        let (o, t0) = started(&rt, &p).await;
        let mut pr = Prober::new();
        rt.set_exec("app", 1, "not yet");
        let r = pr.run(&rt, &p, &o, t0).await;
        assert_eq!(
            r.health[&id(&o)],
            Health {
                started: false,
                ready: false
            }
        );
        assert_eq!(r.events[0].note, "Startup probe failed: not yet");
        assert!(!rt.calls().iter().any(|c| c.contains("live")));
        rt.set_exec("app", 0, "");
        let r = pr.run(&rt, &p, &o, t0 + SEC).await;
        assert_eq!(
            r.health[&id(&o)],
            Health {
                started: true,
                ready: true
            }
        );
        pr.run(&rt, &p, &o, t0 + 2 * SEC).await;
        assert!(rt.calls().contains(&"ExecSync app live".to_string()));

        // Never starting: killed with the probe's own grace period.
        let mut pr = Prober::new();
        rt.set_exec("app", 1, "");
        let mut kills = Vec::new();
        for i in 0..3 {
            kills.extend(pr.run(&rt, &p, &o, t0 + i * SEC).await.kills);
        }
        assert_eq!(kills.len(), 1);
        assert_eq!(kills[0].grace, 1);
        assert_eq!(
            kills[0].message(),
            "Container app failed startup probe, will be restarted"
        );
    }

    #[tokio::test]
    async fn tcp_and_http_probes_against_local_servers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A tiny HTTP server: /ok answers 200 when the X-Probe header is set, else 500.
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                let ok = req.starts_with("get /ok ")
                    && req.contains("x-probe: yes")
                    && req.contains("user-agent: kube-probe/");
                let status = if ok {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "app", "ports": [{"name": "http", "containerPort": addr.port()}]
        }))
        .unwrap();
        let rt = FakeRuntime::new();
        let probe = |v: serde_json::Value| -> Probe { serde_json::from_value(v).unwrap() };
        let ok = probe(
            serde_json::json!({"httpGet": {"path": "/ok", "port": "http",
            "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}}),
        );
        assert_eq!(
            execute(&rt, &ok, &c, "x", "127.0.0.1").await,
            Verdict::Success
        );
        let bad = probe(serde_json::json!({"httpGet": {"path": "/ok", "port": addr.port()}}));
        assert_eq!(
            execute(&rt, &bad, &c, "x", "127.0.0.1").await,
            Verdict::Failure("HTTP probe failed with statuscode: 500".into())
        );
        let tcp = probe(serde_json::json!({"tcpSocket": {"port": addr.port()}}));
        assert_eq!(
            execute(&rt, &tcp, &c, "x", "127.0.0.1").await,
            Verdict::Success
        );
        // A port nothing listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let free = closed.local_addr().unwrap().port();
        drop(closed);
        let tcp = probe(serde_json::json!({"tcpSocket": {"port": free}}));
        assert_eq!(
            execute(&rt, &tcp, &c, "x", "127.0.0.1").await,
            Verdict::Failure(format!(
                "dial tcp 127.0.0.1:{free}: connect: connection refused"
            ))
        );
        let http = probe(serde_json::json!({"httpGet": {"path": "healthz", "port": free}}));
        assert_eq!(
            execute(&rt, &http, &c, "x", "127.0.0.1").await,
            Verdict::Failure(format!(
                "Get \"http://127.0.0.1:{free}/healthz\": dial tcp 127.0.0.1:{free}: connect: connection refused"
            ))
        );
        let named = probe(serde_json::json!({"tcpSocket": {"port": "nope"}}));
        assert!(matches!(
            execute(&rt, &named, &c, "x", "127.0.0.1").await,
            Verdict::Error(_)
        ));
    }

    /// An HTTPS server with a certificate from a CA nobody trusts: the
    /// probe skips verification as kubelet does, and still sees the status.
    #[tokio::test]
    async fn https_probe_skips_certificate_verification() {
        let dir = tempfile::tempdir().unwrap();
        let ca = k3rs_common::pki::Ca::generate("untrusted-ca").unwrap();
        let ck = ca
            .issue(&k3rs_common::pki::CertSpec {
                common_name: "pod".into(),
                dns_names: vec!["pod.example".into()],
                server: true,
                validity_days: 1,
                ..Default::default()
            })
            .unwrap();
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&crt, &ck.cert_pem).unwrap();
        std::fs::write(&key, &ck.key_pem).unwrap();
        let tls = k3rs_common::tls::server_config(&crt, &key, None, false, &[]).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((s, _)) = listener.accept().await {
                let Ok(mut s) = acceptor.accept(s).await else {
                    continue;
                };
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                let status = if req.starts_with("get /healthz ") {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
                let _ = s.shutdown().await;
            }
        });
        let c: Container = serde_json::from_value(serde_json::json!({"name": "app"})).unwrap();
        let rt = FakeRuntime::new();
        let probe = |path: &str, scheme: &str| -> Probe {
            serde_json::from_value(serde_json::json!(
                {"httpGet": {"path": path, "port": port, "scheme": scheme}}
            ))
            .unwrap()
        };
        assert_eq!(
            execute(&rt, &probe("/healthz", "HTTPS"), &c, "x", "127.0.0.1").await,
            Verdict::Success
        );
        assert_eq!(
            execute(&rt, &probe("/other", "HTTPS"), &c, "x", "127.0.0.1").await,
            Verdict::Failure("HTTP probe failed with statuscode: 503".into())
        );
        // Plain HTTP against a TLS port fails rather than passing.
        assert!(matches!(
            execute(&rt, &probe("/healthz", "HTTP"), &c, "x", "127.0.0.1").await,
            Verdict::Failure(_)
        ));
    }
}
