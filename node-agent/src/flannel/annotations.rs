//! The Node annotations flannel's kube subnet manager uses: each agent
//! publishes its public IP and backend (with the VTEP MAC for VXLAN) on its
//! own Node, and reads every other Node's to know where its pods live. Using
//! flannel's names keeps tools that read them (and mixed clusters) working.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;

use super::{Backend, Ipv4Cidr, VNI};

pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// What one Node tells the others about reaching its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub pod_cidr: Ipv4Cidr,
    pub public_ip: Ipv4Addr,
    pub backend: Option<String>,
    pub vtep_mac: Option<String>,
}

/// The annotations this node publishes.
pub fn own(
    backend: Backend,
    public_ip: Ipv4Addr,
    vtep_mac: Option<&str>,
) -> BTreeMap<String, String> {
    let data = match (backend, vtep_mac) {
        (Backend::Vxlan, Some(mac)) => serde_json::json!({"VNI": VNI, "VtepMAC": mac}).to_string(),
        _ => "null".to_string(),
    };
    [
        (PUBLIC_IP, public_ip.to_string()),
        (BACKEND_TYPE, backend.as_str().to_string()),
        (BACKEND_DATA, data),
        (KUBE_SUBNET_MANAGER, "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Whether `node` already carries `want` (so no patch is needed).
pub fn has_all(node: &Node, want: &BTreeMap<String, String>) -> bool {
    let have = node.metadata.annotations.as_ref();
    want.iter()
        .all(|(k, v)| have.and_then(|a| a.get(k)) == Some(v))
}

/// The peer a Node describes; `None` until it has a pod CIDR and an
/// address (a Node that has not been given a range yet has no pods to
/// route to). A malformed annotation is treated as absent, never fatal.
pub fn peer(node: &Node) -> Option<Peer> {
    let name = node.metadata.name.clone()?;
    let pod_cidr: Ipv4Cidr = node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
    let ann = node.metadata.annotations.clone().unwrap_or_default();
    // The InternalIP stands in for nodes that do not publish the annotation
    // (yet): host-gw only needs an address on the shared segment.
    let public_ip = ann
        .get(PUBLIC_IP)
        .and_then(|s| s.parse().ok())
        .or_else(|| internal_ip(node))?;
    let vtep_mac = ann
        .get(BACKEND_DATA)
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .and_then(|v| {
            v.get("VtepMAC")
                .and_then(|m| m.as_str())
                .map(str::to_lowercase)
        })
        .filter(|m| is_mac(m));
    Some(Peer {
        name,
        pod_cidr,
        public_ip,
        backend: ann.get(BACKEND_TYPE).cloned(),
        vtep_mac,
    })
}

fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
}

/// `aa:bb:cc:dd:ee:ff`; anything else would make `ip neigh` fail anyway.
pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ann: &[(&str, &str)], internal: Option<&str>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.annotations = Some(
            ann.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            pod_cidr: cidr.map(Into::into),
            ..Default::default()
        });
        if let Some(ip) = internal {
            n.status = Some(k8s_openapi::api::core::v1::NodeStatus {
                addresses: Some(vec![k8s_openapi::api::core::v1::NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                ..Default::default()
            });
        }
        n
    }

    #[test]
    fn own_annotations_match_flannel() {
        let a = own(
            Backend::Vxlan,
            Ipv4Addr::new(172, 31, 100, 2),
            Some("0a:73:ee:11:bc:ff"),
        );
        assert_eq!(a[PUBLIC_IP], "172.31.100.2");
        assert_eq!(a[BACKEND_TYPE], "vxlan");
        let data: serde_json::Value = serde_json::from_str(&a[BACKEND_DATA]).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"VNI": 1, "VtepMAC": "0a:73:ee:11:bc:ff"})
        );
        assert_eq!(a[KUBE_SUBNET_MANAGER], "true");
        let h = own(Backend::HostGw, Ipv4Addr::new(10, 0, 0, 1), None);
        assert_eq!(h[BACKEND_TYPE], "host-gw");
        assert_eq!(h[BACKEND_DATA], "null");
    }

    #[test]
    fn reads_peers_and_tolerates_bad_annotations() {
        let data = r#"{"VNI":1,"VtepMAC":"0A:73:EE:11:BC:FF"}"#;
        let n = node(
            "b",
            Some("10.245.1.0/24"),
            &[
                (PUBLIC_IP, "172.31.100.3"),
                (BACKEND_TYPE, "vxlan"),
                (BACKEND_DATA, data),
            ],
            None,
        );
        let p = peer(&n).unwrap();
        assert_eq!(p.pod_cidr.to_string(), "10.245.1.0/24");
        assert_eq!(p.public_ip, Ipv4Addr::new(172, 31, 100, 3));
        assert_eq!(p.vtep_mac.as_deref(), Some("0a:73:ee:11:bc:ff"));
        assert_eq!(p.backend.as_deref(), Some("vxlan"));

        // No pod CIDR yet: nothing to route.
        assert!(peer(&node("c", None, &[(PUBLIC_IP, "1.2.3.4")], None)).is_none());
        // Garbage annotations: falls back to the InternalIP, no MAC.
        let g = node(
            "d",
            Some("10.245.2.0/24"),
            &[(PUBLIC_IP, "nope"), (BACKEND_DATA, "{")],
            Some("172.31.100.9"),
        );
        let p = peer(&g).unwrap();
        assert_eq!(p.public_ip, Ipv4Addr::new(172, 31, 100, 9));
        assert_eq!(p.vtep_mac, None);
        // No address at all.
        assert!(peer(&node("e", Some("10.245.3.0/24"), &[], None)).is_none());
        // An IPv6 or malformed CIDR is skipped, not a panic.
        assert!(
            peer(&node(
                "f",
                Some("fd00::/64"),
                &[(PUBLIC_IP, "1.2.3.4")],
                None
            ))
            .is_none()
        );
    }

    #[test]
    fn has_all_compares_values() {
        let want = own(Backend::HostGw, Ipv4Addr::new(10, 0, 0, 1), None);
        let mut n = node("a", None, &[], None);
        assert!(!has_all(&n, &want));
        n.metadata.annotations = Some(want.clone());
        assert!(has_all(&n, &want));
        n.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(PUBLIC_IP.into(), "10.0.0.2".into());
        assert!(!has_all(&n, &want));
    }
}
