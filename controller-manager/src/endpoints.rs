//! The Endpoints controller: the core/v1 Endpoints object of the same name
//! as every Service with a selector, its subsets grouping pod addresses by
//! the ports they serve, ready ones under `addresses` and the rest under
//! `notReadyAddresses`. Terminating pods are left out unless the Service
//! publishes not-ready addresses. When the Service goes, so do its Endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use crate::Error;
use crate::backends::{self, endpoint_labels, managed_selector, selects};
use crate::framework::{
    Action, Change, Ctx, Events, Informer, WorkQueue, ignore_not_found, key_of, run_workers,
    split_key,
};

/// Upstream caps an Endpoints object at this many addresses and says so.
pub const MAX_ADDRESSES: usize = 1000;
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        events: ctx.events.clone(),
        services: ctx.informers.get::<Service>(),
        pods: ctx.informers.get::<Pod>(),
        endpoints: ctx.informers.get::<Endpoints>(),
    });
    let queue = WorkQueue::new();
    backends::watch(&ctl.services, &ctl.pods, &queue);
    {
        // An Endpoints edited or deleted behind our back is rewritten.
        let q = queue.clone();
        ctl.endpoints.on_change(move |ch| match ch {
            Change::Applied { old: Some(_), new } => q.add(key_of(*new)),
            Change::Applied { .. } => {}
            Change::Deleted(e) => q.add(key_of(*e)),
        });
    }
    let c = ctl.clone();
    run_workers(
        ctx,
        "endpoint",
        queue,
        ctx.config.concurrent_syncs,
        move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        },
    );
    Ok(())
}

struct Controller {
    client: Client,
    events: Events,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    endpoints: Arc<Informer<Endpoints>>,
}

impl Controller {
    async fn sync(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let current = self.endpoints.get(Some(ns), name);
        let Some(svc) = self.services.get(Some(ns), name) else {
            if current.is_some() {
                ignore_not_found(api.delete(name, &DeleteParams::default()).await)?;
            }
            return Ok(Action::Done);
        };
        let Some(selector) = managed_selector(&svc) else {
            return Ok(Action::Done);
        };
        if svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let pods: Vec<Arc<Pod>> = self
            .pods
            .in_namespace(ns)
            .into_iter()
            .filter(|p| selects(selector, p.metadata.labels.as_ref()))
            .collect();
        let (subsets, truncated) = subsets(&svc, &pods);
        let labels = endpoint_labels(&svc);
        let mut annotations = current
            .as_ref()
            .and_then(|c| c.metadata.annotations.clone())
            .unwrap_or_default();
        if truncated {
            annotations.insert(OVER_CAPACITY.into(), "truncated".into());
        } else {
            annotations.remove(OVER_CAPACITY);
        }
        if let Some(cur) = &current
            && cur.subsets.as_deref().unwrap_or_default() == subsets.as_slice()
            && cur.metadata.labels.clone().unwrap_or_default() == labels
            && cur.metadata.annotations.clone().unwrap_or_default() == annotations
        {
            return Ok(Action::Done);
        }
        let mut ep = match &current {
            Some(c) => (**c).clone(),
            None => Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(ns.to_string()),
                    ..Default::default()
                },
                subsets: None,
            },
        };
        ep.metadata.labels = (!labels.is_empty()).then_some(labels);
        ep.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
        ep.subsets = (!subsets.is_empty()).then_some(subsets);
        let res = match current {
            Some(_) => api.replace(name, &PostParams::default(), &ep).await,
            None => api.create(&PostParams::default(), &ep).await,
        };
        match res {
            Ok(_) => Ok(Action::Done),
            Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("terminat") => {
                Ok(Action::Done)
            }
            // Raced the cache (or a create of the same name): retried quietly.
            Err(kube::Error::Api(e)) if e.code == 409 => Err(kube::Error::Api(e).into()),
            Err(e) => {
                let reason = if ep.metadata.resource_version.is_some() {
                    "FailedToUpdateEndpoint"
                } else {
                    "FailedToCreateEndpoint"
                };
                self.events.warning(
                    svc.as_ref(),
                    reason,
                    format!("Failed to update endpoint {key}: {e}"),
                );
                Err(e.into())
            }
        }
    }
}

type PortKey = Vec<(String, i32, String)>;

/// The subsets of a Service's Endpoints (and whether addresses past
/// [`MAX_ADDRESSES`] were dropped): one subset per distinct port set,
/// addresses ordered by IP, subsets by their ports, so an unchanged set of
/// pods always gives the same object.
pub fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> (Vec<EndpointSubset>, bool) {
    let spec = svc.spec.as_ref();
    let publish_not_ready = spec
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let service_ports = spec.and_then(|s| s.ports.clone()).unwrap_or_default();
    let family = backends::families(svc).remove(0);
    let headless = backends::is_headless(svc);
    // port set -> (ports, ready, not ready)
    type Group = (
        Vec<EndpointPort>,
        Vec<EndpointAddress>,
        Vec<EndpointAddress>,
    );
    let mut groups: BTreeMap<PortKey, Group> = BTreeMap::new();
    for pod in pods {
        if !backends::pod_in_endpoints(pod, publish_not_ready) {
            continue;
        }
        let Some(ip) = backends::pod_ip(pod, &family) else {
            continue;
        };
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: sp.name.clone().filter(|n| !n.is_empty()),
                    port: backends::find_port(pod, sp)?,
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        // A pod serving none of the ports is no endpoint, except of a
        // headless Service without ports (DNS only).
        if ports.is_empty() && !(service_ports.is_empty() && headless) {
            continue;
        }
        let address = EndpointAddress {
            ip,
            hostname: backends::hostname_for(pod, svc),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(backends::target_ref(pod)),
        };
        let key: PortKey = {
            let mut k: PortKey = ports
                .iter()
                .map(|p| {
                    (
                        p.name.clone().unwrap_or_default(),
                        p.port,
                        p.protocol.clone().unwrap_or_default(),
                    )
                })
                .collect();
            k.sort();
            k
        };
        let g = groups.entry(key).or_insert_with(|| {
            let mut ports = ports;
            ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
            (ports, Vec::new(), Vec::new())
        });
        if publish_not_ready || backends::ready(pod) {
            g.1.push(address);
        } else {
            g.2.push(address);
        }
    }
    let mut budget = MAX_ADDRESSES;
    let mut truncated = false;
    let mut keep = |v: &mut Vec<EndpointAddress>| {
        v.sort_by(|a, b| {
            (&a.ip, a.target_ref.as_ref().and_then(|r| r.name.as_ref()))
                .cmp(&(&b.ip, b.target_ref.as_ref().and_then(|r| r.name.as_ref())))
        });
        if v.len() > budget {
            v.truncate(budget);
            truncated = true;
        }
        budget -= v.len();
    };
    let mut out = Vec::new();
    for (_, (ports, mut ready, mut not_ready)) in groups {
        // Ready addresses are kept first when truncating, as upstream.
        keep(&mut ready);
        keep(&mut not_ready);
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        out.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        });
    }
    (out, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::tests::{pod, service};

    fn ips(v: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        v.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_addresses_grouped_by_ports() {
        let svc = service(serde_json::json!([{"name": "http", "port": 80, "targetPort": "web"}]));
        let pods: Vec<Arc<Pod>> = vec![
            pod("b", "10.0.0.2", true, &[("web", 8080)]),
            pod("a", "10.0.0.1", true, &[("web", 8080)]),
            pod("c", "10.0.0.3", false, &[("web", 8080)]),
            pod("d", "10.0.0.4", true, &[("web", 9090)]),
            pod("e", "10.0.0.5", true, &[("other", 1)]),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let (subsets, truncated) = subsets(&svc, &pods);
        assert!(!truncated);
        assert_eq!(subsets.len(), 2);
        let s8080 = subsets
            .iter()
            .find(|s| s.ports.as_ref().unwrap()[0].port == 8080)
            .unwrap();
        assert_eq!(ips(&s8080.addresses), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(ips(&s8080.not_ready_addresses), ["10.0.0.3"]);
        let p = &s8080.ports.as_ref().unwrap()[0];
        assert_eq!(
            (p.name.as_deref(), p.protocol.as_deref()),
            (Some("http"), Some("TCP"))
        );
        let a = &s8080.addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("node-a"));
        assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
    }

    #[test]
    fn terminating_pods_only_when_publishing_not_ready() {
        let svc = service(serde_json::json!([{"port": 80}]));
        let mut p = pod("a", "10.0.0.1", true, &[]);
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let pods = vec![Arc::new(p), Arc::new(pod("b", "10.0.0.2", false, &[]))];
        let (s, _) = subsets(&svc, &pods);
        assert_eq!(s.len(), 1);
        assert!(s[0].addresses.is_none());
        assert_eq!(ips(&s[0].not_ready_addresses), ["10.0.0.2"]);
        let mut publish = svc.clone();
        publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let (s, _) = subsets(&publish, &pods);
        assert_eq!(ips(&s[0].addresses), ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn headless_without_ports_and_truncation() {
        let mut svc = service(serde_json::json!([]));
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let pods: Vec<Arc<Pod>> = (0..1005)
            .map(|i| {
                Arc::new(pod(
                    &format!("p{i}"),
                    &format!("10.1.{}.{}", i / 250, i % 250),
                    true,
                    &[],
                ))
            })
            .collect();
        let (s, truncated) = subsets(&svc, &pods);
        assert!(truncated);
        assert_eq!(s.len(), 1);
        assert!(s[0].ports.is_none());
        assert_eq!(s[0].addresses.as_ref().unwrap().len(), MAX_ADDRESSES);
        assert!(endpoint_labels(&svc).contains_key(backends::HEADLESS_LABEL));
    }
}
