//! exec, attach and port-forward: ask the runtime for a one-time URL on its
//! streaming server, then relay the client's upgrade request there and
//! splice the connections (the protocol inside is the client's and the
//! runtime's business).

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use k3rs_common::http_proxy;

use super::{Query, Resp, State, find_sandbox, running_container, text};
use crate::cri::v1;

/// `/exec/{ns}/{pod}/{container}?command=..&stdin&stdout&stderr&tty`.
pub async fn exec(
    state: &State,
    ns: &str,
    pod: &str,
    container: &str,
    q: &Query,
    req: Request<Incoming>,
) -> Resp {
    let cmd = q.all("command").to_vec();
    if cmd.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container",
        );
    }
    let c = match running_container(&state.rt, ns, pod, container).await {
        Ok(c) => c,
        Err(e) => return text(StatusCode::NOT_FOUND, e),
    };
    let url = state
        .rt
        .exec(v1::ExecRequest {
            container_id: c.id,
            cmd,
            tty: q.flag("tty"),
            stdin: q.flag("stdin"),
            stdout: q.flag("stdout"),
            stderr: q.flag("stderr"),
        })
        .await;
    relay(url, req).await
}

/// `/attach/{ns}/{pod}/{container}?stdin&stdout&stderr&tty`.
pub async fn attach(
    state: &State,
    ns: &str,
    pod: &str,
    container: &str,
    q: &Query,
    req: Request<Incoming>,
) -> Resp {
    let c = match running_container(&state.rt, ns, pod, container).await {
        Ok(c) => c,
        Err(e) => return text(StatusCode::NOT_FOUND, e),
    };
    let url = state
        .rt
        .attach(v1::AttachRequest {
            container_id: c.id,
            stdin: q.flag("stdin"),
            tty: q.flag("tty"),
            stdout: q.flag("stdout"),
            stderr: q.flag("stderr"),
        })
        .await;
    relay(url, req).await
}

/// `/portForward/{ns}/{pod}[?port=..]`; the ports usually travel inside the
/// stream's own headers.
pub async fn port_forward(
    state: &State,
    ns: &str,
    pod: &str,
    q: &Query,
    req: Request<Incoming>,
) -> Resp {
    let mut ports = Vec::new();
    for p in q.all("port") {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => ports.push(i32::from(n)),
            _ => return text(StatusCode::BAD_REQUEST, format!("invalid port {p:?}")),
        }
    }
    let Some(sb) = find_sandbox(&state.rt, ns, pod).await else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} not found on this node"),
        );
    };
    let url = state.rt.port_forward(&sb.id, ports).await;
    relay(url, req).await
}

/// Sends the client's request to the runtime's streaming URL.
async fn relay(url: Result<String, crate::cri::CriError>, mut req: Request<Incoming>) -> Resp {
    let url = match url {
        Ok(u) => u,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let Some((authority, path)) = split_url(&url) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the runtime answered an unusable streaming URL {url:?}"),
        );
    };
    let io = match http_proxy::connect_tcp(authority).await {
        Ok(io) => io,
        Err(e) => return text(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let client_upgrade =
        http_proxy::is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let mut up = Request::new(Empty::<bytes::Bytes>::new());
    *up.method_mut() = req.method().clone();
    *up.uri_mut() = match path.parse() {
        Ok(u) => u,
        Err(_) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the runtime answered an unusable streaming URL {url:?}"),
            );
        }
    };
    *up.headers_mut() = http_proxy::upstream_headers(req.headers(), authority);
    match http_proxy::forward(io, "container runtime streaming server", up, client_upgrade).await {
        Ok(resp) => resp.map(|b| b.map_err(std::io::Error::other).boxed()),
        Err(e) => text(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// `http://host:port/path?query` → (`host:port`, `/path?query`).
fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None => Some((rest, "/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_streaming_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:4321/exec/abcDEF"),
            Some(("127.0.0.1:4321", "/exec/abcDEF"))
        );
        assert_eq!(split_url("https://x/y"), None);
    }
}
