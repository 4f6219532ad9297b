//! A stand-in for the host's resolver, for the cluster DNS tests and
//! `bench dns`: answers `A` for `*.example.org` with 192.0.2.7 (TTL 60),
//! NODATA for other types there, NXDOMAIN for anything else, and counts
//! the queries it got.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    pub task: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    pub async fn start() -> std::io::Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = sock.local_addr()?;
        let queries = Arc::new(AtomicUsize::new(0));
        let count = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut resp = Message::response(req.metadata.id, OpCode::Query);
                resp.queries = req.queries.clone();
                resp.metadata.recursion_available = true;
                match req.queries.first() {
                    Some(q)
                        if q.name().to_ascii().ends_with("example.org.")
                            && q.query_type() == RecordType::A =>
                    {
                        resp.add_answer(Record::from_rdata(
                            q.name().clone(),
                            60,
                            RData::A(A::new(192, 0, 2, 7)),
                        ));
                    }
                    Some(q) if q.name().to_ascii().ends_with("example.org.") => {}
                    _ => resp.metadata.response_code = ResponseCode::NXDomain,
                }
                if let Ok(out) = resp.to_vec() {
                    let _ = sock.send_to(&out, peer).await;
                }
            }
        });
        Ok(Self {
            addr,
            queries,
            task,
        })
    }

    pub fn count(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
