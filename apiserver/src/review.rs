//! Create-only review resources answered on the spot: access reviews
//! (evaluated against RBAC, so webhook authorizers such as the kubelet API
//! get a real answer even while this server's own requests are not yet
//! enforced), SelfSubjectReview (`kubectl auth whoami`) and TokenReview.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::http::{self as h, Resp};
use crate::rest::{Ctx, decode_body};
use crate::status::{ApiError, ApiResult};

pub async fn create(ctx: &Ctx<'_>, body: &Bytes) -> ApiResult<Resp> {
    let mut obj = decode_body(ctx.headers, body)?;
    obj["apiVersion"] = json!(ctx.res.api_version());
    obj["kind"] = json!(ctx.res.kind);
    if obj.get("metadata").is_none() {
        obj["metadata"] = json!({});
    }
    let status = match ctx.res.kind {
        "SelfSubjectReview" => json!({"userInfo": ctx.user.to_json()}),
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let attrs = access_attributes(ctx, &obj)?;
            // Read-your-writes: a binding just created counts.
            let rev = ctx.api.store.current_rev().await?;
            ctx.api
                .cache
                .wait_for(rev, std::time::Duration::from_secs(2))
                .await;
            let (allowed, reason) = crate::rbac::authorize(&ctx.api.cache, &attrs);
            json!({"allowed": allowed, "reason": reason})
        }
        "SelfSubjectRulesReview" => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
        "TokenReview" => {
            let token = obj["spec"]["token"].as_str().unwrap_or("");
            match ctx.api.authenticate_token(token).await {
                Some(u) => json!({"authenticated": true, "user": u.to_json(),
                                  "audiences": ctx.api.sa.audiences}),
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            }
        }
        other => {
            return Err(
                ApiError::not_found_path().with_message(format!("no review handler for {other}"))
            );
        }
    };
    obj["status"] = status;
    Ok(h::json(201, &obj))
}

/// The attributes an access review asks about: the caller itself for the
/// Self kind, `spec.user`/`spec.groups` otherwise; a LocalSubjectAccessReview
/// is about its own namespace.
fn access_attributes(ctx: &Ctx<'_>, obj: &Value) -> ApiResult<crate::rbac::Attributes> {
    let spec = &obj["spec"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let (user, groups) = if ctx.res.kind == "SelfSubjectAccessReview" {
        (ctx.user.name.clone(), ctx.user.groups.clone())
    } else {
        let groups = spec["groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        (s(&spec["user"]), groups)
    };
    let ra = &spec["resourceAttributes"];
    let nra = &spec["nonResourceAttributes"];
    if ctx.res.kind != "SelfSubjectAccessReview" && user.is_empty() && groups.is_empty() {
        return Err(invalid("at least one of user or group must be specified"));
    }
    let mut attrs = crate::rbac::Attributes {
        user,
        groups,
        ..Default::default()
    };
    if ra.is_object() {
        let mut namespace = s(&ra["namespace"]);
        if ctx.res.kind == "LocalSubjectAccessReview" {
            let url_ns = ctx.info.namespace.clone().unwrap_or_default();
            if !namespace.is_empty() && namespace != url_ns {
                return Err(invalid(format!(
                    "spec.resourceAttributes.namespace must match metadata.namespace: {url_ns}"
                )));
            }
            namespace = url_ns;
        }
        attrs.verb = s(&ra["verb"]);
        attrs.resource = Some(crate::rbac::ResourceAttrs {
            namespace,
            group: s(&ra["group"]),
            resource: s(&ra["resource"]),
            subresource: s(&ra["subresource"]),
            name: s(&ra["name"]),
        });
    } else if nra.is_object() {
        attrs.verb = s(&nra["verb"]);
        attrs.path = s(&nra["path"]);
    } else {
        return Err(invalid(
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    Ok(attrs)
}

impl ApiError {
    pub fn with_message(mut self, m: String) -> Self {
        self.message = m;
        self
    }
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(422, "Invalid", msg)
}
