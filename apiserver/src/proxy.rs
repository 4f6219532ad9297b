//! The subresources the node agent serves: `pods/log`, `pods/exec`,
//! `pods/attach`, `pods/portforward` and `nodes/proxy`. The API server
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
        ("", "nodes", Some("proxy")) => info.name.is_some(),
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
    mut req: Request<Incoming>,
) -> ApiResult<Resp> {
    let (authority, host) = kubelet_address(node)?;
    let io = http_proxy::connect_tls(&authority, &host, api.kubelet_tls.clone())
        .await
        .map_err(|e| ApiError::unavailable(format!("error dialing backend: {e}")))?;
    let client_upgrade =
        http_proxy::is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut up = Request::new(body);
    *up.method_mut() = parts.method.clone();
    *up.uri_mut() = path
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid proxy path {path:?}")))?;
    *up.headers_mut() = http_proxy::upstream_headers(&parts.headers, &authority);
    // The kubelet speaks JSON and text; clients asking for protobuf get it as is.
    let resp = http_proxy::forward(io, "kubelet", up, client_upgrade)
        .await
        .map_err(|e| ApiError::unavailable(format!("error trying to reach the kubelet: {e}")))?;
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
