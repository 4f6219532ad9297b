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
    #[arg(long, env = "K3RS_KUBECONFIG", required_unless_present = "server")]
    kubeconfig: Option<PathBuf>,
    /// Join the cluster at this URL (`https://host:6443`) with `--token`
    /// instead of using a kubeconfig.
    #[arg(long, env = "K3RS_SERVER", conflicts_with = "kubeconfig")]
    server: Option<String>,
    /// Node token (`K10<ca hash>::server:<secret>`, or the bare secret).
    #[arg(long, env = "K3RS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the node token (keeps it off the command line).
    #[arg(long, env = "K3RS_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// This node's password for joining; created with a random value on
    /// first join.
    #[arg(long, env = "K3RS_NODE_PASSWORD_FILE", default_value = k3rs_node_agent::join::DEFAULT_PASSWORD_FILE)]
    node_password_file: PathBuf,
    /// The name this node registers as (default: the hostname).
    #[arg(long, env = "K3RS_NODE_NAME")]
    node_name: Option<String>,
    /// Append a random id (kept in <root-dir>/node-id) to the node name.
    #[arg(long, env = "K3RS_WITH_NODE_ID")]
    with_node_id: bool,
    /// Labels to add to the Node, key=value[,key=value...].
    #[arg(long, env = "K3RS_NODE_LABELS", value_delimiter = ',', value_parser = parse_label)]
    node_labels: Vec<(String, String)>,
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
    /// The bridge pods attach to.
    #[arg(long, env = "K3RS_CNI_BRIDGE", default_value = k3rs_node_agent::cni::DEFAULT_BRIDGE)]
    cni_bridge: String,
    #[arg(long, env = "K3RS_CNI_BIN_DIR", default_value = "/usr/lib/cni")]
    cni_bin_dir: PathBuf,
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
    /// Do not enforce NetworkPolicies on this node (and remove the rules an
    /// earlier run left).
    #[arg(long, env = "K3RS_DISABLE_NETWORK_POLICY")]
    disable_network_policy: bool,
    /// How pods reach pods on other nodes: host-gw (routes via node
    /// addresses on one L2 segment), vxlan (kernel VXLAN, flannel.1) or
    /// none (single node, or another CNI).
    #[arg(
        long,
        env = "K3RS_FLANNEL_BACKEND",
        value_enum,
        default_value = "vxlan"
    )]
    flannel_backend: k3rs_node_agent::flannel::Backend,
    /// The cluster's pod range: pod traffic leaving it is masqueraded.
    #[arg(long, env = "K3RS_CLUSTER_CIDR", default_value = "10.42.0.0/16", value_parser = parse_cidr)]
    cluster_cidr: String,
    /// Directory of static pod manifests (default: <root-dir>/pod-manifests).
    #[arg(long, env = "K3RS_POD_MANIFEST_PATH")]
    pod_manifest_path: Option<PathBuf>,
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

fn parse_cidr(s: &str) -> Result<String, String> {
    s.parse::<k3rs_node_agent::flannel::Ipv4Cidr>()
        .map(|_| s.trim().to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

fn main() -> ExitCode {
    let flags: Flags = k3rs_common::cli::parse_or_exit("k3rs-node-agent");
    k3rs_common::logging::init(flags.log_format, flags.verbose);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("k3rs-node-agent: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match rt.block_on(configure(flags)) {
        Ok(c) => c,
        Err(e) => {
            // One line naming the problem (a refused join, a foreign CA, ...).
            eprintln!("k3rs-node-agent: {e}");
            return ExitCode::from(e.exit_code());
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

/// The agent's configuration from its flags; joins the cluster first when
/// given `--server` and `--token`.
async fn configure(flags: Flags) -> Result<Config, k3rs_node_agent::join::JoinError> {
    use k3rs_node_agent::join;
    let node_name = k3rs_common::node::node_name(
        flags.node_name.as_deref(),
        flags.with_node_id,
        &flags.root_dir,
    )
    .map_err(|source| join::JoinError::Io {
        path: flags.root_dir.join("node-id"),
        source,
    })?;
    let token = match (flags.token, &flags.token_file) {
        (Some(t), _) => Some(t),
        (None, Some(path)) => {
            Some(
                std::fs::read_to_string(path).map_err(|source| join::JoinError::Io {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        (None, None) => None,
    };
    let kubeconfig = match (flags.kubeconfig, flags.server, token) {
        (Some(k), _, _) => k,
        (None, Some(_), None) => return Err(join::JoinError::NoToken),
        (None, Some(server), Some(token)) => {
            let opts = join::JoinOptions {
                server,
                token,
                node_name: node_name.clone(),
                password_file: flags.node_password_file,
                root_dir: flags.root_dir.clone(),
                node_ip: flags.node_ip,
            };
            join::join(&opts).await?.kubeconfig
        }
        // clap requires --kubeconfig or --server with --token.
        _ => flags.root_dir.join("kubelet.kubeconfig"),
    };
    let mut config = Config::new(kubeconfig, node_name);
    config.cni_conf_dir = flags
        .cni_conf_dir
        .unwrap_or_else(|| flags.root_dir.join("etc/cni/net.d"));
    config.container_runtime_endpoint = flags.container_runtime_endpoint;
    config.pod_manifest_path = Some(
        flags
            .pod_manifest_path
            .unwrap_or_else(|| flags.root_dir.join("pod-manifests")),
    );
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
    config.network_policy = Some(k3rs_node_agent::netpol::NetpolConfig {
        enabled: !flags.disable_network_policy,
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
    config.node_labels = flags.node_labels.into_iter().collect();
    config.flannel_backend = flags.flannel_backend;
    config.cluster_cidr = flags.cluster_cidr;
    Ok(config)
}
