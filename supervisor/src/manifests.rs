//! Auto-deploy manifests: every `*.yaml`, `*.yml` and `*.json` file in
//! `<data-dir>/server/manifests/` is applied with server-side apply (field
//! manager `k3rs-deploy`) once the API server is up, and again whenever the
//! file changes. As in K3s, namespaced objects without a namespace go to
//! `kube-system`, and a `NAME.yaml.skip` file beside `NAME.yaml` pauses it.
//!
//! Each file's outcome is kept in the ConfigMap `kube-system/k3rs-manifests`
//! (one key per file: its hash, the objects it created, the error if any) and
//! reported as an Event on that ConfigMap, so `kubectl describe configmap -n
//! kube-system k3rs-manifests` shows what happened. A bad file is reported
//! and the others still apply. `--disable NAME` skips `NAME.yaml` and deletes
//! the objects it deployed earlier (read back from the ConfigMap).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde::{Deserialize, Serialize};

/// Field manager of every apply, as the issue names it.
pub const FIELD_MANAGER: &str = "k3rs-deploy";
/// The status ConfigMap (in `kube-system`).
pub const STATUS_CONFIGMAP: &str = "k3rs-manifests";
const NAMESPACE: &str = "kube-system";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}")]
    Parse(String),
    #[error("document {index}: {message}")]
    Object { index: usize, message: String },
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One object a manifest created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

/// What the status ConfigMap records per file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStatus {
    /// SHA-256 of the file as last applied (or attempted).
    pub hash: String,
    #[serde(default)]
    pub objects: Vec<Applied>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A manifest file found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: PathBuf,
    /// File name, the ConfigMap key.
    pub key: String,
    /// The name `--disable` matches: the file name without its extension.
    pub name: String,
}

/// Manifests k3rs ships, by `--disable` name. Like K3s's bundled ones they
/// are (re)written into the manifests directory at start, and removed from
/// it when disabled, which then deletes what they deployed.
pub const BUNDLED: &[(&str, &str)] = &[("coredns", include_str!("../manifests/coredns.yaml"))];

/// Writes the bundled manifests into `dir` (only when changed, so the
/// applier does not see a new file every start) and drops disabled ones.
pub fn write_bundled(dir: &Path, disabled: &[String]) -> Result<(), ManifestError> {
    for (name, text) in BUNDLED {
        let path = dir.join(format!("{name}.yaml"));
        let io = |source| ManifestError::Io {
            path: path.clone(),
            source,
        };
        if disabled.iter().any(|d| d == name) {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => continue,
            }
        }
        if std::fs::read(&path).ok().as_deref() != Some(text.as_bytes()) {
            std::fs::write(&path, text).map_err(io)?;
        }
    }
    Ok(())
}

/// The manifest files of `dir` in name order (missing dir: none).
pub fn scan(dir: &Path) -> Vec<ManifestFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<ManifestFile> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let key = e.file_name().to_str()?.to_string();
            if key.starts_with('.') {
                return None;
            }
            let name = [".yaml", ".yml", ".json"]
                .iter()
                .find_map(|ext| key.strip_suffix(ext))?
                .to_string();
            Some(ManifestFile {
                path: e.path(),
                key,
                name,
            })
        })
        .collect();
    files.sort_by(|a, b| a.key.cmp(&b.key));
    files
}

/// The objects in a manifest: YAML documents (JSON is YAML), `List` kinds
/// flattened, empty documents skipped.
pub fn parse(text: &str) -> Result<Vec<serde_json::Value>, ManifestError> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = serde_json::Value::deserialize(doc).map_err(|e| {
            ManifestError::Parse(match e.location() {
                Some(l) => format!(
                    "document {}: line {} column {}: {e}",
                    i + 1,
                    l.line(),
                    l.column()
                ),
                None => format!("document {}: {e}", i + 1),
            })
        })?;
        match v {
            serde_json::Value::Null => {}
            serde_json::Value::Object(ref m)
                if m.get("kind").and_then(|k| k.as_str()) == Some("List") =>
            {
                if let Some(items) = m.get("items").and_then(|i| i.as_array()) {
                    out.extend(items.iter().cloned());
                }
            }
            v => out.push(v),
        }
    }
    Ok(out)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Applies the manifests directory to a cluster.
pub struct Deployer {
    client: kube::Client,
    dir: PathBuf,
    disabled: Vec<String>,
    recorder: Recorder,
}

impl Deployer {
    pub fn new(client: kube::Client, dir: PathBuf, disabled: Vec<String>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(k3rs_common::pki::hostname()),
            },
        );
        Self {
            client,
            dir,
            disabled,
            recorder,
        }
    }

    /// Applies at start and then every `interval` for changed files, until
    /// the task is dropped. Failures are logged and retried next round.
    pub async fn run(self, interval: Duration) {
        if let Err(e) = write_bundled(&self.dir, &self.disabled) {
            tracing::warn!(error = %e, "manifests: cannot write the bundled manifests");
        }
        loop {
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "manifests: cannot sync; retrying");
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// One pass over the directory. Per-file failures are recorded, not
    /// returned; an error means the status itself could not be read/written.
    pub async fn sync(&self) -> Result<(), ManifestError> {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), NAMESPACE);
        let mut status = self.load_status(&cms).await?;
        let before = status.clone();
        let files = scan(&self.dir);
        let mut discovery: Option<Discovery> = None;

        for file in &files {
            let skip = self.dir.join(format!("{}.skip", file.key));
            if self.disabled.contains(&file.name) || skip.exists() {
                continue;
            }
            let bytes = match std::fs::read(&file.path) {
                Ok(b) => b,
                Err(source) => {
                    tracing::warn!(file = %file.key, error = %source, "manifests: unreadable");
                    continue;
                }
            };
            let hash = sha256_hex(&bytes);
            if status
                .get(&file.key)
                .is_some_and(|s| s.hash == hash && s.error.is_none())
            {
                continue;
            }
            if discovery.is_none() {
                discovery = Some(Discovery::new(self.client.clone()).run().await?);
            }
            let Some(d) = discovery.as_ref() else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            let previous = status.get(&file.key).cloned().unwrap_or_default();
            let outcome = self.apply_file(d, &text).await;
            let entry = match outcome {
                Ok(objects) => {
                    tracing::info!(file = %file.key, objects = objects.len(), "manifests: applied");
                    self.event(
                        EventType::Normal,
                        "AppliedManifest",
                        format!("applied {} ({} objects)", file.key, objects.len()),
                    )
                    .await;
                    FileStatus {
                        hash,
                        objects,
                        error: None,
                    }
                }
                Err((objects, e)) => {
                    tracing::warn!(file = %file.key, error = %e, "manifests: failed");
                    self.event(
                        EventType::Warning,
                        "ApplyManifestFailed",
                        format!("{}: {e}", file.key),
                    )
                    .await;
                    // Keep the objects of earlier successful applies, so
                    // `--disable` can still remove them.
                    let mut all = previous.objects;
                    for o in objects {
                        if !all.contains(&o) {
                            all.push(o);
                        }
                    }
                    FileStatus {
                        hash,
                        objects: all,
                        error: Some(e.to_string()),
                    }
                }
            };
            status.insert(file.key.clone(), entry);
        }

        // Disabled manifests: remove what they deployed, then forget them.
        let disabled: Vec<String> = status
            .keys()
            .filter(|k| scan_name(k).is_some_and(|n| self.disabled.contains(&n)))
            .cloned()
            .collect();
        for key in disabled {
            let Some(st) = status.get(&key).cloned() else {
                continue;
            };
            if discovery.is_none() {
                discovery = Some(Discovery::new(self.client.clone()).run().await?);
            }
            let Some(d) = discovery.as_ref() else {
                continue;
            };
            let mut left = Vec::new();
            for o in &st.objects {
                if let Err(e) = self.delete(d, o).await {
                    tracing::warn!(file = %key, object = %o.name, error = %e, "manifests: cannot remove");
                    left.push(o.clone());
                }
            }
            if left.is_empty() {
                self.event(
                    EventType::Normal,
                    "RemovedManifest",
                    format!(
                        "{key} is disabled; removed its {} objects",
                        st.objects.len()
                    ),
                )
                .await;
                status.remove(&key);
            } else {
                status.insert(
                    key,
                    FileStatus {
                        objects: left,
                        ..st
                    },
                );
            }
        }

        if status != before {
            self.store_status(&cms, &status).await?;
        }
        Ok(())
    }

    /// Server-side applies every object of one file; on failure returns the
    /// objects applied so far with the error.
    async fn apply_file(
        &self,
        discovery: &Discovery,
        text: &str,
    ) -> Result<Vec<Applied>, (Vec<Applied>, ManifestError)> {
        let docs = parse(text).map_err(|e| (Vec::new(), e))?;
        let mut done = Vec::new();
        for (i, doc) in docs.into_iter().enumerate() {
            match self.apply_object(discovery, doc).await {
                Ok(a) => done.push(a),
                Err(message) => {
                    return Err((
                        done,
                        ManifestError::Object {
                            index: i + 1,
                            message,
                        },
                    ));
                }
            }
        }
        Ok(done)
    }

    async fn apply_object(
        &self,
        discovery: &Discovery,
        doc: serde_json::Value,
    ) -> Result<Applied, String> {
        let api_version = doc["apiVersion"]
            .as_str()
            .ok_or("apiVersion is missing")?
            .to_string();
        let kind = doc["kind"].as_str().ok_or("kind is missing")?.to_string();
        let name = doc["metadata"]["name"]
            .as_str()
            .ok_or("metadata.name is missing")?
            .to_string();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &kind);
        let (ar, caps) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| format!("the server has no resource for {api_version} {kind}"))?;
        let namespace = match caps.scope {
            Scope::Namespaced => Some(
                doc["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(NAMESPACE)
                    .to_string(),
            ),
            Scope::Cluster => None,
        };
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &pp, &Patch::Apply(&doc))
            .await
            .map_err(|e| format!("{kind} {name}: {}", api_error(&e)))?;
        Ok(Applied {
            api_version,
            kind,
            namespace,
            name,
        })
    }

    async fn delete(&self, discovery: &Discovery, o: &Applied) -> Result<(), String> {
        let (group, version) = match o.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", o.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &o.kind);
        let Some((ar, _)) = discovery.resolve_gvk(&gvk) else {
            // The kind is gone from the server, and its objects with it.
            return Ok(());
        };
        let api: Api<DynamicObject> = match &o.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        match api.delete(&o.name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_error(&e)),
        }
    }

    async fn load_status(
        &self,
        cms: &Api<ConfigMap>,
    ) -> Result<BTreeMap<String, FileStatus>, ManifestError> {
        let Some(cm) = cms.get_opt(STATUS_CONFIGMAP).await? else {
            return Ok(BTreeMap::new());
        };
        Ok(cm
            .data
            .unwrap_or_default()
            .into_iter()
            // An entry someone edited into garbage is re-applied.
            .filter_map(|(k, v)| Some((k, serde_json::from_str(&v).ok()?)))
            .collect())
    }

    async fn store_status(
        &self,
        cms: &Api<ConfigMap>,
        status: &BTreeMap<String, FileStatus>,
    ) -> Result<(), ManifestError> {
        let data: BTreeMap<String, String> = status
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_string(v).unwrap_or_default()))
            .collect();
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": STATUS_CONFIGMAP, "namespace": NAMESPACE},
            "data": data,
        });
        // Apply owns exactly the keys present, so removed files drop out.
        cms.patch(
            STATUS_CONFIGMAP,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await?;
        Ok(())
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), NAMESPACE);
        let uid = match cms.get_opt(STATUS_CONFIGMAP).await {
            Ok(Some(cm)) => cm.metadata.uid,
            Ok(None) => {
                // Events need an object to be about: create the status map early.
                let mut cm = ConfigMap::default();
                cm.metadata.name = Some(STATUS_CONFIGMAP.into());
                cms.create(&PostParams::default(), &cm)
                    .await
                    .ok()
                    .and_then(|c| c.metadata.uid)
            }
            Err(_) => None,
        };
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            name: Some(STATUS_CONFIGMAP.into()),
            namespace: Some(NAMESPACE.into()),
            uid,
            ..Default::default()
        };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Deploy".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, "manifests: cannot record event");
        }
    }
}

/// The `--disable` name of a status key (file name).
fn scan_name(key: &str) -> Option<String> {
    [".yaml", ".yml", ".json"]
        .iter()
        .find_map(|ext| key.strip_suffix(ext))
        .map(str::to_string)
}

fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// A client for the admin kubeconfig at `path`.
pub async fn client(path: &Path) -> Result<kube::Client, String> {
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_keeps_manifests_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "b.yaml",
            "a.json",
            "c.yml",
            "notes.txt",
            ".hidden.yaml",
            "a.yaml.skip",
        ] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let names: Vec<_> = scan(dir.path())
            .into_iter()
            .map(|f| (f.key, f.name))
            .collect();
        assert_eq!(
            names,
            [
                ("a.json".to_string(), "a".to_string()),
                ("b.yaml".into(), "b".into()),
                ("c.yml".into(), "c".into())
            ]
        );
        assert!(scan(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn bundled_manifests_are_written_and_disabled() {
        let dir = tempfile::tempdir().unwrap();
        write_bundled(dir.path(), &[]).unwrap();
        let text = std::fs::read_to_string(dir.path().join("coredns.yaml")).unwrap();
        let objs = parse(&text).unwrap();
        assert_eq!(objs[0]["metadata"]["name"], "kube-dns");
        assert_eq!(objs[0]["spec"]["clusterIP"], "10.43.0.10");
        assert_eq!(objs[0]["metadata"]["labels"]["k8s-app"], "kube-dns");
        let names: Vec<_> = scan(dir.path()).into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["coredns"]);
        write_bundled(dir.path(), &["coredns".into()]).unwrap();
        assert!(scan(dir.path()).is_empty());
        // Disabling twice (nothing left to remove) is fine.
        write_bundled(dir.path(), &["coredns".into()]).unwrap();
    }

    #[test]
    fn parse_splits_documents_and_lists() {
        let docs = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n",
        )
        .unwrap();
        let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ConfigMap", "Secret"]);
        let json =
            parse(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}"#).unwrap();
        assert_eq!(json.len(), 1);
        let err = parse("a: b\n---\nkind: [unclosed\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("document 2") && err.contains("line"), "{err}");
    }
}
