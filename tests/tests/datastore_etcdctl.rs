//! The real `etcdctl` (v3 API) against etcd 3.4 and against k3rs-datastore:
//! the same commands, the same normalized output.
//!
//! Each test runs one script of etcdctl commands against a fresh etcd and a
//! fresh shim on SQLite (put/get also on PostgreSQL) and compares what the
//! user sees: stdout, the `Error:` lines of stderr and the exit code. Lease
//! IDs, cluster/member IDs, durations and database sizes are normalized.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use k3rs_e2e::{Backend, TestStore, compare_transcripts, etcdctl_path};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const CMD_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `script` against each backend and asserts every transcript equals etcd's.
async fn etcdctl_conformance<F, Fut>(backends: &[Backend], script: F)
where
    F: Fn(Ctl) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let started = futures::future::join_all(backends.iter().map(|b| TestStore::start(*b))).await;
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
    let bin = etcdctl_path().expect("etcdctl");
    let runs = futures::future::join_all(stores.iter().map(|store| {
        let ctl = Ctl {
            bin: bin.display().to_string(),
            endpoint: store.host_port().to_string(),
            leases: BTreeMap::new(),
            out: Vec::new(),
        };
        let script = &script;
        async move { (store.backend(), script(ctl).await) }
    }))
    .await;
    futures::future::join_all(stores.into_iter().map(TestStore::stop)).await;
    eprintln!("etcd transcript:\n{}", runs[0].1.join("\n"));
    if let Err(report) = compare_transcripts(&runs) {
        panic!("etcdctl sees the shim differently from etcd 3.4:{report}");
    }
}

/// etcdctl pointed at one store, and the transcript of what it printed.
struct Ctl {
    bin: String,
    endpoint: String,
    /// Lease IDs → L1, L2, ... (etcdctl prints them in hex, JSON in decimal).
    leases: BTreeMap<u64, String>,
    out: Vec<String>,
}

impl Ctl {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .arg("--command-timeout=5s")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `etcdctl ARGS` (with `stdin`), records its normalized output and
    /// returns its raw stdout.
    async fn run_with(&mut self, args: &[&str], stdin: Option<&str>) -> String {
        let cmdline = self.normalize_text(&format!("$ etcdctl {}", args.join(" ")));
        self.out.push(cmdline);
        let mut child = self.command(args).spawn().expect("run etcdctl");
        if let Some(mut pipe) = child.stdin.take() {
            if let Some(input) = stdin {
                pipe.write_all(input.as_bytes())
                    .await
                    .expect("etcdctl stdin");
            }
            drop(pipe);
        }
        let output = match tokio::time::timeout(CMD_TIMEOUT, child.wait_with_output()).await {
            Ok(o) => o.expect("etcdctl output"),
            Err(_) => {
                self.out.push("TIMEOUT".into());
                return String::new();
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        self.record_output(&stdout, &stderr);
        self.out
            .push(format!("exit={}", output.status.code().unwrap_or(-1)));
        stdout
    }

    async fn run(&mut self, args: &[&str]) -> String {
        self.run_with(args, None).await
    }

    fn record_output(&mut self, stdout: &str, stderr: &str) {
        for line in stdout.lines() {
            let lines = self.normalize(line);
            self.out.extend(lines);
        }
        // etcdctl's client logs retries as JSON on stderr; only its own
        // messages ("Error: ...", health reports) are part of what it says.
        for line in stderr.lines().filter(|l| !l.starts_with('{')) {
            let lines = self.normalize(line);
            self.out
                .extend(lines.into_iter().map(|l| format!("stderr: {l}")));
        }
    }

    /// Remembers a lease ID printed (in hex) by `lease grant`; returns it as printed.
    fn learn_lease(&mut self, grant_output: &str) -> String {
        let hex = grant_output
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let id = u64::from_str_radix(&hex, 16).expect("lease grant prints a hex id");
        let n = self.leases.len() + 1;
        self.leases.entry(id).or_insert(format!("L{n}"));
        hex
    }

    /// `etcdctl lease grant TTL`; returns the lease ID as etcdctl prints it.
    async fn grant(&mut self, ttl: &str) -> String {
        let start = self.out.len();
        let out = self.run(&["lease", "grant", ttl]).await;
        let hex = self.learn_lease(&out);
        for line in &mut self.out[start..] {
            for (id, name) in &self.leases {
                *line = line.replace(&format!("{id:016x}"), name);
            }
        }
        hex
    }

    fn normalize_text(&self, line: &str) -> String {
        let mut line = line.replace(&self.endpoint, "<endpoint>");
        for (id, name) in &self.leases {
            line = line.replace(&format!("{id:016x}"), name);
            line = line.replace(&format!("{id:x}"), name);
        }
        for (start, end) in [("remaining(", "s)"), ("took = ", "")] {
            line = mask_after(&line, start, end);
        }
        // A lease's keys come in no particular order.
        if let Some(i) = line.find("attached keys([")
            && let Some(j) = line[i..].find("])")
        {
            let from = i + "attached keys([".len();
            let mut keys: Vec<&str> = line[from..i + j].split(' ').collect();
            keys.sort_unstable();
            line = format!("{}{}{}", &line[..from], keys.join(" "), &line[i + j..]);
        }
        line
    }

    /// One printed line → normalized lines (JSON is pretty-printed, with
    /// its non-deterministic fields replaced).
    fn normalize(&self, line: &str) -> Vec<String> {
        let trimmed = line.trim();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && let Ok(mut v) = serde_json::from_str::<Value>(trimmed)
        {
            self.normalize_json(None, &mut v);
            return serde_json::to_string_pretty(&v)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect();
        }
        vec![self.normalize_text(line)]
    }

    fn normalize_json(&self, field: Option<&str>, v: &mut Value) {
        match v {
            Value::Object(map) => {
                // A lease's remaining TTL depends on timing: compare its bounds.
                let granted = map.get("granted-ttl").and_then(Value::as_i64);
                if let (Some(g), Some(ttl)) = (granted, map.get_mut("ttl"))
                    && ttl.as_i64().is_some_and(|t| t > 0 && t <= g)
                {
                    *ttl = Value::from("<0 < ttl <= granted>");
                }
                let member = map
                    .get("header")
                    .and_then(|h| h.get("member_id"))
                    .and_then(Value::as_u64);
                for (k, val) in map.iter_mut() {
                    // A status's leader should be the member answering.
                    if k == "leader" && val.as_u64().is_some() && val.as_u64() == member {
                        *val = Value::from("<this member>");
                        continue;
                    }
                    self.normalize_json(Some(k), val);
                }
            }
            Value::Array(items) => {
                for item in items.iter_mut() {
                    self.normalize_json(field, item);
                }
                if field == Some("keys") {
                    // A lease's keys come in no particular order.
                    items.sort_by_key(|k| k.to_string());
                }
            }
            Value::Number(n) => {
                let Some(f) = field else { return };
                let x = n.as_i64().unwrap_or(1);
                let masked = match f {
                    "cluster_id" | "member_id" | "raft_term" | "raftTerm" if x != 0 => "<id>",
                    "dbSize" | "dbSizeInUse" if x > 0 => "<size>",
                    "raftIndex" | "raftAppliedIndex" if x > 0 => "<index>",
                    "ID" | "id" | "lease" => {
                        let id = n.as_u64().unwrap_or(0);
                        if let Some(name) = self.leases.get(&id) {
                            *v = Value::from(name.clone());
                        }
                        return;
                    }
                    _ => return,
                };
                *v = Value::from(masked);
            }
            Value::String(s) => match field {
                Some("key" | "value" | "keys") => {
                    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&*s) {
                        *s = format!("b64:{}", String::from_utf8_lossy(&bytes));
                    }
                }
                Some("Endpoint" | "endpoint") => *s = "<endpoint>".into(),
                Some("took") => *s = "<duration>".into(),
                Some("version") if s.starts_with("3.4.") => *s = "3.4.x".into(),
                _ => {}
            },
            _ => {}
        }
    }

    /// Starts `etcdctl watch ARGS` in the background.
    fn start_watch(&mut self, args: &[&str]) -> tokio::process::Child {
        let mut full = vec!["watch"];
        full.extend_from_slice(args);
        self.out.push(format!("$ etcdctl {} &", full.join(" ")));
        self.command(&full).spawn().expect("run etcdctl watch")
    }

    /// Waits for `lines` lines of a watch's output (or 10 s), stops it and
    /// records what it printed (and whether it ended by itself).
    async fn finish_watch(&mut self, mut child: tokio::process::Child, lines: usize) {
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let mut reader = BufReader::new(stdout).lines();
        let mut got = Vec::new();
        let mut ended = false;
        let collect = async {
            while got.len() < lines {
                match reader.next_line().await {
                    Ok(Some(l)) => got.push(l),
                    _ => {
                        ended = true;
                        break;
                    }
                }
            }
        };
        let timed_out = tokio::time::timeout(Duration::from_secs(10), collect)
            .await
            .is_err();
        if !ended {
            // Anything more would be a surplus event.
            match tokio::time::timeout(Duration::from_millis(300), reader.next_line()).await {
                Ok(Ok(Some(l))) => got.push(l),
                Ok(_) => ended = true,
                Err(_) => {}
            }
        }
        let _ = child.kill().await;
        let mut err = String::new();
        let _ =
            tokio::io::AsyncReadExt::read_to_string(&mut BufReader::new(stderr), &mut err).await;
        for l in got {
            let lines = self.normalize(&l);
            self.out.extend(lines);
        }
        self.record_output("", &err);
        if timed_out {
            self.out.push("TIMEOUT waiting for watch output".into());
        }
        self.out.push(format!("ended by itself: {ended}"));
    }

    async fn watch(&mut self, args: &[&str], lines: usize) {
        let child = self.start_watch(args);
        self.finish_watch(child, lines).await;
    }

    fn finish(self) -> Vec<String> {
        self.out
    }
}

/// Replaces what follows `start` (up to `end`, or to the end of the line) with `*`.
fn mask_after(line: &str, start: &str, end: &str) -> String {
    let Some(i) = line.find(start) else {
        return line.to_string();
    };
    let from = i + start.len();
    let to = if end.is_empty() {
        line.len()
    } else {
        line[from..].find(end).map_or(line.len(), |j| from + j)
    };
    format!("{}*{}", &line[..from], &line[to..])
}

// ------------------------------------------------------------------ scripts

async fn put_get(mut c: Ctl) -> Vec<String> {
    c.run(&["get", "foo", "-w", "json"]).await;
    c.run(&["put", "foo", "bar"]).await;
    c.run(&["put", "foo", "baz", "--prev-kv"]).await;
    c.run(&["put", "fox", "1"]).await;
    c.run(&["put", "a", "0"]).await;
    c.run(&["get", "foo"]).await;
    c.run(&["get", "foo", "-w", "json"]).await;
    c.run(&["get", "foo", "--print-value-only"]).await;
    c.run(&["get", "fo", "--prefix", "-w", "json"]).await;
    c.run(&["get", "", "--prefix", "--keys-only"]).await;
    c.run(&["get", "b", "--from-key"]).await;
    c.run(&["get", "a", "z"]).await;
    c.run(&["get", "foo", "--rev=2", "-w", "json"]).await;
    c.run(&["get", "", "--prefix", "--limit=1", "-w", "json"])
        .await;
    c.run(&["get", "", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"])
        .await;
    c.run(&["get", "foo", "--rev=99"]).await;
    c.run(&["get", "missing", "-w", "json"]).await;
    c.run(&["put", "", "v"]).await;
    c.run(&["del", "foo", "--prev-kv"]).await;
    c.run(&["del", "fo", "--prefix"]).await;
    c.run(&["del", "nothing"]).await;
    c.run(&["get", "", "--prefix", "-w", "json"]).await;
    c.finish()
}

async fn watch(mut c: Ctl) -> Vec<String> {
    c.run(&["put", "w/1", "a"]).await;
    c.run(&["put", "w/2", "b"]).await;
    c.run(&["put", "w/1", "c"]).await;
    c.run(&["del", "w/2"]).await;
    c.run(&["put", "other", "x"]).await;
    // Replays from revision 2: deterministic whenever the watch registers.
    c.watch(&["--rev=2", "--prefix", "w/"], 12).await;
    c.watch(&["--rev=2", "--prefix", "w/", "--prev-kv"], 16)
        .await;
    c.watch(&["--rev=3", "w/1", "-w", "json"], 1).await;
    c.watch(&["--rev=1", "", "--prefix"], 15).await;
    // Events that happen after the watch starts (from the next revision, so
    // that it does not matter when the watch registers).
    let live = c.start_watch(&["--rev=7", "live", "--prev-kv"]);
    c.run(&["put", "live", "1"]).await;
    c.run(&["put", "live", "2"]).await;
    c.run(&["del", "live"]).await;
    c.finish_watch(live, 13).await;
    c.run(&["compaction", "4"]).await;
    c.watch(&["--rev=2", "w/1"], 3).await;
    c.finish()
}

async fn txn(mut c: Ctl) -> Vec<String> {
    c.run(&["put", "t", "1"]).await;
    let script = "value(\"t\") = \"1\"\nmod(\"t\") > \"0\"\n\nput t 2\nget t\n\nput t failed\n\n";
    c.run_with(&["txn", "--interactive=false"], Some(script))
        .await;
    c.run_with(&["txn", "--interactive=false"], Some(script))
        .await;
    c.run_with(&["txn", "--interactive=false", "-w", "json"], Some(script))
        .await;
    let create = "create(\"new\") = \"0\"\n\nput new 1\ndel t\nget \"\" --prefix\n\nget new\n\n";
    c.run_with(&["txn", "--interactive=false", "-w", "json"], Some(create))
        .await;
    c.run_with(&["txn", "--interactive=false"], Some(create))
        .await;
    // (etcdctl 3.4 cannot parse lease compares: it panics on `lease("k") = "0"`.)
    let versions = "version(\"new\") = \"1\"\n\nput new 2 --prev-kv\n\n\n";
    c.run_with(&["txn", "--interactive=false"], Some(versions))
        .await;
    let dup = "\nput d 1\nput d 2\n\n\n";
    c.run_with(&["txn", "--interactive=false"], Some(dup)).await;
    c.run(&["get", "", "--prefix"]).await;
    c.finish()
}

async fn lease(mut c: Ctl) -> Vec<String> {
    let id = c.grant("60").await;
    c.run(&["put", "k1", "v", &format!("--lease={id}")]).await;
    c.run(&["put", "k2", "v", &format!("--lease={id}")]).await;
    c.run(&["get", "k1", "-w", "json"]).await;
    c.run(&["lease", "timetolive", &id]).await;
    c.run(&["lease", "timetolive", &id, "--keys"]).await;
    c.run(&["lease", "timetolive", &id, "--keys", "-w", "json"])
        .await;
    c.run(&["lease", "keep-alive", "--once", &id]).await;
    c.run(&["lease", "list"]).await;
    c.run(&["lease", "revoke", &id]).await;
    c.run(&["get", "", "--prefix"]).await;
    c.run(&["lease", "timetolive", &id]).await;
    c.run(&["lease", "revoke", &id]).await;
    c.run(&["lease", "keep-alive", "--once", &id]).await;
    c.run(&["put", "k3", "v", &format!("--lease={id}")]).await;
    c.run(&["lease", "list"]).await;
    c.finish()
}

async fn compaction(mut c: Ctl) -> Vec<String> {
    for v in ["1", "2", "3", "4"] {
        c.run(&["put", "c", v]).await;
    }
    c.run(&["compaction", "3"]).await;
    c.run(&["get", "c", "--rev=2"]).await;
    c.run(&["get", "c", "--rev=3"]).await;
    c.run(&["compaction", "3"]).await;
    c.run(&["compaction", "99"]).await;
    c.run(&["compaction", "4", "--physical"]).await;
    c.run(&["get", "c", "-w", "json"]).await;
    c.finish()
}

async fn endpoint(mut c: Ctl) -> Vec<String> {
    c.run(&["put", "e", "1"]).await;
    c.run(&["endpoint", "status", "-w", "json"]).await;
    c.run(&["endpoint", "health"]).await;
    c.run(&["endpoint", "health", "-w", "json"]).await;
    c.finish()
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_put_get_del() {
    etcdctl_conformance(
        &[Backend::Etcd, Backend::Sqlite, Backend::Postgres],
        put_get,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch() {
    etcdctl_conformance(&[Backend::Etcd, Backend::Sqlite], watch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_txn() {
    etcdctl_conformance(&[Backend::Etcd, Backend::Sqlite], txn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease() {
    etcdctl_conformance(&[Backend::Etcd, Backend::Sqlite], lease).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_compaction() {
    etcdctl_conformance(&[Backend::Etcd, Backend::Sqlite], compaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_endpoint_status_health() {
    etcdctl_conformance(&[Backend::Etcd, Backend::Sqlite], endpoint).await;
}
