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
    events_are_one_resource_in_two_groups(&cp, client.clone()).await;
    terminating_namespace_waits_for_finalize(client.clone()).await;
    cp.shutdown();
    store.stop().await;
}

/// A terminating namespace stays until its `kubernetes` finalizer is removed
/// through `finalize`: the namespace controller's progress conditions, written
/// to `status` in between, must not complete the delete early.
async fn terminating_namespace_waits_for_finalize(client: kube::Client) {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::DeleteParams;

    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "held"}
    }))
    .expect("namespace");
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("create ns");
    nss.delete("held", &DeleteParams::default())
        .await
        .expect("delete ns");
    let cond = serde_json::json!({"status": {"conditions": [{
        "type": "NamespaceContentRemaining", "status": "True",
        "reason": "SomeResourcesRemain", "message": "Some resources are remaining: pods. has 2 resource instances"
    }]}});
    nss.patch_status("held", &PatchParams::default(), &Patch::Merge(&cond))
        .await
        .expect("patch status");
    let still = nss.get("held").await.expect("namespace still there");
    assert_eq!(
        still.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Terminating")
    );
    assert_eq!(
        still.spec.as_ref().and_then(|s| s.finalizers.clone()),
        Some(vec!["kubernetes".to_string()])
    );
    let mut done = still.clone();
    if let Some(spec) = done.spec.as_mut() {
        spec.finalizers = Some(vec![]);
    }
    nss.replace_subresource("finalize", "held", &PostParams::default(), &done)
        .await
        .expect("finalize");
    match nss.get("held").await {
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        other => panic!("namespace should be gone after finalize: {other:?}"),
    }
}

/// An event kube-rs's `Recorder` writes through `events.k8s.io/v1` is the
/// core event `kubectl describe` shows, and a core event reads back through
/// `events.k8s.io/v1` with that group's field names.
async fn events_are_one_resource_in_two_groups(cp: &ControlPlane, client: kube::Client) {
    use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
    use k8s_openapi::api::events::v1::Event as EventsV1;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = cms.get("applied").await.expect("get applied");
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: cm.metadata.name.clone(),
        namespace: Some("default".into()),
        uid: cm.metadata.uid.clone(),
        ..Default::default()
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "k3rs-test-controller".into(),
            instance: Some("test-1".into()),
        },
    );
    recorder
        .publish(
            &Event {
                type_: EventType::Warning,
                reason: "Drifted".into(),
                note: Some("owner changed behind our back".into()),
                action: "Reconciling".into(),
                secondary: None,
            },
            &reference,
        )
        .await
        .expect("publish event");

    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let listed = core
        .list(&kube::api::ListParams::default().fields("involvedObject.name=applied"))
        .await
        .expect("list core events");
    let ev = listed
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("Drifted"))
        .expect("the recorded event as a core event");
    assert_eq!(ev.message.as_deref(), Some("owner changed behind our back"));
    assert_eq!(ev.involved_object.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(
        ev.reporting_component.as_deref(),
        Some("k3rs-test-controller")
    );
    let described = cp
        .kubectl(
            "1.33",
            &["describe", "configmap", "applied", "-n", "default"],
        )
        .await;
    assert!(
        described.contains("Drifted") && described.contains("owner changed behind our back"),
        "{described}"
    );

    // And back: a core event through events.k8s.io/v1, selected by its field names there.
    let mut core_ev = CoreEvent::default();
    core_ev.metadata.name = Some("applied.core".into());
    core_ev.involved_object = reference.clone();
    core_ev.reason = Some("Noted".into());
    core_ev.message = Some("a plain core event".into());
    core_ev.type_ = Some("Normal".into());
    core_ev.source = Some(k8s_openapi::api::core::v1::EventSource {
        component: Some("tester".into()),
        host: None,
    });
    core.create(&PostParams::default(), &core_ev)
        .await
        .expect("create core event");
    let v1: Api<EventsV1> = Api::namespaced(client, "default");
    let got = v1.get("applied.core").await.expect("get as events.k8s.io");
    assert_eq!(got.note.as_deref(), Some("a plain core event"));
    assert_eq!(
        got.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("applied")
    );
    assert_eq!(
        got.deprecated_source
            .as_ref()
            .and_then(|s| s.component.as_deref()),
        Some("tester")
    );
    let selected = v1
        .list(&kube::api::ListParams::default().fields("regarding.name=applied,reason=Noted"))
        .await
        .expect("list events.k8s.io by regarding.name");
    assert_eq!(selected.items.len(), 1, "{:?}", selected.items);
    // A merge patch through events.k8s.io lands on the stored core fields.
    v1.patch(
        "applied.core",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"note": "patched note"})),
    )
    .await
    .expect("patch events.k8s.io");
    let again = core.get("applied.core").await.expect("get core");
    assert_eq!(again.message.as_deref(), Some("patched note"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_on_sqlite() {
    run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_on_etcd() {
    run(Backend::Etcd).await;
}
