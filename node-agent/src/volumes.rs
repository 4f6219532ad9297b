//! Pod volumes on the node: emptyDir (disk, or tmpfs with `medium:
//! Memory`), hostPath (with its `type` checks), persistentVolumeClaim bound
//! to a hostPath or local PV, configMap, secret, downwardAPI and projected
//! (service-account token from TokenRequest, kube-root-ca.crt, namespace),
//! materialised under
//! `<root-dir>/pods/<uid>/volumes/<plugin>/<name>` and bind-mounted.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::Api;
use kube::api::PostParams;

use crate::cri::v1::Mount;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("volume {volume}: {message}")]
    Other { volume: String, message: String },
    #[error("volume {volume}: {source}")]
    Io {
        volume: String,
        source: std::io::Error,
    },
    #[error("{}", api_message(.0))]
    Api(#[from] kube::Error),
    #[error("persistentvolumeclaim \"{0}\" not found")]
    ClaimNotFound(String),
    #[error("persistentvolumeclaim \"{0}\" is not bound")]
    ClaimNotBound(String),
    #[error("unable to find volume {0:?} named in volumeMounts")]
    UnknownVolume(String),
}

/// The apiserver's own message ("serviceaccounts \"default\" not found"), as kubelet shows it.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// A service-account token and when to fetch a fresh one.
#[derive(Debug, Clone)]
struct CachedToken {
    token: Vec<u8>,
    refresh_at: std::time::Instant,
}

/// The volume directories of every pod on this node.
#[derive(Debug, Clone)]
pub struct Volumes {
    pub pods_dir: PathBuf,
    /// Tokens by pod uid, volume and path; reused until 80% of their lifetime
    /// has passed, as kubelet does, rather than minted on every pass.
    tokens: Arc<Mutex<HashMap<String, CachedToken>>>,
}

fn io(volume: &str) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        volume: volume.to_string(),
        source,
    }
}

/// Writes `files` (relative path → bytes) into `dir`, removing others; only
/// changed files are rewritten.
fn write_files(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    mode: u32,
    volume: &str,
) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir).map_err(io(volume))?;
    for (rel, data) in files {
        if rel.contains("..") || rel.starts_with('/') {
            return Err(VolumeError::Other {
                volume: volume.into(),
                message: format!("invalid path {rel:?}"),
            });
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(volume))?;
        }
        if std::fs::read(&path).ok().as_deref() != Some(data.as_slice()) {
            let tmp = path.with_extension("k3rs-tmp");
            std::fs::write(&tmp, data).map_err(io(volume))?;
            std::fs::rename(&tmp, &path).map_err(io(volume))?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io(volume))?;
    }
    // Keys that disappeared from the source disappear from the volume.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let kept = files
                .keys()
                .any(|k| k == &name || k.starts_with(&format!("{name}/")));
            if !kept {
                let _ = if e.path().is_dir() {
                    std::fs::remove_dir_all(e.path())
                } else {
                    std::fs::remove_file(e.path())
                };
            }
        }
    }
    Ok(())
}

fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    what: &str,
) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
    let Some(items) = items else {
        return Ok(data);
    };
    let mut out = BTreeMap::new();
    for it in items {
        match data.get(&it.key) {
            Some(v) => {
                out.insert(it.path.clone(), v.clone());
            }
            None if optional => {}
            None => {
                return Err(VolumeError::Other {
                    volume: what.into(),
                    message: format!("key {:?} not found", it.key),
                });
            }
        }
    }
    Ok(out)
}

async fn config_map(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?.map(|cm| {
        let mut m: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        for (k, v) in cm.binary_data.unwrap_or_default() {
            m.insert(k, v.0);
        }
        m
    }))
}

async fn secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?.map(|s| {
        let mut m: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in s.string_data.unwrap_or_default() {
            m.insert(k, v.into_bytes());
        }
        m
    }))
}

fn downward(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    host_ip: &str,
    volume: &str,
) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
    let mut out = BTreeMap::new();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            crate::env::field_value(pod, &f.field_path, host_ip).map_err(|e| {
                VolumeError::Other {
                    volume: volume.into(),
                    message: e.to_string(),
                }
            })?
        } else {
            String::new()
        };
        out.insert(it.path.clone(), value.into_bytes());
    }
    Ok(out)
}

async fn token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<String>,
    expiration_secs: i64,
) -> Result<Vec<u8>, VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration_secs),
            bound_object_ref: Some(k8s_openapi::api::authentication::v1::BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let resp: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &req)
        .await?;
    Ok(resp
        .status
        .map(|s| s.token)
        .unwrap_or_default()
        .into_bytes())
}

/// kubelet's hostPath `type` checks; the `...OrCreate` types create.
fn check_host_path(path: &Path, kind: &str, volume: &str) -> Result<(), VolumeError> {
    use std::os::unix::fs::FileTypeExt;
    let failed = |what: &str| VolumeError::Other {
        volume: volume.into(),
        message: format!(
            "hostPath type check failed: {} is not {what}",
            path.display()
        ),
    };
    let meta = std::fs::metadata(path);
    let ft = meta.as_ref().ok().map(|m| m.file_type());
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if ft.is_some_and(|t| !t.is_dir()) {
                return Err(failed("a directory"));
            }
            std::fs::create_dir_all(path).map_err(io(volume))?;
            // As kubelet: a created directory is 0755.
            Ok(())
        }
        "FileOrCreate" => {
            match ft {
                Some(t) if t.is_dir() => return Err(failed("a file")),
                Some(_) => {}
                None => {
                    if let Some(p) = path.parent() {
                        std::fs::create_dir_all(p).map_err(io(volume))?;
                    }
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(io(volume))?;
                }
            }
            Ok(())
        }
        "Directory" if ft.is_some_and(|t| t.is_dir()) => Ok(()),
        "Directory" => Err(failed("a directory")),
        "File" if ft.is_some_and(|t| t.is_file()) => Ok(()),
        "File" => Err(failed("a file")),
        "Socket" if ft.is_some_and(|t| t.is_socket()) => Ok(()),
        "Socket" => Err(failed("a socket file")),
        "CharDevice" if ft.is_some_and(|t| t.is_char_device()) => Ok(()),
        "CharDevice" => Err(failed("a character device")),
        "BlockDevice" if ft.is_some_and(|t| t.is_block_device()) => Ok(()),
        "BlockDevice" => Err(failed("a block device")),
        other => Err(VolumeError::Other {
            volume: volume.into(),
            message: format!("hostPath type {other:?} is not supported"),
        }),
    }
}

/// The host directory behind a claim: PVC → bound PV → its hostPath or
/// local path (the only kinds a single node can serve itself).
async fn claim_path(
    client: &kube::Client,
    ns: &str,
    claim: &str,
    volume: &str,
) -> Result<PathBuf, VolumeError> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let Some(pvc) = pvcs.get_opt(claim).await? else {
        return Err(VolumeError::ClaimNotFound(claim.into()));
    };
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| !n.is_empty());
    let Some(pv_name) = pv_name.filter(|_| phase == Some("Bound")) else {
        return Err(VolumeError::ClaimNotBound(claim.into()));
    };
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let Some(pv) = pvs.get_opt(&pv_name).await? else {
        return Err(VolumeError::Other {
            volume: volume.into(),
            message: format!("persistentvolume {pv_name:?} bound to claim {claim:?} not found"),
        });
    };
    let spec = pv.spec.unwrap_or_default();
    if let Some(hp) = &spec.host_path {
        let path = PathBuf::from(&hp.path);
        check_host_path(&path, hp.type_.as_deref().unwrap_or_default(), volume)?;
        return Ok(path);
    }
    if let Some(local) = &spec.local {
        let path = PathBuf::from(&local.path);
        if !path.exists() {
            return Err(VolumeError::Other {
                volume: volume.into(),
                message: format!(
                    "local volume {pv_name:?}: path {} does not exist",
                    local.path
                ),
            });
        }
        return Ok(path);
    }
    Err(VolumeError::Other {
        volume: volume.into(),
        message: format!(
            "persistentvolume {pv_name:?}: only hostPath and local volumes are supported by k3rs-node-agent"
        ),
    })
}

/// Whether something is mounted exactly at `dir`.
fn is_mount_point(dir: &Path) -> bool {
    let want = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .any(|p| p == want)
    })
}

/// `emptyDir: {medium: Memory}`: a tmpfs capped at `sizeLimit` (kubelet
/// leaves it uncapped without one; the pod's memory limit still counts it).
fn mount_tmpfs(dir: &Path, size: Option<u64>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if is_mount_point(dir) {
        return Ok(());
    }
    let mut opts = "mode=1777".to_string();
    if let Some(bytes) = size {
        opts += &format!(",size={bytes}");
    }
    let c = |s: &str| {
        std::ffi::CString::new(s)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (src, target, fstype, data) = (
        c("tmpfs")?,
        c(&dir.display().to_string())?,
        c("tmpfs")?,
        c(&opts)?,
    );
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts everything under `dir` (memory-backed emptyDirs), deepest first,
/// so the directory can be removed.
fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let Ok(target) = std::ffi::CString::new(p) else {
            continue;
        };
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            tracing::warn!(mount = p, error = %std::io::Error::last_os_error(), "unmounting a pod volume");
        }
    }
}

impl Volumes {
    pub fn new(root_dir: &Path) -> Self {
        Self {
            pods_dir: root_dir.join("pods"),
            tokens: Arc::default(),
        }
    }

    /// `<root-dir>/pods`: one directory per pod UID.
    pub fn pods_dir(&self) -> &Path {
        &self.pods_dir
    }

    fn dir(&self, uid: &str, plugin: &str, name: &str) -> PathBuf {
        self.pods_dir
            .join(uid)
            .join("volumes")
            .join(plugin)
            .join(name)
    }

    /// Removes the pod's volume directories (after its containers are gone).
    pub fn remove(&self, uid: &str) {
        if uid.is_empty() {
            return;
        }
        if let Ok(mut m) = self.tokens.lock() {
            m.retain(|k, _| !k.starts_with(&format!("{uid}/")));
        }
        let dir = self.pods_dir.join(uid);
        unmount_under(&dir);
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "removing pod volumes");
        }
    }

    async fn materialize(
        &self,
        client: &kube::Client,
        pod: &Pod,
        v: &Volume,
        host_ip: &str,
    ) -> Result<(PathBuf, bool), VolumeError> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = v.name.as_str();
        if let Some(hp) = &v.host_path {
            let path = PathBuf::from(&hp.path);
            check_host_path(&path, hp.type_.as_deref().unwrap_or_default(), name)?;
            return Ok((path, false));
        }
        if let Some(claim) = &v.persistent_volume_claim {
            let path = claim_path(client, ns, &claim.claim_name, name).await?;
            return Ok((path, claim.read_only.unwrap_or(false)));
        }
        if let Some(ed) = &v.empty_dir
            && ed.medium.as_deref() == Some("Memory")
        {
            let dir = self.dir(uid, "kubernetes.io~empty-dir", name);
            let limit = ed
                .size_limit
                .as_ref()
                .and_then(|q| crate::resources::parse_quantity(&q.0))
                .map(|b| b as u64);
            mount_tmpfs(&dir, limit).map_err(io(name))?;
            return Ok((dir, false));
        }
        if v.empty_dir.is_some() {
            let dir = self.dir(uid, "kubernetes.io~empty-dir", name);
            std::fs::create_dir_all(&dir).map_err(io(name))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(io(name))?;
            return Ok((dir, false));
        }
        if let Some(cm) = &v.config_map {
            let dir = self.dir(uid, "kubernetes.io~configmap", name);
            let optional = cm.optional.unwrap_or(false);
            let data = match config_map(client, ns, &cm.name).await? {
                Some(d) => d,
                None if optional => BTreeMap::new(),
                None => return Err(VolumeError::ConfigMapNotFound(cm.name.clone())),
            };
            let files = select(data, cm.items.as_ref(), optional, name)?;
            write_files(&dir, &files, cm.default_mode.unwrap_or(0o644) as u32, name)?;
            return Ok((dir, true));
        }
        if let Some(s) = &v.secret {
            let dir = self.dir(uid, "kubernetes.io~secret", name);
            let sname = s.secret_name.clone().unwrap_or_default();
            let optional = s.optional.unwrap_or(false);
            let data = match secret(client, ns, &sname).await? {
                Some(d) => d,
                None if optional => BTreeMap::new(),
                None => return Err(VolumeError::SecretNotFound(sname)),
            };
            let files = select(data, s.items.as_ref(), optional, name)?;
            write_files(&dir, &files, s.default_mode.unwrap_or(0o644) as u32, name)?;
            return Ok((dir, true));
        }
        if let Some(d) = &v.downward_api {
            let dir = self.dir(uid, "kubernetes.io~downward-api", name);
            let files = downward(pod, d.items.as_deref().unwrap_or_default(), host_ip, name)?;
            write_files(&dir, &files, d.default_mode.unwrap_or(0o644) as u32, name)?;
            return Ok((dir, true));
        }
        if let Some(p) = &v.projected {
            let dir = self.dir(uid, "kubernetes.io~projected", name);
            let mut files = BTreeMap::new();
            for src in p.sources.iter().flatten() {
                if let Some(cm) = &src.config_map {
                    let optional = cm.optional.unwrap_or(false);
                    match config_map(client, ns, &cm.name).await? {
                        Some(d) => files.extend(select(d, cm.items.as_ref(), optional, name)?),
                        None if optional => {}
                        None => return Err(VolumeError::ConfigMapNotFound(cm.name.clone())),
                    }
                }
                if let Some(s) = &src.secret {
                    let optional = s.optional.unwrap_or(false);
                    match secret(client, ns, &s.name).await? {
                        Some(d) => files.extend(select(d, s.items.as_ref(), optional, name)?),
                        None if optional => {}
                        None => return Err(VolumeError::SecretNotFound(s.name.clone())),
                    }
                }
                if let Some(d) = &src.downward_api {
                    files.extend(downward(
                        pod,
                        d.items.as_deref().unwrap_or_default(),
                        host_ip,
                        name,
                    )?);
                }
                if let Some(t) = &src.service_account_token {
                    let key = format!("{uid}/{name}/{}", t.path);
                    let cached = self
                        .tokens
                        .lock()
                        .ok()
                        .and_then(|m| m.get(&key).cloned())
                        .filter(|c| c.refresh_at > std::time::Instant::now());
                    let tok = match cached {
                        Some(c) => c.token,
                        None => {
                            let secs = t.expiration_seconds.unwrap_or(3607).max(600);
                            let tok = token(client, pod, t.audience.clone(), secs).await?;
                            if let Ok(mut m) = self.tokens.lock() {
                                m.insert(
                                    key,
                                    CachedToken {
                                        token: tok.clone(),
                                        refresh_at: std::time::Instant::now()
                                            + std::time::Duration::from_secs(secs as u64 * 8 / 10),
                                    },
                                );
                            }
                            tok
                        }
                    };
                    files.insert(t.path.clone(), tok);
                }
            }
            write_files(&dir, &files, p.default_mode.unwrap_or(0o644) as u32, name)?;
            return Ok((dir, true));
        }
        Err(VolumeError::Other {
            volume: name.into(),
            message: "volume type not supported by k3rs-node-agent".into(),
        })
    }

    /// Prepares every volume the pod's containers mount; returns the CRI
    /// mounts per container name.
    pub async fn prepare(
        &self,
        client: &kube::Client,
        pod: &Pod,
        host_ip: &str,
    ) -> Result<HashMap<String, Vec<Mount>>, VolumeError> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(HashMap::new());
        };
        let mut ready: HashMap<String, (PathBuf, bool)> = HashMap::new();
        let mut out = HashMap::new();
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
        {
            let mut mounts = Vec::new();
            for vm in c.volume_mounts.iter().flatten() {
                if !ready.contains_key(&vm.name) {
                    let v = spec
                        .volumes
                        .iter()
                        .flatten()
                        .find(|v| v.name == vm.name)
                        .ok_or_else(|| VolumeError::UnknownVolume(vm.name.clone()))?;
                    let m = self.materialize(client, pod, v, host_ip).await?;
                    ready.insert(vm.name.clone(), m);
                }
                let Some((path, forced_ro)) = ready.get(&vm.name) else {
                    continue;
                };
                let mut host = path.clone();
                if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    if sub.contains("..") || sub.starts_with('/') {
                        return Err(VolumeError::Other {
                            volume: vm.name.clone(),
                            message: format!("invalid subPath {sub:?}"),
                        });
                    }
                    host = host.join(sub);
                    if !host.exists() {
                        std::fs::create_dir_all(&host).map_err(io(&vm.name))?;
                    }
                }
                mounts.push(Mount {
                    container_path: vm.mount_path.clone(),
                    host_path: host.display().to_string(),
                    readonly: vm.read_only.unwrap_or(false) || *forced_ro,
                    ..Default::default()
                });
            }
            out.insert(c.name.clone(), mounts);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_files_replaces_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = BTreeMap::new();
        files.insert("a".to_string(), b"1".to_vec());
        files.insert("sub/b".to_string(), b"2".to_vec());
        write_files(dir.path(), &files, 0o644, "v").unwrap();
        assert_eq!(std::fs::read(dir.path().join("sub/b")).unwrap(), b"2");
        files.remove("a");
        write_files(dir.path(), &files, 0o644, "v").unwrap();
        assert!(!dir.path().join("a").exists());
        let mut bad = BTreeMap::new();
        bad.insert("../x".to_string(), b"1".to_vec());
        assert!(write_files(dir.path(), &bad, 0o644, "v").is_err());
    }

    #[test]
    fn host_path_types() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let made = d.join("a/b");
        check_host_path(&made, "DirectoryOrCreate", "v").unwrap();
        assert!(made.is_dir());
        let file = d.join("c/f.txt");
        check_host_path(&file, "FileOrCreate", "v").unwrap();
        assert!(file.is_file());
        check_host_path(&file, "File", "v").unwrap();
        check_host_path(&made, "Directory", "v").unwrap();
        let sock = d.join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        check_host_path(&sock, "Socket", "v").unwrap();
        check_host_path(Path::new("/dev/null"), "CharDevice", "v").unwrap();
        for (path, kind, want) in [
            (&file, "Directory", "is not a directory"),
            (&made, "File", "is not a file"),
            (&file, "Socket", "is not a socket file"),
            (&sock, "CharDevice", "is not a character device"),
            (
                &PathBuf::from("/dev/null"),
                "BlockDevice",
                "is not a block device",
            ),
            (&d.join("missing"), "Directory", "is not a directory"),
            (&file, "DirectoryOrCreate", "is not a directory"),
            (&made, "FileOrCreate", "is not a file"),
            (&file, "Weird", "not supported"),
        ] {
            let e = check_host_path(path, kind, "v").unwrap_err().to_string();
            assert!(e.contains(want), "{kind} on {}: {e}", path.display());
        }
        check_host_path(&d.join("anything"), "", "v").unwrap();
    }

    #[test]
    fn select_items() {
        let mut data = BTreeMap::new();
        data.insert("k".to_string(), b"v".to_vec());
        let items = vec![KeyToPath {
            key: "k".into(),
            path: "p/q".into(),
            mode: None,
        }];
        let out = select(data.clone(), Some(&items), false, "v").unwrap();
        assert_eq!(out["p/q"], b"v");
        let missing = vec![KeyToPath {
            key: "nope".into(),
            path: "x".into(),
            mode: None,
        }];
        assert!(select(data.clone(), Some(&missing), false, "v").is_err());
        assert!(select(data, Some(&missing), true, "v").unwrap().is_empty());
    }
}
