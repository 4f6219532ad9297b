//! Forwarding one HTTP/1.1 request to an upstream server, upgrades included.
//!
//! The API server relays `pods/log|exec|attach|portforward` and `nodes/proxy`
//! to the node agent, and the node agent relays exec/attach/port-forward to
//! the container runtime's streaming server. Both are the same dance: send
//! the request on a fresh connection, hand the answer back unchanged, and
//! when it is `101 Switching Protocols` splice the two upgraded connections
//! byte for byte (SPDY/3.1 or WebSocket: we never look inside).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the upstream to answer the request line (not the whole body,
/// which may be a `follow` stream).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("dial {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dial {0}: timed out")]
    ConnectTimeout(String),
    #[error("bad server name {0:?}")]
    ServerName(String),
    #[error("{0}: {1}")]
    Http(String, #[source] hyper::Error),
    #[error("{0}: no answer in time")]
    ResponseTimeout(String),
}

/// A connection the proxy can speak HTTP/1.1 over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Dials `host:port` in plain TCP.
pub async fn connect_tcp(addr: &str) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(source)) => Err(ProxyError::Connect {
            addr: addr.to_string(),
            source,
        }),
        Err(_) => Err(ProxyError::ConnectTimeout(addr.to_string())),
    }
}

/// Dials `host:port` and runs a TLS handshake for `server_name`.
pub async fn connect_tls(
    addr: &str,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProxyError> {
    let tcp = connect_tcp(addr).await?;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| ProxyError::ServerName(server_name.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(ProxyError::Connect {
            addr: addr.to_string(),
            source,
        }),
        Err(_) => Err(ProxyError::ConnectTimeout(addr.to_string())),
    }
}

/// Headers that describe the client's hop, not the request.
fn hop_only(name: &header::HeaderName) -> bool {
    name == header::HOST
        || name == header::AUTHORIZATION
        || name == header::PROXY_AUTHORIZATION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name.as_str() == "keep-alive"
}

/// Whether a request asks to switch protocols (SPDY or WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
        && headers.contains_key(header::UPGRADE)
}

/// The client's headers for the upstream request: everything but the
/// client's credentials and hop-by-hop fields; `Connection`/`Upgrade` stay
/// only on upgrade requests.
pub fn upstream_headers(client: &HeaderMap, host: &str) -> HeaderMap {
    let upgrade = is_upgrade(client);
    let mut out = HeaderMap::new();
    for (k, v) in client {
        if hop_only(k) {
            continue;
        }
        if !upgrade && (k == header::CONNECTION || k == header::UPGRADE) {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    if let Ok(h) = header::HeaderValue::from_str(host) {
        out.insert(header::HOST, h);
    }
    out
}

/// Sends `req` on `io` and returns the upstream's answer. When both sides
/// agree to upgrade (`client_upgrade` is the client's pending upgrade and
/// the answer is 101), a background task splices the two connections until
/// either side closes.
pub async fn forward<B>(
    io: impl Io,
    what: &str,
    req: Request<B>,
    client_upgrade: Option<OnUpgrade>,
) -> Result<Response<Incoming>, ProxyError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ProxyError::Http(what.to_string(), e))?;
    let name = what.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(upstream = %name, error = %e, "upstream connection ended");
        }
    });
    let mut resp = match tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req)).await {
        Ok(r) => r.map_err(|e| ProxyError::Http(what.to_string(), e))?,
        Err(_) => return Err(ProxyError::ResponseTimeout(what.to_string())),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client) = client_upgrade
    {
        let upstream = hyper::upgrade::on(&mut resp);
        let name = what.to_string();
        tokio::spawn(async move {
            let (client, upstream) = match tokio::join!(client, upstream) {
                (Ok(c), Ok(u)) => (c, u),
                (c, u) => {
                    tracing::debug!(upstream = %name, client_ok = c.is_ok(), upstream_ok = u.is_ok(), "upgrade failed");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                Ok((up, down)) => {
                    tracing::debug!(upstream = %name, up, down, "upgraded stream closed");
                }
                Err(e) => tracing::debug!(upstream = %name, error = %e, "upgraded stream ended"),
            }
        });
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_headers_drop_credentials_and_keep_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        h.insert(header::HOST, "client".parse().unwrap());
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "SPDY/3.1".parse().unwrap());
        h.append(
            "x-stream-protocol-version",
            "v4.channel.k8s.io".parse().unwrap(),
        );
        h.append(
            "x-stream-protocol-version",
            "v3.channel.k8s.io".parse().unwrap(),
        );
        assert!(is_upgrade(&h));
        let out = upstream_headers(&h, "10.0.0.1:10250");
        assert!(out.get(header::AUTHORIZATION).is_none());
        assert_eq!(out[header::HOST], "10.0.0.1:10250");
        assert_eq!(out[header::UPGRADE], "SPDY/3.1");
        assert_eq!(out.get_all("x-stream-protocol-version").iter().count(), 2);

        h.remove(header::UPGRADE);
        assert!(!is_upgrade(&h));
        let out = upstream_headers(&h, "n");
        assert!(out.get(header::CONNECTION).is_none());
    }
}
