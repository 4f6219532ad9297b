//! Conformance of k3rs-datastore with etcd 3.4.
//!
//! Every test runs one scenario against a real etcd 3.4 and against the shim
//! on SQLite, PostgreSQL and MariaDB (each on its own fresh instance, all four
//! at once) through the `etcd-client` crate. A scenario records a normalized
//! transcript of every response (revisions relative to the revision at the
//! start, lease IDs as ordinals, cluster/member IDs and raft term reduced to
//! "present or not"); the shim's transcripts must equal etcd's, line for line.
//!
//! etcd, PostgreSQL and MariaDB must be available (`./scripts/setup.sh`); a
//! missing one fails the test with a message, it never skips it.

use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, DeleteResponse, Error, EventType, GetOptions,
    GetResponse, KeyValue, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, PutResponse,
    ResponseHeader, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchFilterType,
    WatchOptions, WatchResponse, WatchStream,
};
use k3rs_e2e::{Backend, StoreOptions, TestStore, compare_transcripts};

/// Longest any single RPC may take before the transcript records a timeout.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a watch may take to deliver what a scenario waits for.
const WATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a watch is drained for unexpected extra messages.
const WATCH_DRAIN: Duration = Duration::from_millis(200);
/// Longest a whole scenario may take on one backend.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ harness

/// Runs `scenario` on every backend and asserts that each shim transcript
/// equals etcd's.
async fn conformance<F, Fut>(scenario: F)
where
    F: Fn(S) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    conformance_with(StoreOptions::default(), scenario).await
}

async fn conformance_with<F, Fut>(opts: StoreOptions, scenario: F)
where
    F: Fn(S) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let started =
        futures::future::join_all(Backend::ALL.map(|b| TestStore::start_with(b, &opts))).await;
    let mut stores = Vec::new();
    let mut failures = Vec::new();
    for s in started {
        match s {
            Ok(s) => stores.push(s),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if !failures.is_empty() {
        futures::future::join_all(stores.into_iter().map(TestStore::stop)).await;
        panic!("cannot start the test stores:\n{}", failures.join("\n"));
    }
    let runs = futures::future::join_all(stores.iter().map(|store| {
        let scenario = &scenario;
        async move {
            let backend = store.backend();
            let client = store.client().await.expect("connect");
            let s = S::new(client, backend, store.endpoint().to_string()).await;
            let transcript = tokio::time::timeout(SCENARIO_TIMEOUT, scenario(s))
                .await
                .unwrap_or_else(|_| vec![format!("scenario timed out on {backend}")]);
            (backend, transcript)
        }
    }))
    .await;
    futures::future::join_all(stores.into_iter().map(TestStore::stop)).await;
    eprintln!("etcd transcript:\n{}", runs[0].1.join("\n"));
    if let Err(report) = compare_transcripts(&runs) {
        panic!("the shim does not behave like etcd 3.4:{report}");
    }
}

fn err_str(e: &Error) -> String {
    match e {
        Error::GRpcStatus(st) => format!("ERR {:?}: {}", st.code(), st.message()),
        other => format!("ERR {other}"),
    }
}

/// Awaits an RPC with a timeout; errors become their normalized text.
async fn call<T>(f: impl Future<Output = Result<T, Error>>) -> Result<T, String> {
    match tokio::time::timeout(RPC_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(err_str(&e)),
        Err(_) => Err("TIMEOUT".into()),
    }
}

fn show(bytes: &[u8]) -> String {
    if bytes.len() > 64 {
        format!("<{} bytes>", bytes.len())
    } else {
        format!("{:?}", bytes.escape_ascii().to_string())
    }
}

/// A scenario's client and transcript.
struct S {
    c: Client,
    backend: Backend,
    /// The store's client URL (what MemberList should advertise).
    endpoint: String,
    /// Store revision when the scenario started; revisions are shown relative to it.
    base: i64,
    /// Lease IDs in order of first appearance (shown as L1, L2, ...).
    leases: Vec<i64>,
    out: Vec<String>,
}

impl S {
    async fn new(mut c: Client, backend: Backend, endpoint: String) -> S {
        let base = c
            .get("\0", None)
            .await
            .unwrap_or_else(|e| panic!("initial read on {backend}: {e}"))
            .header()
            .map_or(0, |h| h.revision());
        S {
            c,
            backend,
            endpoint,
            base,
            leases: Vec::new(),
            out: Vec::new(),
        }
    }

    fn finish(self) -> Vec<String> {
        self.out
    }

    fn log(&mut self, line: impl Into<String>) {
        self.out.push(line.into());
    }

    /// A revision relative to the start (0 stays 0: "none").
    fn rev(&self, r: i64) -> String {
        if r == 0 {
            "0".into()
        } else {
            format!("{:+}", r - self.base)
        }
    }

    /// The absolute revision of a relative one.
    fn abs(&self, rel: i64) -> i64 {
        self.base + rel
    }

    /// The current revision (from a read).
    async fn current(&mut self) -> i64 {
        let r = call(self.c.get("\0", None))
            .await
            .unwrap_or_else(|e| panic!("read on {}: {e}", self.backend));
        r.header().map_or(0, |h| h.revision())
    }

    fn lease(&mut self, id: i64) -> String {
        if id == 0 {
            return "0".into();
        }
        let n = match self.leases.iter().position(|l| *l == id) {
            Some(i) => i + 1,
            None => {
                self.leases.push(id);
                self.leases.len()
            }
        };
        format!("L{n}")
    }

    fn hdr(&self, h: Option<&ResponseHeader>) -> String {
        let Some(h) = h else {
            return "hdr=none".into();
        };
        let ids = [h.cluster_id() != 0, h.member_id() != 0, h.raft_term() != 0];
        let ids = match ids {
            [true, true, true] => String::new(),
            [false, false, false] => " ids=none".into(),
            [c, m, t] => format!(" ids=c{}m{}t{}", c as u8, m as u8, t as u8),
        };
        format!("rev={}{ids}", self.rev(h.revision()))
    }

    fn kv(&mut self, kv: &KeyValue) -> String {
        format!(
            "{}={} c={} m={} v={} l={}",
            show(kv.key()),
            show(kv.value()),
            self.rev(kv.create_revision()),
            self.rev(kv.mod_revision()),
            kv.version(),
            self.lease(kv.lease())
        )
    }

    fn opt_kv(&mut self, kv: Option<&KeyValue>) -> String {
        match kv {
            Some(kv) => self.kv(kv),
            None => "-".into(),
        }
    }

    fn fmt_get(&mut self, r: &GetResponse, ind: &str) -> Vec<String> {
        let mut v = vec![format!(
            "{} count={} more={} kvs={}",
            self.hdr(r.header()),
            r.count(),
            r.more(),
            r.kvs().len()
        )];
        for kv in r.kvs() {
            v.push(format!("{ind}  {}", self.kv(kv)));
        }
        v
    }

    fn fmt_put(&mut self, r: &PutResponse) -> Vec<String> {
        vec![format!(
            "{} prev={}",
            self.hdr(r.header()),
            self.opt_kv(r.prev_key())
        )]
    }

    fn fmt_del(&mut self, r: &DeleteResponse, ind: &str) -> Vec<String> {
        let mut v = vec![format!(
            "{} deleted={} prev_kvs={}",
            self.hdr(r.header()),
            r.deleted(),
            r.prev_kvs().len()
        )];
        for kv in r.prev_kvs() {
            v.push(format!("{ind}  {}", self.kv(kv)));
        }
        v
    }

    fn fmt_txn(&mut self, r: &TxnResponse, ind: &str) -> Vec<String> {
        let mut v = vec![format!(
            "{} succeeded={}",
            self.hdr(r.header()),
            r.succeeded()
        )];
        let sub = format!("{ind}    ");
        for op in r.op_responses() {
            let mut lines = match &op {
                TxnOpResponse::Get(g) => self.fmt_get(g, &sub),
                TxnOpResponse::Put(p) => self.fmt_put(p),
                TxnOpResponse::Delete(d) => self.fmt_del(d, &sub),
                TxnOpResponse::Txn(t) => self.fmt_txn(t, &sub),
            };
            let kind = match &op {
                TxnOpResponse::Get(_) => "range",
                TxnOpResponse::Put(_) => "put",
                TxnOpResponse::Delete(_) => "delete",
                TxnOpResponse::Txn(_) => "txn",
            };
            lines[0] = format!("{ind}  {kind}: {}", lines[0]);
            v.extend(lines);
        }
        v
    }

    fn log_lines(&mut self, label: &str, mut lines: Vec<String>) {
        lines[0] = format!("{label}: {}", lines[0]);
        self.out.extend(lines);
    }

    // ---- recorded operations

    async fn put(
        &mut self,
        label: &str,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        opts: Option<PutOptions>,
    ) -> Option<PutResponse> {
        match call(self.c.put(key, value, opts)).await {
            Ok(r) => {
                let l = self.fmt_put(&r);
                self.log_lines(label, l);
                Some(r)
            }
            Err(e) => {
                self.log(format!("{label}: {e}"));
                None
            }
        }
    }

    /// A put whose revision the scenario needs.
    async fn put_rev(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> i64 {
        let key = key.into();
        let label = format!("put {}", show(&key));
        self.put(&label, key, value, None)
            .await
            .and_then(|r| r.header().map(|h| h.revision()))
            .unwrap_or_else(|| panic!("put failed on {}", self.backend))
    }

    async fn get(
        &mut self,
        label: &str,
        key: impl Into<Vec<u8>>,
        opts: Option<GetOptions>,
    ) -> Option<GetResponse> {
        match call(self.c.get(key, opts)).await {
            Ok(r) => {
                let l = self.fmt_get(&r, "");
                self.log_lines(label, l);
                Some(r)
            }
            Err(e) => {
                self.log(format!("{label}: {e}"));
                None
            }
        }
    }

    async fn del(
        &mut self,
        label: &str,
        key: impl Into<Vec<u8>>,
        opts: Option<DeleteOptions>,
    ) -> Option<DeleteResponse> {
        match call(self.c.delete(key, opts)).await {
            Ok(r) => {
                let l = self.fmt_del(&r, "");
                self.log_lines(label, l);
                Some(r)
            }
            Err(e) => {
                self.log(format!("{label}: {e}"));
                None
            }
        }
    }

    async fn txn(&mut self, label: &str, txn: Txn) -> Option<TxnResponse> {
        match call(self.c.txn(txn)).await {
            Ok(r) => {
                let l = self.fmt_txn(&r, "");
                self.log_lines(label, l);
                Some(r)
            }
            Err(e) => {
                self.log(format!("{label}: {e}"));
                None
            }
        }
    }

    async fn compact(&mut self, label: &str, rev: i64, physical: bool) {
        let opts = physical.then(|| etcd_client::CompactionOptions::new().with_physical());
        let line = match call(self.c.compact(rev, opts)).await {
            Ok(r) => self.hdr(r.header()),
            Err(e) => e,
        };
        self.log(format!("{label}: {line}"));
    }

    /// Grants a lease and records it; returns its id (0 on error).
    async fn grant(&mut self, label: &str, ttl: i64, id: Option<i64>) -> i64 {
        let opts = id.map(|id| LeaseGrantOptions::new().with_id(id));
        match call(self.c.lease_grant(ttl, opts)).await {
            Ok(r) => {
                let line = format!(
                    "{} id={}{} ttl={} error={:?}",
                    self.hdr(r.header()),
                    self.lease(r.id()),
                    if id == Some(r.id()) {
                        " (as requested)"
                    } else {
                        ""
                    },
                    r.ttl(),
                    r.error()
                );
                self.log(format!("{label}: {line}"));
                r.id()
            }
            Err(e) => {
                self.log(format!("{label}: {e}"));
                0
            }
        }
    }

    async fn revoke(&mut self, label: &str, id: i64) {
        let line = match call(self.c.lease_revoke(id)).await {
            Ok(r) => self.hdr(r.header()),
            Err(e) => e,
        };
        self.log(format!("{label}: {line}"));
    }

    async fn time_to_live(&mut self, label: &str, id: i64, keys: bool) {
        let opts = keys.then(|| LeaseTimeToLiveOptions::new().with_keys());
        let line = match call(self.c.lease_time_to_live(id, opts)).await {
            Ok(r) => {
                let mut ks: Vec<String> = r.keys().iter().map(|k| show(k)).collect();
                // etcd lists a lease's keys in no particular order.
                ks.sort();
                // The remaining TTL depends on timing: only its bounds are compared.
                let ttl = match r.ttl() {
                    t if t > 0 && t <= r.granted_ttl() => "0<ttl<=granted".to_string(),
                    t => format!("ttl={t}"),
                };
                format!(
                    "{} id={} {ttl} granted_ttl={} keys=[{}]",
                    self.hdr(r.header()),
                    self.lease(r.id()),
                    r.granted_ttl(),
                    ks.join(", ")
                )
            }
            Err(e) => e,
        };
        self.log(format!("{label}: {line}"));
    }

    async fn list_leases(&mut self, label: &str) {
        let line = match call(self.c.leases()).await {
            Ok(r) => {
                let ids: Vec<i64> = r.leases().iter().map(|l| l.id()).collect();
                let mut names: Vec<String> = ids.iter().map(|id| self.lease(*id)).collect();
                names.sort();
                format!("{} leases=[{}]", self.hdr(r.header()), names.join(", "))
            }
            Err(e) => e,
        };
        self.log(format!("{label}: {line}"));
    }

    // ---- watches

    /// Opens a watch stream with one watch and records its creation.
    async fn watch(
        &mut self,
        label: &str,
        key: impl Into<Vec<u8>>,
        opts: Option<WatchOptions>,
    ) -> WatchStream {
        let mut ws = call(self.c.watch(key, opts))
            .await
            .unwrap_or_else(|e| panic!("watch on {}: {e}", self.backend));
        self.log(format!("{label}:"));
        self.read_exact(&mut ws, 0, 1).await;
        ws
    }

    /// Adds a watch to an open stream and records its creation response.
    async fn add_watch(
        &mut self,
        ws: &mut WatchStream,
        label: &str,
        key: impl Into<Vec<u8>>,
        opts: Option<WatchOptions>,
    ) {
        if let Err(e) = ws.watch(key, opts).await {
            self.log(format!("{label}: {}", err_str(&e)));
            return;
        }
        self.log(format!("{label}:"));
        self.read_exact(ws, 0, 1).await;
    }

    fn fmt_watch(&mut self, r: &WatchResponse) -> Vec<String> {
        let w = format!("  w{}", r.watch_id());
        let mut v = Vec::new();
        if r.created() || r.canceled() {
            let what = match (r.created(), r.canceled()) {
                (true, true) => "created+canceled",
                (true, false) => "created",
                _ => "canceled",
            };
            v.push(format!(
                "{w} {what} {} compact={} reason={:?}",
                self.hdr(r.header()),
                self.rev(r.compact_revision()),
                r.cancel_reason()
            ));
        }
        for ev in r.events() {
            let kind = match ev.event_type() {
                EventType::Put => "PUT",
                EventType::Delete => "DELETE",
            };
            let kv = self.opt_kv(ev.kv());
            let prev = self.opt_kv(ev.prev_kv());
            v.push(format!("{w} {kind} {kv} prev={prev}"));
        }
        if v.is_empty() {
            v.push(format!("{w} progress {}", self.hdr(r.header())));
        }
        v
    }

    /// Reads watch responses until `events` events and `ctrl` other
    /// responses (created, canceled, progress) arrived or a timeout passed,
    /// then drains briefly for anything unexpected. Records what arrived,
    /// grouped by watch id (the order across watches is not specified).
    async fn read(&mut self, ws: &mut WatchStream, events: usize, ctrl: usize) {
        self.read_inner(ws, events, ctrl, true).await;
    }

    /// Like `read`, without the drain: what arrives next is left for the next read.
    async fn read_exact(&mut self, ws: &mut WatchStream, events: usize, ctrl: usize) {
        self.read_inner(ws, events, ctrl, false).await;
    }

    async fn read_inner(&mut self, ws: &mut WatchStream, events: usize, ctrl: usize, drain: bool) {
        let mut got: Vec<(i64, Vec<String>)> = Vec::new();
        let (mut n_ev, mut n_ctrl) = (0, 0);
        let deadline = Instant::now() + WATCH_TIMEOUT;
        let mut drain_until: Option<Instant> = None;
        loop {
            if drain_until.is_none() && n_ev >= events && n_ctrl >= ctrl {
                if !drain {
                    break;
                }
                drain_until = Some(Instant::now() + WATCH_DRAIN);
            }
            let until = drain_until.unwrap_or(deadline);
            let msg = match tokio::time::timeout_at(until.into(), ws.message()).await {
                Err(_) => {
                    if drain_until.is_none() {
                        got.push((i64::MAX, vec!["  TIMEOUT waiting for watch".into()]));
                    }
                    break;
                }
                Ok(Err(e)) => {
                    got.push((i64::MAX, vec![format!("  {}", err_str(&e))]));
                    break;
                }
                Ok(Ok(None)) => {
                    got.push((i64::MAX, vec!["  stream closed".into()]));
                    break;
                }
                Ok(Ok(Some(r))) => r,
            };
            if msg.events().is_empty() {
                n_ctrl += 1;
            }
            n_ev += msg.events().len();
            let lines = self.fmt_watch(&msg);
            got.push((msg.watch_id(), lines));
        }
        got.sort_by_key(|(id, _)| *id);
        for (_, lines) in got {
            self.out.extend(lines);
        }
    }
}

// ------------------------------------------------------------------ KV

async fn kv_put(mut s: S) -> Vec<String> {
    s.put("put a=1", "a", "1", None).await;
    s.put(
        "put a=2 prev_kv",
        "a",
        "2",
        Some(PutOptions::new().with_prev_key()),
    )
    .await;
    s.put(
        "put new key b prev_kv",
        "b",
        "x",
        Some(PutOptions::new().with_prev_key()),
    )
    .await;
    s.put("put empty value", "c", "", None).await;
    s.get("get c", "c", None).await;
    s.put("put empty key", "", "v", None).await;
    let l = s.grant("grant ttl 60", 60, None).await;
    s.put(
        "put a with lease prev_kv",
        "a",
        "3",
        Some(PutOptions::new().with_lease(l).with_prev_key()),
    )
    .await;
    s.get("get a", "a", None).await;
    s.put(
        "put a ignore_value prev_kv",
        "a",
        "",
        Some(PutOptions::new().with_ignore_value().with_prev_key()),
    )
    .await;
    s.get("get a", "a", None).await;
    s.put(
        "put a=4 lease",
        "a",
        "4",
        Some(PutOptions::new().with_lease(l)),
    )
    .await;
    s.put(
        "put a=5 ignore_lease prev_kv",
        "a",
        "5",
        Some(PutOptions::new().with_ignore_lease().with_prev_key()),
    )
    .await;
    s.get("get a (keeps its lease)", "a", None).await;
    s.time_to_live("lease keys", l, true).await;
    s.put("put a=6 (no lease: detaches)", "a", "6", None).await;
    s.get("get a", "a", None).await;
    s.time_to_live("lease keys after detach", l, true).await;
    s.put(
        "put ignore_value with a value",
        "a",
        "x",
        Some(PutOptions::new().with_ignore_value()),
    )
    .await;
    s.put(
        "put ignore_lease with a lease",
        "a",
        "x",
        Some(PutOptions::new().with_ignore_lease().with_lease(l)),
    )
    .await;
    s.put(
        "put ignore_value, key missing",
        "missing",
        "",
        Some(PutOptions::new().with_ignore_value()),
    )
    .await;
    s.put(
        "put ignore_lease, key missing",
        "missing",
        "v",
        Some(PutOptions::new().with_ignore_lease()),
    )
    .await;
    s.put(
        "put with unknown lease",
        "a",
        "v",
        Some(PutOptions::new().with_lease(0x1234_5678)),
    )
    .await;
    s.put(
        "put a lease again",
        "a",
        "6",
        Some(PutOptions::new().with_lease(l)),
    )
    .await;
    s.put(
        "put a ignore_value+ignore_lease prev_kv",
        "a",
        "",
        Some(
            PutOptions::new()
                .with_ignore_value()
                .with_ignore_lease()
                .with_prev_key(),
        ),
    )
    .await;
    s.get("get a", "a", None).await;
    s.get("get missing", "missing", None).await;
    s.get("get all", "\0", Some(GetOptions::new().with_from_key()))
        .await;
    s.finish()
}

async fn kv_range(mut s: S) -> Vec<String> {
    for (k, v) in [
        ("a", "va"),
        ("ab", "vab"),
        ("abc", "vabc"),
        ("b", "vb1"),
        ("c", "vc"),
        ("d", "vd"),
    ] {
        s.put_rev(k, v).await;
    }
    let before_b2 = s.current().await;
    s.put_rev("b", "vb2").await;
    let after_a = s.abs(1);

    s.get("get a", "a", None).await;
    s.get("get missing", "zz", None).await;
    s.get("range [a, c)", "a", Some(GetOptions::new().with_range("c")))
        .await;
    s.get("prefix a", "a", Some(GetOptions::new().with_prefix()))
        .await;
    s.get("from key b", "b", Some(GetOptions::new().with_from_key()))
        .await;
    s.get(
        "from key \\0 (all)",
        "\0",
        Some(GetOptions::new().with_from_key()),
    )
    .await;
    s.get("all keys", "", Some(GetOptions::new().with_all_keys()))
        .await;
    s.get(
        "inverted range [c, a)",
        "c",
        Some(GetOptions::new().with_range("a")),
    )
    .await;
    s.get(
        "range [b, b) (empty)",
        "b",
        Some(GetOptions::new().with_range("b")),
    )
    .await;
    for limit in [0, 1, 2, 6, 7] {
        s.get(
            &format!("all, limit {limit}"),
            "\0",
            Some(GetOptions::new().with_from_key().with_limit(limit)),
        )
        .await;
    }
    s.get(
        "prefix a, limit 1",
        "a",
        Some(GetOptions::new().with_prefix().with_limit(1)),
    )
    .await;
    s.get(
        "past: all at rev +1",
        "\0",
        Some(GetOptions::new().with_from_key().with_revision(after_a)),
    )
    .await;
    s.get(
        "past: b before its update",
        "b",
        Some(GetOptions::new().with_revision(before_b2)),
    )
    .await;
    s.get(
        "past: all before b update, limit 3",
        "\0",
        Some(
            GetOptions::new()
                .with_from_key()
                .with_revision(before_b2)
                .with_limit(3),
        ),
    )
    .await;
    let cur = s.current().await;
    s.get(
        "at current revision",
        "b",
        Some(GetOptions::new().with_revision(cur)),
    )
    .await;
    s.get(
        "future revision",
        "b",
        Some(GetOptions::new().with_revision(cur + 1)),
    )
    .await;
    s.get(
        "keys_only prefix a",
        "a",
        Some(GetOptions::new().with_prefix().with_keys_only()),
    )
    .await;
    s.get(
        "count_only all",
        "\0",
        Some(GetOptions::new().with_from_key().with_count_only()),
    )
    .await;
    s.get(
        "count_only + limit 1",
        "\0",
        Some(
            GetOptions::new()
                .with_from_key()
                .with_count_only()
                .with_limit(1),
        ),
    )
    .await;
    s.get(
        "keys_only + count_only",
        "a",
        Some(
            GetOptions::new()
                .with_prefix()
                .with_keys_only()
                .with_count_only(),
        ),
    )
    .await;
    s.get(
        "serializable",
        "a",
        Some(GetOptions::new().with_prefix().with_serializable()),
    )
    .await;
    let r3 = s.abs(3);
    let r5 = s.abs(5);
    for (label, opts) in [
        ("min_mod +3", GetOptions::new().with_min_mod_revision(r3)),
        ("max_mod +3", GetOptions::new().with_max_mod_revision(r3)),
        (
            "min_create +3",
            GetOptions::new().with_min_create_revision(r3),
        ),
        (
            "max_create +3",
            GetOptions::new().with_max_create_revision(r3),
        ),
        (
            "min_mod +3 max_mod +5",
            GetOptions::new()
                .with_min_mod_revision(r3)
                .with_max_mod_revision(r5),
        ),
        (
            "min_create +3 limit 2",
            GetOptions::new().with_min_create_revision(r3).with_limit(2),
        ),
        (
            "max_create +5 min_mod +6",
            GetOptions::new()
                .with_max_create_revision(r5)
                .with_min_mod_revision(s.abs(6)),
        ),
        (
            "max_mod +5 count_only",
            GetOptions::new()
                .with_max_mod_revision(r5)
                .with_count_only(),
        ),
    ] {
        s.get(label, "\0", Some(opts.with_from_key())).await;
    }
    s.get("empty key", "", None).await;
    s.finish()
}

async fn kv_range_sort(mut s: S) -> Vec<String> {
    // Every sort target orders the keys differently, without ties.
    // create order: k3 k1 k5 k2 k4; versions: k2=2 k3=3 k1=4 k5=5 k4=6;
    // values: k1=e k2=a k3=c k4=b k5=d; last modification order: k2 k3 k1 k5 k4.
    for k in ["k3", "k1", "k5", "k2", "k4"] {
        s.put_rev(k, "0").await;
    }
    for (k, n) in [("k4", 4), ("k5", 3), ("k1", 2), ("k3", 1)] {
        for _ in 0..n {
            s.put_rev(k, "0").await;
        }
    }
    for (k, v) in [
        ("k2", "a"),
        ("k3", "c"),
        ("k1", "e"),
        ("k5", "d"),
        ("k4", "b"),
    ] {
        s.put_rev(k, v).await;
    }
    let targets = [
        ("key", SortTarget::Key),
        ("version", SortTarget::Version),
        ("create", SortTarget::Create),
        ("mod", SortTarget::Mod),
        ("value", SortTarget::Value),
    ];
    let orders = [
        ("none", SortOrder::None),
        ("ascend", SortOrder::Ascend),
        ("descend", SortOrder::Descend),
    ];
    for (tn, t) in targets {
        for (on, o) in orders {
            s.get(
                &format!("sort {tn} {on}"),
                "k",
                Some(GetOptions::new().with_prefix().with_sort(t, o)),
            )
            .await;
            s.get(
                &format!("sort {tn} {on} limit 2"),
                "k",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(t, o)
                        .with_limit(2),
                ),
            )
            .await;
        }
    }
    // Ties keep key order (etcd sorts small results stably).
    for k in ["t1", "t2", "t3"] {
        s.put_rev(k, "same").await;
    }
    for (tn, t) in [
        ("value", SortTarget::Value),
        ("version", SortTarget::Version),
    ] {
        for (on, o) in orders {
            s.get(
                &format!("ties: sort {tn} {on}"),
                "t",
                Some(GetOptions::new().with_prefix().with_sort(t, o)),
            )
            .await;
        }
    }
    s.finish()
}

async fn kv_delete(mut s: S) -> Vec<String> {
    for k in ["a", "b", "c", "d", "e", "p/1", "p/2"] {
        s.put_rev(k, format!("v{k}")).await;
    }
    let before = s.current().await;
    s.del("delete a", "a", None).await;
    s.del("delete a again", "a", None).await;
    s.del("delete missing", "zzz", None).await;
    s.del(
        "delete [b, d) prev_kv",
        "b",
        Some(DeleteOptions::new().with_range("d").with_prev_key()),
    )
    .await;
    s.del(
        "delete from key d prev_kv",
        "d",
        Some(DeleteOptions::new().with_from_key().with_prev_key()),
    )
    .await;
    s.get("all", "\0", Some(GetOptions::new().with_from_key()))
        .await;
    s.put("put p/1 again", "p/1", "again", None).await;
    s.put("put a again", "a", "new", None).await;
    s.get("a recreated (new create rev, version 1)", "a", None)
        .await;
    s.del(
        "delete prefix p/ prev_kv",
        "p/",
        Some(DeleteOptions::new().with_prefix().with_prev_key()),
    )
    .await;
    s.del(
        "delete inverted range",
        "z",
        Some(DeleteOptions::new().with_range("a")),
    )
    .await;
    s.del("delete empty key", "", None).await;
    s.get(
        "all before the deletes",
        "\0",
        Some(GetOptions::new().with_from_key().with_revision(before)),
    )
    .await;
    s.del(
        "delete all keys",
        "",
        Some(DeleteOptions::new().with_all_keys()),
    )
    .await;
    s.get("all", "\0", Some(GetOptions::new().with_from_key()))
        .await;
    s.finish()
}

// ------------------------------------------------------------------ Txn

async fn txn_compare(mut s: S) -> Vec<String> {
    let lease = s.grant("grant lease 1000", 60, Some(1000)).await;
    s.put(
        "put k=m",
        "k",
        "m",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await;
    s.put(
        "put k=m again",
        "k",
        "m",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await;
    let kv = call(s.c.get("k", None))
        .await
        .expect("get k")
        .kvs()
        .first()
        .cloned()
        .expect("k exists");
    let (c, m, v) = (kv.create_revision(), kv.mod_revision(), kv.version());
    let ops = [
        ("=", CompareOp::Equal),
        ("!=", CompareOp::NotEqual),
        ("<", CompareOp::Less),
        (">", CompareOp::Greater),
    ];
    type MakeCmp = Box<dyn Fn(&str, CompareOp, i64) -> Compare>;
    let int_targets: Vec<(&str, i64, MakeCmp)> = vec![
        (
            "version",
            v,
            Box::new(|k: &str, op, x| Compare::version(k, op, x)),
        ),
        (
            "create",
            c,
            Box::new(|k: &str, op, x| Compare::create_revision(k, op, x)),
        ),
        (
            "mod",
            m,
            Box::new(|k: &str, op, x| Compare::mod_revision(k, op, x)),
        ),
        (
            "lease",
            lease,
            Box::new(|k: &str, op, x| Compare::lease(k, op, x)),
        ),
    ];
    for (tn, actual, make) in &int_targets {
        for (on, op) in ops {
            let mut line = format!("{tn} {on}:");
            for (dn, d) in [("lo", -1), ("eq", 0), ("hi", 1)] {
                let txn = Txn::new()
                    .when([make("k", op, actual + d)])
                    .and_then([TxnOp::get("k", Some(GetOptions::new().with_count_only()))]);
                let r = call(s.c.txn(txn))
                    .await
                    .map(|r| r.succeeded().to_string())
                    .unwrap_or_else(|e| e);
                line.push_str(&format!(" {dn}={r}"));
            }
            // The same compare on a missing key (which compares as all-zero).
            for x in [0, 1] {
                let txn = Txn::new().when([make("missing", op, x)]);
                let r = call(s.c.txn(txn))
                    .await
                    .map(|r| r.succeeded().to_string())
                    .unwrap_or_else(|e| e);
                line.push_str(&format!(" missing{on}{x}={r}"));
            }
            s.log(line);
        }
    }
    for (on, op) in ops {
        let mut line = format!("value {on}:");
        for (dn, x) in [("lo", "a"), ("eq", "m"), ("hi", "z"), ("prefix", "m\0")] {
            let txn = Txn::new().when([Compare::value("k", op, x)]);
            let r = call(s.c.txn(txn))
                .await
                .map(|r| r.succeeded().to_string())
                .unwrap_or_else(|e| e);
            line.push_str(&format!(" {dn}={r}"));
        }
        for x in ["", "a"] {
            let txn = Txn::new().when([Compare::value("missing", op, x)]);
            let r = call(s.c.txn(txn))
                .await
                .map(|r| r.succeeded().to_string())
                .unwrap_or_else(|e| e);
            line.push_str(&format!(" missing{on}{x:?}={r}"));
        }
        s.log(line);
    }

    // Compares over a key range must hold for every key in it.
    s.put("put r/1=x", "r/1", "x", None).await;
    s.put("put r/2=x", "r/2", "x", None).await;
    s.put("put r/2=x again", "r/2", "x", None).await;
    let range_cases: Vec<(&str, Compare)> = vec![
        (
            "prefix r/ version > 0",
            Compare::version("r/", CompareOp::Greater, 0).with_prefix(),
        ),
        (
            "prefix r/ version > 1",
            Compare::version("r/", CompareOp::Greater, 1).with_prefix(),
        ),
        (
            "prefix r/ version = 2",
            Compare::version("r/", CompareOp::Equal, 2).with_prefix(),
        ),
        (
            "prefix r/ value = x",
            Compare::value("r/", CompareOp::Equal, "x").with_prefix(),
        ),
        (
            "range [r/1, r/2) version = 1",
            Compare::version("r/1", CompareOp::Equal, 1).with_range("r/2"),
        ),
        (
            "prefix none/ version = 0",
            Compare::version("none/", CompareOp::Equal, 0).with_prefix(),
        ),
        (
            "prefix none/ value = ''",
            Compare::value("none/", CompareOp::Equal, "").with_prefix(),
        ),
        (
            "from key r/ create > 0",
            Compare::create_revision("r/", CompareOp::Greater, 0).with_range("\0"),
        ),
    ];
    for (label, cmp) in range_cases {
        let r = call(s.c.txn(Txn::new().when([cmp])))
            .await
            .map(|r| r.succeeded().to_string())
            .unwrap_or_else(|e| e);
        s.log(format!("{label}: {r}"));
    }
    // Several compares: all must hold.
    let txn = Txn::new().when([
        Compare::value("k", CompareOp::Equal, "m"),
        Compare::version("k", CompareOp::Equal, 1),
    ]);
    s.txn("value = m AND version = 1", txn).await;
    let txn = Txn::new().when([
        Compare::value("k", CompareOp::Equal, "m"),
        Compare::version("k", CompareOp::Equal, 2),
    ]);
    s.txn("value = m AND version = 2", txn).await;
    s.finish()
}

async fn txn_ops(mut s: S) -> Vec<String> {
    s.put("put a=1", "a", "1", None).await;
    s.put("put x=1", "x", "1", None).await;
    let create = || {
        Txn::new()
            .when([Compare::create_revision("new", CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put("new", "1", None),
                TxnOp::get("new", None),
                TxnOp::put("a", "2", Some(PutOptions::new().with_prev_key())),
                TxnOp::delete("x", Some(DeleteOptions::new().with_prev_key())),
                TxnOp::get("\0", Some(GetOptions::new().with_from_key())),
            ])
            .or_else([TxnOp::get("new", None), TxnOp::get("a", None)])
    };
    s.txn("create new (success branch)", create()).await;
    s.txn("create new again (failure branch)", create()).await;
    s.txn("empty txn", Txn::new()).await;
    s.txn(
        "read-only txn",
        Txn::new()
            .when([Compare::value("a", CompareOp::Equal, "2")])
            .and_then([
                TxnOp::get("a", None),
                TxnOp::get(
                    "\0",
                    Some(GetOptions::new().with_from_key().with_count_only()),
                ),
            ]),
    )
    .await;
    s.txn(
        "read before write in one txn",
        Txn::new().and_then([
            TxnOp::get("a", None),
            TxnOp::put("a", "3", None),
            TxnOp::get("a", None),
        ]),
    )
    .await;
    s.txn(
        "delete then read in one txn",
        Txn::new().and_then([
            TxnOp::delete("a", None),
            TxnOp::get("a", None),
            TxnOp::delete("nothing", None),
        ]),
    )
    .await;
    s.txn(
        "no-op delete only",
        Txn::new().and_then([TxnOp::delete("nothing", None)]),
    )
    .await;
    s.txn(
        "multiple puts, one revision",
        Txn::new().and_then([
            TxnOp::put("m/1", "1", None),
            TxnOp::put("m/2", "2", None),
            TxnOp::put("m/3", "3", None),
            TxnOp::get("m/", Some(GetOptions::new().with_prefix())),
        ]),
    )
    .await;
    let past = s.abs(1);
    s.txn(
        "range at a past revision",
        Txn::new().and_then([TxnOp::get(
            "\0",
            Some(GetOptions::new().with_from_key().with_revision(past)),
        )]),
    )
    .await;
    let cur = s.current().await;
    s.txn(
        "read-only range at a future revision",
        Txn::new().and_then([TxnOp::get(
            "a",
            Some(GetOptions::new().with_revision(cur + 1)),
        )]),
    )
    .await;
    s.txn(
        "write + range at a future revision",
        Txn::new().and_then([
            TxnOp::put("f", "1", None),
            TxnOp::get("f", Some(GetOptions::new().with_revision(cur + 1))),
        ]),
    )
    .await;
    s.get("f not written", "f", None).await;
    let lease = s.grant("grant", 60, None).await;
    s.txn(
        "put with lease in txn",
        Txn::new().and_then([TxnOp::put(
            "leased",
            "1",
            Some(PutOptions::new().with_lease(lease)),
        )]),
    )
    .await;
    s.time_to_live("lease keys", lease, true).await;
    let nested = |v: &str| {
        Txn::new()
            .when([Compare::value("m/1", CompareOp::Equal, v)])
            .and_then([
                TxnOp::put("n/then", v, None),
                TxnOp::txn(
                    Txn::new()
                        .when([Compare::version("n/then", CompareOp::Greater, 0)])
                        .and_then([TxnOp::put("n/deep", "then", None)])
                        .or_else([TxnOp::get("n/deep", None)]),
                ),
            ])
            .or_else([
                TxnOp::put("n/else", v, None),
                TxnOp::get("n/", Some(GetOptions::new().with_prefix())),
            ])
    };
    s.txn(
        "nested txn (outer success)",
        Txn::new().and_then([TxnOp::txn(nested("1")), TxnOp::get("n/then", None)]),
    )
    .await;
    s.txn(
        "nested txn (outer failure)",
        Txn::new().and_then([TxnOp::txn(nested("2")), TxnOp::get("m/", None)]),
    )
    .await;
    s.txn(
        "read-only nested txn",
        Txn::new()
            .when([Compare::version("a", CompareOp::Equal, 0)])
            .and_then([TxnOp::txn(Txn::new().and_then([TxnOp::get(
                "n/",
                Some(GetOptions::new().with_prefix()),
            )]))]),
    )
    .await;
    s.get("all", "\0", Some(GetOptions::new().with_from_key()))
        .await;
    s.finish()
}

async fn txn_errors(mut s: S) -> Vec<String> {
    s.put("put a", "a", "1", None).await;
    let put = |k: &str| TxnOp::put(k, "v", None);
    let del = |k: &str| TxnOp::delete(k, None);
    let del_range =
        |k: &str, end: &str| TxnOp::delete(k, Some(DeleteOptions::new().with_range(end)));
    let cases: Vec<(&str, Txn)> = vec![
        ("put a twice", Txn::new().and_then([put("a"), put("a")])),
        (
            "put a in success and failure",
            Txn::new().and_then([put("a")]).or_else([put("a")]),
        ),
        (
            "put a + delete a",
            Txn::new().and_then([put("a"), del("a")]),
        ),
        (
            "delete a + put a",
            Txn::new().and_then([del("a"), put("a")]),
        ),
        (
            "put b + delete [a, c)",
            Txn::new().and_then([put("b"), del_range("a", "c")]),
        ),
        (
            "put c + delete [a, c)",
            Txn::new().and_then([put("c"), del_range("a", "c")]),
        ),
        (
            "delete a + delete [a, c)",
            Txn::new().and_then([del("a"), del_range("a", "c")]),
        ),
        (
            "delete from key a + put b",
            Txn::new().and_then([
                TxnOp::delete("a", Some(DeleteOptions::new().with_from_key())),
                put("b"),
            ]),
        ),
        (
            "delete prefix a + put ab",
            Txn::new().and_then([
                TxnOp::delete("a", Some(DeleteOptions::new().with_prefix())),
                put("ab"),
            ]),
        ),
        (
            "put a + nested put a",
            Txn::new().and_then([put("a"), TxnOp::txn(Txn::new().and_then([put("a")]))]),
        ),
        (
            "nested put a + put a",
            Txn::new().and_then([TxnOp::txn(Txn::new().and_then([put("a")])), put("a")]),
        ),
        (
            "nested put a in then and else",
            Txn::new().and_then([TxnOp::txn(
                Txn::new().and_then([put("a")]).or_else([put("a")]),
            )]),
        ),
        (
            "two nested txns put a",
            Txn::new().and_then([
                TxnOp::txn(Txn::new().and_then([put("a")])),
                TxnOp::txn(Txn::new().or_else([put("a")])),
            ]),
        ),
        (
            "delete a + nested put a",
            Txn::new().and_then([del("a"), TxnOp::txn(Txn::new().and_then([put("a")]))]),
        ),
        (
            "nested delete a + put a",
            Txn::new().and_then([TxnOp::txn(Txn::new().and_then([del("a")])), put("a")]),
        ),
        (
            "nested delete a + later nested put a",
            Txn::new().and_then([
                TxnOp::txn(Txn::new().and_then([del("a")])),
                TxnOp::txn(Txn::new().and_then([put("a")])),
            ]),
        ),
        (
            "nested put a + later nested delete a",
            Txn::new().and_then([
                TxnOp::txn(Txn::new().and_then([put("a")])),
                TxnOp::txn(Txn::new().and_then([del("a")])),
            ]),
        ),
        (
            "nested: put a + delete a inside",
            Txn::new().and_then([TxnOp::txn(Txn::new().and_then([put("a"), del("a")]))]),
        ),
        (
            "put with empty key",
            Txn::new().and_then([TxnOp::put("", "v", None)]),
        ),
        (
            "get with empty key",
            Txn::new().and_then([TxnOp::get("", None)]),
        ),
        (
            "compare with empty key",
            Txn::new().when([Compare::version("", CompareOp::Equal, 0)]),
        ),
        (
            "put unknown lease",
            Txn::new().and_then([
                put("ok"),
                TxnOp::put("x", "v", Some(PutOptions::new().with_lease(0x7777))),
            ]),
        ),
        (
            "put unknown lease in the branch not taken",
            Txn::new().and_then([put("ok")]).or_else([TxnOp::put(
                "x",
                "v",
                Some(PutOptions::new().with_lease(0x7777)),
            )]),
        ),
        (
            "ignore_value on a missing key",
            Txn::new().and_then([
                put("ok2"),
                TxnOp::put("missing", "", Some(PutOptions::new().with_ignore_value())),
            ]),
        ),
        (
            "ignore_value with a value",
            Txn::new().and_then([TxnOp::put(
                "a",
                "x",
                Some(PutOptions::new().with_ignore_value()),
            )]),
        ),
    ];
    for (label, txn) in cases {
        s.txn(label, txn).await;
    }
    let ops = |n: usize| {
        (0..n)
            .map(|i| put(&format!("op/{i:03}")))
            .collect::<Vec<_>>()
    };
    let r = call(s.c.txn(Txn::new().and_then(ops(129)))).await;
    let line = r.map(|r| s.hdr(r.header())).unwrap_or_else(|e| e);
    s.log(format!("129 puts: {line}"));
    let r = call(s.c.txn(Txn::new().and_then(ops(128)))).await;
    let line = r.map(|r| s.hdr(r.header())).unwrap_or_else(|e| e);
    s.log(format!("128 puts: {line}"));
    let nested = |outer: usize, inner: usize| {
        let mut v: Vec<TxnOp> = (0..outer).map(|i| put(&format!("o/{i:03}"))).collect();
        v.push(TxnOp::txn(
            Txn::new().and_then(
                (0..inner)
                    .map(|i| put(&format!("i/{i:03}")))
                    .collect::<Vec<_>>(),
            ),
        ));
        Txn::new().and_then(v)
    };
    let r = call(s.c.txn(nested(99, 30))).await;
    let line = r.map(|r| s.hdr(r.header())).unwrap_or_else(|e| e);
    s.log(format!("100 ops + nested txn of 30 puts: {line}"));
    let r = call(s.c.txn(nested(99, 28))).await;
    let line = r.map(|r| s.hdr(r.header())).unwrap_or_else(|e| e);
    s.log(format!("100 ops + nested txn of 28 puts: {line}"));
    let cmps: Vec<Compare> = (0..129)
        .map(|i| Compare::version(format!("c{i}"), CompareOp::Equal, 0))
        .collect();
    let r = call(s.c.txn(Txn::new().when(cmps))).await;
    let line = r.map(|r| s.hdr(r.header())).unwrap_or_else(|e| e);
    s.log(format!("129 compares: {line}"));
    s.get(
        "count op/",
        "op/",
        Some(GetOptions::new().with_prefix().with_count_only()),
    )
    .await;
    s.get(
        "count i/ and o/",
        "i/",
        Some(GetOptions::new().with_range("p").with_count_only()),
    )
    .await;
    s.get(
        "everything before i/",
        "\0",
        Some(GetOptions::new().with_range("i/")),
    )
    .await;
    s.finish()
}

// ------------------------------------------------------------------ Compact

async fn compaction(mut s: S) -> Vec<String> {
    let r1 = s.put_rev("a", "1").await;
    let r2 = s.put_rev("a", "2").await;
    let r3 = s.put_rev("b", "1").await;
    s.del("delete b", "b", None).await;
    let r4 = r3 + 1;
    let r5 = s.put_rev("c", "1").await;
    s.compact("compact +2", r2, false).await;
    s.get(
        "a at +1 (compacted)",
        "a",
        Some(GetOptions::new().with_revision(r1)),
    )
    .await;
    s.get(
        "a at +2 (the compaction revision)",
        "a",
        Some(GetOptions::new().with_revision(r2)),
    )
    .await;
    s.get(
        "all at +3",
        "\0",
        Some(GetOptions::new().with_from_key().with_revision(r3)),
    )
    .await;
    s.get(
        "at +6 (future)",
        "a",
        Some(GetOptions::new().with_revision(r5 + 1)),
    )
    .await;
    s.compact("compact +2 again", r2, false).await;
    s.compact("compact +1 (below)", r1, false).await;
    s.compact("compact +6 (future)", r5 + 1, false).await;
    s.compact("compact +4 physical", r4, true).await;
    s.get(
        "b at +3 (compacted)",
        "b",
        Some(GetOptions::new().with_revision(r3)),
    )
    .await;
    s.get(
        "all at +4",
        "\0",
        Some(GetOptions::new().with_from_key().with_revision(r4)),
    )
    .await;
    s.txn(
        "txn range at a compacted revision",
        Txn::new().and_then([TxnOp::get("a", Some(GetOptions::new().with_revision(r3)))]),
    )
    .await;
    s.txn(
        "write txn + range at a compacted revision",
        Txn::new().and_then([
            TxnOp::put("z", "1", None),
            TxnOp::get("a", Some(GetOptions::new().with_revision(r3))),
        ]),
    )
    .await;
    s.get("z not written", "z", None).await;
    s.compact("compact at the current revision", r5, false)
        .await;
    s.get("all", "\0", Some(GetOptions::new().with_from_key()))
        .await;
    s.put("put after compaction", "a", "3", None).await;
    s.get(
        "all at +5",
        "\0",
        Some(GetOptions::new().with_from_key().with_revision(r5)),
    )
    .await;
    let hash = call(s.c.hash_kv(0)).await;
    let line = match hash {
        Ok(h) => format!("compact_revision={}", s.rev(h.compact_version())),
        Err(e) => e,
    };
    s.log(format!("hash_kv: {line}"));
    s.finish()
}

// ------------------------------------------------------------------ Watch

async fn watch_kinds(mut s: S) -> Vec<String> {
    let mut single = s
        .watch(
            "watch a prev_kv",
            "a",
            Some(WatchOptions::new().with_prev_key()),
        )
        .await;
    let mut prefix = s
        .watch(
            "watch prefix p/",
            "p/",
            Some(WatchOptions::new().with_prefix()),
        )
        .await;
    let mut range = s
        .watch(
            "watch range [r1, r3)",
            "r1",
            Some(WatchOptions::new().with_range("r3")),
        )
        .await;
    let mut from = s
        .watch(
            "watch from key x",
            "x",
            Some(WatchOptions::new().with_from_key()),
        )
        .await;
    let mut noput = s
        .watch(
            "watch prefix p/ NOPUT prev_kv",
            "p/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_filters([WatchFilterType::NoPut])
                    .with_prev_key(),
            ),
        )
        .await;
    let mut nodelete = s
        .watch(
            "watch prefix p/ NODELETE",
            "p/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_filters([WatchFilterType::NoDelete]),
            ),
        )
        .await;
    let mut all = s
        .watch(
            "watch all keys",
            "",
            Some(WatchOptions::new().with_all_keys()),
        )
        .await;
    s.put("put a=1", "a", "1", None).await;
    s.put("put a=2", "a", "2", None).await;
    s.del("delete a", "a", None).await;
    s.put("put p/1", "p/1", "1", None).await;
    s.put("put p/2", "p/2", "1", None).await;
    s.put("put p/1 again", "p/1", "2", None).await;
    s.del("delete p/1", "p/1", None).await;
    for k in ["r1", "r2", "r3", "x", "y", "\u{ff}"] {
        s.put(&format!("put {k:?}"), k, "v", None).await;
    }
    s.txn(
        "txn: put p/3, put p/4, delete p/2, put a",
        Txn::new().and_then([
            TxnOp::put("p/3", "3", None),
            TxnOp::put("p/4", "4", None),
            TxnOp::delete("p/2", None),
            TxnOp::put("a", "3", None),
        ]),
    )
    .await;
    s.del(
        "delete [r1, x)",
        "r1",
        Some(DeleteOptions::new().with_range("x")),
    )
    .await;
    s.log("events of watch a:");
    s.read(&mut single, 4, 0).await;
    s.log("events of watch prefix p/:");
    s.read(&mut prefix, 7, 0).await;
    s.log("events of watch range [r1, r3):");
    s.read(&mut range, 4, 0).await;
    s.log("events of watch from key x:");
    s.read(&mut from, 3, 0).await;
    s.log("events of watch NOPUT:");
    s.read(&mut noput, 2, 0).await;
    s.log("events of watch NODELETE:");
    s.read(&mut nodelete, 5, 0).await;
    s.log("events of watch all:");
    s.read(&mut all, 20, 0).await;
    s.finish()
}

async fn watch_history(mut s: S) -> Vec<String> {
    s.put("put a=1", "a", "1", None).await;
    s.put("put a=2", "a", "2", None).await;
    s.put("put b=1", "b", "1", None).await;
    s.del("delete a", "a", None).await;
    s.txn(
        "txn put c, put d, delete b",
        Txn::new().and_then([
            TxnOp::put("c", "1", None),
            TxnOp::put("d", "1", None),
            TxnOp::delete("b", None),
        ]),
    )
    .await;
    let lease = s.grant("grant", 60, None).await;
    s.put(
        "put e with lease",
        "e",
        "1",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await;
    s.revoke("revoke", lease).await;
    let mut w = s
        .watch(
            "watch all from +1 prev_kv",
            "",
            Some(
                WatchOptions::new()
                    .with_all_keys()
                    .with_start_revision(s.abs(1))
                    .with_prev_key(),
            ),
        )
        .await;
    s.read(&mut w, 9, 0).await;
    let mut w = s
        .watch(
            "watch all from +4",
            "",
            Some(
                WatchOptions::new()
                    .with_all_keys()
                    .with_start_revision(s.abs(4)),
            ),
        )
        .await;
    s.read(&mut w, 6, 0).await;
    let mut w = s
        .watch(
            "watch a from +1 NODELETE",
            "a",
            Some(
                WatchOptions::new()
                    .with_start_revision(s.abs(1))
                    .with_filters([WatchFilterType::NoDelete]),
            ),
        )
        .await;
    s.read(&mut w, 2, 0).await;
    let cur = s.current().await;
    let mut future = s
        .watch(
            "watch all from current+2 (future)",
            "",
            Some(
                WatchOptions::new()
                    .with_all_keys()
                    .with_start_revision(cur + 2),
            ),
        )
        .await;
    s.put("put f=1 (before the start)", "f", "1", None).await;
    s.put("put f=2", "f", "2", None).await;
    s.log("events of the future watch:");
    s.read(&mut future, 1, 0).await;
    let mut cur_watch = s
        .watch(
            "watch f from the current revision",
            "f",
            Some(WatchOptions::new().with_start_revision(cur + 2)),
        )
        .await;
    s.read(&mut cur_watch, 1, 0).await;
    s.finish()
}

async fn watch_stream(mut s: S) -> Vec<String> {
    let mut ws = s.watch("watch a (id 0)", "a", None).await;
    s.add_watch(&mut ws, "watch b (id 1)", "b", None).await;
    s.add_watch(
        &mut ws,
        "watch c with id 10",
        "c",
        Some(WatchOptions::new().with_watch_id(10)),
    )
    .await;
    s.add_watch(
        &mut ws,
        "watch d with duplicate id 10",
        "d",
        Some(WatchOptions::new().with_watch_id(10)),
    )
    .await;
    s.add_watch(
        &mut ws,
        "watch inverted range [z, a)",
        "z",
        Some(WatchOptions::new().with_range("a")),
    )
    .await;
    s.add_watch(&mut ws, "watch e (next auto id)", "e", None)
        .await;
    s.add_watch(
        &mut ws,
        "watch prefix (id 3) prev_kv",
        "",
        Some(WatchOptions::new().with_all_keys().with_prev_key()),
    )
    .await;
    for k in ["a", "b", "c", "d", "e"] {
        s.put(&format!("put {k}"), k, "1", None).await;
    }
    s.read(&mut ws, 9, 0).await;
    s.log("cancel watch 1:");
    if let Err(e) = ws.cancel(1).await {
        s.log(err_str(&e));
    }
    s.read(&mut ws, 0, 1).await;
    s.put("put b", "b", "2", None).await;
    s.read(&mut ws, 1, 0).await;
    s.log("cancel unknown watch 99:");
    if let Err(e) = ws.cancel(99).await {
        s.log(err_str(&e));
    }
    s.read(&mut ws, 0, 0).await;
    s.log("progress request:");
    if let Err(e) = ws.request_progress().await {
        s.log(err_str(&e));
    }
    s.read(&mut ws, 0, 1).await;
    s.add_watch(&mut ws, "watch b again (reuses no id)", "b", None)
        .await;
    s.put("put b", "b", "3", None).await;
    s.read(&mut ws, 2, 0).await;
    s.finish()
}

async fn watch_compacted(mut s: S) -> Vec<String> {
    for v in ["1", "2", "3", "4"] {
        s.put_rev("a", v).await;
    }
    let r3 = s.abs(3);
    s.compact("compact +3", r3, true).await;
    let mut w = s
        .watch(
            "watch a from +1 (compacted)",
            "a",
            Some(WatchOptions::new().with_start_revision(s.abs(1))),
        )
        .await;
    s.read(&mut w, 0, 1).await;
    let mut w2 = s
        .watch(
            "watch a from +3 (the compaction revision)",
            "a",
            Some(WatchOptions::new().with_start_revision(r3)),
        )
        .await;
    s.read(&mut w2, 2, 0).await;
    s.add_watch(
        &mut w2,
        "second watch on the stream from +2 (compacted)",
        "",
        Some(
            WatchOptions::new()
                .with_all_keys()
                .with_start_revision(s.abs(2)),
        ),
    )
    .await;
    s.read(&mut w2, 0, 1).await;
    s.put("put a=5", "a", "5", None).await;
    s.read(&mut w2, 1, 0).await;
    s.finish()
}

async fn watch_progress(mut s: S) -> Vec<String> {
    let mut ws = s
        .watch(
            "watch a progress_notify",
            "a",
            Some(WatchOptions::new().with_progress_notify()),
        )
        .await;
    s.add_watch(&mut ws, "watch z (no progress_notify)", "z", None)
        .await;
    s.log("first notification:");
    read_first_progress(&mut s, &mut ws).await;
    s.put("put a", "a", "1", None).await;
    s.put("put b", "b", "1", None).await;
    s.log("event:");
    s.read(&mut ws, 1, 0).await;
    s.log("next notification:");
    read_first_progress(&mut s, &mut ws).await;
    s.finish()
}

/// Waits (up to 5 s) for the next progress notification and records it alone.
async fn read_first_progress(s: &mut S, ws: &mut WatchStream) {
    let deadline = Instant::now() + WATCH_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline.into(), ws.message()).await {
            Ok(Ok(Some(r))) => {
                let lines = s.fmt_watch(&r);
                let progress = r.events().is_empty() && !r.created() && !r.canceled();
                s.out.extend(lines);
                if progress {
                    return;
                }
            }
            Ok(Ok(None)) => return s.log("  stream closed"),
            Ok(Err(e)) => return s.log(format!("  {}", err_str(&e))),
            Err(_) => return s.log("  TIMEOUT waiting for a progress notification"),
        }
    }
}

async fn watch_fragment(mut s: S) -> Vec<String> {
    // Five 600 KiB values: replaying them takes more than etcd's fragment
    // size (request limit + gRPC overhead, 2 MiB), so a fragmenting watch
    // gets them as 3 + 2 events.
    let value = vec![b'f'; 600 * 1024];
    for k in ["f/1", "f/2", "f/3", "f/4", "f/5"] {
        s.put(&format!("put {k} (600 KiB)"), k, value.clone(), None)
            .await;
    }
    for (label, opts) in [
        ("watch prefix f/ from +1", WatchOptions::new()),
        (
            "watch prefix f/ from +1 fragment",
            WatchOptions::new().with_fragment(),
        ),
    ] {
        let opts = opts.with_prefix().with_start_revision(s.abs(1));
        let mut ws = s.watch(label, "f/", Some(opts)).await;
        // Replayed history is sent as one response (then split if fragmenting);
        // the etcd-client crate does not reassemble fragments.
        let mut n = 0;
        while n < 5 {
            match tokio::time::timeout(WATCH_TIMEOUT, ws.message()).await {
                Ok(Ok(Some(r))) => {
                    n += r.events().len();
                    s.log(format!("  response with {} events", r.events().len()));
                    let lines = s.fmt_watch(&r);
                    s.out.extend(lines);
                }
                other => {
                    s.log(format!(
                        "  no more responses: {:?}",
                        other.map(|r| r.is_ok())
                    ));
                    break;
                }
            }
        }
    }
    s.finish()
}

// ------------------------------------------------------------------ Lease

async fn lease_grant_revoke(mut s: S) -> Vec<String> {
    let l1 = s.grant("grant ttl 60", 60, None).await;
    let l2 = s.grant("grant ttl 30 id 7777", 30, Some(7777)).await;
    s.grant("grant id 7777 again", 30, Some(7777)).await;
    let l3 = s.grant("grant ttl 1 (below the minimum)", 1, None).await;
    s.grant("grant ttl 9000000001 (too large)", 9_000_000_001, None)
        .await;
    s.put(
        "put k/1 lease L1",
        "k/1",
        "1",
        Some(PutOptions::new().with_lease(l1)),
    )
    .await;
    s.put(
        "put k/2 lease L1",
        "k/2",
        "2",
        Some(PutOptions::new().with_lease(l1)),
    )
    .await;
    s.put(
        "put k/0 lease L1",
        "k/0",
        "0",
        Some(PutOptions::new().with_lease(l1)),
    )
    .await;
    s.put(
        "put k/3 lease 7777",
        "k/3",
        "3",
        Some(PutOptions::new().with_lease(l2)),
    )
    .await;
    s.put("put k/4 no lease", "k/4", "4", None).await;
    s.time_to_live("ttl L1 with keys", l1, true).await;
    s.time_to_live("ttl L1 without keys", l1, false).await;
    s.time_to_live("ttl 7777 with keys", l2, true).await;
    s.time_to_live("ttl unknown lease", 0x4242, true).await;
    s.list_leases("leases").await;
    let mut w = s
        .watch(
            "watch prefix k/ prev_kv",
            "k/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await;
    s.revoke("revoke L1", l1).await;
    s.read(&mut w, 3, 0).await;
    s.get(
        "k/ after revoke",
        "k/",
        Some(GetOptions::new().with_prefix()),
    )
    .await;
    s.revoke("revoke L1 again", l1).await;
    s.revoke("revoke unknown lease", 0x4242).await;
    s.time_to_live("ttl of revoked L1", l1, true).await;
    s.list_leases("leases").await;
    s.revoke("revoke the lease without keys", l3).await;
    s.revoke("revoke 7777", l2).await;
    s.read(&mut w, 1, 0).await;
    s.list_leases("leases").await;
    s.get("k/", "k/", Some(GetOptions::new().with_prefix()))
        .await;
    s.finish()
}

async fn lease_keepalive(mut s: S) -> Vec<String> {
    let l = s.grant("grant ttl 10", 10, None).await;
    s.put(
        "put k lease",
        "k",
        "1",
        Some(PutOptions::new().with_lease(l)),
    )
    .await;
    match call(s.c.lease_keep_alive(l)).await {
        Ok((mut keeper, mut stream)) => {
            s.log("keep-alive stream opened");
            for i in 0..2 {
                if let Err(e) = keeper.keep_alive().await {
                    s.log(err_str(&e));
                }
                let line = match call(stream.message()).await {
                    Ok(Some(r)) => format!(
                        "{} id={} ttl={}",
                        s.hdr(r.header()),
                        s.lease(r.id()),
                        r.ttl()
                    ),
                    Ok(None) => "stream closed".into(),
                    Err(e) => e,
                };
                s.log(format!("keep-alive {i}: {line}"));
            }
            s.time_to_live("ttl after keep-alive", l, true).await;
            s.revoke("revoke", l).await;
            if let Err(e) = keeper.keep_alive().await {
                s.log(err_str(&e));
            }
            let line = match call(stream.message()).await {
                Ok(Some(r)) => format!(
                    "{} id={} ttl={}",
                    s.hdr(r.header()),
                    s.lease(r.id()),
                    r.ttl()
                ),
                Ok(None) => "stream closed".into(),
                Err(e) => e,
            };
            s.log(format!("keep-alive after revoke: {line}"));
        }
        Err(e) => s.log(format!("keep-alive: {e}")),
    }
    match call(s.c.lease_keep_alive(0x4242)).await {
        Ok(_) => s.log("keep-alive of an unknown lease: opened"),
        Err(e) => s.log(format!("keep-alive of an unknown lease: {e}")),
    }
    s.get("k", "k", None).await;
    s.finish()
}

async fn lease_expiry(mut s: S) -> Vec<String> {
    let l = s.grant("grant ttl 2", 2, None).await;
    let keep = s.grant("grant ttl 60", 60, None).await;
    s.put(
        "put e/1 lease",
        "e/1",
        "1",
        Some(PutOptions::new().with_lease(l)),
    )
    .await;
    s.put(
        "put e/2 lease",
        "e/2",
        "2",
        Some(PutOptions::new().with_lease(l)),
    )
    .await;
    s.put(
        "put e/3 other lease",
        "e/3",
        "3",
        Some(PutOptions::new().with_lease(keep)),
    )
    .await;
    s.put("put e/4 no lease", "e/4", "4", None).await;
    let mut w = s
        .watch(
            "watch prefix e/ prev_kv",
            "e/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await;
    s.log("waiting for expiry:");
    let started = Instant::now();
    s.read_with_timeout(&mut w, 2, Duration::from_secs(10))
        .await;
    let took = started.elapsed();
    // Roughly at its TTL (generous upper bound: CI machines are busy).
    s.log(format!(
        "expired after 1-9s: {}",
        took >= Duration::from_secs(1) && took <= Duration::from_secs(9)
    ));
    s.get(
        "e/ after expiry",
        "e/",
        Some(GetOptions::new().with_prefix()),
    )
    .await;
    s.time_to_live("ttl of the expired lease", l, true).await;
    s.list_leases("leases").await;
    s.revoke("revoke the expired lease", l).await;
    s.finish()
}

/// Two leases that expire together are revoked one by one, as etcd does:
/// each revocation is its own revision (in no particular order).
async fn lease_expiry_together(mut s: S) -> Vec<String> {
    let a = s.grant("grant A ttl 2", 2, None).await;
    let b = s.grant("grant B ttl 2", 2, None).await;
    s.put(
        "put x/a lease A",
        "x/a",
        "1",
        Some(PutOptions::new().with_lease(a)),
    )
    .await;
    s.put(
        "put x/b lease B",
        "x/b",
        "1",
        Some(PutOptions::new().with_lease(b)),
    )
    .await;
    let mut ws = s
        .watch(
            "watch prefix x/",
            "x/",
            Some(WatchOptions::new().with_prefix()),
        )
        .await;
    let mut events: Vec<(String, i64, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.len() < 2 {
        match tokio::time::timeout_at(deadline.into(), ws.message()).await {
            Ok(Ok(Some(r))) => {
                for ev in r.events() {
                    let kv = ev.kv().cloned().expect("event kv");
                    events.push((
                        show(kv.key()),
                        kv.mod_revision(),
                        format!("{:?}", ev.event_type()),
                    ));
                }
            }
            other => {
                s.log(format!("watch ended early: {:?}", other.map(|r| r.is_ok())));
                break;
            }
        }
    }
    let revs: std::collections::BTreeSet<i64> = events.iter().map(|e| e.1).collect();
    let highest = revs.iter().max().copied().unwrap_or(0);
    s.log(format!(
        "expired: {} distinct revisions={} highest={}",
        {
            let mut k: Vec<String> = events.iter().map(|e| format!("{} {}", e.2, e.0)).collect();
            k.sort();
            k.join(", ")
        },
        revs.len(),
        s.rev(highest)
    ));
    s.get(
        "x/ after expiry",
        "x/",
        Some(GetOptions::new().with_prefix()),
    )
    .await;
    s.list_leases("leases").await;
    s.finish()
}

impl S {
    /// Like `read(ws, events, 0)` with a longer timeout.
    async fn read_with_timeout(&mut self, ws: &mut WatchStream, events: usize, t: Duration) {
        let deadline = Instant::now() + t;
        let mut n = 0;
        while n < events {
            match tokio::time::timeout_at(deadline.into(), ws.message()).await {
                Ok(Ok(Some(r))) => {
                    n += r.events().len();
                    let lines = self.fmt_watch(&r);
                    self.out.extend(lines);
                }
                Ok(Ok(None)) => return self.log("  stream closed"),
                Ok(Err(e)) => return self.log(format!("  {}", err_str(&e))),
                Err(_) => return self.log("  TIMEOUT"),
            }
        }
        self.read(ws, 0, 0).await;
    }
}

// ------------------------------------------------------------------ Maintenance, Cluster

async fn maintenance_cluster(mut s: S) -> Vec<String> {
    s.put("put a", "a", "1", None).await;
    match call(s.c.status()).await {
        Ok(r) => {
            let member = r.header().map_or(0, |h| h.member_id());
            let line = format!(
                "{} version=3.4.x:{} db_size>0:{} db_size_in_use>0:{} in_use<=size:{} \
                 leader=member:{} raft_index>0:{} raft_applied_index>0:{} raft_term>0:{} \
                 errors={:?} is_learner={}",
                s.hdr(r.header()),
                r.version().starts_with("3.4."),
                r.db_size() > 0,
                r.raft_used_db_size() > 0,
                r.raft_used_db_size() <= r.db_size(),
                r.leader() == member && member != 0,
                r.raft_index() > 0,
                r.raft_applied_index() > 0,
                r.raft_term() > 0,
                r.errors(),
                r.is_learner()
            );
            s.log(format!("status: {line}"));
        }
        Err(e) => s.log(format!("status: {e}")),
    }
    let endpoint = s.endpoint.clone();
    match call(s.c.member_list()).await {
        Ok(r) => {
            let member = r.header().map_or(0, |h| h.member_id());
            // etcd's Cluster and (some) Maintenance responses carry no
            // revision: only the header's presence and ids are compared.
            let ids = r
                .header()
                .is_some_and(|h| h.cluster_id() != 0 && h.member_id() != 0);
            s.log(format!(
                "member list: header ids:{ids} members={}",
                r.members().len()
            ));
            for m in r.members() {
                s.log(format!(
                    "  id=header.member_id:{} name_set:{} client_urls=[endpoint]:{} is_learner={}",
                    m.id() == member,
                    !m.name().is_empty(),
                    m.client_urls() == [endpoint.clone()],
                    m.is_learner()
                ));
            }
        }
        Err(e) => s.log(format!("member list: {e}")),
    }
    match call(s.c.alarm(
        etcd_client::AlarmAction::Get,
        etcd_client::AlarmType::None,
        None,
    ))
    .await
    {
        Ok(r) => {
            // etcd 3.4 sends Alarm and Defragment responses without a header.
            s.log(format!("alarm get: alarms={}", r.alarms().len()));
        }
        Err(e) => s.log(format!("alarm get: {e}")),
    }
    match call(s.c.defragment()).await {
        Ok(_) => s.log("defragment: ok"),
        Err(e) => s.log(format!("defragment: {e}")),
    }
    match call(s.c.hash_kv(0)).await {
        Ok(r) => {
            let line = format!(
                "{} compact_revision={}",
                s.hdr(r.header()),
                s.rev(r.compact_version())
            );
            s.log(format!("hash_kv: {line}"));
        }
        Err(e) => s.log(format!("hash_kv: {e}")),
    }
    s.get("a still readable", "a", None).await;
    s.finish()
}

// ------------------------------------------------------------------ limits, bytes

async fn request_too_large(mut s: S) -> Vec<String> {
    let big = vec![b'x'; 1536 * 1024 + 1024];
    let ok = vec![b'y'; 1024 * 1024];
    s.put("put 1.5 MiB + 1 KiB value", "big", big.clone(), None)
        .await;
    s.put("put 1 MiB value", "ok", ok.clone(), None).await;
    s.get("get the 1 MiB value", "ok", None).await;
    let half = vec![b'z'; 800 * 1024];
    s.txn(
        "txn with 2 x 800 KiB puts",
        Txn::new().and_then([
            TxnOp::put("h1", half.clone(), None),
            TxnOp::put("h2", half.clone(), None),
        ]),
    )
    .await;
    s.get("big not written", "big", None).await;
    s.get("h1 not written", "h1", None).await;
    s.finish()
}

async fn binary_keys(mut s: S) -> Vec<String> {
    let keys: Vec<Vec<u8>> = vec![
        vec![0],
        vec![0, 0],
        vec![0, 1],
        b"a\0b".to_vec(),
        b"a\xffb".to_vec(),
        vec![0x7f],
        vec![0x80],
        vec![0xfe, 0xff],
        vec![0xff],
        vec![0xff, 0x00],
        vec![0xff, 0xff],
        vec![0xff, 0xff, 0xff],
    ];
    let mut w = s
        .watch(
            "watch prefix \\xff",
            vec![0xff],
            Some(WatchOptions::new().with_prefix()),
        )
        .await;
    for (i, k) in keys.iter().enumerate() {
        s.put(
            &format!("put {}", show(k)),
            k.clone(),
            vec![i as u8, 0, 0xff],
            None,
        )
        .await;
    }
    s.get(
        "all from \\0",
        vec![0],
        Some(GetOptions::new().with_from_key()),
    )
    .await;
    s.get("single \\0", vec![0], None).await;
    s.get("prefix \\0", vec![0], Some(GetOptions::new().with_prefix()))
        .await;
    s.get(
        "prefix \\xff",
        vec![0xff],
        Some(GetOptions::new().with_prefix()),
    )
    .await;
    s.get(
        "prefix \\xff\\xff",
        vec![0xff, 0xff],
        Some(GetOptions::new().with_prefix()),
    )
    .await;
    s.get("prefix a", "a", Some(GetOptions::new().with_prefix()))
        .await;
    s.get(
        "range [\\x7f, \\xff)",
        vec![0x7f],
        Some(GetOptions::new().with_range(vec![0xff])),
    )
    .await;
    s.get(
        "sort by value descend",
        vec![0],
        Some(
            GetOptions::new()
                .with_from_key()
                .with_sort(SortTarget::Value, SortOrder::Descend)
                .with_limit(4),
        ),
    )
    .await;
    s.txn(
        "txn compare value with bytes",
        Txn::new()
            .when([Compare::value(
                b"a\0b".to_vec(),
                CompareOp::Equal,
                vec![3u8, 0, 0xff],
            )])
            .and_then([TxnOp::delete(
                vec![0xff],
                Some(DeleteOptions::new().with_prefix().with_prev_key()),
            )]),
    )
    .await;
    s.read(&mut w, 8, 0).await;
    s.get(
        "all after deleting prefix \\xff",
        vec![0],
        Some(GetOptions::new().with_from_key().with_keys_only()),
    )
    .await;
    s.finish()
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put() {
    conformance(kv_put).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range() {
    conformance(kv_range).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_sort() {
    conformance(kv_range_sort).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_range() {
    conformance(kv_delete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares() {
    conformance(txn_compare).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_branches_and_nesting() {
    conformance(txn_ops).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_invalid() {
    conformance(txn_errors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact() {
    conformance(compaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ranges_filters_prev_kv() {
    conformance(watch_kinds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_history() {
    conformance(watch_history).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_many_per_stream_cancel_progress_request() {
    conformance(watch_stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_compacted_revision() {
    conformance(watch_compacted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fragmented_responses() {
    conformance(watch_fragment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_progress_notify() {
    let opts = StoreOptions {
        progress_notify_interval: Some(Duration::from_secs(1)),
    };
    conformance_with(opts, watch_progress).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_ttl_revoke() {
    conformance(lease_grant_revoke).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keep_alive() {
    conformance(lease_keepalive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expires() {
    conformance(lease_expiry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expiring_together() {
    conformance(lease_expiry_together).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_and_cluster() {
    conformance(maintenance_cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_requests() {
    conformance(request_too_large).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_byte_keys() {
    conformance(binary_keys).await;
}
