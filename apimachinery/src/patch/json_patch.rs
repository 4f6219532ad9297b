//! JSON patch (RFC 6902) with the quirks of `evanphx/json-patch` v4, which
//! the upstream apiserver uses: negative array indexes count from the end,
//! `replace` of an absent object member adds it, and a `test` for `null`
//! matches an absent member. Error texts follow upstream's.

use serde_json::Value;

use super::PatchError;

/// Upstream's cap on operations per patch (it answers 413 beyond it).
const MAX_OPERATIONS: usize = 10_000;

/// Applies the RFC 6902 operations in `patch` (a JSON array) to `doc`.
pub fn apply_json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::Invalid(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            json_type(patch)
        )));
    };
    if ops.len() > MAX_OPERATIONS {
        return Err(PatchError::Invalid(format!(
            "The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got: {}",
            ops.len()
        )));
    }
    // Decode every operation first so a malformed patch is a 400 even when
    // an earlier operation would have failed to apply.
    let ops = ops.iter().map(Op::decode).collect::<Result<Vec<_>, _>>()?;
    let mut doc = doc.clone();
    for op in &ops {
        op.apply(&mut doc).map_err(PatchError::Unprocessable)?;
    }
    Ok(doc)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

struct Op<'a> {
    kind: &'a str,
    path: Option<&'a Value>,
    from: Option<&'a Value>,
    value: Option<&'a Value>,
}

impl<'a> Op<'a> {
    fn decode(v: &'a Value) -> Result<Op<'a>, PatchError> {
        let Value::Object(m) = v else {
            return Err(PatchError::Invalid(format!(
                "json: cannot unmarshal {} into Go value of type jsonpatch.Operation",
                json_type(v)
            )));
        };
        Ok(Op {
            kind: m.get("op").and_then(Value::as_str).unwrap_or("unknown"),
            path: m.get("path"),
            from: m.get("from"),
            value: m.get("value"),
        })
    }

    fn apply(&self, doc: &mut Value) -> Result<(), String> {
        match self.kind {
            "add" => {
                let path = self.pointer(self.path, "path")?;
                add(doc, path, self.value_or_null())
                    .map_err(|e| self.missing(e, path, "path: \"", "\""))
            }
            "remove" => {
                let path = self.pointer(self.path, "path")?;
                let (parent, key) =
                    locate(doc, path).ok_or_else(|| self.does_not_apply("path: \"", path, "\""))?;
                remove(parent, &key)
                    .map(drop)
                    .map_err(|e| format!("error in remove for path: '{path}': {e}"))
            }
            "replace" => {
                let path = self.pointer(self.path, "path")?;
                replace(doc, path, self.value_or_null())
            }
            "move" => {
                let from = self.pointer(self.from, "from")?;
                let path = self.pointer(self.path, "path")?;
                let (parent, key) = locate(doc, from)
                    .ok_or_else(|| self.does_not_apply("from path: ", from, ""))?;
                let val = remove(parent, &key)
                    .map_err(|e| format!("error in move for path: '{key}': {e}"))?;
                add(doc, path, val).map_err(|e| self.missing(e, path, "destination path: ", ""))
            }
            "copy" => {
                let from = self.pointer(self.from, "from")?;
                let path = self.pointer(self.path, "path")?;
                let (parent, key) = locate(doc, from)
                    .ok_or_else(|| self.does_not_apply("from path: ", from, ""))?;
                let val = get(parent, &key)
                    .map_err(|e| format!("error in copy for from: '{from}': {e}"))?
                    .cloned()
                    .ok_or_else(|| format!("error in copy for from: '{from}': unable to get nonexistent key: {key}: missing value"))?;
                add(doc, path, val).map_err(|e| self.missing(e, path, "destination path: ", ""))
            }
            "test" => {
                let path = self.pointer(self.path, "path")?;
                test(doc, path, self.value)
            }
            other => Err(format!("Unexpected kind: {other}")),
        }
    }

    fn pointer(&self, field: Option<&'a Value>, name: &str) -> Result<&'a str, String> {
        match field {
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(format!(
                "{} operation failed to decode {name}: json: cannot unmarshal {} into Go value of type string",
                self.kind,
                json_type(v)
            )),
            None => Err(format!(
                "{} operation failed to decode {name}: operation missing {name} field: missing value",
                self.kind
            )),
        }
    }

    /// Upstream stores an absent `value` as JSON null.
    fn value_or_null(&self) -> Value {
        self.value.cloned().unwrap_or(Value::Null)
    }

    fn does_not_apply(&self, what: &str, path: &str, close: &str) -> String {
        format!(
            "{} operation does not apply: doc is missing {what}{path}{close}: missing value",
            self.kind
        )
    }

    fn missing(&self, e: AddError, path: &str, what: &str, close: &str) -> String {
        match e {
            AddError::NoParent => self.does_not_apply(what, path, close),
            AddError::Index(msg) if self.kind == "copy" => {
                format!("error while adding value during copy: {msg}")
            }
            AddError::Index(msg) => format!("error in {} for path: '{path}': {msg}", self.kind),
        }
    }
}

/// Splits a JSON pointer into unescaped reference tokens; `None` when it is
/// neither empty nor starts with '/'.
fn tokens(path: &str) -> Option<Vec<String>> {
    if path.is_empty() {
        return Some(Vec::new());
    }
    let rest = path.strip_prefix('/')?;
    Some(rest.split('/').map(unescape).collect())
}

fn unescape(token: &str) -> String {
    // One left-to-right pass so "~01" decodes to "~1", not "/".
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.peek() {
                Some('0') => {
                    chars.next();
                    out.push('~');
                    continue;
                }
                Some('1') => {
                    chars.next();
                    out.push('/');
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

/// The container holding the target of `path`, and the target's key in it.
/// `None` when the path is the root or a parent is missing or a scalar.
fn locate<'d>(doc: &'d mut Value, path: &str) -> Option<(&'d mut Value, String)> {
    let mut toks = tokens(path)?;
    let key = toks.pop()?;
    let mut cur = doc;
    for t in &toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => {
                let i = index(t, a.len(), false).ok()?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    matches!(cur, Value::Object(_) | Value::Array(_)).then_some((cur, key))
}

/// Resolves an array index token; `end` allows one past the last element
/// (insertion). Negative indexes count from the end, as upstream allows.
fn index(token: &str, len: usize, end: bool) -> Result<usize, String> {
    let n: i64 = token
        .parse()
        .map_err(|_| format!("value was not a proper array index: '{token}'"))?;
    let size = i64::try_from(len)
        .unwrap_or(i64::MAX)
        .saturating_add(i64::from(end));
    let resolved = if n < 0 { n.checked_add(size) } else { Some(n) };
    match resolved {
        Some(i) if (0..size).contains(&i) => usize::try_from(i).map_err(|_| invalid_index(n)),
        _ => Err(invalid_index(n)),
    }
}

fn invalid_index(n: i64) -> String {
    format!("Unable to access invalid index: {n}: invalid index referenced")
}

enum AddError {
    NoParent,
    Index(String),
}

fn add(doc: &mut Value, path: &str, val: Value) -> Result<(), AddError> {
    if path.is_empty() {
        // RFC 6902: adding at the root replaces the whole document.
        *doc = val;
        return Ok(());
    }
    let (parent, key) = locate(doc, path).ok_or(AddError::NoParent)?;
    match parent {
        Value::Object(m) => {
            m.insert(key, val);
            Ok(())
        }
        Value::Array(a) => {
            let i = if key == "-" {
                a.len()
            } else {
                index(&key, a.len(), true).map_err(AddError::Index)?
            };
            a.insert(i, val);
            Ok(())
        }
        _ => Err(AddError::NoParent),
    }
}

fn remove(parent: &mut Value, key: &str) -> Result<Value, String> {
    match parent {
        Value::Object(m) => m
            .remove(key)
            .ok_or_else(|| format!("Unable to remove nonexistent key: {key}: missing value")),
        Value::Array(a) => {
            let i = index(key, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!(
            "Unable to remove nonexistent key: {key}: missing value"
        )),
    }
}

/// The member or element at `key`; `Ok(None)` for an absent object member.
fn get<'v>(parent: &'v Value, key: &str) -> Result<Option<&'v Value>, String> {
    match parent {
        Value::Object(m) => Ok(m.get(key)),
        Value::Array(a) => Ok(a.get(index(key, a.len(), false)?)),
        _ => Ok(None),
    }
}

fn replace(doc: &mut Value, path: &str, val: Value) -> Result<(), String> {
    if path.is_empty() {
        if !(val.is_object() || val.is_array()) {
            return Err("replace operation value must be object or array".into());
        }
        *doc = val;
        return Ok(());
    }
    let Some((parent, key)) = locate(doc, path) else {
        return Err(format!(
            "replace operation does not apply: doc is missing path: {path}: missing value"
        ));
    };
    match parent {
        // Upstream v4 quirk kept for client compatibility: an absent member
        // is simply set.
        Value::Object(m) => {
            m.insert(key, val);
            Ok(())
        }
        Value::Array(a) => {
            let slot = index(&key, a.len(), false).ok().and_then(|i| a.get_mut(i)).ok_or_else(|| {
                format!("replace operation does not apply: doc is missing key: {path}: missing value")
            })?;
            *slot = val;
            Ok(())
        }
        _ => Err(format!(
            "replace operation does not apply: doc is missing path: {path}: missing value"
        )),
    }
}

fn test(doc: &mut Value, path: &str, want: Option<&Value>) -> Result<(), String> {
    let failed = || format!("testing value {path} failed: test failed");
    if path.is_empty() {
        return if want == Some(&*doc) {
            Ok(())
        } else {
            Err(failed())
        };
    }
    let Some((parent, key)) = locate(doc, path) else {
        return Err(format!(
            "test operation does not apply: is missing path: {path}: missing value"
        ));
    };
    let got = get(parent, &key).map_err(|e| format!("error in test for path: '{path}': {e}"))?;
    match (got, want) {
        // Absent member tested against null (or no value) passes upstream.
        (None, None | Some(Value::Null)) => Ok(()),
        (Some(g), Some(w)) if g == w => Ok(()),
        _ => Err(failed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(doc: Value, patch: Value) -> Value {
        match apply_json_patch(&doc, &patch) {
            Ok(v) => v,
            Err(e) => panic!("patch {patch} failed: {e}"),
        }
    }

    fn unprocessable(doc: Value, patch: Value) -> String {
        match apply_json_patch(&doc, &patch) {
            Err(PatchError::Unprocessable(m)) => m,
            other => panic!("expected Unprocessable, got {other:?}"),
        }
    }

    #[test]
    fn rfc6902_appendix_a() {
        // A.1 - A.2
        assert_eq!(
            ok(
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux"}])
            ),
            json!({"baz": "qux", "foo": "bar"})
        );
        assert_eq!(
            ok(
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/1", "value": "qux"}])
            ),
            json!({"foo": ["bar", "qux", "baz"]})
        );
        // A.3 - A.4
        assert_eq!(
            ok(
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "remove", "path": "/baz"}])
            ),
            json!({"foo": "bar"})
        );
        assert_eq!(
            ok(
                json!({"foo": ["bar", "qux", "baz"]}),
                json!([{"op": "remove", "path": "/foo/1"}])
            ),
            json!({"foo": ["bar", "baz"]})
        );
        // A.5
        assert_eq!(
            ok(
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "replace", "path": "/baz", "value": "boo"}])
            ),
            json!({"baz": "boo", "foo": "bar"})
        );
        // A.6 - A.7
        assert_eq!(
            ok(
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}])
            ),
            json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}})
        );
        assert_eq!(
            ok(
                json!({"foo": ["all", "grass", "cows", "eat"]}),
                json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}])
            ),
            json!({"foo": ["all", "cows", "eat", "grass"]})
        );
        // A.8 - A.9
        let doc = json!({"baz": "qux", "foo": ["a", 2, "c"]});
        let same = ok(
            doc.clone(),
            json!([
                {"op": "test", "path": "/baz", "value": "qux"},
                {"op": "test", "path": "/foo/1", "value": 2}
            ]),
        );
        assert_eq!(same, doc);
        let m = unprocessable(
            json!({"baz": "qux"}),
            json!([{"op": "test", "path": "/baz", "value": "bar"}]),
        );
        assert_eq!(m, "testing value /baz failed: test failed");
        // A.10
        assert_eq!(
            ok(
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}])
            ),
            json!({"foo": "bar", "child": {"grandchild": {}}})
        );
        // A.11: unknown members of an operation are ignored.
        assert_eq!(
            ok(
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}])
            ),
            json!({"foo": "bar", "baz": "qux"})
        );
        // A.12
        let m = unprocessable(
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]),
        );
        assert_eq!(
            m,
            "add operation does not apply: doc is missing path: \"/baz/bat\": missing value"
        );
        // A.14: escapes
        assert_eq!(
            ok(
                json!({"/": 9, "~1": 10}),
                json!([{"op": "test", "path": "/~01", "value": 10}])
            ),
            json!({"/": 9, "~1": 10})
        );
        // A.15: comparing a string with a number fails.
        unprocessable(
            json!({"/": 9, "~1": 10}),
            json!([{"op": "test", "path": "/~01", "value": "10"}]),
        );
        // A.16: "-" appends
        assert_eq!(
            ok(
                json!({"foo": ["bar"]}),
                json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}])
            ),
            json!({"foo": ["bar", ["abc", "def"]]})
        );
    }

    #[test]
    fn escaping_and_copy() {
        let doc = json!({"metadata": {"annotations": {"a/b": "1", "c~d": "2"}}});
        let out = ok(
            doc,
            json!([
                {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "x"},
                {"op": "remove", "path": "/metadata/annotations/c~0d"},
                {"op": "copy", "from": "/metadata/annotations/a~1b", "path": "/metadata/annotations/e"}
            ]),
        );
        assert_eq!(
            out,
            json!({"metadata": {"annotations": {"a/b": "x", "e": "x"}}})
        );
    }

    #[test]
    fn kubectl_style_container_image_patch() {
        let doc = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}
        ]}}}});
        let out = ok(
            doc,
            json!([{"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "b:2"}]),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][1]["image"],
            "b:2"
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["image"],
            "a:1"
        );
    }

    #[test]
    fn upstream_quirks() {
        // Negative indexes count from the end.
        assert_eq!(
            ok(
                json!({"a": [1, 2, 3]}),
                json!([{"op": "remove", "path": "/a/-1"}])
            ),
            json!({"a": [1, 2]})
        );
        assert_eq!(
            ok(
                json!({"a": [1, 2]}),
                json!([{"op": "add", "path": "/a/-1", "value": 9}])
            ),
            json!({"a": [1, 2, 9]})
        );
        // replace of an absent member sets it.
        assert_eq!(
            ok(
                json!({"spec": {}}),
                json!([{"op": "replace", "path": "/spec/foo", "value": 1}])
            ),
            json!({"spec": {"foo": 1}})
        );
        // test for null matches an absent member.
        ok(
            json!({"a": 1}),
            json!([{"op": "test", "path": "/b", "value": null}]),
        );
        // whole-document replace and test
        assert_eq!(
            ok(
                json!({"a": 1}),
                json!([{"op": "replace", "path": "", "value": {"b": 2}}])
            ),
            json!({"b": 2})
        );
        ok(
            json!({"a": 1}),
            json!([{"op": "test", "path": "", "value": {"a": 1}}]),
        );
    }

    #[test]
    fn errors() {
        let m = unprocessable(
            json!({}),
            json!([{"op": "replace", "path": "/spec/foo", "value": 1}]),
        );
        assert_eq!(
            m,
            "replace operation does not apply: doc is missing path: /spec/foo: missing value"
        );
        let m = unprocessable(
            json!({"a": [1]}),
            json!([{"op": "replace", "path": "/a/5", "value": 1}]),
        );
        assert_eq!(
            m,
            "replace operation does not apply: doc is missing key: /a/5: missing value"
        );
        let m = unprocessable(json!({"a": 1}), json!([{"op": "remove", "path": "/b"}]));
        assert_eq!(
            m,
            "error in remove for path: '/b': Unable to remove nonexistent key: b: missing value"
        );
        let m = unprocessable(
            json!({"a": [1]}),
            json!([{"op": "add", "path": "/a/5", "value": 1}]),
        );
        assert_eq!(
            m,
            "error in add for path: '/a/5': Unable to access invalid index: 5: invalid index referenced"
        );
        let m = unprocessable(
            json!({"a": [1]}),
            json!([{"op": "add", "path": "/a/x", "value": 1}]),
        );
        assert!(m.contains("value was not a proper array index: 'x'"), "{m}");
        let m = unprocessable(json!({"a": 1}), json!([{"op": "frobnicate", "path": "/a"}]));
        assert_eq!(m, "Unexpected kind: frobnicate");
        let m = unprocessable(
            json!({"a": 1}),
            json!([{"op": "move", "from": "/x/y", "path": "/a"}]),
        );
        assert_eq!(
            m,
            "move operation does not apply: doc is missing from path: /x/y: missing value"
        );
        let m = unprocessable(
            json!({"a": 1}),
            json!([{"op": "copy", "from": "/a", "path": "/x/y"}]),
        );
        assert_eq!(
            m,
            "copy operation does not apply: doc is missing destination path: /x/y: missing value"
        );
        let m = unprocessable(json!({"a": 1}), json!([{"op": "add", "value": 1}]));
        assert!(m.contains("missing path field"), "{m}");
        let m = unprocessable(
            json!({"a": 1}),
            json!([{"op": "add", "path": "a", "value": 1}]),
        );
        assert!(m.starts_with("add operation does not apply"), "{m}");
        unprocessable(
            json!({"a": "s"}),
            json!([{"op": "add", "path": "/a/b", "value": 1}]),
        );
        unprocessable(json!({"a": 1}), json!([{"op": "remove", "path": ""}]));
        unprocessable(
            json!({"a": 1}),
            json!([{"op": "replace", "path": "", "value": 3}]),
        );
        // A failing operation leaves no partial result behind.
        unprocessable(
            json!({"a": 1}),
            json!([{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 2}]),
        );

        for bad in [json!({"op": "add"}), json!("x"), json!(null), json!([1])] {
            assert!(
                matches!(
                    apply_json_patch(&json!({}), &bad),
                    Err(PatchError::Invalid(_))
                ),
                "{bad}"
            );
        }
        let many = Value::Array(vec![
            json!({"op": "test", "path": "/a", "value": 1});
            MAX_OPERATIONS + 1
        ]);
        assert!(matches!(
            apply_json_patch(&json!({"a": 1}), &many),
            Err(PatchError::Invalid(_))
        ));
    }

    #[test]
    fn index_resolution() {
        assert_eq!(index("0", 2, false), Ok(0));
        assert_eq!(index("1", 2, false), Ok(1));
        assert!(index("2", 2, false).is_err());
        assert_eq!(index("2", 2, true), Ok(2));
        assert!(index("3", 2, true).is_err());
        assert_eq!(index("-1", 2, false), Ok(1));
        assert_eq!(index("-2", 2, false), Ok(0));
        assert!(index("-3", 2, false).is_err());
        assert_eq!(index("-3", 2, true), Ok(0));
        assert!(index("0", 0, false).is_err());
        assert!(index("99999999999999999999", 2, false).is_err());
        assert!(index("-9223372036854775808", 2, false).is_err());
    }
}
