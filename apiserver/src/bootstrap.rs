//! First-start chores: certificates when none are given, and the system
//! objects every cluster has (namespaces, the `kubernetes` Service).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k3rs_common::pki::{Ca, CertSpec, layout};
use serde_json::json;

use crate::store::Cas;
use crate::{Api, Config, Error, allocator};

pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub client_ca: PathBuf,
    pub admin_kubeconfig: PathBuf,
    pub kubelet_client: crate::proxy::KubeletClientConfig,
    ca_pem: String,
    admin: k3rs_common::pki::CertKey,
}

impl Pki {
    /// Writes the admin kubeconfig (0600) for the port actually bound, which
    /// is only known after listening (tests bind port 0).
    pub fn write_admin_kubeconfig(&self, port: u16) -> Result<(), Error> {
        let server = format!("https://127.0.0.1:{port}");
        k3rs_common::pki::write_private(
            &self.admin_kubeconfig,
            &k3rs_common::pki::kubeconfig(&server, &self.ca_pem, &self.admin),
        )?;
        Ok(())
    }
}

/// Uses the given certificates, or generates a CA, a serving certificate and
/// an admin client certificate + kubeconfig in the cert dir.
pub fn ensure_pki(config: &Config) -> Result<Pki, Error> {
    let dir = &config.cert_dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::Config(format!("{}: {e}", dir.display())))?;
    let ca = Ca::load_or_generate(dir, layout::SERVER_CA, layout::SERVER_CA_CN)?;
    let ca_cert = dir.join(format!("{}.crt", layout::SERVER_CA));
    let (serving_cert, serving_key) = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let host = k3rs_common::pki::hostname();
            let mut ips = vec![config.advertise, std::net::IpAddr::from([127, 0, 0, 1])];
            if let Some(ip) = allocator::first_ip(&config.service_cidr) {
                ips.push(ip.into());
            }
            if !config.bind.ip().is_unspecified() {
                ips.push(config.bind.ip());
            }
            ips.dedup();
            let spec = CertSpec {
                common_name: "k3rs-apiserver".into(),
                dns_names: vec![
                    "localhost".into(),
                    host,
                    "kubernetes".into(),
                    "kubernetes.default".into(),
                    "kubernetes.default.svc".into(),
                    "kubernetes.default.svc.cluster.local".into(),
                ],
                ip_addresses: ips,
                server: true,
                validity_days: 365,
                ..Default::default()
            };
            ca.load_or_issue(dir, layout::APISERVER_SERVING, &spec, 90)?;
            (
                dir.join(format!("{}.crt", layout::APISERVER_SERVING)),
                dir.join(format!("{}.key", layout::APISERVER_SERVING)),
            )
        }
    };
    let client_ca = config
        .client_ca_file
        .clone()
        .unwrap_or_else(|| ca_cert.clone());
    let admin = ca.load_or_issue(
        dir,
        layout::ADMIN_CLIENT,
        &CertSpec {
            common_name: "system:admin".into(),
            organizations: vec!["system:masters".into()],
            client: true,
            validity_days: 365,
            ..Default::default()
        },
        90,
    )?;
    let admin_kubeconfig = dir.join(layout::ADMIN_KUBECONFIG);
    let mut kubelet_client = config.kubelet_client.clone();
    if kubelet_client.cert_file.is_none() {
        // What upstream calls apiserver-kubelet-client: kubelets authorize it
        // by its system:masters group.
        ca.load_or_issue(
            dir,
            crate::proxy::KUBELET_CLIENT,
            &CertSpec {
                common_name: "system:kube-apiserver".into(),
                organizations: vec!["system:masters".into()],
                client: true,
                validity_days: 365,
                ..Default::default()
            },
            90,
        )?;
        let (c, k) = crate::proxy::default_client_files(dir);
        kubelet_client.cert_file = Some(c);
        kubelet_client.key_file = Some(k);
    }
    Ok(Pki {
        ca_cert,
        serving_cert,
        serving_key,
        client_ca,
        admin_kubeconfig,
        kubelet_client,
        ca_pem: ca.cert_pem.clone(),
        admin,
    })
}

/// Creates the system namespaces and the `kubernetes` Service/Endpoints when
/// missing (retrying until the store answers).
pub async fn run_system_objects(api: Arc<Api>, config: Config, port: u16) {
    let mut backoff =
        k3rs_common::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match ensure_system_objects(&api, &config, port).await {
            Ok(()) => return,
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?d, "creating system objects failed");
                tokio::time::sleep(d).await;
            }
        }
    }
}

async fn create_if_missing(
    api: &Api,
    key: &str,
    obj: serde_json::Value,
) -> Result<(), crate::store::StoreError> {
    let bytes = serde_json::to_vec(&obj).unwrap_or_default();
    match api.store.create(key, bytes).await? {
        Cas::Done(_) | Cas::Failed(_) => Ok(()),
    }
}

async fn ensure_system_objects(
    api: &Api,
    config: &Config,
    port: u16,
) -> Result<(), crate::store::StoreError> {
    let now = crate::object::now_rfc3339();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({
            "kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": ns, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now,
                         "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        create_if_missing(api, &format!("/registry/namespaces/{ns}"), obj).await?;
    }
    let first = allocator::first_ip(&config.service_cidr);
    if let Some(addr) = first {
        let owner = allocator::Owner {
            namespace: "default".into(),
            name: "kubernetes".into(),
        };
        // Reserved before the Service exists so no other Service can take it.
        let _ = api
            .store
            .create(&allocator::ip_key(addr), allocator::ip_record(addr, &owner))
            .await?;
    }
    let ip = first.map(|i| i.to_string()).unwrap_or_default();
    let svc = json!({
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "kubernetes", "namespace": "default", "uid": uuid::Uuid::new_v4().to_string(),
                     "creationTimestamp": now, "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": port}],
                 "clusterIP": ip, "clusterIPs": [ip], "type": "ClusterIP", "sessionAffinity": "None",
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}},
    });
    create_if_missing(api, "/registry/services/specs/default/kubernetes", svc).await?;
    let ep = json!({
        "kind": "Endpoints", "apiVersion": "v1",
        "metadata": {"name": "kubernetes", "namespace": "default", "uid": uuid::Uuid::new_v4().to_string(),
                     "creationTimestamp": now, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": config.advertise.to_string()}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    create_if_missing(api, "/registry/services/endpoints/default/kubernetes", ep).await?;
    // What the kubelet API asks RBAC about for the API server's own client
    // certificate (upstream's bootstrap role and K3s's binding of it); its
    // system:masters group would be enough, the role is for other users.
    let role = json!({
        "kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": KUBELET_API_ADMIN, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now,
                     "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "rules": [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "proxy"]},
            {"apiGroups": [""], "resources": ["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"], "verbs": ["*"]},
        ],
    });
    create_if_missing(
        api,
        &format!("/registry/clusterroles/{KUBELET_API_ADMIN}"),
        role,
    )
    .await?;
    let binding = json!({
        "kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "kube-apiserver-kubelet-admin", "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now,
                     "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": KUBELET_API_ADMIN},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-apiserver"}],
    });
    create_if_missing(
        api,
        "/registry/clusterrolebindings/kube-apiserver-kubelet-admin",
        binding,
    )
    .await?;
    Ok(())
}

/// Upstream's bootstrap ClusterRole for full kubelet API access.
pub const KUBELET_API_ADMIN: &str = "system:kubelet-api-admin";
