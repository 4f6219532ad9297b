//! Response plumbing shared by every handler.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use serde_json::Value;

use crate::status::ApiError;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;
pub type Resp = Response<Body>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

pub fn bytes_resp(code: u16, content_type: &str, b: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(full(b));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub fn json(code: u16, v: &Value) -> Resp {
    bytes_resp(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

pub fn raw_json(code: u16, b: impl Into<Bytes>) -> Resp {
    bytes_resp(code, "application/json", b)
}

pub fn error(e: &ApiError) -> Resp {
    let mut r = json(e.code, &e.to_status());
    if e.code == 401 {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"kubernetes-master\""),
        );
    }
    r
}

pub fn text(code: u16, s: &'static str) -> Resp {
    bytes_resp(code, "text/plain; charset=utf-8", s)
}
