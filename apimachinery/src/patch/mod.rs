//! The PATCH flavours of the Kubernetes API: JSON patch (RFC 6902), JSON
//! merge patch (RFC 7386) and strategic merge patch, on `serde_json::Value`.
//!
//! Behaviour mirrors upstream (`evanphx/json-patch` v4 and
//! `k8s.io/apimachinery/pkg/util/strategicpatch`) so that clients such as
//! `kubectl patch` and `kubectl apply` get the results they expect.

mod json_patch;
mod merge;
mod strategic;
mod strategy;

#[cfg(test)]
mod strategic_tests;

pub use json_patch::apply_json_patch;
pub use merge::apply_merge_patch;
pub use strategic::apply_strategic_merge_patch;
pub use strategy::{
    ListStrategy, PatchStrategy, StrategyLookup, field_strategy, patch_strategy_tag,
};

/// The `Content-Type` of a PATCH request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// The patch type named by a `Content-Type` header value; parameters
    /// (`; charset=utf-8`) and case are ignored. `None` for anything else,
    /// including the CBOR apply variant we do not speak.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Why a patch could not be applied. `Display` is the bare message, which
/// the apiserver puts into its `Status`.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The patch conflicts with the object's current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The patch is well formed but cannot apply to this object (HTTP 422),
    /// e.g. a failed JSON patch `test` or a missing path.
    #[error("{0}")]
    Unprocessable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        use PatchType::*;
        let cases = [
            ("application/json-patch+json", Some(Json)),
            ("application/merge-patch+json", Some(Merge)),
            (
                "application/strategic-merge-patch+json",
                Some(StrategicMerge),
            ),
            ("application/apply-patch+yaml", Some(Apply)),
            ("Application/Merge-Patch+JSON; charset=utf-8", Some(Merge)),
            ("  application/json-patch+json ;foo=bar", Some(Json)),
            ("application/apply-patch+cbor", None),
            ("application/json", None),
            ("", None),
        ];
        for (ct, want) in cases {
            assert_eq!(PatchType::from_content_type(ct), want, "{ct}");
        }
    }

    #[test]
    fn error_display_is_the_message() {
        assert_eq!(PatchError::Invalid("bad".into()).to_string(), "bad");
        assert_eq!(PatchError::Unprocessable("nope".into()).to_string(), "nope");
        assert_eq!(PatchError::Conflict("c".into()).to_string(), "c");
    }
}
