//! k3rs-controller-manager against a real k3rs-apiserver on the SQLite shim,
//! driven with the real kubectl 1.33. No node agent or scheduler runs: the
//! fake nodes bind pods and report them Running/Ready (see `fake_node`).

use std::future::Future;
use std::time::{Duration, Instant};

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::fake_node::FakeNodes;
use k3rs_e2e::{Backend, TestStore};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const K: &str = "1.33";

struct Env {
    cp: ControlPlane,
    client: kube::Client,
    _nodes: Option<FakeNodes>,
    cm: tokio::task::JoinHandle<()>,
    clock: k3rs_controller_manager::Clock,
    _store: TestStore,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cm.abort();
    }
}

async fn env(nodes: &[&str]) -> (Env, Option<k3rs_e2e::fake_node::Behaviour>) {
    env_with(nodes, |_| {}).await
}

async fn env_with(
    nodes: &[&str],
    tune: impl FnOnce(&mut k3rs_controller_manager::Config),
) -> (Env, Option<k3rs_e2e::fake_node::Behaviour>) {
    env_tainted(nodes, &[], tune).await
}

async fn env_tainted(
    nodes: &[&str],
    taints: &[(&str, serde_json::Value)],
    tune: impl FnOnce(&mut k3rs_controller_manager::Config),
) -> (Env, Option<k3rs_e2e::fake_node::Behaviour>) {
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let kc = kube::config::Kubeconfig::read_from(&cp.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let mut cfg = k3rs_controller_manager::Config::for_kubeconfig(&cp.kubeconfig);
    tune(&mut cfg);
    let clock = cfg.clock.clone();
    let cm = tokio::spawn(async move {
        if let Err(e) = k3rs_controller_manager::run_until(cfg, std::future::pending()).await {
            panic!("controller manager: {e}");
        }
    });
    let fake = if nodes.is_empty() {
        None
    } else {
        Some(
            FakeNodes::start(client.clone(), nodes, taints)
                .await
                .expect("fake nodes"),
        )
    };
    let behaviour = fake.as_ref().map(|f| f.behaviour.clone());
    (
        Env {
            cp,
            client,
            _nodes: fake,
            cm,
            clock,
            _store: store,
        },
        behaviour,
    )
}

/// Polls `f` until it yields `Some`, failing with `what` after `secs`.
async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Env {
    async fn k(&self, args: &[&str]) -> String {
        self.cp.kubectl(K, args).await
    }

    async fn k_ok(&self, args: &[&str]) -> bool {
        self.cp
            .kubectl_with(K, args, None, &[])
            .await
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    async fn replica_sets(&self, ns: &str) -> Vec<ReplicaSet> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        api.list(&ListParams::default()).await.unwrap().items
    }

    async fn pods(&self, ns: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        api.list(&ListParams::default()).await.unwrap().items
    }
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn image_of(rs: &ReplicaSet) -> String {
    rs.spec
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn revision(rs: &ReplicaSet) -> String {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn every_namespace_gets_default_service_account_and_root_ca() {
    // With leader election: the controllers run once the Lease is ours.
    let (env, _) = env_with(&[], |c| c.leader_elect = true).await;
    env.k(&["create", "namespace", "team-a"]).await;
    for ns in ["default", "kube-system", "team-a"] {
        wait_for(&format!("default SA in {ns}"), 30, || async {
            env.k_ok(&["get", "serviceaccount", "default", "-n", ns])
                .await
                .then_some(())
        })
        .await;
        let ca = wait_for(&format!("kube-root-ca.crt in {ns}"), 30, || async {
            let out = env
                .cp
                .kubectl_with(
                    K,
                    &[
                        "get",
                        "configmap",
                        "kube-root-ca.crt",
                        "-n",
                        ns,
                        "-o",
                        "jsonpath={.data.ca\\.crt}",
                    ],
                    None,
                    &[],
                )
                .await
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .await;
        let (_, want) = env.cp.server_and_ca().unwrap();
        assert_eq!(ca.trim(), want.trim(), "ca.crt in {ns}");
    }
    let holder = env
        .k(&[
            "get",
            "lease",
            "kube-controller-manager",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .await;
    assert!(!holder.is_empty(), "leader lease held");
    // Deleting the default SA brings it back; editing the CA bundle is undone.
    env.k(&["delete", "serviceaccount", "default", "-n", "team-a"])
        .await;
    wait_for("default SA recreated", 30, || async {
        env.k_ok(&["get", "serviceaccount", "default", "-n", "team-a"])
            .await
            .then_some(())
    })
    .await;
    env.k(&[
        "patch",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "team-a",
        "--type=merge",
        "-p",
        r#"{"data":{"ca.crt":"tampered"}}"#,
    ])
    .await;
    wait_for("ca.crt restored", 30, || async {
        let out = env
            .k(&[
                "get",
                "configmap",
                "kube-root-ca.crt",
                "-n",
                "team-a",
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ])
            .await;
        out.contains("BEGIN CERTIFICATE").then_some(())
    })
    .await;
}

const RS_YAML: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: frontend
spec:
  replicas: 3
  selector:
    matchLabels: {tier: frontend}
  template:
    metadata:
      labels: {tier: frontend}
    spec:
      containers:
      - name: app
        image: nginx:1.25
"#;

#[tokio::test]
async fn replicaset_creates_adopts_scales_and_reports_status() {
    let (env, _) = env(&["node-a", "node-b"]).await;
    // An orphan pod with matching labels is adopted instead of a new pod.
    env.cp
        .kubectl_in(
            K,
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\n  labels: {tier: frontend}\nspec:\n  containers:\n  - name: app\n    image: nginx:1.25\n"),
        )
        .await;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(RS_YAML))
        .await;
    wait_for("3 ready replicas", 60, || async {
        let out = env
            .k(&["get", "rs", "frontend", "-o", "jsonpath={.status.readyReplicas}/{.status.availableReplicas}/{.status.fullyLabeledReplicas}/{.status.observedGeneration}"])
            .await;
        (out == "3/3/3/1").then_some(())
    })
    .await;
    let pods = env.pods("default").await;
    assert_eq!(
        pods.len(),
        3,
        "{:?}",
        pods.iter().map(|p| &p.metadata.name).collect::<Vec<_>>()
    );
    assert!(
        pods.iter()
            .any(|p| p.metadata.name.as_deref() == Some("stray"))
    );
    for p in &pods {
        let r = &p.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str()),
            ("ReplicaSet", "frontend")
        );
        assert_eq!(r.controller, Some(true));
        assert_eq!(r.block_owner_deletion, Some(true));
    }
    // Scale down: one pod goes, with an event.
    env.k(&["scale", "rs", "frontend", "--replicas=1"]).await;
    wait_for("scaled to 1", 60, || async {
        let pods = env.pods("default").await;
        (pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count()
            == 1)
            .then_some(())
    })
    .await;
    wait_for("events", 30, || async {
        let ev = env
            .k(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=frontend",
            ])
            .await;
        (ev.contains("SuccessfulCreate") && ev.contains("SuccessfulDelete")).then_some(())
    })
    .await;
    // A pod relabelled out of the selector is released and replaced.
    let kept = env
        .pods("default")
        .await
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .unwrap();
    let kept = kept.metadata.name.unwrap();
    env.k(&["label", "pod", &kept, "tier=other", "--overwrite"])
        .await;
    wait_for("released + replaced", 60, || async {
        let pods = env.pods("default").await;
        let released = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(kept.as_str()))?;
        let free = released
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.is_empty());
        let owned = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| !o.is_empty())
            })
            .count();
        (free && owned == 1).then_some(())
    })
    .await;
}

const DEPLOY_YAML: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
"#;

#[tokio::test]
async fn deployment_rolls_out_updates_and_rolls_back() {
    let (env, behaviour) = env(&["node-a", "node-b"]).await;
    let behaviour = behaviour.unwrap();
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(DEPLOY_YAML))
        .await;
    let out = env
        .k(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let sets = env.replica_sets("default").await;
    assert_eq!(sets.len(), 1);
    let first = &sets[0];
    let hash = first.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_eq!(
        first.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    assert_eq!(revision(first), "1");
    let pods = env.pods("default").await;
    assert_eq!(pods.len(), 3);
    assert!(
        pods.iter()
            .all(|p| p.metadata.labels.as_ref().unwrap()["pod-template-hash"] == hash)
    );
    let d: Deployment = Api::namespaced(env.client.clone(), "default")
        .get("web")
        .await
        .unwrap();
    let st = d.status.unwrap();
    assert_eq!(
        (
            st.updated_replicas,
            st.ready_replicas,
            st.available_replicas
        ),
        (Some(3), Some(3), Some(3))
    );
    let conds = st.conditions.unwrap();
    let reason = |t: &str| {
        conds
            .iter()
            .find(|c| c.type_ == t)
            .and_then(|c| c.reason.clone())
    };
    assert_eq!(
        reason("Available").as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        reason("Progressing").as_deref(),
        Some("NewReplicaSetAvailable")
    );
    let ev = env
        .k(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
        ])
        .await;
    assert!(
        ev.contains(&format!("Scaled up replica set web-{hash} to 3 from 0")),
        "{ev}"
    );

    // Update with new pods held unready: maxUnavailable 0 keeps all 3 old
    // pods while maxSurge 1 allows exactly one new one.
    behaviour
        .hold_ready
        .store(true, std::sync::atomic::Ordering::Release);
    env.k(&["set", "image", "deployment/web", "nginx=nginx:1.26"])
        .await;
    wait_for("surge pod", 30, || async {
        let sets = env.replica_sets("default").await;
        let new = sets.iter().find(|rs| image_of(rs) == "nginx:1.26")?;
        (rs_replicas(new) == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sets = env.replica_sets("default").await;
    let old = sets.iter().find(|rs| image_of(rs) == "nginx:1.25").unwrap();
    let new = sets.iter().find(|rs| image_of(rs) == "nginx:1.26").unwrap();
    assert_eq!(
        (rs_replicas(old), rs_replicas(new)),
        (3, 1),
        "maxUnavailable 0 / maxSurge 1 respected"
    );
    assert_eq!(revision(new), "2");
    behaviour
        .hold_ready
        .store(false, std::sync::atomic::Ordering::Release);
    let out = env
        .k(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let sets = env.replica_sets("default").await;
    let old = sets.iter().find(|rs| image_of(rs) == "nginx:1.25").unwrap();
    let new = sets.iter().find(|rs| image_of(rs) == "nginx:1.26").unwrap();
    assert_eq!((rs_replicas(old), rs_replicas(new)), (0, 3));
    let history = env.k(&["rollout", "history", "deployment/web"]).await;
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // kubectl rollout undo copies the old template back: the old RS is current again.
    env.k(&["rollout", "undo", "deployment/web"]).await;
    let out = env
        .k(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let sets = env.replica_sets("default").await;
    assert_eq!(sets.len(), 2, "undo reuses the old ReplicaSet");
    let back = sets.iter().find(|rs| image_of(rs) == "nginx:1.25").unwrap();
    assert_eq!(rs_replicas(back), 3);
    assert_eq!(revision(back), "3");
    let img = env
        .k(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(img, "nginx:1.25");

    // rollout restart makes a new template (annotation) and thus a new RS.
    env.k(&["rollout", "restart", "deployment/web"]).await;
    let out = env
        .k(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(env.replica_sets("default").await.len(), 3);

    // Pause: template changes make no new ReplicaSet until resumed.
    env.k(&["rollout", "pause", "deployment/web"]).await;
    env.k(&["set", "image", "deployment/web", "nginx=nginx:1.27"])
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.replica_sets("default").await.len(), 3, "paused");
    env.k(&["rollout", "resume", "deployment/web"]).await;
    let out = env
        .k(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(env.replica_sets("default").await.len(), 4);
}

#[tokio::test]
async fn recreate_and_history_limit_and_progress_deadline() {
    let (env, behaviour) = env(&["node-a"]).await;
    let behaviour = behaviour.unwrap();
    let yaml = DEPLOY_YAML.replace(
        "  strategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n",
        "  strategy: {type: Recreate}\n  revisionHistoryLimit: 1\n  progressDeadlineSeconds: 3\n",
    );
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(&yaml))
        .await;
    env.k(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    for image in ["nginx:2", "nginx:3"] {
        env.k(&["set", "image", "deployment/web", &format!("nginx={image}")])
            .await;
        env.k(&["rollout", "status", "deployment/web", "--timeout=90s"])
            .await;
    }
    // Only the current RS and one old one are kept.
    wait_for("history limit", 30, || async {
        (env.replica_sets("default").await.len() == 2).then_some(())
    })
    .await;
    // Recreate never runs old and new pods together: all pods have one hash.
    let pods = env.pods("default").await;
    let hashes: std::collections::BTreeSet<_> = pods
        .iter()
        .map(|p| p.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone())
        .collect();
    assert_eq!(hashes.len(), 1);
    // A rollout that cannot become ready exceeds its deadline; rollout status fails.
    behaviour
        .hold_ready
        .store(true, std::sync::atomic::Ordering::Release);
    env.k(&["set", "image", "deployment/web", "nginx=nginx:4"])
        .await;
    wait_for("ProgressDeadlineExceeded", 60, || async {
        let out = env
            .k(&[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
            ])
            .await;
        (out == "ProgressDeadlineExceeded").then_some(())
    })
    .await;
    let err = env
        .cp
        .kubectl_fails(
            K,
            &["rollout", "status", "deployment/web", "--timeout=20s"],
            None,
        )
        .await;
    assert!(err.contains("exceeded its progress deadline"), "{err}");
}

#[tokio::test]
async fn deleting_owners_cascades_or_orphans() {
    let (env, _) = env(&["node-a"]).await;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(DEPLOY_YAML))
        .await;
    env.k(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    // --cascade=orphan keeps the ReplicaSet and pods, freed from their owner.
    env.k(&["delete", "deployment", "web", "--cascade=orphan"])
        .await;
    wait_for("deployment gone", 30, || async {
        (!env.k_ok(&["get", "deployment", "web"]).await).then_some(())
    })
    .await;
    let sets = wait_for("orphaned RS", 30, || async {
        let sets = env.replica_sets("default").await;
        (sets.len() == 1
            && sets[0]
                .metadata
                .owner_references
                .as_ref()
                .is_none_or(|o| o.is_empty()))
        .then_some(sets)
    })
    .await;
    assert_eq!(env.pods("default").await.len(), 3);
    // A new deployment with the same selector adopts them again.
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(DEPLOY_YAML))
        .await;
    wait_for("adopted", 30, || async {
        let sets = env.replica_sets("default").await;
        (sets.len() == 1
            && sets[0]
                .metadata
                .owner_references
                .as_ref()
                .and_then(|o| o.first())
                .is_some_and(|o| o.kind == "Deployment"))
        .then_some(())
    })
    .await;
    assert_eq!(
        env.replica_sets("default").await[0].metadata.name,
        sets[0].metadata.name
    );
    // Default (background) delete removes ReplicaSets and pods.
    env.k(&["delete", "deployment", "web"]).await;
    wait_for("cascade", 60, || async {
        (env.replica_sets("default").await.is_empty() && env.pods("default").await.is_empty())
            .then_some(())
    })
    .await;
    // Foreground: the RS stays (with the finalizer) until its pods are gone.
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(RS_YAML))
        .await;
    wait_for("rs pods", 60, || async {
        (env.pods("default").await.len() == 3).then_some(())
    })
    .await;
    env.k(&[
        "delete",
        "rs",
        "frontend",
        "--cascade=foreground",
        "--wait=false",
    ])
    .await;
    wait_for("foreground cascade", 60, || async {
        (env.replica_sets("default").await.is_empty() && env.pods("default").await.is_empty())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_namespace_removes_everything_in_it() {
    let (env, _) = env(&["node-a"]).await;
    env.k(&["create", "namespace", "doomed"]).await;
    env.cp
        .kubectl_in(K, &["apply", "-n", "doomed", "-f", "-"], Some(DEPLOY_YAML))
        .await;
    env.k(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ])
    .await;
    env.k(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "doomed",
        "--from-literal=a=b",
    ])
    .await;
    env.k(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "doomed",
        "--timeout=90s",
    ])
    .await;
    env.k(&["delete", "namespace", "doomed", "--timeout=90s"])
        .await;
    assert!(
        !env.k_ok(&["get", "namespace", "doomed"]).await,
        "namespace is gone"
    );
    let left: Vec<String> = env
        .pods("doomed")
        .await
        .iter()
        .map(|p| {
            format!(
                "{:?} created {:?} deleting {:?} owners {:?} node {:?} phase {:?}",
                p.metadata.name,
                p.metadata.creation_timestamp,
                p.metadata.deletion_timestamp,
                p.metadata
                    .owner_references
                    .as_ref()
                    .map(|o| o.iter().map(|o| o.name.clone()).collect::<Vec<_>>()),
                p.spec.as_ref().and_then(|s| s.node_name.clone()),
                p.status.as_ref().and_then(|s| s.phase.clone()),
            )
        })
        .collect();
    assert!(left.is_empty(), "pods left behind: {left:#?}");
    assert!(env.replica_sets("doomed").await.is_empty());
}

const JOB_YAML: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: batch
spec:
  completions: 6
  parallelism: 3
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox
"#;

#[tokio::test]
async fn job_runs_parallel_pods_to_completion() {
    let (env, behaviour) = env(&["node-a", "node-b"]).await;
    let behaviour = behaviour.unwrap();
    // Held: exactly `parallelism` pods run at once.
    behaviour
        .hold_ready
        .store(true, std::sync::atomic::Ordering::Release);
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(JOB_YAML))
        .await;
    wait_for("3 pods", 30, || async {
        (env.pods("default").await.len() == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pods = env.pods("default").await;
    assert_eq!(pods.len(), 3, "parallelism 3");
    assert!(pods.iter().all(|p| {
        p.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == "batch.kubernetes.io/job-tracking"))
    }));
    behaviour
        .hold_ready
        .store(false, std::sync::atomic::Ordering::Release);
    env.k(&[
        "wait",
        "--for=condition=complete",
        "job/batch",
        "--timeout=60s",
    ])
    .await;
    let out = env
        .k(&[
            "get",
            "job",
            "batch",
            "-o",
            "jsonpath={.status.succeeded}/{.status.failed}/{.status.active}",
        ])
        .await;
    assert_eq!(out, "6/0/0");
    let out = env
        .k(&[
            "get",
            "job",
            "batch",
            "-o",
            "jsonpath={.status.conditions[*].type}",
        ])
        .await;
    assert!(
        out.contains("SuccessCriteriaMet") && out.contains("Complete"),
        "{out}"
    );
    // Counted pods are released from the tracking finalizer.
    let pods = env.pods("default").await;
    assert_eq!(pods.len(), 6);
    assert!(
        pods.iter()
            .all(|p| p.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty()))
    );
    let ev = env
        .k(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=batch",
        ])
        .await;
    assert!(
        ev.contains("SuccessfulCreate") && ev.contains("Completed"),
        "{ev}"
    );
}

#[tokio::test]
async fn job_fails_past_backoff_limit_and_indexed_jobs_complete_every_index() {
    let (env, _) = env(&["node-a"]).await;
    let failing = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: flaky
spec:
  backoffLimit: 1
  template:
    metadata:
      annotations: {fake-node/fail: "yes"}
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox
"#;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(failing))
        .await;
    env.k(&[
        "wait",
        "--for=condition=failed",
        "job/flaky",
        "--timeout=60s",
    ])
    .await;
    let out = env
        .k(&[
            "get",
            "job",
            "flaky",
            "-o",
            "jsonpath={.status.failed}/{.status.conditions[?(@.type==\"Failed\")].reason}",
        ])
        .await;
    assert_eq!(out, "2/BackoffLimitExceeded");

    let indexed = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: indexed
spec:
  completions: 3
  parallelism: 2
  completionMode: Indexed
  ttlSecondsAfterFinished: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox
"#;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(indexed))
        .await;
    env.k(&[
        "wait",
        "--for=condition=complete",
        "job/indexed",
        "--timeout=60s",
    ])
    .await;
    let out = env
        .k(&[
            "get",
            "job",
            "indexed",
            "-o",
            "jsonpath={.status.completedIndexes}",
        ])
        .await;
    assert_eq!(out, "0-2");
    let idx: std::collections::BTreeSet<String> = env
        .pods("default")
        .await
        .iter()
        .filter_map(|p| {
            p.metadata
                .annotations
                .as_ref()?
                .get("batch.kubernetes.io/job-completion-index")
                .cloned()
        })
        .collect();
    assert_eq!(idx, ["0", "1", "2"].iter().map(|s| s.to_string()).collect());
    // ttlSecondsAfterFinished: the finished Job goes away by itself.
    wait_for("job deleted after TTL", 30, || async {
        (!env.k_ok(&["get", "job", "indexed"]).await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn cronjob_fires_on_schedule_and_from_kubectl() {
    let (env, _) = env(&["node-a"]).await;
    env.k(&[
        "create",
        "cronjob",
        "hello",
        "--image=busybox",
        "--schedule=*/5 * * * *",
    ])
    .await;
    // kubectl builds a Job from the CronJob's template; the Job controller runs it.
    env.k(&["create", "job", "manual", "--from=cronjob/hello"])
        .await;
    env.k(&[
        "wait",
        "--for=condition=complete",
        "job/manual",
        "--timeout=60s",
    ])
    .await;
    // Move the controllers' clock past the next schedule time, then nudge the CronJob.
    env.clock.advance(6 * 60);
    env.k(&["annotate", "cronjob", "hello", "nudge=1"]).await;
    let job = wait_for("scheduled job", 30, || async {
        let out = env
            .k(&["get", "jobs", "-o", "jsonpath={.items[*].metadata.name}"])
            .await;
        out.split_whitespace()
            .find(|n| n.starts_with("hello-"))
            .map(str::to_string)
    })
    .await;
    let owner = env
        .k(&[
            "get",
            "job",
            &job,
            "-o",
            "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
        ])
        .await;
    assert_eq!(owner, "CronJob/hello");
    env.k(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{job}"),
        "--timeout=60s",
    ])
    .await;
    wait_for("cronjob status", 30, || async {
        let out = env
            .k(&[
                "get",
                "cronjob",
                "hello",
                "-o",
                "jsonpath={.status.lastScheduleTime}|{.status.lastSuccessfulTime}",
            ])
            .await;
        let (sched, ok) = out.split_once('|')?;
        (!sched.is_empty() && !ok.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn node_that_stops_renewing_its_lease_becomes_unreachable_and_pods_are_evicted() {
    let (env, behaviour) = env_with(&["node-a", "node-b"], |c| {
        c.node_monitor_grace_period = Duration::from_secs(5);
        c.node_monitor_period = Duration::from_secs(1);
    })
    .await;
    let behaviour = behaviour.unwrap();
    let pod = |name: &str, toleration: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: node-b\n  tolerations: [{toleration}]\n  containers:\n  - name: c\n    image: nginx\n"
        )
    };
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(&pod("short", r#"{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}"#)))
        .await;
    env.cp
        .kubectl_in(
            K,
            &["apply", "-f", "-"],
            Some(&pod("forever", r#"{operator: Exists}"#)),
        )
        .await;
    wait_for("pods running", 30, || async {
        let out = env
            .k(&["get", "pods", "-o", "jsonpath={.items[*].status.phase}"])
            .await;
        (out == "Running Running").then_some(())
    })
    .await;
    // Healthy nodes stay Ready for longer than the grace period.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let ready = env
        .k(&[
            "get",
            "node",
            "node-b",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .await;
    assert_eq!(ready, "True");
    behaviour.dead.lock().unwrap().push("node-b".into());
    wait_for("node-b unreachable", 30, || async {
        let out = env
            .k(&[
                "get",
                "node",
                "node-b",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}|{.spec.taints[*].key}",
            ])
            .await;
        (out == "Unknown|node.kubernetes.io/unreachable").then_some(())
    })
    .await;
    let out = env.k(&["get", "nodes"]).await;
    assert!(out.contains("NotReady"), "{out}");
    wait_for("short-toleration pod evicted", 30, || async {
        let out = env
            .k(&[
                "get",
                "pod",
                "short",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ])
            .await;
        (!out.is_empty()).then_some(())
    })
    .await;
    let out = env
        .k(&[
            "get",
            "pod",
            "forever",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ])
        .await;
    assert!(out.is_empty(), "a pod tolerating forever stays");
    let a = env
        .k(&[
            "get",
            "node",
            "node-a",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .await;
    assert_eq!(a, "True");
    // The node comes back: Ready from its kubelet, the taint goes.
    behaviour.dead.lock().unwrap().clear();
    env.k(&[
        "patch",
        "node",
        "node-b",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady"}]}}"#,
    ])
    .await;
    wait_for("taint removed", 30, || async {
        let out = env
            .k(&["get", "node", "node-b", "-o", "jsonpath={.spec.taints}"])
            .await;
        (!out.contains("unreachable")).then_some(())
    })
    .await;
}

const DS_YAML: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: busybox:1
"#;

#[tokio::test]
async fn daemonset_runs_one_pod_per_eligible_node() {
    let taint = serde_json::json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]);
    let (env, _) = env_tainted(
        &["node-a", "node-b", "node-c"],
        &[("node-c", taint)],
        |_| {},
    )
    .await;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(DS_YAML))
        .await;
    let out = env
        .k(&["rollout", "status", "ds/agent", "--timeout=60s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let nodes_of = |pods: &[Pod]| {
        let mut v: Vec<String> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        nodes_of(&env.pods("default").await),
        ["node-a", "node-b"],
        "tainted node-c skipped"
    );
    let p = &env.pods("default").await[0];
    let terms = &p
        .spec
        .as_ref()
        .unwrap()
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms;
    assert_eq!(
        terms[0].match_fields.as_ref().unwrap()[0].key,
        "metadata.name"
    );
    let tol = p.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
    assert!(
        tol.iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable"))
    );
    // Tolerating the taint: a rolling update to the new template, plus node-c.
    env.k(&["patch", "ds", "agent", "--type=merge", "-p",
        r#"{"spec":{"template":{"spec":{"tolerations":[{"key":"dedicated","operator":"Exists"}]}}}}"#]).await;
    let out = env
        .k(&["rollout", "status", "ds/agent", "--timeout=60s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    wait_for("3 pods on 3 nodes", 30, || async {
        (nodes_of(&env.pods("default").await) == ["node-a", "node-b", "node-c"]).then_some(())
    })
    .await;
    let out = env.k(&["get", "ds", "agent", "-o", "jsonpath={.status.desiredNumberScheduled}/{.status.numberReady}/{.status.updatedNumberScheduled}"]).await;
    assert_eq!(out, "3/3/3");
}

const STS_YAML: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
"#;

#[tokio::test]
async fn statefulset_creates_ordered_pods_with_claims_and_rolls() {
    let (env, behaviour) = env(&["node-a", "node-b"]).await;
    let behaviour = behaviour.unwrap();
    behaviour
        .hold_ready
        .store(true, std::sync::atomic::Ordering::Release);
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(STS_YAML))
        .await;
    wait_for("web-0", 30, || async {
        env.k_ok(&["get", "pod", "web-0"]).await.then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // OrderedReady: web-1 waits for web-0 to be Ready.
    assert!(
        !env.k_ok(&["get", "pod", "web-1"]).await,
        "web-1 before web-0 is ready"
    );
    behaviour
        .hold_ready
        .store(false, std::sync::atomic::Ordering::Release);
    let out = env
        .k(&["rollout", "status", "sts/web", "--timeout=60s"])
        .await;
    assert!(
        out.contains("roll out complete")
            || out.contains("rolling update complete")
            || out.contains("partitioned roll out complete"),
        "{out}"
    );
    let pods = env.pods("default").await;
    let mut names: Vec<_> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    let created = |n: &str| {
        pods.iter()
            .find(|p| p.metadata.name.as_deref() == Some(n))
            .unwrap()
            .metadata
            .creation_timestamp
            .clone()
            .unwrap()
            .0
    };
    assert!(created("web-0") <= created("web-1") && created("web-1") <= created("web-2"));
    let claims = env
        .k(&["get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"])
        .await;
    assert_eq!(claims, "data-web-0 data-web-1 data-web-2");
    let vol = env
        .k(&[
            "get",
            "pod",
            "web-1",
            "-o",
            "jsonpath={.spec.volumes[?(@.name==\"data\")].persistentVolumeClaim.claimName}",
        ])
        .await;
    assert_eq!(vol, "data-web-1");
    // Rolling update replaces every pod with the new revision.
    env.k(&["set", "image", "sts/web", "nginx=nginx:1.26"])
        .await;
    env.k(&["rollout", "status", "sts/web", "--timeout=90s"])
        .await;
    let images = env
        .k(&[
            "get",
            "pods",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ])
        .await;
    assert_eq!(images, "nginx:1.26 nginx:1.26 nginx:1.26");
    // Scale down removes the highest ordinal.
    env.k(&["scale", "sts/web", "--replicas=2"]).await;
    wait_for("web-2 gone", 30, || async {
        (!env.k_ok(&["get", "pod", "web-2"]).await).then_some(())
    })
    .await;
    assert!(env.k_ok(&["get", "pod", "web-1"]).await);
}

#[tokio::test]
async fn nodes_get_pod_cidrs_that_survive_a_restart() {
    let (env, _) = env_with(&["node-a", "node-b"], |c| {
        c.cluster_cidr = Some("10.42.0.0/16".into())
    })
    .await;
    let cidrs = || async {
        let out = env
            .k(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.spec.podCIDR}{\" \"}{end}",
            ])
            .await;
        let mut v: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        v.sort();
        v
    };
    let first = wait_for("pod CIDRs", 30, || async {
        let v = cidrs().await;
        (v.len() == 2).then_some(v)
    })
    .await;
    assert_eq!(first, ["10.42.0.0/24", "10.42.1.0/24"]);
    // A second controller manager (a restart) allocates only new nodes, never a used range.
    env.cm.abort();
    let mut cfg = k3rs_controller_manager::Config::for_kubeconfig(&env.cp.kubeconfig);
    cfg.cluster_cidr = Some("10.42.0.0/16".into());
    let again = tokio::spawn(async move {
        let _ = k3rs_controller_manager::run_until(cfg, std::future::pending()).await;
    });
    env.cp
        .kubectl_in(
            K,
            &["apply", "-f", "-"],
            Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-c\n"),
        )
        .await;
    let all = wait_for("node-c CIDR", 30, || async {
        let v = cidrs().await;
        (v.len() == 3).then_some(v)
    })
    .await;
    again.abort();
    assert_eq!(all, ["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"]);
}

#[tokio::test]
async fn pod_gc_removes_excess_finished_pods_and_pods_of_deleted_nodes() {
    let (env, _) = env_with(&["node-a", "node-b"], |c| c.terminated_pod_gc_threshold = 1).await;
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: three\nspec:\n  completions: 3\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: c\n        image: busybox\n";
    env.cp.kubectl_in(K, &["apply", "-f", "-"], Some(job)).await;
    env.k(&[
        "wait",
        "--for=condition=complete",
        "job/three",
        "--timeout=60s",
    ])
    .await;
    wait_for("finished pods down to the threshold", 60, || async {
        (env.pods("default").await.len() == 1).then_some(())
    })
    .await;
    // A pod bound to a node that is deleted is removed too.
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: stranded\nspec:\n  nodeName: node-b\n  containers:\n  - name: c\n    image: nginx\n"))
        .await;
    env.k(&["delete", "node", "node-b"]).await;
    wait_for("orphaned pod removed", 60, || async {
        (!env.k_ok(&["get", "pod", "stranded"]).await).then_some(())
    })
    .await;
}

const SERVICE_YAML: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {team: a}
spec:
  selector: {app: web}
  ports:
  - {name: web, port: 80, targetPort: http}
---
apiVersion: v1
kind: Service
metadata:
  name: external
spec:
  ports:
  - {port: 80}
"#;

impl Env {
    async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.k(&a).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// The endpoints of Service `svc`'s slices: (pod name, IP, ready, serving, terminating).
    async fn slice_endpoints(&self, svc: &str) -> (Vec<serde_json::Value>, Vec<SliceEndpoint>) {
        let sel = format!("kubernetes.io/service-name={svc}");
        let list = self.json(&["get", "endpointslices", "-l", &sel]).await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let mut eps: Vec<SliceEndpoint> = items
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .map(|e| SliceEndpoint {
                pod: e["targetRef"]["name"].as_str().unwrap_or_default().into(),
                ip: e["addresses"][0].as_str().unwrap_or_default().into(),
                ready: e["conditions"]["ready"] == true,
                serving: e["conditions"]["serving"] == true,
                terminating: e["conditions"]["terminating"] == true,
            })
            .collect();
        eps.sort_by(|a, b| a.pod.cmp(&b.pod));
        (items, eps)
    }

    /// `kubectl get endpoints svc`: (ready IPs, not-ready IPs, ports), sorted.
    async fn endpoints_of(&self, svc: &str) -> Option<(Vec<String>, Vec<String>, Vec<i64>)> {
        let out = self
            .cp
            .kubectl_with(K, &["get", "endpoints", svc, "-o", "json"], None, &[])
            .await
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let ep: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let (mut ready, mut not_ready, mut ports) = (Vec::new(), Vec::new(), Vec::new());
        for s in ep["subsets"].as_array().into_iter().flatten() {
            for a in s["addresses"].as_array().into_iter().flatten() {
                ready.push(a["ip"].as_str().unwrap_or_default().to_string());
            }
            for a in s["notReadyAddresses"].as_array().into_iter().flatten() {
                not_ready.push(a["ip"].as_str().unwrap_or_default().to_string());
            }
            for p in s["ports"].as_array().into_iter().flatten() {
                ports.push(p["port"].as_i64().unwrap_or_default());
            }
        }
        ready.sort();
        not_ready.sort();
        ports.sort();
        ports.dedup();
        Some((ready, not_ready, ports))
    }

    /// name -> IP of the running pods in `default`.
    async fn pod_ips(&self) -> std::collections::BTreeMap<String, String> {
        self.pods("default")
            .await
            .into_iter()
            .filter_map(|p| Some((p.metadata.name?, p.status?.pod_ip?)))
            .collect()
    }
}

#[derive(Debug, PartialEq)]
struct SliceEndpoint {
    pod: String,
    ip: String,
    ready: bool,
    serving: bool,
    terminating: bool,
}

#[tokio::test]
async fn services_get_endpoint_slices_and_endpoints_that_follow_pod_readiness() {
    let (env, _) = env(&["node-a", "node-b"]).await;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(SERVICE_YAML))
        .await;
    env.k(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    let ips = wait_for("3 pod IPs", 30, || async {
        let ips = env.pod_ips().await;
        (ips.len() == 3).then_some(ips)
    })
    .await;
    let (slices, eps) = wait_for("a slice with 3 ready endpoints", 60, || async {
        let (slices, eps) = env.slice_endpoints("web").await;
        (eps.len() == 3 && eps.iter().all(|e| e.ready && e.serving && !e.terminating))
            .then_some((slices, eps))
    })
    .await;
    assert_eq!(slices.len(), 1);
    let s = &slices[0];
    assert_eq!(s["addressType"], "IPv4");
    assert_eq!(
        s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(s["metadata"]["labels"]["team"], "a");
    let owner = &s["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("Service"), Some("web"))
    );
    assert_eq!(owner["controller"], true);
    // The named target port resolved to the container port.
    assert_eq!(
        s["ports"],
        serde_json::json!([{"name": "web", "port": 8080, "protocol": "TCP"}])
    );
    for e in s["endpoints"].as_array().unwrap() {
        assert_eq!(e["targetRef"]["kind"], "Pod");
        assert!(
            e["nodeName"]
                .as_str()
                .is_some_and(|n| n.starts_with("node-")),
            "{e}"
        );
    }
    for e in &eps {
        assert_eq!(ips.get(&e.pod), Some(&e.ip), "{e:?}");
    }
    let mut all: Vec<String> = ips.values().cloned().collect();
    all.sort();
    let ep = wait_for("Endpoints with 3 ready addresses", 60, || async {
        env.endpoints_of("web").await.filter(|e| e.0 == all)
    })
    .await;
    assert_eq!(ep, (all.clone(), vec![], vec![8080]));
    let describe = env.k(&["describe", "svc", "web"]).await;
    let first = &all[0];
    assert!(describe.contains(&format!("{first}:8080")), "{describe}");

    // Readiness fails on one pod: it moves to notReadyAddresses / ready=false.
    let (sick, sick_ip) = ips
        .iter()
        .next()
        .map(|(a, b)| (a.clone(), b.clone()))
        .unwrap();
    env.k(&["annotate", "pod", &sick, "fake-node/ready=false"])
        .await;
    wait_for("not-ready address", 60, || async {
        let (ready, not_ready, _) = env.endpoints_of("web").await?;
        (ready.len() == 2 && not_ready == [sick_ip.clone()]).then_some(())
    })
    .await;
    wait_for("not-ready slice endpoint", 60, || async {
        let (_, eps) = env.slice_endpoints("web").await;
        eps.iter()
            .any(|e| e.pod == sick && !e.ready && !e.serving && !e.terminating)
            .then_some(())
    })
    .await;
    // And back.
    env.k(&["annotate", "pod", &sick, "fake-node/ready-"]).await;
    wait_for("ready again", 60, || async {
        env.endpoints_of("web")
            .await
            .filter(|e| e.0 == all && e.1.is_empty())
    })
    .await;

    // A terminating pod (held by a finalizer): still serving in its slice,
    // not ready, and gone from Endpoints.
    let (dying, dying_ip) = ips
        .iter()
        .nth(1)
        .map(|(a, b)| (a.clone(), b.clone()))
        .unwrap();
    env.k(&[
        "patch",
        "pod",
        &dying,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ])
    .await;
    env.k(&["delete", "pod", &dying, "--wait=false"]).await;
    wait_for("terminating endpoint", 60, || async {
        let (_, eps) = env.slice_endpoints("web").await;
        eps.iter()
            .any(|e| e.pod == dying && !e.ready && e.serving && e.terminating)
            .then_some(())
    })
    .await;
    wait_for("terminating pod out of Endpoints", 60, || async {
        let (ready, not_ready, _) = env.endpoints_of("web").await?;
        (!ready.contains(&dying_ip) && !not_ready.contains(&dying_ip)).then_some(())
    })
    .await;
    env.k(&[
        "patch",
        "pod",
        &dying,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .await;
    wait_for("replacement pod listed", 60, || async {
        let (_, eps) = env.slice_endpoints("web").await;
        (eps.len() == 3 && eps.iter().all(|e| e.pod != dying && e.ready)).then_some(())
    })
    .await;

    // A Service without a selector is left alone.
    let (slices, _) = env.slice_endpoints("external").await;
    assert!(slices.is_empty(), "{slices:?}");
    assert!(env.endpoints_of("external").await.is_none());

    // Scaled to zero: one empty placeholder slice, Endpoints without subsets.
    env.k(&["scale", "deployment", "web", "--replicas=0"]).await;
    wait_for("placeholder slice", 60, || async {
        let (slices, eps) = env.slice_endpoints("web").await;
        (slices.len() == 1 && eps.is_empty()).then_some(())
    })
    .await;
    wait_for("empty Endpoints", 60, || async {
        env.endpoints_of("web")
            .await
            .filter(|e| e.0.is_empty() && e.1.is_empty())
    })
    .await;
    let wide = env.k(&["get", "endpoints", "web"]).await;
    assert!(wide.contains("<none>"), "{wide}");

    // The Service goes, and its Endpoints and slices with it.
    env.k(&["delete", "svc", "web"]).await;
    wait_for("Endpoints and slices removed", 60, || async {
        let (slices, _) = env.slice_endpoints("web").await;
        (slices.is_empty() && env.endpoints_of("web").await.is_none()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn headless_service_with_publish_not_ready_and_many_pods_splits_slices() {
    let (env, _) = env(&["node-a"]).await;
    // Pods that never turn ready still count with publishNotReadyAddresses.
    let yaml = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: many
spec:
  replicas: 105
  selector:
    matchLabels: {app: many}
  template:
    metadata:
      labels: {app: many}
      annotations: {fake-node/ready: "false"}
    spec:
      containers:
      - name: c
        image: nginx:1.25
---
apiVersion: v1
kind: Service
metadata:
  name: many
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: many}
  ports:
  - {port: 80}
"#;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(yaml))
        .await;
    let slices = wait_for("105 endpoints in 2 slices", 120, || async {
        let (slices, eps) = env.slice_endpoints("many").await;
        (eps.len() == 105 && eps.iter().all(|e| e.ready && !e.serving)).then_some(slices)
    })
    .await;
    let mut sizes: Vec<usize> = slices
        .iter()
        .map(|s| s["endpoints"].as_array().map_or(0, |a| a.len()))
        .collect();
    sizes.sort();
    assert_eq!(sizes, [5, 100]);
    for s in &slices {
        assert_eq!(
            s["metadata"]["labels"]["service.kubernetes.io/headless"],
            ""
        );
    }
    // Endpoints lists them as ready addresses, too.
    let (ready, not_ready, ports) = wait_for("Endpoints of 105", 60, || async {
        env.endpoints_of("many").await.filter(|e| e.0.len() == 105)
    })
    .await;
    assert!(not_ready.is_empty());
    assert_eq!(ports, [80]);
    assert_eq!(ready.len(), 105);
}

#[tokio::test]
async fn replication_controller_keeps_replicas_and_ttl_after_finished_can_be_disabled() {
    let (env, _) = env_with(&["node-a"], |c| {
        c.controllers = vec!["*".into(), "-ttl-after-finished".into()];
    })
    .await;
    let rc = "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: legacy\nspec:\n  replicas: 2\n  selector: {app: legacy}\n  template:\n    metadata:\n      labels: {app: legacy}\n    spec:\n      containers:\n      - name: c\n        image: nginx:1.25\n";
    env.cp.kubectl_in(K, &["apply", "-f", "-"], Some(rc)).await;
    wait_for("2 ready replicas", 60, || async {
        let out = env
            .k(&["get", "rc", "legacy", "-o", "jsonpath={.status.replicas}/{.status.readyReplicas}/{.status.availableReplicas}/{.status.observedGeneration}"])
            .await;
        (out == "2/2/2/1").then_some(())
    })
    .await;
    for p in env.pods("default").await {
        let r = &p.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.controller),
            ("ReplicationController", "legacy", Some(true))
        );
    }
    env.k(&["scale", "rc", "legacy", "--replicas=1"]).await;
    wait_for("scaled to 1", 60, || async {
        let out = env
            .k(&["get", "rc", "legacy", "-o", "jsonpath={.status.replicas}"])
            .await;
        let live = env
            .pods("default")
            .await
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        (out == "1" && live == 1).then_some(())
    })
    .await;
    wait_for("RC events", 30, || async {
        let ev = env
            .k(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=legacy",
            ])
            .await;
        (ev.contains("SuccessfulCreate") && ev.contains("SuccessfulDelete")).then_some(())
    })
    .await;

    // With ttl-after-finished off, a finished Job outlives its TTL.
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: keep\nspec:\n  ttlSecondsAfterFinished: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: c\n        image: busybox\n";
    env.cp.kubectl_in(K, &["apply", "-f", "-"], Some(job)).await;
    env.k(&[
        "wait",
        "--for=condition=complete",
        "job/keep",
        "--timeout=60s",
    ])
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(env.k_ok(&["get", "job", "keep"]).await, "job kept");
}

#[tokio::test]
async fn resource_quota_reports_hard_and_used() {
    let (env, _) = env_with(&["node-a"], |c| {
        c.resource_quota_sync_period = Duration::from_secs(1);
    })
    .await;
    env.k(&["create", "configmap", "one", "--from-literal=a=b"])
        .await;
    let yaml = r#"
apiVersion: v1
kind: ResourceQuota
metadata:
  name: compute
spec:
  hard:
    pods: "10"
    requests.cpu: "2"
    requests.memory: 1Gi
    limits.memory: 2Gi
    configmaps: "5"
    services: "3"
    services.nodeports: "2"
    count/deployments.apps: "2"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 2
  selector:
    matchLabels: {app: quota}
  template:
    metadata:
      labels: {app: quota}
    spec:
      containers:
      - name: c
        image: nginx:1.25
        resources:
          requests: {cpu: 100m, memory: 64Mi}
          limits: {memory: 128Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: np
spec:
  type: NodePort
  selector: {app: quota}
  ports:
  - {port: 80}
"#;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(yaml))
        .await;
    let used = |expect: &'static str| {
        let env = &env;
        async move {
            let out = env.k(&["get", "quota", "compute", "-o", "json"]).await;
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            let u = &v["status"]["used"];
            let got = format!(
                "pods={} requests.cpu={} requests.memory={} limits.memory={} configmaps={} services={} services.nodeports={} count/deployments.apps={}",
                u["pods"].as_str()?,
                u["requests.cpu"].as_str()?,
                u["requests.memory"].as_str()?,
                u["limits.memory"].as_str()?,
                u["configmaps"].as_str()?,
                u["services"].as_str()?,
                u["services.nodeports"].as_str()?,
                u["count/deployments.apps"].as_str()?,
            );
            (got == expect && v["status"]["hard"] == v["spec"]["hard"]).then_some(())
        }
    };
    // configmaps: ours and kube-root-ca.crt; services: ours and `kubernetes`.
    wait_for("usage of 2 pods", 60, || {
        used("pods=2 requests.cpu=200m requests.memory=128Mi limits.memory=256Mi configmaps=2 services=2 services.nodeports=1 count/deployments.apps=1")
    })
    .await;
    env.k(&["scale", "deployment", "app", "--replicas=3"]).await;
    env.k(&["create", "configmap", "two", "--from-literal=a=b"])
        .await;
    wait_for("usage of 3 pods", 60, || {
        used("pods=3 requests.cpu=300m requests.memory=192Mi limits.memory=384Mi configmaps=3 services=2 services.nodeports=1 count/deployments.apps=1")
    })
    .await;
    let describe = env.k(&["describe", "quota", "compute"]).await;
    let line = describe
        .lines()
        .find(|l| l.starts_with("requests.cpu"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(line, ["requests.cpu", "300m", "2"], "{describe}");

    // A quota limited by scopeSelector counts only the pods of its priority class.
    let scoped = r#"
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: high
value: 1000
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: high-only
spec:
  hard:
    pods: "5"
  scopeSelector:
    matchExpressions:
    - {scopeName: PriorityClass, operator: In, values: [high]}
---
apiVersion: v1
kind: Pod
metadata:
  name: important
spec:
  priorityClassName: high
  containers:
  - {name: c, image: busybox}
"#;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(scoped))
        .await;
    wait_for("the scoped quota counts one pod of four", 60, || async {
        let out = env
            .k(&[
                "get",
                "quota",
                "high-only",
                "-o",
                "jsonpath={.status.used.pods}",
            ])
            .await;
        (out == "1").then_some(())
    })
    .await;
}

#[tokio::test]
async fn claims_and_volumes_in_use_are_protected_from_deletion() {
    let (env, _) = env(&["node-a"]).await;
    let yaml = r#"
apiVersion: v1
kind: PersistentVolume
metadata:
  name: vol
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /tmp/k3rs-e2e-vol}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 1Gi}
---
apiVersion: v1
kind: Pod
metadata:
  name: user
spec:
  containers:
  - name: c
    image: nginx:1.25
  volumes:
  - name: d
    persistentVolumeClaim: {claimName: data}
"#;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(yaml))
        .await;
    for (kind, name, fin) in [
        ("pvc", "data", "kubernetes.io/pvc-protection"),
        ("pv", "vol", "kubernetes.io/pv-protection"),
    ] {
        wait_for(&format!("{kind} finalizer"), 30, || async {
            let out = env
                .k(&["get", kind, name, "-o", "jsonpath={.metadata.finalizers}"])
                .await;
            out.contains(fin).then_some(())
        })
        .await;
    }
    // In use by a running pod: deleting only marks the claim Terminating.
    env.k(&["delete", "pvc", "data", "--wait=false"]).await;
    wait_for("pod running", 30, || async {
        let out = env
            .k(&["get", "pod", "user", "-o", "jsonpath={.status.phase}"])
            .await;
        (out == "Running").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = env.k(&["get", "pvc", "data"]).await;
    assert!(out.contains("Terminating"), "{out}");
    // The pod goes, and the claim with it.
    env.k(&["delete", "pod", "user"]).await;
    wait_for("claim deleted", 30, || async {
        (!env.k_ok(&["get", "pvc", "data"]).await).then_some(())
    })
    .await;
    // A bound volume waits for its binding to end.
    env.k(&[
        "patch",
        "pv",
        "vol",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Bound"}}"#,
    ])
    .await;
    env.k(&["delete", "pv", "vol", "--wait=false"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(env.k_ok(&["get", "pv", "vol"]).await, "bound PV kept");
    env.k(&[
        "patch",
        "pv",
        "vol",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Released"}}"#,
    ])
    .await;
    wait_for("volume deleted", 30, || async {
        (!env.k_ok(&["get", "pv", "vol"]).await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pod_disruption_budgets_report_allowed_disruptions() {
    let (env, _) = env(&["node-a", "node-b"]).await;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(DEPLOY_YAML))
        .await;
    env.k(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    let pdbs = r#"
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: min
spec:
  minAvailable: 2
  selector:
    matchLabels: {app: web}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: max
spec:
  maxUnavailable: "34%"
  selector:
    matchLabels: {app: web}
"#;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(pdbs))
        .await;
    let status = |name: &'static str, want: &'static str| {
        let env = &env;
        async move {
            let out = env
                .k(&["get", "pdb", name, "-o", "jsonpath={.status.expectedPods}/{.status.currentHealthy}/{.status.desiredHealthy}/{.status.disruptionsAllowed}/{.status.observedGeneration}/{.status.conditions[?(@.type==\"DisruptionAllowed\")].reason}"])
                .await;
            (out == want).then_some(())
        }
    };
    wait_for("minAvailable budget", 60, || {
        status("min", "3/3/2/1/1/SufficientPods")
    })
    .await;
    // 34% of 3 rounds up to 2 unavailable: 1 must stay healthy.
    wait_for("maxUnavailable budget", 60, || {
        status("max", "3/3/1/2/1/SufficientPods")
    })
    .await;
    let table = env.k(&["get", "pdb", "min"]).await;
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .take(4)
        .collect();
    assert_eq!(row, ["min", "2", "N/A", "1"], "{table}");
    // One pod turns unready: no disruption left under minAvailable 2.
    let pod = env.pods("default").await[0].metadata.name.clone().unwrap();
    env.k(&["annotate", "pod", &pod, "fake-node/ready=false"])
        .await;
    wait_for("budget exhausted", 60, || {
        status("min", "3/2/2/0/1/InsufficientPods")
    })
    .await;
    let out = env
        .k(&[
            "get",
            "pdb",
            "min",
            "-o",
            "jsonpath={.status.conditions[0].status}",
        ])
        .await;
    assert_eq!(out, "False");
}

const GHOST_YAML: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ghost
spec:
  replicas: 2
  selector:
    matchLabels: {app: ghost}
  template:
    metadata:
      labels: {app: ghost}
    spec:
      serviceAccountName: ghost
      containers:
      - name: c
        image: busybox
"#;

/// A template the API server rejects (its ServiceAccount does not exist) gets
/// a Warning event and a `ReplicaFailure` condition, retries back off instead
/// of hot-looping, everything else keeps working, and the object recovers
/// once the cause is fixed.
#[tokio::test]
async fn a_template_the_api_rejects_is_reported_and_the_rest_keeps_going() {
    let (env, _) = env(&["node-a"]).await;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(GHOST_YAML))
        .await;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(DEPLOY_YAML))
        .await;
    let out = env
        .k(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");

    let msg = wait_for("ReplicaFailure on the ghost ReplicaSet", 30, || async {
        let rs = env.replica_sets("default").await.into_iter().find(|r| {
            r.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("ghost-"))
        })?;
        let c = rs
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
        assert_eq!(c.reason.as_deref(), Some("FailedCreate"));
        c.message
    })
    .await;
    assert!(
        msg.contains("serviceaccount \"ghost\" not found"),
        "condition message names the cause: {msg}"
    );
    let events = wait_for("FailedCreate warning", 30, || async {
        let out = env
            .k(&[
                "get",
                "events",
                "--field-selector",
                "type=Warning,reason=FailedCreate",
                "-o",
                "jsonpath={range .items[*]}{.involvedObject.name} {.count} {.message}{\"\\n\"}{end}",
            ])
            .await;
        out.contains("ghost-").then_some(out)
    })
    .await;
    assert!(
        events.contains("serviceaccount \"ghost\" not found"),
        "{events}"
    );

    // Back-off, not a busy loop: a few seconds later the failed creates are
    // counted in the low tens at most (a hot loop makes thousands).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let counts = env
        .k(&[
            "get",
            "events",
            "--field-selector",
            "type=Warning,reason=FailedCreate",
            "-o",
            "jsonpath={range .items[*]}{.count}{\"\\n\"}{end}",
        ])
        .await;
    let total: i64 = counts
        .lines()
        .filter_map(|l| l.trim().parse::<i64>().ok())
        .sum();
    let dump = env.k(&["get", "events", "-o", "yaml"]).await;
    eprintln!("FailedCreate events counted: {total}");
    assert!(
        (1..=40).contains(&total),
        "failed creates in ~10 s: {total}\n{dump}"
    );
    assert!(env.pods("default").await.iter().all(|p| {
        p.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("web-"))
    }));

    // Objects no controller could act on are refused up front, by name.
    for (args, field) in [
        (
            vec![
                "create",
                "cronjob",
                "bad",
                "--image=busybox",
                "--schedule=61 * * * *",
            ],
            "spec.schedule",
        ),
        (
            vec![
                "create",
                "cronjob",
                "bad",
                "--image=busybox",
                "--schedule=* * * * *",
                "--dry-run=client",
                "-o",
                "json",
            ],
            "",
        ),
    ] {
        let out = env
            .cp
            .kubectl_with(K, &args, None, &[])
            .await
            .expect("kubectl");
        if field.is_empty() {
            // A CronJob in a time zone that does not exist.
            let mut cj: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("dry-run json");
            cj["spec"]["timeZone"] = serde_json::json!("Mars/Olympus_Mons");
            let body = cj.to_string();
            let out = env
                .cp
                .kubectl_with(K, &["create", "-f", "-"], Some(&body), &[])
                .await
                .expect("kubectl");
            assert!(out.status.success(), "{out:?}");
            // The API knows zone names by shape only; the controller, which
            // has the zone database, reports it and keeps going.
            let ev = wait_for("UnknownTimeZone warning", 30, || async {
                let out = env
                    .k(&[
                        "get",
                        "events",
                        "--field-selector",
                        "type=Warning,reason=UnknownTimeZone,involvedObject.name=bad",
                        "-o",
                        "jsonpath={.items[*].message}",
                    ])
                    .await;
                (!out.is_empty()).then_some(out)
            })
            .await;
            assert!(ev.contains("Mars/Olympus_Mons"), "{ev}");
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && err.contains(field), "{err}");
        }
    }

    // Fixing the cause lets the controller finish on its next retry.
    env.k(&["create", "serviceaccount", "ghost"]).await;
    let out = env
        .k(&["rollout", "status", "deployment/ghost", "--timeout=120s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    wait_for("ReplicaFailure cleared", 30, || async {
        let rs = env.replica_sets("default").await.into_iter().find(|r| {
            r.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("ghost-"))
        })?;
        let failing = rs
            .status?
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "ReplicaFailure");
        (!failing).then_some(())
    })
    .await;
}

/// `kubectl rollout history|undo` on a DaemonSet and a StatefulSet: both
/// keep their templates as ControllerRevisions, an undo brings the old
/// template back as the newest revision, and the revisions go with their owner.
#[tokio::test]
async fn daemonsets_and_statefulsets_roll_back_through_controller_revisions() {
    let (env, _) = env(&["node-a", "node-b"]).await;
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(DS_YAML))
        .await;
    let sts = STS_YAML
        .replace("replicas: 3", "replicas: 2")
        .replace("  volumeClaimTemplates:\n", "  __cut__\n");
    let sts = sts
        .split("  __cut__")
        .next()
        .unwrap_or_default()
        .to_string();
    env.cp
        .kubectl_in(K, &["apply", "-f", "-"], Some(&sts))
        .await;
    for (kind, container, old, new) in [
        ("ds/agent", "agent", "busybox:1", "busybox:2"),
        ("sts/web", "nginx", "nginx:1.25", "nginx:1.26"),
    ] {
        let out = env.k(&["rollout", "status", kind, "--timeout=90s"]).await;
        assert!(out.contains("roll"), "{kind}: {out}");
        env.k(&["set", "image", kind, &format!("{container}={new}")])
            .await;
        let out = env.k(&["rollout", "status", kind, "--timeout=90s"]).await;
        assert!(
            out.contains("roll") || out.contains("complete"),
            "{kind}: {out}"
        );
        let history = env.k(&["rollout", "history", kind]).await;
        let revs: Vec<&str> = history
            .lines()
            .skip_while(|l| !l.starts_with("REVISION"))
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(revs, ["1", "2"], "{kind} history:\n{history}");

        env.k(&["rollout", "undo", kind]).await;
        let image = wait_for(&format!("{kind} template rolled back"), 30, || async {
            let out = env
                .k(&[
                    "get",
                    kind,
                    "-o",
                    "jsonpath={.spec.template.spec.containers[0].image}",
                ])
                .await;
            (out == old).then_some(out)
        })
        .await;
        assert_eq!(image, old);
        env.k(&["rollout", "status", kind, "--timeout=90s"]).await;
        let history = wait_for(&format!("{kind} revision 3"), 30, || async {
            let h = env.k(&["rollout", "history", kind]).await;
            h.contains("\n3 ").then_some(h)
        })
        .await;
        let revs: Vec<&str> = history
            .lines()
            .skip_while(|l| !l.starts_with("REVISION"))
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(revs, ["2", "3"], "{kind} history after undo:\n{history}");
        // Every pod runs the restored template.
        wait_for(&format!("{kind} pods back on {old}"), 60, || async {
            let pods = env.pods("default").await;
            let mine: Vec<&Pod> = pods
                .iter()
                .filter(|p| {
                    let n = p.metadata.name.as_deref().unwrap_or("");
                    p.metadata.deletion_timestamp.is_none()
                        && if kind.starts_with("ds") {
                            n.starts_with("agent-")
                        } else {
                            n.starts_with("web-")
                        }
                })
                .collect();
            (mine.len() == 2
                && mine.iter().all(|p| {
                    p.spec.as_ref().map(|s| s.containers[0].image.as_deref()) == Some(Some(old))
                }))
            .then_some(())
        })
        .await;
    }
    let sts_status = env
        .k(&[
            "get",
            "sts",
            "web",
            "-o",
            "jsonpath={.status.currentRevision}={.status.updateRevision}",
        ])
        .await;
    let (cur, upd) = sts_status.split_once('=').unwrap_or_default();
    assert!(!cur.is_empty() && cur == upd, "{sts_status}");
    assert!(env.k_ok(&["get", "controllerrevision", cur]).await);

    env.k(&["delete", "ds", "agent"]).await;
    wait_for("the DaemonSet's revisions collected", 30, || async {
        let out = env.k(&["get", "controllerrevisions", "-o", "name"]).await;
        (!out.contains("agent-")).then_some(())
    })
    .await;
}
