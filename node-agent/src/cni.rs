//! The CNI network config containerd uses for pods: a bridge (`cni0` by
//! default, K3s's name) with host-local addresses from this node's pod
//! CIDR, and hostPorts via portmap (containerd adds loopback itself).
//!
//! Masquerading: the bridge plugin's `ipMasq` NATs everything leaving this
//! node's /24, which would hide a pod's address from pods on other nodes.
//! With the multi-node pod network ([`crate::flannel`]) on, it is off and
//! the flannel module masquerades only traffic leaving the cluster CIDR;
//! on a lone node (`--flannel-backend none`) the plugin's rule stays.

use std::path::{Path, PathBuf};

/// The file the agent owns in the CNI config dir.
pub const CONFLIST: &str = "10-k3rs.conflist";

/// The bridge K3s (flannel) uses; `--cni-bridge` changes it.
pub const DEFAULT_BRIDGE: &str = "cni0";

/// How the bridge treats traffic leaving the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Let the bridge plugin masquerade traffic leaving the pod CIDR.
    pub ip_masq: bool,
    /// Pod interface MTU (smaller under VXLAN); `None` keeps the link default.
    pub mtu: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ip_masq: true,
            mtu: None,
        }
    }
}

/// The conflist for `pod_cidr` on `bridge`; host-local keeps its leases
/// under `ipam_dir`.
pub fn conflist(bridge: &str, pod_cidr: &str, ipam_dir: &Path, opts: Options) -> serde_json::Value {
    let mut v = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k3rs",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": opts.ip_masq,
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
    });
    if let Some(mtu) = opts.mtu {
        v["plugins"][0]["mtu"] = mtu.into();
    }
    v
}

/// Writes the conflist when its content changed (atomically: containerd
/// watches the directory and must never read half a file).
pub fn write(
    conf_dir: &Path,
    bridge: &str,
    pod_cidr: &str,
    ipam_dir: &Path,
    opts: Options,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(conf_dir)?;
    let path = conf_dir.join(CONFLIST);
    let body = serde_json::to_string_pretty(&conflist(bridge, pod_cidr, ipam_dir, opts))?;
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
        let o = Options::default();
        let p = write(
            dir.path(),
            "cni0",
            "10.42.3.0/24",
            Path::new("/var/lib/x"),
            o,
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
            "cni0",
            "10.42.3.0/24",
            Path::new("/var/lib/x"),
            o,
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), m1);
        assert!(v["plugins"][0].get("mtu").is_none());
    }

    #[test]
    fn pod_network_turns_off_bridge_masquerade_and_sets_mtu() {
        let o = Options {
            ip_masq: false,
            mtu: Some(1450),
        };
        let v = conflist("cni0", "10.42.3.0/24", Path::new("/x"), o);
        assert_eq!(v["plugins"][0]["ipMasq"], false);
        assert_eq!(v["plugins"][0]["mtu"], 1450);
    }
}
