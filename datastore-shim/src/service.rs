//! gRPC front ends of the KV, Lease, Maintenance and Cluster services.
//! Reads are served from the in-memory store; writes go through the writer.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::backend::now_ms;
use crate::error::Error;
use crate::proto::cluster_server::Cluster;
use crate::proto::kv_server::Kv;
use crate::proto::lease_server::Lease;
use crate::proto::maintenance_server::Maintenance;
use crate::proto::*;
use crate::shared::{RAFT_TERM, Shared};
use crate::txn;
use crate::writer::{WriteOp, WriteReply, Writer};

/// etcd's default `--max-request-bytes`.
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// etcd lets gRPC messages exceed the request limit by this much.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// etcd's maximum lease TTL in seconds.
const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// etcd's minimum lease TTL with default election settings (1.5 s, rounded up).
const MIN_LEASE_TTL: i64 = 2;
/// The etcd API version we implement, as reported by Status.
pub const API_VERSION: &str = "3.4.0";

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Implements every service; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub shared: Arc<Shared>,
    pub writer: Writer,
    /// How often idle watches that asked for progress notifications get one.
    pub progress_notify_interval: std::time::Duration,
}

impl Services {
    fn done<T>(&self, method: &'static str, r: Result<T, Error>) -> Result<Response<T>, Status> {
        match r {
            Ok(v) => {
                self.shared.metrics.count(method, tonic::Code::Ok);
                Ok(Response::new(v))
            }
            Err(e) => {
                self.shared.metrics.count(method, e.code());
                Err(e.into())
            }
        }
    }

    fn check_size<M: Message>(m: &M) -> Result<(), Error> {
        if m.encoded_len() > MAX_REQUEST_BYTES {
            return Err(Error::RequestTooLarge);
        }
        Ok(())
    }

    async fn write(&self, op: WriteOp) -> Result<WriteReply, Error> {
        self.writer.submit(op).await
    }
}

/// Bytes per Snapshot message (etcd sends 32 KiB chunks too).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

impl Services {
    /// A consistent copy of the database in a temp file next to it (same
    /// filesystem, so no surprise about /tmp's size), and its length.
    async fn snapshot_file(&self) -> Result<(tempfile::NamedTempFile, u64), Error> {
        let db = &self.shared.db;
        let dir = db
            .sqlite_path()
            .await
            .and_then(|p| p.parent().map(|d| d.to_path_buf()))
            .unwrap_or_else(std::env::temp_dir);
        let file = tempfile::Builder::new()
            .prefix(".snapshot-")
            .tempfile_in(&dir)?;
        db.backup_to(file.path()).await?;
        let size = std::fs::metadata(file.path())?.len();
        Ok((file, size))
    }
}

fn unexpected() -> Error {
    Error::Unavailable("internal: unexpected writer reply".into())
}

#[tonic::async_trait]
impl Kv for Services {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let r = req.into_inner();
        let res = (|| {
            txn::validate_range(&r)?;
            let store = self.shared.read();
            let rev = store.read_rev(r.revision, false)?;
            let mut resp = txn::range(&store, &r, rev, store.committed_rev());
            drop(store);
            self.shared.fill(&mut resp.header);
            Ok(resp)
        })();
        self.done("Range", res)
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let r = req.into_inner();
        let res = async {
            Self::check_size(&r)?;
            txn::validate_put(&r)?;
            match self.write(WriteOp::Put(r)).await? {
                WriteReply::Put(mut resp) => {
                    self.shared.fill(&mut resp.header);
                    Ok(resp)
                }
                _ => Err(unexpected()),
            }
        }
        .await;
        self.done("Put", res)
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let r = req.into_inner();
        let res = async {
            Self::check_size(&r)?;
            txn::validate_delete(&r)?;
            match self.write(WriteOp::DeleteRange(r)).await? {
                WriteReply::DeleteRange(mut resp) => {
                    self.shared.fill(&mut resp.header);
                    Ok(resp)
                }
                _ => Err(unexpected()),
            }
        }
        .await;
        self.done("DeleteRange", res)
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let t = req.into_inner();
        let res = async {
            Self::check_size(&t)?;
            txn::validate_txn(&t)?;
            let mut resp = if txn::txn_writes(&t) {
                match self.write(WriteOp::Txn(t)).await? {
                    WriteReply::Txn(resp) => resp,
                    _ => return Err(unexpected()),
                }
            } else {
                txn::read_txn(&self.shared.read(), &t)?
            };
            self.shared.fill(&mut resp.header);
            Ok(resp)
        }
        .await;
        self.done("Txn", res)
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let r = req.into_inner();
        let res = async {
            match self.write(WriteOp::Compact(r.revision)).await? {
                WriteReply::Compacted { rev } => Ok(CompactionResponse {
                    header: Some(self.shared.header(rev)),
                }),
                _ => Err(unexpected()),
            }
        }
        .await;
        self.done("Compact", res)
    }
}

#[tonic::async_trait]
impl Lease for Services {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let r = req.into_inner();
        let res = async {
            if r.ttl > MAX_LEASE_TTL {
                return Err(Error::LeaseTtlTooLarge);
            }
            let id = if r.id == 0 {
                // Positive, never 0 (0 means "no lease").
                (rand::random::<u64>() >> 1).max(1) as i64
            } else {
                r.id
            };
            let ttl = r.ttl.max(MIN_LEASE_TTL);
            match self.write(WriteOp::LeaseGrant { id, ttl }).await? {
                WriteReply::LeaseGranted { id, ttl, rev } => Ok(LeaseGrantResponse {
                    header: Some(self.shared.header(rev)),
                    id,
                    ttl,
                    error: String::new(),
                }),
                _ => Err(unexpected()),
            }
        }
        .await;
        self.done("LeaseGrant", res)
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let r = req.into_inner();
        let res = async {
            match self.write(WriteOp::LeaseRevoke(r.id)).await? {
                WriteReply::LeaseRevoked { rev } => Ok(LeaseRevokeResponse {
                    header: Some(self.shared.header(rev)),
                }),
                _ => Err(unexpected()),
            }
        }
        .await;
        self.done("LeaseRevoke", res)
    }

    type LeaseKeepAliveStream = ResponseStream<LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        let shutdown = self.shared.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = inbound.next() => m,
                    _ = crate::shared::stopped(shutdown.clone()) => None,
                };
                let Some(Ok(r)) = msg else { break };
                let out = match this.write(WriteOp::LeaseKeepAlive(r.id)).await {
                    Ok(WriteReply::KeptAlive { ttl, rev }) => Ok(LeaseKeepAliveResponse {
                        header: Some(this.shared.header(rev)),
                        id: r.id,
                        ttl,
                    }),
                    Ok(_) => Err(Status::from(unexpected())),
                    Err(e) => Err(Status::from(e)),
                };
                let failed = out.is_err();
                if tx.send(out).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let res = async {
            let rev = self.shared.read().committed_rev();
            let lease = self.shared.db.lease(r.id).await?;
            let Some((granted, expiry)) = lease else {
                return Ok(LeaseTimeToLiveResponse {
                    header: Some(self.shared.header(rev)),
                    id: r.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                });
            };
            // Whole seconds left, rounded down as etcd does.
            let remaining = (expiry - now_ms()).max(0) / 1000;
            let keys = if r.keys {
                self.shared.read().keys_of_lease(r.id)
            } else {
                Vec::new()
            };
            Ok(LeaseTimeToLiveResponse {
                header: Some(self.shared.header(rev)),
                id: r.id,
                ttl: remaining.min(granted),
                granted_ttl: granted,
                keys,
            })
        }
        .await;
        self.done("LeaseTimeToLive", res)
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let res = async {
            let rev = self.shared.read().committed_rev();
            let leases = self.shared.db.leases().await?;
            Ok(LeaseLeasesResponse {
                header: Some(self.shared.header(rev)),
                leases: leases
                    .into_iter()
                    .map(|(id, _)| LeaseStatus { id })
                    .collect(),
            })
        }
        .await;
        self.done("LeaseLeases", res)
    }
}

#[tonic::async_trait]
impl Maintenance for Services {
    async fn alarm(&self, _req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let rev = self.shared.read().committed_rev();
        self.done(
            "Alarm",
            Ok(AlarmResponse {
                header: Some(self.shared.header(rev)),
                alarms: Vec::new(),
            }),
        )
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let rev = self.shared.read().committed_rev();
        let db_size = self.shared.db.size().await.max(1);
        let in_use = self.shared.read().approx_bytes().max(1);
        let errors = if self.shared.readiness.is_ready() {
            Vec::new()
        } else {
            vec!["database unavailable".to_string()]
        };
        self.done(
            "Status",
            Ok(StatusResponse {
                header: Some(self.shared.header(rev)),
                version: API_VERSION.to_string(),
                db_size,
                leader: self.shared.member_id,
                raft_index: rev as u64,
                raft_term: RAFT_TERM,
                raft_applied_index: rev as u64,
                errors,
                db_size_in_use: in_use.min(db_size),
                is_learner: false,
            }),
        )
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let rev = self.shared.read().committed_rev();
        self.done(
            "Defragment",
            Ok(DefragmentResponse {
                header: Some(self.shared.header(rev)),
            }),
        )
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let store = self.shared.read();
        let rev = store.committed_rev();
        let hash = store.hash_kv(rev);
        drop(store);
        self.done(
            "Hash",
            Ok(HashResponse {
                header: Some(self.shared.header(rev)),
                hash,
            }),
        )
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let r = req.into_inner();
        let res = (|| {
            let store = self.shared.read();
            let at = store.read_rev(r.revision, false)?;
            let resp = HashKvResponse {
                header: Some(self.shared.header(store.committed_rev())),
                hash: store.hash_kv(at),
                // etcd reports -1 until the first compaction.
                compact_revision: match store.compacted_rev() {
                    0 => -1,
                    rev => rev,
                },
            };
            Ok(resp)
        })();
        self.done("HashKV", res)
    }

    type SnapshotStream = ResponseStream<SnapshotResponse>;

    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let res = self.snapshot_file().await;
        let (file, size) = match res {
            Ok(v) => v,
            Err(e) => {
                self.shared.metrics.count("Snapshot", e.code());
                return Err(e.into());
            }
        };
        self.shared.metrics.count("Snapshot", tonic::Code::Ok);
        let header = self.shared.header(self.shared.read().committed_rev());
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let path = file.path().to_path_buf();
            let mut f = match tokio::fs::File::open(&path).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::internal(format!("reading the snapshot: {e}"))))
                        .await;
                    return;
                }
            };
            let mut remaining = size;
            let mut first = true;
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                let n = match f.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("reading the snapshot: {e}"))))
                            .await;
                        return;
                    }
                };
                buf.truncate(n);
                remaining = remaining.saturating_sub(n as u64);
                let msg = SnapshotResponse {
                    header: first.then_some(header),
                    remaining_bytes: remaining,
                    blob: buf.into(),
                };
                first = false;
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            // The temp file goes when `file` drops, after the last chunk.
            drop(file);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        _req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.done(
            "MoveLeader",
            Err(Error::Unimplemented("there is no raft leader to move")),
        )
    }
}

#[tonic::async_trait]
impl Cluster for Services {
    async fn member_add(
        &self,
        _req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.done(
            "MemberAdd",
            Err(Error::Unimplemented(
                "membership is managed by the SQL database",
            )),
        )
    }

    async fn member_remove(
        &self,
        _req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.done(
            "MemberRemove",
            Err(Error::Unimplemented(
                "membership is managed by the SQL database",
            )),
        )
    }

    async fn member_update(
        &self,
        _req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.done(
            "MemberUpdate",
            Err(Error::Unimplemented(
                "membership is managed by the SQL database",
            )),
        )
    }

    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let rev = self.shared.read().committed_rev();
        let name = std::env::var("HOSTNAME").unwrap_or_else(|_| "k3rs-datastore".into());
        self.done(
            "MemberList",
            Ok(MemberListResponse {
                header: Some(self.shared.header(rev)),
                members: vec![Member {
                    id: self.shared.member_id,
                    name,
                    peer_ur_ls: Vec::new(),
                    client_ur_ls: vec![self.shared.client_url.clone()],
                    is_learner: false,
                }],
            }),
        )
    }

    async fn member_promote(
        &self,
        _req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.done(
            "MemberPromote",
            Err(Error::Unimplemented(
                "membership is managed by the SQL database",
            )),
        )
    }
}
