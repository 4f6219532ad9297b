//! k3rs-apiserver: the Kubernetes API over the etcd v3 API.
//!
//! Layout: `server` (TLS + HTTP) → `authn` → routing here → `discovery` or
//! `rest` (generic verbs over the `resources` table) → `store` (writes, etcd)
//! and `watch_cache` (reads and watches). Per-kind knowledge lives in
//! k3rs-apimachinery and in small tables.

pub mod admission;
pub mod allocator;
pub mod authn;
pub mod bootstrap;
pub mod config;
pub mod conversion;
pub mod discovery;
pub mod http;
pub mod join;
pub mod managed_fields;
pub mod metrics;
pub mod object;
pub mod openapi;
pub mod proxy;
pub mod rbac;
pub mod request;
pub mod resources;
pub mod rest;
pub mod review;
pub mod sa_token;
pub mod schema;
pub mod server;
pub mod serviceaccount;
pub mod status;
pub mod store;
pub mod subresource;
pub mod table;
pub mod watch;
pub mod watch_cache;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{Cli, Config};

use crate::authn::{TokenAuthenticator, UserInfo};
use crate::store::Store;
use crate::watch_cache::WatchCache;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Pki(#[from] k3rs_common::pki::PkiError),
    #[error(transparent)]
    Tls(#[from] k3rs_common::tls::TlsError),
    #[error(transparent)]
    Authn(#[from] authn::AuthnError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The authorizer; RBAC replaces it in its own issue.
pub struct Authorizer;

impl Authorizer {
    pub fn allows(&self) -> (bool, &'static str) {
        (true, "AlwaysAllow")
    }
}

/// Everything a request handler needs.
pub struct Api {
    pub store: Store,
    pub cache: Arc<WatchCache>,
    pub tokens: TokenAuthenticator,
    pub authorizer: Authorizer,
    pub metrics: metrics::Metrics,
    pub advertise: String,
    pub ranges: allocator::ServiceRanges,
    pub sa: serviceaccount::Issuer,
    /// TLS for the kubelet API (logs, exec, attach, port-forward, node proxy).
    pub kubelet_tls: Arc<rustls::ClientConfig>,
    /// The `/v1-k3rs/` join endpoints.
    pub join: join::Join,
}

impl Api {
    /// Static tokens first, then service-account JWTs.
    pub async fn authenticate_token(&self, token: &str) -> Option<UserInfo> {
        if let Some(u) = self.tokens.authenticate(token) {
            return Some(u);
        }
        serviceaccount::authenticate(self, token).await
    }
}

/// A running API server.
pub struct Server {
    pub local_addr: SocketAddr,
    /// Path of the admin kubeconfig written into the cert dir.
    pub admin_kubeconfig: std::path::PathBuf,
    pub ca_file: std::path::PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub fn shutdown(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Connects to etcd, prepares certificates, syncs the watch cache and
/// starts serving.
pub async fn start(config: Config) -> Result<Server, Error> {
    let pki = bootstrap::ensure_pki(&config)?;
    let tls = k3rs_common::tls::server_config(
        &pki.serving_cert,
        &pki.serving_key,
        Some(&pki.client_ca),
        false,
        &[b"h2", b"http/1.1"],
    )?;
    let kubelet_tls = pki.kubelet_client.tls()?;
    let tokens = match &config.token_auth_file {
        Some(p) => TokenAuthenticator::load(p)?,
        None => TokenAuthenticator::default(),
    };
    let etcd_tls = config.etcd_ca.as_ref().map(|ca| store::EtcdTls {
        ca_file: ca.clone(),
        cert_file: config.etcd_cert.clone(),
        key_file: config.etcd_key.clone(),
    });
    let store = connect_with_retry(&config.etcd_servers, etcd_tls.as_ref()).await;
    let join = join::Join::load(&config, &pki.ca_cert)?;
    let sa = serviceaccount::Issuer::from_config(&config)
        .map_err(|e| Error::Config(format!("service-account keys: {e}")))?;
    let ranges = allocator::ServiceRanges::new(&config.service_cidr, config.node_port_range)
        .ok_or_else(|| Error::Config(format!("bad service range {}", config.service_cidr)))?;
    let cache = WatchCache::new();
    let mut tasks = vec![tokio::spawn(cache.clone().run(store.clone()))];
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| Error::Listen {
            addr: config.bind,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: config.bind,
        source,
    })?;
    pki.write_admin_kubeconfig(local_addr.port())?;
    let api = Arc::new(Api {
        store: store.clone(),
        cache: cache.clone(),
        tokens,
        authorizer: Authorizer,
        metrics: metrics::Metrics::default(),
        advertise: format!("{}:{}", config.advertise, local_addr.port()),
        ranges: ranges.clone(),
        sa,
        kubelet_tls,
        join,
    });
    tasks.push(tokio::spawn(allocator::run_repair(
        store.clone(),
        ranges,
        std::time::Duration::from_secs(180),
    )));
    tasks.push(tokio::spawn(bootstrap::run_system_objects(
        api.clone(),
        config.clone(),
        local_addr.port(),
    )));
    tasks.push(tokio::spawn(server::serve(listener, Arc::new(tls), api)));
    tracing::info!(address = %local_addr, "k3rs-apiserver serving");
    Ok(Server {
        local_addr,
        admin_kubeconfig: pki.admin_kubeconfig.clone(),
        ca_file: pki.ca_cert.clone(),
        tasks,
    })
}

async fn connect_with_retry(endpoints: &[String], tls: Option<&store::EtcdTls>) -> Store {
    let mut backoff = k3rs_common::Backoff::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(10),
    );
    loop {
        match Store::connect(endpoints, tls).await {
            Ok(s) => return s,
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?d, endpoints = ?endpoints, "cannot reach etcd yet");
                tokio::time::sleep(d).await;
            }
        }
    }
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), Error> {
    let server = start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown();
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
