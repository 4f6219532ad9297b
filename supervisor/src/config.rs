//! `k3rs server` configuration: flags, `K3RS_*` environment variables, the
//! config file and its `config.yaml.d/*.yaml` drop-ins, merged with figment.
//!
//! Precedence is flag > env > file > default. Keys in files are the flag names
//! without `--`; a key written `key+:` appends to the list that earlier files
//! built instead of replacing it (K3s's syntax).
//!
//! clap parses flags and environment variables (so `--help` shows each flag's
//! env name and default), and reports for every value where it came from; we
//! then split clap's values into three figment layers by that source and put
//! the file layers between them.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args as _, CommandFactory, FromArgMatches};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Deserializer, Serialize};

/// The config file read when `--config` is not given; it may be missing.
pub const DEFAULT_CONFIG: &str = "/etc/k3rs/config.yaml";

/// Default `--datastore-listen-address`: where etcd clients expect etcd.
pub const DEFAULT_DATASTORE_LISTEN: &str = "127.0.0.1:2379";

/// `/var/lib/k3rs` as root, `~/.k3rs` otherwise (K3s's rule).
pub fn default_data_dir() -> PathBuf {
    if is_root() {
        PathBuf::from("/var/lib/k3rs")
    } else {
        home().join(".k3rs")
    }
}

/// `/etc/k3rs/k3rs.yaml` as root; `~/.kube/k3rs.yaml` otherwise, since a
/// non-root user cannot write /etc (K3s does the same).
pub fn default_write_kubeconfig() -> PathBuf {
    if is_root() {
        PathBuf::from("/etc/k3rs/k3rs.yaml")
    } else {
        home().join(".kube/k3rs.yaml")
    }
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Log output format of the supervisor and, passed on, of every daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl From<LogFormat> for k3rs_common::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => k3rs_common::LogFormat::Text,
            LogFormat::Json => k3rs_common::LogFormat::Json,
        }
    }
}

/// The flags of `k3rs server` (also taken by `check-config` and
/// `certificate rotate`, which need to know the same paths and ports).
/// Every flag is also a config file key (its name without `--`) and an
/// environment variable `K3RS_<NAME_IN_CAPS>`.
#[derive(Debug, Clone, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServerFlags {
    /// Config file; `config.yaml.d/*.yaml` beside it are read after it, in
    /// lexical order. A missing default file is fine.
    #[arg(long, short = 'c', env = "K3RS_CONFIG", default_value = DEFAULT_CONFIG)]
    #[serde(skip)]
    pub config: PathBuf,
    /// State directory (database, certificates, tokens).
    #[arg(long, short = 'd', env = "K3RS_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Datastore: empty or sqlite://PATH (embedded SQLite), postgres://...,
    /// mysql://..., or http(s)://host:2379[,...] for an external etcd (then no
    /// datastore daemon is started).
    #[arg(long, env = "K3RS_DATASTORE_ENDPOINT", default_value = "")]
    pub datastore_endpoint: String,
    /// Loopback host:port the datastore daemon serves the etcd API on. Its
    /// health endpoint is the same host, port + 2 (etcd's 2379/2381 pairing),
    /// unless `--datastore-arg metrics-address=...` says otherwise.
    #[arg(long, env = "K3RS_DATASTORE_LISTEN_ADDRESS", default_value = DEFAULT_DATASTORE_LISTEN)]
    pub datastore_listen_address: String,
    /// Shared secret nodes join with: a bare secret or a full K10 token.
    /// Generated on first start when not given.
    #[arg(long, short = 't', env = "K3RS_TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Run an embedded etcd member (the Debian `etcd`) instead of the SQLite
    /// datastore: the first server of a highly available cluster.
    #[arg(long, env = "K3RS_CLUSTER_INIT", value_parser = BoolishValueParser::new())]
    pub cluster_init: bool,
    /// Join the embedded-etcd cluster of this server (https://<server>:6443)
    /// as a further server; needs its --token.
    #[arg(long, short = 's', env = "K3RS_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Embedded etcd: client port (loopback and the advertised address).
    #[arg(long, env = "K3RS_ETCD_CLIENT_PORT", default_value_t = 2379)]
    pub etcd_client_port: u16,
    /// Embedded etcd: peer port, reached by the other servers.
    #[arg(long, env = "K3RS_ETCD_PEER_PORT", default_value_t = 2380)]
    pub etcd_peer_port: u16,
    /// Embedded etcd: loopback HTTP port of /health and /metrics.
    #[arg(long, env = "K3RS_ETCD_METRICS_PORT", default_value_t = 2381)]
    pub etcd_metrics_port: u16,
    /// Extra embedded etcd flag, key=value (repeatable).
    #[arg(long, env = "K3RS_ETCD_ARG", value_name = "KEY=VALUE")]
    pub etcd_arg: Vec<String>,
    /// HTTPS port of the API server.
    #[arg(long, env = "K3RS_HTTPS_LISTEN_PORT", default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Address the API server binds (default: all addresses).
    #[arg(long, env = "K3RS_BIND_ADDRESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<IpAddr>,
    /// Address the API server advertises to the cluster.
    #[arg(long, env = "K3RS_ADVERTISE_ADDRESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_address: Option<IpAddr>,
    /// Where to write the admin kubeconfig.
    #[arg(long, short = 'o', env = "K3RS_WRITE_KUBECONFIG", default_value_os_t = default_write_kubeconfig())]
    pub write_kubeconfig: PathBuf,
    /// File mode of the admin kubeconfig, octal.
    #[arg(long, env = "K3RS_WRITE_KUBECONFIG_MODE", default_value = "0600", value_parser = parse_mode_arg)]
    pub write_kubeconfig_mode: String,
    /// Service IP range.
    #[arg(long, env = "K3RS_SERVICE_CIDR", default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Pod IP range (used by the node agent and controller manager).
    #[arg(long, env = "K3RS_CLUSTER_CIDR", default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Do not run the scheduler.
    #[arg(long, env = "K3RS_DISABLE_SCHEDULER", value_parser = BoolishValueParser::new())]
    pub disable_scheduler: bool,
    /// Do not run the controller manager.
    #[arg(long, env = "K3RS_DISABLE_CONTROLLER_MANAGER", value_parser = BoolishValueParser::new())]
    pub disable_controller_manager: bool,
    /// Do not run the node agent and containerd on this server.
    #[arg(long, env = "K3RS_DISABLE_AGENT", value_parser = BoolishValueParser::new())]
    pub disable_agent: bool,
    /// Do not deploy the manifest NAME (`<data-dir>/server/manifests/NAME.yaml`),
    /// and remove what it deployed before; `servicelb` turns off the
    /// LoadBalancer controller (repeatable).
    #[arg(long, env = "K3RS_DISABLE", value_name = "NAME")]
    pub disable: Vec<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub node: NodeFlags,
    /// Extra API server flag, key=value (repeatable).
    #[arg(long, env = "K3RS_KUBE_APISERVER_ARG", value_name = "KEY=VALUE")]
    pub kube_apiserver_arg: Vec<String>,
    /// Extra scheduler flag, key=value (repeatable).
    #[arg(long, env = "K3RS_KUBE_SCHEDULER_ARG", value_name = "KEY=VALUE")]
    pub kube_scheduler_arg: Vec<String>,
    /// Extra controller manager flag, key=value (repeatable).
    #[arg(
        long,
        env = "K3RS_KUBE_CONTROLLER_MANAGER_ARG",
        value_name = "KEY=VALUE"
    )]
    pub kube_controller_manager_arg: Vec<String>,
    /// Extra datastore flag, key=value (repeatable).
    #[arg(long, env = "K3RS_DATASTORE_ARG", value_name = "KEY=VALUE")]
    pub datastore_arg: Vec<String>,
    /// Write each daemon's output to <log-dir>/<daemon>.log instead of this
    /// process's stderr.
    #[arg(long, env = "K3RS_LOG_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
    /// Debug logging here and in every daemon.
    #[arg(long, env = "K3RS_DEBUG", value_parser = BoolishValueParser::new())]
    pub debug: bool,
    /// Log format.
    #[arg(long, env = "K3RS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Directory holding the daemon binaries (default: beside this
    /// executable, then PATH).
    #[arg(long, env = "K3RS_BIN_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<PathBuf>,
}

/// The node flags `k3rs server` and `k3rs agent` share: this machine as a
/// node (containerd + the node agent).
#[derive(Debug, Clone, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeFlags {
    /// The node's name (default: the host name).
    #[arg(long, env = "K3RS_NODE_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Append a random id (kept in <data-dir>/agent/node-id) to the node name.
    #[arg(long, env = "K3RS_WITH_NODE_ID", value_parser = BoolishValueParser::new())]
    pub with_node_id: bool,
    /// The address the node reports as InternalIP.
    #[arg(long, env = "K3RS_NODE_IP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<IpAddr>,
    /// Node label key=value (repeatable).
    #[arg(long, env = "K3RS_NODE_LABEL", value_name = "KEY=VALUE")]
    pub node_label: Vec<String>,
    /// Extra node agent flag, key=value (repeatable).
    #[arg(long, env = "K3RS_KUBELET_ARG", value_name = "KEY=VALUE")]
    pub kubelet_arg: Vec<String>,
    /// Use the container runtime at this CRI socket instead of starting
    /// containerd.
    #[arg(long, env = "K3RS_CONTAINER_RUNTIME_ENDPOINT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_runtime_endpoint: Option<String>,
    /// The API socket of the containerd k3rs starts.
    #[arg(long, env = "K3RS_CONTAINERD_SOCKET", default_value = crate::node::DEFAULT_CONTAINERD_SOCKET)]
    pub containerd_socket: PathBuf,
    /// containerd snapshotter (overlayfs, or native where overlay mounts fail).
    #[arg(long, env = "K3RS_SNAPSHOTTER", default_value = "overlayfs")]
    pub snapshotter: String,
    /// Registry mirrors, logins and TLS for containerd (K3s registries.yaml
    /// format); a missing file means none.
    #[arg(long, env = "K3RS_PRIVATE_REGISTRY", default_value = crate::registries::DEFAULT_PATH)]
    pub private_registry: PathBuf,
    /// Do not enforce NetworkPolicies on this node (passed to the node agent).
    #[arg(long, env = "K3RS_DISABLE_NETWORK_POLICY", value_parser = BoolishValueParser::new())]
    pub disable_network_policy: bool,
    /// Pod network across nodes: vxlan, host-gw (nodes on one L2
    /// segment) or none (single node / another CNI).
    #[arg(long, env = "K3RS_FLANNEL_BACKEND", default_value = "vxlan", value_parser = ["vxlan", "host-gw", "none"])]
    pub flannel_backend: String,
}

/// The resolved node settings (see `NodeFlags`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeConfig {
    #[serde(default)]
    pub node_name: Option<String>,
    pub with_node_id: bool,
    #[serde(default)]
    pub node_ip: Option<IpAddr>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub node_label: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub kubelet_arg: Vec<String>,
    #[serde(default)]
    pub container_runtime_endpoint: Option<String>,
    pub containerd_socket: PathBuf,
    pub snapshotter: String,
    pub private_registry: PathBuf,
    #[serde(default)]
    pub disable_network_policy: bool,
    pub flannel_backend: String,
}

fn parse_mode_arg(s: &str) -> Result<String, String> {
    parse_mode(s).map(|_| s.to_string())
}

/// Parses an octal file mode such as `0644` or `600`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if !digits.is_empty() && m <= 0o7777 => Ok(m),
        _ => Err(format!("{s:?} is not an octal file mode like \"0600\"")),
    }
}

/// A file mode written in a config file as `"0644"` or `0644`. YAML reads an
/// unquoted 0644 as the number 644, so numbers are read as octal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Str(String),
            Num(u64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Str(s) => s,
            Raw::Num(n) => n.to_string(),
        };
        parse_mode(&text)
            .map(FileMode)
            .map_err(serde::de::Error::custom)
    }
}

/// A list key that may be written as one string or a list of strings.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => Vec::new(),
        Some(Raw::One(s)) => vec![s],
        Some(Raw::Many(v)) => v,
    })
}

/// The resolved configuration of `k3rs server`.
#[derive(Debug, Clone, Deserialize)]
// Unknown keys are refused while parsing files (`known_keys`), so no
// deny_unknown_fields here (serde does not support it with flatten).
#[serde(rename_all = "kebab-case")]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub datastore_endpoint: String,
    pub datastore_listen_address: String,
    #[serde(default)]
    pub token: Option<String>,
    pub cluster_init: bool,
    #[serde(default)]
    pub server: Option<String>,
    pub etcd_client_port: u16,
    pub etcd_peer_port: u16,
    pub etcd_metrics_port: u16,
    #[serde(default, deserialize_with = "one_or_many")]
    pub etcd_arg: Vec<String>,
    pub https_listen_port: u16,
    #[serde(default)]
    pub bind_address: Option<IpAddr>,
    #[serde(default)]
    pub advertise_address: Option<IpAddr>,
    pub write_kubeconfig: PathBuf,
    pub write_kubeconfig_mode: FileMode,
    pub service_cidr: String,
    pub cluster_cidr: String,
    pub disable_scheduler: bool,
    pub disable_controller_manager: bool,
    pub disable_agent: bool,
    #[serde(default, deserialize_with = "one_or_many")]
    pub disable: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub kube_apiserver_arg: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub kube_scheduler_arg: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub kube_controller_manager_arg: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub datastore_arg: Vec<String>,
    #[serde(flatten)]
    pub node: NodeConfig,
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
    pub debug: bool,
    pub log_format: LogFormat,
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// The config file the values were read from (not a key).
    #[serde(skip)]
    pub config_file: PathBuf,
}

/// The flags of `k3rs agent`; like the server's, each is also a config file
/// key and a `K3RS_*` variable (the server URL is `K3RS_URL`, as K3s's).
#[derive(Debug, Clone, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AgentFlags {
    /// Config file; `config.yaml.d/*.yaml` beside it are read after it.
    #[arg(long, short = 'c', env = "K3RS_CONFIG", default_value = DEFAULT_CONFIG)]
    #[serde(skip)]
    pub config: PathBuf,
    /// The server to join, https://<server>:6443.
    #[arg(long, short = 's', env = "K3RS_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The server's node token (`k3rs token show` or <data-dir>/server/node-token).
    #[arg(long, short = 't', env = "K3RS_TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// State directory (containerd, node certificates).
    #[arg(long, short = 'd', env = "K3RS_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    #[command(flatten)]
    #[serde(flatten)]
    pub node: NodeFlags,
    /// Write each daemon's output to <log-dir>/<daemon>.log.
    #[arg(long, env = "K3RS_LOG_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
    /// Debug logging here and in every daemon.
    #[arg(long, env = "K3RS_DEBUG", value_parser = BoolishValueParser::new())]
    pub debug: bool,
    #[arg(long, env = "K3RS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Directory holding k3rs-node-agent (default: beside this executable, then PATH).
    #[arg(long, env = "K3RS_BIN_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<PathBuf>,
    /// The cluster's pod range, as the server has it (pod traffic leaving
    /// it is masqueraded).
    #[arg(long, env = "K3RS_CLUSTER_CIDR", default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
}

/// The resolved configuration of `k3rs agent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AgentConfig {
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    pub data_dir: PathBuf,
    #[serde(flatten)]
    pub node: NodeConfig,
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
    pub debug: bool,
    pub log_format: LogFormat,
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    pub cluster_cidr: String,
    #[serde(skip)]
    pub config_file: PathBuf,
}

/// How the datastore is reached, from `--datastore-endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datastore {
    /// k3rs-datastore runs as a child on this endpoint ("" = SQLite in the data dir).
    Shim(String),
    /// A real etcd: the API server talks to these URLs directly.
    Etcd(Vec<String>),
    /// An etcd member k3rs runs (`--cluster-init`, or `--server` to join).
    Embedded,
}

impl ServerConfig {
    pub fn server_dir(&self) -> PathBuf {
        self.data_dir.join("server")
    }

    pub fn datastore(&self) -> Datastore {
        let e = self.datastore_endpoint.trim();
        if self.cluster_init || self.server.is_some() {
            Datastore::Embedded
        } else if e.starts_with("http://") || e.starts_with("https://") {
            Datastore::Etcd(
                e.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            )
        } else {
            Datastore::Shim(e.to_string())
        }
    }

    /// The datastore's loopback listen address (validated at load).
    pub fn datastore_listen(&self) -> Result<SocketAddr, ConfigError> {
        self.datastore_listen_address
            .parse()
            .map_err(|e| ConfigError::Value {
                origin: "datastore-listen-address".into(),
                key: "datastore-listen-address".into(),
                message: format!("{:?}: {e}", self.datastore_listen_address),
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid YAML: {message}", path.display())]
    Yaml { path: PathBuf, message: String },
    #[error("{}: unknown key {key:?} (keys are flag names without \"--\", see `k3rs server --help`)", path.display())]
    UnknownKey { path: PathBuf, key: String },
    #[error("{}: {key}+: only list keys can be appended to", path.display())]
    NotAList { path: PathBuf, key: String },
    /// A value that does not fit its key; `origin` names the file, env
    /// variable or flag it came from.
    #[error("{origin}: {key}: {message}")]
    Value {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{0}")]
    Cli(String),
}

/// A flag set whose values layer with config files and the environment.
pub trait Layered: clap::Args + FromArgMatches + Serialize {
    /// `--config`.
    fn config_path(&self) -> &Path;
}

impl Layered for ServerFlags {
    fn config_path(&self) -> &Path {
        &self.config
    }
}

impl Layered for AgentFlags {
    fn config_path(&self) -> &Path {
        &self.config
    }
}

/// Merges defaults < config files < environment < flags for `F`.
fn layers<F: Layered>(matches: &ArgMatches) -> Result<(Figment, PathBuf), ConfigError> {
    let flags = F::from_arg_matches(matches).map_err(|e| ConfigError::Cli(e.to_string()))?;
    let explicit_config = !matches!(
        matches.value_source("config"),
        Some(ValueSource::DefaultValue) | None
    );
    let by_source = split_by_source(&flags, matches)?;
    let command = F::augment_args(clap::Command::new("k3rs"));
    let known = keys_of(&command);
    let lists = list_keys_of(&command);

    let mut figment = Figment::new().merge(Layer::new("default", by_source.defaults));
    for (path, text) in config_files(flags.config_path(), explicit_config)? {
        let (set, append) = parse_file(&path, &text, &known, &lists)?;
        let name = path.display().to_string();
        figment = figment
            .merge(Layer::new(name.clone(), set))
            .admerge(Layer::new(name, append));
    }
    figment = figment
        .merge(Layer::new("environment", by_source.env))
        .merge(Layer::new("command line", by_source.flags));
    Ok((figment, flags.config_path().to_path_buf()))
}

/// Loads the server configuration from parsed `ServerFlags` matches (`matches`
/// must come from a command that flattens `ServerFlags`).
pub fn load(matches: &ArgMatches) -> Result<ServerConfig, ConfigError> {
    let (figment, config_file) = layers::<ServerFlags>(matches)?;
    let mut config: ServerConfig = figment.extract().map_err(|e| value_error(&figment, e))?;
    config.config_file = config_file;
    validate(&config, &figment)?;
    Ok(config)
}

/// Loads the `k3rs agent` configuration (same layering as the server's).
pub fn load_agent(matches: &ArgMatches) -> Result<AgentConfig, ConfigError> {
    let (figment, config_file) = layers::<AgentFlags>(matches)?;
    let mut config: AgentConfig = figment.extract().map_err(|e| value_error(&figment, e))?;
    config.config_file = config_file;
    let bad = |key: &str, message: String| ConfigError::Value {
        origin: origin(&figment, key),
        key: key.to_string(),
        message,
    };
    match config.server.as_deref().map(str::trim) {
        Some(url) if url.starts_with("https://") => {}
        Some(url) => {
            return Err(bad(
                "server",
                format!("{url:?} is not an https:// URL like https://server:6443"),
            ));
        }
        None => {
            return Err(bad(
                "server",
                "k3rs agent needs --server https://<server>:6443 (or K3RS_URL)".into(),
            ));
        }
    }
    if config.token.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return Err(bad(
            "token",
            "k3rs agent needs --token (the server's node-token, or K3RS_TOKEN)".into(),
        ));
    }
    Ok(config)
}

/// Parses `args` (without the program name) as `k3rs server` flags and loads
/// the configuration; for tests and embedding.
pub fn load_from_args<I, S>(args: I) -> Result<ServerConfig, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let cmd = ServerFlags::augment_args(clap::Command::new("k3rs-server").no_binary_name(true));
    let matches = cmd
        .try_get_matches_from(args)
        .map_err(|e| ConfigError::Cli(e.to_string()))?;
    load(&matches)
}

/// The config file keys: every `k3rs server` flag but `--config`.
pub fn known_keys() -> Vec<String> {
    keys_of(&server_command())
}

/// The config file keys of `k3rs agent`.
pub fn agent_keys() -> Vec<String> {
    keys_of(&AgentFlags::augment_args(clap::Command::new("k3rs-agent")))
}

fn keys_of(command: &clap::Command) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|k| k != "config")
        .collect()
}

/// Keys whose values are lists (repeatable flags), where `key+:` is allowed.
fn list_keys_of(command: &clap::Command) -> Vec<String> {
    command
        .get_arguments()
        .filter(|a| matches!(a.get_action(), clap::ArgAction::Append))
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect()
}

fn server_command() -> clap::Command {
    ServerFlags::augment_args(clap::Command::new("k3rs-server"))
}

#[derive(Default)]
struct BySource {
    defaults: serde_json::Map<String, serde_json::Value>,
    env: serde_json::Map<String, serde_json::Value>,
    flags: serde_json::Map<String, serde_json::Value>,
}

/// Splits clap's typed values into defaults, env and command-line layers.
fn split_by_source<F: Serialize>(flags: &F, matches: &ArgMatches) -> Result<BySource, ConfigError> {
    let serde_json::Value::Object(all) =
        serde_json::to_value(flags).map_err(|e| ConfigError::Cli(e.to_string()))?
    else {
        return Err(ConfigError::Cli("flags did not serialize to a map".into()));
    };
    let mut out = BySource::default();
    for (key, value) in all {
        let id = key.replace('-', "_");
        let layer = match matches.value_source(&id) {
            Some(ValueSource::DefaultValue) => &mut out.defaults,
            Some(ValueSource::EnvVariable) => &mut out.env,
            Some(ValueSource::CommandLine) => &mut out.flags,
            // Not given anywhere and no default (an Option or a list).
            _ => continue,
        };
        layer.insert(key, value);
    }
    Ok(out)
}

/// The main config file (when present) and the drop-ins beside it, in order.
fn config_files(main: &Path, explicit: bool) -> Result<Vec<(PathBuf, String)>, ConfigError> {
    let mut files = Vec::new();
    match std::fs::read_to_string(main) {
        Ok(text) => files.push((main.to_path_buf(), text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
        Err(source) => {
            return Err(ConfigError::Read {
                path: main.to_path_buf(),
                source,
            });
        }
    }
    let dropins = {
        let mut name = main.file_name().unwrap_or_default().to_os_string();
        name.push(".d");
        main.with_file_name(name)
    };
    let entries = match std::fs::read_dir(&dropins) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(source) => {
            return Err(ConfigError::Read {
                path: dropins,
                source,
            });
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml") && !p.is_dir())
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        files.push((p, text));
    }
    Ok(files)
}

type YamlMap = serde_json::Map<String, serde_json::Value>;

/// Parses one config file into the keys it sets and the keys it appends to
/// (`key+:`), checking every key is known.
fn parse_file(
    path: &Path,
    text: &str,
    known: &[String],
    lists: &[String],
) -> Result<(YamlMap, YamlMap), ConfigError> {
    let yaml_err = |message: String| ConfigError::Yaml {
        path: path.to_path_buf(),
        message,
    };
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| yaml_err(e.to_string()))?;
    let mapping = match doc {
        serde_yaml::Value::Null => return Ok(Default::default()),
        serde_yaml::Value::Mapping(m) => m,
        _ => return Err(yaml_err("the top level must be a map of key: value".into())),
    };
    let (mut set, mut append) = (YamlMap::new(), YamlMap::new());
    for (k, v) in mapping {
        let serde_yaml::Value::String(raw_key) = k else {
            return Err(yaml_err(format!("key {k:?} is not a string")));
        };
        let (key, plus) = match raw_key.strip_suffix('+') {
            Some(k) => (k.to_string(), true),
            None => (raw_key.clone(), false),
        };
        if !known.contains(&key) {
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: raw_key,
            });
        }
        let mut value = serde_json::to_value(&v).map_err(|e| ConfigError::Value {
            origin: path.display().to_string(),
            key: key.clone(),
            message: e.to_string(),
        })?;
        let is_list = lists.contains(&key);
        // A list key written as one string is a one-element list, so that
        // appending to it (figment concatenates arrays) works.
        if is_list && !value.is_array() && !value.is_null() {
            value = serde_json::Value::Array(vec![value]);
        }
        if plus {
            if !is_list {
                return Err(ConfigError::NotAList {
                    path: path.to_path_buf(),
                    key,
                });
            }
            append.insert(key, value);
        } else {
            set.insert(key, value);
        }
    }
    Ok((set, append))
}

/// One named figment layer, so errors and `find_metadata` say where a value
/// came from.
struct Layer {
    name: Cow<'static, str>,
    values: YamlMap,
}

impl Layer {
    fn new(name: impl Into<Cow<'static, str>>, values: YamlMap) -> Self {
        Self {
            name: name.into(),
            values,
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let value = Value::serialize(&self.values)?;
        let dict = value.into_dict().unwrap_or_default();
        Ok(Profile::Default.collect(dict))
    }
}

/// Where the value of `key` came from, for error messages.
fn origin(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key).map(|m| m.name.as_ref()) {
        Some("environment") => format!("K3RS_{}", key.replace('-', "_").to_uppercase()),
        Some("command line") => format!("--{key}"),
        Some(name) => name.to_string(),
        None => "config".into(),
    }
}

fn value_error(figment: &Figment, e: figment::Error) -> ConfigError {
    let key = e.path.join(".");
    let key = if key.is_empty() {
        match &e.kind {
            figment::error::Kind::UnknownField(f, _) => f.clone(),
            figment::error::Kind::MissingField(f) => f.to_string(),
            _ => String::new(),
        }
    } else {
        key
    };
    let origin = match &e.metadata {
        Some(m) if !e.path.is_empty() => match m.name.as_ref() {
            "environment" | "command line" => origin(figment, &key),
            name => name.to_string(),
        },
        _ => origin(figment, &key),
    };
    ConfigError::Value {
        origin,
        key,
        message: e.kind.to_string(),
    }
}

/// Checks what types alone cannot.
fn validate(c: &ServerConfig, figment: &Figment) -> Result<(), ConfigError> {
    let bad = |key: &str, message: String| ConfigError::Value {
        origin: origin(figment, key),
        key: key.to_string(),
        message,
    };
    let e = c.datastore_endpoint.trim();
    let known_scheme = e.is_empty()
        || [
            "sqlite://",
            "postgres://",
            "postgresql://",
            "mysql://",
            "http://",
            "https://",
        ]
        .iter()
        .any(|s| e.starts_with(s));
    if !known_scheme {
        return Err(bad(
            "datastore-endpoint",
            format!(
                "{e:?}: expected sqlite://PATH, postgres://..., mysql://..., or http(s)://host:port for etcd"
            ),
        ));
    }
    match c.datastore_listen_address.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => {}
        _ => {
            return Err(bad(
                "datastore-listen-address",
                format!(
                    "{:?} is not ip:port with a non-zero port",
                    c.datastore_listen_address
                ),
            ));
        }
    }
    if c.https_listen_port == 0 {
        return Err(bad("https-listen-port", "0 is not a port".into()));
    }
    if c.cluster_init || c.server.is_some() {
        validate_embedded_etcd(c, &bad)?;
    }
    for key in ["service-cidr", "cluster-cidr"] {
        let v = if key == "service-cidr" {
            &c.service_cidr
        } else {
            &c.cluster_cidr
        };
        if !is_ipv4_cidr(v) {
            return Err(bad(
                key,
                format!("{v:?} is not an IPv4 CIDR like 10.43.0.0/16"),
            ));
        }
    }
    for (key, list) in [
        ("kube-apiserver-arg", &c.kube_apiserver_arg),
        ("kube-scheduler-arg", &c.kube_scheduler_arg),
        (
            "kube-controller-manager-arg",
            &c.kube_controller_manager_arg,
        ),
        ("kubelet-arg", &c.node.kubelet_arg),
        ("datastore-arg", &c.datastore_arg),
        ("etcd-arg", &c.etcd_arg),
    ] {
        if let Some(a) = list.iter().find(|a| a.trim_start_matches('-').is_empty()) {
            return Err(bad(
                key,
                format!("{a:?} names no flag (expected key=value)"),
            ));
        }
    }
    Ok(())
}

/// `--cluster-init` / `--server`: an embedded etcd member replaces the
/// datastore, so the datastore flags cannot apply.
fn validate_embedded_etcd(
    c: &ServerConfig,
    bad: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if !c.datastore_endpoint.trim().is_empty() {
        let key = if c.cluster_init {
            "cluster-init"
        } else {
            "server"
        };
        return Err(bad(
            key,
            format!(
                "--{key} runs an embedded etcd member, which cannot be combined with \
                 --datastore-endpoint {:?}",
                c.datastore_endpoint
            ),
        ));
    }
    if let Some(url) = &c.server {
        if c.cluster_init {
            return Err(bad(
                "server",
                "--cluster-init starts a new cluster and --server joins one: give only one".into(),
            ));
        }
        if !url.trim().starts_with("https://") {
            return Err(bad(
                "server",
                format!("{url:?} is not an https:// URL like https://server:6443"),
            ));
        }
        if c.token.as_deref().is_none_or(|t| t.trim().is_empty()) {
            return Err(bad(
                "token",
                "--server needs --token: the first server's token \
                 (<data-dir>/server/token there)"
                    .into(),
            ));
        }
    }
    let ports = [
        ("etcd-client-port", c.etcd_client_port),
        ("etcd-peer-port", c.etcd_peer_port),
        ("etcd-metrics-port", c.etcd_metrics_port),
    ];
    for (i, (key, port)) in ports.iter().enumerate() {
        if *port == 0 {
            return Err(bad(key, "0 is not a port".into()));
        }
        if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
            return Err(bad(key, format!("{port} is also --{other}")));
        }
    }
    Ok(())
}

fn is_ipv4_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    ip.parse::<std::net::Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}

/// The `k3rs server` command (for `--help` rendering in tests).
pub fn server_help() -> String {
    let mut cmd = crate::cli::Cli::command();
    cmd.find_subcommand_mut("server")
        .map(|c| c.render_long_help().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// clap reads the process environment, so tests that set K3RS_* run one
    /// at a time.
    static ENV: Mutex<()> = Mutex::new(());

    struct EnvGuard(Vec<&'static str>);
    impl EnvGuard {
        fn set(vars: &[(&'static str, &str)]) -> Self {
            for (k, v) in vars {
                // SAFETY: every test touching the environment holds `ENV`.
                unsafe { std::env::set_var(k, v) };
            }
            Self(vars.iter().map(|(k, _)| *k).collect())
        }
    }
    impl Drop for EnvGuard {
        fn drop(&mut self) {
            for k in &self.0 {
                // SAFETY: as above.
                unsafe { std::env::remove_var(k) };
            }
        }
    }

    fn lock() -> std::sync::MutexGuard<'static, ()> {
        ENV.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn load_with(dir: &Path, args: &[&str]) -> Result<ServerConfig, ConfigError> {
        let cfg = dir.join("config.yaml").display().to_string();
        let mut all = vec!["--config".to_string(), cfg];
        all.extend(args.iter().map(|s| s.to_string()));
        load_from_args(all)
    }

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn defaults_apply_without_any_file() {
        let _l = lock();
        let c = load_from_args(["--config", "/nonexistent/k3rs-test/config.yaml"]);
        assert!(
            matches!(c, Err(ConfigError::Read { .. })),
            "an explicit missing file is an error: {c:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.yaml", "");
        let c = load_with(dir.path(), &[]).unwrap();
        assert_eq!(c.https_listen_port, 6443);
        assert_eq!(c.service_cidr, "10.43.0.0/16");
        assert_eq!(c.cluster_cidr, "10.42.0.0/16");
        assert_eq!(c.write_kubeconfig_mode, FileMode(0o600));
        assert_eq!(c.datastore(), Datastore::Shim(String::new()));
        assert_eq!(c.datastore_listen_address, DEFAULT_DATASTORE_LISTEN);
        assert!(c.kube_apiserver_arg.is_empty());
        assert!(!c.debug);
        assert_eq!(c.token, None);
        assert_eq!(c.data_dir, default_data_dir());
    }

    #[test]
    fn files_dropins_append_env_and_flags_layer_in_order() {
        let _l = lock();
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "config.yaml",
            "https-listen-port: 7000\nservice-cidr: 10.50.0.0/16\nkube-apiserver-arg: a=1\nwrite-kubeconfig-mode: 0644\ndebug: true\ntoken: from-file\n",
        );
        write(
            dir.path(),
            "config.yaml.d/10-more.yaml",
            "kube-apiserver-arg+:\n  - b=2\n  - c=3\ndatastore-arg: [x=1]\n",
        );
        write(
            dir.path(),
            "config.yaml.d/20-replace.yaml",
            "datastore-arg: [y=2]\nkube-apiserver-arg+: d=4\nhttps-listen-port: 7001\n",
        );
        write(dir.path(), "config.yaml.d/ignored.txt", "not: yaml: at all");
        let _env = EnvGuard::set(&[
            ("K3RS_HTTPS_LISTEN_PORT", "7002"),
            ("K3RS_SERVICE_CIDR", "10.60.0.0/16"),
            ("K3RS_CLUSTER_CIDR", "10.61.0.0/16"),
        ]);
        let c = load_with(dir.path(), &["--https-listen-port", "7003"]).unwrap();
        assert_eq!(c.https_listen_port, 7003, "flag beats env and files");
        assert_eq!(c.service_cidr, "10.60.0.0/16", "env beats file");
        assert_eq!(c.cluster_cidr, "10.61.0.0/16", "env beats default");
        assert_eq!(c.kube_apiserver_arg, ["a=1", "b=2", "c=3", "d=4"]);
        assert_eq!(c.datastore_arg, ["y=2"], "a later file without + replaces");
        assert_eq!(
            c.write_kubeconfig_mode,
            FileMode(0o644),
            "unquoted 0644 is octal"
        );
        assert!(c.debug);
        assert_eq!(c.token.as_deref(), Some("from-file"));

        // Without the flag the env value wins; a flag list replaces the file's list.
        let c = load_with(dir.path(), &["--kube-apiserver-arg", "z=9"]).unwrap();
        assert_eq!(c.https_listen_port, 7002);
        assert_eq!(c.kube_apiserver_arg, ["z=9"]);
    }

    #[test]
    fn env_bools_and_lists() {
        let _l = lock();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.yaml", "disable-agent: false\n");
        let _env = EnvGuard::set(&[
            ("K3RS_DISABLE_AGENT", "1"),
            (
                "K3RS_DATASTORE_ENDPOINT",
                "https://10.0.0.1:2379,https://10.0.0.2:2379",
            ),
        ]);
        let c = load_with(dir.path(), &[]).unwrap();
        assert!(c.disable_agent);
        assert_eq!(
            c.datastore(),
            Datastore::Etcd(vec![
                "https://10.0.0.1:2379".into(),
                "https://10.0.0.2:2379".into()
            ])
        );
    }

    #[test]
    fn disable_network_policy_from_file_and_flag() {
        let _l = lock();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.yaml", "{}\n");
        let c = load_with(dir.path(), &[]).unwrap();
        assert!(!c.node.disable_network_policy);
        write(dir.path(), "config.yaml", "disable-network-policy: true\n");
        let c = load_with(dir.path(), &[]).unwrap();
        assert!(c.node.disable_network_policy);
        write(dir.path(), "config.yaml", "{}\n");
        let c = load_with(dir.path(), &["--disable-network-policy"]).unwrap();
        assert!(c.node.disable_network_policy);
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let _l = lock();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml").display().to_string();

        write(dir.path(), "config.yaml", "no-such-key: 1\n");
        let e = load_with(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains(&path) && e.contains("no-such-key"), "{e}");

        write(dir.path(), "config.yaml", "https-listen-port: [1\n");
        let e = load_with(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains(&path) && e.contains("YAML"), "{e}");

        write(dir.path(), "config.yaml", "https-listen-port: lots\n");
        let e = load_with(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains(&path) && e.contains("https-listen-port"), "{e}");

        write(dir.path(), "config.yaml", "https-listen-port+: 1\n");
        let e = load_with(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("only list keys"), "{e}");

        write(
            dir.path(),
            "config.yaml",
            "write-kubeconfig-mode: \"0999\"\n",
        );
        let e = load_with(dir.path(), &[]).unwrap_err().to_string();
        assert!(
            e.contains(&path) && e.contains("write-kubeconfig-mode"),
            "{e}"
        );

        write(
            dir.path(),
            "config.yaml",
            "datastore-endpoint: oracle://x\n",
        );
        let e = load_with(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains(&path) && e.contains("datastore-endpoint"), "{e}");

        write(dir.path(), "config.yaml", "- a\n- b\n");
        let e = load_with(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("top level"), "{e}");

        write(dir.path(), "config.yaml", "");
        write(
            dir.path(),
            "config.yaml.d/50-x.yaml",
            "service-cidr: banana\n",
        );
        let e = load_with(dir.path(), &[]).unwrap_err().to_string();
        assert!(e.contains("50-x.yaml") && e.contains("service-cidr"), "{e}");

        // A bad flag value is the flag's error.
        let e = load_with(
            dir.path(),
            &["--service-cidr", "10.0.0.0/8", "--https-listen-port", "x"],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("https-listen-port"), "{e}");
    }

    #[test]
    fn embedded_etcd_flags_are_checked() {
        let _l = lock();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.yaml", "");
        let c = load_with(dir.path(), &["--cluster-init"]).unwrap();
        assert_eq!(c.datastore(), Datastore::Embedded);
        assert_eq!(
            (c.etcd_client_port, c.etcd_peer_port, c.etcd_metrics_port),
            (2379, 2380, 2381)
        );
        let c = load_with(
            dir.path(),
            &["--server", "https://10.0.0.1:6443", "--token", "abc"],
        )
        .unwrap();
        assert_eq!(c.datastore(), Datastore::Embedded);
        for (args, needle) in [
            (
                vec!["--cluster-init", "--datastore-endpoint", "postgres://x"],
                "cannot be combined",
            ),
            (vec!["--server", "https://10.0.0.1:6443"], "needs --token"),
            (
                vec!["--server", "http://10.0.0.1:6443", "--token", "t"],
                "https://",
            ),
            (
                vec![
                    "--cluster-init",
                    "--server",
                    "https://10.0.0.1:6443",
                    "--token",
                    "t",
                ],
                "give only one",
            ),
            (
                vec!["--cluster-init", "--etcd-peer-port", "2379"],
                "also --etcd-client-port",
            ),
        ] {
            let e = load_with(dir.path(), &args).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn help_lists_env_names_and_defaults() {
        let help = server_help();
        for needle in [
            "--data-dir",
            "[env: K3RS_DATA_DIR=",
            "--https-listen-port",
            "[default: 6443]",
            "[env: K3RS_KUBE_APISERVER_ARG=",
            "[default: 0600]",
            "[default: 10.43.0.0/16]",
        ] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("rw-").is_err());
    }
}
