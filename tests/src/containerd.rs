//! A private containerd for node-agent tests: its own root, state, socket
//! and CNI config dir under a temp dir, runc with cgroupfs, and a sandbox
//! (pause) image built here from the static busybox, since no registry is
//! reachable. Needs root and the Debian packages `containerd`, `runc`,
//! `containernetworking-plugins` and `busybox-static` (scripts/setup.sh
//! installs them); it installs nothing itself and fails saying what is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The image pods in tests run: busybox with `sh` and friends on the PATH.
pub const BUSYBOX_IMAGE: &str = "k3rs.local/busybox:1";
/// The sandbox image containerd starts for every pod.
pub const PAUSE_IMAGE: &str = "k3rs.local/pause:1";

use k3rs::registries::Registries;
use k3rs_common::oci_image::BUSYBOX;
pub use k3rs_common::oci_image::write_busybox_image;

const CNI_BIN_DIR: &str = "/usr/lib/cni";

pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// Where containerd reads CNI network configs (the agent writes them).
    pub cni_conf_dir: PathBuf,
    child: Option<Child>,
    /// How it was started, for [`Containerd::restart`].
    snapshotter: &'static str,
    registries: Registries,
    netns: Option<String>,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn require(path: &str, package: &str) -> Result<()> {
    if !Path::new(path).exists() {
        bail!("{path} is missing: install the Debian package {package} (scripts/setup.sh)");
    }
    Ok(())
}

impl Containerd {
    /// Starts containerd (overlayfs, or native where overlay mounts fail)
    /// and imports the busybox and pause images into its `k8s.io` namespace.
    pub async fn start() -> Result<Self> {
        Self::start_with_registries(&Registries::default()).await
    }

    /// Like [`Containerd::start`], with registry mirrors, logins and TLS
    /// rendered from a `registries.yaml` exactly as `k3rs server` does
    /// (hosts dir `<dir>/certs.d`).
    pub async fn start_with_registries(registries: &Registries) -> Result<Self> {
        Self::start_opts(registries, None).await
    }

    /// Like [`Containerd::start`], but containerd (and so runc, the CNI
    /// plugins and every pod) runs in the network namespace `netns`
    /// (`/run/netns/<netns>`): a separate "host" for multi-node tests. Only
    /// the network namespace is entered (`nsenter --net`), not a new mount
    /// namespace as `ip netns exec` makes, which remounts /sys without the
    /// cgroup hierarchy runc needs. Its socket stays reachable from here.
    pub async fn start_in_netns(netns: &str) -> Result<Self> {
        Self::start_opts(&Registries::default(), Some(netns)).await
    }

    async fn start_opts(registries: &Registries, netns: Option<&str>) -> Result<Self> {
        require("/usr/bin/containerd", "containerd")?;
        require("/usr/sbin/runc", "runc")?;
        require("/usr/lib/cni/bridge", "containernetworking-plugins")?;
        require(BUSYBOX, "busybox-static")?;
        if unsafe_euid() != 0 {
            bail!("containerd tests need root");
        }
        let dir = tempfile::Builder::new().prefix("k3rs-ctd").tempdir()?;
        let mut last = None;
        for snapshotter in ["overlayfs", "native"] {
            match Self::start_with(&dir, snapshotter, registries, netns).await {
                Ok(child) => {
                    let mut c = Self {
                        socket: dir.path().join("containerd.sock"),
                        cni_conf_dir: dir.path().join("cni"),
                        dir,
                        child: Some(child),
                        snapshotter,
                        registries: registries.clone(),
                        netns: netns.map(String::from),
                    };
                    c.import_images().await?;
                    return Ok(c);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("containerd did not start")))
    }

    async fn start_with(
        dir: &tempfile::TempDir,
        snapshotter: &str,
        registries: &Registries,
        netns: Option<&str>,
    ) -> Result<Child> {
        let d = dir.path();
        std::fs::create_dir_all(d.join("cni"))?;
        let hosts_dir = d.join("certs.d");
        registries.write_hosts_dir(&hosts_dir)?;
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = []
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  # containerd hands out streaming URLs with the configured port, so "0"
  # would produce unusable ones: pick a free port now.
  stream_server_port = "{stream_port}"
  # This machine may not let us lower OOM scores (nested containers):
  # never ask for less than containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d}/cni"
{registry}"#,
            registry = registries.containerd_section(&hosts_dir),
            root = d.join("root").display(),
            stream_port = free_port()?,
            state = d.join("state").display(),
            d = d.display(),
        );
        std::fs::write(d.join("config.toml"), config)?;
        let log = std::fs::File::create(d.join("containerd.log"))?;
        let mut child = crate::netns::command(netns, "containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn containerd")?;
        let sock = d.join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "containerd exited with {status}: {}",
                    std::fs::read_to_string(d.join("containerd.log")).unwrap_or_default()
                );
            }
            if sock.exists() {
                let out = ctr(&sock, &["plugins", "ls"])?;
                if out.status.success() {
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    let ok = text.lines().any(|l| {
                        l.contains("io.containerd.snapshotter.v1")
                            && l.split_whitespace().nth(1) == Some(snapshotter)
                            && l.trim_end().ends_with("ok")
                    });
                    if !ok {
                        let _ = child.kill();
                        let _ = child.wait();
                        bail!("snapshotter {snapshotter} does not work here:\n{text}");
                    }
                    // A test mount shows whether overlay really mounts (in a
                    // container it may load but fail on use).
                    return Ok(child);
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("containerd did not come up in 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn import_images(&mut self) -> Result<()> {
        let busybox = self.dir.path().join("busybox.tar");
        let pause = self.dir.path().join("pause.tar");
        write_busybox_image(&busybox, BUSYBOX_IMAGE, None)?;
        write_busybox_image(
            &pause,
            PAUSE_IMAGE,
            Some(&["/bin/busybox", "sleep", "2147483647"]),
        )?;
        for tar in [&busybox, &pause] {
            let tar = tar.display().to_string();
            let out = ctr(
                &self.socket,
                &["-n", "k8s.io", "images", "import", "--no-unpack", &tar],
            )?;
            if !out.status.success() {
                bail!(
                    "ctr images import {tar}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(())
    }

    /// Kills containerd as a crash would (SIGKILL), leaving its shims and
    /// so the running containers alone; the socket stops answering.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts containerd again on the same root and state after [`crash`](Self::crash).
    pub async fn restart(&mut self) -> Result<()> {
        self.crash();
        let child = Self::start_with(
            &self.dir,
            self.snapshotter,
            &self.registries,
            self.netns.as_deref(),
        )
        .await?;
        self.child = Some(child);
        Ok(())
    }

    /// An in-process node agent on this containerd, as the suites run it
    /// side by side: files under `dir`, its own pod range and bridge, the
    /// kubelet API on a free loopback port, no health endpoint.
    pub fn agent_config(
        &self,
        kubeconfig: &Path,
        node: &str,
        pod_cidr: &str,
        bridge: &str,
        dir: &Path,
    ) -> k3rs_node_agent::Config {
        let mut c = k3rs_node_agent::Config::new(kubeconfig.to_path_buf(), node.into());
        c.container_runtime_endpoint = self.endpoint();
        c.root_dir = dir.join("agent");
        c.pod_logs_dir = dir.join("pods-logs");
        c.pod_cidr = Some(pod_cidr.into());
        c.cni_conf_dir = self.cni_conf_dir.clone();
        c.cni_bridge = bridge.into();
        c.healthz_addr = None;
        c.bind_address = std::net::IpAddr::from([127, 0, 0, 1]);
        c.port = 0;
        c
    }

    /// [`agent_config`](Self::agent_config) for an agent `cp`'s apiserver
    /// reaches (`kubectl logs/exec/cp/debug`): the node address on loopback,
    /// a serving certificate for it from the cluster CA, and client
    /// certificates checked against that CA.
    pub fn served_agent_config(
        &self,
        cp: &crate::cluster::ControlPlane,
        node: &str,
        pod_cidr: &str,
        bridge: &str,
        dir: &Path,
    ) -> k3rs_node_agent::Config {
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let (crt, key) = cp
            .issue_kubelet_serving(node, ip, &dir.join("pki"))
            .expect("kubelet serving certificate");
        let mut c = self.agent_config(&cp.kubeconfig, node, pod_cidr, bridge, dir);
        c.node_ip = Some(ip);
        c.tls_cert_file = Some(crt);
        c.tls_private_key_file = Some(key);
        c.client_ca_file = Some(cp.api.ca_file.clone());
        c
    }

    /// The CRI endpoint for `--container-runtime-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// containerd's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Stops and removes every pod sandbox over CRI, so CNI releases the
    /// addresses and network namespaces of pods a failed test left behind.
    fn remove_sandboxes(&self) {
        use k3rs_node_agent::cri::{CriClient, Runtime};
        let endpoint = self.endpoint();
        let worker = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(cri) = CriClient::new(&endpoint) else {
                    return;
                };
                let work = async {
                    for sb in cri.list_pod_sandboxes(None).await.unwrap_or_default() {
                        let _ = cri.stop_pod_sandbox(&sb.id).await;
                        let _ = cri.remove_pod_sandbox(&sb.id).await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(30), work).await;
            });
        });
        let _ = worker.join();
    }

    /// Removes the pods, kills every task in `k8s.io`, stops containerd and
    /// unmounts what it left.
    fn teardown(&mut self) {
        if self.child.is_some() {
            self.remove_sandboxes();
        }
        if let Some(mut child) = self.child.take() {
            if let Ok(out) = ctr(&self.socket, &["-n", "k8s.io", "tasks", "ls", "-q"]) {
                for id in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = ctr(
                        &self.socket,
                        &["-n", "k8s.io", "tasks", "kill", "-s", "KILL", id],
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(300));
            unsafe_kill(child.id(), 15);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Unmount deepest first: rootfs overlays, shm, netns bind mounts.
        let prefix = self.dir.path().display().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|p| p.starts_with(&prefix))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").arg("-l").arg(p).status();
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn ctr(sock: &Path, args: &[&str]) -> Result<std::process::Output> {
    Command::new("ctr")
        .arg("-a")
        .arg(sock)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run ctr")
}

fn unsafe_euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn unsafe_kill(pid: u32, sig: i32) {
    // SAFETY: signalling a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}
