//! Which pods back a Service, at which address and on which ports: the
//! rules the EndpointSlice and Endpoints controllers share, and the watch
//! wiring that turns pod changes into the keys of the Services selecting them.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::framework::{Change, Informer, WorkQueue, key_of, pod_is_ready};

/// The label a Service's endpoints carry when it has no cluster IP.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The selector of a Service whose endpoints the controllers manage; `None`
/// for Services without one (their endpoints are written by someone else)
/// and for ExternalName Services (a DNS alias, no endpoints).
pub fn managed_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref()
}

/// A Service selector is a plain label map: every pair must match (an empty
/// map selects every pod, as upstream).
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The labels a Service's endpoints get: the Service's own, plus the
/// headless marker kube-proxy and DNS use.
pub fn endpoint_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// Address families the Service asks for, primary first (IPv4 when unset).
pub fn families(svc: &Service) -> Vec<String> {
    match svc.spec.as_ref().and_then(|s| s.ip_families.clone()) {
        Some(f) if !f.is_empty() => f,
        _ => vec!["IPv4".into()],
    }
}

/// Finished pods and pods without an IP never back a Service; terminating
/// pods only where the caller includes them.
pub fn pod_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return false;
    }
    let has_ip = status.is_some_and(|s| {
        s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
            || s.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
    });
    has_ip && (include_terminating || pod.metadata.deletion_timestamp.is_none())
}

/// The pod's IP of `family` ("IPv4" or "IPv6").
pub fn pod_ip(pod: &Pod, family: &str) -> Option<String> {
    let status = pod.status.as_ref()?;
    let v6 = family == "IPv6";
    let fits = |ip: &str| !ip.is_empty() && ip.contains(':') == v6;
    status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .find(|ip| fits(ip))
        .map(str::to_string)
}

/// The pod port a Service port sends to: a number as is, a name looked up
/// among the pod's container ports of the same protocol. `None` when the
/// pod has no such named port (it then backs the Service on its other ports).
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) if *n == 0 => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// Pods with `hostname` and `subdomain` naming the Service get DNS records
/// of their own (StatefulSets), so their endpoint carries the hostname.
pub fn hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then(|| hostname.to_string())
}

pub fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

pub fn ready(pod: &Pod) -> bool {
    pod_is_ready(pod)
}

/// What about a pod can change its endpoints.
fn endpoint_view(p: &Pod) -> impl PartialEq + use<> {
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    (
        p.metadata.labels.clone(),
        p.metadata.deletion_timestamp.is_some(),
        status.and_then(|s| s.pod_ip.clone()),
        status.and_then(|s| s.pod_ips.clone()),
        status.and_then(|s| s.phase.clone()),
        pod_is_ready(p),
        spec.and_then(|s| s.node_name.clone()),
        spec.and_then(|s| s.hostname.clone()),
        spec.and_then(|s| s.subdomain.clone()),
        spec.map(|s| {
            s.containers
                .iter()
                .map(|c| c.ports.clone())
                .collect::<Vec<_>>()
        }),
    )
}

/// Queues a Service whenever it changes, and every Service of a pod's
/// namespace whose selector matches the pod before or after a change that
/// matters for endpoints.
pub fn watch(services: &Arc<Informer<Service>>, pods: &Arc<Informer<Pod>>, queue: &Arc<WorkQueue>) {
    {
        let q = queue.clone();
        services.on_change(move |ch| match ch {
            Change::Applied { new, .. } => q.add(key_of(*new)),
            Change::Deleted(s) => q.add(key_of(*s)),
        });
    }
    let q = queue.clone();
    let svcs = services.clone();
    pods.on_change(move |ch| {
        let (new, old) = match ch {
            Change::Applied { new, old } => {
                if old
                    .as_deref()
                    .is_some_and(|o| endpoint_view(o) == endpoint_view(new))
                {
                    return;
                }
                (*new, old.as_deref())
            }
            Change::Deleted(p) => (*p, None),
        };
        let ns = new.metadata.namespace.as_deref().unwrap_or_default();
        for svc in svcs.in_namespace(ns) {
            let Some(sel) = managed_selector(&svc) else {
                continue;
            };
            if selects(sel, new.metadata.labels.as_ref())
                || old.is_some_and(|o| selects(sel, o.metadata.labels.as_ref()))
            {
                q.add(key_of(svc.as_ref()));
            }
        }
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pod for endpoint tests: running with `ip`, ready or not, with
    /// named container ports.
    pub fn pod(name: &str, ip: &str, ready: bool, ports: &[(&str, i32)]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "i",
                "ports": ports.iter().map(|(n, p)| serde_json::json!({"name": n, "containerPort": p})).collect::<Vec<_>>()}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    pub fn service(ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"}, "ports": ports, "clusterIP": "10.43.0.10"},
        }))
        .unwrap()
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let svc = service(serde_json::json!([{"name": "http", "port": 80, "targetPort": "web"}]));
        let sp = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            find_port(&pod("a", "10.0.0.1", true, &[("web", 8080)]), sp),
            Some(8080)
        );
        assert_eq!(
            find_port(&pod("b", "10.0.0.2", true, &[("web", 9090)]), sp),
            Some(9090)
        );
        assert_eq!(
            find_port(&pod("c", "10.0.0.3", true, &[("other", 1)]), sp),
            None
        );
        let udp: ServicePort = serde_json::from_value(
            serde_json::json!({"port": 53, "protocol": "UDP", "targetPort": "web"}),
        )
        .unwrap();
        assert_eq!(
            find_port(&pod("a", "10.0.0.1", true, &[("web", 8080)]), &udp),
            None
        );
    }

    #[test]
    fn finished_and_ipless_pods_back_nothing() {
        let mut p = pod("a", "10.0.0.1", true, &[]);
        assert!(pod_in_endpoints(&p, false));
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(!pod_in_endpoints(&p, false));
        assert!(pod_in_endpoints(&p, true));
        let mut done = pod("b", "10.0.0.2", false, &[]);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!pod_in_endpoints(&done, true));
        let mut ipless = pod("c", "", false, &[]);
        ipless.status.as_mut().unwrap().pod_ips = None;
        assert!(!pod_in_endpoints(&ipless, true));
        assert_eq!(pod_ip(&p, "IPv4").as_deref(), Some("10.0.0.1"));
        assert_eq!(pod_ip(&p, "IPv6"), None);
    }
}
