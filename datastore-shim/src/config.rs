//! Configuration: the `Config` the library runs from, the command line that
//! builds it, and the listener it describes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;

use crate::error::Error;

/// Certificate, key and (for mutual TLS) client CA of the gRPC listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
}

/// Everything `start` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` or `unix:///path/to/socket`.
    pub listen_address: String,
    /// See `Endpoint::parse`; empty = SQLite under `data_dir`.
    pub datastore_endpoint: String,
    pub data_dir: PathBuf,
    pub tls: Option<TlsFiles>,
    /// Zero disables automatic compaction.
    pub compact_interval: Duration,
    pub metrics_address: Option<SocketAddr>,
    /// Period of progress notifications for idle watches that ask for them.
    pub progress_notify_interval: Duration,
}

impl Config {
    /// A config for `endpoint` with defaults everywhere else, listening on an
    /// ephemeral loopback port (handy for tests and embedding).
    pub fn new(endpoint: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen_address: "127.0.0.1:0".into(),
            datastore_endpoint: endpoint.into(),
            data_dir: data_dir.into(),
            tls: None,
            compact_interval: Duration::ZERO,
            metrics_address: None,
            progress_notify_interval: Duration::from_secs(600),
        }
    }
}

/// Default data dir: /var/lib/k3rs as root, ~/.k3rs otherwise (as K3s does).
pub fn default_data_dir() -> PathBuf {
    let is_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::env::var("HOME").map(|h| h == "/root").unwrap_or(false);
    if is_root {
        PathBuf::from("/var/lib/k3rs")
    } else {
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".k3rs"))
            .unwrap_or_else(|| PathBuf::from(".k3rs"))
    }
}

/// Command line of `k3rs-datastore`. Every flag also reads `K3RS_<FLAG>`.
#[derive(Debug, Parser)]
#[command(
    name = "k3rs-datastore",
    version,
    about = "etcd v3 API server over SQLite, PostgreSQL or MySQL/MariaDB"
)]
pub struct Cli {
    /// gRPC listen address: host:port or unix:///path (default: unix socket in the data dir).
    #[arg(long, env = "K3RS_LISTEN_ADDRESS")]
    pub listen_address: Option<String>,
    /// sqlite://PATH, postgres://user:pass@host:port/db, mysql://user:pass@tcp(host:port)/db.
    #[arg(long, env = "K3RS_DATASTORE_ENDPOINT", default_value = "")]
    pub datastore_endpoint: String,
    /// Data directory (default /var/lib/k3rs as root, ~/.k3rs otherwise).
    #[arg(long, env = "K3RS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TLS certificate for the gRPC listener (PEM).
    #[arg(long, env = "K3RS_TLS_CERT_FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS private key for the gRPC listener (PEM).
    #[arg(long, env = "K3RS_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA that client certificates must chain to (enables mutual TLS).
    #[arg(long, env = "K3RS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub client_ca_file: Option<PathBuf>,
    /// Automatic compaction period, e.g. 5m, 30s, 0 to disable.
    #[arg(long, env = "K3RS_COMPACT_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub compact_interval: Duration,
    /// Health and Prometheus metrics listener (host:port); empty disables it.
    #[arg(long, env = "K3RS_METRICS_ADDRESS", default_value = "127.0.0.1:2381")]
    pub metrics_address: String,
    /// Log format: text or json.
    #[arg(long, env = "K3RS_LOG_FORMAT", default_value = "text")]
    pub log_format: k3rs_common::LogFormat,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Cli {
    pub fn into_config(self) -> Result<Config, Error> {
        let data_dir = self.data_dir.unwrap_or_else(default_data_dir);
        let listen_address = self.listen_address.unwrap_or_else(|| {
            format!("unix://{}", data_dir.join("server/db/etcd.sock").display())
        });
        let tls = match (self.tls_cert_file, self.tls_private_key_file) {
            (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                cert_file,
                key_file,
                client_ca_file: self.client_ca_file,
            }),
            _ => None,
        };
        let metrics_address = if self.metrics_address.is_empty() {
            None
        } else {
            Some(self.metrics_address.parse().map_err(|e| {
                Error::Config(format!("--metrics-address {:?}: {e}", self.metrics_address))
            })?)
        };
        // Validate the endpoint and listener now so a typo fails before anything starts.
        crate::Endpoint::parse(&self.datastore_endpoint, &data_dir)?;
        Listen::parse(&listen_address)?;
        Ok(Config {
            listen_address,
            datastore_endpoint: self.datastore_endpoint,
            data_dir,
            tls,
            compact_interval: self.compact_interval,
            metrics_address,
            progress_notify_interval: Duration::from_secs(600),
        })
    }
}

/// Parses `90s`, `5m`, `1h`, `250ms` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (examples: 30s, 5m, 1h)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "invalid duration unit in {s:?} (use ms, s, m or h)"
        )),
    }
}

/// Where the gRPC server listens.
#[derive(Debug, Clone)]
pub enum Listen {
    Tcp(String),
    Unix(PathBuf),
}

/// A bound listener, ready to serve.
pub enum BoundListener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listen {
    pub fn parse(s: &str) -> Result<Self, Error> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(Error::Config(
                    "--listen-address unix:// names no socket path".into(),
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let hostport = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or(s);
        match hostport.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() => Ok(Self::Tcp(hostport.to_string())),
            _ => Err(Error::Config(format!(
                "--listen-address {s:?}: expected host:port or unix:///path"
            ))),
        }
    }

    /// Binds, returning the listener, its TCP address and the client URL.
    pub async fn bind(
        &self,
        tls: bool,
    ) -> Result<(BoundListener, Option<SocketAddr>, String), Error> {
        match self {
            Self::Tcp(addr) => {
                let l = TcpListener::bind(addr.as_str())
                    .await
                    .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
                let local = l.local_addr()?;
                let scheme = if tls { "https" } else { "http" };
                Ok((
                    BoundListener::Tcp(l),
                    Some(local),
                    format!("{scheme}://{local}"),
                ))
            }
            Self::Unix(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                // A socket left by a previous run would make bind fail.
                let _ = std::fs::remove_file(path);
                let l = UnixListener::bind(path).map_err(|e| {
                    Error::Config(format!("cannot listen on {}: {e}", path.display()))
                })?;
                set_mode_0600(path);
                Ok((
                    BoundListener::Unix(l, path.clone()),
                    None,
                    format!("unix://{}", path.display()),
                ))
            }
        }
    }
}

#[cfg(unix)]
fn set_mode_0600(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

impl BoundListener {
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        match self {
            Self::Tcp(l) => {
                // Without TCP_NODELAY small responses wait for the peer's delayed ACK (~40 ms).
                let incoming = tonic::transport::server::TcpIncoming::from(l)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(std::time::Duration::from_secs(60)));
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
            Self::Unix(l, path) => {
                let r = router
                    .serve_with_incoming_shutdown(UnixListenerStream::new(l), shutdown)
                    .await;
                let _ = std::fs::remove_file(path);
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn listen_forms() {
        assert!(matches!(
            Listen::parse("127.0.0.1:2379"),
            Ok(Listen::Tcp(_))
        ));
        assert!(matches!(
            Listen::parse("unix:///run/k.sock"),
            Ok(Listen::Unix(_))
        ));
        assert!(Listen::parse("localhost").is_err());
        assert!(Listen::parse("unix://").is_err());
    }

    #[test]
    fn cli_rejects_bad_endpoint() {
        let cli = Cli::parse_from(["k3rs-datastore", "--datastore-endpoint", "bogus://x"]);
        assert!(cli.into_config().is_err());
    }
}
