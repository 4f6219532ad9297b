//! Create-only review resources answered on the spot: access reviews (the
//! authorizer allows everything until RBAC lands), SelfSubjectReview
//! (`kubectl auth whoami`) and TokenReview.

use bytes::Bytes;
use serde_json::json;

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
            let (allowed, reason) = ctx.api.authorizer.allows();
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

impl ApiError {
    pub fn with_message(mut self, m: String) -> Self {
        self.message = m;
        self
    }
}
