//! The subresources the node agent serves: `pods/log`, `pods/exec`,
//! `pods/attach`, `pods/portforward` and `nodes/proxy`, plus `pods/proxy`
//! and `services/proxy`, which dial the pod (or one ready endpoint of the
//! Service) directly: in k3rs the API server runs on a node, with a route
//! to every pod network. For the kubelet ones the API server
//! checks the pod, finds its node's kubelet API (InternalIP and
//! `status.daemonEndpoints.kubeletEndpoint.Port`), authenticates with its
//! kubelet client certificate and relays the request: log streams are
//! passed through chunk by chunk, upgrades (SPDY or WebSocket) are answered
//! with the kubelet's own response and then spliced byte for byte.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use k3rs_common::http_proxy;
use serde_json::Value;

use crate::authn::UserInfo;
use crate::http::{self as h, Resp};
use crate::request::{Query, RequestInfo};
use crate::resources::ResourceDef;
use crate::rest::{Ctx, load_value};
use crate::status::{ApiError, ApiResult};
use crate::{Api, Error};

/// What the API server presents to kubelets, and how it checks them.
#[derive(Debug, Clone, Default)]
pub struct KubeletClientConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `None`: the kubelet's serving certificate is not verified (upstream's
    /// behaviour without `--kubelet-certificate-authority`).
    pub ca_file: Option<PathBuf>,
}

impl KubeletClientConfig {
    pub fn tls(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        let client = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        let mut cfg = k3rs_common::tls::client_config_opt_ca(self.ca_file.as_deref(), client)?;
        // Upgrades are HTTP/1.1 only.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Whether a request is for one of the subresources handled here.
pub fn handles(info: &RequestInfo) -> bool {
    match (
        info.group.as_str(),
        info.resource.as_str(),
        info.subresource.as_deref(),
    ) {
        ("", "pods", Some("log" | "exec" | "attach" | "portforward")) => true,
        ("", "nodes" | "pods" | "services", Some("proxy")) => info.name.is_some(),
        _ => false,
    }
}

pub async fn handle(
    api: &Arc<Api>,
    user: &UserInfo,
    res: &'static ResourceDef,
    info: RequestInfo,
    req: Request<Incoming>,
) -> Resp {
    match dispatch(api, user, res, info, req).await {
        Ok(r) => r,
        Err(e) => h::error(&e),
    }
}

async fn dispatch(
    api: &Arc<Api>,
    user: &UserInfo,
    res: &'static ResourceDef,
    info: RequestInfo,
    req: Request<Incoming>,
) -> ApiResult<Resp> {
    let query = Query::parse(req.uri().query());
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let sub = info.subresource.clone().unwrap_or_default();
    let name = info.name.clone().unwrap_or_default();
    if res.plural == "nodes" {
        let node = load(api, user, res, &info, &query, req.headers()).await?;
        let tail = node_proxy_tail(req.uri().path(), &name);
        let path = if raw_query.is_empty() {
            tail
        } else {
            format!("{tail}?{raw_query}")
        };
        return relay(api, &node, path, req).await;
    }
    let Some(ns) = info.namespace.clone() else {
        return Err(ApiError::not_found_path());
    };
    if sub == "proxy" {
        return backend_proxy(api, user, res, info, &ns, &query, raw_query, req).await;
    }
    if !matches!(
        (req.method(), sub.as_str()),
        (&http::Method::GET, _) | (&http::Method::POST, "exec" | "attach" | "portforward")
    ) {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource (pods/{sub})"
        )));
    }
    let pod = load(api, user, res, &info, &query, req.headers()).await?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
    let path = if sub == "portforward" {
        if node_name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        format!("/portForward/{ns}/{name}")
    } else {
        let container = pick_container(&pod, &name, query.get("container"))?;
        if node_name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        match sub.as_str() {
            "log" => {
                check_log_status(&pod, &name, &container, query.flag("previous"))?;
                format!("/containerLogs/{ns}/{name}/{container}")
            }
            "exec" | "attach" => {
                let phase = pod["status"]["phase"].as_str().unwrap_or("");
                if phase == "Succeeded" || phase == "Failed" {
                    let what = if sub == "exec" {
                        "exec into"
                    } else {
                        "attach to"
                    };
                    return Err(ApiError::bad_request(format!(
                        "cannot {what} a container in a completed pod; current phase is {phase}"
                    )));
                }
                if sub == "exec" && query.get("command").is_none() {
                    return Err(ApiError::bad_request("you must specify at least 1 command"));
                }
                format!("/{sub}/{ns}/{name}/{container}")
            }
            _ => return Err(ApiError::not_found_path()),
        }
    };
    let path = if raw_query.is_empty() {
        path
    } else {
        format!("{path}?{raw_query}")
    };
    let node = load_node(api, user, &node_name, req.headers()).await?;
    let resp = relay(api, &node, path, req).await?;
    if sub == "log" && !resp.status().is_success() {
        return Err(log_error(resp).await);
    }
    Ok(resp)
}

/// `[scheme:]name[:port]` as a proxy URL names its target.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    https: bool,
    name: String,
    port: String,
}

fn split_target(id: &str) -> ApiResult<Target> {
    let bad = || ApiError::bad_request(format!("invalid request {id:?}"));
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [n] => ("", *n, ""),
        [n, p] => ("", *n, *p),
        [s, n, p] => (*s, *n, *p),
        _ => return Err(bad()),
    };
    if name.is_empty() || !matches!(scheme, "" | "http" | "https") {
        return Err(bad());
    }
    Ok(Target {
        https: scheme == "https",
        name: name.to_string(),
        port: port.to_string(),
    })
}

/// `pods/proxy` and `services/proxy`: find the backend address, then relay.
#[allow(clippy::too_many_arguments)]
async fn backend_proxy(
    api: &Arc<Api>,
    user: &UserInfo,
    res: &'static ResourceDef,
    mut info: RequestInfo,
    ns: &str,
    query: &Query,
    raw_query: String,
    req: Request<Incoming>,
) -> ApiResult<Resp> {
    let id = info.name.clone().unwrap_or_default();
    let target = split_target(&id)?;
    info.name = Some(target.name.clone());
    let obj = load(api, user, res, &info, query, req.headers()).await?;
    let (ip, port) = if res.plural == "pods" {
        pod_backend(&obj, &target)?
    } else {
        service_backend(api, &obj, ns, &id, &target)?
    };
    let authority = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    let tail = proxy_tail(req.uri().path(), ns, res.plural).unwrap_or_else(|| "/".into());
    let path = if raw_query.is_empty() {
        tail
    } else {
        format!("{tail}?{raw_query}")
    };
    let what = format!("{}/{id}", res.plural);
    let dial_err = |e: http_proxy::ProxyError| {
        ApiError::unavailable(format!("error trying to reach {what}: {e}"))
    };
    if target.https {
        // Like upstream, the backend's certificate is not verified: pods
        // serve whatever certificate they like.
        let tls = k3rs_common::tls::client_config_opt_ca(None, None)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let io = http_proxy::connect_tls(&authority, &ip, Arc::new(tls))
            .await
            .map_err(dial_err)?;
        send(io, &what, &authority, path, req).await
    } else {
        let io = http_proxy::connect_tcp(&authority)
            .await
            .map_err(dial_err)?;
        send(io, &what, &authority, path, req).await
    }
}

/// The pod's IP and the port asked for: a number, a container port's name,
/// or (none given) the first declared container port, else 80.
fn pod_backend(pod: &Value, t: &Target) -> ApiResult<(String, u16)> {
    let ports: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .collect();
    let port = if t.port.is_empty() {
        ports
            .first()
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or(80)
    } else if let Ok(n) = t.port.parse::<u64>() {
        n
    } else {
        ports
            .iter()
            .find(|p| p["name"].as_str() == Some(t.port.as_str()))
            .and_then(|p| p["containerPort"].as_u64())
            .ok_or_else(|| {
                ApiError::bad_request(format!("no port named {:?} in pod {:?}", t.port, t.name))
            })?
    };
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid port {:?}", t.port)))?;
    let ip = pod["status"]["podIP"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::unavailable(format!("pod {:?} has no IP address yet", t.name)))?;
    Ok((ip.to_string(), port))
}

/// One ready endpoint of the Service for the port asked for (by Service
/// port number or name; none: the unnamed port), from its EndpointSlices.
fn service_backend(
    api: &Api,
    svc: &Value,
    ns: &str,
    id: &str,
    t: &Target,
) -> ApiResult<(String, u16)> {
    let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let port_name = if let Ok(n) = t.port.parse::<u64>() {
        let p = ports
            .iter()
            .find(|p| p["port"].as_u64() == Some(n))
            .ok_or_else(|| {
                ApiError::unavailable(format!(
                    "no service port {n} found for service {:?}",
                    t.name
                ))
            })?;
        p["name"].as_str().unwrap_or("").to_string()
    } else {
        t.port.clone()
    };
    if !t.port.is_empty()
        && t.port.parse::<u64>().is_err()
        && !ports
            .iter()
            .any(|p| p["name"].as_str() == Some(port_name.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "no service port named {port_name:?} in service {:?}",
            t.name
        )));
    }
    let (slices, _) = api.cache.list(&format!("/registry/endpointslices/{ns}/"));
    let mut candidates = Vec::new();
    for slice in slices.iter().filter_map(|e| e.value()) {
        if slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str()
            != Some(t.name.as_str())
        {
            continue;
        }
        let Some(port) = slice["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str().unwrap_or("") == port_name)
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            // Absent `ready` means ready, as for EndpointSlice consumers.
            if ep["conditions"]["ready"].as_bool() == Some(false) {
                continue;
            }
            if let Some(ip) = ep["addresses"][0].as_str() {
                candidates.push((ip.to_string(), port));
            }
        }
    }
    if candidates.is_empty() {
        return Err(ApiError::unavailable(format!(
            "no endpoints available for service {id:?}"
        )));
    }
    // Spread requests over the endpoints without keeping state.
    let pick = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or(0)
        % candidates.len();
    Ok(candidates.swap_remove(pick))
}

/// `/api/v1/namespaces/<ns>/<resource>/<id>/proxy/<tail>` → `/<tail>`.
fn proxy_tail(path: &str, ns: &str, resource: &str) -> Option<String> {
    let marker = format!("/namespaces/{ns}/{resource}/");
    let after = &path[path.find(&marker)? + marker.len()..];
    let rest = &after[after.find('/')?..];
    let t = rest.strip_prefix("/proxy")?;
    if t.is_empty() {
        Some("/".into())
    } else if t.starts_with('/') {
        Some(t.to_string())
    } else {
        None
    }
}

/// `/api/v1/nodes/<name>/proxy/<tail>` → `/<tail>`.
fn node_proxy_tail(path: &str, name: &str) -> String {
    let marker = format!("/nodes/{name}/proxy");
    match path.find(&marker) {
        Some(i) => {
            let t = &path[i + marker.len()..];
            if t.is_empty() {
                "/".into()
            } else {
                t.to_string()
            }
        }
        None => "/".into(),
    }
}

async fn load(
    api: &Arc<Api>,
    user: &UserInfo,
    res: &'static ResourceDef,
    info: &RequestInfo,
    query: &Query,
    headers: &http::HeaderMap,
) -> ApiResult<Value> {
    let mut info = info.clone();
    info.subresource = None;
    let ctx = Ctx {
        api,
        user,
        res,
        info,
        query: query.clone(),
        headers,
    };
    Ok(load_value(&ctx).await?.1)
}

async fn load_node(
    api: &Arc<Api>,
    user: &UserInfo,
    name: &str,
    headers: &http::HeaderMap,
) -> ApiResult<Value> {
    let res = crate::resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("no nodes resource"))?;
    let info = RequestInfo {
        version: "v1".into(),
        resource: "nodes".into(),
        name: Some(name.to_string()),
        ..Default::default()
    };
    load(api, user, res, &info, &Query::default(), headers).await
}

/// The container a request names, defaulting as upstream does.
fn pick_container(pod: &Value, pod_name: &str, asked: Option<&str>) -> ApiResult<String> {
    let names = |k: &str| -> Vec<String> {
        pod["spec"][k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("containers");
    let init = names("initContainers");
    let ephemeral = names("ephemeralContainers");
    match asked {
        Some(c) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod_name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// The checks kubelet makes before reading a log, with its messages.
fn check_log_status(pod: &Value, pod_name: &str, container: &str, previous: bool) -> ApiResult<()> {
    let status = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .filter_map(|k| pod["status"][k].as_array())
    .flatten()
    .find(|s| s["name"].as_str() == Some(container));
    let Some(s) = status else {
        return Err(ApiError::bad_request(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: ContainerCreating"
        )));
    };
    if previous {
        if s["lastState"]["terminated"].is_object() {
            return Ok(());
        }
        return Err(ApiError::bad_request(format!(
            "previous terminated container {container:?} in pod {pod_name:?} not found"
        )));
    }
    if s["state"]["running"].is_object() || s["state"]["terminated"].is_object() {
        return Ok(());
    }
    if let Some(w) = s["state"]["waiting"].as_object() {
        // A crash-looping container still has its last run's log to show.
        if s["lastState"]["terminated"].is_object() {
            return Ok(());
        }
        let reason = w.get("reason").and_then(Value::as_str).unwrap_or("");
        return Err(ApiError::bad_request(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: {reason}"
        )));
    }
    Ok(())
}

/// The kubelet's `host:port` from the Node object.
fn kubelet_address(node: &Value) -> ApiResult<(String, String)> {
    let name = node["metadata"]["name"].as_str().unwrap_or("");
    let addrs = node["status"]["addresses"].as_array();
    let pick = |t: &str| {
        addrs
            .into_iter()
            .flatten()
            .find(|a| a["type"].as_str() == Some(t))
            .and_then(|a| a["address"].as_str())
            .map(str::to_string)
    };
    let host = pick("InternalIP")
        .or_else(|| pick("ExternalIP"))
        .or_else(|| pick("Hostname"))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "no preferred addresses found; known addresses: [] for node {name:?}"
            ))
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0 && *p <= 65535)
        .unwrap_or(10250);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((authority, host))
}

/// Sends the request to the node's kubelet and returns its answer.
async fn relay(
    api: &Arc<Api>,
    node: &Value,
    path: String,
    req: Request<Incoming>,
) -> ApiResult<Resp> {
    let (authority, host) = kubelet_address(node)?;
    let io = http_proxy::connect_tls(&authority, &host, api.kubelet_tls.clone())
        .await
        .map_err(|e| ApiError::unavailable(format!("error dialing backend: {e}")))?;
    send(io, "kubelet", &authority, path, req).await
}

/// Sends the client's request (path replaced) on `io`, passing upgrades
/// and the answer's body through.
async fn send(
    io: impl http_proxy::Io,
    what: &str,
    authority: &str,
    path: String,
    mut req: Request<Incoming>,
) -> ApiResult<Resp> {
    let client_upgrade =
        http_proxy::is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut up = Request::new(body);
    *up.method_mut() = parts.method.clone();
    *up.uri_mut() = path
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid proxy path {path:?}")))?;
    *up.headers_mut() = http_proxy::upstream_headers(&parts.headers, authority);
    let resp = http_proxy::forward(io, what, up, client_upgrade)
        .await
        .map_err(|e| ApiError::unavailable(format!("error trying to reach {what}: {e}")))?;
    Ok(resp.map(streaming_body))
}

/// Passes the kubelet's body through frame by frame; a broken upstream just
/// ends the stream (the client sees a short read, as upstream behaves).
fn streaming_body(b: Incoming) -> h::Body {
    let s = futures::stream::unfold(b, |mut b| async move {
        match b.frame().await {
            Some(Ok(f)) => Some((Ok::<_, Infallible>(f), b)),
            _ => None,
        }
    });
    StreamBody::new(s).boxed_unsync()
}

/// A failed kubelet log read as a Status with the kubelet's message.
async fn log_error(resp: Resp) -> ApiError {
    let code = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let msg = String::from_utf8_lossy(&body).trim().to_string();
    match code {
        StatusCode::NOT_FOUND => ApiError::new(404, "NotFound", msg),
        c if c.is_client_error() => ApiError::bad_request(msg),
        _ => ApiError::internal(msg),
    }
}

/// The kubelet client certificate's default location in the cert dir.
pub fn default_client_files(cert_dir: &std::path::Path) -> (PathBuf, PathBuf) {
    (
        cert_dir.join(format!("{}.crt", KUBELET_CLIENT)),
        cert_dir.join(format!("{}.key", KUBELET_CLIENT)),
    )
}

pub use k3rs_common::pki::layout::APISERVER_KUBELET_CLIENT as KUBELET_CLIENT;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_containers_like_upstream() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(pick_container(&pod, "p", Some("b")).unwrap(), "b");
        assert_eq!(pick_container(&pod, "p", Some("i")).unwrap(), "i");
        let e = pick_container(&pod, "p", Some("x")).unwrap_err();
        assert_eq!(e.message, "container x is not valid for pod p");
        let e = pick_container(&pod, "p", None).unwrap_err();
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, "p", None).unwrap(), "a");
    }

    #[test]
    fn log_status_messages() {
        let pod = json!({"status": {"containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        let e = check_log_status(&pod, "p", "a", false).unwrap_err();
        assert_eq!(
            e.message,
            "container \"a\" in pod \"p\" is waiting to start: ContainerCreating"
        );
        let e = check_log_status(&pod, "p", "a", true).unwrap_err();
        assert_eq!(
            e.message,
            "previous terminated container \"a\" in pod \"p\" not found"
        );
        let pod = json!({"status": {"containerStatuses": [{"name": "a", "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1}}}]}});
        assert!(check_log_status(&pod, "p", "a", false).is_ok());
        assert!(check_log_status(&pod, "p", "a", true).is_ok());
    }

    #[test]
    fn proxy_targets_and_tails() {
        let t = split_target("web").unwrap();
        assert_eq!(
            (t.https, t.name.as_str(), t.port.as_str()),
            (false, "web", "")
        );
        let t = split_target("web:8080").unwrap();
        assert_eq!(
            (t.https, t.name.as_str(), t.port.as_str()),
            (false, "web", "8080")
        );
        let t = split_target("https:web:443").unwrap();
        assert_eq!(
            (t.https, t.name.as_str(), t.port.as_str()),
            (true, "web", "443")
        );
        assert!(split_target("ftp:web:21").is_err());
        assert!(split_target(":80").is_err());
        assert!(split_target("a:b:c:d").is_err());
        assert_eq!(
            proxy_tail(
                "/api/v1/namespaces/pods/pods/web:80/proxy/a/b",
                "pods",
                "pods"
            )
            .as_deref(),
            Some("/a/b")
        );
        assert_eq!(
            proxy_tail("/api/v1/namespaces/d/services/s/proxy", "d", "services").as_deref(),
            Some("/")
        );
        assert_eq!(
            proxy_tail("/api/v1/namespaces/d/services/s/proxy/", "d", "services").as_deref(),
            Some("/")
        );
    }

    #[test]
    fn pod_ports_by_number_name_or_first_declared() {
        let pod = json!({"spec": {"containers": [{"name": "a", "ports": [{"name": "web", "containerPort": 8080}]}]},
                         "status": {"podIP": "10.244.0.5"}});
        let t = |id: &str| split_target(id).unwrap();
        assert_eq!(
            pod_backend(&pod, &t("p")).unwrap(),
            ("10.244.0.5".into(), 8080)
        );
        assert_eq!(
            pod_backend(&pod, &t("p:web")).unwrap(),
            ("10.244.0.5".into(), 8080)
        );
        assert_eq!(
            pod_backend(&pod, &t("p:9000")).unwrap(),
            ("10.244.0.5".into(), 9000)
        );
        assert_eq!(pod_backend(&pod, &t("p:nope")).unwrap_err().code, 400);
        assert_eq!(pod_backend(&pod, &t("p:70000")).unwrap_err().code, 400);
        let pending = json!({"spec": {"containers": [{"name": "a"}]}, "status": {}});
        assert_eq!(pod_backend(&pending, &t("p")).unwrap_err().code, 503);
    }

    #[test]
    fn kubelet_address_from_node_status() {
        let node = json!({"metadata": {"name": "n"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "10.1.2.3"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}});
        assert_eq!(
            kubelet_address(&node).unwrap(),
            ("10.1.2.3:12345".to_string(), "10.1.2.3".to_string())
        );
        assert!(kubelet_address(&json!({"metadata": {"name": "n"}})).is_err());
        assert_eq!(
            node_proxy_tail("/api/v1/nodes/n/proxy/stats/summary", "n"),
            "/stats/summary"
        );
        assert_eq!(node_proxy_tail("/api/v1/nodes/n/proxy", "n"), "/");
    }
}
