//! kube-rs against k3rs-apiserver: a watcher feeding a reflector, and a
//! server-side apply patch, on the shim and on a real etcd.

use std::time::Duration;

use futures::StreamExt;
use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::{Backend, TestStore};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};

async fn run(backend: Backend) {
    let store = TestStore::start(backend).await.expect("start datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("start apiserver");
    let kubeconfig = kube::config::Kubeconfig::read_from(&cp.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = watcher(
        cms.clone(),
        watcher::Config::default().labels("app=kube-rs"),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                panic!("watcher error: {e}");
            }
        }
    });
    reader.wait_until_ready().await.expect("reflector ready");

    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("typed".into());
    cm.metadata.labels = Some([("app".to_string(), "kube-rs".to_string())].into());
    cm.data = Some([("a".to_string(), "1".to_string())].into());
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");

    // Server-side apply with a field manager.
    let applied = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "applied", "labels": {"app": "kube-rs"}},
        "data": {"owner": "kube-rs"},
    });
    let pp = PatchParams::apply("k3rs-test");
    let got = cms
        .patch("applied", &pp, &Patch::Apply(&applied))
        .await
        .expect("apply");
    let mf = got.metadata.managed_fields.unwrap_or_default();
    assert!(
        mf.iter().any(|m| m.manager.as_deref() == Some("k3rs-test")
            && m.operation.as_deref() == Some("Apply")),
        "{mf:?}"
    );
    // A second manager changing the same field conflicts.
    let other = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "applied"}, "data": {"owner": "someone-else"},
    });
    let err = cms
        .patch(
            "applied",
            &PatchParams::apply("intruder"),
            &Patch::Apply(&other),
        )
        .await
        .expect_err("conflict");
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 409, "{s:?}"),
        e => panic!("unexpected error {e}"),
    }

    // The reflector sees both objects.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut names: Vec<String> = reader
            .state()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        names.sort();
        if names == ["applied", "typed"] {
            let applied = reader
                .state()
                .into_iter()
                .find(|c| c.metadata.name.as_deref() == Some("applied"))
                .expect("applied");
            assert_eq!(
                applied
                    .data
                    .as_ref()
                    .and_then(|d| d.get("owner"))
                    .map(String::as_str),
                Some("kube-rs")
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector saw {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cms.delete("typed", &Default::default())
        .await
        .expect("delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reader
        .state()
        .iter()
        .any(|c| c.metadata.name.as_deref() == Some("typed"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector kept a deleted object"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    cp.shutdown();
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_on_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_on_etcd() {
    run(Backend::Etcd).await;
}
