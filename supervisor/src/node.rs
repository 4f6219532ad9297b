//! This machine as a node: containerd and the node agent, run by `k3rs
//! server` (unless `--disable-agent`) and by `k3rs agent`.
//!
//! containerd gets a generated config under `<data-dir>/agent/containerd/`
//! (root, state, config.toml; socket `--containerd-socket`), unless
//! `--container-runtime-endpoint` names one that already runs. Once it
//! answers, k3rs imports its own sandbox image (built from the static
//! busybox, see `k3rs_common::oci_image`) and every airgap tarball in
//! `<data-dir>/agent/images/`. The node agent keeps its state in
//! `<data-dir>/agent` (its `--root-dir`): `pki/`, `kubelet.kubeconfig`,
//! the CNI config containerd reads (`etc/cni/net.d`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k3rs_common::pki::{self, CertSpec};

use crate::bootstrap::{Bootstrap, LEAF_VALIDITY_DAYS};
use crate::components::{Args, ComponentError};
use crate::config::LogFormat;
use crate::daemon::DaemonSpec;
use crate::probe::{Endpoint, Health};
use crate::registries::Registries;

/// The sandbox image k3rs builds and imports (containerd's `sandbox_image`).
pub const PAUSE_IMAGE: &str = "k3rs.local/pause:1";
/// Default `--containerd-socket`.
pub const DEFAULT_CONTAINERD_SOCKET: &str = "/run/k3rs/containerd/containerd.sock";
/// Where containernetworking-plugins installs the CNI plugins on Debian.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// Label every server node carries.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane=true";
/// How long one image import may take.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(300);

/// The node-related settings of `k3rs server` and `k3rs agent`.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub data_dir: PathBuf,
    pub node_name: Option<String>,
    pub with_node_id: bool,
    pub node_ip: Option<IpAddr>,
    /// `key=value` labels for the Node.
    pub node_labels: Vec<String>,
    pub kubelet_arg: Vec<String>,
    /// An existing CRI endpoint: then no containerd is started.
    pub container_runtime_endpoint: Option<String>,
    pub containerd_socket: PathBuf,
    pub snapshotter: String,
    /// `registries.yaml` (`--private-registry`).
    pub private_registry: PathBuf,
    /// `--disable-network-policy`, handed to the node agent.
    pub disable_network_policy: bool,
    pub log_format: LogFormat,
    pub debug: bool,
    /// `K3RS_*` variables the children must not inherit.
    pub env_remove: Vec<String>,
    /// `--flannel-backend` (vxlan, host-gw, none).
    pub flannel_backend: String,
    /// `--cluster-cidr`, for the pod network's masquerade rule.
    pub cluster_cidr: String,
}

impl NodeSettings {
    /// `<data-dir>/agent`: the node agent's `--root-dir`.
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }

    pub fn containerd_dir(&self) -> PathBuf {
        self.agent_dir().join("containerd")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.agent_dir().join("images")
    }

    pub fn cni_conf_dir(&self) -> PathBuf {
        self.agent_dir().join("etc/cni/net.d")
    }

    /// containerd's registry hosts directory (`config_path`), rendered
    /// from `--private-registry` at every start.
    pub fn registry_hosts_dir(&self) -> PathBuf {
        self.agent_dir().join("etc/containerd/certs.d")
    }

    /// The CRI endpoint the node agent uses.
    pub fn endpoint(&self) -> String {
        match &self.container_runtime_endpoint {
            Some(e) if e.contains("://") => e.clone(),
            Some(e) => format!("unix://{e}"),
            None => format!("unix://{}", self.containerd_socket.display()),
        }
    }

    /// Whether k3rs runs containerd itself.
    pub fn runs_containerd(&self) -> bool {
        self.container_runtime_endpoint.is_none()
    }

    /// The node's name (`--node-name` or the host name, `-<id>` appended
    /// with `--with-node-id`).
    pub fn resolved_node_name(&self) -> Result<String, ComponentError> {
        let dir = self.agent_dir();
        k3rs_common::node::node_name(self.node_name.as_deref(), self.with_node_id, &dir).map_err(
            |e| {
                invalid(
                    "node-agent",
                    format!("{}: {e}", dir.join("node-id").display()),
                )
            },
        )
    }
}

/// A server's node settings (`k3rs server` without `--disable-agent`).
pub fn server_settings(c: &crate::config::ServerConfig) -> NodeSettings {
    let mut s = settings_from(&c.node, &c.data_dir, c.log_format, c.debug);
    s.cluster_cidr = c.cluster_cidr.clone();
    s.node_labels.insert(0, CONTROL_PLANE_LABEL.into());
    s.env_remove = crate::components::own_env_vars();
    s
}

/// An agent's node settings (`k3rs agent`).
pub fn agent_settings(c: &crate::config::AgentConfig) -> NodeSettings {
    let mut s = settings_from(&c.node, &c.data_dir, c.log_format, c.debug);
    s.cluster_cidr = c.cluster_cidr.clone();
    s.env_remove = crate::components::env_vars_of(&crate::config::agent_keys());
    s
}

fn settings_from(
    n: &crate::config::NodeConfig,
    data_dir: &Path,
    log_format: LogFormat,
    debug: bool,
) -> NodeSettings {
    NodeSettings {
        data_dir: data_dir.to_path_buf(),
        node_name: n.node_name.clone(),
        with_node_id: n.with_node_id,
        node_ip: n.node_ip,
        node_labels: n.node_label.clone(),
        kubelet_arg: n.kubelet_arg.clone(),
        container_runtime_endpoint: n
            .container_runtime_endpoint
            .clone()
            .filter(|e| !e.trim().is_empty()),
        containerd_socket: n.containerd_socket.clone(),
        snapshotter: n.snapshotter.clone(),
        private_registry: n.private_registry.clone(),
        disable_network_policy: n.disable_network_policy,
        log_format,
        debug,
        env_remove: Vec::new(),
        flannel_backend: n.flannel_backend.clone(),
        cluster_cidr: String::new(),
    }
}

fn invalid(component: &'static str, message: String) -> ComponentError {
    ComponentError::Invalid { component, message }
}

/// A program from a Debian package, on PATH or in the usual system dirs.
pub fn system_binary(name: &'static str, package: &'static str) -> Result<PathBuf, ComponentError> {
    find_system_program(name).ok_or(ComponentError::MissingPackage {
        binary: name,
        package,
        without: "with --disable-agent",
    })
}

/// `name` on PATH or in the system dirs (where Debian packages put it).
pub fn find_system_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// containerd's `config.toml` for this node, with the registry section
/// from `registries.yaml`.
pub fn containerd_config(s: &NodeSettings, registries: &Registries) -> String {
    let dir = s.containerd_dir();
    let socket = s.containerd_socket.display();
    format!(
        r#"# Generated by k3rs at every start; edits are lost.
version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  # "0" would make containerd hand out streaming URLs ending in ":0".
  stream_server_port = "{stream_port}"
  # In nested containers lowering OOM scores is not allowed: never ask
  # for less than containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni}"
{registry}"#,
        registry = registries.containerd_section(&s.registry_hosts_dir()),
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        runc = dir.join("runc").display(),
        snapshotter = s.snapshotter,
        cni = s.cni_conf_dir().display(),
        stream_port = free_loopback_port(),
    )
}

/// A port free on 127.0.0.1 now, for containerd's exec/attach/port-forward
/// streaming server (two nodes on one host must not share K3s's fixed 10010).
fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(10010)
}

/// containerd as a supervised daemon, or None with
/// `--container-runtime-endpoint`. Checks the packages a node needs.
pub fn containerd_spec(s: &NodeSettings) -> Result<Option<DaemonSpec>, ComponentError> {
    if !s.runs_containerd() {
        tracing::info!(endpoint = %s.endpoint(), "using the container runtime at --container-runtime-endpoint");
        return Ok(None);
    }
    let containerd = system_binary("containerd", "containerd")?;
    let ctr = system_binary("ctr", "containerd")?;
    system_binary("runc", "runc")?;
    if !Path::new(CNI_BIN_DIR).join("bridge").exists() {
        return Err(ComponentError::MissingPackage {
            binary: "bridge (CNI plugin)",
            package: "containernetworking-plugins",
            without: "with --disable-agent",
        });
    }
    let dir = s.containerd_dir();
    let io = |p: &Path, e: std::io::Error| invalid("containerd", format!("{}: {e}", p.display()));
    for d in [
        dir.clone(),
        s.cni_conf_dir(),
        s.images_dir(),
        s.containerd_socket
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.clone()),
    ] {
        std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
    }
    let registries = Registries::load(&s.private_registry)
        .map_err(|e| invalid("containerd", format!("--private-registry {e}")))?;
    registries
        .write_hosts_dir(&s.registry_hosts_dir())
        .map_err(|e| invalid("containerd", e.to_string()))?;
    if !registries.is_empty() {
        tracing::info!(file = %s.private_registry.display(), "registry mirrors and logins from the private registry file");
    }
    let config = dir.join("config.toml");
    // 0600: it may hold registry passwords.
    k3rs_common::pki::write_private(&config, &containerd_config(s, &registries))
        .map_err(|e| invalid("containerd", format!("{}: {e}", config.display())))?;
    let mut args = vec!["--config".to_string(), config.display().to_string()];
    if s.debug {
        args.extend(["--log-level".into(), "debug".into()]);
    }
    let probe = Endpoint::Exec {
        program: ctr,
        args: vec![
            "--address".into(),
            s.containerd_socket.display().to_string(),
            "version".into(),
        ],
    };
    Ok(Some(DaemonSpec {
        name: "containerd",
        program: containerd,
        args,
        health: Health {
            endpoint: probe,
            ready_path: "",
            live_path: "",
        },
        env_remove: s.env_remove.clone(),
    }))
}

/// Imports the pause image and every `<data-dir>/agent/images/*.tar` into
/// containerd's `k8s.io` namespace. A bad airgap tarball is logged and
/// skipped; a failed pause image import is an error (no pod could start).
pub async fn import_images(s: &NodeSettings) -> Result<(), ComponentError> {
    let ctr = system_binary("ctr", "containerd")?;
    let address = match s.endpoint().strip_prefix("unix://") {
        Some(p) => p.to_string(),
        None => return Ok(()),
    };
    let dir = s.containerd_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| invalid("containerd", format!("{}: {e}", dir.display())))?;
    let pause = dir.join("pause.tar");
    k3rs_common::oci_image::write_busybox_image(
        &pause,
        PAUSE_IMAGE,
        Some(&["/bin/busybox", "sleep", "2147483647"]),
    )
    .map_err(|e| invalid("containerd", format!("building the pause image: {e}")))?;
    import(&ctr, &address, &pause)
        .await
        .map_err(|e| invalid("containerd", e))?;
    let mut tarballs: Vec<PathBuf> = std::fs::read_dir(s.images_dir())
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "tar"))
                .collect()
        })
        .unwrap_or_default();
    tarballs.sort();
    for t in tarballs {
        match import(&ctr, &address, &t).await {
            Ok(()) => tracing::info!(image = %t.display(), "imported airgap image"),
            Err(e) => tracing::warn!(image = %t.display(), error = %e, "airgap image not imported"),
        }
    }
    Ok(())
}

async fn import(ctr: &Path, address: &str, tar: &Path) -> Result<(), String> {
    let run = tokio::process::Command::new(ctr)
        .args([
            "--address",
            address,
            "--namespace",
            "k8s.io",
            "images",
            "import",
        ])
        .arg(tar)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(IMPORT_TIMEOUT, run)
        .await
        .map_err(|_| format!("ctr images import {} timed out", tar.display()))?
        .map_err(|e| format!("running {}: {e}", ctr.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ctr images import {}: {}",
            tar.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// How the node agent authenticates.
pub enum Credentials {
    /// A kubeconfig the supervisor wrote (server nodes).
    Kubeconfig(PathBuf),
    /// Join with the server URL and a token file (agents).
    Join { server: String, token_file: PathBuf },
}

/// The node agent as a supervised daemon.
pub fn node_agent_spec(
    s: &NodeSettings,
    program: PathBuf,
    node_name: &str,
    credentials: &Credentials,
) -> Result<DaemonSpec, ComponentError> {
    let mut args = Args::default()
        .set("log-format", s.log_format.as_str())
        .set("root-dir", s.agent_dir().display())
        .set("container-runtime-endpoint", s.endpoint())
        .set("cni-conf-dir", s.cni_conf_dir().display())
        .set("cni-bin-dir", CNI_BIN_DIR)
        .set("node-name", node_name)
        .set_opt("node-ip", s.node_ip)
        .set("flannel-backend", &s.flannel_backend)
        .set_opt(
            "cluster-cidr",
            Some(&s.cluster_cidr).filter(|c| !c.is_empty()),
        );
    if !["vxlan", "host-gw", "none"].contains(&s.flannel_backend.as_str()) {
        return Err(invalid(
            "node-agent",
            format!(
                "flannel-backend {:?} is not vxlan, host-gw or none",
                s.flannel_backend
            ),
        ));
    }
    args = match credentials {
        Credentials::Kubeconfig(k) => args.set("kubeconfig", k.display()),
        Credentials::Join { server, token_file } => args
            .set("server", server)
            .set("token-file", token_file.display()),
    };
    if !s.node_labels.is_empty() {
        args = args.set("node-labels", s.node_labels.join(","));
    }
    if s.disable_network_policy {
        args = args.flag("disable-network-policy");
    }
    let args = args.with_overrides(&s.kubelet_arg);
    let port = args.get("healthz-port").unwrap_or("10248");
    let port: u16 = port
        .parse()
        .map_err(|e| invalid("node-agent", format!("healthz-port {port:?}: {e}")))?;
    let mut argv = args.render();
    if s.debug {
        argv.push("-v".into());
    }
    Ok(DaemonSpec {
        name: "node-agent",
        program,
        args: argv,
        health: Health::standard(Endpoint::Http(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            port,
        )))),
        env_remove: s.env_remove.clone(),
    })
}

/// A server node's credentials, issued by the cluster CA the supervisor
/// holds, in the layout a joined agent has: `<root-dir>/pki/{ca.crt,
/// client-kubelet.*, serving-kubelet.*}` and `<root-dir>/kubelet.kubeconfig`.
pub fn server_node_credentials(
    s: &NodeSettings,
    boot: &Bootstrap,
    node_name: &str,
) -> Result<PathBuf, ComponentError> {
    let root = s.agent_dir();
    let dir = root.join("pki");
    std::fs::create_dir_all(&dir)
        .map_err(|e| invalid("node-agent", format!("{}: {e}", dir.display())))?;
    let pki_err = |e: pki::PkiError| invalid("node-agent", e.to_string());
    // Issued at every start: cheap, and the name may have changed.
    let client = boot
        .ca
        .issue(&CertSpec {
            common_name: format!("system:node:{node_name}"),
            organizations: vec!["system:nodes".into()],
            client: true,
            validity_days: LEAF_VALIDITY_DAYS,
            ..Default::default()
        })
        .map_err(pki_err)?;
    // The API server dials the kubelet at the Node's InternalIP, which the
    // agent detects the same way when --node-ip is not given.
    let node_ip = s.node_ip.unwrap_or_else(k3rs_common::node::detect_node_ip);
    let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
    if !node_ip.is_loopback() {
        ips.push(node_ip);
    }
    let serving = boot
        .ca
        .issue(&CertSpec {
            common_name: node_name.to_string(),
            dns_names: vec![node_name.to_string(), "localhost".into()],
            ip_addresses: ips,
            server: true,
            validity_days: LEAF_VALIDITY_DAYS,
            ..Default::default()
        })
        .map_err(pki_err)?;
    pki::write_public(&dir.join("ca.crt"), &boot.ca.cert_pem).map_err(pki_err)?;
    pki::write_public(&dir.join("client-kubelet.crt"), &client.cert_pem).map_err(pki_err)?;
    pki::write_private(&dir.join("client-kubelet.key"), &client.key_pem).map_err(pki_err)?;
    pki::write_public(&dir.join("serving-kubelet.crt"), &serving.cert_pem).map_err(pki_err)?;
    pki::write_private(&dir.join("serving-kubelet.key"), &serving.key_pem).map_err(pki_err)?;
    let kubeconfig = root.join("kubelet.kubeconfig");
    pki::write_private(
        &kubeconfig,
        &pki::kubeconfig(&boot.local_api_url, &boot.ca.cert_pem, &client),
    )
    .map_err(pki_err)?;
    Ok(kubeconfig)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> NodeSettings {
        NodeSettings {
            data_dir: dir.to_path_buf(),
            node_name: Some("n1".into()),
            with_node_id: false,
            node_ip: None,
            node_labels: vec![CONTROL_PLANE_LABEL.into()],
            kubelet_arg: vec!["healthz-port=12345".into(), "pod-cidr=10.1.2.0/24".into()],
            container_runtime_endpoint: None,
            containerd_socket: dir.join("ctd.sock"),
            snapshotter: "native".into(),
            private_registry: dir.join("registries.yaml"),
            disable_network_policy: false,
            log_format: LogFormat::Text,
            debug: false,
            env_remove: vec![],
            flannel_backend: "host-gw".into(),
            cluster_cidr: "10.245.0.0/16".into(),
        }
    }

    #[test]
    fn containerd_config_points_at_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let c = containerd_config(&s, &Registries::default());
        assert!(c.contains(&format!(
            "address = \"{}\"",
            dir.path().join("ctd.sock").display()
        )));
        assert!(c.contains(&format!("sandbox_image = \"{PAUSE_IMAGE}\"")));
        assert!(c.contains("snapshotter = \"native\""));
        assert!(c.contains(&format!("conf_dir = \"{}\"", s.cni_conf_dir().display())));
        assert!(c.contains(&format!(
            "config_path = \"{}\"",
            s.registry_hosts_dir().display()
        )));
        assert_eq!(
            s.endpoint(),
            format!("unix://{}", dir.path().join("ctd.sock").display())
        );
        let external = NodeSettings {
            container_runtime_endpoint: Some("/run/containerd/containerd.sock".into()),
            ..s
        };
        assert!(!external.runs_containerd());
        assert_eq!(
            external.endpoint(),
            "unix:///run/containerd/containerd.sock"
        );
        assert!(containerd_spec(&external).unwrap().is_none());
    }

    #[test]
    fn node_agent_flags() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let spec = node_agent_spec(
            &s,
            "/bin/k3rs-node-agent".into(),
            "n1",
            &Credentials::Join {
                server: "https://10.0.0.1:6443".into(),
                token_file: dir.path().join("t"),
            },
        )
        .unwrap();
        let a = spec.args.join(" ");
        assert!(a.contains("--server=https://10.0.0.1:6443"), "{a}");
        assert!(a.contains("--node-name=n1"), "{a}");
        assert!(
            a.contains("--node-labels=node-role.kubernetes.io/control-plane=true"),
            "{a}"
        );
        assert!(a.contains("--pod-cidr=10.1.2.0/24"), "{a}");
        assert!(a.contains("--flannel-backend=host-gw"), "{a}");
        assert!(a.contains("--cluster-cidr=10.245.0.0/16"), "{a}");
        assert!(
            !a.contains("--token="),
            "the token stays off the command line: {a}"
        );
        assert!(matches!(
            spec.health.endpoint,
            Endpoint::Http(addr) if addr.port() == 12345
        ));
    }

    #[test]
    fn disable_network_policy_reaches_the_node_agent() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::Kubeconfig(dir.path().join("k"));
        let mut s = settings(dir.path());
        let spec = node_agent_spec(&s, "/bin/a".into(), "n1", &creds).unwrap();
        assert!(!spec.args.iter().any(|a| a.contains("network-policy")));
        s.disable_network_policy = true;
        let spec = node_agent_spec(&s, "/bin/a".into(), "n1", &creds).unwrap();
        assert!(
            spec.args.contains(&"--disable-network-policy".to_string()),
            "{:?}",
            spec.args
        );
    }

    #[test]
    fn unknown_flannel_backend_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.flannel_backend = "wireguard".into();
        let creds = Credentials::Kubeconfig(dir.path().join("k"));
        let e = node_agent_spec(&s, "/bin/k3rs-node-agent".into(), "n1", &creds).unwrap_err();
        assert!(e.to_string().contains("wireguard"), "{e}");
    }

    #[test]
    fn missing_packages_are_named() {
        let e = system_binary("k3rs-no-such-program", "k3rs-no-such-package").unwrap_err();
        assert!(
            e.to_string()
                .contains("apt-get install k3rs-no-such-package"),
            "{e}"
        );
    }
}
