//! Flags (upstream kube-apiserver names) and the resolved configuration.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "k3rs-apiserver",
    version,
    about = "The k3rs Kubernetes API server"
)]
pub struct Cli {
    /// etcd endpoints (k3rs-datastore or a real etcd), comma separated.
    #[arg(
        long,
        env = "K3RS_ETCD_SERVERS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub etcd_servers: Vec<String>,
    #[arg(long, env = "K3RS_ETCD_CAFILE")]
    pub etcd_cafile: Option<PathBuf>,
    #[arg(long, env = "K3RS_ETCD_CERTFILE")]
    pub etcd_certfile: Option<PathBuf>,
    #[arg(long, env = "K3RS_ETCD_KEYFILE")]
    pub etcd_keyfile: Option<PathBuf>,
    #[arg(long, env = "K3RS_SECURE_PORT", default_value_t = 6443)]
    pub secure_port: u16,
    #[arg(long, env = "K3RS_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// The address advertised to clients (defaults to 127.0.0.1).
    #[arg(long, env = "K3RS_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<IpAddr>,
    /// Where generated certificates and the admin kubeconfig go.
    #[arg(long, env = "K3RS_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,
    #[arg(long, env = "K3RS_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "K3RS_TLS_PRIVATE_KEY_FILE")]
    pub tls_private_key_file: Option<PathBuf>,
    #[arg(long, env = "K3RS_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// CSV: token,user,uid,"group1,group2".
    #[arg(long, env = "K3RS_TOKEN_AUTH_FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// PEM key (public or private) that verifies service-account tokens; the
    /// signing key when `--service-account-signing-key-file` is not given.
    /// Default: `<cert-dir>/service.key`, generated on first start.
    #[arg(long, env = "K3RS_SERVICE_ACCOUNT_KEY_FILE")]
    pub service_account_key_file: Option<PathBuf>,
    /// PEM private key (ECDSA P-256 or RSA) that signs service-account tokens.
    #[arg(long, env = "K3RS_SERVICE_ACCOUNT_SIGNING_KEY_FILE")]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// The `iss` of the tokens this server signs (and accepts).
    #[arg(
        long,
        env = "K3RS_SERVICE_ACCOUNT_ISSUER",
        default_value = "https://kubernetes.default.svc.cluster.local"
    )]
    pub service_account_issuer: String,
    /// NodePort range, `low-high`.
    #[arg(
        long,
        env = "K3RS_SERVICE_NODE_PORT_RANGE",
        default_value = "30000-32767"
    )]
    pub service_node_port_range: String,
    #[arg(
        long,
        env = "K3RS_SERVICE_CLUSTER_IP_RANGE",
        default_value = "10.43.0.0/16"
    )]
    pub service_cluster_ip_range: String,
    /// Client certificate the API server presents to kubelets (default:
    /// `<cert-dir>/client-kube-apiserver.crt`, issued by the cluster CA).
    #[arg(
        long,
        env = "K3RS_KUBELET_CLIENT_CERTIFICATE",
        requires = "kubelet_client_key"
    )]
    pub kubelet_client_certificate: Option<PathBuf>,
    #[arg(
        long,
        env = "K3RS_KUBELET_CLIENT_KEY",
        requires = "kubelet_client_certificate"
    )]
    pub kubelet_client_key: Option<PathBuf>,
    /// CA that signs kubelet serving certificates; without it they are not verified.
    #[arg(long, env = "K3RS_KUBELET_CERTIFICATE_AUTHORITY")]
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// CA certificate that signs node certificates at `/v1-k3rs/*-kubelet.crt`.
    #[arg(long, env = "K3RS_CLUSTER_SIGNING_CERT_FILE")]
    pub cluster_signing_cert_file: Option<PathBuf>,
    /// Private key of `--cluster-signing-cert-file`.
    #[arg(long, env = "K3RS_CLUSTER_SIGNING_KEY_FILE")]
    pub cluster_signing_key_file: Option<PathBuf>,
    /// File with the join token (`K10<hash>::server:<secret>` or the bare
    /// secret); nodes authenticate to the join endpoints with its secret.
    #[arg(long, env = "K3RS_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// File served verbatim at `/v1-k3rs/server-bootstrap` to further
    /// servers joining with the server token (basic auth `server:<secret>`):
    /// the CA material they share, written by `k3rs server`.
    #[arg(long, env = "K3RS_SERVER_BOOTSTRAP_FILE", requires = "join_token_file")]
    pub server_bootstrap_file: Option<PathBuf>,
    #[arg(long, env = "K3RS_AUTHORIZATION_MODE", default_value = "AlwaysAllow")]
    pub authorization_mode: String,
    #[arg(long, env = "K3RS_LOG_FORMAT", default_value = "text")]
    pub log_format: k3rs_common::LogFormat,
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub etcd_servers: Vec<String>,
    pub etcd_ca: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    pub bind: std::net::SocketAddr,
    pub advertise: IpAddr,
    pub cert_dir: PathBuf,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    pub token_auth_file: Option<PathBuf>,
    pub service_cidr: String,
    pub node_port_range: (u16, u16),
    pub sa_key_file: Option<PathBuf>,
    pub sa_signing_key_file: Option<PathBuf>,
    pub sa_issuer: String,
    pub kubelet_client: crate::proxy::KubeletClientConfig,
    pub cluster_signing_cert_file: Option<PathBuf>,
    pub cluster_signing_key_file: Option<PathBuf>,
    pub join_token_file: Option<PathBuf>,
    pub server_bootstrap_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

pub fn default_cert_dir() -> PathBuf {
    let is_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::fs::metadata("/proc/self")
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid() == 0
            })
            .unwrap_or(false);
    if is_root {
        PathBuf::from("/var/lib/k3rs/server/tls")
    } else {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".k3rs/server/tls")
    }
}

impl Cli {
    pub fn into_config(self) -> Result<Config, ConfigError> {
        if self.authorization_mode != "AlwaysAllow" {
            return Err(ConfigError(format!(
                "--authorization-mode {:?} is not supported yet (only AlwaysAllow)",
                self.authorization_mode
            )));
        }
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            return Err(ConfigError(
                "--tls-cert-file and --tls-private-key-file go together".into(),
            ));
        }
        if self
            .etcd_servers
            .iter()
            .any(|s| !(s.starts_with("http://") || s.starts_with("https://")))
        {
            return Err(ConfigError(format!(
                "--etcd-servers: each endpoint must be http(s)://host:port, got {:?}",
                self.etcd_servers.join(",")
            )));
        }
        if crate::allocator::parse_cidr(&self.service_cluster_ip_range).is_none() {
            return Err(ConfigError(format!(
                "--service-cluster-ip-range: {:?} is not an IPv4 CIDR",
                self.service_cluster_ip_range
            )));
        }
        let node_port_range = parse_port_range(&self.service_node_port_range).ok_or_else(|| {
            ConfigError(format!(
                "--service-node-port-range: {:?} is not low-high with 1 <= low <= high <= 65535",
                self.service_node_port_range
            ))
        })?;
        Ok(Config {
            etcd_servers: self.etcd_servers,
            etcd_ca: self.etcd_cafile,
            etcd_cert: self.etcd_certfile,
            etcd_key: self.etcd_keyfile,
            bind: std::net::SocketAddr::new(self.bind_address, self.secure_port),
            advertise: self
                .advertise_address
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            cert_dir: self.cert_dir.unwrap_or_else(default_cert_dir),
            tls_cert_file: self.tls_cert_file,
            tls_key_file: self.tls_private_key_file,
            client_ca_file: self.client_ca_file,
            token_auth_file: self.token_auth_file,
            service_cidr: self.service_cluster_ip_range,
            node_port_range,
            sa_key_file: self.service_account_key_file,
            sa_signing_key_file: self.service_account_signing_key_file,
            sa_issuer: self.service_account_issuer,
            kubelet_client: crate::proxy::KubeletClientConfig {
                cert_file: self.kubelet_client_certificate,
                key_file: self.kubelet_client_key,
                ca_file: self.kubelet_certificate_authority,
            },
            cluster_signing_cert_file: self.cluster_signing_cert_file,
            cluster_signing_key_file: self.cluster_signing_key_file,
            join_token_file: self.join_token_file,
            server_bootstrap_file: self.server_bootstrap_file,
        })
    }
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = s.split_once('-')?;
    let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}
