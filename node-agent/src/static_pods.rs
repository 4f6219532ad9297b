//! Static pods: Pod manifests in a directory on the node
//! (`--pod-manifest-path`, K3s: `<data-dir>/agent/pod-manifests`) run here
//! whether or not the API server is reachable. Each is named
//! `<name>-<node>`, gets a UID hashed from its manifest (so an agent restart
//! adopts its containers and an edit replaces them), and is shown in the API
//! as a *mirror pod*: a copy carrying `kubernetes.io/config.mirror` and
//! owned by the Node. The mirror only reports status; deleting it brings a
//! fresh one back without touching the containers, removing the file stops
//! the pod.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, PodStatus, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::cri::Runtime;
use crate::pod_worker::{self, Shared};

/// On a mirror pod: the hash (UID) of the static pod it mirrors.
pub const ANNOTATION_MIRROR: &str = "kubernetes.io/config.mirror";
/// On static and mirror pods: the static pod's hash.
pub const ANNOTATION_HASH: &str = "kubernetes.io/config.hash";
/// Where the pod came from (`file` here; `api` for ordinary pods upstream).
pub const ANNOTATION_SOURCE: &str = "kubernetes.io/config.source";
const SOURCE_FILE: &str = "file";

/// How often the directory is read (kubelet: 20 s; edits show sooner here).
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Parse { path: PathBuf, msg: String },
}

/// Whether `pod` is a mirror pod (the API's copy of a static pod).
pub fn is_mirror(pod: &Pod) -> bool {
    annotation(pod, ANNOTATION_MIRROR).is_some()
}

/// Whether `pod` is a static pod this agent runs from a file.
pub fn is_static(pod: &Pod) -> bool {
    annotation(pod, ANNOTATION_SOURCE) == Some(SOURCE_FILE) && !is_mirror(pod)
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn is_manifest(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    // Editors' swap and backup files start with a dot, as kubelet ignores them.
    !name.starts_with('.')
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

/// Hex SHA-256 of `bytes`, cut to 32 characters (the length of kubelet's
/// MD5-based hashes, which is what tools expect in a UID).
fn hash(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads one manifest into the static pod this node runs.
pub fn load(path: &Path, node_name: &str) -> Result<Pod, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, node_name).map_err(|msg| ManifestError::Parse {
        path: path.to_path_buf(),
        msg,
    })
}

/// The static pod from a manifest's text (YAML or JSON, one Pod).
pub fn parse(text: &str, node_name: &str) -> Result<Pod, String> {
    // YAML is a superset of JSON, so one parser reads both.
    let mut value: serde_json::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    match value.get("kind").and_then(|k| k.as_str()) {
        Some("Pod") => {}
        Some(other) => return Err(format!("kind {other:?} is not a Pod")),
        None => return Err("no kind: a static pod manifest holds one Pod".into()),
    }
    let meta = value
        .get_mut("metadata")
        .and_then(|m| m.as_object_mut())
        .ok_or("no metadata")?;
    let name = meta
        .get("name")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .ok_or("no metadata.name")?
        .to_string();
    meta.insert("name".into(), format!("{name}-{node_name}").into());
    if meta
        .get("namespace")
        .and_then(|n| n.as_str())
        .is_none_or(str::is_empty)
    {
        meta.insert("namespace".into(), "default".into());
    }
    // Status, UID and the like in the file mean nothing here.
    for k in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
        meta.remove(k);
    }
    if let Some(v) = value.as_object_mut() {
        v.remove("status");
    }
    let mut pod: Pod = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let spec = pod.spec.as_mut().ok_or("no spec")?;
    if spec.containers.is_empty() {
        return Err("spec.containers: Required value".into());
    }
    spec.node_name = Some(node_name.to_string());
    // As upstream: a static pod stays on its node whatever the taints say.
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        });
    let canonical = serde_json::to_vec(&pod).map_err(|e| e.to_string())?;
    let uid = hash(&canonical);
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(ANNOTATION_HASH.into(), uid.clone());
    annotations.insert(ANNOTATION_SOURCE.into(), SOURCE_FILE.into());
    pod.metadata.uid = Some(uid);
    Ok(pod)
}

/// Every static pod in `dir` by `namespace/name`, and what could not be read.
pub fn scan(dir: &Path, node_name: &str) -> (BTreeMap<String, Pod>, Vec<ManifestError>) {
    let mut pods = BTreeMap::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // No directory: no static pods.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (pods, errors),
        Err(source) => {
            errors.push(ManifestError::Read {
                path: dir.to_path_buf(),
                source,
            });
            return (pods, errors);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_manifest(p) && p.is_file())
        .collect();
    paths.sort();
    for path in paths {
        match load(&path, node_name) {
            Ok(pod) => {
                let key = key(&pod);
                match pods.entry(key) {
                    std::collections::btree_map::Entry::Occupied(e) => {
                        errors.push(ManifestError::Parse {
                            path,
                            msg: format!("pod {} is already defined by another manifest", e.key()),
                        })
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(pod);
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    (pods, errors)
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The mirror pod the API shows for `pod`, owned by the node.
pub fn mirror_of(pod: &Pod, node_name: &str, node_uid: &str) -> Pod {
    let mut m = pod.clone();
    m.metadata.uid = None;
    m.metadata.resource_version = None;
    m.status = None;
    let hash = pod.metadata.uid.clone().unwrap_or_default();
    m.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_MIRROR.into(), hash);
    m.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.to_string(),
        uid: node_uid.to_string(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    m
}

/// What the rest of the agent needs to know about static pods.
#[derive(Clone, Default)]
pub struct Handle {
    /// UIDs of static pods whose workers still run (counted: an edit back
    /// and forth may briefly run two workers for one UID).
    uids: Arc<Mutex<HashMap<String, usize>>>,
    nudge: Arc<Notify>,
}

impl Handle {
    /// Static pod UIDs, which the orphan sweep must leave alone.
    pub fn uids(&self) -> HashSet<String> {
        self.uids
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A mirror pod changed in the API: reconcile now rather than at the next poll.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }
}

struct Running {
    uid: String,
    /// The static pod as last handed to its worker.
    sent: Pod,
    tx: watch::Sender<Option<Pod>>,
}

struct Manager<R> {
    shared: Arc<Shared<R>>,
    dir: PathBuf,
    node_name: String,
    handle: Handle,
    running: HashMap<String, Running>,
    /// Manifest errors already logged (logged again only when they change).
    reported: HashSet<String>,
    /// Every worker, stopping ones included; they end with the manager
    /// (an agent that stops leaves the pods running, as kubelet does).
    workers: JoinSet<()>,
}

/// Reads the directory once and starts the workers of its pods (so their
/// containers are known before the orphan sweep), then keeps watching it in
/// `tasks`.
pub fn start<R: Runtime>(
    shared: Arc<Shared<R>>,
    dir: PathBuf,
    node_name: String,
    tasks: &mut JoinSet<()>,
) -> Handle {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "creating the pod manifest directory");
    }
    let mut m = Manager {
        shared,
        dir,
        node_name,
        handle: Handle::default(),
        running: HashMap::new(),
        reported: HashSet::new(),
        workers: JoinSet::new(),
    };
    let handle = m.handle.clone();
    let _ = m.sync_files();
    tasks.spawn(async move { m.run().await });
    handle
}

impl<R: Runtime> Manager<R> {
    async fn run(mut self) {
        // Mirrors of manifests removed while the agent was down.
        let mut list_mirrors = true;
        loop {
            while self.workers.try_join_next().is_some() {}
            // A stopped pod's mirror goes too.
            let stopped = self.sync_files();
            self.sync_mirrors(list_mirrors || stopped).await;
            tokio::select! {
                () = tokio::time::sleep(POLL) => list_mirrors = false,
                () = self.handle.nudge.notified() => list_mirrors = true,
            }
        }
    }

    /// Starts, replaces and stops workers to match the directory; true
    /// when one was stopped.
    fn sync_files(&mut self) -> bool {
        let (desired, errors) = scan(&self.dir, &self.node_name);
        let now: HashSet<String> = errors.iter().map(|e| e.to_string()).collect();
        for e in &now {
            if !self.reported.contains(e) {
                tracing::warn!(error = %e, "skipping a static pod manifest");
            }
        }
        self.reported = now;
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(k, r)| {
                desired
                    .get(*k)
                    .is_none_or(|p| p.metadata.uid.as_deref() != Some(r.uid.as_str()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let stopped = !stale.is_empty();
        for k in stale {
            if let Some(r) = self.running.remove(&k) {
                tracing::info!(pod = %k, uid = %r.uid, "static pod manifest removed or changed: stopping the pod");
                // The worker stops the containers within the grace period, as
                // for a deleted API pod, and then ends.
                let mut gone = r.sent.clone();
                gone.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
                r.tx.send_replace(Some(gone));
            }
        }
        for (k, pod) in desired {
            if self.running.contains_key(&k) {
                continue;
            }
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            tracing::info!(pod = %k, %uid, "starting a static pod");
            let (tx, rx) = watch::channel(Some(pod.clone()));
            if let Ok(mut m) = self.handle.uids.lock() {
                *m.entry(uid.clone()).or_default() += 1;
            }
            let (shared, uids, done) = (self.shared.clone(), self.handle.uids.clone(), uid.clone());
            // A stopping worker outlives its entry in `running`: it ends by
            // itself once the pod is cleaned up.
            self.workers.spawn(async move {
                pod_worker::run(shared, rx).await;
                if let Ok(mut m) = uids.lock()
                    && let Some(n) = m.get_mut(&done)
                {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&done);
                    }
                }
            });
            self.running.insert(k, Running { uid, sent: pod, tx });
        }
        stopped
    }

    /// Creates, replaces and removes mirror pods; hands each worker its
    /// mirror's status (what it compares its own against).
    async fn sync_mirrors(&mut self, list: bool) {
        let client = self.shared.client.clone();
        if list {
            let all: Api<Pod> = Api::all(client.clone());
            let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.node_name));
            match all.list(&lp).await {
                Ok(pods) => {
                    for m in pods.items.iter().filter(|p| is_mirror(p)) {
                        if !self.running.contains_key(&key(m)) {
                            tracing::info!(pod = %key(m), "deleting the mirror of a removed static pod");
                            delete_mirror(&client, m).await;
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "listing mirror pods"),
            }
        }
        let mut node_uid: Option<String> = None;
        for (k, r) in &mut self.running {
            let ns = r.sent.metadata.namespace.as_deref().unwrap_or("default");
            let name = r.sent.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let current = match api.get_opt(&name).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(pod = %k, error = %e, "reading the mirror pod");
                    continue;
                }
            };
            let status = match current {
                Some(m) if !is_mirror(&m) => {
                    // An ordinary pod took the name; leave it alone (kubelet does too).
                    tracing::debug!(pod = %k, "a pod that is not a mirror has the static pod's name");
                    continue;
                }
                Some(m)
                    if m.metadata.deletion_timestamp.is_none()
                        && annotation(&m, ANNOTATION_MIRROR) == Some(r.uid.as_str()) =>
                {
                    m.status
                }
                other => {
                    if let Some(old) = &other {
                        delete_mirror(&client, old).await;
                    }
                    if node_uid.is_none() {
                        let nodes: Api<Node> = Api::all(client.clone());
                        node_uid = match nodes.get(&self.node_name).await {
                            Ok(n) => n.metadata.uid,
                            Err(e) => {
                                tracing::debug!(error = %e, "reading the node for a mirror pod");
                                continue;
                            }
                        };
                    }
                    let mirror =
                        mirror_of(&r.sent, &self.node_name, node_uid.as_deref().unwrap_or(""));
                    match api.create(&PostParams::default(), &mirror).await {
                        Ok(_) => tracing::info!(pod = %k, "created the mirror pod"),
                        Err(e) => tracing::debug!(pod = %k, error = %e, "creating the mirror pod"),
                    }
                    // A new mirror has no status: the worker writes it afresh.
                    None::<PodStatus>
                }
            };
            if r.sent.status != status {
                r.sent.status = status;
                r.tx.send_replace(Some(r.sent.clone()));
            }
        }
    }
}

/// Deletes a mirror pod at once (its containers belong to the static pod).
async fn delete_mirror(client: &kube::Client, m: &Pod) {
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        m.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: m.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api
        .delete(m.metadata.name.as_deref().unwrap_or_default(), &dp)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::debug!(pod = %key(m), error = %e, "deleting a mirror pod"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: app
    image: busybox
    command: [sleep, '3600']
";

    #[test]
    fn manifest_becomes_a_node_bound_static_pod() {
        let p = parse(MANIFEST, "n1").unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("web-n1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some("n1"));
        let uid = p.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        assert_eq!(annotation(&p, ANNOTATION_HASH), Some(uid.as_str()));
        assert!(is_static(&p) && !is_mirror(&p));
        // Stable across reads (an agent restart adopts), different per node and content.
        assert_eq!(
            parse(MANIFEST, "n1").unwrap().metadata.uid,
            Some(uid.clone())
        );
        assert_ne!(
            parse(MANIFEST, "n2").unwrap().metadata.uid,
            Some(uid.clone())
        );
        let edited = MANIFEST.replace("3600", "3601");
        assert_ne!(
            parse(&edited, "n1").unwrap().metadata.uid,
            Some(uid.clone())
        );
        // JSON reads the same.
        let json =
            serde_json::to_string(&serde_yaml::from_str::<serde_json::Value>(MANIFEST).unwrap())
                .unwrap();
        assert_eq!(parse(&json, "n1").unwrap().metadata.uid, Some(uid.clone()));

        let m = mirror_of(&p, "n1", "node-uid");
        assert!(is_mirror(&m) && !is_static(&m));
        assert_eq!(annotation(&m, ANNOTATION_MIRROR), Some(uid.as_str()));
        assert!(m.metadata.uid.is_none());
        let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Node", "n1", "node-uid")
        );
    }

    #[test]
    fn bad_manifests_are_reported_and_skipped() {
        assert!(
            parse("kind: Deployment\nmetadata: {name: x}\n", "n")
                .unwrap_err()
                .contains("Deployment")
        );
        assert!(
            parse(
                "kind: Pod\nmetadata: {}\nspec: {containers: [{name: a}]}\n",
                "n"
            )
            .is_err()
        );
        assert!(
            parse(
                "kind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n",
                "n"
            )
            .is_err()
        );
        assert!(parse(": : :", "n").is_err());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "kind: Pod\n").unwrap();
        std::fs::write(dir.path().join(".web.yaml.swp"), MANIFEST).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        std::fs::write(dir.path().join("dup.json"), MANIFEST).unwrap();
        let (pods, errors) = scan(dir.path(), "n1");
        assert_eq!(pods.keys().collect::<Vec<_>>(), vec!["default/web-n1"]);
        let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("bad.yaml")));
        assert!(errors.iter().any(|e| e.contains("already defined")));
        // No directory is no static pods, not an error.
        let (pods, errors) = scan(&dir.path().join("missing"), "n1");
        assert!(pods.is_empty() && errors.is_empty());
    }
}
