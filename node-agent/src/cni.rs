//! The CNI network config containerd uses for pods: a `cni0` bridge with
//! host-local addresses from this node's pod CIDR, masquerading, and
//! hostPorts via portmap (containerd adds loopback itself).

use std::path::{Path, PathBuf};

/// The file the agent owns in the CNI config dir.
pub const CONFLIST: &str = "10-k3rs.conflist";

/// The default bridge name.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// The conflist for `pod_cidr` on `bridge`; host-local keeps its leases
/// under `ipam_dir`.
pub fn conflist(pod_cidr: &str, bridge: &str, ipam_dir: &Path) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k3rs",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir.display().to_string(),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
        ],
    })
}

/// Writes the conflist when its content changed (atomically: containerd
/// watches the directory and must never read half a file).
pub fn write(
    conf_dir: &Path,
    pod_cidr: &str,
    bridge: &str,
    ipam_dir: &Path,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(conf_dir)?;
    let path = conf_dir.join(CONFLIST);
    let body = serde_json::to_string_pretty(&conflist(pod_cidr, bridge, ipam_dir))?;
    if std::fs::read_to_string(&path).ok().as_deref() == Some(body.as_str()) {
        return Ok(path);
    }
    let tmp = conf_dir.join(format!(".{CONFLIST}.tmp"));
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_bridge_conflist_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "10.42.3.0/24",
            DEFAULT_BRIDGE,
            Path::new("/var/lib/x"),
        )
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["plugins"][0]["bridge"], "cni0");
        assert_eq!(v["plugins"][0]["isGateway"], true);
        assert_eq!(v["plugins"][0]["ipMasq"], true);
        assert_eq!(v["plugins"][0]["ipam"]["type"], "host-local");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.3.0/24"
        );
        assert_eq!(v["plugins"][1]["type"], "portmap");
        let m1 = std::fs::metadata(&p).unwrap().modified().unwrap();
        write(
            dir.path(),
            "10.42.3.0/24",
            DEFAULT_BRIDGE,
            Path::new("/var/lib/x"),
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), m1);
    }
}
