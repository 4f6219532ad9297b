//! Node IPAM: gives every node a pod CIDR (`spec.podCIDR`/`podCIDRs`), a
//! `/--node-cidr-mask-size` slice of `--cluster-cidr`. What is taken is
//! always read from the nodes themselves (the shared cache, listed before
//! any allocation), so a restart never hands out a range twice.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::framework::{Action, Change, Ctx, Events, Informer, WorkQueue, run_workers};

/// An IPv4 CIDR split into equal subnets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pool {
    base: u32,
    prefix: u8,
    mask: u8,
}

impl Pool {
    pub fn new(cidr: &str, mask: u8) -> Result<Self, String> {
        let (ip, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} is not a CIDR"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{cidr:?}: only IPv4 cluster CIDRs are supported"))?;
        let prefix: u8 = len
            .parse()
            .map_err(|_| format!("{cidr:?}: bad prefix length"))?;
        if prefix > 32 || mask > 32 || mask < prefix {
            return Err(format!("node mask /{mask} does not fit in {cidr}"));
        }
        let net = if prefix == 0 {
            0
        } else {
            u32::from(ip) & (u32::MAX << (32 - prefix))
        };
        Ok(Self {
            base: net,
            prefix,
            mask,
        })
    }

    pub fn size(&self) -> u64 {
        1u64 << (self.mask - self.prefix)
    }

    pub fn subnet(&self, i: u64) -> String {
        let step = if self.mask == 32 {
            1u64
        } else {
            1u64 << (32 - self.mask)
        };
        let addr = Ipv4Addr::from((u64::from(self.base) + i * step) as u32);
        format!("{addr}/{}", self.mask)
    }

    /// The first subnet not in `taken`.
    pub fn first_free(&self, taken: &HashSet<String>) -> Option<String> {
        (0..self.size())
            .map(|i| self.subnet(i))
            .find(|s| !taken.contains(s))
    }
}

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let Some(cidr) = ctx.config.cluster_cidr.clone() else {
        tracing::info!("no --cluster-cidr; node IPAM is off");
        return Ok(());
    };
    let pool = Pool::new(&cidr, ctx.config.node_cidr_mask_size).map_err(|msg| Error::Invalid {
        what: "--cluster-cidr",
        msg,
    })?;
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        events: ctx.events.clone(),
        nodes: ctx.informers.get::<Node>(),
        pool,
        pending: Mutex::new(HashSet::new()),
    });
    let queue = WorkQueue::new();
    {
        let q = queue.clone();
        ctl.nodes.on_change(move |ch| {
            if let Change::Applied { new, .. } = ch
                && new
                    .spec
                    .as_ref()
                    .and_then(|s| s.pod_cidr.as_ref())
                    .is_none()
            {
                q.add(new.name_any());
            }
        });
    }
    let c = ctl.clone();
    // One worker: allocations are serialized.
    run_workers(ctx, "nodeipam", queue, 1, move |name| {
        let c = c.clone();
        async move { c.sync(&name).await }
    });
    Ok(())
}

struct Controller {
    client: Client,
    events: Events,
    nodes: Arc<Informer<Node>>,
    pool: Pool,
    /// Handed out but perhaps not yet seen in the cache.
    pending: Mutex<HashSet<String>>,
}

impl Controller {
    async fn sync(&self, name: &str) -> Result<Action, Error> {
        let Some(node) = self.nodes.get(None, name) else {
            return Ok(Action::Done);
        };
        if node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_ref())
            .is_some()
        {
            return Ok(Action::Done);
        }
        // The cache may not show an allocation this worker just made (the
        // node can be queued twice before its update arrives): ask the API,
        // and write with its resourceVersion so a race ends in a retry.
        let api: Api<Node> = Api::all(self.client.clone());
        let Some(fresh) = api.get_opt(name).await? else {
            return Ok(Action::Done);
        };
        if fresh
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_ref())
            .is_some()
        {
            return Ok(Action::Done);
        }
        let mut taken: HashSet<String> = self
            .nodes
            .store
            .state()
            .iter()
            .flat_map(|n| {
                let s = n.spec.clone().unwrap_or_default();
                s.pod_cidrs
                    .unwrap_or_default()
                    .into_iter()
                    .chain(s.pod_cidr)
            })
            .collect();
        if let Ok(p) = self.pending.lock() {
            taken.extend(p.iter().cloned());
        }
        let Some(cidr) = self.pool.first_free(&taken) else {
            self.events.warning(
                node.as_ref(),
                "CIDRNotAvailable",
                format!("Node {name} status is now: CIDRNotAvailable"),
            );
            return Ok(Action::RequeueAfter(std::time::Duration::from_secs(30)));
        };
        if let Ok(mut p) = self.pending.lock() {
            p.insert(cidr.clone());
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": fresh.metadata.resource_version},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        });
        if let Err(e) = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            // Not handed out after all (e.g. a conflict; the retry picks again).
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&cidr);
            }
            return Err(e.into());
        }
        self.events.normal(
            node.as_ref(),
            "CIDRAssignmentSucceeded",
            format!("Assigned {cidr} to node {name}"),
        );
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cluster_cidr_into_node_ranges() {
        let p = Pool::new("10.42.0.0/16", 24).unwrap();
        assert_eq!(p.size(), 256);
        assert_eq!(p.subnet(0), "10.42.0.0/24");
        assert_eq!(p.subnet(255), "10.42.255.0/24");
        let taken: HashSet<String> = ["10.42.0.0/24".to_string(), "10.42.1.0/24".into()].into();
        assert_eq!(p.first_free(&taken).as_deref(), Some("10.42.2.0/24"));
        assert!(Pool::new("10.42.0.0/24", 16).is_err());
        assert!(Pool::new("fd00::/8", 64).is_err());
        let full: HashSet<String> = (0..4)
            .map(|i| Pool::new("10.0.0.0/30", 32).unwrap().subnet(i))
            .collect();
        assert_eq!(
            Pool::new("10.0.0.0/30", 32).unwrap().first_free(&full),
            None
        );
    }
}
