//! OCI image layout tarballs built from the static busybox (Debian
//! `busybox-static`, `/bin/busybox`): no registry is reachable on the
//! machines k3rs targets in tests and air-gapped installs, so k3rs makes its
//! own sandbox (pause) image and tests make their busybox image. The result
//! is what `ctr images import` takes.

use std::io::Write;
use std::path::Path;

/// Where the static busybox lives on Debian.
pub const BUSYBOX: &str = "/bin/busybox";

#[derive(Debug, thiserror::Error)]
pub enum OciImageError {
    #[error("{path}: {source} (install the Debian package busybox-static)")]
    Busybox {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the image {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image metadata: {0}")]
    Json(#[from] serde_json::Error),
}

type Result<T> = std::result::Result<T, OciImageError>;

fn sha256_hex(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The blobs of a busybox image: what a registry stores (tests push them to
/// a local registry) and what the OCI layout tarball holds.
pub struct ImageBlobs {
    /// The one uncompressed layer (`application/vnd.oci.image.layer.v1.tar`).
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    /// `application/vnd.oci.image.manifest.v1+json`.
    pub manifest: Vec<u8>,
}

impl ImageBlobs {
    /// `sha256:<hex>` of a blob.
    pub fn digest(blob: &[u8]) -> String {
        format!("sha256:{}", sha256_hex(blob))
    }
}

/// Builds the static busybox image (see [`write_busybox_image`]).
pub fn busybox_image(entrypoint: Option<&[&str]>) -> Result<ImageBlobs> {
    let bin = std::fs::read(BUSYBOX).map_err(|source| OciImageError::Busybox {
        path: BUSYBOX.into(),
        source,
    })?;
    let layer = busybox_layer(&bin).map_err(|source| OciImageError::Write {
        path: "(in memory)".into(),
        source,
    })?;
    let layer_digest = sha256_hex(&layer);
    let mut cfg = serde_json::json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh"],
        "WorkingDir": "/",
    });
    if let Some(ep) = entrypoint {
        cfg["Entrypoint"] = serde_json::json!(ep);
        cfg["Cmd"] = serde_json::Value::Null;
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created_by": "k3rs"}],
    }))?;
    let config_digest = sha256_hex(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    }))?;
    Ok(ImageBlobs {
        layer,
        config,
        manifest,
    })
}

/// Writes an OCI image layout tarball holding one uncompressed layer with
/// the static busybox and its applet links, named `name` for `ctr import`.
/// `entrypoint` makes it e.g. a pause image; otherwise it runs `sh`.
pub fn write_busybox_image(path: &Path, name: &str, entrypoint: Option<&[&str]>) -> Result<()> {
    let write_err = |source| OciImageError::Write {
        path: path.display().to_string(),
        source,
    };
    let ImageBlobs {
        layer,
        config,
        manifest,
    } = busybox_image(entrypoint)?;
    let layer_digest = sha256_hex(&layer);
    let config_digest = sha256_hex(&config);
    let manifest_digest = sha256_hex(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap_or("latest"),
            },
        }],
    }))?;
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(path)?;
        let mut tar = tar::Builder::new(file);
        add_file(
            &mut tar,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            0o644,
        )?;
        add_file(&mut tar, "index.json", &index, 0o644)?;
        for (digest, data) in [
            (&layer_digest, &layer),
            (&config_digest, &config),
            (&manifest_digest, &manifest),
        ] {
            add_file(&mut tar, &format!("blobs/sha256/{digest}"), data, 0o644)?;
        }
        tar.into_inner()?.flush()
    };
    write().map_err(write_err)
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

fn add_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)?;
    Ok(())
}

fn busybox_layer(bin: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for d in ["bin", "etc", "tmp", "var", "proc", "sys", "dev", "root"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(if d == "tmp" { 0o1777 } else { 0o755 });
        h.set_size(0);
        h.set_mtime(0);
        tar.append_data(&mut h, format!("{d}/"), std::io::empty())?;
    }
    add_file(&mut tar, "bin/busybox", bin, 0o755)?;
    for applet in [
        "sh", "sleep", "echo", "cat", "env", "ls", "true", "false", "hostname", "ip", "wget", "nc",
        "grep", "test", "head", "tail", "wc", "sed", "tr", "printf", "date", "mkdir", "touch",
        "kill", "ps", "id", "tar", "httpd", "rm", "mv", "nslookup", "ping",
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    add_file(
        &mut tar,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    add_file(&mut tar, "etc/group", b"root:x:0:\n", 0o644)?;
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_layout_names_the_image() {
        if !Path::new(BUSYBOX).exists() {
            // Only the error path can be checked without busybox-static.
            let dir = tempfile::tempdir().unwrap();
            let e = write_busybox_image(&dir.path().join("x.tar"), "a/b:1", None).unwrap_err();
            assert!(e.to_string().contains("busybox-static"), "{e}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pause.tar");
        write_busybox_image(
            &p,
            "k3rs.local/pause:1",
            Some(&["/bin/busybox", "sleep", "1"]),
        )
        .unwrap();
        let mut ar = tar::Archive::new(std::fs::File::open(&p).unwrap());
        let mut names = Vec::new();
        let mut index = String::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            if name == "index.json" {
                std::io::Read::read_to_string(&mut e, &mut index).unwrap();
            }
            names.push(name);
        }
        assert!(names.contains(&"oci-layout".to_string()));
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("blobs/sha256/"))
                .count(),
            3
        );
        assert!(index.contains("k3rs.local/pause:1"), "{index}");
    }
}
