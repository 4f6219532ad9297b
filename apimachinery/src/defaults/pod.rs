//! PodSpec defaults, shared by Pods and every pod template.

use serde_json::{Map, Value};

use super::{Default, apply_table, d, for_each_at, obj_mut};

/// Spec-level defaults (upstream `SetDefaults_PodSpec`).
const POD_SPEC: &[Default] = &[
    d("dnsPolicy", r#""ClusterFirst""#),
    d("restartPolicy", r#""Always""#),
    d("terminationGracePeriodSeconds", "30"),
    d("securityContext", "{}"),
    d("schedulerName", r#""default-scheduler""#),
    d("enableServiceLinks", "true"),
];

/// Set on Pods only: by the Priority admission plugin upstream, which
/// templates never pass through.
const POD_ONLY: &[Default] = &[
    d("preemptionPolicy", r#""PreemptLowerPriority""#),
    d("priority", "0"),
];

/// Per-container defaults; paths are relative to the container.
const CONTAINER: &[Default] = &[
    d("terminationMessagePath", r#""/dev/termination-log""#),
    d("terminationMessagePolicy", r#""File""#),
    d("resources", "{}"),
    d("ports[].protocol", r#""TCP""#),
    d("env[].valueFrom.fieldRef.apiVersion", r#""v1""#),
    // Probes (upstream `SetDefaults_Probe` / `SetDefaults_HTTPGetAction`).
    d("livenessProbe.timeoutSeconds", "1"),
    d("livenessProbe.periodSeconds", "10"),
    d("livenessProbe.successThreshold", "1"),
    d("livenessProbe.failureThreshold", "3"),
    d("livenessProbe.httpGet.path", r#""/""#),
    d("livenessProbe.httpGet.scheme", r#""HTTP""#),
    d("readinessProbe.timeoutSeconds", "1"),
    d("readinessProbe.periodSeconds", "10"),
    d("readinessProbe.successThreshold", "1"),
    d("readinessProbe.failureThreshold", "3"),
    d("readinessProbe.httpGet.path", r#""/""#),
    d("readinessProbe.httpGet.scheme", r#""HTTP""#),
    d("startupProbe.timeoutSeconds", "1"),
    d("startupProbe.periodSeconds", "10"),
    d("startupProbe.successThreshold", "1"),
    d("startupProbe.failureThreshold", "3"),
    d("startupProbe.httpGet.path", r#""/""#),
    d("startupProbe.httpGet.scheme", r#""HTTP""#),
    d("lifecycle.postStart.httpGet.path", r#""/""#),
    d("lifecycle.postStart.httpGet.scheme", r#""HTTP""#),
    d("lifecycle.preStop.httpGet.path", r#""/""#),
    d("lifecycle.preStop.httpGet.scheme", r#""HTTP""#),
];

/// Per-volume defaults; paths are relative to the volume.
const VOLUME: &[Default] = &[
    d("secret.defaultMode", "420"),
    d("configMap.defaultMode", "420"),
    d("downwardAPI.defaultMode", "420"),
    d("downwardAPI.items[].fieldRef.apiVersion", r#""v1""#),
    d("projected.defaultMode", "420"),
    d(
        "projected.sources[].downwardAPI.items[].fieldRef.apiVersion",
        r#""v1""#,
    ),
    d(
        "projected.sources[].serviceAccountToken.expirationSeconds",
        "3600",
    ),
    d("hostPath.type", r#""""#),
    d("iscsi.iscsiInterface", r#""default""#),
    d("rbd.pool", r#""rbd""#),
    d("rbd.user", r#""admin""#),
    d("rbd.keyring", r#""/etc/ceph/keyring""#),
    d("azureDisk.cachingMode", r#""ReadWrite""#),
    d("azureDisk.fsType", r#""ext4""#),
    d("azureDisk.readOnly", "false"),
    d("azureDisk.kind", r#""Shared""#),
    d(
        "ephemeral.volumeClaimTemplate.spec.volumeMode",
        r#""Filesystem""#,
    ),
];

/// Volume sources: a volume with none of them becomes an `emptyDir`.
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

pub(crate) fn default_pod_spec(spec: &mut Value, is_pod: bool) {
    if !spec.is_object() {
        return;
    }
    apply_table(spec, POD_SPEC);
    if is_pod {
        apply_table(spec, POD_ONLY);
    }
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for_each_at(spec, &format!("{list}[]"), &mut |c| {
            default_container(c, is_pod, host_network);
        });
    }
    for_each_at(spec, "volumes[]", &mut |v| {
        if let Some(m) = v.as_object_mut()
            && !VOLUME_SOURCES
                .iter()
                .any(|s| m.get(*s).is_some_and(|x| !x.is_null()))
        {
            m.insert("emptyDir".into(), Value::Object(Map::new()));
        }
        apply_table(v, VOLUME);
    });
}

fn default_container(c: &mut Value, is_pod: bool, host_network: bool) {
    if !c.is_object() {
        return;
    }
    if c.get("imagePullPolicy").is_none_or(Value::is_null) {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        let policy = image_pull_policy(image);
        if let Some(m) = c.as_object_mut() {
            m.insert("imagePullPolicy".into(), policy.into());
        }
    }
    apply_table(c, CONTAINER);
    if is_pod {
        requests_from_limits(c);
        // Host-network pods listen on the host: hostPort follows containerPort.
        if host_network {
            for_each_at(c, "ports[]", &mut |p| {
                let cp = p.get("containerPort").cloned();
                if let (Some(m), Some(cp)) = (p.as_object_mut(), cp)
                    && m.get("hostPort")
                        .is_none_or(|h| h.is_null() || h.as_i64() == Some(0))
                {
                    m.insert("hostPort".into(), cp);
                }
            });
        }
    }
}

/// A Pod's container that sets limits but no request for a resource
/// requests its limit (upstream does this for Pods, not templates).
fn requests_from_limits(c: &mut Value) {
    let Some(limits) = c
        .pointer("/resources/limits")
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    let Some(resources) = obj_mut(c, "resources") else {
        return;
    };
    let requests = resources
        .entry("requests")
        .or_insert_with(|| Value::Object(Map::new()));
    if requests.is_null() {
        *requests = Value::Object(Map::new());
    }
    if let Some(req) = requests.as_object_mut() {
        for (k, v) in limits {
            req.entry(k).or_insert(v);
        }
    }
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent`, as
/// upstream decides from the parsed image reference.
pub(crate) fn image_pull_policy(image: &str) -> &'static str {
    if image.trim().is_empty() {
        // Upstream cannot parse it and falls back to no tag.
        return "IfNotPresent";
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    // The tag follows the last ':' after the last '/' (a ':' before it is
    // a registry port).
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.rsplit_once(':').map(|(_, t)| t);
    match tag {
        Some("latest") => "Always",
        Some(_) => "IfNotPresent",
        None if digest => "IfNotPresent",
        None => "Always",
    }
}
