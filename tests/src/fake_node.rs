//! A stand-in for nodes in controller tests, where no node agent or
//! scheduler runs: registers Node objects with Ready status and renewed
//! Leases, binds pending pods to them (`pods/binding`), reports bound pods
//! Running and Ready (or Succeeded, for Job pods) through `pods/status`,
//! and finishes the graceful deletion of pods it "runs". Each pod gets an
//! IP of its own; annotating a running pod `fake-node/ready=false` makes it
//! report not ready (its readiness probe "fails") until the annotation goes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};

/// What the fake nodes do; flip the flags while a test runs.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Stop reporting new pods ready (to hold a rollout mid-way).
    pub hold_ready: Arc<AtomicBool>,
    /// Nodes whose Lease is no longer renewed (to make them "die").
    pub dead: Arc<std::sync::Mutex<Vec<String>>>,
}

pub struct FakeNodes {
    pub behaviour: Behaviour,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeNodes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNodes {
    /// Registers `names` as Ready nodes (with `taints` per node) and starts acting for them.
    pub async fn start(
        client: kube::Client,
        names: &[&str],
        taints: &[(&str, serde_json::Value)],
    ) -> Result<Self> {
        let nodes: Api<Node> = Api::all(client.clone());
        for n in names {
            let mut node: Node = serde_json::from_value(serde_json::json!({
                "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n, "kubernetes.io/os": "linux"}},
                "spec": {},
            }))?;
            if let Some((_, t)) = taints.iter().find(|(name, _)| name == n) {
                node.spec = Some(serde_json::from_value(serde_json::json!({"taints": t}))?);
            }
            nodes.create(&PostParams::default(), &node).await?;
            set_node_ready(&nodes, n).await?;
        }
        let behaviour = Behaviour::default();
        let b = behaviour.clone();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                if let Err(e) = tick(&client, &names, &b, i).await {
                    eprintln!("fake node: {e:#}");
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Self { behaviour, task })
    }
}

async fn set_node_ready(nodes: &Api<Node>, name: &str) -> Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = serde_json::json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "fake node is ready", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

async fn renew_lease(client: &kube::Client, node: &str) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    match leases.get_opt(node).await? {
        Some(_) => {
            let patch = serde_json::json!({"spec": {"renewTime": now}});
            leases
                .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.into()),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

/// The annotation that makes a running pod's readiness probe fail.
pub const NOT_READY_ANNOTATION: &str = "fake-node/ready";

/// A pod IP no other pod of this test process got.
fn next_pod_ip() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("10.42.{}.{}", (n / 250) % 256, n % 250 + 2)
}

fn wants_ready(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NOT_READY_ANNOTATION))
        .is_none_or(|v| v != "false")
}

fn reports_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn owned_by_job(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job" && o.controller == Some(true))
}

async fn tick(client: &kube::Client, names: &[String], b: &Behaviour, i: u64) -> Result<()> {
    if i.is_multiple_of(10) {
        let dead = b.dead.lock().map(|d| d.clone()).unwrap_or_default();
        for n in names.iter().filter(|n| !dead.contains(n)) {
            renew_lease(client, n).await?;
        }
    }
    let dead = b.dead.lock().map(|d| d.clone()).unwrap_or_default();
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods.list(&ListParams::default()).await?;
    let mut rr = i as usize;
    for p in list.items {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        match node {
            None => {
                // Play scheduler: bind round-robin to a live node.
                let live: Vec<&String> = names.iter().filter(|n| !dead.contains(n)).collect();
                if live.is_empty() || p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                rr += 1;
                let pinned = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.affinity.as_ref())
                    .and_then(|a| a.node_affinity.as_ref())
                    .and_then(|n| {
                        n.required_during_scheduling_ignored_during_execution
                            .as_ref()
                    })
                    .and_then(|r| {
                        r.node_selector_terms
                            .iter()
                            .flat_map(|t| t.match_fields.iter().flatten())
                            .find(|f| f.key == "metadata.name")
                            .and_then(|f| f.values.as_ref()?.first().cloned())
                    });
                // DaemonSet pods name their node; others go round-robin.
                let target = match pinned {
                    Some(n) if live.contains(&&n) => n,
                    Some(_) => continue,
                    None => live[rr % live.len()].clone(),
                };
                let binding = Binding {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..Default::default()
                    },
                    target: ObjectReference {
                        kind: Some("Node".into()),
                        api_version: Some("v1".into()),
                        name: Some(target),
                        ..Default::default()
                    },
                };
                let _ = api
                    .create_subresource::<Binding, serde_json::Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await;
            }
            Some(n) if names.contains(&n) && !dead.contains(&n) => {
                if p.metadata.deletion_timestamp.is_some() {
                    // The "containers" stopped at once.
                    let _ = api
                        .delete(&name, &DeleteParams::default().grace_period(0))
                        .await;
                    continue;
                }
                let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                if phase.as_deref() == Some("Running") && wants_ready(&p) != reports_ready(&p) {
                    let now = k8s_openapi::jiff::Timestamp::now().to_string();
                    let ready = if wants_ready(&p) { "True" } else { "False" };
                    let mut conds: Vec<serde_json::Value> = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .into_iter()
                        .flatten()
                        .filter(|c| c.type_ != "Ready" && c.type_ != "ContainersReady")
                        .filter_map(|c| serde_json::to_value(c).ok())
                        .collect();
                    for t in ["ContainersReady", "Ready"] {
                        conds.push(serde_json::json!({"type": t, "status": ready, "lastTransitionTime": now}));
                    }
                    let status = serde_json::json!({"status": {"conditions": conds}});
                    let _ = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await;
                    continue;
                }
                if matches!(phase.as_deref(), Some("Running" | "Succeeded" | "Failed")) {
                    continue;
                }
                if b.hold_ready.load(Ordering::Acquire) {
                    continue;
                }
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let status = if owned_by_job(&p) {
                    let fail = p
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("fake-node/fail"))
                        .is_some();
                    serde_json::json!({"status": {"phase": if fail { "Failed" } else { "Succeeded" },
                        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}]}})
                } else {
                    let ip = next_pod_ip();
                    let ready = if wants_ready(&p) { "True" } else { "False" };
                    serde_json::json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                        "startTime": now,
                        "conditions": [
                            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                            {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                            {"type": "Ready", "status": ready, "lastTransitionTime": now}]}})
                };
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Labels as a map (test convenience).
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
