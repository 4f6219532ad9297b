//! Turning a Pod into CRI sandbox and container configs, with the labels
//! and annotations kubelet puts on them.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::cri::v1::{
    ContainerMetadata, DnsConfig, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption, PodSandboxMetadata,
    PortMapping, Protocol,
};
use crate::cri::{
    ContainerConfig, LABEL_CONTAINER_NAME, LABEL_MANAGED, LABEL_POD_NAME, LABEL_POD_NAMESPACE,
    LABEL_POD_UID, MANAGED_BY, PodSandboxConfig,
};

/// Node-wide settings that shape every pod.
#[derive(Debug, Clone)]
pub struct PodDefaults {
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub pod_logs_dir: PathBuf,
    /// Path of the host's resolv.conf (for `dnsPolicy: Default` and host network pods).
    pub host_resolv_conf: PathBuf,
}

pub fn pod_uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// `<namespace>_<name>_<uid>`: the pod's log directory name, as kubelet names it.
pub fn log_dir(defaults: &PodDefaults, pod: &Pod) -> PathBuf {
    defaults.pod_logs_dir.join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod_uid(pod)
    ))
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// Nameservers/search/options from a resolv.conf.
fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut dns = DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.servers.extend(words.next().map(str::to_string)),
            Some("search") => dns.searches = words.map(str::to_string).collect(),
            Some("options") => dns.options = words.map(str::to_string).collect(),
            _ => {}
        }
    }
    dns
}

/// resolv.conf contents for the pod per its dnsPolicy and dnsConfig.
pub fn dns_config(defaults: &PodDefaults, pod: &Pod) -> DnsConfig {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host = || {
        std::fs::read_to_string(&defaults.host_resolv_conf)
            .map(|t| parse_resolv_conf(&t))
            .unwrap_or_default()
    };
    let cluster = || {
        let d = &defaults.cluster_domain;
        DnsConfig {
            servers: defaults.cluster_dns.clone(),
            searches: vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()],
            options: vec!["ndots:5".into()],
        }
    };
    let mut dns = match policy {
        "None" => DnsConfig::default(),
        "Default" => host(),
        "ClusterFirstWithHostNet" => cluster(),
        // ClusterFirst falls back to the host's config for host-network pods, and
        // when no cluster DNS is configured.
        _ if host_network(pod) || defaults.cluster_dns.is_empty() => host(),
        _ => cluster(),
    };
    if let Some(c) = spec.and_then(|s| s.dns_config.as_ref()) {
        for s in c.nameservers.iter().flatten() {
            if !dns.servers.contains(s) {
                dns.servers.push(s.clone());
            }
        }
        for s in c.searches.iter().flatten() {
            if !dns.searches.contains(s) {
                dns.searches.push(s.clone());
            }
        }
        for o in c.options.iter().flatten() {
            let opt = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let key = opt.split(':').next().unwrap_or_default().to_string();
            dns.options
                .retain(|x| x.split(':').next() != Some(key.as_str()));
            dns.options.push(opt);
        }
    }
    dns
}

/// The pod's hostname: spec.hostname or the pod name, at most 63 characters.
pub fn hostname(pod: &Pod) -> String {
    let h = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut h: String = h.chars().take(63).collect();
    while h.ends_with(['-', '.']) {
        h.pop();
    }
    h
}

fn base_labels(pod: &Pod) -> HashMap<String, String> {
    let mut l = HashMap::new();
    l.insert(
        LABEL_POD_NAME.into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    l.insert(
        LABEL_POD_NAMESPACE.into(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    l.insert(LABEL_POD_UID.into(), pod_uid(pod));
    l.insert(LABEL_MANAGED.into(), MANAGED_BY.into());
    l
}

/// The CRI sandbox config for a pod; `attempt` counts sandbox re-creations.
pub fn sandbox_config(
    defaults: &PodDefaults,
    pod: &Pod,
    attempt: u32,
    cgroup_parent: &str,
) -> PodSandboxConfig {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(base_labels(pod));
    let annotations = pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let spec = pod.spec.as_ref();
    let mut ports = Vec::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for p in c.ports.iter().flatten() {
            if let Some(hp) = p.host_port.filter(|hp| *hp > 0) {
                ports.push(PortMapping {
                    protocol: match p.protocol.as_deref() {
                        Some("UDP") => Protocol::Udp,
                        Some("SCTP") => Protocol::Sctp,
                        _ => Protocol::Tcp,
                    } as i32,
                    container_port: p.container_port,
                    host_port: hp,
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    let node_ns = |on: Option<bool>| {
        if on.unwrap_or(false) {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        }
    };
    let sc = spec.and_then(|s| s.security_context.as_ref());
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod_uid(pod),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname: if host_network(pod) {
            String::new()
        } else {
            hostname(pod)
        },
        log_directory: log_dir(defaults, pod).display().to_string(),
        dns_config: Some(dns_config(defaults, pod)),
        port_mappings: ports,
        labels,
        annotations,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_string(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: node_ns(spec.and_then(|s| s.host_network)) as i32,
                    pid: node_ns(spec.and_then(|s| s.host_pid)) as i32,
                    ipc: node_ns(spec.and_then(|s| s.host_ipc)) as i32,
                    target_id: String::new(),
                }),
                run_as_user: sc
                    .and_then(|s| s.run_as_user)
                    .map(|value| crate::cri::v1::Int64Value { value }),
                run_as_group: sc
                    .and_then(|s| s.run_as_group)
                    .map(|value| crate::cri::v1::Int64Value { value }),
                supplemental_groups: sc
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                // containerd only runs privileged containers in a privileged sandbox.
                privileged: spec.is_some_and(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                        .any(|c| {
                            c.security_context
                                .as_ref()
                                .and_then(|sc| sc.privileged)
                                .unwrap_or(false)
                        })
                }),
                ..Default::default()
            }),
            sysctls: sc
                .and_then(|s| s.sysctls.as_ref())
                .map(|v| {
                    v.iter()
                        .map(|s| (s.name.clone(), s.value.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }),
    }
}

/// The CRI container config for `c` (the `attempt`-th instance).
pub fn container_config(
    pod: &Pod,
    c: &Container,
    attempt: u32,
    image: &str,
    env: &[(String, String)],
    mounts: Vec<Mount>,
) -> ContainerConfig {
    let mut labels = base_labels(pod);
    labels.insert(LABEL_CONTAINER_NAME.into(), c.name.clone());
    let mut annotations = HashMap::new();
    annotations.insert(
        "io.kubernetes.container.restartCount".to_string(),
        attempt.to_string(),
    );
    annotations.insert(
        crate::termination::ANNOTATION_PATH.to_string(),
        crate::termination::path(c),
    );
    annotations.insert(
        crate::termination::ANNOTATION_POLICY.to_string(),
        crate::termination::policy(c),
    );
    annotations.insert(
        "io.kubernetes.pod.terminationGracePeriod".to_string(),
        termination_grace(pod).to_string(),
    );
    let expand = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter()
            .flatten()
            .map(|s| crate::env::expand(s, env))
            .collect()
    };
    let (cpu_shares, cpu_quota, memory) = crate::resources::linux_limits(c);
    let sc = c.security_context.as_ref();
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: expand(&c.command),
        args: expand(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        mounts,
        labels,
        annotations,
        // Relative to the sandbox's log directory, as kubelet lays it out.
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_period: if cpu_quota > 0 { 100_000 } else { 0 },
                cpu_quota,
                cpu_shares,
                memory_limit_in_bytes: memory,
                oom_score_adj: crate::resources::oom_score_adj(pod, c),
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: sc.and_then(|s| s.capabilities.as_ref()).map(|caps| {
                    crate::cri::v1::Capability {
                        add_capabilities: caps.add.clone().unwrap_or_default(),
                        drop_capabilities: caps.drop.clone().unwrap_or_default(),
                        add_ambient_capabilities: Vec::new(),
                    }
                }),
                // Privileged containers may always escalate; otherwise only an
                // explicit `allowPrivilegeEscalation: false` sets no_new_privs.
                no_new_privs: !sc.and_then(|s| s.privileged).unwrap_or(false)
                    && sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
                privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
                run_as_user: sc
                    .and_then(|s| s.run_as_user)
                    .or(psc.and_then(|s| s.run_as_user))
                    .map(|value| crate::cri::v1::Int64Value { value }),
                run_as_group: sc
                    .and_then(|s| s.run_as_group)
                    .or(psc.and_then(|s| s.run_as_group))
                    .map(|value| crate::cri::v1::Int64Value { value }),
                readonly_rootfs: sc
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false),
                supplemental_groups: psc
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                namespace_options: Some(NamespaceOption {
                    network: if host_network(pod) {
                        NamespaceMode::Node
                    } else {
                        NamespaceMode::Pod
                    } as i32,
                    pid: if pod.spec.as_ref().and_then(|s| s.host_pid).unwrap_or(false) {
                        NamespaceMode::Node
                    } else if pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.share_process_namespace)
                        .unwrap_or(false)
                    {
                        NamespaceMode::Pod
                    } else {
                        NamespaceMode::Container
                    } as i32,
                    ipc: if pod.spec.as_ref().and_then(|s| s.host_ipc).unwrap_or(false) {
                        NamespaceMode::Node
                    } else {
                        NamespaceMode::Pod
                    } as i32,
                    target_id: String::new(),
                }),
                ..Default::default()
            }),
        }),
    }
}

/// `name_namespace(uid)`: how kubelet names a pod in messages.
pub fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod_uid(pod)
    )
}

/// Refuses a container with `runAsNonRoot` that would run as root: its
/// runAsUser (container, else pod), else the image's user (`image_user`:
/// the runtime's uid, or its non-numeric user name).
pub fn verify_run_as_non_root(
    pod: &Pod,
    c: &Container,
    image_user: (Option<i64>, &str),
) -> Result<(), String> {
    let sc = c.security_context.as_ref();
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    if !non_root {
        return Ok(());
    }
    let who = format!("(pod: {:?}, container: {})", pod_ref(pod), c.name);
    if let Some(uid) = sc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user))
    {
        return if uid == 0 {
            Err(format!(
                "container's runAsUser breaks non-root policy {who}"
            ))
        } else {
            Ok(())
        };
    }
    match image_user {
        (Some(0), _) => Err(format!(
            "container has runAsNonRoot and image will run as root {who}"
        )),
        (Some(_), _) => Ok(()),
        (None, name) if !name.is_empty() => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root {who}"
        )),
        // An image that names no user runs as root.
        (None, _) => Err(format!(
            "container has runAsNonRoot and image will run as root {who}"
        )),
    }
}

/// Seconds a pod's containers get between SIGTERM and SIGKILL.
pub fn termination_grace(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> PodDefaults {
        PodDefaults {
            cluster_dns: vec!["10.43.0.10".into()],
            cluster_domain: "cluster.local".into(),
            pod_logs_dir: "/var/log/pods".into(),
            host_resolv_conf: "/nonexistent".into(),
        }
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn sandbox_has_kubelet_labels_dns_and_ports() {
        let p = pod(serde_json::json!({"containers": [
            {"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}
        ]}));
        let cfg = sandbox_config(&defaults(), &p, 1, "/k3rs/podu-1");
        assert_eq!(cfg.labels[LABEL_POD_UID], "u-1");
        assert_eq!(cfg.labels[LABEL_POD_NAME], "web-0");
        assert_eq!(cfg.labels[LABEL_POD_NAMESPACE], "shop");
        assert_eq!(cfg.labels["app"], "web");
        assert_eq!(cfg.hostname, "web-0");
        assert_eq!(cfg.log_directory, "/var/log/pods/shop_web-0_u-1");
        let dns = cfg.dns_config.unwrap();
        assert_eq!(dns.servers, vec!["10.43.0.10"]);
        assert_eq!(
            dns.searches,
            vec![
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(dns.options, vec!["ndots:5"]);
        assert_eq!(cfg.port_mappings.len(), 1);
        assert_eq!(cfg.port_mappings[0].host_port, 8080);
    }

    #[test]
    fn dns_config_merges_and_none_policy() {
        let p = pod(serde_json::json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.1.1.1"], "options": [{"name": "ndots", "value": "2"}]
        }, "containers": []}));
        let dns = dns_config(&defaults(), &p);
        assert_eq!(dns.servers, vec!["1.1.1.1"]);
        assert_eq!(dns.options, vec!["ndots:2"]);
        assert_eq!(
            parse_resolv_conf("nameserver 9.9.9.9\nsearch a b\n").searches,
            vec!["a", "b"]
        );
    }

    #[test]
    fn security_context_reaches_the_runtime() {
        let p = pod(serde_json::json!({"containers": [
            {"name": "a", "securityContext": {"privileged": true}}
        ]}));
        let cfg = sandbox_config(&defaults(), &p, 0, "");
        assert!(cfg.linux.unwrap().security_context.unwrap().privileged);
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "b", "securityContext": {
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "runAsUser": 1000,
            }
        }))
        .unwrap();
        let cfg = container_config(&p, &c, 0, "busybox", &[], vec![]);
        let sc = cfg.linux.unwrap().security_context.unwrap();
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.add_capabilities, vec!["NET_ADMIN"]);
        assert_eq!(caps.drop_capabilities, vec!["ALL"]);
        assert!(sc.no_new_privs && sc.readonly_rootfs);
        assert_eq!(sc.run_as_user.unwrap().value, 1000);
    }

    #[test]
    fn run_as_non_root() {
        let p =
            pod(serde_json::json!({"securityContext": {"runAsNonRoot": true}, "containers": []}));
        let c: Container = serde_json::from_value(serde_json::json!({"name": "app"})).unwrap();
        assert_eq!(
            verify_run_as_non_root(&p, &c, (None, "")).unwrap_err(),
            "container has runAsNonRoot and image will run as root (pod: \"web-0_shop(u-1)\", container: app)"
        );
        assert!(verify_run_as_non_root(&p, &c, (Some(0), "")).is_err());
        assert!(verify_run_as_non_root(&p, &c, (Some(1000), "")).is_ok());
        assert!(
            verify_run_as_non_root(&p, &c, (None, "nobody"))
                .unwrap_err()
                .contains("non-numeric user (nobody)")
        );
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "app", "securityContext": {"runAsUser": 0}
        }))
        .unwrap();
        assert!(
            verify_run_as_non_root(&p, &c, (Some(1000), ""))
                .unwrap_err()
                .starts_with("container's runAsUser breaks non-root policy")
        );
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "app", "securityContext": {"runAsUser": 1000}
        }))
        .unwrap();
        assert!(verify_run_as_non_root(&p, &c, (None, "")).is_ok());
    }

    #[test]
    fn container_config_expands_command_and_sets_log_path() {
        let p = pod(serde_json::json!({"containers": []}));
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "app", "command": ["sh", "-c", "echo $(GREETING)"], "workingDir": "/tmp"
        }))
        .unwrap();
        let env = vec![("GREETING".to_string(), "hi".to_string())];
        let cfg = container_config(&p, &c, 2, "busybox", &env, vec![]);
        assert_eq!(cfg.command, vec!["sh", "-c", "echo hi"]);
        assert_eq!(cfg.log_path, "app/2.log");
        assert_eq!(cfg.working_dir, "/tmp");
        assert_eq!(cfg.labels[LABEL_CONTAINER_NAME], "app");
        assert_eq!(cfg.metadata.unwrap().attempt, 2);
    }
}
