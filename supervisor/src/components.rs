//! The daemons `k3rs server` runs, in start order: one table entry each.
//!
//! Adding a daemon = one `Component` in `COMPONENTS` plus one small function
//! building its flags and health checks. A daemon whose binary is not
//! installed is skipped with one log line unless it is `required`.
//! containerd and the node agent (unless `--disable-agent`) come last; their
//! specifics live in `node`, which `k3rs agent` shares.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::ServerName;

use crate::bootstrap::{self, Bootstrap, BootstrapError};
use crate::config::{Datastore, ServerConfig};
use crate::daemon::DaemonSpec;
use crate::probe::{Endpoint, Health};

#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error(
        "{binary} not found (looked in {}); build it (cargo build -p {binary}) or pass --bin-dir",
        searched
    )]
    MissingBinary {
        binary: &'static str,
        searched: String,
    },
    #[error(
        "{binary} is not installed: install the Debian package {package} \
         (apt-get install {package}), or run {without}"
    )]
    MissingPackage {
        binary: &'static str,
        package: &'static str,
        /// How to do without it ("with --disable-agent").
        without: &'static str,
    },
    #[error("{component}: {message}")]
    Invalid {
        component: &'static str,
        message: String,
    },
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error("TLS client for health checks: {0}")]
    Tls(#[from] k3rs_common::tls::TlsError),
}

/// What a component's builder gets.
pub struct Context<'a> {
    pub config: &'a ServerConfig,
    pub boot: &'a Bootstrap,
    pub program: PathBuf,
}

/// One daemon of the server.
pub struct Component {
    /// Short name for logs ("apiserver").
    pub name: &'static str,
    /// Executable name ("k3rs-apiserver").
    pub binary: &'static str,
    /// Without it the server cannot work: a missing binary is an error.
    pub required: bool,
    /// A program from this Debian package (searched on PATH and the system
    /// dirs, never in `--bin-dir`), not a k3rs binary.
    pub package: Option<&'static str>,
    /// Whether the configuration asks for it.
    pub enabled: fn(&ServerConfig) -> bool,
    pub build: fn(&Context) -> Result<DaemonSpec, ComponentError>,
}

/// Start order; stopped in reverse.
pub const COMPONENTS: &[Component] = &[
    Component {
        name: "etcd",
        binary: "etcd",
        required: true,
        package: Some("etcd-server"),
        enabled: |c| c.datastore() == Datastore::Embedded,
        build: etcd,
    },
    Component {
        name: "datastore",
        binary: "k3rs-datastore",
        required: true,
        package: None,
        enabled: |c| matches!(c.datastore(), Datastore::Shim(_)),
        build: datastore,
    },
    Component {
        name: "apiserver",
        binary: "k3rs-apiserver",
        required: true,
        package: None,
        enabled: |_| true,
        build: apiserver,
    },
    Component {
        name: "scheduler",
        binary: "k3rs-scheduler",
        required: false,
        package: None,
        enabled: |c| !c.disable_scheduler,
        build: scheduler,
    },
    Component {
        name: "controller-manager",
        binary: "k3rs-controller-manager",
        required: false,
        package: None,
        enabled: |c| !c.disable_controller_manager,
        build: controller_manager,
    },
    Component {
        name: "containerd",
        binary: "containerd",
        required: true,
        package: Some("containerd"),
        enabled: |c| !c.disable_agent && c.node.container_runtime_endpoint.is_none(),
        build: containerd,
    },
    Component {
        name: "node-agent",
        binary: "k3rs-node-agent",
        required: true,
        package: None,
        enabled: |c| !c.disable_agent,
        build: node_agent,
    },
];

/// The daemons to run for `config`, in start order.
pub fn plan(config: &ServerConfig, boot: &Bootstrap) -> Result<Vec<DaemonSpec>, ComponentError> {
    let mut specs = Vec::new();
    for c in COMPONENTS {
        if !(c.enabled)(config) {
            tracing::info!(
                daemon = c.name,
                "{} is disabled by the configuration",
                c.name
            );
            continue;
        }
        let found = match c.package {
            Some(package) => Some(crate::node::system_binary(c.binary, package).map_err(
                |e| match e {
                    ComponentError::MissingPackage {
                        binary, package, ..
                    } if c.name == "etcd" => ComponentError::MissingPackage {
                        binary,
                        package,
                        without: "without --cluster-init / --server",
                    },
                    e => e,
                },
            )?),
            None => find_binary(c.binary, config.bin_dir.as_deref()),
        };
        let Some(program) = found else {
            if c.required {
                return Err(ComponentError::MissingBinary {
                    binary: c.binary,
                    searched: search_dirs(config.bin_dir.as_deref())
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            tracing::info!(
                daemon = c.name,
                "{} is not installed; running without the {}",
                c.binary,
                c.name
            );
            continue;
        };
        specs.push((c.build)(&Context {
            config,
            boot,
            program,
        })?);
    }
    Ok(specs)
}

/// Directories searched for daemon binaries: `--bin-dir` alone when given;
/// otherwise the directory of this executable, then PATH.
pub fn search_dirs(bin_dir: Option<&Path>) -> Vec<PathBuf> {
    if let Some(d) = bin_dir {
        return vec![d.to_path_buf()];
    }
    let mut dirs = Vec::new();
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(d);
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

/// The first executable `name` in `search_dirs`.
pub fn find_binary(name: &str, bin_dir: Option<&Path>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    search_dirs(bin_dir)
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A daemon's flags: the supervisor's defaults, then the user's
/// `--<daemon>-arg key=value` entries, which replace a default of the same
/// key (as in K3s) or add new flags.
#[derive(Debug, Default, Clone)]
pub struct Args(Vec<(String, Option<String>)>);

impl Args {
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.0.push((key.to_string(), Some(value.to_string())));
        self
    }

    /// A flag without a value (`--key`).
    pub fn flag(mut self, key: &str) -> Self {
        self.0.push((key.to_string(), None));
        self
    }

    pub fn set_opt(self, key: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    /// Applies the user's `key=value` (or bare `key`) entries.
    pub fn with_overrides(mut self, extra: &[String]) -> Self {
        for e in extra {
            let e = e.trim().trim_start_matches('-');
            let (k, v) = match e.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (e.to_string(), None),
            };
            match self.0.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => self.0.push((k, v)),
            }
        }
        self
    }

    /// The final value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn render(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("--{k}={v}"),
                None => format!("--{k}"),
            })
            .collect()
    }
}

/// Flags every k3rs daemon shares (DESIGN §7).
fn common(config: &ServerConfig) -> Args {
    Args::default().set("log-format", config.log_format.as_str())
}

fn finish(ctx: &Context, name: &'static str, args: &Args, health: Health) -> DaemonSpec {
    let mut argv = args.render();
    if ctx.config.debug {
        argv.push("-v".into());
    }
    DaemonSpec {
        name,
        program: ctx.program.clone(),
        args: argv,
        health,
        env_remove: own_env_vars(),
    }
}

/// The supervisor's `K3RS_*` variables: daemons share the prefix and would
/// take e.g. `K3RS_DATASTORE_ENDPOINT` as their own flag.
pub(crate) fn own_env_vars() -> Vec<String> {
    env_vars_of(&crate::config::known_keys())
}

/// `K3RS_<KEY>` for each config key, plus `K3RS_CONFIG`.
pub(crate) fn env_vars_of(keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|k| format!("K3RS_{}", k.replace('-', "_").to_uppercase()))
        // `--server` reads K3RS_URL, as K3s's does.
        .chain(["K3RS_CONFIG".to_string(), "K3RS_URL".to_string()])
        .collect()
}

fn invalid(component: &'static str, message: String) -> ComponentError {
    ComponentError::Invalid { component, message }
}

fn etcd(ctx: &Context) -> Result<DaemonSpec, ComponentError> {
    let member = ctx.boot.etcd.as_ref().ok_or_else(|| {
        invalid(
            "etcd",
            "the embedded etcd member was not prepared (internal error)".into(),
        )
    })?;
    let paths = crate::etcd::EtcdPaths::new(ctx.config);
    Ok(crate::etcd::spec(
        ctx.config,
        &paths,
        member,
        ctx.program.clone(),
    ))
}

fn datastore(ctx: &Context) -> Result<DaemonSpec, ComponentError> {
    let c = ctx.config;
    let listen = c
        .datastore_listen()
        .map_err(|e| invalid("datastore", e.to_string()))?;
    // etcd's pairing: client port 2379, metrics port 2381.
    let metrics = SocketAddr::new(listen.ip(), listen.port().saturating_add(2));
    let endpoint = match c.datastore() {
        Datastore::Shim(e) => e,
        Datastore::Etcd(_) | Datastore::Embedded => String::new(),
    };
    let args = common(c)
        .set("data-dir", c.data_dir.display())
        .set("listen-address", listen)
        .set("metrics-address", metrics)
        .set_opt(
            "datastore-endpoint",
            (!endpoint.is_empty()).then_some(endpoint),
        )
        .with_overrides(&c.datastore_arg);
    let health = match args.get("metrics-address").filter(|a| !a.is_empty()) {
        Some(a) => Endpoint::Http(
            a.parse()
                .map_err(|e| invalid("datastore", format!("metrics-address {a:?}: {e}")))?,
        ),
        None => Endpoint::Tcp(listen),
    };
    Ok(finish(ctx, "datastore", &args, Health::standard(health)))
}

/// Where the API server finds etcd.
pub fn etcd_servers(config: &ServerConfig) -> Result<String, ComponentError> {
    Ok(match config.datastore() {
        Datastore::Etcd(urls) => urls.join(","),
        Datastore::Embedded => crate::etcd::local_client_url(config),
        Datastore::Shim(_) => {
            let listen = config
                .datastore_listen()
                .map_err(|e| invalid("apiserver", e.to_string()))?;
            format!("http://{listen}")
        }
    })
}

fn apiserver(ctx: &Context) -> Result<DaemonSpec, ComponentError> {
    let c = ctx.config;
    let paths = &ctx.boot.paths;
    let (kubelet_crt, kubelet_key) = bootstrap::apiserver_kubelet_client(&ctx.boot.ca, &paths.tls)?;
    let args = common(c)
        .set("etcd-servers", etcd_servers(c)?)
        .set("secure-port", c.https_listen_port)
        .set_opt("bind-address", c.bind_address)
        .set_opt("advertise-address", c.advertise_address)
        .set("cert-dir", paths.tls.display())
        .set(
            "service-account-key-file",
            paths.service_account_key.display(),
        )
        .set("service-cluster-ip-range", &c.service_cidr)
        .set("kubelet-client-certificate", kubelet_crt.display())
        .set("kubelet-client-key", kubelet_key.display())
        .set("kubelet-certificate-authority", paths.ca_cert.display())
        // The join endpoints sign node certificates with the cluster CA and
        // check node secrets against the server token.
        .set("cluster-signing-cert-file", paths.ca_cert.display())
        .set(
            "cluster-signing-key-file",
            paths
                .tls
                .join(format!("{}.key", k3rs_common::pki::layout::SERVER_CA))
                .display(),
        )
        .set("join-token-file", paths.token.display());
    let args = if c.datastore() == Datastore::Embedded {
        let (ca, cert, key) = crate::etcd::EtcdPaths::new(c).client_files();
        args.set("etcd-cafile", ca.display())
            .set("etcd-certfile", cert.display())
            .set("etcd-keyfile", key.display())
            .set(
                "server-bootstrap-file",
                paths
                    .cred
                    .join(crate::server_bootstrap::FILE_NAME)
                    .display(),
            )
    } else {
        args
    }
    .with_overrides(&c.kube_apiserver_arg);
    let port = match args.get("secure-port") {
        Some(p) => p
            .parse::<u16>()
            .map_err(|e| invalid("apiserver", format!("secure-port {p:?}: {e}")))?,
        None => c.https_listen_port,
    };
    let host = bootstrap::api_probe_host(c);
    let tls = k3rs_common::tls::client_config(&paths.ca_cert, None)?;
    let endpoint = Endpoint::Https {
        addr: SocketAddr::new(host, port),
        tls: Arc::new(tls),
        server_name: ServerName::IpAddress(host.into()),
    };
    Ok(finish(ctx, "apiserver", &args, Health::standard(endpoint)))
}

fn scheduler(ctx: &Context) -> Result<DaemonSpec, ComponentError> {
    let kubeconfig =
        bootstrap::daemon_kubeconfig(ctx.boot, "kube-scheduler", "system:kube-scheduler", &[])?;
    let args = common(ctx.config)
        .set("kubeconfig", kubeconfig.display())
        .set("bind-address", "127.0.0.1")
        // DESIGN §3: health on 10259.
        .set("secure-port", 10259)
        .with_overrides(&ctx.config.kube_scheduler_arg);
    let health = Health::standard(Endpoint::Http(health_addr("scheduler", &args)?));
    Ok(finish(ctx, "scheduler", &args, health))
}

fn controller_manager(ctx: &Context) -> Result<DaemonSpec, ComponentError> {
    let kubeconfig = bootstrap::daemon_kubeconfig(
        ctx.boot,
        "kube-controller-manager",
        "system:kube-controller-manager",
        &[],
    )?;
    let mut args = common(ctx.config)
        .set("kubeconfig", kubeconfig.display())
        .set("bind-address", "127.0.0.1")
        // Node IPAM hands each node its pod range from this.
        .set("cluster-cidr", &ctx.config.cluster_cidr)
        // DESIGN §3: health on 10257.
        .set("secure-port", 10257);
    // ServiceLB is a controller here rather than a manifest, but users turn
    // it off the K3s way.
    if ctx.config.disable.iter().any(|d| d == "servicelb") {
        args = args.set("controllers", "*,-servicelb");
    }
    let args = args.with_overrides(&ctx.config.kube_controller_manager_arg);
    let mut health = Health::standard(Endpoint::Http(health_addr("controller-manager", &args)?));
    // With several servers only one controller manager leads, and a standby
    // reports not-ready until it does: a joining server must not wait for
    // the lease, only for the process to be up.
    if ctx.config.datastore() == Datastore::Embedded {
        health.ready_path = health.live_path;
    }
    Ok(finish(ctx, "controller-manager", &args, health))
}

fn containerd(ctx: &Context) -> Result<DaemonSpec, ComponentError> {
    let settings = crate::node::server_settings(ctx.config);
    crate::node::containerd_spec(&settings)?.ok_or_else(|| {
        invalid(
            "containerd",
            "not started with --container-runtime-endpoint".into(),
        )
    })
}

/// The server's own node agent, with credentials the supervisor issues
/// and the control-plane label.
fn node_agent(ctx: &Context) -> Result<DaemonSpec, ComponentError> {
    let settings = crate::node::server_settings(ctx.config);
    let name = settings.resolved_node_name()?;
    let kubeconfig = crate::node::server_node_credentials(&settings, ctx.boot, &name)?;
    crate::node::node_agent_spec(
        &settings,
        ctx.program.clone(),
        &name,
        &crate::node::Credentials::Kubeconfig(kubeconfig),
    )
}

/// Where a daemon serves its health endpoint, from its final
/// `--bind-address` and `--secure-port` (the user may move either).
fn health_addr(component: &'static str, args: &Args) -> Result<SocketAddr, ComponentError> {
    let port = args.get("secure-port").unwrap_or_default();
    let port: u16 = port
        .parse()
        .map_err(|e| invalid(component, format!("secure-port {port:?}: {e}")))?;
    let ip: std::net::IpAddr = match args.get("bind-address") {
        Some(a) => a
            .parse()
            .map_err(|e| invalid(component, format!("bind-address {a:?}: {e}")))?,
        None => [127, 0, 0, 1].into(),
    };
    // A wildcard bind is probed on loopback.
    let ip = if ip.is_unspecified() {
        [127, 0, 0, 1].into()
    } else {
        ip
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_args_replace_defaults_and_add_flags() {
        let a = Args::default()
            .set("listen-address", "127.0.0.1:2379")
            .set("metrics-address", "127.0.0.1:2381")
            .with_overrides(&[
                "metrics-address=127.0.0.1:9999".into(),
                "--compact-interval=1m".into(),
                "feature-x".into(),
            ]);
        assert_eq!(
            a.render(),
            [
                "--listen-address=127.0.0.1:2379",
                "--metrics-address=127.0.0.1:9999",
                "--compact-interval=1m",
                "--feature-x"
            ]
        );
        assert_eq!(a.get("metrics-address"), Some("127.0.0.1:9999"));
        assert_eq!(a.get("feature-x"), None);
        assert_eq!(a.get("nope"), None);
    }

    #[test]
    fn etcd_endpoint_skips_the_datastore() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yaml"), "").unwrap();
        let c = crate::config::load_from_args([
            "--config",
            &dir.path().join("c.yaml").display().to_string(),
            "--datastore-endpoint",
            "https://10.0.0.1:2379,https://10.0.0.2:2379",
        ])
        .unwrap();
        let datastore = COMPONENTS.iter().find(|c| c.name == "datastore").unwrap();
        assert!(!(datastore.enabled)(&c));
        assert_eq!(
            etcd_servers(&c).unwrap(),
            "https://10.0.0.1:2379,https://10.0.0.2:2379"
        );
        let c = crate::config::load_from_args([
            "--config",
            &dir.path().join("c.yaml").display().to_string(),
            "--datastore-listen-address",
            "127.0.0.1:12379",
        ])
        .unwrap();
        assert!((datastore.enabled)(&c));
        assert_eq!(etcd_servers(&c).unwrap(), "http://127.0.0.1:12379");
    }

    #[test]
    fn own_env_vars_cover_every_flag() {
        let v = own_env_vars();
        for k in [
            "K3RS_DATA_DIR",
            "K3RS_DATASTORE_ENDPOINT",
            "K3RS_TOKEN",
            "K3RS_CONFIG",
        ] {
            assert!(v.iter().any(|x| x == k), "{k} missing");
        }
    }
}
