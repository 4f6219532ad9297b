//! A control plane for cross-daemon tests: an in-process k3rs-apiserver on a
//! free loopback port over a given etcd endpoint (the shim or a real etcd),
//! and the real `kubectl` pointed at it with the admin kubeconfig.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub struct ControlPlane {
    pub api: k3rs_apiserver::Server,
    pub kubeconfig: PathBuf,
    pub dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts an apiserver on `etcd` and waits until it is ready.
    pub async fn start(etcd: &str) -> Result<Self> {
        Self::start_in(etcd, tempfile::tempdir()?).await
    }

    /// Like [`ControlPlane::start`], listening on every address and
    /// advertising (and certified for) `advertise`, so node agents in other
    /// network namespaces reach it there.
    pub async fn start_reachable(etcd: &str, advertise: std::net::IpAddr) -> Result<Self> {
        Self::start_on(etcd, tempfile::tempdir()?, Some(advertise)).await
    }

    /// The admin kubeconfig with `server` at `ip` instead of loopback.
    pub fn kubeconfig_at(&self, ip: std::net::IpAddr, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(&self.kubeconfig)?;
        let port = self.api.local_addr.port();
        let text = text.replace(
            &format!("https://127.0.0.1:{port}"),
            &format!("https://{ip}:{port}"),
        );
        std::fs::write(path, text)?;
        Ok(())
    }

    /// Stops this apiserver and starts a new one on the same etcd and cert
    /// dir (same CA, service-account key and admin credentials).
    pub async fn restart(self, etcd: &str) -> Result<Self> {
        self.api.shutdown();
        Self::start_in(etcd, self.dir).await
    }

    /// The API server's URL and CA certificate (PEM).
    pub fn server_and_ca(&self) -> Result<(String, String)> {
        let ca = std::fs::read_to_string(&self.api.ca_file)?;
        Ok((format!("https://{}", self.api.local_addr), ca))
    }

    async fn start_in(etcd: &str, dir: tempfile::TempDir) -> Result<Self> {
        Self::start_on(etcd, dir, None).await
    }

    async fn start_on(
        etcd: &str,
        dir: tempfile::TempDir,
        advertise: Option<std::net::IpAddr>,
    ) -> Result<Self> {
        let tls = dir.path().join("tls");
        let (kubelet_crt, kubelet_key, ca) = kubelet_client_files(&tls)?;
        let advertise = advertise.map(|a| a.to_string());
        let (bind, advertise) = match &advertise {
            Some(a) => ("0.0.0.0", a.as_str()),
            None => ("127.0.0.1", "127.0.0.1"),
        };
        let cli = <k3rs_apiserver::Cli as clap::Parser>::try_parse_from([
            "k3rs-apiserver",
            "--etcd-servers",
            etcd,
            "--bind-address",
            bind,
            "--advertise-address",
            advertise,
            "--secure-port",
            "0",
            "--cert-dir",
            &tls.display().to_string(),
            "--kubelet-client-certificate",
            &kubelet_crt.display().to_string(),
            "--kubelet-client-key",
            &kubelet_key.display().to_string(),
            "--kubelet-certificate-authority",
            &ca.display().to_string(),
        ])?;
        let config = cli.into_config()?;
        let api = k3rs_apiserver::start(config).await?;
        let kubeconfig = api.admin_kubeconfig.clone();
        let cp = Self {
            api,
            kubeconfig,
            dir,
        };
        cp.wait_ready().await?;
        Ok(cp)
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self
                .kubectl_raw(KUBECTL_DEFAULT, &["get", "--raw", "/readyz"])
                .await?;
            if out.status.success() {
                // The system namespaces are created right after start.
                let ns = self
                    .kubectl_raw(KUBECTL_DEFAULT, &["get", "ns", "kube-system", "-o", "name"])
                    .await?;
                if ns.status.success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "apiserver not ready: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A kubelet serving certificate for `node` at `ip`, signed by this
    /// cluster's CA (what the join flow hands a node agent), written as
    /// `<dir>/serving-kubelet.crt/.key`.
    pub fn issue_kubelet_serving(
        &self,
        node: &str,
        ip: std::net::IpAddr,
        dir: &Path,
    ) -> Result<(PathBuf, PathBuf)> {
        let ca = cluster_ca(&self.dir.path().join("tls"))?;
        std::fs::create_dir_all(dir)?;
        let spec = k3rs_common::pki::CertSpec {
            common_name: node.to_string(),
            dns_names: vec![node.to_string()],
            ip_addresses: vec![ip],
            server: true,
            validity_days: 30,
            ..Default::default()
        };
        ca.load_or_issue(dir, "serving-kubelet", &spec, 1)?;
        Ok((
            dir.join("serving-kubelet.crt"),
            dir.join("serving-kubelet.key"),
        ))
    }

    /// A client certificate for `user` in `groups` signed by this cluster's
    /// CA, written as `<dir>/<user>.crt/.key`.
    pub fn issue_client(
        &self,
        user: &str,
        groups: &[&str],
        dir: &Path,
    ) -> Result<(PathBuf, PathBuf)> {
        let ca = cluster_ca(&self.dir.path().join("tls"))?;
        std::fs::create_dir_all(dir)?;
        let spec = k3rs_common::pki::CertSpec {
            common_name: user.to_string(),
            organizations: groups.iter().map(|g| g.to_string()).collect(),
            client: true,
            validity_days: 30,
            ..Default::default()
        };
        ca.load_or_issue(dir, user, &spec, 1)?;
        Ok((
            dir.join(format!("{user}.crt")),
            dir.join(format!("{user}.key")),
        ))
    }

    /// Runs kubectl `version` ("1.32", "1.33", ...) with the admin kubeconfig.
    /// `kubectl get <what> -o jsonpath=<path>` with kubectl `version`; the
    /// output, empty when kubectl failed (callers poll until it matches).
    pub async fn jsonpath(&self, version: &str, what: &[&str], path: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let jp = format!("jsonpath={path}");
        args.extend_from_slice(&["-o", &jp]);
        let out = self.kubectl_raw(version, &args).await.expect("kubectl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub async fn kubectl_raw(&self, version: &str, args: &[&str]) -> Result<Output> {
        self.kubectl_with(version, args, None, &[]).await
    }

    pub async fn kubectl_with(
        &self,
        version: &str,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Output> {
        use tokio::io::AsyncWriteExt;
        let mut cmd = self.kubectl_command(version, args)?;
        cmd.stdin(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawn kubectl")?;
        if let Some(mut pipe) = child.stdin.take() {
            if let Some(s) = stdin {
                pipe.write_all(s.as_bytes()).await?;
            }
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .context("kubectl timed out")??;
        Ok(out)
    }

    /// A kubectl command for this cluster, with piped output, killed when
    /// dropped; for commands that keep running (`get -w`).
    pub fn kubectl_command(&self, version: &str, args: &[&str]) -> Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(kubectl_path(version)?);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("KUBECACHEDIR", self.dir.path().join("kubecache"))
            .env("HOME", self.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// Polls `f` until it returns Some; on timeout fails the test with
    /// `what`, every pod (YAML), the events and `extra()` (e.g. a runtime log).
    pub async fn wait_for<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        extra: impl Fn() -> String,
        mut f: F,
    ) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() > deadline {
                let v = KUBECTL_DEFAULT;
                let pods = self
                    .kubectl_raw(v, &["get", "pods", "-A", "-o", "yaml"])
                    .await;
                let events = self.kubectl_raw(v, &["get", "events", "-A"]).await;
                let show = |o: Result<Output>| match o {
                    Ok(o) => format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    ),
                    Err(e) => format!("{e:#}"),
                };
                panic!(
                    "timed out waiting for {what}\npods:\n{}\nevents:\n{}\n{}",
                    show(pods),
                    show(events),
                    extra()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Runs kubectl and returns stdout; fails the test with stderr otherwise.
    pub async fn kubectl(&self, version: &str, args: &[&str]) -> String {
        self.kubectl_in(version, args, None).await
    }

    pub async fn kubectl_in(&self, version: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = match self.kubectl_with(version, args, stdin, &[]).await {
            Ok(o) => o,
            Err(e) => panic!("kubectl {args:?}: {e:#}"),
        };
        assert!(
            out.status.success(),
            "kubectl {} {args:?} failed: {}{}",
            version,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub async fn kubectl_fails(&self, version: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = match self.kubectl_with(version, args, stdin, &[]).await {
            Ok(o) => o,
            Err(e) => panic!("kubectl {args:?}: {e:#}"),
        };
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn shutdown(self) {
        self.api.shutdown();
    }
}

/// The cluster CA in a cert dir (created here first, the apiserver reuses it).
fn cluster_ca(tls: &Path) -> Result<k3rs_common::pki::Ca> {
    use k3rs_common::pki::{Ca, layout};
    std::fs::create_dir_all(tls)?;
    Ok(Ca::load_or_generate(
        tls,
        layout::SERVER_CA,
        layout::SERVER_CA_CN,
    )?)
}

/// The apiserver's kubelet client cert/key and the CA that verifies kubelets,
/// as the supervisor passes them.
fn kubelet_client_files(tls: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let ca = cluster_ca(tls)?;
    let spec = k3rs_common::pki::CertSpec {
        common_name: "system:kube-apiserver".into(),
        organizations: vec!["system:masters".into()],
        client: true,
        validity_days: 30,
        ..Default::default()
    };
    let name = k3rs_common::pki::layout::APISERVER_KUBELET_CLIENT;
    ca.load_or_issue(tls, name, &spec, 1)?;
    Ok((
        tls.join(format!("{name}.crt")),
        tls.join(format!("{name}.key")),
        tls.join(format!("{}.crt", k3rs_common::pki::layout::SERVER_CA)),
    ))
}

/// kubectl on the PATH answers for the version it links to.
pub const KUBECTL_DEFAULT: &str = "1.32";

/// The versioned kubectl builds (`kubectl.1.32`, ...) sit beside the one
/// `kubectl` on the PATH resolves to.
pub fn kubectl_path(version: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let k = dir.join("kubectl");
        if k.is_file() {
            let real = std::fs::canonicalize(&k)?;
            let dir = real.parent().unwrap_or(Path::new("/"));
            let versioned = dir.join(format!("kubectl.{version}"));
            if versioned.is_file() {
                return Ok(versioned);
            }
        }
    }
    bail!("kubectl.{version} not found next to kubectl on the PATH")
}
