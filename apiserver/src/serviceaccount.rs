//! Service accounts: the tokens that let pods talk to the API server.
//!
//! - **TokenRequest** (`POST .../serviceaccounts/<name>/token`, what
//!   `kubectl create token` and the node agent call) issues a bound, expiring
//!   JWT, optionally bound to a Pod, Secret or Node.
//! - **Authentication** accepts those tokens and legacy Secret-based ones
//!   while the objects they are bound to still exist with the same uid.
//! - **Admission** gives every pod its projected `kube-api-access-*` volume
//!   (token, cluster CA, namespace) unless automounting is switched off.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::authn::UserInfo;
use crate::object::meta_str;
use crate::resources::ResourceDef;
use crate::sa_token::{KeyError, TokenKeys};
use crate::status::{ApiError, ApiResult};
use crate::{Api, Config};

/// Where the token, CA and namespace appear in every container.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The issuer of Secret-based tokens (the tokens controller signs them).
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// What the kubelet asks for projected volumes: just over an hour.
const PROJECTED_EXPIRY: i64 = 3607;

/// Issues and checks service-account tokens.
pub struct Issuer {
    keys: TokenKeys,
    pub issuer: String,
    /// Audiences a token must name to be accepted here (`--api-audiences`,
    /// which defaults to the issuer).
    pub audiences: Vec<String>,
}

impl Issuer {
    /// Loads the configured keys, or generates `<cert-dir>/service.key`.
    pub fn from_config(config: &Config) -> Result<Self, KeyError> {
        let generated;
        let signing: &Path = match (&config.sa_signing_key_file, &config.sa_key_file) {
            (Some(s), _) => s,
            (None, Some(k)) => k,
            (None, None) => {
                generated = config
                    .cert_dir
                    .join(k3rs_common::pki::layout::SERVICE_ACCOUNT_KEY);
                k3rs_common::pki::load_or_generate_signing_key(&generated).map_err(|e| {
                    KeyError::Io {
                        path: generated.display().to_string(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })?;
                &generated
            }
        };
        let verifying: Vec<&Path> = config.sa_key_file.iter().map(|p| p.as_path()).collect();
        Ok(Self {
            keys: TokenKeys::load(signing, &verifying)?,
            issuer: config.sa_issuer.clone(),
            audiences: vec![config.sa_issuer.clone()],
        })
    }

    pub fn sign(&self, claims: &Value) -> Option<String> {
        self.keys.sign(claims)
    }

    /// `/.well-known/openid-configuration`, for relying parties that verify
    /// service-account tokens themselves.
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        })
    }

    pub fn jwks(&self) -> Value {
        self.keys.jwks()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An object by its etcd key: the watch cache first, the store on a miss
/// (a token used right after its Pod was created).
async fn lookup(api: &Api, key: &str) -> Option<Value> {
    if let Some(e) = api.cache.get(key) {
        return e.value();
    }
    let kv = api.store.get(key).await.ok()??;
    serde_json::from_slice(&kv.value).ok()
}

fn uid(v: &Value) -> &str {
    meta_str(v, "uid").unwrap_or("")
}

/// The user a service-account token stands for, if it is valid now.
pub async fn authenticate(api: &Api, token: &str) -> Option<UserInfo> {
    let claims = api.sa.keys.verify(token)?;
    if claims["iss"] == LEGACY_ISSUER {
        return authenticate_legacy(api, token, &claims).await;
    }
    if claims["iss"] != api.sa.issuer.as_str() {
        return None;
    }
    let t = now();
    let exp = claims["exp"].as_i64()?;
    // A minute of leeway for clocks that disagree about "not before".
    if exp <= t || claims["nbf"].as_i64().is_some_and(|nbf| nbf > t + 60) {
        return None;
    }
    let auds: Vec<&str> = match &claims["aud"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    if !auds.iter().any(|a| api.sa.audiences.iter().any(|b| b == a)) {
        return None;
    }
    let k = &claims["kubernetes.io"];
    let ns = k["namespace"].as_str()?;
    let name = k["serviceaccount"]["name"].as_str()?;
    let sa = lookup(api, &format!("/registry/serviceaccounts/{ns}/{name}")).await?;
    if uid(&sa) != k["serviceaccount"]["uid"].as_str()? {
        return None;
    }
    let mut extra = BTreeMap::new();
    // A bound token dies with the object it is bound to.
    for (claim, key, extra_name, extra_uid) in [
        (
            "pod",
            format!(
                "/registry/pods/{ns}/{}",
                k["pod"]["name"].as_str().unwrap_or("")
            ),
            Some("authentication.kubernetes.io/pod-name"),
            Some("authentication.kubernetes.io/pod-uid"),
        ),
        (
            "secret",
            format!(
                "/registry/secrets/{ns}/{}",
                k["secret"]["name"].as_str().unwrap_or("")
            ),
            None,
            None,
        ),
        (
            "node",
            format!(
                "/registry/minions/{}",
                k["node"]["name"].as_str().unwrap_or("")
            ),
            Some("authentication.kubernetes.io/node-name"),
            Some("authentication.kubernetes.io/node-uid"),
        ),
    ] {
        let Some(bound) = k.get(claim) else { continue };
        let obj = lookup(api, &key).await;
        // Node info rides along on pod-bound tokens; only a token bound to the
        // node itself must have it alive.
        let must_exist = claim != "node" || k.get("pod").is_none();
        match obj {
            Some(o) if uid(&o) == bound["uid"].as_str().unwrap_or("") => {}
            _ if must_exist => return None,
            _ => {}
        }
        if let (Some(n), Some(u)) = (extra_name, extra_uid) {
            extra.insert(n.to_string(), vec![bound["name"].as_str()?.to_string()]);
            extra.insert(u.to_string(), vec![bound["uid"].as_str()?.to_string()]);
        }
    }
    if let Some(jti) = claims["jti"].as_str() {
        extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            vec![format!("JTI={jti}")],
        );
    }
    let mut user = sa_user(ns, name, uid(&sa));
    user.extra = extra;
    Some(user)
}

/// Secret-based tokens: valid while the Secret holds exactly this token and
/// the service account it names still exists with the same uid.
async fn authenticate_legacy(api: &Api, token: &str, claims: &Value) -> Option<UserInfo> {
    let c = |k: &str| claims[format!("kubernetes.io/serviceaccount/{k}")].as_str();
    let (ns, secret, name, sa_uid) = (
        c("namespace")?,
        c("secret.name")?,
        c("service-account.name")?,
        c("service-account.uid")?,
    );
    let s = lookup(api, &format!("/registry/secrets/{ns}/{secret}")).await?;
    use base64::Engine;
    let stored = s["data"]["token"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())?;
    if stored != token.as_bytes()
        || meta_annotation(&s, "kubernetes.io/service-account.name") != Some(name)
    {
        return None;
    }
    let sa = lookup(api, &format!("/registry/serviceaccounts/{ns}/{name}")).await?;
    (uid(&sa) == sa_uid).then(|| sa_user(ns, name, sa_uid))
}

fn meta_annotation<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v["metadata"]["annotations"][k].as_str()
}

fn sa_user(ns: &str, name: &str, uid: &str) -> UserInfo {
    UserInfo::new(
        format!("system:serviceaccount:{ns}:{name}"),
        uid,
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ],
    )
}

/// Answers a TokenRequest for service account `name` in `ns`.
pub async fn token_request(
    api: &Api,
    res: &ResourceDef,
    ns: &str,
    name: &str,
    mut req: Value,
) -> ApiResult<Value> {
    let sa = lookup(api, &format!("/registry/serviceaccounts/{ns}/{name}"))
        .await
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let spec = req["spec"].as_object().cloned().unwrap_or_default();
    let expiration = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    let mut errs = k3rs_apimachinery::FieldErrors::new();
    if expiration < 600 {
        errs.push(k3rs_apimachinery::FieldError::invalid(
            "spec.expirationSeconds",
            json!(expiration),
            "may not specify a duration less than 10 minutes",
        ));
    } else if expiration > 1 << 32 {
        errs.push(k3rs_apimachinery::FieldError::invalid(
            "spec.expirationSeconds",
            json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let audiences: Vec<Value> = match spec.get("audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a.clone(),
        _ => api.sa.audiences.iter().map(|a| json!(a)).collect(),
    };
    let t = now();
    let mut k8s = json!({
        "namespace": ns,
        "serviceaccount": {"name": name, "uid": uid(&sa)},
    });
    let bound = spec.get("boundObjectRef").filter(|b| !b.is_null());
    if let Some(b) = bound {
        let kind = b["kind"].as_str().unwrap_or("");
        let bname = b["name"].as_str().unwrap_or("");
        let key = match kind {
            "Pod" => format!("/registry/pods/{ns}/{bname}"),
            "Secret" => format!("/registry/secrets/{ns}/{bname}"),
            "Node" => format!("/registry/minions/{bname}"),
            other => {
                errs.push(k3rs_apimachinery::FieldError::not_supported(
                    "spec.boundObjectRef.kind",
                    json!(other),
                    &["Pod", "Node", "Secret"],
                ));
                String::new()
            }
        };
        if !key.is_empty() {
            let Some(obj) = lookup(api, &key).await else {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("{}s \"{bname}\" not found", kind.to_lowercase()),
                ));
            };
            if let Some(want) = b["uid"].as_str().filter(|u| !u.is_empty())
                && want != uid(&obj)
            {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            let r = json!({"name": bname, "uid": uid(&obj)});
            k8s[kind.to_lowercase()] = r;
            if kind == "Pod"
                && let Some(node) = obj["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
                && let Some(n) = lookup(api, &format!("/registry/minions/{node}")).await
            {
                k8s["node"] = json!({"name": node, "uid": uid(&n)});
            }
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(res, name, &errs));
    }
    let claims = json!({
        "aud": audiences,
        "exp": t + expiration,
        "iat": t,
        "iss": api.sa.issuer,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k8s,
        "nbf": t,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
    });
    let token = api
        .sa
        .sign(&claims)
        .ok_or_else(|| ApiError::internal("signing the token failed"))?;
    let expires = chrono::DateTime::from_timestamp(t + expiration, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["metadata"] = json!({"name": name, "namespace": ns,
        "creationTimestamp": crate::object::now_rfc3339()});
    req["spec"] = json!({"audiences": audiences, "expirationSeconds": expiration,
        "boundObjectRef": bound.cloned().unwrap_or(Value::Null)});
    if bound.is_none()
        && let Some(s) = req["spec"].as_object_mut()
    {
        s.remove("boundObjectRef");
    }
    req["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(req)
}

/// ServiceAccount admission for a new pod: the service account must exist
/// (the `default` one is created by the controller manager, so a pod may
/// race it), its image pull secrets apply when the pod names none, and the
/// projected API-access volume is mounted into every container unless
/// automounting is off.
pub async fn admit_pod(api: &Api, ns: &str, pod: &mut Value) -> ApiResult<()> {
    // Mirror pods only show static pods, which the node agent runs from
    // files without any service account (upstream skips them too).
    if pod["metadata"]["annotations"]
        .get("kubernetes.io/config.mirror")
        .is_some()
    {
        return Ok(());
    }
    let name = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let sa = lookup(api, &format!("/registry/serviceaccounts/{ns}/{name}")).await;
    if sa.is_none() && name != "default" {
        return Err(ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found",
            meta_str(pod, "name")
                .or(meta_str(pod, "generateName"))
                .unwrap_or("")
        )));
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if let Some(sa) = &sa
        && spec
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        && let Some(secrets) = sa["imagePullSecrets"].as_array().filter(|a| !a.is_empty())
    {
        spec.insert("imagePullSecrets".into(), json!(secrets));
    }
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.as_ref()
                .and_then(|s| s["automountServiceAccountToken"].as_bool())
        })
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let has_volume = spec
        .get("volumes")
        .and_then(Value::as_array)
        .is_some_and(|vs| {
            vs.iter().any(|v| {
                v["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("kube-api-access-"))
            })
        });
    if has_volume {
        return Ok(());
    }
    let volume = format!("kube-api-access-{}", crate::object::random_suffix());
    let mut mounted = false;
    for key in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            if mounts.iter().any(|m| m["mountPath"] == MOUNT_PATH) {
                continue;
            }
            mounts.push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH}));
            mounted = true;
        }
    }
    if !mounted {
        return Ok(());
    }
    let v = json!({
        "name": volume,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": PROJECTED_EXPIRY, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    match spec.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(vs) => vs.push(v),
        None => {
            spec.insert("volumes".into(), json!([v]));
        }
    }
    Ok(())
}
