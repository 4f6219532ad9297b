//! Request bodies in Kubernetes' protobuf encoding, for the few kinds that
//! typed clients send that way to a server they assume speaks it (kubectl's
//! `auth can-i` and `auth whoami`). Responses are always JSON, which every
//! client accepts.
//!
//! The envelope is the 4-byte magic `k8s\0` followed by a `runtime.Unknown`
//! message whose `raw` field holds the object itself.

use prost::Message;
use serde_json::{Value, json};

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", tag = "2")]
    raw: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, tag = "1")]
    api_version: String,
    #[prost(string, tag = "2")]
    kind: String,
}

/// SelfSubjectAccessReview, SubjectAccessReview and LocalSubjectAccessReview
/// share this layout up to the fields read here.
#[derive(Clone, PartialEq, Message)]
struct AccessReview {
    #[prost(message, optional, tag = "2")]
    spec: Option<AccessReviewSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct AccessReviewSpec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceAttributes {
    #[prost(string, tag = "1")]
    namespace: String,
    #[prost(string, tag = "2")]
    verb: String,
    #[prost(string, tag = "3")]
    group: String,
    #[prost(string, tag = "4")]
    version: String,
    #[prost(string, tag = "5")]
    resource: String,
    #[prost(string, tag = "6")]
    subresource: String,
    #[prost(string, tag = "7")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct NonResourceAttributes {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(string, tag = "2")]
    verb: String,
}

/// Decodes a protobuf body into the JSON object it stands for; None when the
/// kind is not one we read from protobuf or the bytes are malformed.
pub fn decode(kind: &str, body: &[u8]) -> Option<Value> {
    let inner = body.strip_prefix(MAGIC)?;
    let unknown = Unknown::decode(inner).ok()?;
    match kind {
        "SelfSubjectReview" => Some(json!({"metadata": {}})),
        "SelfSubjectAccessReview" | "LocalSubjectAccessReview" | "SubjectAccessReview" => {
            let review = AccessReview::decode(unknown.raw.as_slice()).ok()?;
            let spec = review.spec.unwrap_or_default();
            let mut s = json!({});
            if let Some(r) = spec.resource_attributes {
                s["resourceAttributes"] = json!({
                    "namespace": r.namespace, "verb": r.verb, "group": r.group, "version": r.version,
                    "resource": r.resource, "subresource": r.subresource, "name": r.name,
                });
            }
            if let Some(n) = spec.non_resource_attributes {
                s["nonResourceAttributes"] = json!({"path": n.path, "verb": n.verb});
            }
            Some(json!({"metadata": {}, "spec": s}))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_an_access_review() {
        let review = AccessReview {
            spec: Some(AccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: "create".into(),
                    resource: "pods".into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            }),
        };
        let env = Unknown {
            type_meta: Some(TypeMeta {
                api_version: "authorization.k8s.io/v1".into(),
                kind: "SelfSubjectAccessReview".into(),
            }),
            raw: review.encode_to_vec(),
        };
        let mut body = MAGIC.to_vec();
        body.extend(env.encode_to_vec());
        let v = decode("SelfSubjectAccessReview", &body).unwrap();
        assert_eq!(v["spec"]["resourceAttributes"]["verb"], "create");
        assert_eq!(v["spec"]["resourceAttributes"]["resource"], "pods");
        assert!(decode("Pod", &body).is_none());
        assert!(decode("SelfSubjectAccessReview", b"garbage").is_none());
    }
}
