//! k3rs-datastore: a complete etcd v3 KV/Watch/Lease server over SQL
//! (SQLite by default, PostgreSQL, MySQL/MariaDB).
//!
//! Layout: `mvcc` (in-memory multi-version index) ← `txn` (etcd request
//! semantics) ← `writer` (group commit into the database through `backend`) ←
//! `service`/`watch` (gRPC). `follower` keeps instances that share a database
//! in step; `compactor` and `lease_expiry` are the periodic chores.

pub mod backend;
mod compactor;
pub mod config;
pub mod endpoint;
pub mod error;
mod follower;
mod lease_expiry;
mod metrics;
pub mod mvcc;
pub mod proto;
mod service;
mod shared;
pub mod txn;
mod watch;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::watch as tokio_watch;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

pub use config::{Config, TlsFiles};
pub use endpoint::Endpoint;
pub use error::Error;

use crate::backend::{Db, now_ms};
use crate::metrics::Metrics;
use crate::mvcc::Store;
use crate::proto::cluster_server::ClusterServer;
use crate::proto::kv_server::KvServer;
use crate::proto::lease_server::LeaseServer;
use crate::proto::maintenance_server::MaintenanceServer;
use crate::proto::watch_server::WatchServer;
use crate::service::{GRPC_OVERHEAD_BYTES, MAX_REQUEST_BYTES, Services};
use crate::shared::Shared;
use crate::writer::Writer;

/// A running datastore.
pub struct Server {
    grpc_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shutdown: tokio_watch::Sender<bool>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    writer: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    _health: Option<k3rs_common::HealthServer>,
}

impl Server {
    /// The bound TCP address of the gRPC listener (None for a unix socket).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// The bound address of the health/metrics listener, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, ends streams, lets queued writes finish, and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        match tokio::time::timeout(Duration::from_secs(10), self.grpc).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server ended with an error"),
            Err(_) => tracing::warn!("gRPC server did not drain within 10s"),
            _ => {}
        }
        for t in self.tasks {
            t.abort();
        }
        // All senders are gone once the services are dropped; the writer drains and exits.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.writer).await;
    }

    /// Waits until the gRPC server stops by itself (it only does on error).
    pub async fn wait(&mut self) -> Result<(), Error> {
        match (&mut self.grpc).await {
            Ok(r) => r.map_err(Error::from),
            Err(e) => Err(Error::Unavailable(format!("gRPC task failed: {e}"))),
        }
    }
}

/// Opens the database (retrying with back-off while it is unreachable).
async fn open_db(endpoint: &Endpoint) -> Db {
    let mut backoff =
        k3rs_common::Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    loop {
        match Db::open(endpoint).await {
            Ok(db) => return db,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    datastore = %endpoint.redacted(),
                    error = %e,
                    retry_in = ?delay,
                    "cannot open the database; retrying"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Loads the revision log into memory.
async fn load(db: &Db) -> Result<(Store, u64, Vec<mvcc::Rev>), Error> {
    let (rev, compacted, cluster_id) = db.meta().await?;
    let rows = db.rows_after(&db.pool, 0).await?;
    let mut store = Store::new(1, 0);
    store.apply_committed(rows);
    store.commit(rev);
    // Rows below the compaction point that a crash left behind are deleted again.
    let leftovers = store.compact(compacted);
    Ok((store, cluster_id as u64, leftovers))
}

/// Starts the datastore and returns once it accepts connections.
pub async fn start(config: Config) -> Result<Server, Error> {
    let endpoint = Endpoint::parse(&config.datastore_endpoint, &config.data_dir)?;
    let listen = config::Listen::parse(&config.listen_address)?;
    let tls = match &config.tls {
        Some(t) => Some(load_tls(t)?),
        None => None,
    };

    tracing::info!(datastore = %endpoint.redacted(), "opening datastore");
    let db = open_db(&endpoint).await;
    let started = std::time::Instant::now();
    db.extend_leases(now_ms()).await?;
    let (store, cluster_id, leftovers) = load(&db).await?;
    tracing::info!(
        revision = store.committed_rev(),
        compacted = store.compacted_rev(),
        keys = store.key_count(),
        took = ?started.elapsed(),
        "loaded revision log"
    );
    if !leftovers.is_empty() {
        let db = db.clone();
        tokio::spawn(async move {
            if let Err(e) = db.delete_revs(&leftovers).await {
                tracing::warn!(error = %e, "could not delete compacted rows");
            }
        });
    }

    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    metrics.revision.set(store.committed_rev());
    metrics.db_up.set(1);
    let readiness = k3rs_common::Readiness::default();
    let (shutdown_tx, shutdown_rx) = tokio_watch::channel(false);

    let (grpc_listener, grpc_addr, client_url) = listen.bind(tls.is_some()).await?;
    let member_id = member_id(&client_url);
    let shared = Shared::new(
        store,
        db,
        cluster_id,
        member_id,
        client_url.clone(),
        readiness.clone(),
        metrics,
        shutdown_rx,
    );
    let (writer, writer_task) = Writer::spawn(shared.clone());

    let mut tasks = Vec::new();
    if shared.db.dialect.shared() {
        tasks.push(tokio::spawn(follower::run(
            shared.clone(),
            endpoint.clone(),
        )));
    }
    tasks.push(tokio::spawn(lease_expiry::run(
        shared.clone(),
        writer.clone(),
    )));
    if !config.compact_interval.is_zero() {
        tasks.push(tokio::spawn(compactor::run(
            shared.clone(),
            writer.clone(),
            config.compact_interval,
        )));
    }

    let services = Services {
        shared: shared.clone(),
        writer,
        progress_notify_interval: config.progress_notify_interval,
    };
    let max_msg = MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES;
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let router = builder
        .add_service(KvServer::new(services.clone()).max_decoding_message_size(max_msg))
        .add_service(WatchServer::new(services.clone()).max_decoding_message_size(max_msg))
        .add_service(LeaseServer::new(services.clone()).max_decoding_message_size(max_msg))
        .add_service(ClusterServer::new(services.clone()))
        .add_service(MaintenanceServer::new(services));
    let mut stop = shared.shutdown.clone();
    let shutdown_signal = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let grpc = tokio::spawn(grpc_listener.serve(router, shutdown_signal));

    let health = match config.metrics_address {
        Some(addr) => Some(
            k3rs_common::HealthServer::bind(addr, Arc::new(registry), readiness.clone()).await?,
        ),
        None => None,
    };
    readiness.set(true);
    tracing::info!(listen = %client_url, "k3rs-datastore serving the etcd v3 API");
    Ok(Server {
        grpc_addr,
        metrics_addr: health.as_ref().map(|h| h.local_addr),
        shutdown: shutdown_tx,
        grpc,
        writer: writer_task,
        tasks,
        _health: health,
    })
}

/// Starts the datastore and serves until SIGTERM/SIGINT, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), Error> {
    let mut server = start(config).await?;
    let result = tokio::select! {
        r = server.wait() => r,
        _ = shutdown_signal() => Ok(()),
    };
    tracing::info!("shutting down");
    server.shutdown().await;
    result
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn load_tls(t: &TlsFiles) -> Result<ServerTlsConfig, Error> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Error::Config(format!("cannot read {}: {e}", p.display())))
    };
    let identity = Identity::from_pem(read(&t.cert_file)?, read(&t.key_file)?);
    let mut cfg = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &t.client_ca_file {
        cfg = cfg.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(cfg)
}

/// A stable member id derived from the client URL (FNV-1a), never 0.
fn member_id(url: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}
