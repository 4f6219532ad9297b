//! Field-level errors, rendered the way upstream renders them so that
//! `kubectl` output looks familiar: `spec.replicas: Invalid value: -1: must be
//! greater than or equal to 0`.

use std::fmt;

use serde_json::Value;

/// What is wrong with a field; maps to a `StatusCause.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
    TooMany,
    NotFound,
}

impl FieldErrorKind {
    /// The `StatusCause.reason` upstream uses (`FieldValueInvalid`, ...).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::NotFound => "FieldValueNotFound",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Duplicate => "Duplicate value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::NotFound => "Not found",
        }
    }
}

/// One problem with one field, e.g. `metadata.name` or `spec.containers[0].image`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: String,
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    pub fn new(
        kind: FieldErrorKind,
        field: impl Into<String>,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Required, field, None, detail)
    }
    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Invalid, field, Some(value), detail)
    }
    pub fn not_supported(field: impl Into<String>, value: Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self::new(
            FieldErrorKind::NotSupported,
            field,
            Some(value),
            format!("supported values: {}", list.join(", ")),
        )
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Forbidden, field, None, detail)
    }
    pub fn duplicate(field: impl Into<String>, value: Value) -> Self {
        Self::new(FieldErrorKind::Duplicate, field, Some(value), "")
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.kind.label())?;
        if let Some(v) = &self.value {
            // Strings are quoted, other scalars printed bare, as upstream does.
            write!(f, ": {}", go_value(v))?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// A bad value as upstream prints it: string maps and lists in Go syntax
/// (`map[string]string{"app":"x"}`, `[]string{"a", "b"}`, as label and
/// clusterIPs errors show them), anything else as JSON.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::Object(m) if m.values().all(Value::is_string) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let body: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
                .collect();
            format!("map[string]string{{{}}}", body.join(", "))
        }
        Value::Array(a) if a.iter().all(Value::is_string) => {
            let body: Vec<String> = a.iter().map(Value::to_string).collect();
            format!("[]string{{{}}}", body.join(", "))
        }
        other => other.to_string(),
    }
}

/// A list of field errors; empty means valid.
pub type FieldErrors = Vec<FieldError>;

/// Appends `.child` or `[i]` to a field path.
pub fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_like_upstream() {
        let e = FieldError::invalid(
            "spec.replicas",
            json!(-1),
            "must be greater than or equal to 0",
        );
        assert_eq!(
            e.to_string(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        let e = FieldError::required("metadata.name", "name or generateName is required");
        assert_eq!(
            e.to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        assert_eq!(FieldErrorKind::Required.reason(), "FieldValueRequired");
        let e = FieldError::invalid("x", json!({"b": "2", "a": "1"}), "d");
        assert_eq!(
            e.to_string(),
            r#"x: Invalid value: map[string]string{"a":"1", "b":"2"}: d"#
        );
        let e = FieldError::invalid("x", json!(["10.0.0.1"]), "d");
        assert_eq!(
            e.to_string(),
            r#"x: Invalid value: []string{"10.0.0.1"}: d"#
        );
        assert_eq!(index(&child("spec", "containers"), 0), "spec.containers[0]");
    }
}
