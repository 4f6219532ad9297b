//! Field selectors: upstream's `fields.ParseSelector` (`f=v`, `f==v`, `f!=v`,
//! comma-separated, with `\,` `\=` `\\` escapes in values) and the field
//! values the apiserver exposes for them.

use std::fmt;

use serde_json::Value;

use super::SelectorError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    Eq,
    NotEq,
}

/// One `field op value` term; `value` is unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub op: FieldOp,
    pub value: String,
}

impl FieldRequirement {
    /// Whether a field value (`None` = absent, compared as "") satisfies it.
    pub fn matches(&self, actual: Option<&str>) -> bool {
        let equal = actual.unwrap_or("") == self.value;
        match self.op {
            FieldOp::Eq => equal,
            FieldOp::NotEq => !equal,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            FieldOp::Eq => "=",
            FieldOp::NotEq => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_value(&self.value))
    }
}

/// A conjunction of field requirements; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        // Upstream sorts the raw terms, which fixes the canonical order.
        parts.sort();
        let mut reqs = Vec::new();
        for part in parts.iter().filter(|p| !p.is_empty()) {
            let Some((field, op, raw)) = split_term(part) else {
                return Err(SelectorError::Field(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            reqs.push(FieldRequirement {
                field: field.to_string(),
                op,
                value: unescape_value(raw)?,
            });
        }
        Ok(Self { reqs })
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.reqs
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The same selector with every field name passed through `rename` (a
    /// view whose fields are stored under other names).
    pub fn rename_fields(mut self, rename: impl Fn(&str) -> String) -> Self {
        for r in &mut self.reqs {
            r.field = rename(&r.field);
        }
        self
    }

    /// Rejects the first field not in `supported`, worded as upstream's
    /// field label conversion functions word it.
    pub fn check_supported(&self, supported: &[&str]) -> Result<(), SelectorError> {
        match self
            .reqs
            .iter()
            .find(|r| !supported.contains(&r.field.as_str()))
        {
            Some(r) => Err(SelectorError::UnsupportedField(r.field.clone())),
            None => Ok(()),
        }
    }

    /// Matches with field values looked up by name; a missing field is "".
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.reqs
            .iter()
            .all(|r| r.matches(get(&r.field).as_deref()))
    }

    /// The value `field=value` demands, if any, so a caller can use an index
    /// (e.g. pods by `spec.nodeName`).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.reqs
            .iter()
            .find(|r| r.field == field && r.op == FieldOp::Eq)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.reqs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Splits on commas not escaped by a backslash; escapes stay in the terms.
fn split_terms(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(c);
    }
    terms.push(cur);
    terms
}

/// The first operator occurrence splits the term (keys have no escapes);
/// `!=` and `==` are tried before `=` so no `=` is left on the value.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, kind) in [
            ("!=", FieldOp::NotEq),
            ("==", FieldOp::Eq),
            ("=", FieldOp::Eq),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], kind, value));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::Field(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                )));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Upstream prints the rune with %v, i.e. its code point number.
            ',' | '=' => {
                return Err(SelectorError::Field(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                )));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::Field(
            "invalid field selector: invalid escape sequence: \\".into(),
        ));
    }
    Ok(out)
}

/// Upstream's `fields.EscapeValue`.
fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reads a field-selector field out of an object the way the apiserver's
/// per-kind field sets expose them: strings as-is, booleans and numbers in
/// text, plus the few fields upstream derives or defaults (`status.podIP`
/// from `podIPs`, `source` meaning the event source component, booleans that
/// read "false" when unset...). `None` when the object has no such value.
pub fn field_value(obj: &Value, path: &str) -> Option<String> {
    match path {
        // Events: `source` is the component; events.k8s.io objects carry it
        // under their own field names.
        "source" => lookup(obj, "source.component")
            .or_else(|| lookup(obj, "deprecatedSource.component"))
            .or_else(|| Some(String::new())),
        "reportingComponent" => {
            lookup(obj, "reportingComponent").or_else(|| lookup(obj, "reportingController"))
        }
        "status.podIP" => obj
            .pointer("/status/podIPs/0/ip")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| lookup(obj, "status.podIP")),
        // Upstream builds these from non-pointer fields, so unset reads as
        // the zero value.
        "spec.hostNetwork" | "spec.unschedulable" => {
            lookup(obj, path).or_else(|| Some("false".into()))
        }
        "status.replicas" => lookup(obj, path).or_else(|| Some("0".into())),
        "status.successful" => lookup(obj, "status.succeeded").or_else(|| Some("0".into())),
        _ => {
            if let Some(rest) = path.strip_prefix("involvedObject.") {
                return lookup(obj, path).or_else(|| lookup(obj, &format!("regarding.{rest}")));
            }
            lookup(obj, path)
        }
    }
}

fn lookup(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    for seg in path.split('.') {
        cur = cur.get(seg)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_canonicalizes() {
        let f = FieldSelector::parse("spec.nodeName=n1,metadata.name!=x,status.phase==Running")
            .unwrap();
        assert_eq!(
            f.to_string(),
            "metadata.name!=x,spec.nodeName=n1,status.phase=Running"
        );
        assert_eq!(f.requirements().len(), 3);
        assert_eq!(f.exact("spec.nodeName"), Some("n1"));
        assert_eq!(f.exact("metadata.name"), None);
        assert_eq!(
            f.requirements()[0],
            FieldRequirement {
                field: "metadata.name".into(),
                op: FieldOp::NotEq,
                value: "x".into()
            }
        );
        assert!(FieldSelector::parse("").unwrap().is_empty());
        // Empty terms are skipped; an empty value is allowed.
        let f = FieldSelector::parse("a=,,b=1").unwrap();
        assert_eq!(f.to_string(), "a=,b=1");
    }

    #[test]
    fn escapes() {
        let f = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
        assert_eq!(f.requirements()[0].value, r"a,b=c\d");
        assert_eq!(f.to_string(), r"metadata.name=a\,b\=c\\d");
        assert_eq!(
            FieldSelector::parse(r"a=b\x").unwrap_err().to_string(),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            FieldSelector::parse(r"a=b\").unwrap_err().to_string(),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(
            FieldSelector::parse("a=b=c").unwrap_err().to_string(),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            FieldSelector::parse("a,b=c").unwrap_err().to_string(),
            "invalid selector: 'a,b=c'; can't understand 'a'"
        );
    }

    #[test]
    fn supported_fields() {
        let f = FieldSelector::parse("spec.nodeName=a,spec.bogus=b").unwrap();
        assert_eq!(
            f.check_supported(&["metadata.name", "spec.nodeName"])
                .unwrap_err()
                .to_string(),
            "field label not supported: spec.bogus"
        );
        assert!(f.check_supported(&["spec.nodeName", "spec.bogus"]).is_ok());
    }

    #[test]
    fn matching_treats_missing_as_empty() {
        let f = FieldSelector::parse("spec.nodeName=").unwrap();
        assert!(f.matches(|_| None));
        let f = FieldSelector::parse("spec.nodeName!=n1,status.phase=Running").unwrap();
        let get = |k: &str| match k {
            "status.phase" => Some("Running".to_string()),
            _ => None,
        };
        assert!(f.matches(get));
        let f = FieldSelector::parse("spec.nodeName=n1").unwrap();
        assert!(!f.matches(get));
    }

    #[test]
    fn field_values_like_the_apiserver() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.1"}]}
        });
        assert_eq!(field_value(&pod, "metadata.name").as_deref(), Some("p"));
        assert_eq!(field_value(&pod, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(
            field_value(&pod, "status.phase").as_deref(),
            Some("Running")
        );
        assert_eq!(
            field_value(&pod, "status.podIP").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            field_value(&pod, "spec.hostNetwork").as_deref(),
            Some("false")
        );
        assert_eq!(field_value(&pod, "spec.schedulerName"), None);
        assert_eq!(field_value(&pod, "spec"), None);

        let node = json!({"spec": {"unschedulable": true}});
        assert_eq!(
            field_value(&node, "spec.unschedulable").as_deref(),
            Some("true")
        );
        assert_eq!(
            field_value(&json!({}), "spec.unschedulable").as_deref(),
            Some("false")
        );

        let secret = json!({"type": "kubernetes.io/tls"});
        assert_eq!(
            field_value(&secret, "type").as_deref(),
            Some("kubernetes.io/tls")
        );

        let ev = json!({"involvedObject": {"kind": "Pod", "name": "p"}, "source": {"component": "kubelet"}});
        assert_eq!(
            field_value(&ev, "involvedObject.kind").as_deref(),
            Some("Pod")
        );
        assert_eq!(field_value(&ev, "source").as_deref(), Some("kubelet"));
        let ev2 = json!({"regarding": {"kind": "Node"}, "reportingController": "k3rs"});
        assert_eq!(
            field_value(&ev2, "involvedObject.kind").as_deref(),
            Some("Node")
        );
        assert_eq!(
            field_value(&ev2, "reportingComponent").as_deref(),
            Some("k3rs")
        );

        let job = json!({"status": {"succeeded": 2}});
        assert_eq!(field_value(&job, "status.successful").as_deref(), Some("2"));
    }
}
