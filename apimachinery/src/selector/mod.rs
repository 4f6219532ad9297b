//! Label and field selectors as the apiserver and controllers use them:
//! upstream's `labels.Parse`, `metav1.LabelSelectorAsSelector` and
//! `fields.ParseSelector`, with the same canonical strings and error texts so
//! `kubectl` users see what they would see against upstream.

mod field;
mod label;

pub use field::{FieldOp, FieldRequirement, FieldSelector, field_value};
pub use label::{LabelOp, LabelSelector, Requirement, format_labels};

/// Why a selector was rejected; `Display` is the message clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Label selector grammar (`found ',', expected: ...`).
    #[error("{0}")]
    Syntax(String),
    /// A well-formed requirement with a bad key, value or value count.
    #[error("{0}")]
    Requirement(String),
    /// A `metav1.LabelSelector` object that is not shaped like one.
    #[error("{0}")]
    Malformed(String),
    /// An unknown `matchExpressions` operator.
    #[error("\"{0}\" is not a valid label selector operator")]
    Operator(String),
    /// Field selector grammar or escaping.
    #[error("{0}")]
    Field(String),
    /// A field the resource cannot be filtered on.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}
