//! Which defaults each kind gets.

use serde_json::{Map, Value};

use super::{Default, d, for_each_at, obj_mut, str_at, when};
use crate::validation::base64;

pub(crate) struct KindDefaults {
    pub group: &'static str,
    pub kind: &'static str,
    /// Rules that must see the object before the table (e.g. they read
    /// fields the table would fill).
    pub before: Option<fn(&mut Value)>,
    pub table: &'static [Default],
    /// Where the kind carries PodSpecs (`[]` walks arrays).
    pub pod_specs: &'static [&'static str],
    pub after: Option<fn(&mut Value)>,
}

const fn k(
    group: &'static str,
    kind: &'static str,
    table: &'static [Default],
    pod_specs: &'static [&'static str],
) -> KindDefaults {
    KindDefaults {
        group,
        kind,
        before: None,
        table,
        pod_specs,
        after: None,
    }
}

const fn with(
    mut r: KindDefaults,
    before: Option<fn(&mut Value)>,
    after: Option<fn(&mut Value)>,
) -> KindDefaults {
    r.before = before;
    r.after = after;
    r
}

const TEMPLATE: &[&str] = &["spec.template.spec"];
const RBAC: &str = "rbac.authorization.k8s.io";
const ADMISSION: &str = "admissionregistration.k8s.io";

pub(crate) static KINDS: &[KindDefaults] = &[
    k("", "Pod", &[], &["spec"]),
    k("", "PodTemplate", &[], &["template.spec"]),
    with(
        k("", "ReplicationController", RC, TEMPLATE),
        Some(rc_selector),
        None,
    ),
    with(k("", "Service", SERVICE, &[]), Some(service_before), None),
    with(
        k("", "Namespace", NAMESPACE, &[]),
        Some(namespace_label),
        None,
    ),
    with(k("", "Secret", SECRET, &[]), Some(merge_string_data), None),
    k("", "PersistentVolumeClaim", PVC, &[]),
    k("", "PersistentVolume", PV, &[]),
    k("", "Endpoints", ENDPOINTS, &[]),
    with(k("", "Node", &[], &[]), None, Some(node_allocatable)),
    k("apps", "Deployment", DEPLOYMENT, TEMPLATE),
    k("apps", "ReplicaSet", REPLICA_SET, TEMPLATE),
    k("apps", "StatefulSet", STATEFUL_SET, TEMPLATE),
    k("apps", "DaemonSet", DAEMON_SET, TEMPLATE),
    with(k("batch", "Job", JOB, TEMPLATE), Some(job_before), None),
    k(
        "batch",
        "CronJob",
        CRON_JOB,
        &["spec.jobTemplate.spec.template.spec"],
    ),
    k("discovery.k8s.io", "EndpointSlice", ENDPOINT_SLICE, &[]),
    with(
        k("networking.k8s.io", "NetworkPolicy", NETWORK_POLICY, &[]),
        Some(policy_types),
        None,
    ),
    with(k(RBAC, "RoleBinding", BINDING, &[]), None, Some(subjects)),
    with(
        k(RBAC, "ClusterRoleBinding", BINDING, &[]),
        None,
        Some(subjects),
    ),
    k("scheduling.k8s.io", "PriorityClass", PRIORITY_CLASS, &[]),
    k("storage.k8s.io", "StorageClass", STORAGE_CLASS, &[]),
    k("storage.k8s.io", "CSIDriver", CSI_DRIVER, &[]),
    k(
        ADMISSION,
        "MutatingWebhookConfiguration",
        MUTATING_WEBHOOK,
        &[],
    ),
    k(ADMISSION, "ValidatingWebhookConfiguration", WEBHOOK, &[]),
    k(
        ADMISSION,
        "ValidatingAdmissionPolicy",
        ADMISSION_POLICY,
        &[],
    ),
];

// ---- conditions ---------------------------------------------------------------

fn deployment_rolling(o: &Value) -> bool {
    str_at(o, "spec.strategy.type") == Some("RollingUpdate")
}
fn sts_strategy_unset(o: &Value) -> bool {
    o.pointer("/spec/updateStrategy/type")
        .is_none_or(Value::is_null)
}
fn sts_rolling(o: &Value) -> bool {
    str_at(o, "spec.updateStrategy.type") == Some("RollingUpdate")
}
fn no_pod_failure_policy(o: &Value) -> bool {
    o.pointer("/spec/podFailurePolicy")
        .is_none_or(Value::is_null)
}
fn has_pod_failure_policy(o: &Value) -> bool {
    !no_pod_failure_policy(o)
}
fn no_backoff_per_index(o: &Value) -> bool {
    o.pointer("/spec/backoffLimitPerIndex")
        .is_none_or(Value::is_null)
}
fn has_backoff_per_index(o: &Value) -> bool {
    !no_backoff_per_index(o)
}
fn service_client_ip(o: &Value) -> bool {
    str_at(o, "spec.sessionAffinity") == Some("ClientIP")
}
fn service_not_external_name(o: &Value) -> bool {
    str_at(o, "spec.type") != Some("ExternalName")
}
fn service_load_balancer(o: &Value) -> bool {
    str_at(o, "spec.type") == Some("LoadBalancer")
}
fn service_externally_accessible(o: &Value) -> bool {
    match str_at(o, "spec.type") {
        Some("NodePort" | "LoadBalancer") => true,
        Some("ClusterIP") => o
            .pointer("/spec/externalIPs")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty()),
        _ => false,
    }
}
/// Headless services without a selector get every cluster family.
fn service_headless_without_selector(o: &Value) -> bool {
    service_not_external_name(o)
        && str_at(o, "spec.clusterIP") == Some("None")
        && o.pointer("/spec/selector")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
}
fn service_single_stack(o: &Value) -> bool {
    service_not_external_name(o) && !service_headless_without_selector(o)
}

// ---- tables -------------------------------------------------------------------

const RC: &[Default] = &[d("spec.replicas", "1")];

const DEPLOYMENT: &[Default] = &[
    d("spec.replicas", "1"),
    d("spec.strategy", "{}"),
    d("spec.strategy.type", r#""RollingUpdate""#),
    when("spec.strategy.rollingUpdate", "{}", deployment_rolling),
    d("spec.strategy.rollingUpdate.maxUnavailable", r#""25%""#),
    d("spec.strategy.rollingUpdate.maxSurge", r#""25%""#),
    d("spec.revisionHistoryLimit", "10"),
    d("spec.progressDeadlineSeconds", "600"),
];

const REPLICA_SET: &[Default] = &[d("spec.replicas", "1")];

const STATEFUL_SET: &[Default] = &[
    d("spec.replicas", "1"),
    d("spec.podManagementPolicy", r#""OrderedReady""#),
    d("spec.updateStrategy", "{}"),
    // RollingUpdate params appear only when the strategy type was defaulted.
    when(
        "spec.updateStrategy.rollingUpdate",
        "{}",
        sts_strategy_unset,
    ),
    d("spec.updateStrategy.type", r#""RollingUpdate""#),
    when(
        "spec.updateStrategy.rollingUpdate.partition",
        "0",
        sts_rolling,
    ),
    d("spec.revisionHistoryLimit", "10"),
    d("spec.persistentVolumeClaimRetentionPolicy", "{}"),
    d(
        "spec.persistentVolumeClaimRetentionPolicy.whenDeleted",
        r#""Retain""#,
    ),
    d(
        "spec.persistentVolumeClaimRetentionPolicy.whenScaled",
        r#""Retain""#,
    ),
    d(
        "spec.volumeClaimTemplates[].spec.volumeMode",
        r#""Filesystem""#,
    ),
    d("spec.volumeClaimTemplates[].status", "{}"),
    d("spec.volumeClaimTemplates[].status.phase", r#""Pending""#),
];

const DAEMON_SET: &[Default] = &[
    d("spec.updateStrategy", "{}"),
    d("spec.updateStrategy.type", r#""RollingUpdate""#),
    when("spec.updateStrategy.rollingUpdate", "{}", |o| {
        str_at(o, "spec.updateStrategy.type") == Some("RollingUpdate")
    }),
    d("spec.updateStrategy.rollingUpdate.maxUnavailable", "1"),
    d("spec.updateStrategy.rollingUpdate.maxSurge", "0"),
    d("spec.revisionHistoryLimit", "10"),
];

const JOB: &[Default] = &[
    // completions is handled in `job_before` (only with parallelism unset).
    d("spec.parallelism", "1"),
    when("spec.backoffLimit", "6", no_backoff_per_index),
    when("spec.backoffLimit", "2147483647", has_backoff_per_index),
    d("spec.completionMode", r#""NonIndexed""#),
    d("spec.suspend", "false"),
    when(
        "spec.podReplacementPolicy",
        r#""TerminatingOrFailed""#,
        no_pod_failure_policy,
    ),
    when(
        "spec.podReplacementPolicy",
        r#""Failed""#,
        has_pod_failure_policy,
    ),
    d(
        "spec.podFailurePolicy.rules[].onPodConditions[].status",
        r#""True""#,
    ),
];

const CRON_JOB: &[Default] = &[
    d("spec.concurrencyPolicy", r#""Allow""#),
    d("spec.suspend", "false"),
    d("spec.successfulJobsHistoryLimit", "3"),
    d("spec.failedJobsHistoryLimit", "1"),
];

const SERVICE: &[Default] = &[
    d("spec", "{}"),
    d("spec.type", r#""ClusterIP""#),
    d("spec.sessionAffinity", r#""None""#),
    when("spec.sessionAffinityConfig", "{}", service_client_ip),
    when(
        "spec.sessionAffinityConfig.clientIP",
        "{}",
        service_client_ip,
    ),
    when(
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        "10800",
        service_client_ip,
    ),
    d("spec.ports[].protocol", r#""TCP""#),
    when(
        "spec.externalTrafficPolicy",
        r#""Cluster""#,
        service_externally_accessible,
    ),
    when(
        "spec.internalTrafficPolicy",
        r#""Cluster""#,
        service_not_external_name,
    ),
    when(
        "spec.allocateLoadBalancerNodePorts",
        "true",
        service_load_balancer,
    ),
    when(
        "spec.ipFamilyPolicy",
        r#""SingleStack""#,
        service_single_stack,
    ),
    when(
        "spec.ipFamilyPolicy",
        r#""RequireDualStack""#,
        service_headless_without_selector,
    ),
];

const NAMESPACE: &[Default] = &[
    d("spec", "{}"),
    d("spec.finalizers", r#"["kubernetes"]"#),
    d("status", "{}"),
    d("status.phase", r#""Active""#),
];

const SECRET: &[Default] = &[d("type", r#""Opaque""#)];

const PVC: &[Default] = &[
    d("spec.volumeMode", r#""Filesystem""#),
    d("status", "{}"),
    d("status.phase", r#""Pending""#),
];

const PV: &[Default] = &[
    d("spec.persistentVolumeReclaimPolicy", r#""Retain""#),
    d("spec.volumeMode", r#""Filesystem""#),
    d("spec.hostPath.type", r#""""#),
    d("status", "{}"),
    d("status.phase", r#""Pending""#),
];

const ENDPOINTS: &[Default] = &[d("subsets[].ports[].protocol", r#""TCP""#)];

const ENDPOINT_SLICE: &[Default] = &[
    d("ports[].name", r#""""#),
    d("ports[].protocol", r#""TCP""#),
];

const NETWORK_POLICY: &[Default] = &[
    d("spec.ingress[].ports[].protocol", r#""TCP""#),
    d("spec.egress[].ports[].protocol", r#""TCP""#),
];

const BINDING: &[Default] = &[d("roleRef.apiGroup", r#""rbac.authorization.k8s.io""#)];

const PRIORITY_CLASS: &[Default] = &[d("preemptionPolicy", r#""PreemptLowerPriority""#)];

const STORAGE_CLASS: &[Default] = &[
    d("reclaimPolicy", r#""Delete""#),
    d("volumeBindingMode", r#""Immediate""#),
];

const CSI_DRIVER: &[Default] = &[
    d("spec", "{}"),
    d("spec.attachRequired", "true"),
    d("spec.podInfoOnMount", "false"),
    d("spec.volumeLifecycleModes", r#"["Persistent"]"#),
    d("spec.fsGroupPolicy", r#""ReadWriteOnceWithFSType""#),
    d("spec.storageCapacity", "false"),
    d("spec.requiresRepublish", "false"),
    d("spec.seLinuxMount", "false"),
];

const WEBHOOK: &[Default] = &[
    d("webhooks[].failurePolicy", r#""Fail""#),
    d("webhooks[].matchPolicy", r#""Equivalent""#),
    d("webhooks[].namespaceSelector", "{}"),
    d("webhooks[].objectSelector", "{}"),
    d("webhooks[].timeoutSeconds", "10"),
    d("webhooks[].rules[].scope", r#""*""#),
    d("webhooks[].clientConfig.service.port", "443"),
];

const MUTATING_WEBHOOK: &[Default] = &[
    d("webhooks[].failurePolicy", r#""Fail""#),
    d("webhooks[].matchPolicy", r#""Equivalent""#),
    d("webhooks[].namespaceSelector", "{}"),
    d("webhooks[].objectSelector", "{}"),
    d("webhooks[].timeoutSeconds", "10"),
    d("webhooks[].reinvocationPolicy", r#""Never""#),
    d("webhooks[].rules[].scope", r#""*""#),
    d("webhooks[].clientConfig.service.port", "443"),
];

const ADMISSION_POLICY: &[Default] = &[
    d("spec.failurePolicy", r#""Fail""#),
    d("spec.matchConstraints.matchPolicy", r#""Equivalent""#),
    d("spec.matchConstraints.namespaceSelector", "{}"),
    d("spec.matchConstraints.objectSelector", "{}"),
    d("spec.matchConstraints.resourceRules[].scope", r#""*""#),
];

// ---- rules that need code ----------------------------------------------------

/// An RC without a selector (or labels) takes its template's labels.
fn rc_selector(o: &mut Value) {
    let Some(labels) = o
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    let empty = |v: Option<&Value>| v.and_then(Value::as_object).is_none_or(Map::is_empty);
    if empty(o.pointer("/spec/selector"))
        && let Some(spec) = obj_mut(o, "spec")
    {
        spec.insert("selector".into(), Value::Object(labels.clone()));
    }
    if empty(o.pointer("/metadata/labels"))
        && let Some(meta) = obj_mut(o, "metadata")
    {
        meta.insert("labels".into(), Value::Object(labels));
    }
}

/// Jobs: both counts default to 1 only when both are unset; the Job takes
/// its template's labels when it has none.
fn job_before(o: &mut Value) {
    let unset = |o: &Value, k: &str| {
        o.get("spec")
            .and_then(|s| s.get(k))
            .is_none_or(Value::is_null)
    };
    if unset(o, "completions")
        && unset(o, "parallelism")
        && let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert("completions".into(), 1.into());
    }
    let labels = o
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned();
    let has_labels = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty());
    if let (Some(l), false) = (labels, has_labels)
        && let Some(meta) = obj_mut(o, "metadata")
    {
        meta.insert("labels".into(), Value::Object(l));
    }
}

/// `policyTypes` is Ingress, plus Egress when egress rules exist.
fn policy_types(o: &mut Value) {
    let set = o
        .pointer("/spec/policyTypes")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if set {
        return;
    }
    let egress = o
        .pointer("/spec/egress")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let mut types = vec![Value::from("Ingress")];
    if egress {
        types.push("Egress".into());
    }
    if let Some(spec) = obj_mut(o, "spec") {
        spec.insert("policyTypes".into(), Value::Array(types));
    }
}

/// Upstream clears `sessionAffinityConfig` when affinity is None and sets
/// each port's `targetPort` to its `port` when unset (or 0 / "").
fn service_before(o: &mut Value) {
    let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("None") {
        spec.remove("sessionAffinityConfig");
    }
    for_each_at(o, "spec.ports[]", &mut |p| {
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(v) => v.as_i64() == Some(0),
        };
        let port = p.get("port").cloned();
        if let (true, Some(port), Some(m)) = (unset, port, p.as_object_mut()) {
            m.insert("targetPort".into(), port);
        }
    });
}

/// Every named namespace carries `kubernetes.io/metadata.name: <name>`.
fn namespace_label(o: &mut Value) {
    let Some(name) = str_at(o, "metadata.name")
        .filter(|n| !n.is_empty())
        .map(str::to_string)
    else {
        return;
    };
    let Some(meta) = obj_mut(o, "metadata") else {
        return;
    };
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if labels.is_null() {
        *labels = Value::Object(Map::new());
    }
    if let Some(l) = labels.as_object_mut() {
        l.insert("kubernetes.io/metadata.name".into(), name.into());
    }
}

/// `stringData` is write-only: upstream merges it into `data` (base64,
/// overriding same-named keys) on the way in and never stores it.
fn merge_string_data(o: &mut Value) {
    let Some(m) = o.as_object_mut() else { return };
    let Some(sd) = m.get("stringData").and_then(Value::as_object).cloned() else {
        if m.get("stringData").is_some_and(Value::is_null) {
            m.remove("stringData");
        }
        return;
    };
    // Non-string values stay put so validation can report them.
    if sd.values().any(|v| !v.is_string()) {
        return;
    }
    m.remove("stringData");
    let data = m.entry("data").or_insert_with(|| Value::Object(Map::new()));
    if data.is_null() {
        *data = Value::Object(Map::new());
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in sd {
            let s = v.as_str().unwrap_or("");
            data.insert(k, base64::encode(s.as_bytes()).into());
        }
    }
}

/// A node reporting capacity but no allocatable can allocate everything.
fn node_allocatable(o: &mut Value) {
    let Some(cap) = o
        .pointer("/status/capacity")
        .filter(|c| c.is_object())
        .cloned()
    else {
        return;
    };
    if o.pointer("/status/allocatable").is_none_or(Value::is_null)
        && let Some(status) = obj_mut(o, "status")
    {
        status.insert("allocatable".into(), cap);
    }
}

/// RBAC subjects: Users and Groups belong to the RBAC group, service
/// accounts to the core group.
fn subjects(o: &mut Value) {
    for_each_at(o, "subjects[]", &mut |s| {
        let group = match s.get("kind").and_then(Value::as_str) {
            Some("User" | "Group") => RBAC,
            Some("ServiceAccount") => "",
            _ => return,
        };
        if let Some(m) = s.as_object_mut()
            && m.get("apiGroup").is_none_or(Value::is_null)
        {
            m.insert("apiGroup".into(), group.into());
        }
    });
}

/// On a Service update, fields the cluster allocated (cluster IPs, node
/// ports, health-check port) carry over from the stored object when the
/// update leaves them out, as upstream's registry does; `kubectl replace`
/// of a manifest without them then keeps the allocation.
pub fn prepare_service_update(new: &mut Value, old: &Value) {
    let ty = |v: &Value| str_at(v, "spec.type").unwrap_or("ClusterIP").to_string();
    let (nt, ot) = (ty(new), ty(old));
    let Some(ns) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let Some(os) = old.get("spec").and_then(Value::as_object) else {
        return;
    };
    let unset = |m: &Map<String, Value>, k: &str| match m.get(k) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(v) => v.as_i64() == Some(0),
    };
    if nt != "ExternalName" && ot != "ExternalName" {
        for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if unset(ns, k)
                && !unset(os, k)
                && let Some(v) = os.get(k)
            {
                ns.insert(k.to_string(), v.clone());
            }
        }
    }
    let node_ports = |t: &str| matches!(t, "NodePort" | "LoadBalancer");
    if node_ports(&nt) && node_ports(&ot) {
        let old_ports = os
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = ns.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                let Some(pm) = p.as_object_mut() else {
                    continue;
                };
                if !unset(pm, "nodePort") {
                    continue;
                }
                // Same port number and protocol: same service port.
                let key = (pm.get("port").cloned(), pm.get("protocol").cloned());
                if let Some(np) = old_ports
                    .iter()
                    .find(|o| (o.get("port").cloned(), o.get("protocol").cloned()) == key)
                    .and_then(|o| o.get("nodePort"))
                {
                    pm.insert("nodePort".into(), np.clone());
                }
            }
        }
    }
    let health_check = |t: &str, m: &Map<String, Value>| {
        t == "LoadBalancer"
            && m.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local")
    };
    if health_check(&nt, ns)
        && health_check(&ot, os)
        && unset(ns, "healthCheckNodePort")
        && let Some(v) = os.get("healthCheckNodePort")
    {
        ns.insert("healthCheckNodePort".into(), v.clone());
    }
    drop_type_dependent_fields(&nt, ns, os);
}

/// A type change drops the fields only the old type uses, when the update
/// carried them over unchanged (upstream's `dropTypeDependentFields`), so
/// `kubectl patch -p '{"spec":{"type":"ClusterIP"}}'` on a NodePort Service
/// just works.
fn drop_type_dependent_fields(nt: &str, ns: &mut Map<String, Value>, os: &Map<String, Value>) {
    let same = |ns: &Map<String, Value>, k: &str| ns.get(k).is_some() && ns.get(k) == os.get(k);
    if nt == "ExternalName" {
        for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if same(ns, k) {
                ns.remove(k);
            }
        }
    }
    if !matches!(nt, "NodePort" | "LoadBalancer") {
        let old_ports: Vec<Option<&Value>> = os
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|p| p.get("nodePort")).collect())
            .unwrap_or_default();
        let new_ports: Vec<Option<&Value>> = ns
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|p| p.get("nodePort")).collect())
            .unwrap_or_default();
        let unchanged = new_ports
            .iter()
            .all(|np| np.is_none_or(|v| v.is_null() || old_ports.contains(&Some(v))));
        if unchanged && let Some(ports) = ns.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                p.remove("nodePort");
            }
        }
    }
    if nt != "LoadBalancer" {
        for k in [
            "allocateLoadBalancerNodePorts",
            "loadBalancerClass",
            "healthCheckNodePort",
        ] {
            if same(ns, k) {
                ns.remove(k);
            }
        }
    }
    let external = matches!(nt, "NodePort" | "LoadBalancer")
        || ns
            .get("externalIPs")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    if !external && same(ns, "externalTrafficPolicy") {
        ns.remove("externalTrafficPolicy");
    }
}
