//! Pure Kubernetes API machinery shared by the k3rs daemons: everything here
//! works on `serde_json::Value` objects and does no I/O, so it is tested fast
//! and reused by the apiserver, controllers and node agent alike.
//!
//! Objects stay JSON (not typed structs) so that one generic code path serves
//! every kind; per-kind knowledge lives in small data tables.

pub mod conversion;
pub mod defaults;
pub mod field;
pub mod patch;
pub mod protobuf;
pub mod selector;
pub mod table;
pub mod validation;

pub use field::{FieldError, FieldErrorKind, FieldErrors};
pub use protobuf::ProtobufError;
