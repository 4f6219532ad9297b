//! Pod garbage collection, every 20 s from the caches: finished pods beyond
//! `--terminated-pod-gc-threshold` (oldest first), pods bound to nodes that
//! no longer exist (confirmed with a GET), and terminating pods that were
//! never scheduled (no kubelet will ever finish them).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::framework::{Action, Change, Ctx, Informer, WorkQueue, run_workers};

const PERIOD: Duration = Duration::from_secs(20);

pub fn start(ctx: &Ctx) -> Result<(), Error> {
    let ctl = Arc::new(Controller {
        client: ctx.client.clone(),
        pods: ctx.informers.get::<Pod>(),
        nodes: ctx.informers.get::<Node>(),
        threshold: ctx.config.terminated_pod_gc_threshold,
    });
    let queue = WorkQueue::new();
    queue.add("podgc");
    // Besides the period, sweep when a node goes or a pod finishes.
    {
        let q = queue.clone();
        ctl.nodes.on_change(move |ch| {
            if let Change::Deleted(_) = ch {
                q.add("podgc");
            }
        });
    }
    {
        let q = queue.clone();
        ctl.pods.on_change(move |ch| {
            if let Change::Applied { new, .. } = ch
                && finished(new)
            {
                q.add("podgc");
            }
        });
    }
    run_workers(ctx, "podgc", queue, 1, move |_| {
        let c = ctl.clone();
        async move {
            c.sweep().await?;
            Ok(Action::RequeueAfter(PERIOD))
        }
    });
    Ok(())
}

struct Controller {
    client: Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    threshold: usize,
}

fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Controller {
    async fn force_delete(&self, p: &Pod) -> Result<(), Error> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &p.namespace().unwrap_or_default());
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(kube::api::Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&p.name_any(), &dp).await {
            Ok(_) => {
                tracing::info!(pod = %p.name_any(), namespace = ?p.namespace(), "garbage-collected pod");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn sweep(&self) -> Result<(), Error> {
        let pods = self.pods.store.state();
        let mut done: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| finished(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        if self.threshold > 0 && done.len() > self.threshold {
            done.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let excess = done.len() - self.threshold;
            for p in done.into_iter().take(excess) {
                self.force_delete(p).await?;
            }
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        for p in &pods {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty());
            let gone = match &node {
                // The cache may lag a just-created node: ask.
                Some(n) => self.nodes.get(None, n).is_none() && nodes.get_opt(n).await?.is_none(),
                None => p.metadata.deletion_timestamp.is_some(),
            };
            if gone {
                self.force_delete(p).await?;
            }
        }
        Ok(())
    }
}
