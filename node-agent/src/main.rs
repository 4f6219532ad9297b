//! `k3rs-node-agent`: parse flags, set up logging, run the agent.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use k3rs_common::LogFormat;
use k3rs_node_agent::Config;

#[derive(Parser, Debug)]
#[command(
    name = "k3rs-node-agent",
    version,
    about = "The k3rs node agent: runs this node's pods on containerd"
)]
struct Flags {
    /// kubeconfig with the apiserver address and this node's credentials.
    #[arg(long, env = "K3RS_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The name this node registers as (default: the hostname).
    #[arg(long, env = "K3RS_NODE_NAME")]
    node_name: Option<String>,
    /// The CRI socket of containerd.
    #[arg(
        long,
        env = "K3RS_CONTAINER_RUNTIME_ENDPOINT",
        default_value = "unix:///run/k3rs/containerd/containerd.sock"
    )]
    container_runtime_endpoint: String,
    /// Where the agent keeps pod volumes and state.
    #[arg(long, env = "K3RS_ROOT_DIR", default_value = "/var/lib/k3rs/agent")]
    root_dir: PathBuf,
    /// Where container logs are written.
    #[arg(long, env = "K3RS_POD_LOGS_DIR", default_value = "/var/log/pods")]
    pod_logs_dir: PathBuf,
    /// The cluster DNS service address(es) pods resolve names with.
    #[arg(
        long,
        env = "K3RS_CLUSTER_DNS",
        value_delimiter = ',',
        default_value = "10.43.0.10"
    )]
    cluster_dns: Vec<IpAddr>,
    #[arg(long, env = "K3RS_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Pod address range of this node (default: the Node's spec.podCIDR).
    #[arg(long, env = "K3RS_POD_CIDR")]
    pod_cidr: Option<String>,
    /// Where the CNI config goes (default: <root-dir>/etc/cni/net.d).
    #[arg(long, env = "K3RS_CNI_CONF_DIR")]
    cni_conf_dir: Option<PathBuf>,
    #[arg(long, env = "K3RS_CNI_BIN_DIR", default_value = "/usr/lib/cni")]
    cni_bin_dir: PathBuf,
    /// The bridge pods attach to.
    #[arg(long, env = "K3RS_CNI_BRIDGE", default_value = k3rs_node_agent::cni::DEFAULT_BRIDGE)]
    cni_bridge: String,
    /// The address reported as InternalIP (default: the default route's source).
    #[arg(long, env = "K3RS_NODE_IP")]
    node_ip: Option<IpAddr>,
    /// The address the kubelet API (HTTPS) listens on.
    #[arg(long, env = "K3RS_BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// The kubelet API port, advertised in the Node status.
    #[arg(long, env = "K3RS_PORT", default_value_t = 10250)]
    port: u16,
    /// Kubelet API serving certificate (default: <root-dir>/pki/serving-kubelet.crt,
    /// self-signed when missing).
    #[arg(long, env = "K3RS_TLS_CERT_FILE", requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "K3RS_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// CA that signs kubelet API client certificates (default: <root-dir>/pki/ca.crt).
    #[arg(long, env = "K3RS_CLIENT_CA_FILE")]
    client_ca_file: Option<PathBuf>,
    /// Rotate a container's log file when it grows past this size.
    #[arg(long, env = "K3RS_CONTAINER_LOG_MAX_SIZE", default_value = "10Mi", value_parser = parse_log_size)]
    container_log_max_size: u64,
    /// Log files kept per container, the live one included.
    #[arg(long, env = "K3RS_CONTAINER_LOG_MAX_FILES", default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..))]
    container_log_max_files: u16,
    /// Port of the health endpoint on 127.0.0.1; 0 disables it.
    #[arg(long, env = "K3RS_HEALTHZ_PORT", default_value_t = 10248)]
    healthz_port: u16,
    /// Do not serve cluster DNS on this node (pods still point at --cluster-dns).
    #[arg(long, env = "K3RS_DISABLE_CLUSTER_DNS")]
    disable_cluster_dns: bool,
    /// Where cluster DNS listens, UDP and TCP (default: the first
    /// --cluster-dns address, port 53, put on the dummy link k3rs-dns0).
    #[arg(long, env = "K3RS_CLUSTER_DNS_LISTEN")]
    cluster_dns_listen: Option<SocketAddr>,
    /// The host's resolver config: upstreams for non-cluster names and the
    /// base of pods with dnsPolicy Default.
    #[arg(long, env = "K3RS_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Upstream DNS servers (ip:port, comma separated) instead of the
    /// nameservers of --resolv-conf.
    #[arg(long, env = "K3RS_CLUSTER_DNS_UPSTREAM", value_delimiter = ',')]
    cluster_dns_upstream: Vec<SocketAddr>,
    /// Do not run the service proxy (Services then need another kube-proxy).
    #[arg(long, env = "K3RS_DISABLE_KUBE_PROXY")]
    disable_kube_proxy: bool,
    /// How the service proxy programs the kernel (nftables falls back to
    /// iptables when `nft` is missing).
    #[arg(long, env = "K3RS_PROXY_MODE", value_enum, default_value = "nftables")]
    proxy_mode: k3rs_node_agent::proxy::Mode,
    #[arg(long, env = "K3RS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// More logging (-v debug, -vv trace).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
}

fn parse_log_size(s: &str) -> Result<u64, String> {
    k3rs_node_agent::kubelet_api::logs::parse_size(s)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size such as 10Mi"))
}

fn main() -> ExitCode {
    let flags: Flags = k3rs_common::cli::parse_or_exit("k3rs-node-agent");
    k3rs_common::logging::init(flags.log_format, flags.verbose);
    let node_name = flags
        .node_name
        .unwrap_or_else(k3rs_common::pki::hostname)
        .to_lowercase();
    let mut config = Config::new(flags.kubeconfig, node_name);
    config.cni_conf_dir = flags
        .cni_conf_dir
        .unwrap_or_else(|| flags.root_dir.join("etc/cni/net.d"));
    config.container_runtime_endpoint = flags.container_runtime_endpoint;
    config.root_dir = flags.root_dir;
    config.pod_logs_dir = flags.pod_logs_dir;
    config.cluster_dns = flags.cluster_dns;
    config.cluster_domain = flags.cluster_domain;
    config.pod_cidr = flags.pod_cidr;
    config.cni_bin_dir = flags.cni_bin_dir;
    config.cni_bridge = flags.cni_bridge;
    config.node_ip = flags.node_ip;
    config.port = flags.port;
    config.dns.enabled = !flags.disable_cluster_dns;
    config.dns.listen = flags.cluster_dns_listen;
    config.dns.resolv_conf = flags.resolv_conf;
    config.dns.upstreams = flags.cluster_dns_upstream;
    config.proxy = (!flags.disable_kube_proxy).then(|| k3rs_node_agent::proxy::ProxyConfig {
        mode: flags.proxy_mode,
        ..Default::default()
    });
    config.bind_address = flags.bind_address;
    config.tls_cert_file = flags.tls_cert_file;
    config.tls_private_key_file = flags.tls_private_key_file;
    config.client_ca_file = flags.client_ca_file;
    config.container_log_max_size = flags.container_log_max_size;
    config.container_log_max_files = usize::from(flags.container_log_max_files);
    config.healthz_addr =
        (flags.healthz_port != 0).then(|| SocketAddr::from(([127, 0, 0, 1], flags.healthz_port)));
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("k3rs-node-agent: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(k3rs_node_agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "k3rs-node-agent failed");
            ExitCode::FAILURE
        }
    }
}
