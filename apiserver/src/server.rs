//! The HTTPS listener: TLS (rustls, h2 + http/1.1), client-certificate and
//! bearer-token authentication, and routing to discovery or the REST verbs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::authn::UserInfo;
use crate::http::{self as h, Resp};
use crate::metrics::{LatencyLabels, RequestLabels};
use crate::request::{Query, parse_path};
use crate::rest::{self, Ctx, MAX_BODY};
use crate::status::ApiError;
use crate::{Api, discovery, resources};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, api: Arc<Api>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // rustls already verified the chain against the client CA.
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| k3rs_common::pki::subject_of(c))
                .map(|(cn, groups)| UserInfo::new(cn, "", groups));
            let svc = hyper::service::service_fn(move |req| {
                let api = api.clone();
                let cert_user = cert_user.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(api, cert_user, peer, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Paths anyone may read (`/v1-k3rs/cacerts` too, see `join`).
fn anonymous_ok(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

async fn authenticate(
    api: &Api,
    cert_user: Option<UserInfo>,
    req: &Request<Incoming>,
) -> Option<UserInfo> {
    if let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return api.authenticate_token(token.trim()).await;
    }
    cert_user
}

async fn handle(
    api: Arc<Api>,
    cert_user: Option<UserInfo>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Resp {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // The join endpoints authenticate nodes themselves (basic auth with the
    // token secret, or nothing for the CA).
    if path.starts_with(crate::join::PREFIX) {
        let resp = crate::join::handle(&api, req).await;
        tracing::debug!(%peer, %method, %path, code = resp.status().as_u16(), "join request");
        return resp;
    }
    let user = authenticate(&api, cert_user, &req).await;
    let (resp, verb, resource) = match user {
        None if !anonymous_ok(&path) => (
            h::error(&ApiError::unauthorized()),
            "unknown",
            String::new(),
        ),
        user => {
            let user = user.unwrap_or_else(|| UserInfo {
                name: "system:anonymous".into(),
                uid: String::new(),
                groups: vec!["system:unauthenticated".into()],
                extra: Default::default(),
            });
            route(&api, &user, req).await
        }
    };
    let code = resp.status().as_u16();
    api.metrics
        .requests
        .get_or_create(&RequestLabels {
            verb: verb.to_string(),
            resource: resource.clone(),
            code: code.to_string(),
        })
        .inc();
    api.metrics
        .latency
        .get_or_create(&LatencyLabels {
            verb: verb.to_string(),
            resource,
        })
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(%peer, %method, %path, code, elapsed = ?started.elapsed(), "request");
    resp
}

fn verb_of(method: &Method, named: bool, watch: bool) -> &'static str {
    match (method, named) {
        (&Method::GET, _) if watch => "WATCH",
        (&Method::GET, true) => "GET",
        (&Method::GET, false) => "LIST",
        (&Method::POST, _) => "POST",
        (&Method::PUT, _) => "PUT",
        (&Method::PATCH, _) => "PATCH",
        (&Method::DELETE, _) => "DELETE",
        _ => "OTHER",
    }
}

async fn route(
    api: &Arc<Api>,
    user: &UserInfo,
    req: Request<Incoming>,
) -> (Resp, &'static str, String) {
    // Node-agent subresources keep the raw request: they may upgrade it.
    if let Some(info) = parse_path(req.uri().path())
        && crate::proxy::handles(&info)
        && let Some(res) = resources::find(&info.group, &info.version, &info.resource)
    {
        let verb = if req.method() == Method::GET {
            "GET"
        } else {
            "CONNECT"
        };
        let resp = crate::proxy::handle(api, user, res, info, req).await;
        return (resp, verb, res.plural.to_string());
    }
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = Query::parse(parts.uri.query());
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if parts.method == Method::GET
        && let Some(r) = non_resource(api, &path, &accept)
    {
        return (r, "GET", String::new());
    }
    let Some(info) = parse_path(&path) else {
        return (
            h::error(&ApiError::not_found_path()),
            "OTHER",
            String::new(),
        );
    };
    let Some(res) = resources::find(&info.group, &info.version, &info.resource) else {
        return (
            h::error(&ApiError::not_found_path()),
            "OTHER",
            String::new(),
        );
    };
    if accept.contains("application/vnd.kubernetes.protobuf")
        && !accept.contains("json")
        && !accept.contains("*/*")
    {
        return (
            h::error(&ApiError::not_acceptable()),
            "OTHER",
            res.plural.to_string(),
        );
    }
    let body = match Limited::new(body, MAX_BODY + 1).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let err = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::too_large()
            } else {
                ApiError::bad_request(format!("reading the request body: {e}"))
            };
            return (h::error(&err), "OTHER", res.plural.to_string());
        }
    };
    let body: Bytes = body;
    let watch = info.watch_path || query.flag("watch");
    let verb = verb_of(&parts.method, info.name.is_some(), watch);
    let resource = res.plural.to_string();
    let ctx = Ctx {
        api,
        user,
        res,
        info,
        query,
        headers: &parts.headers,
    };
    (rest::handle(ctx, &parts.method, body).await, verb, resource)
}

/// Discovery, version, health and metrics.
fn non_resource(api: &Api, path: &str, accept: &str) -> Option<Resp> {
    let path = path.trim_end_matches('/');
    let aggregated = discovery::wants_aggregated(accept);
    Some(match path {
        "/healthz" | "/livez" => h::text(200, "ok"),
        "/readyz" => {
            if api.cache.synced() {
                h::text(200, "ok")
            } else {
                h::text(503, "watch cache not synced")
            }
        }
        "/version" => h::json(200, &version()),
        "/.well-known/openid-configuration" => h::json(200, &api.sa.openid_configuration()),
        "/openid/v1/jwks" => h::json(200, &api.sa.jwks()),
        "/metrics" => h::bytes_resp(200, "text/plain; version=0.0.4", api.metrics.render()),
        "/openapi/v2" => {
            // kubectl asks for protobuf first; it copes with a refusal and
            // uses the v3 documents instead.
            if accept.contains("protobuf") && !accept.contains("json") {
                return Some(h::error(&ApiError::not_acceptable()));
            }
            h::bytes_resp(
                200,
                "application/json",
                crate::openapi::documents().v2.clone(),
            )
        }
        "/openapi/v3" => h::bytes_resp(
            200,
            "application/json",
            crate::openapi::documents().v3_root.clone(),
        ),
        "/api" if aggregated => aggregated_resp(discovery::aggregated(true)),
        "/api" => h::json(200, &discovery::api_versions(&api.advertise)),
        "/apis" if aggregated => aggregated_resp(discovery::aggregated(false)),
        "/apis" => h::json(200, &discovery::api_group_list()),
        "/api/v1" => h::json(200, &discovery::resource_list("", "v1")?),
        _ if path.starts_with("/openapi/v3/") => {
            let key = path.trim_start_matches("/openapi/v3/");
            match crate::openapi::documents().v3.get(key) {
                Some((doc, hash)) => {
                    let mut r = h::bytes_resp(200, "application/json", doc.clone());
                    if let Ok(v) = header::HeaderValue::from_str(&format!("\"{hash}\"")) {
                        r.headers_mut().insert(header::ETAG, v);
                    }
                    r
                }
                None => h::error(&ApiError::not_found_path()),
            }
        }
        _ => {
            let rest = path.strip_prefix("/apis/")?;
            let segs: Vec<&str> = rest.split('/').collect();
            match segs.as_slice() {
                [g] => h::json(200, &discovery::api_group(g)?),
                [g, v] => h::json(200, &discovery::resource_list(g, v)?),
                _ => return None,
            }
        }
    })
}

fn aggregated_resp(doc: serde_json::Value) -> Resp {
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    let etag = format!("\"{:x}\"", fnv(&body));
    let mut r = h::bytes_resp(200, discovery::AGGREGATED_CONTENT_TYPE, body);
    if let Ok(v) = header::HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub fn version() -> serde_json::Value {
    serde_json::json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0+k3rs", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else if cfg!(target_arch = "aarch64") { "arm64" } else { std::env::consts::ARCH }),
    })
}
