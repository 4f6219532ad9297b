//! An in-memory [`Runtime`] for unit tests: sandboxes get IPs from
//! 10.99.0.0/24, containers run until a test makes them exit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::v1::{
    ContainerMetadata, ExecSyncResponse, ImageSpec, PodSandboxMetadata, PodSandboxNetworkStatus,
    VersionResponse,
};
use super::{
    Container, ContainerConfig, ContainerFilter, ContainerState, ContainerStatus, CriError, Image,
    PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxState, PodSandboxStatus, Runtime,
};

#[derive(Debug, Clone)]
struct FakeSandbox {
    id: String,
    metadata: Option<PodSandboxMetadata>,
    labels: HashMap<String, String>,
    state: PodSandboxState,
    ip: String,
    created_at: i64,
}

#[derive(Debug, Clone)]
struct FakeContainer {
    sandbox_id: String,
    status: ContainerStatus,
}

#[derive(Default)]
pub struct FakeRuntime {
    sandboxes: Mutex<BTreeMap<String, FakeSandbox>>,
    containers: Mutex<BTreeMap<String, FakeContainer>>,
    images: Mutex<Vec<String>>,
    /// Images whose pull fails with NotFound, as from a registry without them.
    missing_images: Mutex<std::collections::HashSet<String>>,
    next: AtomicU64,
    /// What `ExecSync` answers per container name (exit code, output);
    /// unset names answer exit 0.
    exec_results: Mutex<HashMap<String, (i32, String)>>,
    /// Every call, in order, for assertions ("CreateContainer app", ...).
    pub calls: Mutex<Vec<String>>,
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

fn labels_match(have: &HashMap<String, String>, want: &HashMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&self, s: String) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(s);
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Makes pulls of `image` fail (true) or work again (false).
    pub fn set_missing(&self, image: &str, missing: bool) {
        if let Ok(mut m) = self.missing_images.lock() {
            if missing {
                m.insert(image.to_string());
            } else {
                m.remove(image);
            }
        }
    }

    /// Makes a running container exit with `code`.
    pub fn exit(&self, name: &str, code: i32) {
        let mut cs = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        for c in cs.values_mut() {
            let same = c.status.metadata.as_ref().is_some_and(|m| m.name == name);
            if same && c.status.state == ContainerState::ContainerRunning as i32 {
                c.status.state = ContainerState::ContainerExited as i32;
                c.status.exit_code = code;
                c.status.finished_at = now_nanos();
                c.status.reason = if code == 0 { "Completed" } else { "Error" }.into();
            }
        }
    }

    /// Makes `ExecSync` in containers named `name` exit with `code` and print `output`.
    pub fn set_exec(&self, name: &str, code: i32, output: &str) {
        self.exec_results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), (code, output.to_string()));
    }

    /// Containers currently running, by name.
    pub fn running(&self) -> Vec<String> {
        let cs = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        cs.values()
            .filter(|c| c.status.state == ContainerState::ContainerRunning as i32)
            .filter_map(|c| c.status.metadata.as_ref().map(|m| m.name.clone()))
            .collect()
    }

    fn id(&self, prefix: &str) -> String {
        format!("{prefix}{:04}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn not_found(call: &'static str) -> CriError {
        CriError::Rpc {
            call,
            status: Box::new(tonic::Status::not_found("no such object")),
        }
    }
}

impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<VersionResponse, CriError> {
        Ok(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            runtime_version: "1.0".into(),
            runtime_api_version: "v1".into(),
        })
    }

    async fn ready(&self) -> Result<(bool, String), CriError> {
        Ok((true, String::new()))
    }

    async fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<String, CriError> {
        let id = self.id("sb");
        let n = self.next.load(Ordering::Relaxed) % 250 + 2;
        self.record(format!(
            "RunPodSandbox {}",
            config
                .metadata
                .as_ref()
                .map(|m| m.name.as_str())
                .unwrap_or("")
        ));
        let sb = FakeSandbox {
            id: id.clone(),
            metadata: config.metadata,
            labels: config.labels,
            state: PodSandboxState::SandboxReady,
            ip: format!("10.99.0.{n}"),
            created_at: now_nanos(),
        };
        self.sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), sb);
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.record(format!("StopPodSandbox {id}"));
        if let Some(sb) = self
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)
        {
            sb.state = PodSandboxState::SandboxNotready;
        }
        let mut cs = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        for c in cs.values_mut().filter(|c| c.sandbox_id == id) {
            if c.status.state == ContainerState::ContainerRunning as i32 {
                c.status.state = ContainerState::ContainerExited as i32;
                c.status.exit_code = 137;
                c.status.finished_at = now_nanos();
            }
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.record(format!("RemovePodSandbox {id}"));
        self.sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, c| c.sandbox_id != id);
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, CriError> {
        let sbs = self.sandboxes.lock().unwrap_or_else(|e| e.into_inner());
        let sb = sbs.get(id).ok_or(Self::not_found("PodSandboxStatus"))?;
        Ok(PodSandboxStatus {
            id: sb.id.clone(),
            metadata: sb.metadata.clone(),
            state: sb.state as i32,
            created_at: sb.created_at,
            network: Some(PodSandboxNetworkStatus {
                ip: sb.ip.clone(),
                additional_ips: vec![],
            }),
            labels: sb.labels.clone(),
            ..Default::default()
        })
    }

    async fn list_pod_sandboxes(
        &self,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, CriError> {
        let f = filter.unwrap_or_default();
        let sbs = self.sandboxes.lock().unwrap_or_else(|e| e.into_inner());
        Ok(sbs
            .values()
            .filter(|s| labels_match(&s.labels, &f.label_selector))
            .filter(|s| f.state.is_none_or(|st| st.state == s.state as i32))
            .map(|s| PodSandbox {
                id: s.id.clone(),
                metadata: s.metadata.clone(),
                state: s.state as i32,
                created_at: s.created_at,
                labels: s.labels.clone(),
                ..Default::default()
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        _sandbox_config: PodSandboxConfig,
    ) -> Result<String, CriError> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        self.record(format!("CreateContainer {name}"));
        let id = self.id("c");
        let status = ContainerStatus {
            id: id.clone(),
            metadata: config
                .metadata
                .or(Some(ContainerMetadata { name, attempt: 0 })),
            state: ContainerState::ContainerCreated as i32,
            created_at: now_nanos(),
            image: config.image.clone(),
            image_ref: config
                .image
                .map(|i| format!("sha256:{}", i.image.len()))
                .unwrap_or_default(),
            labels: config.labels,
            annotations: config.annotations,
            ..Default::default()
        };
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.clone(),
                FakeContainer {
                    sandbox_id: sandbox_id.to_string(),
                    status,
                },
            );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut cs = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        let c = cs.get_mut(id).ok_or(Self::not_found("StartContainer"))?;
        c.status.state = ContainerState::ContainerRunning as i32;
        c.status.started_at = now_nanos();
        let name = c.status.metadata.as_ref().map(|m| m.name.clone());
        drop(cs);
        self.record(format!("StartContainer {}", name.unwrap_or_default()));
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), CriError> {
        let mut cs = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        let c = cs.get_mut(id).ok_or(Self::not_found("StopContainer"))?;
        if c.status.state == ContainerState::ContainerRunning as i32 {
            c.status.state = ContainerState::ContainerExited as i32;
            c.status.exit_code = 137;
            c.status.finished_at = now_nanos();
        }
        let name = c.status.metadata.as_ref().map(|m| m.name.clone());
        drop(cs);
        self.record(format!(
            "StopContainer {} {timeout_secs}",
            name.unwrap_or_default()
        ));
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        self.record(format!("RemoveContainer {id}"));
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    async fn list_containers(
        &self,
        filter: Option<ContainerFilter>,
    ) -> Result<Vec<Container>, CriError> {
        let f = filter.unwrap_or_default();
        let cs = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cs
            .values()
            .filter(|c| labels_match(&c.status.labels, &f.label_selector))
            .filter(|c| f.pod_sandbox_id.is_empty() || c.sandbox_id == f.pod_sandbox_id)
            .map(|c| Container {
                id: c.status.id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: c.status.metadata.clone(),
                image: c.status.image.clone(),
                image_ref: c.status.image_ref.clone(),
                state: c.status.state,
                created_at: c.status.created_at,
                labels: c.status.labels.clone(),
                annotations: c.status.annotations.clone(),
            })
            .collect())
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus, CriError> {
        let cs = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        cs.get(id)
            .map(|c| c.status.clone())
            .ok_or(Self::not_found("ContainerStatus"))
    }

    async fn image_status(&self, image: &str) -> Result<Option<Image>, CriError> {
        let imgs = self.images.lock().unwrap_or_else(|e| e.into_inner());
        Ok(imgs.iter().find(|i| *i == image).map(|i| Image {
            id: format!("sha256:{}", i.len()),
            repo_tags: vec![i.clone()],
            spec: Some(ImageSpec {
                image: i.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<crate::cri::v1::AuthConfig>,
        _sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String, CriError> {
        match &auth {
            Some(a) => self.record(format!("PullImage {image} as {}", a.username)),
            None => self.record(format!("PullImage {image}")),
        }
        let missing = self
            .missing_images
            .lock()
            .map(|m| m.contains(image))
            .unwrap_or(false);
        if missing {
            return Err(CriError::Rpc {
                call: "PullImage",
                status: Box::new(tonic::Status::not_found(format!(
                    "failed to pull and unpack image \"{image}\": not found"
                ))),
            });
        }
        let mut imgs = self.images.lock().unwrap_or_else(|e| e.into_inner());
        if !imgs.iter().any(|i| i == image) {
            imgs.push(image.to_string());
        }
        Ok(format!("sha256:{}", image.len()))
    }

    async fn list_images(&self) -> Result<Vec<Image>, CriError> {
        let imgs = self.images.lock().unwrap_or_else(|e| e.into_inner());
        Ok(imgs
            .iter()
            .map(|i| Image {
                id: format!("sha256:{}", i.len()),
                repo_tags: vec![i.clone()],
                ..Default::default()
            })
            .collect())
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        _timeout: std::time::Duration,
    ) -> Result<ExecSyncResponse, CriError> {
        let name = {
            let cs = self.containers.lock().unwrap_or_else(|e| e.into_inner());
            let c = cs.get(id).ok_or(Self::not_found("ExecSync"))?;
            if c.status.state != ContainerState::ContainerRunning as i32 {
                return Err(CriError::Rpc {
                    call: "ExecSync",
                    status: Box::new(tonic::Status::failed_precondition(
                        "container is not running",
                    )),
                });
            }
            c.status
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default()
        };
        self.record(format!("ExecSync {name} {}", cmd.join(" ")));
        let (code, out) = self
            .exec_results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .cloned()
            .unwrap_or((0, String::new()));
        Ok(ExecSyncResponse {
            stdout: out.into_bytes(),
            stderr: Vec::new(),
            exit_code: code,
        })
    }
}
