//! `metadata.managedFields` and server-side apply.
//!
//! A field set is kept in its wire form (`FieldsV1`): a tree whose keys are
//! `f:<field>`, `k:<json of key fields>` (an item of a keyed list),
//! `v:<json value>` (an item of a set) and `.` (the node itself). Leaves are
//! what a manager owns. Which lists are keyed or sets comes from the patch
//! strategies of the built-in types; the rest of the shape comes from the
//! kind's schema.
//!
//! Apply (operation `Apply`): the applied configuration's fields become the
//! manager's set; another manager's field whose value would change is a
//! conflict (409) unless `force`; fields the manager applied before and
//! dropped now, and nobody else owns, are removed from the object.
//! Other writes (operation `Update`): the writer takes the fields it changed.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::schema::{Shape, TypeRef};

/// A field set: key → subtree; an empty subtree is a leaf.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSet(BTreeMap<String, FieldSet>);

/// How a list's items are identified, from the built-in patch strategies.
#[derive(Debug, Clone, PartialEq)]
pub enum ListKind {
    Atomic,
    Set,
    Keyed(Vec<String>),
}

/// Which lists are keyed or sets: (struct type, field) → merge keys, where
/// an empty key list means a set of scalars.
pub type ListLookup = fn(&str, &str) -> ListKind;

/// Metadata fields the server owns; never part of anyone's field set.
const SYSTEM_META: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "name",
    "namespace",
];

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn from_json(v: &Value) -> FieldSet {
        FieldSet(
            v.as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, x)| (k.clone(), FieldSet::from_json(x)))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect::<Map<_, _>>(),
        )
    }

    pub fn union(&self, o: &FieldSet) -> FieldSet {
        let mut out = self.0.clone();
        for (k, v) in &o.0 {
            let merged = match out.get(k) {
                Some(mine) => mine.union(v),
                None => v.clone(),
            };
            out.insert(k.clone(), merged);
        }
        FieldSet(out)
    }

    /// Leaves of `self` that are not leaves of `o`.
    pub fn difference(&self, o: &FieldSet) -> FieldSet {
        let mut out = BTreeMap::new();
        for (k, v) in &self.0 {
            match o.0.get(k) {
                None => {
                    out.insert(k.clone(), v.clone());
                }
                Some(ov) => {
                    if v.is_empty() {
                        // A leaf owned by both: gone from the difference,
                        // unless `o` only has it as an inner node.
                        if !ov.is_empty() {
                            out.insert(k.clone(), FieldSet::default());
                        }
                        continue;
                    }
                    let d = v.difference(ov);
                    if !d.is_empty() {
                        out.insert(k.clone(), d);
                    }
                }
            }
        }
        FieldSet(out)
    }

    /// Leaves present in both.
    pub fn intersection(&self, o: &FieldSet) -> FieldSet {
        let mut out = BTreeMap::new();
        for (k, v) in &self.0 {
            if let Some(ov) = o.0.get(k) {
                if v.is_empty() && ov.is_empty() {
                    out.insert(k.clone(), FieldSet::default());
                } else if !v.is_empty() && !ov.is_empty() {
                    let i = v.intersection(ov);
                    if !i.is_empty() {
                        out.insert(k.clone(), i);
                    }
                }
            }
        }
        FieldSet(out)
    }

    /// Every leaf as a path of keys.
    pub fn leaves(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for (k, v) in &self.0 {
            prefix.push(k.clone());
            if v.is_empty() {
                out.push(prefix.clone());
            } else {
                v.collect(prefix, out);
            }
            prefix.pop();
        }
    }
}

/// The field set of an object, as upstream computes it.
pub fn field_set(obj: &Value, ty: Option<TypeRef>, lists: ListLookup) -> FieldSet {
    let mut top = obj.clone();
    if let Some(o) = top.as_object_mut() {
        o.remove("apiVersion");
        o.remove("kind");
        o.remove("status");
        if let Some(Value::Object(m)) = o.get_mut("metadata") {
            for f in SYSTEM_META {
                m.remove(*f);
            }
            if m.is_empty() {
                o.remove("metadata");
            }
        }
    }
    set_of(&top, ty, lists)
}

fn shape(ty: Option<TypeRef>, v: &Value) -> Shape {
    match ty.map(TypeRef::shape) {
        Some(s) if s != Shape::Any => s,
        // Without a schema, objects are maps and lists are atomic.
        _ => match v {
            Value::Object(_) => Shape::Map,
            _ => Shape::Scalar,
        },
    }
}

fn set_of(v: &Value, ty: Option<TypeRef>, lists: ListLookup) -> FieldSet {
    let mut out = BTreeMap::new();
    let Some(m) = v.as_object() else {
        return FieldSet(out);
    };
    let sh = shape(ty, v);
    let struct_name = match sh {
        Shape::Struct(n) => Some(n),
        _ => None,
    };
    if sh == Shape::Map && !m.is_empty() {
        out.insert(".".into(), FieldSet::default());
    }
    for (k, child) in m {
        let cty = match sh {
            Shape::Struct(_) => ty.and_then(|t| t.field(k)),
            Shape::Map => ty.and_then(TypeRef::elem),
            _ => None,
        };
        let sub = match child {
            Value::Object(_) => set_of(child, cty, lists),
            Value::Array(items) => {
                let kind = struct_name.map_or(ListKind::Atomic, |s| lists(s, k));
                list_set(items, &kind, cty.and_then(TypeRef::elem), lists)
            }
            _ => FieldSet::default(),
        };
        out.insert(format!("f:{k}"), sub);
    }
    FieldSet(out)
}

fn list_set(
    items: &[Value],
    kind: &ListKind,
    item_ty: Option<TypeRef>,
    lists: ListLookup,
) -> FieldSet {
    let mut out = BTreeMap::new();
    match kind {
        ListKind::Atomic => {}
        ListKind::Set => {
            for it in items {
                out.insert(
                    format!("v:{}", serde_json::to_string(it).unwrap_or_default()),
                    FieldSet::default(),
                );
            }
        }
        ListKind::Keyed(keys) => {
            for it in items {
                let Some(key) = item_key(it, keys) else {
                    continue;
                };
                let mut sub = set_of(it, item_ty, lists);
                sub.0.insert(".".into(), FieldSet::default());
                out.insert(key, sub);
            }
        }
    }
    FieldSet(out)
}

/// `k:{"name":"c"}` for an item of a keyed list (key fields sorted).
fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut m = serde_json::Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    if m.is_empty() {
        return None;
    }
    let sorted: BTreeMap<_, _> = m.into_iter().collect();
    Some(format!("k:{}", serde_json::to_string(&sorted).ok()?))
}

/// The value at a field-set path, if present.
fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(v);
    };
    if first == "." {
        return Some(v);
    }
    let next = if let Some(f) = first.strip_prefix("f:") {
        v.get(f)?
    } else if let Some(k) = first.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        v.as_array()?
            .iter()
            .find(|it| key.iter().all(|(kk, kv)| it.get(kk) == Some(kv)))?
    } else if let Some(x) = first.strip_prefix("v:") {
        let want: Value = serde_json::from_str(x).ok()?;
        v.as_array()?.iter().find(|it| **it == want)?
    } else {
        return None;
    };
    value_at(next, rest)
}

/// Removes the node at a field-set path (a trailing `.` names the node itself).
fn remove_at(v: &mut Value, path: &[String]) {
    let path = match path.split_last() {
        Some((last, rest)) if last == "." => rest,
        _ => path,
    };
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let key = |k: &str| serde_json::from_str::<Map<String, Value>>(k).ok();
    let matches =
        |it: &Value, key: &Map<String, Value>| key.iter().all(|(kk, kv)| it.get(kk) == Some(kv));
    if rest.is_empty() {
        if let Some(f) = first.strip_prefix("f:") {
            if let Some(o) = v.as_object_mut() {
                o.remove(f);
            }
        } else if let (Some(k), Some(a)) =
            (first.strip_prefix("k:").and_then(key), v.as_array_mut())
        {
            a.retain(|it| !matches(it, &k));
        } else if let Some(x) = first.strip_prefix("v:")
            && let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(x), v.as_array_mut())
        {
            a.retain(|it| *it != want);
        }
        return;
    }
    let child = if let Some(f) = first.strip_prefix("f:") {
        v.get_mut(f)
    } else if let Some(k) = first.strip_prefix("k:").and_then(key) {
        v.as_array_mut()
            .and_then(|a| a.iter_mut().find(|it| matches(it, &k)))
    } else {
        None
    };
    if let Some(c) = child {
        remove_at(c, rest);
    }
}

/// Whether a leaf differs between two objects; a `.` leaf (the node itself)
/// differs only when the node appears or disappears.
fn leaf_differs(a: &Value, b: &Value, leaf: &[String]) -> bool {
    match leaf.split_last() {
        Some((last, rest)) if last == "." => {
            value_at(a, rest).is_some() != value_at(b, rest).is_some()
        }
        _ => value_at(a, leaf) != value_at(b, leaf),
    }
}

/// `.spec.containers[name="c"].image`, as upstream prints conflicting paths.
pub fn path_string(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if let Some(f) = p.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = p.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(a, b)| format!("{a}={b}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(x) = p.strip_prefix("v:") {
            s.push_str(&format!("[={x}]"));
        }
    }
    s
}

struct Entry {
    manager: String,
    operation: String,
    api_version: Value,
    time: Value,
    subresource: Option<Value>,
    set: FieldSet,
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or("").to_string(),
                    operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                    api_version: e["apiVersion"].clone(),
                    time: e["time"].clone(),
                    subresource: e.get("subresource").cloned(),
                    set: FieldSet::from_json(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn store_entries(obj: &mut Value, list: Vec<Entry>) {
    let arr: Vec<Value> = list
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": e.set.to_json(),
            });
            if let Some(s) = e.subresource {
                v["subresource"] = s;
            }
            v
        })
        .collect();
    let meta = crate::object::meta_mut(obj);
    if arr.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(arr));
    }
}

/// Records a non-apply write by `manager`: it takes the fields it changed
/// from everyone else; fields that no longer exist leave every set.
pub fn record_update(
    new: &mut Value,
    old: Option<&Value>,
    ty: Option<TypeRef>,
    lists: ListLookup,
    manager: &str,
    subresource: Option<&str>,
) {
    let new_set = field_set(new, ty, lists);
    let changed = match old {
        None => new_set.clone(),
        Some(o) => {
            let mut c = FieldSet::default();
            for leaf in new_set.leaves() {
                if leaf_differs(o, new, &leaf) {
                    c = c.union(&path_set(&leaf));
                }
            }
            c
        }
    };
    let mut list = match old {
        Some(o) => entries(o),
        None => entries(new),
    };
    for e in &mut list {
        // Drop fields that are gone, and the ones this write changed.
        e.set = e.set.intersection(&new_set).difference(&changed);
    }
    let api_version = new["apiVersion"].clone();
    let now = json!(crate::object::now_rfc3339());
    let sub = subresource.map(|s| json!(s));
    match list
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub)
    {
        Some(e) => {
            e.set = e.set.union(&changed);
            if !changed.is_empty() {
                e.time = now;
            }
        }
        None => list.push(Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version,
            time: now,
            subresource: sub,
            set: changed,
        }),
    }
    store_entries(new, list);
}

fn path_set(path: &[String]) -> FieldSet {
    let mut s = FieldSet::default();
    for p in path.iter().rev() {
        let mut m = BTreeMap::new();
        m.insert(p.clone(), s);
        s = FieldSet(m);
    }
    s
}

/// A conflict with another manager's fields.
#[derive(Debug)]
pub struct Conflicts {
    pub message: String,
    pub causes: Vec<(String, String)>,
}

/// Server-side apply of `applied` by `manager` onto `current` (`None` when
/// the object does not exist yet). `merge` merges the configuration into
/// the object (strategic merge for built-in kinds).
#[allow(clippy::too_many_arguments)]
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    ty: Option<TypeRef>,
    lists: ListLookup,
    manager: &str,
    force: bool,
    merge: impl Fn(&Value, &Value) -> Result<Value, String>,
) -> Result<Result<Value, Conflicts>, String> {
    let applied_set = field_set(applied, ty, lists);
    let base = current.cloned().unwrap_or_else(|| json!({}));
    let mut list = entries(&base);
    // Conflicts: another manager's leaf whose value this apply changes.
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for e in &list {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        for leaf in e.set.intersection(&applied_set).leaves() {
            if leaf_differs(&base, applied, &leaf) {
                let av = e.api_version.as_str().unwrap_or("v1").to_string();
                conflicts.push((
                    format!("conflict with \"{}\" using {av}", e.manager),
                    path_string(&leaf),
                ));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let n = conflicts.len();
        let message = if n == 1 {
            format!(
                "Apply failed with 1 conflict: {}: {}",
                conflicts[0].0, conflicts[0].1
            )
        } else {
            let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
            for (who, path) in &conflicts {
                match by_manager.iter_mut().find(|(w, _)| w == who) {
                    Some((_, ps)) => ps.push(path.clone()),
                    None => by_manager.push((who.clone(), vec![path.clone()])),
                }
            }
            let body: Vec<String> = by_manager
                .iter()
                .map(|(w, ps)| {
                    let w = w.replacen("conflict with", "conflicts with", 1);
                    format!("{w}:\n- {}", ps.join("\n- "))
                })
                .collect();
            format!("Apply failed with {n} conflicts: {}", body.join("\n"))
        };
        return Ok(Err(Conflicts {
            message,
            causes: conflicts,
        }));
    }
    // Fields this manager applied before and dropped now are removed,
    // unless someone else still owns them.
    let previous = list
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply")
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let others = list
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
        .fold(FieldSet::default(), |acc, e| acc.union(&e.set));
    let dropped = previous.difference(&applied_set).difference(&others);
    let mut pruned = base.clone();
    for leaf in dropped.leaves() {
        remove_at(&mut pruned, &leaf);
    }
    let mut merged = merge(&pruned, applied)?;
    // Forced (or equal-valued) fields now belong to this manager alone when
    // values changed; equal values stay shared, as upstream does.
    for e in &mut list {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        let mut lost = FieldSet::default();
        for leaf in e.set.intersection(&applied_set).leaves() {
            if leaf_differs(&base, applied, &leaf) {
                lost = lost.union(&path_set(&leaf));
            }
        }
        e.set = e.set.difference(&lost);
    }
    let now = json!(crate::object::now_rfc3339());
    match list
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Apply")
    {
        Some(e) => {
            e.set = applied_set;
            e.time = now;
            e.api_version = applied["apiVersion"].clone();
        }
        None => list.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: applied["apiVersion"].clone(),
            time: now,
            subresource: None,
            set: applied_set,
        }),
    }
    store_entries(&mut merged, list);
    Ok(Ok(merged))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(ty: &str, field: &str) -> ListKind {
        match (ty, field) {
            ("PodSpec", "containers") => ListKind::Keyed(vec!["name".into()]),
            ("ObjectMeta", "finalizers") => ListKind::Set,
            _ => ListKind::Atomic,
        }
    }

    fn merge(a: &Value, b: &Value) -> Result<Value, String> {
        let mut out = a.clone();
        fn m(dst: &mut Value, src: &Value) {
            match (dst.as_object_mut(), src.as_object()) {
                (Some(d), Some(s)) => {
                    for (k, v) in s {
                        m(d.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
                _ => *dst = src.clone(),
            }
        }
        m(&mut out, b);
        Ok(out)
    }

    #[test]
    fn field_sets_look_like_upstream() {
        let ty = TypeRef::root("", "v1", "Pod");
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "x"}, "finalizers": ["a"]},
            "spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Always"}});
        let s = field_set(&pod, ty, lists).to_json();
        assert_eq!(
            s,
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}, "f:finalizers": {"v:\"a\"": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}, "f:restartPolicy": {}},
            })
        );
    }

    #[test]
    fn apply_conflicts_force_and_prunes() {
        let ty = TypeRef::root("", "v1", "ConfigMap");
        let a1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"color": "blue", "size": "L"}});
        let obj = apply(None, &a1, ty, lists, "alice", false, merge)
            .unwrap()
            .unwrap();
        assert_eq!(obj["data"]["color"], "blue");
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"color": "red"}});
        let c = apply(Some(&obj), &b, ty, lists, "bob", false, merge)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            c.message,
            "Apply failed with 1 conflict: conflict with \"alice\" using v1: .data.color"
        );
        let obj = apply(Some(&obj), &b, ty, lists, "bob", true, merge)
            .unwrap()
            .unwrap();
        assert_eq!(obj["data"]["color"], "red");
        // Alice no longer owns color; dropping data from her config removes
        // size, which only she owned.
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}});
        let obj = apply(Some(&obj), &a2, ty, lists, "alice", false, merge)
            .unwrap()
            .unwrap();
        assert!(obj["data"].get("size").is_none(), "{obj}");
        assert_eq!(obj["data"]["color"], "red");
        let managers: Vec<&str> = obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["bob"], "alice owns nothing now");
    }

    #[test]
    fn updates_take_changed_fields() {
        let ty = TypeRef::root("", "v1", "ConfigMap");
        let mut v1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": "1", "b": "2"}});
        record_update(&mut v1, None, ty, lists, "kubectl-create", None);
        let mut v2 = v1.clone();
        v2["data"]["a"] = json!("changed");
        record_update(&mut v2, Some(&v1), ty, lists, "kubectl-edit", None);
        let mf = v2["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf[0]["manager"], "kubectl-create");
        assert_eq!(mf[0]["fieldsV1"], json!({"f:data": {".": {}, "f:b": {}}}));
        assert_eq!(mf[1]["fieldsV1"], json!({"f:data": {"f:a": {}}}));
    }
}
