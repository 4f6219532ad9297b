//! Container environment: `env` (values, fieldRef, resourceFieldRef,
//! configMapKeyRef, secretKeyRef), `envFrom`, and `$(VAR)` expansion in
//! values, command and args, the way kubelet builds them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, Service};

/// Where a referenced key comes from; the worker fetches these from the apiserver.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    ConfigMap(String),
    Secret(String),
}

/// ConfigMaps and Secrets a pod's env refers to, fetched beforehand; `None`
/// means the object does not exist.
pub type Lookups = BTreeMap<Source, Option<BTreeMap<String, String>>>;

/// Why a container cannot be started yet (kubelet reports
/// `CreateContainerConfigError` with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    KeyNotFound {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("unsupported fieldPath: {0}")]
    FieldPath(String),
}

/// Every ConfigMap/Secret the container's env and envFrom name.
pub fn sources(c: &Container) -> Vec<Source> {
    let mut out = Vec::new();
    for e in c.env.iter().flatten() {
        if let Some(vf) = &e.value_from {
            if let Some(r) = &vf.config_map_key_ref {
                out.push(Source::ConfigMap(r.name.clone()));
            }
            if let Some(r) = &vf.secret_key_ref {
                out.push(Source::Secret(r.name.clone()));
            }
        }
    }
    for ef in c.env_from.iter().flatten() {
        if let Some(r) = &ef.config_map_ref {
            out.push(Source::ConfigMap(r.name.clone()));
        }
        if let Some(r) = &ef.secret_ref {
            out.push(Source::Secret(r.name.clone()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Resolves a pod field for `fieldRef` (and the downward API volume).
pub fn field_value(pod: &Pod, path: &str, host_ip: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str, m: Option<&BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(m.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = map_key("metadata.labels['", meta.labels.as_ref()) {
        return Ok(v);
    }
    if let Some(v) = map_key("metadata.annotations['", meta.annotations.as_ref()) {
        return Ok(v);
    }
    let v = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => join_map(meta.labels.as_ref()),
        "metadata.annotations" => join_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => host_ip.to_string(),
        "status.hostIPs" => host_ip.to_string(),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.podIPs" => status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| {
                ips.iter()
                    .map(|i| i.ip.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        other => return Err(EnvError::FieldPath(other.to_string())),
    };
    Ok(v)
}

/// `key="value"` lines, as the downward API renders label/annotation maps.
fn join_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

/// A container resource for `resourceFieldRef`, in units of the divisor.
fn resource_value(c: &Container, resource: &str, divisor: Option<&str>) -> String {
    let res = c.resources.as_ref();
    let (kind, name) = resource.split_once('.').unwrap_or(("", resource));
    let map = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        _ => res.and_then(|r| r.requests.as_ref()),
    };
    let q = map.and_then(|m| m.get(name)).map(|q| q.0.clone());
    let value = q.as_deref().and_then(crate::resources::parse_quantity);
    let divisor = divisor
        .and_then(crate::resources::parse_quantity)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    match value {
        Some(v) => format!("{}", (v / divisor).ceil() as i64),
        // Unset limits default to the node's capacity upstream; 0 is the honest answer here.
        None => "0".into(),
    }
}

/// Docker-link style variables for services (`<NAME>_SERVICE_HOST`,
/// `<NAME>_PORT_<port>_<PROTO>`, ...), as kubelet injects them; headless
/// services have none.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut services: Vec<&Service> = services.iter().collect();
    services.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ip = match spec.cluster_ip.as_deref() {
            Some(ip) if !ip.is_empty() && ip != "None" => ip,
            _ => continue,
        };
        let name = svc
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .to_uppercase()
            .replace('-', "_");
        let ports = spec.ports.as_deref().unwrap_or_default();
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        if let Some(first) = ports.first() {
            out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        }
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!(
                        "{name}_SERVICE_PORT_{}",
                        pn.to_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let lower = proto.to_lowercase();
            let url = format!("{lower}://{ip}:{}", p.port);
            if i == 0 {
                out.push((format!("{name}_PORT"), url.clone()));
            }
            let prefix = format!("{name}_PORT_{}_{proto}", p.port);
            out.push((prefix.clone(), url));
            out.push((format!("{prefix}_PROTO"), lower));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    out
}

/// The container's environment in order, `$(VAR)` references expanded
/// against earlier entries; `base` (service variables) comes first and is
/// overridden by the container's own.
pub fn resolve(
    pod: &Pod,
    c: &Container,
    lookups: &Lookups,
    host_ip: &str,
    base: &[(String, String)],
) -> Result<Vec<(String, String)>, EnvError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out: Vec<(String, String)> = base.to_vec();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = out.iter_mut().find(|(ek, _)| *ek == k) {
            e.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for ef in c.env_from.iter().flatten() {
        let prefix = ef.prefix.clone().unwrap_or_default();
        let (src, optional) = if let Some(r) = &ef.config_map_ref {
            (
                Source::ConfigMap(r.name.clone()),
                r.optional.unwrap_or(false),
            )
        } else if let Some(r) = &ef.secret_ref {
            (Source::Secret(r.name.clone()), r.optional.unwrap_or(false))
        } else {
            continue;
        };
        match lookups.get(&src).cloned().flatten() {
            Some(data) => {
                for (k, v) in data {
                    set(&mut out, format!("{prefix}{k}"), v);
                }
            }
            None if optional => {}
            None => return Err(not_found(&src)),
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(vf) = &e.value_from {
            if let Some(f) = &vf.field_ref {
                field_value(pod, &f.field_path, host_ip)?
            } else if let Some(r) = &vf.resource_field_ref {
                resource_value(c, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()))
            } else if let Some(r) = &vf.config_map_key_ref {
                let src = Source::ConfigMap(r.name.clone());
                match key_of(lookups, &src, &r.key, &ns, r.optional.unwrap_or(false))? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(r) = &vf.secret_key_ref {
                let src = Source::Secret(r.name.clone());
                match key_of(lookups, &src, &r.key, &ns, r.optional.unwrap_or(false))? {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                String::new()
            }
        } else {
            let v = e.value.clone().unwrap_or_default();
            expand(&v, &out)
        };
        set(&mut out, e.name.clone(), value);
    }
    Ok(out)
}

fn not_found(src: &Source) -> EnvError {
    match src {
        Source::ConfigMap(n) => EnvError::ConfigMapNotFound(n.clone()),
        Source::Secret(n) => EnvError::SecretNotFound(n.clone()),
    }
}

fn key_of(
    lookups: &Lookups,
    src: &Source,
    key: &str,
    ns: &str,
    optional: bool,
) -> Result<Option<String>, EnvError> {
    match lookups.get(src).cloned().flatten() {
        Some(data) => match data.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(EnvError::KeyNotFound {
                kind: match src {
                    Source::ConfigMap(_) => "configmap",
                    Source::Secret(_) => "secret",
                },
                namespace: ns.to_string(),
                name: match src {
                    Source::ConfigMap(n) | Source::Secret(n) => n.clone(),
                },
                key: key.to_string(),
            }),
        },
        None if optional => Ok(None),
        None => Err(not_found(src)),
    }
}

/// Expands `$(NAME)` from `vars`; `$$` escapes a `$`; unknown references stay as written.
pub fn expand(input: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector,
    };

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn expansion() {
        let v = vars(&[("A", "x"), ("B", "y")]);
        assert_eq!(expand("$(A)-$(B)", &v), "x-y");
        assert_eq!(expand("$$(A)", &v), "$(A)");
        assert_eq!(expand("$(C) $", &v), "$(C) $");
        assert_eq!(expand("$(A", &v), "$(A");
        assert_eq!(expand("plain", &v), "plain");
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"podIP": "10.42.0.5"},
        }))
        .unwrap()
    }

    #[test]
    fn resolves_fields_configmaps_and_order() {
        let c = Container {
            name: "c".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                prefix: Some("CFG_".into()),
                ..Default::default()
            }]),
            env: Some(vec![
                EnvVar {
                    name: "POD".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "GREETING".into(),
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cfg".into(),
                            key: "greeting".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "MSG".into(),
                    value: Some("$(GREETING) from $(POD) on $(NODE)".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let mut lookups = Lookups::new();
        lookups.insert(
            Source::ConfigMap("cfg".into()),
            Some([("greeting".to_string(), "hi".to_string())].into()),
        );
        let env = resolve(&pod(), &c, &lookups, "192.168.1.2", &[]).unwrap();
        assert_eq!(
            env,
            vars(&[
                ("CFG_greeting", "hi"),
                ("POD", "p"),
                ("GREETING", "hi"),
                ("MSG", "hi from p on $(NODE)"),
            ])
        );
        assert_eq!(sources(&c), vec![Source::ConfigMap("cfg".into())]);

        lookups.insert(Source::ConfigMap("cfg".into()), None);
        assert_eq!(
            resolve(&pod(), &c, &lookups, "h", &[]),
            Err(EnvError::ConfigMapNotFound("cfg".into()))
        );
    }

    #[test]
    fn service_links() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "my-svc"},
            "spec": {"clusterIP": "10.43.0.20", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"port": 53, "protocol": "UDP"},
            ]},
        }))
        .unwrap();
        let headless: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hl"}, "spec": {"clusterIP": "None"},
        }))
        .unwrap();
        let env = service_env(&[svc, headless]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MY_SVC_SERVICE_HOST"), Some("10.43.0.20"));
        assert_eq!(get("MY_SVC_SERVICE_PORT"), Some("80"));
        assert_eq!(get("MY_SVC_SERVICE_PORT_HTTP"), Some("80"));
        assert_eq!(get("MY_SVC_PORT"), Some("tcp://10.43.0.20:80"));
        assert_eq!(get("MY_SVC_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("MY_SVC_PORT_53_UDP_ADDR"), Some("10.43.0.20"));
        assert!(get("HL_SERVICE_HOST").is_none());
    }

    #[test]
    fn field_paths() {
        let p = pod();
        assert_eq!(
            field_value(&p, "metadata.labels['app']", "h").unwrap(),
            "web"
        );
        assert_eq!(field_value(&p, "status.podIP", "h").unwrap(), "10.42.0.5");
        assert_eq!(field_value(&p, "status.hostIP", "h").unwrap(), "h");
        assert!(field_value(&p, "spec.bogus", "h").is_err());
    }
}
