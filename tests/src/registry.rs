//! A private image registry on loopback for image-pull tests: Debian's
//! `docker-registry` (the CNCF distribution registry) with a temp config and
//! storage, optionally behind htpasswd basic auth, and a push of the
//! busybox image over the registry HTTP API (blob uploads + manifest PUT),
//! so no docker/skopeo is needed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use k3rs_common::oci_image::{ImageBlobs, busybox_image};

const REGISTRY: &str = "/usr/bin/docker-registry";

/// An HTTP answer: status, headers (lower-cased names), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

pub struct LocalRegistry {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    login: Option<(String, String)>,
}

/// A bcrypt htpasswd line (what the registry accepts), made with the
/// system's crypt(3) through Python; cost 4 keeps every request fast.
fn htpasswd_line(user: &str, password: &str) -> Result<String> {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
            password,
        ])
        .output()
        .context("running python3 for a bcrypt hash")?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !hash.starts_with("$2") {
        bail!(
            "no bcrypt hash from python3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(format!("{user}:{hash}\n"))
}

impl LocalRegistry {
    /// Starts a registry on a free loopback port; with `login`, every
    /// request needs that user and password.
    pub async fn start(login: Option<(&str, &str)>) -> Result<Self> {
        if !Path::new(REGISTRY).exists() {
            bail!(
                "{REGISTRY} is missing: install the Debian package docker-registry (scripts/setup.sh)"
            );
        }
        let dir = tempfile::Builder::new().prefix("k3rs-reg").tempdir()?;
        let port = crate::free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = login {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, htpasswd_line(user, password)?)?;
            config += &format!(
                "auth:\n  htpasswd:\n    realm: k3rs-test\n    path: {}\n",
                file.display()
            );
        }
        std::fs::write(dir.path().join("config.yml"), config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn docker-registry")?;
        let mut r = Self {
            dir,
            child: Some(child),
            addr,
            login: login.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = r.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("docker-registry exited with {status}: {}", r.log());
            }
            if let Ok(reply) = r.request("GET", "/v2/", &[], &[])
                && (reply.status == 200 || reply.status == 401)
            {
                return Ok(r);
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not answer in 30s: {}", r.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// One HTTP/1.1 request (closing the connection); returns status,
    /// response headers (lower-cased names) and body.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.addr,
            body.len()
        );
        if let Some((u, p)) = &self.login {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            head += &format!("Authorization: Basic {token}\r\n");
        }
        for (k, v) in headers {
            head += &format!("{k}: {v}\r\n");
        }
        head += "\r\n";
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no HTTP header end")?;
        let text = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = text.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .context("bad HTTP status line")?;
        let hdrs = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(Reply {
            status,
            headers: hdrs,
            body: raw[split + 4..].to_vec(),
        })
    }

    fn upload_blob(&self, repo: &str, blob: &[u8]) -> Result<()> {
        let digest = ImageBlobs::digest(blob);
        let Reply {
            status,
            headers: hdrs,
            body,
        } = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])?;
        if status != 202 {
            bail!(
                "starting a blob upload: HTTP {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        let location = hdrs
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.clone())
            .context("upload without Location")?;
        // The registry answers with an absolute URL; we talk to the same host.
        let path = match location.split_once("://") {
            Some((_, rest)) => rest
                .find('/')
                .map(|i| rest[i..].to_string())
                .unwrap_or_default(),
            None => location,
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{path}{sep}digest={}", digest.replace(':', "%3A"));
        let Reply { status, body, .. } = self.request(
            "PUT",
            &url,
            &[("Content-Type", "application/octet-stream")],
            blob,
        )?;
        if status != 201 {
            bail!(
                "uploading blob {digest}: HTTP {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// Pushes the busybox image (runs `sh`) as `<repo>:<tag>`.
    pub fn push_busybox(&self, repo: &str, tag: &str) -> Result<()> {
        let img = busybox_image(None)?;
        self.upload_blob(repo, &img.layer)?;
        self.upload_blob(repo, &img.config)?;
        let Reply { status, body, .. } = self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &img.manifest,
        )?;
        if status != 201 {
            bail!(
                "pushing the manifest {repo}:{tag}: HTTP {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
