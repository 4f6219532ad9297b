//! The official Python `kubernetes` client (tests/python/client_test.py)
//! against k3rs-apiserver on the shim and on a real etcd.

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::{Backend, TestStore};

/// The virtualenv scripts/setup.sh creates with the client installed.
fn python() -> std::path::PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_default();
    std::path::PathBuf::from(home).join(".cache/k3rs/venv/bin/python")
}

async fn run(backend: Backend) {
    let store = TestStore::start(backend).await.expect("start datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("start apiserver");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/client_test.py");
    let out = tokio::process::Command::new(python())
        .arg(script)
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()
        .await
        .expect("run python (scripts/setup.sh creates ~/.cache/k3rs/venv)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("python client: ok"), "{stdout}");
    cp.shutdown();
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_on_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_on_etcd() {
    run(Backend::Etcd).await;
}
