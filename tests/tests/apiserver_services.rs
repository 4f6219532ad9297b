//! Service ClusterIP and NodePort allocation through the real kubectl: every
//! Service gets a distinct address from 10.43.0.0/16 and distinct node ports
//! from 30000-32767, requested ones are honoured or refused with the upstream
//! message, and nothing is handed out twice across an API server restart.

use std::collections::BTreeSet;

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::{Backend, TestStore};
use serde_json::Value;

const K: &str = "1.33";

fn service(name: &str, ty: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: {ty}\n  selector: {{app: {name}}}\n{extra}  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n  - {{name: dns, port: 53, protocol: UDP}}\n"
    )
}

async fn get(cp: &ControlPlane, name: &str) -> Value {
    let out = cp.kubectl(K, &["get", "svc", name, "-o", "json"]).await;
    serde_json::from_str(&out).expect("service JSON")
}

fn ip_of(svc: &Value) -> String {
    svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string()
}

fn node_ports(svc: &Value) -> Vec<i64> {
    svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
        .collect()
}

async fn create_batch(cp: &ControlPlane, prefix: &str, n: usize) {
    let docs: Vec<String> = (0..n)
        .map(|i| {
            let ty = if i % 2 == 0 { "NodePort" } else { "ClusterIP" };
            service(&format!("{prefix}-{i}"), ty, "")
        })
        .collect();
    cp.kubectl_in(K, &["apply", "-f", "-"], Some(&docs.join("---\n")))
        .await;
}

/// All addresses and node ports in use; panics on a duplicate.
async fn all_allocations(cp: &ControlPlane) -> (BTreeSet<String>, BTreeSet<i64>) {
    let out = cp.kubectl(K, &["get", "svc", "-A", "-o", "json"]).await;
    let list: Value = serde_json::from_str(&out).expect("list JSON");
    let (mut ips, mut ports) = (BTreeSet::new(), BTreeSet::new());
    for s in list["items"].as_array().expect("items") {
        let ip = ip_of(s);
        assert!(ips.insert(ip.clone()), "address {ip} handed out twice");
        for p in node_ports(s) {
            assert!(ports.insert(p), "node port {p} handed out twice");
        }
    }
    (ips, ports)
}

async fn allocation(backend: Backend) {
    let store = TestStore::start(backend).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");

    // The kubernetes Service holds the first address.
    assert_eq!(ip_of(&get(&cp, "kubernetes").await), "10.43.0.1");

    // A ClusterIP Service gets an address from the range, a NodePort one
    // also gets a node port per service port.
    cp.kubectl_in(
        K,
        &["apply", "-f", "-"],
        Some(&service("web", "ClusterIP", "")),
    )
    .await;
    let web = get(&cp, "web").await;
    let ip = ip_of(&web);
    assert!(ip.starts_with("10.43.") && ip != "10.43.0.1", "{ip}");
    assert_eq!(web["spec"]["clusterIPs"], serde_json::json!([ip.clone()]));
    assert!(node_ports(&web).is_empty());

    cp.kubectl_in(
        K,
        &["apply", "-f", "-"],
        Some(&service("np", "NodePort", "")),
    )
    .await;
    let np = get(&cp, "np").await;
    let ports = node_ports(&np);
    assert_eq!(ports.len(), 2, "{np}");
    assert!(
        ports.iter().all(|p| (30000..=32767).contains(p)),
        "{ports:?}"
    );
    assert_ne!(ports[0], ports[1]);

    // Re-applying keeps what was allocated (the manifest names neither).
    cp.kubectl_in(
        K,
        &["apply", "-f", "-"],
        Some(&service("np", "NodePort", "")),
    )
    .await;
    let again = get(&cp, "np").await;
    assert_eq!(ip_of(&again), ip_of(&np));
    assert_eq!(node_ports(&again), ports);

    // Asking for a taken address or port, or one outside the range, fails
    // the way upstream words it.
    let taken_ip = format!("  clusterIP: {ip}\n");
    let err = cp
        .kubectl_fails(
            K,
            &["create", "-f", "-"],
            Some(&service("dup-ip", "ClusterIP", &taken_ip)),
        )
        .await;
    assert!(err.contains("provided IP is already allocated"), "{err}");
    let err = cp
        .kubectl_fails(
            K,
            &["create", "-f", "-"],
            Some(&service("far-ip", "ClusterIP", "  clusterIP: 10.99.0.5\n")),
        )
        .await;
    assert!(err.contains("is not in the valid range"), "{err}");
    let dup_port = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: dup-port\nspec:\n  type: NodePort\n  ports:\n  - {{port: 80, nodePort: {}}}\n",
        ports[0]
    );
    let err = cp
        .kubectl_fails(K, &["create", "-f", "-"], Some(&dup_port))
        .await;
    assert!(err.contains("provided port is already allocated"), "{err}");
    assert!(err.contains("spec.ports[0].nodePort"), "{err}");
    let low_port = dup_port.replace(&ports[0].to_string(), "8080");
    let err = cp
        .kubectl_fails(K, &["create", "-f", "-"], Some(&low_port))
        .await;
    assert!(err.contains("30000-32767"), "{err}");

    // A refused create leaves nothing behind: the free address it would have
    // used is still free, and a requested free address is honoured.
    cp.kubectl_in(
        K,
        &["apply", "-f", "-"],
        Some(&service(
            "pinned",
            "ClusterIP",
            "  clusterIP: 10.43.200.7\n",
        )),
    )
    .await;
    assert_eq!(ip_of(&get(&cp, "pinned").await), "10.43.200.7");

    // Deleting a Service frees its address and ports for someone else.
    cp.kubectl(K, &["delete", "svc", "web", "np"]).await;
    cp.kubectl_in(
        K,
        &["create", "-f", "-"],
        Some(&service("web2", "ClusterIP", &taken_ip)),
    )
    .await;
    assert_eq!(ip_of(&get(&cp, "web2").await), ip);
    let reuse = dup_port.replace("dup-port", "reuse");
    cp.kubectl_in(K, &["create", "-f", "-"], Some(&reuse)).await;
    assert_eq!(node_ports(&get(&cp, "reuse").await), vec![ports[0]]);

    // Switching a NodePort Service to ClusterIP gives its node ports back.
    cp.kubectl(
        K,
        &[
            "patch",
            "svc",
            "reuse",
            "-p",
            r#"{"spec":{"type":"ClusterIP"}}"#,
        ],
    )
    .await;
    assert!(node_ports(&get(&cp, "reuse").await).is_empty());
    cp.kubectl_in(K, &["create", "-f", "-"], Some(&dup_port))
        .await;

    // Many Services, an API server restart, many more: nothing twice.
    create_batch(&cp, "a", 24).await;
    let (ips_before, ports_before) = all_allocations(&cp).await;
    cp.shutdown();
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver again");
    create_batch(&cp, "b", 24).await;
    let (ips, ports) = all_allocations(&cp).await;
    assert_eq!(ips.len(), ips_before.len() + 24);
    assert_eq!(ports.len(), ports_before.len() + 24);
    cp.shutdown();
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_distinct_addresses_and_ports_on_shim() {
    allocation(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_distinct_addresses_and_ports_on_etcd() {
    allocation(Backend::Etcd).await;
}

/// A key left by a request that crashed before storing its Service is freed
/// by the repair loop after it has been seen orphaned twice; keys of live
/// Services are never touched, and Services stored without keys get them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_frees_orphans_and_records_missing_keys() {
    use k3rs_apiserver::allocator::{self, ServiceRanges};
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    cp.kubectl_in(
        K,
        &["apply", "-f", "-"],
        Some(&service("live", "NodePort", "")),
    )
    .await;
    let live = get(&cp, "live").await;

    let api_store = k3rs_apiserver::store::Store::connect(&[store.endpoint().to_string()], None)
        .await
        .expect("store");
    let mut etcd = store.client().await.expect("client");
    etcd.put(
        "/registry/ipaddresses/10.43.9.9",
        r#"{"spec":{"parentRef":{"namespace":"default","name":"ghost"}}}"#,
        None,
    )
    .await
    .expect("plant orphan");
    // The live Service loses its address key (as if stored before allocation existed).
    let live_key = format!("/registry/ipaddresses/{}", ip_of(&live));
    etcd.delete(live_key.as_str(), None)
        .await
        .expect("drop key");

    let ranges = ServiceRanges::new("10.43.0.0/16", (30000, 32767)).expect("ranges");
    let mut suspects = Default::default();
    allocator::repair_pass(&api_store, &ranges, &mut suspects)
        .await
        .expect("repair 1");
    let probe = etcd.clone();
    let exists = |k: &'static str| {
        let mut c = probe.clone();
        async move { c.get(k, None).await.expect("get").count() == 1 }
    };
    assert!(
        exists("/registry/ipaddresses/10.43.9.9").await,
        "freed after one pass"
    );
    let r = etcd.get(live_key.as_str(), None).await.expect("get");
    assert_eq!(r.count(), 1, "live Service's key recorded again");
    allocator::repair_pass(&api_store, &ranges, &mut suspects)
        .await
        .expect("repair 2");
    assert!(
        !exists("/registry/ipaddresses/10.43.9.9").await,
        "orphan freed"
    );
    for p in node_ports(&live) {
        let k = format!("/registry/servicenodeports/{p}");
        assert_eq!(
            etcd.get(k.as_str(), None).await.expect("get").count(),
            1,
            "{k}"
        );
    }
    assert!(
        exists("/registry/ipaddresses/10.43.0.1").await,
        "kubernetes Service keeps its key"
    );
    cp.shutdown();
    store.stop().await;
}
