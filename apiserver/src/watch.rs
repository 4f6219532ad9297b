//! Watch responses: a stream of `{"type":..,"object":..}` lines fed from the
//! watch cache. A watcher that falls further behind than the cache's buffer
//! is ended (the client re-watches from its last resourceVersion), so a slow
//! client never grows memory.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::conversion;
use crate::http::Resp;
use crate::request::Query;
use crate::resources::ResourceDef;
use crate::rest::{Ctx, Filter};
use crate::status::{ApiError, ApiResult};
use crate::table;
use crate::watch_cache::{Entry, Event, EventKind, Start};

const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Watcher {
    res: &'static ResourceDef,
    filter: Filter,
    name: Option<String>,
    pending: VecDeque<Bytes>,
    rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    table: bool,
    query: Query,
    bookmarks: bool,
    last_rev: i64,
    deadline: tokio::time::Instant,
    next_bookmark: tokio::time::Instant,
    done: bool,
}

impl Watcher {
    fn matches(&self, e: &Entry) -> bool {
        self.filter.matches(e) && self.name.as_deref().is_none_or(|n| *e.name == *n)
    }

    fn line(&self, kind: &str, e: &Entry) -> Bytes {
        let mut out = Vec::with_capacity(e.raw.len() + 32);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        if self.table {
            let mut v = e.value().unwrap_or(Value::Null);
            conversion::served_value(self.res, &mut v);
            let t = table::table(self.res, &[v], e.rev, &self.query);
            out.extend_from_slice(&serde_json::to_vec(&t).unwrap_or_default());
        } else {
            out.extend_from_slice(&conversion::served_raw(self.res, &e.raw));
        }
        out.extend_from_slice(b"}\n");
        Bytes::from(out)
    }

    fn bookmark(&self, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": self.last_rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": meta});
        let mut b =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        b.push(b'\n');
        Bytes::from(b)
    }

    /// Turns a cache event into what this watcher sees: objects moving in or
    /// out of the selector appear as ADDED / DELETED.
    fn translate(&self, ev: &Event) -> Option<Bytes> {
        let now = self.matches(&ev.obj);
        let before = ev.prev.as_ref().is_some_and(|p| self.matches(p));
        let kind = match ev.kind {
            EventKind::Added if now => EventKind::Added,
            EventKind::Modified if now && before => EventKind::Modified,
            EventKind::Modified if now => EventKind::Added,
            EventKind::Modified if before => EventKind::Deleted,
            EventKind::Deleted if before || now => EventKind::Deleted,
            _ => return None,
        };
        Some(self.line(kind.as_str(), &ev.obj))
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            if self.done {
                return None;
            }
            let wake = if self.bookmarks {
                self.deadline.min(self.next_bookmark)
            } else {
                self.deadline
            };
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(ev) => {
                        if ev.rev <= self.last_rev {
                            continue;
                        }
                        self.last_rev = ev.rev;
                        if let Some(b) = self.translate(&ev) {
                            return Some(b);
                        }
                    }
                    // Fell behind the buffer or the cache relisted: end; the client resumes.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= self.deadline {
                        return None;
                    }
                    self.next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
                    return Some(self.bookmark(false));
                }
            }
        }
    }
}

pub async fn serve(ctx: &Ctx<'_>) -> ApiResult<Resp> {
    let filter = Filter::from_ctx(ctx)?;
    let q = &ctx.query;
    let rv = q.get("resourceVersion");
    let send_initial = q.flag("sendInitialEvents");
    let since = match rv {
        None | Some("0") => None,
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        ),
    };
    let since = if send_initial { None } else { since };
    if rv.is_none() {
        // "" means "from the latest state": make the snapshot consistent first.
        let want = ctx.api.store.current_rev().await?;
        ctx.api.cache.wait_for(want, Duration::from_secs(3)).await;
    }
    let timeout = q
        .int("timeoutSeconds")
        .map_err(ApiError::bad_request)?
        .map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(s.max(0) as u64));
    let name = ctx.info.name.clone().or_else(|| {
        q.get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
            .filter(|n| !n.contains(','))
            .map(str::to_string)
    });
    let table = ctx
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    let bookmarks = q.flag("allowWatchBookmarks");
    let sub = match ctx.api.cache.subscribe(&filter.namespace_prefix, since) {
        Ok(s) => s,
        Err(too_old) => {
            // Upstream answers 200 and then a single ERROR event.
            let status = ApiError::expired(format!(
                "too old resource version: {} ({})",
                too_old.requested, too_old.oldest
            ))
            .to_status();
            let mut line =
                serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
            line.push(b'\n');
            return Ok(stream_resp(
                futures::stream::iter([Bytes::from(line)]).boxed(),
            ));
        }
    };
    let now = tokio::time::Instant::now();
    let mut w = Watcher {
        res: ctx.res,
        filter,
        name,
        pending: VecDeque::new(),
        rx: sub.rx,
        table,
        query: ctx.query.clone(),
        bookmarks,
        last_rev: since.unwrap_or(sub.rev),
        deadline: now + timeout,
        next_bookmark: now + BOOKMARK_EVERY,
        done: false,
    };
    match sub.start {
        Start::Snapshot(items) => {
            let lines: Vec<Bytes> = items
                .iter()
                .filter(|e| w.matches(e))
                .map(|e| w.line("ADDED", e))
                .collect();
            w.pending.extend(lines);
            w.last_rev = sub.rev;
            if send_initial && bookmarks {
                let b = w.bookmark(true);
                w.pending.push_back(b);
            }
        }
        Start::Events(events) => {
            let lines: Vec<Bytes> = events.iter().filter_map(|ev| w.translate(ev)).collect();
            w.pending.extend(lines);
            // Live events at or below what the backlog covered are skipped.
            w.last_rev = w.last_rev.max(events.last().map_or(0, |e| e.rev));
        }
    }
    let guard = WatchGauge::new(ctx.api.metrics.watches.clone());
    let stream = futures::stream::unfold((w, guard), |(mut w, g)| async move {
        w.next().await.map(|b| (b, (w, g)))
    });
    Ok(stream_resp(stream.boxed()))
}

fn stream_resp(s: futures::stream::BoxStream<'static, Bytes>) -> Resp {
    let body = StreamBody::new(s.map(|b| Ok::<_, Infallible>(Frame::data(b))));
    let mut r = Response::new(BodyExt::boxed_unsync(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Counts open watches; dropped with the stream, however it ends.
struct WatchGauge(prometheus_client::metrics::gauge::Gauge);

impl WatchGauge {
    fn new(g: prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for WatchGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
