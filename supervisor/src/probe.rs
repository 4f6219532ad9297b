//! Health probes: `GET /livez` / `/readyz` over HTTP or HTTPS, or a TCP connect.
//!
//! A probe is one short HTTP/1.1 request with `Connection: close`; only the
//! status line matters, so a dozen lines here replace an HTTP client stack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("not an HTTP response")]
    NotHttp,
    #[error("health command failed ({status}): {stderr}")]
    Command { status: String, stderr: String },
}

/// Where a daemon answers health checks.
#[derive(Clone)]
pub enum Endpoint {
    /// Plain HTTP (the datastore's metrics address).
    Http(SocketAddr),
    /// HTTPS verified against the cluster CA (the API server).
    Https {
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    },
    /// Only checks that something accepts connections.
    Tcp(SocketAddr),
    /// A command that exits 0 when healthy (containerd: `ctr version`,
    /// which needs its API socket to answer).
    Exec {
        program: std::path::PathBuf,
        args: Vec<String>,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Http(a) => write!(f, "http://{a}"),
            Endpoint::Https { addr, .. } => write!(f, "https://{addr}"),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Exec { program, args } => {
                write!(f, "exec {} {}", program.display(), args.join(" "))
            }
        }
    }
}

/// A daemon's health checks: readiness gates the next daemon's start,
/// liveness failures get the daemon restarted.
#[derive(Debug, Clone)]
pub struct Health {
    pub endpoint: Endpoint,
    pub ready_path: &'static str,
    pub live_path: &'static str,
}

impl Health {
    /// The usual `/readyz` + `/livez` pair.
    pub fn standard(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            ready_path: "/readyz",
            live_path: "/livez",
        }
    }

    pub async fn ready(&self) -> Result<(), ProbeError> {
        check(&self.endpoint, self.ready_path).await
    }

    pub async fn live(&self) -> Result<(), ProbeError> {
        check(&self.endpoint, self.live_path).await
    }
}

/// Runs one check of `path` on `endpoint`, with `PROBE_TIMEOUT`.
pub async fn check(endpoint: &Endpoint, path: &str) -> Result<(), ProbeError> {
    match tokio::time::timeout(PROBE_TIMEOUT, check_inner(endpoint, path)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(PROBE_TIMEOUT)),
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, ProbeError> {
    TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })
}

async fn check_inner(endpoint: &Endpoint, path: &str) -> Result<(), ProbeError> {
    match endpoint {
        Endpoint::Tcp(addr) => connect(*addr).await.map(drop),
        Endpoint::Exec { program, args } => {
            let out = tokio::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await?;
            if out.status.success() {
                return Ok(());
            }
            Err(ProbeError::Command {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .chars()
                    .take(200)
                    .collect(),
            })
        }
        Endpoint::Http(addr) => get(connect(*addr).await?, *addr, path).await,
        Endpoint::Https {
            addr,
            tls,
            server_name,
        } => {
            let tcp = connect(*addr).await?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(server_name.clone(), tcp)
                .await
                .map_err(ProbeError::Tls)?;
            get(stream, *addr, path).await
        }
    }
}

async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: SocketAddr,
    path: &str,
) -> Result<(), ProbeError> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: k3rs-supervisor\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    // The status line and a little of the body (for the error message).
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while buf.len() < 4096 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() > 64 {
            break;
        }
    }
    parse_status(&buf)
}

/// Succeeds for a 2xx status line; otherwise says what came back.
fn parse_status(response: &[u8]) -> Result<(), ProbeError> {
    let text = String::from_utf8_lossy(response);
    let status_line = text.lines().next().ok_or(ProbeError::NotHttp)?;
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/")) {
        return Err(ProbeError::NotHttp);
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(ProbeError::NotHttp)?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    Err(ProbeError::Status { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert!(parse_status(b"HTTP/1.1 200 OK\r\n\r\nok").is_ok());
        match parse_status(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nnot ready",
        ) {
            Err(ProbeError::Status { status, body }) => {
                assert_eq!(status, 503);
                assert_eq!(body, "not ready");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_status(b"SSH-2.0"), Err(ProbeError::NotHttp)));
        assert!(matches!(parse_status(b""), Err(ProbeError::NotHttp)));
    }

    /// A one-shot HTTP server answering `response` to the first request.
    async fn serve_once(response: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probe_reads_the_status() {
        let ok = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        check(&Endpoint::Http(ok), "/readyz").await.unwrap();
        let bad = serve_once("HTTP/1.1 503 NA\r\ncontent-length: 9\r\n\r\nnot ready").await;
        assert!(matches!(
            check(&Endpoint::Http(bad), "/readyz").await,
            Err(ProbeError::Status { status: 503, .. })
        ));
        // Nothing listening.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(matches!(
            check(&Endpoint::Tcp(closed), "/").await,
            Err(ProbeError::Connect { .. })
        ));
    }
}
