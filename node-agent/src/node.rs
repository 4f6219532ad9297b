//! This machine as a Node: registration (labels, capacity, addresses,
//! nodeInfo), the status with its conditions, and the heartbeat Lease in
//! `kube-node-lease`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

/// Seconds a node's lease stays valid; renewed every quarter of that.
pub const LEASE_DURATION_SECS: i32 = 40;
/// What we report as kubelet version (the API level we implement).
pub const KUBELET_VERSION: &str = "v1.33.0-k3rs";

/// Facts about this machine that go into the Node.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub hostname: String,
    pub node_ip: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub info: NodeSystemInfo,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// MemTotal from /proc/meminfo, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn statvfs_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: a valid NUL-terminated path and a zeroed out-struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return 0;
    }
    (st.f_blocks as u64).saturating_mul(st.f_frsize as u64)
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

pub use k3rs_common::node::detect_node_ip;

impl Machine {
    pub fn probe(root_dir: &Path, node_ip: IpAddr, runtime_version: &str) -> Self {
        let _ = std::fs::create_dir_all(root_dir);
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let memory_bytes =
            parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
                .unwrap_or(0);
        Self {
            hostname: k3rs_common::pki::hostname(),
            node_ip: node_ip.to_string(),
            cpus,
            memory_bytes,
            ephemeral_storage_bytes: statvfs_bytes(root_dir),
            info: NodeSystemInfo {
                architecture: go_arch().into(),
                boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
                container_runtime_version: runtime_version.to_string(),
                kernel_version: read_trim("/proc/sys/kernel/osrelease"),
                kube_proxy_version: KUBELET_VERSION.into(),
                kubelet_version: KUBELET_VERSION.into(),
                machine_id: read_trim("/etc/machine-id"),
                operating_system: "linux".into(),
                os_image: os_image(),
                system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
                swap: None,
            },
        }
    }
}

pub fn labels(node_name: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", node_name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", go_arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", go_arch()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn resources(m: &Machine, max_pods: u32) -> BTreeMap<String, Quantity> {
    [
        ("cpu", m.cpus.to_string()),
        ("memory", format!("{}Ki", m.memory_bytes / 1024)),
        ("pods", max_pods.to_string()),
        (
            "ephemeral-storage",
            format!("{}Ki", m.ephemeral_storage_bytes / 1024),
        ),
        ("hugepages-2Mi", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect()
}

fn cond(
    old: Option<&NodeStatus>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &Time,
) -> NodeCondition {
    let s = if status { "True" } else { "False" };
    let prev = old
        .and_then(|o| o.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_));
    NodeCondition {
        type_: type_.into(),
        status: s.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: match prev {
            Some(p) if p.status == s => p.last_transition_time.clone(),
            _ => Some(now.clone()),
        },
    }
}

/// The Node status; `runtime_ready` is false with a reason while containerd or CNI is not.
pub fn status(
    m: &Machine,
    old: Option<&NodeStatus>,
    runtime_ready: Result<(), String>,
    port: u16,
) -> NodeStatus {
    let now = Time(Timestamp::now());
    let ready = match &runtime_ready {
        Ok(()) => cond(
            old,
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
            &now,
        ),
        Err(msg) => cond(old, "Ready", false, "KubeletNotReady", msg, &now),
    };
    NodeStatus {
        capacity: Some(resources(m, 110)),
        allocatable: Some(resources(m, 110)),
        conditions: Some(vec![
            cond(
                old,
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                &now,
            ),
            cond(
                old,
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                &now,
            ),
            cond(
                old,
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                &now,
            ),
            ready,
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: m.node_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: m.hostname.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: port as i32 }),
        }),
        node_info: Some(m.info.clone()),
        ..Default::default()
    }
}

/// Creates the Node, or adds our labels (the well-known ones plus
/// `--node-labels`) to an existing one. Returns it.
pub async fn register(
    api: &Api<Node>,
    name: &str,
    extra: &BTreeMap<String, String>,
) -> Result<Node, kube::Error> {
    let mut want = labels(name);
    want.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    match api.get_opt(name).await? {
        Some(node) => {
            let have = node.metadata.labels.clone().unwrap_or_default();
            if want.iter().all(|(k, v)| have.get(k) == Some(v)) {
                return Ok(node);
            }
            let patch = serde_json::json!({"metadata": {"labels": want}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
        None => {
            let mut node = Node::default();
            node.metadata.name = Some(name.to_string());
            node.metadata.labels = Some(want);
            match api.create(&PostParams::default(), &node).await {
                Ok(n) => Ok(n),
                // Raced with another registration of the same name.
                Err(kube::Error::Api(s)) if s.code == 409 => api.get(name).await,
                Err(e) => Err(e),
            }
        }
    }
}

pub async fn update_status(
    api: &Api<Node>,
    name: &str,
    status: &NodeStatus,
) -> Result<Node, kube::Error> {
    let patch = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// Creates or renews `kube-node-lease/<node>`.
pub async fn renew_lease(
    api: &Api<Lease>,
    node_name: &str,
    node_uid: Option<&str>,
) -> Result<(), kube::Error> {
    let now = MicroTime(Timestamp::now());
    match api.get_opt(node_name).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.holder_identity = Some(node_name.to_string());
            spec.lease_duration_seconds = Some(LEASE_DURATION_SECS);
            spec.renew_time = Some(now);
            api.replace(node_name, &PostParams::default(), &lease)
                .await?;
        }
        None => {
            let mut lease = Lease::default();
            lease.metadata.name = Some(node_name.to_string());
            lease.metadata.namespace = Some("kube-node-lease".into());
            if let Some(uid) = node_uid {
                // Deleting the Node deletes its lease.
                lease.metadata.owner_references = Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node_name.to_string(),
                    uid: uid.to_string(),
                    ..Default::default()
                }]);
            }
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.holder_identity = Some(node_name.to_string());
            spec.lease_duration_seconds = Some(LEASE_DURATION_SECS);
            spec.renew_time = Some(now);
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        assert_eq!(
            parse_meminfo("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16384 * 1024)
        );
        assert_eq!(parse_meminfo("nothing"), None);
    }

    #[test]
    fn status_reports_capacity_and_ready() {
        let m = Machine {
            hostname: "h".into(),
            node_ip: "10.0.0.2".into(),
            cpus: 4,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 100 << 30,
            info: NodeSystemInfo::default(),
        };
        let s = status(&m, None, Ok(()), 10250);
        let cap = s.capacity.clone().unwrap();
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, format!("{}Ki", 8 << 20));
        assert_eq!(cap["pods"].0, "110");
        let ready = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        let old = s.clone();
        let s2 = status(&m, Some(&old), Err("containerd is down".into()), 10250);
        let ready = s2
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.message.as_deref(), Some("containerd is down"));
        assert_eq!(s.addresses.unwrap()[0].type_, "InternalIP");
    }
}
