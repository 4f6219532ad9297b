//! Per-namespace defaults: the `default` ServiceAccount, and the
//! `kube-root-ca.crt` ConfigMap carrying the cluster CA (`ca.crt`) that pods
//! use to trust the apiserver.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

use crate::Error;
use crate::framework::{Action, Change, Ctx, WorkQueue, run_workers};

pub const DEFAULT_SA: &str = "default";
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

fn active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

pub fn start_serviceaccount(ctx: &Ctx) -> Result<(), Error> {
    let queue = WorkQueue::new();
    let namespaces = ctx.informers.get::<Namespace>();
    let sas = ctx.informers.get::<ServiceAccount>();
    {
        let q = queue.clone();
        namespaces.on_change(move |c| {
            if let Change::Applied { new, .. } = c {
                q.add(new.metadata.name.clone().unwrap_or_default());
            }
        });
    }
    {
        let q = queue.clone();
        sas.on_change(move |c| {
            if let Change::Deleted(sa) = c
                && sa.metadata.name.as_deref() == Some(DEFAULT_SA)
            {
                q.add(sa.metadata.namespace.clone().unwrap_or_default());
            }
        });
    }
    let client = ctx.client.clone();
    run_workers(ctx, "serviceaccount", queue, 1, move |ns_name| {
        let client = client.clone();
        let namespaces = namespaces.clone();
        let sas = sas.clone();
        async move {
            let Some(ns) = namespaces.get(None, &ns_name) else {
                return Ok(Action::Done);
            };
            if !active(&ns) || sas.get(Some(&ns_name), DEFAULT_SA).is_some() {
                return Ok(Action::Done);
            }
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(DEFAULT_SA.into()),
                    namespace: Some(ns_name.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match Api::<ServiceAccount>::namespaced(client, &ns_name)
                .create(&PostParams::default(), &sa)
                .await
            {
                Ok(_) => tracing::info!(namespace = %ns_name, "created default service account"),
                // Already there (our cache lags), or the namespace is going away.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 || s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Action::Done)
        }
    });
    Ok(())
}

pub fn start_root_ca_publisher(ctx: &Ctx) -> Result<(), Error> {
    let Some(ca) = ctx.root_ca.clone() else {
        tracing::warn!("kubeconfig has no certificate authority; not publishing kube-root-ca.crt");
        return Ok(());
    };
    let ca = Arc::new(ca);
    let queue = WorkQueue::new();
    let namespaces = ctx.informers.get::<Namespace>();
    // Only this controller reads ConfigMaps, and only this one name.
    let cms = ctx.informers.get_with::<ConfigMap>(
        watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_CONFIGMAP}")),
    );
    {
        let q = queue.clone();
        namespaces.on_change(move |c| {
            if let Change::Applied { new, .. } = c {
                q.add(new.metadata.name.clone().unwrap_or_default());
            }
        });
    }
    {
        let q = queue.clone();
        cms.on_change(move |c| {
            let cm = match c {
                Change::Applied { new, .. } => *new,
                Change::Deleted(cm) => *cm,
            };
            if cm.metadata.name.as_deref() == Some(ROOT_CA_CONFIGMAP) {
                q.add(cm.metadata.namespace.clone().unwrap_or_default());
            }
        });
    }
    let client = ctx.client.clone();
    run_workers(ctx, "root-ca-cert-publisher", queue, 1, move |ns_name| {
        let client = client.clone();
        let namespaces = namespaces.clone();
        let cms = cms.clone();
        let ca = ca.clone();
        async move {
            let Some(ns) = namespaces.get(None, &ns_name) else {
                return Ok(Action::Done);
            };
            if !active(&ns) {
                return Ok(Action::Done);
            }
            let api = Api::<ConfigMap>::namespaced(client, &ns_name);
            let res = match cms.get(Some(&ns_name), ROOT_CA_CONFIGMAP) {
                Some(cm) => {
                    let current = cm.data.as_ref().and_then(|d| d.get("ca.crt"));
                    if current.map(String::as_str) == Some(ca.as_str()) {
                        return Ok(Action::Done);
                    }
                    let patch = serde_json::json!({"data": {"ca.crt": ca.as_str()}});
                    api.patch(
                        ROOT_CA_CONFIGMAP,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map(|_| ())
                }
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(ROOT_CA_CONFIGMAP.into()),
                            namespace: Some(ns_name.clone()),
                            annotations: Some(
                                [(
                                    "kubernetes.io/description".to_string(),
                                    "The cluster CA bundle, for verifying the apiserver from inside pods.".to_string(),
                                )]
                                .into(),
                            ),
                            ..Default::default()
                        },
                        data: Some([("ca.crt".to_string(), ca.to_string())].into()),
                        ..Default::default()
                    };
                    api.create(&PostParams::default(), &cm).await.map(|_| ())
                }
            };
            match res {
                Ok(()) => Ok(Action::Done),
                Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => Ok(Action::Done),
                Err(e) => Err(e.into()),
            }
        }
    });
    Ok(())
}
