//! The container runtime, reached over CRI v1 (gRPC on a unix socket).
//!
//! [`Runtime`] is the small surface the pod workers use; [`CriClient`] is the
//! real tonic implementation and [`fake::FakeRuntime`] an in-memory one for
//! unit tests of the sync logic.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Generated CRI v1 messages and clients.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

pub use v1::{
    Container, ContainerConfig, ContainerFilter, ContainerState, ContainerStatus, ExecSyncResponse,
    Image, PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxState, PodSandboxStatus,
    VersionResponse,
};

use v1::image_service_client::ImageServiceClient;
use v1::runtime_service_client::RuntimeServiceClient;

/// Labels the agent puts on sandboxes and containers, as kubelet does; they
/// are how a restarted agent finds what it already runs.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Marks what this agent created (kubelet uses the same key/value).
pub const LABEL_MANAGED: &str = "io.kubernetes.container.managed-by";
pub const MANAGED_BY: &str = "k3rs";

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("bad runtime endpoint {0:?}: only unix:// sockets are supported")]
    Endpoint(String),
    #[error("CRI {call}: {status}")]
    Rpc {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("CRI {0}: timed out")]
    Timeout(&'static str),
    #[error("CRI {0}: empty answer")]
    Empty(&'static str),
}

impl CriError {
    /// The runtime does not know the object (already gone).
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::Rpc { status, .. } if status.code() == tonic::Code::NotFound)
    }
}

/// What the agent needs from a container runtime.
pub trait Runtime: Send + Sync + 'static {
    fn version(&self) -> impl Future<Output = Result<VersionResponse, CriError>> + Send;
    /// Whether the runtime and its network are ready (CRI `Status` conditions).
    fn ready(&self) -> impl Future<Output = Result<(bool, String), CriError>> + Send;
    fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
    ) -> impl Future<Output = Result<String, CriError>> + Send;
    fn stop_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<(), CriError>> + Send;
    fn remove_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<(), CriError>> + Send;
    fn pod_sandbox_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<PodSandboxStatus, CriError>> + Send;
    fn list_pod_sandboxes(
        &self,
        filter: Option<PodSandboxFilter>,
    ) -> impl Future<Output = Result<Vec<PodSandbox>, CriError>> + Send;
    fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> impl Future<Output = Result<String, CriError>> + Send;
    fn start_container(&self, id: &str) -> impl Future<Output = Result<(), CriError>> + Send;
    /// Stops with SIGTERM, then SIGKILL after `timeout_secs`.
    fn stop_container(
        &self,
        id: &str,
        timeout_secs: i64,
    ) -> impl Future<Output = Result<(), CriError>> + Send;
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<(), CriError>> + Send;
    fn list_containers(
        &self,
        filter: Option<ContainerFilter>,
    ) -> impl Future<Output = Result<Vec<Container>, CriError>> + Send;
    fn container_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<ContainerStatus, CriError>> + Send;
    /// The image if present on the node.
    fn image_status(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<Image>, CriError>> + Send;
    /// Pulls (with registry credentials when given) and returns the image
    /// reference (digest).
    fn pull_image(
        &self,
        image: &str,
        auth: Option<v1::AuthConfig>,
        sandbox_config: Option<PodSandboxConfig>,
    ) -> impl Future<Output = Result<String, CriError>> + Send;
    fn list_images(&self) -> impl Future<Output = Result<Vec<Image>, CriError>> + Send;
    /// Runs `cmd` in the running container `id` to completion; `timeout` of
    /// zero waits for as long as it takes.
    fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecSyncResponse, CriError>> + Send;
}

/// A CRI client over a unix socket. Cloning is cheap (one shared channel).
#[derive(Clone)]
pub struct CriClient {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// Ordinary calls; a stop waits its grace period on top of this.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Pulls of large images over slow links.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

impl CriClient {
    /// A client for `unix:///path` (or a bare path). Connects lazily, so the
    /// agent can start before containerd and keep retrying.
    pub fn new(endpoint: &str) -> Result<Self, CriError> {
        let path = PathBuf::from(
            endpoint
                .strip_prefix("unix://")
                .unwrap_or(endpoint)
                .to_string(),
        );
        if endpoint.contains("://") && !endpoint.starts_with("unix://") || !path.is_absolute() {
            return Err(CriError::Endpoint(endpoint.to_string()));
        }
        // The URI is required by tonic but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://[::1]:0")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }));
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(channel).max_decoding_message_size(64 << 20),
        })
    }
}

async fn call<T, F>(name: &'static str, timeout: Duration, f: F) -> Result<T, CriError>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(CriError::Rpc {
            call: name,
            status: Box::new(status),
        }),
        Err(_) => Err(CriError::Timeout(name)),
    }
}

fn image_spec(image: &str) -> v1::ImageSpec {
    v1::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

impl Runtime for CriClient {
    async fn version(&self) -> Result<VersionResponse, CriError> {
        let mut c = self.runtime.clone();
        call(
            "Version",
            CALL_TIMEOUT,
            c.version(v1::VersionRequest {
                version: "v1".into(),
            }),
        )
        .await
    }

    async fn ready(&self) -> Result<(bool, String), CriError> {
        let mut c = self.runtime.clone();
        let r = call(
            "Status",
            CALL_TIMEOUT,
            c.status(v1::StatusRequest { verbose: false }),
        )
        .await?;
        let conds = r.status.map(|s| s.conditions).unwrap_or_default();
        let mut msgs = Vec::new();
        for c in &conds {
            if !c.status {
                msgs.push(format!(
                    "{} is not ready: {} {}",
                    c.r#type, c.reason, c.message
                ));
            }
        }
        Ok((msgs.is_empty() && !conds.is_empty(), msgs.join("; ")))
    }

    async fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<String, CriError> {
        let mut c = self.runtime.clone();
        let r = call(
            "RunPodSandbox",
            CALL_TIMEOUT * 4,
            c.run_pod_sandbox(v1::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }),
        )
        .await?;
        Ok(r.pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        call(
            "StopPodSandbox",
            CALL_TIMEOUT * 2,
            c.stop_pod_sandbox(v1::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }),
        )
        .await
        .map(drop)
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        call(
            "RemovePodSandbox",
            CALL_TIMEOUT,
            c.remove_pod_sandbox(v1::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }),
        )
        .await
        .map(drop)
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, CriError> {
        let mut c = self.runtime.clone();
        let r = call(
            "PodSandboxStatus",
            CALL_TIMEOUT,
            c.pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            }),
        )
        .await?;
        r.status.ok_or(CriError::Empty("PodSandboxStatus"))
    }

    async fn list_pod_sandboxes(
        &self,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, CriError> {
        let mut c = self.runtime.clone();
        let r = call(
            "ListPodSandbox",
            CALL_TIMEOUT,
            c.list_pod_sandbox(v1::ListPodSandboxRequest { filter }),
        )
        .await?;
        Ok(r.items)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut c = self.runtime.clone();
        let r = call(
            "CreateContainer",
            CALL_TIMEOUT * 2,
            c.create_container(v1::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            }),
        )
        .await?;
        Ok(r.container_id)
    }

    async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        call(
            "StartContainer",
            CALL_TIMEOUT * 2,
            c.start_container(v1::StartContainerRequest {
                container_id: id.to_string(),
            }),
        )
        .await
        .map(drop)
    }

    async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        let grace = Duration::from_secs(timeout_secs.max(0) as u64);
        call(
            "StopContainer",
            CALL_TIMEOUT + grace,
            c.stop_container(v1::StopContainerRequest {
                container_id: id.to_string(),
                timeout: timeout_secs.max(0),
            }),
        )
        .await
        .map(drop)
    }

    async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        call(
            "RemoveContainer",
            CALL_TIMEOUT,
            c.remove_container(v1::RemoveContainerRequest {
                container_id: id.to_string(),
            }),
        )
        .await
        .map(drop)
    }

    async fn list_containers(
        &self,
        filter: Option<ContainerFilter>,
    ) -> Result<Vec<Container>, CriError> {
        let mut c = self.runtime.clone();
        let r = call(
            "ListContainers",
            CALL_TIMEOUT,
            c.list_containers(v1::ListContainersRequest { filter }),
        )
        .await?;
        Ok(r.containers)
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus, CriError> {
        let mut c = self.runtime.clone();
        let r = call(
            "ContainerStatus",
            CALL_TIMEOUT,
            c.container_status(v1::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            }),
        )
        .await?;
        r.status.ok_or(CriError::Empty("ContainerStatus"))
    }

    async fn image_status(&self, image: &str) -> Result<Option<Image>, CriError> {
        let mut c = self.images.clone();
        let r = call(
            "ImageStatus",
            CALL_TIMEOUT,
            c.image_status(v1::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            }),
        )
        .await?;
        Ok(r.image)
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<v1::AuthConfig>,
        sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String, CriError> {
        let mut c = self.images.clone();
        let r = call(
            "PullImage",
            PULL_TIMEOUT,
            c.pull_image(v1::PullImageRequest {
                image: Some(image_spec(image)),
                auth,
                sandbox_config,
            }),
        )
        .await?;
        Ok(r.image_ref)
    }

    async fn list_images(&self) -> Result<Vec<Image>, CriError> {
        let mut c = self.images.clone();
        let r = call(
            "ListImages",
            CALL_TIMEOUT,
            c.list_images(v1::ListImagesRequest { filter: None }),
        )
        .await?;
        Ok(r.images)
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecSyncResponse, CriError> {
        let mut c = self.runtime.clone();
        // The runtime enforces `timeout`; ours only guards against a hung runtime.
        call(
            "ExecSync",
            CALL_TIMEOUT + timeout,
            c.exec_sync(v1::ExecSyncRequest {
                container_id: id.to_string(),
                cmd,
                timeout: timeout.as_secs() as i64,
            }),
        )
        .await
    }
}

/// Streaming and statistics calls only the kubelet API makes; they are not
/// part of [`Runtime`] because the pod workers never need them.
impl CriClient {
    /// A one-time URL on the runtime's streaming server running `cmd`.
    pub async fn exec(&self, req: v1::ExecRequest) -> Result<String, CriError> {
        let mut c = self.runtime.clone();
        Ok(call("Exec", CALL_TIMEOUT, c.exec(req)).await?.url)
    }

    pub async fn attach(&self, req: v1::AttachRequest) -> Result<String, CriError> {
        let mut c = self.runtime.clone();
        Ok(call("Attach", CALL_TIMEOUT, c.attach(req)).await?.url)
    }

    pub async fn port_forward(
        &self,
        sandbox_id: &str,
        ports: Vec<i32>,
    ) -> Result<String, CriError> {
        let mut c = self.runtime.clone();
        let req = v1::PortForwardRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            port: ports,
        };
        Ok(call("PortForward", CALL_TIMEOUT, c.port_forward(req))
            .await?
            .url)
    }

    /// Makes the runtime reopen a container's log file after a rotation.
    pub async fn reopen_container_log(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        call(
            "ReopenContainerLog",
            CALL_TIMEOUT,
            c.reopen_container_log(v1::ReopenContainerLogRequest {
                container_id: id.to_string(),
            }),
        )
        .await
        .map(drop)
    }

    pub async fn list_container_stats(&self) -> Result<Vec<v1::ContainerStats>, CriError> {
        let mut c = self.runtime.clone();
        let r = call(
            "ListContainerStats",
            CALL_TIMEOUT,
            c.list_container_stats(v1::ListContainerStatsRequest { filter: None }),
        )
        .await?;
        Ok(r.stats)
    }
}

#[path = "fake.rs"]
pub mod fake;
