//! JSON merge patch (RFC 7386): objects merge key by key, `null` deletes,
//! anything else (arrays included) replaces.

use serde_json::{Map, Value};

/// Applies merge patch `patch` to `doc` and returns the result.
pub fn apply_merge_patch(doc: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        // A non-object patch replaces the target wholesale.
        return patch.clone();
    };
    let mut out = match doc {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge_into(&mut out, p);
    Value::Object(out)
}

fn merge_into(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, pv) in patch {
        match pv {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(pm) => {
                // Recursing into a fresh map when the target is absent or not
                // an object strips nulls from the added subtree, as the RFC
                // requires.
                let entry = target.entry(k.clone()).or_insert(Value::Null);
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(tm) = entry {
                    merge_into(tm, pm);
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_appendix_a() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (doc, patch, want) in cases {
            assert_eq!(apply_merge_patch(&doc, &patch), want, "{doc} + {patch}");
        }
    }

    #[test]
    fn rfc7386_section_3_example() {
        let doc = json!({
            "title": "Goodbye!",
            "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"],
            "content": "This will be unchanged"
        });
        let patch = json!({
            "title": "Hello!",
            "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null},
            "tags": ["example"]
        });
        let want = json!({
            "title": "Hello!",
            "author": {"givenName": "John"},
            "tags": ["example"],
            "content": "This will be unchanged",
            "phoneNumber": "+01-123-456-7890"
        });
        assert_eq!(apply_merge_patch(&doc, &patch), want);
    }

    #[test]
    fn labels_on_kubernetes_object() {
        let doc = json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"replicas": 3}});
        let want = json!({"metadata": {"name": "x", "labels": {"b": "2", "c": "3"}}, "spec": {"replicas": 3}});
        assert_eq!(apply_merge_patch(&doc, &patch), want);
    }
}
