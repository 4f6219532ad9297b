//! The kubelet API on port 10250: what the API server reaches for
//! `kubectl logs/exec/attach/port-forward/cp` and `nodes/<n>/proxy/...`.
//!
//! HTTPS with client certificates verified against the cluster CA; only
//! `/healthz` answers without one. Every other request is authorized by
//! the API server (`authz`, kubelet's Webhook mode). Endpoints follow upstream paths and
//! query parameters: `/containerLogs/{ns}/{pod}/{container}`,
//! `/exec|attach/{ns}/{pod}/{container}`, `/portForward/{ns}/{pod}`, `/pods`,
//! `/healthz`, `/stats/summary`, `/metrics`, `/metrics/resource`.

pub mod authz;
pub mod logs;
pub mod stats;
pub mod streaming;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::cri::{
    Container, ContainerFilter, ContainerState, CriClient, LABEL_CONTAINER_NAME, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID, PodSandbox, PodSandboxFilter, PodSandboxState, Runtime,
};

pub type Body = BoxBody<Bytes, std::io::Error>;
pub type Resp = Response<Body>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubelet API TLS: {0}")]
    Tls(#[from] k3rs_common::tls::TlsError),
    #[error("kubelet API serving certificate: {0}")]
    Pki(#[from] k3rs_common::pki::PkiError),
    #[error("binding the kubelet API on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How the kubelet API serves; the binary fills it from flags.
#[derive(Debug, Clone)]
pub struct ServingConfig {
    pub bind: SocketAddr,
    /// `None`: `<root-dir>/pki/serving-kubelet.crt/.key`, generated
    /// self-signed when missing.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// `None`: `<root-dir>/pki/ca.crt` when present.
    pub client_ca_file: Option<PathBuf>,
}

/// Everything a handler needs.
pub struct State {
    pub rt: Arc<CriClient>,
    pub client: kube::Client,
    pub node_name: String,
    pub pod_logs_dir: PathBuf,
    pub root_dir: PathBuf,
    /// Asks the API server who may do what (SubjectAccessReview, cached).
    pub authorizer: authz::Authorizer,
}

/// The certificate and key paths to serve with, creating a self-signed pair
/// for the node's name and address when the defaults do not exist yet.
pub fn serving_files(
    cfg: &ServingConfig,
    root_dir: &Path,
    node_name: &str,
    node_ip: std::net::IpAddr,
) -> Result<(PathBuf, PathBuf), Error> {
    if let (Some(c), Some(k)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        return Ok((c.clone(), k.clone()));
    }
    let dir = root_dir.join("pki");
    let crt = dir.join("serving-kubelet.crt");
    let key = dir.join("serving-kubelet.key");
    if !(crt.exists() && key.exists()) {
        // Like kubelet without a cluster-issued cert: a private CA of our
        // own signs the serving cert; clients that check it must be told.
        let ca = k3rs_common::pki::Ca::generate(&format!("{node_name}-ca"))?;
        let ck = ca.issue(&k3rs_common::pki::CertSpec {
            common_name: node_name.to_string(),
            dns_names: vec![node_name.to_string(), "localhost".into()],
            ip_addresses: vec![node_ip, std::net::IpAddr::from([127, 0, 0, 1])],
            server: true,
            validity_days: 365,
            ..Default::default()
        })?;
        k3rs_common::pki::write_public(&crt, &format!("{}{}", ck.cert_pem, ca.cert_pem))?;
        k3rs_common::pki::write_private(&key, &ck.key_pem)?;
        tracing::info!(cert = %crt.display(), "generated a self-signed kubelet serving certificate");
    }
    Ok((crt, key))
}

/// A bound, not yet serving, kubelet API listener.
pub struct Listener {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    pub local_addr: SocketAddr,
}

/// Binds the port and loads TLS (before the agent registers, so the Node
/// advertises the port actually bound).
pub async fn bind(
    cfg: &ServingConfig,
    root_dir: &Path,
    node_name: &str,
    node_ip: std::net::IpAddr,
) -> Result<Listener, Error> {
    let (crt, key) = serving_files(cfg, root_dir, node_name, node_ip)?;
    let client_ca = cfg
        .client_ca_file
        .clone()
        .or_else(|| Some(root_dir.join("pki").join("ca.crt")).filter(|p| p.exists()));
    if client_ca.is_none() {
        tracing::warn!("no --client-ca-file: the kubelet API refuses every client");
    }
    let tls =
        k3rs_common::tls::server_config(&crt, &key, client_ca.as_deref(), false, &[b"http/1.1"])?;
    let listener = TcpListener::bind(cfg.bind)
        .await
        .map_err(|source| Error::Bind {
            addr: cfg.bind,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: cfg.bind,
        source,
    })?;
    Ok(Listener {
        listener,
        tls: Arc::new(tls),
        local_addr,
    })
}

/// Serves until the task is aborted.
pub async fn serve(l: Listener, state: Arc<State>) {
    tracing::info!(address = %l.local_addr, "kubelet API serving");
    let acceptor = TlsAcceptor::from(l.tls);
    loop {
        let (tcp, peer) = match l.listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kubelet API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "kubelet API TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // rustls verified any presented chain against the client CA.
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| authz::User::from_cert(c.as_ref()));
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let user = user.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, user, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "kubelet API connection ended");
            }
        });
    }
}

async fn handle(state: &State, user: Option<authz::User>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    let Some(user) = user else {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let attrs = authz::Attributes::of(
        user,
        &state.node_name,
        req.method(),
        &path,
        k3rs_common::http_proxy::is_upgrade(req.headers()),
    );
    match state.authorizer.allowed(&attrs).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(user = %attrs.user.name, verb = attrs.verb, sub = attrs.subresource, "kubelet API request forbidden");
            return text(StatusCode::FORBIDDEN, attrs.forbidden());
        }
        Err(e) => {
            tracing::warn!(user = %attrs.user.name, error = %e, "kubelet API authorization failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, attrs.error());
        }
    }
    let query = Query::parse(req.uri().query());
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let method = req.method().clone();
    tracing::debug!(%method, %path, "kubelet API request");
    match (&method, segs.as_slice()) {
        (&Method::GET, ["containerLogs", ns, pod, container]) => {
            container_logs(state, ns, pod, container, &query).await
        }
        (&Method::GET | &Method::POST, ["exec", ns, pod, container]) => {
            streaming::exec(state, ns, pod, container, &query, req).await
        }
        (&Method::GET | &Method::POST, ["attach", ns, pod, container]) => {
            streaming::attach(state, ns, pod, container, &query, req).await
        }
        (&Method::GET | &Method::POST, ["portForward", ns, pod]) => {
            streaming::port_forward(state, ns, pod, &query, req).await
        }
        (&Method::GET, ["pods"]) => pods(state).await,
        (&Method::GET, ["stats", "summary"]) => stats::summary(state).await,
        (&Method::GET, ["metrics"]) => stats::metrics(state).await,
        (&Method::GET, ["metrics", "resource"]) => stats::metrics_resource(state).await,
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

pub fn text(code: StatusCode, s: impl Into<String>) -> Resp {
    let mut r = Response::new(full(s.into()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn json(v: &serde_json::Value) -> Resp {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A body fed from a channel (log streams).
pub fn channel_body(rx: mpsc::Receiver<Bytes>) -> Body {
    let s = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    StreamBody::new(s).boxed()
}

/// This node's pods, as the API knows them.
async fn pods(state: &State) -> Resp {
    let api: kube::Api<Pod> = kube::Api::all(state.client.clone());
    let lp = kube::api::ListParams::default().fields(&format!("spec.nodeName={}", state.node_name));
    match api.list(&lp).await {
        Ok(list) => json(&serde_json::json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {},
            "items": list.items,
        })),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("listing pods: {e}"),
        ),
    }
}

/// The newest sandbox of `ns/pod`, preferring a ready one.
pub async fn find_sandbox(rt: &CriClient, ns: &str, pod: &str) -> Option<PodSandbox> {
    let filter = PodSandboxFilter {
        label_selector: [
            (LABEL_POD_NAMESPACE.to_string(), ns.to_string()),
            (LABEL_POD_NAME.to_string(), pod.to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let mut boxes = rt.list_pod_sandboxes(Some(filter)).await.ok()?;
    boxes.sort_by_key(|b| {
        (
            b.state == PodSandboxState::SandboxReady as i32,
            b.created_at,
        )
    });
    boxes.pop()
}

/// Every instance of a container of the pod (all sandboxes), newest first.
pub async fn containers_of(rt: &CriClient, uid: &str, name: &str) -> Vec<Container> {
    let filter = ContainerFilter {
        label_selector: [
            (LABEL_POD_UID.to_string(), uid.to_string()),
            (LABEL_CONTAINER_NAME.to_string(), name.to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let mut cs = rt.list_containers(Some(filter)).await.unwrap_or_default();
    cs.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    cs
}

/// The running instance of `ns/pod/container`, or the text of a 404.
pub async fn running_container(
    rt: &CriClient,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<Container, String> {
    let Some(sb) = find_sandbox(rt, ns, pod).await else {
        return Err(format!("pod {ns}/{pod} not found on this node"));
    };
    let uid = sb.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
    containers_of(rt, &uid, container)
        .await
        .into_iter()
        .find(|c| c.state == ContainerState::ContainerRunning as i32)
        .ok_or_else(|| format!("container not found ({container:?})"))
}

/// `/containerLogs/{ns}/{pod}/{container}`.
async fn container_logs(state: &State, ns: &str, pod: &str, container: &str, q: &Query) -> Resp {
    let opts = match logs::Options::from_query(q, chrono::Utc::now()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let Some(sb) = find_sandbox(&state.rt, ns, pod).await else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} not found on this node"),
        );
    };
    let uid = sb.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
    let instances = containers_of(&state.rt, &uid, container).await;
    let pick = if opts.previous {
        instances.get(1)
    } else {
        instances.first()
    };
    let Some(c) = pick else {
        let msg = if opts.previous {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        } else {
            format!("container {container:?} in pod {pod:?} is not available")
        };
        return text(StatusCode::BAD_REQUEST, msg);
    };
    let path = log_path(&state.pod_logs_dir, c);
    let (tx, rx) = mpsc::channel(16);
    let rt = state.rt.clone();
    let id = c.id.clone();
    tokio::spawn(logs::stream(path, opts, tx, move || {
        let rt = rt.clone();
        let id = id.clone();
        Box::pin(async move {
            rt.container_status(&id)
                .await
                .is_ok_and(|s| s.state == ContainerState::ContainerRunning as i32)
        })
    }));
    let mut r = Response::new(channel_body(rx));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// `<pod-logs-dir>/<ns>_<pod>_<uid>/<container>/<attempt>.log`, from the
/// container's own labels (as the pod workers lay it out).
pub fn log_path(pod_logs_dir: &Path, c: &Container) -> PathBuf {
    let l = |k: &str| c.labels.get(k).map(String::as_str).unwrap_or("");
    let (name, attempt) = c
        .metadata
        .as_ref()
        .map(|m| (m.name.as_str(), m.attempt))
        .unwrap_or((l(LABEL_CONTAINER_NAME), 0));
    pod_logs_dir
        .join(format!(
            "{}_{}_{}",
            l(LABEL_POD_NAMESPACE),
            l(LABEL_POD_NAME),
            l(LABEL_POD_UID)
        ))
        .join(name)
        .join(format!("{attempt}.log"))
}

/// Rotates running containers' logs past the size limit, every 10 s.
pub async fn rotate_logs(rt: Arc<CriClient>, pod_logs_dir: PathBuf, policy: logs::Rotation) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let filter = ContainerFilter {
            state: Some(crate::cri::v1::ContainerStateValue {
                state: ContainerState::ContainerRunning as i32,
            }),
            label_selector: [(
                crate::cri::LABEL_MANAGED.to_string(),
                crate::cri::MANAGED_BY.to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let Ok(cs) = rt.list_containers(Some(filter)).await else {
            continue;
        };
        for c in cs {
            let path = log_path(&pod_logs_dir, &c);
            match logs::rotate_if_needed(&path, policy, chrono::Utc::now()) {
                Ok(true) => {
                    if let Err(e) = rt.reopen_container_log(&c.id).await {
                        tracing::warn!(container = %c.id, error = %e, "reopening a rotated log");
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "rotating a container log")
                }
            }
        }
    }
}

/// Query parameters; repeated keys (exec's `command`) keep every value.
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, Vec<String>>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.entry(percent_decode(k))
                .or_default()
                .push(percent_decode(v));
        }
        Self(m)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .get(k)
            .and_then(|v| v.last())
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    pub fn uint(&self, k: &str) -> Result<Option<u64>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{k}: {v:?} is not a non-negative integer")),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_repeated_commands() {
        let q = Query::parse(Some(
            "command=sh&command=-c&command=echo%20hi+there&stdin=true",
        ));
        assert_eq!(q.all("command"), ["sh", "-c", "echo hi there"]);
        assert!(q.flag("stdin"));
        assert!(!q.flag("tty"));
    }

    #[test]
    fn log_path_from_labels() {
        let c = Container {
            metadata: Some(crate::cri::v1::ContainerMetadata {
                name: "app".into(),
                attempt: 3,
            }),
            labels: [
                (LABEL_POD_NAMESPACE.to_string(), "ns".to_string()),
                (LABEL_POD_NAME.to_string(), "web".to_string()),
                (LABEL_POD_UID.to_string(), "u1".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        assert_eq!(
            log_path(Path::new("/logs"), &c),
            Path::new("/logs/ns_web_u1/app/3.log")
        );
    }
}
