//! The Watch service. One task per client stream owns all of the stream's
//! watches; each watch keeps only a position in the store's event log and
//! pulls from it when the committed revision moves, so a slow client costs a
//! cursor, never an unbounded queue.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::mvcc::{KeyRange, Rev};
use crate::proto::mvccpb::event::EventType;
use crate::proto::watch_create_request::FilterType;
use crate::proto::watch_request::RequestUnion;
use crate::proto::watch_server::Watch;
use crate::proto::{Event, WatchCreateRequest, WatchRequest, WatchResponse};
use crate::service::{GRPC_OVERHEAD_BYTES, MAX_REQUEST_BYTES, Services};

/// Events per response when catching up (a revision is never split).
const MAX_EVENTS_PER_RESPONSE: usize = 1000;

struct Watcher {
    range: KeyRange,
    next: Rev,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
    /// Whether anything was sent since the last progress tick.
    sent_since_tick: bool,
}

impl Watcher {
    fn keep(&self, ev: &Event) -> bool {
        let Some(kv) = &ev.kv else { return false };
        if !self.range.contains(&kv.key) {
            return false;
        }
        let is_put = ev.r#type == EventType::Put as i32;
        !(is_put && self.no_put || !is_put && self.no_delete)
    }
}

#[tonic::async_trait]
impl Watch for Services {
    type WatchStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<WatchResponse, Status>> + Send + 'static>,
    >;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(32);
        let this = self.clone();
        tokio::spawn(async move {
            let n = WatchStreamTask::run(this.clone(), inbound, tx).await;
            this.shared.metrics.watchers.dec_by(n);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct WatchStreamTask {
    svc: Services,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
}

impl WatchStreamTask {
    /// Serves one stream until the client or the server goes away; returns
    /// the number of watches still registered (for the gauge).
    async fn run(
        svc: Services,
        mut inbound: Streaming<WatchRequest>,
        tx: mpsc::Sender<Result<WatchResponse, Status>>,
    ) -> i64 {
        let mut committed = svc.shared.subscribe();
        let shutdown = svc.shared.shutdown.clone();
        let mut progress = tokio::time::interval(svc.progress_interval());
        progress.tick().await;
        let mut task = WatchStreamTask {
            svc,
            tx,
            watchers: BTreeMap::new(),
            next_id: 0,
        };
        loop {
            let ok = tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(req)) => task.handle(req).await,
                    _ => false,
                },
                changed = committed.changed() => changed.is_ok() && task.pump().await,
                _ = progress.tick() => task.progress_tick().await,
                _ = crate::shared::stopped(shutdown.clone()) => false,
            };
            if !ok {
                break;
            }
        }
        task.watchers.len() as i64
    }

    fn header(&self) -> Option<crate::proto::ResponseHeader> {
        let rev = self.svc.shared.read().committed_rev();
        Some(self.svc.shared.header(rev))
    }

    async fn send(&self, resp: WatchResponse) -> bool {
        self.tx.send(Ok(resp)).await.is_ok()
    }

    async fn handle(&mut self, req: WatchRequest) -> bool {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if self.watchers.remove(&c.watch_id).is_some() {
                    self.svc.shared.metrics.watchers.dec();
                    let resp = WatchResponse {
                        header: self.header(),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    return self.send(resp).await;
                }
                true
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Answered once for the whole stream (watch_id -1), after
                // everything up to the reported revision has been sent (the
                // revision is read first: the pump may only go further).
                let header = self.header();
                if !self.pump().await {
                    return false;
                }
                let resp = WatchResponse {
                    header,
                    watch_id: -1,
                    ..Default::default()
                };
                self.send(resp).await
            }
            None => true,
        }
    }

    async fn create(&mut self, c: WatchCreateRequest) -> bool {
        let range = KeyRange::new(c.key.clone(), c.range_end.clone());
        let empty_range =
            !c.range_end.is_empty() && c.range_end[..] != [0u8] && c.key >= c.range_end;
        // As in etcd: the range is checked before an id is taken, and a
        // refused watch is reported under id -1.
        let reason = if empty_range {
            Some("mvcc: watcher range is empty")
        } else if c.watch_id != 0 && self.watchers.contains_key(&c.watch_id) {
            Some("mvcc: duplicate watch ID provided on the WatchStream")
        } else {
            None
        };
        let id = if reason.is_some() {
            -1
        } else if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        };
        if let Some(reason) = reason {
            let resp = WatchResponse {
                header: self.header(),
                watch_id: id,
                created: true,
                canceled: true,
                cancel_reason: reason.to_string(),
                ..Default::default()
            };
            return self.send(resp).await;
        }
        let (committed, compacted) = {
            let s = self.svc.shared.read();
            (s.committed_rev(), s.compacted_rev())
        };
        let created = WatchResponse {
            header: Some(self.svc.shared.header(committed)),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        if !self.send(created).await {
            return false;
        }
        if c.start_revision != 0 && c.start_revision < compacted {
            // etcd reports the compaction with revision 0 in the header.
            let resp = WatchResponse {
                header: Some(self.svc.shared.header(0)),
                watch_id: id,
                canceled: true,
                compact_revision: compacted,
                ..Default::default()
            };
            return self.send(resp).await;
        }
        let start = if c.start_revision > 0 {
            c.start_revision
        } else {
            committed + 1
        };
        let filters: Vec<i32> = c.filters.clone();
        self.watchers.insert(
            id,
            Watcher {
                range,
                next: Rev {
                    main: start,
                    sub: 0,
                },
                prev_kv: c.prev_kv,
                no_put: filters.contains(&(FilterType::Noput as i32)),
                no_delete: filters.contains(&(FilterType::Nodelete as i32)),
                progress_notify: c.progress_notify,
                fragment: c.fragment,
                sent_since_tick: false,
            },
        );
        self.svc.shared.metrics.watchers.inc();
        self.pump().await
    }

    /// Sends every committed event each watch has not seen yet.
    async fn pump(&mut self) -> bool {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            loop {
                let (batch, header) = {
                    let Some(w) = self.watchers.get(&id) else {
                        break;
                    };
                    let store = self.svc.shared.read();
                    let (evs, next) =
                        store.events_since(w.next, MAX_EVENTS_PER_RESPONSE, |e| w.keep(e));
                    let rev = store.committed_rev();
                    (
                        (evs, next, next.main <= rev),
                        Some(self.svc.shared.header(rev)),
                    )
                };
                let (evs, next, more) = batch;
                let Some(w) = self.watchers.get_mut(&id) else {
                    break;
                };
                w.next = next;
                if evs.is_empty() {
                    if more {
                        continue;
                    }
                    break;
                }
                w.sent_since_tick = true;
                let prev_kv = w.prev_kv;
                let fragment = w.fragment;
                let events: Vec<Event> = evs
                    .into_iter()
                    .map(|r| {
                        let mut e = r.event;
                        if !prev_kv {
                            e.prev_kv = None;
                        }
                        e
                    })
                    .collect();
                if !self.send_events(id, header, events, fragment).await {
                    return false;
                }
                if !more {
                    break;
                }
            }
        }
        true
    }

    async fn send_events(
        &self,
        id: i64,
        header: Option<crate::proto::ResponseHeader>,
        events: Vec<Event>,
        fragment: bool,
    ) -> bool {
        let resp = WatchResponse {
            header,
            watch_id: id,
            events,
            ..Default::default()
        };
        // etcd fragments at its request limit plus the gRPC overhead allowance.
        let limit = MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES;
        if !fragment || resp.encoded_len() < limit || resp.events.len() < 2 {
            return self.send(resp).await;
        }
        // Split into fragments under the limit; all but the last are marked.
        let WatchResponse { header, events, .. } = resp;
        let mut parts: Vec<Vec<Event>> = vec![Vec::new()];
        let mut size = 0;
        for e in events {
            let len = e.encoded_len();
            if size + len >= limit && parts.last().is_some_and(|p| !p.is_empty()) {
                parts.push(Vec::new());
                size = 0;
            }
            size += len;
            if let Some(p) = parts.last_mut() {
                p.push(e);
            }
        }
        let n = parts.len();
        for (i, events) in parts.into_iter().enumerate() {
            let resp = WatchResponse {
                header,
                watch_id: id,
                fragment: i + 1 < n,
                events,
                ..Default::default()
            };
            if !self.send(resp).await {
                return false;
            }
        }
        true
    }

    /// Periodic progress notification for watches that asked for it and were idle.
    async fn progress_tick(&mut self) -> bool {
        // A notification at revision R promises every event up to R was
        // sent: send what is committed first (this tick may have won the
        // race against the commit notification).
        let header = self.header();
        if !self.pump().await {
            return false;
        }
        let mut idle = Vec::new();
        for (id, w) in self.watchers.iter_mut() {
            if w.progress_notify && !w.sent_since_tick {
                idle.push(*id);
            }
            w.sent_since_tick = false;
        }
        for id in idle {
            let resp = WatchResponse {
                header,
                watch_id: id,
                ..Default::default()
            };
            if !self.send(resp).await {
                return false;
            }
        }
        true
    }
}

impl Services {
    fn progress_interval(&self) -> Duration {
        self.progress_notify_interval
    }
}
