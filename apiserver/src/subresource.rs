//! Subresources: status, scale, binding, eviction, namespace finalize, CSR
//! approval. The node-agent-backed ones (log, exec, attach, port-forward,
//! node, pod and service proxy) live in `proxy`.

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::http::{self as h, Resp};
use crate::object::meta_str;
use crate::rest::{self, Ctx, Part, decode_body, load_value, store_update};
use crate::status::{ApiError, ApiResult};

pub async fn dispatch(ctx: &Ctx<'_>, method: &Method, sub: &str, body: Bytes) -> ApiResult<Resp> {
    if !ctx.res.has_subresource(sub) {
        return Err(ApiError::not_found_path());
    }
    match (sub, method) {
        ("status" | "approval" | "ephemeralcontainers", &Method::GET) => {
            let (_, v) = load_value(ctx).await?;
            Ok(h::json(200, &v))
        }
        ("status" | "approval", &Method::PUT) => rest::update(ctx, &body, Part::Status).await,
        ("status" | "approval", &Method::PATCH) => rest::patch(ctx, &body, Part::Status).await,
        ("ephemeralcontainers" | "finalize", &Method::PUT) => {
            rest::update(ctx, &body, Part::Main).await
        }
        ("ephemeralcontainers", &Method::PATCH) => rest::patch(ctx, &body, Part::Main).await,
        ("scale", _) => scale(ctx, method, &body).await,
        ("binding", &Method::POST) => binding(ctx, &body).await,
        ("eviction", &Method::POST) => eviction(ctx, &body).await,
        // pods/log|exec|attach|portforward and nodes/proxy are relayed by
        // `proxy` before body parsing; what is left has no backend yet.
        ("log" | "exec" | "attach" | "portforward" | "proxy", _) => {
            Err(ApiError::unavailable(format!(
                "{}/{sub} is not supported by this server yet",
                ctx.res.plural
            )))
        }
        ("token", &Method::POST) => {
            let req = decode_body(ctx.headers, &body)?;
            let ns = ctx.info.namespace.as_deref().unwrap_or("default");
            let out =
                crate::serviceaccount::token_request(ctx.api, ctx.res, ns, ctx.name(), req).await?;
            Ok(h::json(201, &out))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({}/{sub})",
            ctx.res.plural
        ))),
    }
}

fn scale_of(v: &Value) -> Value {
    let selector = v["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta_str(v, "name"),
            "namespace": meta_str(v, "namespace"),
            "uid": meta_str(v, "uid"),
            "resourceVersion": meta_str(v, "resourceVersion"),
            "creationTimestamp": meta_str(v, "creationTimestamp"),
        },
        "spec": {"replicas": v["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": v["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

async fn scale(ctx: &Ctx<'_>, method: &Method, body: &Bytes) -> ApiResult<Resp> {
    for _ in 0..8 {
        let (kv, mut v) = load_value(ctx).await?;
        let current = scale_of(&v);
        let wanted = match *method {
            Method::GET => return Ok(h::json(200, &current)),
            Method::PUT => decode_body(ctx.headers, body)?,
            Method::PATCH => {
                let ct = ctx
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let doc: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                if ct.contains("json-patch") {
                    k3rs_apimachinery::patch::apply_json_patch(&current, &doc)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?
                } else {
                    k3rs_apimachinery::patch::apply_merge_patch(&current, &doc)
                }
            }
            _ => {
                return Err(ApiError::method_not_allowed(
                    "scale supports get, update and patch",
                ));
            }
        };
        if let Some(rv) = meta_str(&wanted, "resourceVersion")
            && rv != kv.mod_rev.to_string()
        {
            return Err(ApiError::stale(ctx.res, ctx.name_or_empty()));
        }
        let Some(replicas) = wanted["spec"]["replicas"].as_i64() else {
            return Err(ApiError::bad_request("spec.replicas is required"));
        };
        if replicas < 0 {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "Scale.autoscaling \"{}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0",
                    ctx.name_or_empty()
                ),
            ));
        }
        if v["spec"]["replicas"].as_i64() != Some(replicas) {
            v["spec"]["replicas"] = json!(replicas);
            let g = v["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            v["metadata"]["generation"] = json!(g);
        }
        if let Some(updated) = store_update(ctx, v, &kv).await? {
            return Ok(h::json(200, &scale_of(&updated)));
        }
    }
    Err(ApiError::stale(ctx.res, ctx.name_or_empty()))
}

async fn binding(ctx: &Ctx<'_>, body: &Bytes) -> ApiResult<Resp> {
    let b = decode_body(ctx.headers, body)?;
    let Some(node) = b["target"]["name"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::new(
            422,
            "Invalid",
            "Binding.target.name: Required value",
        ));
    };
    for _ in 0..8 {
        let (kv, mut pod) = load_value(ctx).await?;
        if pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                ctx.res,
                ctx.name_or_empty(),
                &format!(
                    "pod {} is already assigned to node \"{}\"",
                    ctx.name_or_empty(),
                    pod["spec"]["nodeName"].as_str().unwrap_or("")
                ),
            ));
        }
        if pod["metadata"].get("deletionTimestamp").is_some() {
            return Err(ApiError::conflict(
                ctx.res,
                ctx.name_or_empty(),
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": crate::object::now_rfc3339()});
        let conds = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conds: Vec<Value> = conds
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conds.push(cond);
        pod["status"]["conditions"] = json!(conds);
        if store_update(ctx, pod, &kv).await?.is_some() {
            return Ok(h::json(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ));
        }
    }
    Err(ApiError::stale(ctx.res, ctx.name_or_empty()))
}

async fn eviction(ctx: &Ctx<'_>, body: &Bytes) -> ApiResult<Resp> {
    let ev = decode_body(ctx.headers, body)?;
    let opts = ev
        .get("deleteOptions")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let opts = Bytes::from(serde_json::to_vec(&opts).unwrap_or_default());
    let sub = Ctx {
        api: ctx.api,
        user: ctx.user,
        res: ctx.res,
        info: crate::request::RequestInfo {
            subresource: None,
            ..ctx.info.clone()
        },
        query: ctx.query.clone(),
        headers: ctx.headers,
    };
    // Boxed: eviction re-enters the generic handler (a recursive async call).
    let r = Box::pin(rest::handle(sub, &Method::DELETE, opts)).await;
    if !r.status().is_success() {
        return Ok(r);
    }
    Ok(h::json(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

impl Ctx<'_> {
    pub fn name_or_empty(&self) -> &str {
        self.info.name.as_deref().unwrap_or("")
    }
}
