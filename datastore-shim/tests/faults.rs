//! Fault behaviour of the `k3rs-datastore` binary: bad flags, `kill -9`
//! during a write burst, and the database connection going away while serving.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_k3rs-datastore");

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(port: u16, endpoint: &str, data_dir: &std::path::Path) -> Proc {
    let child = Command::new(BIN)
        .args([
            "--listen-address",
            &format!("127.0.0.1:{port}"),
            "--datastore-endpoint",
            endpoint,
            "--data-dir",
            &data_dir.display().to_string(),
            "--metrics-address",
            "",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start k3rs-datastore");
    Proc(child)
}

async fn connect(port: u16) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = Client::connect([format!("127.0.0.1:{port}")], None).await
            && c.status().await.is_ok()
        {
            return c;
        }
        assert!(Instant::now() < deadline, "datastore did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000_000)
        .unwrap_or(0)
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        vec!["--datastore-endpoint", "bogus://x"],
        vec!["--datastore-endpoint", "mysql://root@tcp(127.0.0.1:3306/db"],
        vec!["--listen-address", "nowhere"],
        vec!["--compact-interval", "soon"],
        vec!["--no-such-flag"],
    ] {
        let out = Command::new(BIN).args(&args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains("error") || first.starts_with("k3rs-datastore:"),
            "{args:?}: {stderr}"
        );
        if args[0] != "--no-such-flag" && args[0] != "--compact-interval" {
            assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        }
    }
}

/// Writes from 8 clients until killed; every acknowledged write must survive.
async fn kill_during_burst(endpoint: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let proc = spawn(port, endpoint, dir.path());
    let client = connect(port).await;
    let acked = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut c = client.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("/burst/{w}/{i}");
                match c.put(key.clone(), format!("v{i}"), None).await {
                    Ok(r) => {
                        let rev = r.header().map_or(0, |h| h.revision());
                        acked.lock().await.push((key, rev));
                    }
                    Err(_) => break,
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGKILL: no chance to flush anything.
    drop(proc);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() > 50,
        "the burst wrote too little: {}",
        acked.len()
    );
    let max_rev = acked.iter().map(|(_, r)| *r).max().unwrap_or(0);

    let _proc = spawn(port, endpoint, dir.path());
    let mut c = connect(port).await;
    let resp = c
        .get(
            "/burst/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("get after restart");
    let present: std::collections::HashSet<String> = resp
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    let missing: Vec<_> = acked.iter().filter(|(k, _)| !present.contains(k)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    let next = c.put("/after", "x", None).await.expect("put after restart");
    let rev = next.header().map_or(0, |h| h.revision());
    assert!(rev > max_rev, "revision went backwards: {rev} <= {max_rev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write_sqlite() {
    kill_during_burst("").await;
}

/// Drops a test database when the test ends (best effort).
struct DropDb(&'static str, String);

impl Drop for DropDb {
    fn drop(&mut self) {
        let _ = match self.0 {
            "postgres" => Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-qc"])
                .arg(format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.1
                ))
                .output(),
            _ => Command::new("mariadb")
                .args(["-uroot", "-h127.0.0.1", "-e"])
                .arg(format!("DROP DATABASE IF EXISTS `{}`", self.1))
                .output(),
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write_postgres() {
    let db = DropDb("postgres", unique("k3rs_kill"));
    kill_during_burst(&format!("postgres://postgres@127.0.0.1:5432/{}", db.1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write_mariadb() {
    let db = DropDb("mysql", unique("k3rs_kill"));
    kill_during_burst(&format!("mysql://root@tcp(127.0.0.1:3306)/{}", db.1)).await;
}

/// A TCP proxy to the database that the test can cut and restore.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // refused: dropped at once
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().await.push(task);
            }
        });
        Proxy { port, up, conns }
    }

    async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for t in self.conns.lock().await.drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_returns_unavailable_and_recovers() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let db = DropDb("postgres", unique("k3rs_outage"));
    let endpoint = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.1);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = k3rs_datastore::Config::new(endpoint, dir.path());
    cfg.listen_address = "127.0.0.1:0".into();
    let server = k3rs_datastore::start(cfg).await.expect("start");
    let addr = server.grpc_addr().expect("tcp");
    let mut c = Client::connect([addr.to_string()], None)
        .await
        .expect("connect");
    c.put("/o/before", "1", None)
        .await
        .expect("put before outage");

    proxy.cut().await;
    let err = c
        .put("/o/during", "2", None)
        .await
        .expect_err("a write cannot succeed without the database");
    match err {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}")
        }
        other => panic!("unexpected error {other:?}"),
    }
    // Reads are served from memory and keep working.
    let r = c.get("/o/before", None).await.expect("read during outage");
    assert_eq!(r.kvs().len(), 1);

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.put("/o/after", "3", None).await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let r = c
        .get("/o/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("get");
    let keys: Vec<_> = r.kvs().iter().map(|kv| kv.key().to_vec()).collect();
    assert_eq!(keys, vec![b"/o/after".to_vec(), b"/o/before".to_vec()]);
    server.shutdown().await;
    drop(db);
}
