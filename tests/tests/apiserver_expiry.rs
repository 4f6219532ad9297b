//! Expiry as clients see it: a watch from a revision older than the watch
//! cache holds gets a 410 `Expired` ERROR event, and a `continue` token whose
//! revision was compacted away answers 410, so kube-rs (and client-go)
//! relist. On the shim and on a real etcd.

use futures::StreamExt;
use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::{Backend, TestStore};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

async fn run(backend: Backend) {
    let store = TestStore::start(backend).await.expect("start datastore");
    // Revisions the apiserver never saw: its watch cache starts after them.
    let mut etcd = store.client().await.expect("etcd client");
    for i in 0..5 {
        etcd.put(format!("/unrelated/{i}"), "x", None)
            .await
            .expect("put");
    }
    let early_rev = 2;
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("start apiserver");
    let kubeconfig = kube::config::Kubeconfig::read_from(&cp.kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..5 {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(format!("page-{i}"));
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }

    // A watch from before the cache's window: one ERROR event with 410.
    let stream = cms
        .watch(&WatchParams::default(), &early_rev.to_string())
        .await
        .expect("watch request is accepted");
    futures::pin_mut!(stream);
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410, "{e:?}");
            assert_eq!(e.reason, "Expired", "{e:?}");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // A continue token from a compacted revision: 410 Expired.
    let page = cms
        .list(&ListParams::default().limit(2))
        .await
        .expect("first page");
    let token = page.metadata.continue_.clone().expect("a continue token");
    let rev = etcd
        .get("/unrelated/0", None)
        .await
        .expect("get")
        .header()
        .map(|h| h.revision())
        .expect("header");
    // Writes after the token, then compaction past its revision.
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("after-token".into());
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    etcd.compact(rev + 1, None).await.expect("compact");
    let err = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect_err("an expired continue token");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 410, "{s:?}");
            assert_eq!(s.reason, "Expired", "{s:?}");
        }
        e => panic!("unexpected error {e}"),
    }
    cp.shutdown();
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_on_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_on_etcd() {
    run(Backend::Etcd).await;
}
