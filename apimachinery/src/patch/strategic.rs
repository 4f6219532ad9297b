//! Strategic merge patch, as upstream's `strategicpatch` applies it on the
//! server (`MergeParallelList` and `IgnoreUnmatchedNulls` both on).
//!
//! Maps merge key by key and `null` deletes. Lists merge only when the type
//! table says so (by merge key for objects, as a set for primitives); other
//! lists are replaced. Directives: `$patch` (`replace`/`delete` on maps,
//! `replace`/`delete` elements in merged lists), `$retainKeys`,
//! `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`.
//!
//! Where upstream copies a patch subtree verbatim (a field absent from the
//! object, or a replaced list) we merge it into an empty value instead, so
//! that directives and nulls never end up in stored objects.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::PatchError;
use super::strategy::{Rule, StrategyLookup, Tag, rule};

type Obj = Map<String, Value>;
type Result<T> = std::result::Result<T, PatchError>;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder";
const DELETE_FROM: &str = "$deleteFromPrimitiveList";

/// Applies strategic merge patch `patch` to `doc` using the list strategies
/// of `lookup`'s kind.
pub fn apply_strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    lookup: &StrategyLookup,
) -> Result<Value> {
    let Value::Object(p) = patch else {
        return Err(invalid("invalid JSON document"));
    };
    let base = match doc {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge_map(base, p, lookup.root()).map(Value::Object)
}

fn invalid(msg: impl Into<String>) -> PatchError {
    PatchError::Invalid(msg.into())
}

/// Go's name for the type a JSON value decodes to; upstream's messages
/// are phrased in them.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn bad_arg(expected: &str, got: &Value) -> PatchError {
    invalid(format!(
        "expected a {expected}, but received a {}",
        go_type(got)
    ))
}

fn no_merge_key(m: &Obj, key: &str) -> PatchError {
    invalid(format!(
        "map: {} does not contain declared merge key: {key}",
        Value::Object(m.clone())
    ))
}

fn bad_patch_type(d: &Value, m: &Obj) -> PatchError {
    let d = d.as_str().map_or_else(|| d.to_string(), str::to_owned);
    invalid(format!(
        "unknown patch type: {d} in map: {}",
        Value::Object(m.clone())
    ))
}

fn wrong_shape(r: &Rule, want: &str, got: &Value) -> PatchError {
    invalid(format!(
        "json: cannot unmarshal {} into Go struct field {}.{} of type {want}",
        go_type(got),
        r.owner,
        r.field
    ))
}

/// The list field named by a `$setElementOrder/<f>` or
/// `$deleteFromPrimitiveList/<f>` key.
fn directive_field<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    key.strip_prefix(prefix)?.strip_prefix('/')
}

/// Merges patch map `patch` into `orig`, a map of API type `ty` ("" when
/// unknown).
fn merge_map(mut orig: Obj, patch: &Obj, ty: &'static str) -> Result<Obj> {
    if let Some(d) = patch.get(DIRECTIVE) {
        match d.as_str() {
            Some("replace") => {
                let mut rest = patch.clone();
                rest.remove(DIRECTIVE);
                return merge_map(Map::new(), &rest, ty);
            }
            Some("delete") => return Ok(Map::new()),
            // Upstream rejects an explicit "merge" on maps; it means the
            // default, so accepting it is harmless.
            Some("merge") => {
                let mut rest = patch.clone();
                rest.remove(DIRECTIVE);
                return merge_map(orig, &rest, ty);
            }
            _ => return Err(bad_patch_type(d, patch)),
        }
    }

    if let Some(keep) = patch.get(RETAIN_KEYS) {
        retain_keys(&mut orig, patch, keep)?;
    }

    let ordered = set_element_orders(&mut orig, patch, ty)?;

    for (k, pv) in patch {
        if k == RETAIN_KEYS || k.starts_with(SET_ORDER) || ordered.contains(k.as_str()) {
            continue;
        }
        if k.starts_with(DELETE_FROM) {
            let field = directive_field(k, DELETE_FROM)
                .ok_or_else(|| invalid("invalid patch format of primitive list"))?;
            match (orig.get_mut(field), pv) {
                (_, Value::Null) => {
                    orig.remove(field);
                }
                (Some(Value::Array(cur)), Value::Array(del)) => {
                    let del: HashSet<String> = del.iter().map(canonical).collect();
                    cur.retain(|v| !del.contains(&canonical(v)));
                }
                // Nothing to delete from; upstream ignores this too.
                _ => {}
            }
            continue;
        }
        let cur = orig.get_mut(k).map(std::mem::take);
        match merge_value(cur, pv, rule(ty, k))? {
            Some(v) => {
                orig.insert(k.clone(), v);
            }
            None => {
                orig.remove(k);
            }
        }
    }
    Ok(orig)
}

/// `$retainKeys`: keys of `orig` not listed are cleared; the patch itself
/// may only set listed keys.
fn retain_keys(orig: &mut Obj, patch: &Obj, keep: &Value) -> Result<()> {
    const BAD: &str = "invalid patch format of retainKeys";
    let Value::Array(keep) = keep else {
        return Err(invalid(BAD));
    };
    let kept = |k: &str| keep.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch {
        let directive = k == RETAIN_KEYS || k.starts_with(SET_ORDER) || k.starts_with(DELETE_FROM);
        if !directive && !v.is_null() && !kept(k) {
            return Err(invalid(BAD));
        }
    }
    orig.retain(|k, _| kept(k));
    Ok(())
}

/// Handles every `$setElementOrder/<f>` of `patch`: merges list `f` and
/// orders it as the directive says. Returns the list fields it merged.
fn set_element_orders<'p>(
    orig: &mut Obj,
    patch: &'p Obj,
    ty: &'static str,
) -> Result<HashSet<&'p str>> {
    let mut done = HashSet::new();
    for (k, order) in patch {
        if !k.starts_with(SET_ORDER) {
            continue;
        }
        let field = directive_field(k, SET_ORDER)
            .ok_or_else(|| invalid("invalid patch format of setElementOrder list"))?;
        let Value::Array(order) = order else {
            return Err(bad_arg("[]interface {}", order));
        };
        let r = rule(ty, field);
        let key = r.and_then(Rule::merge_key);
        let cur = match orig.get(field) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(bad_arg("[]interface {}", other)),
        };
        let patch_list = match patch.get(field) {
            None => None,
            Some(Value::Array(a)) => Some(a.as_slice()),
            Some(other) => return Err(bad_arg("[]interface {}", other)),
        };
        if let Some(pl) = patch_list {
            validate_order(pl, order, key)?;
            done.insert(field);
        }
        let merged = match (&cur, patch_list) {
            (None, None) => continue,
            (Some(c), None) => c.clone(),
            (c, Some(p)) => merge_list_field(c.clone().unwrap_or_default(), p, r)?,
        };
        let server_order = cur.unwrap_or_default();
        let in_order: HashSet<String> = order.iter().filter_map(|o| identity(o, key)).collect();
        let (listed, server_only): (Vec<Value>, Vec<Value>) = merged
            .into_iter()
            .partition(|e| identity(e, key).is_some_and(|id| in_order.contains(&id)));
        let result = interleave(server_only, listed, order, &server_order, key);
        orig.insert(field.to_owned(), Value::Array(result));
    }
    Ok(done)
}

/// The elements a patch list sets (directive elements aside) must appear
/// in its `$setElementOrder` list, in the same relative order.
fn validate_order(patch_list: &[Value], order: &[Value], key: Option<&str>) -> Result<()> {
    let id_of = |v: &Value| -> Result<String> {
        match (key, v) {
            (Some(k), Value::Object(m)) => identity(v, key).ok_or_else(|| no_merge_key(m, k)),
            (Some(_), other) => Err(bad_arg("map[string]interface {}", other)),
            (None, _) => Ok(canonical(v)),
        }
    };
    let mut rest = order.iter();
    for item in patch_list.iter().filter(|v| v.get(DIRECTIVE).is_none()) {
        let want = id_of(item)?;
        loop {
            match rest.next() {
                Some(o) if id_of(o)? == want => break,
                Some(_) => {}
                None => {
                    return Err(invalid(format!(
                        "The order in patch list:\n{}\n doesn't match {SET_ORDER} list:\n{}\n",
                        Value::Array(patch_list.to_vec()),
                        Value::Array(order.to_vec())
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Merges patch value `pv` into `cur`, the current value of a field with
/// rule `r`. `None` means the field goes away.
fn merge_value(cur: Option<Value>, pv: &Value, r: Option<&Rule>) -> Result<Option<Value>> {
    let ty = r.map_or("", |r| r.ty);
    match pv {
        Value::Null => Ok(None),
        Value::Object(pm) => {
            if let Some(r) = r.filter(|r| r.list) {
                return Err(wrong_shape(r, "array", pv));
            }
            let replace = r.is_some_and(|r| r.tag == Tag::Replace);
            match cur {
                Some(Value::Object(m)) if !replace => {
                    merge_map(m, pm, ty).map(|m| Some(Value::Object(m)))
                }
                // Deleting what is not there leaves nothing behind.
                _ if pm.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") => Ok(None),
                _ => merge_map(Map::new(), pm, ty).map(|m| Some(Value::Object(m))),
            }
        }
        Value::Array(pl) => {
            if let Some(r) = r.filter(|r| !r.list) {
                return Err(wrong_shape(r, "object", pv));
            }
            let cur = match cur {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            merge_list_field(cur, pl, r).map(|l| Some(Value::Array(l)))
        }
        scalar => match r {
            Some(r) => Err(wrong_shape(
                r,
                if r.list { "array" } else { "object" },
                scalar,
            )),
            None => Ok(Some(scalar.clone())),
        },
    }
}

/// Merges or replaces a list according to its rule.
fn merge_list_field(cur: Vec<Value>, patch: &[Value], r: Option<&Rule>) -> Result<Vec<Value>> {
    match r {
        Some(r) if r.merges() => merge_list(cur, patch, r),
        _ => replace_list(patch, r.map_or("", |r| r.ty)),
    }
}

/// An atomic list takes the patch's elements, cleaned of directives.
fn replace_list(patch: &[Value], ty: &'static str) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(patch.len());
    for v in patch {
        match v {
            // Directives mean nothing in an atomic list; upstream drops
            // such elements when it cleans a patch.
            Value::Object(m) if m.contains_key(DIRECTIVE) => {}
            Value::Object(m) => out.push(Value::Object(merge_map(Map::new(), m, ty)?)),
            other => out.push(other.clone()),
        }
    }
    Ok(out)
}

/// Whether the elements of both lists are objects (else primitives);
/// mixed lists and lists of lists are errors, as upstream.
fn elements_are_objects(cur: &[Value], patch: &[Value]) -> Result<bool> {
    let mut objects = None;
    for v in cur.iter().chain(patch) {
        let is_obj = match v {
            Value::Array(_) => {
                return Err(PatchError::Unprocessable(
                    "lists of lists are not supported".into(),
                ));
            }
            Value::Object(_) => true,
            _ => false,
        };
        match objects {
            None => objects = Some(is_obj),
            Some(o) if o != is_obj => {
                return Err(invalid(format!(
                    "list element types are not identical: {}",
                    Value::Array(cur.iter().chain(patch).cloned().collect())
                )));
            }
            Some(_) => {}
        }
    }
    Ok(objects.unwrap_or(false))
}

/// Merges a list with `patchStrategy: merge`.
fn merge_list(cur: Vec<Value>, patch: &[Value], r: &Rule) -> Result<Vec<Value>> {
    if cur.is_empty() && patch.is_empty() {
        return Ok(cur);
    }
    if !elements_are_objects(&cur, patch)? {
        // A set of primitives: union, first occurrence wins.
        let mut seen = HashSet::new();
        let merged: Vec<Value> = cur
            .iter()
            .chain(patch)
            .filter(|v| seen.insert(canonical(v)))
            .cloned()
            .collect();
        let in_patch: HashSet<String> = patch.iter().map(canonical).collect();
        let (listed, server_only) = merged
            .into_iter()
            .partition(|v| in_patch.contains(&canonical(v)));
        return Ok(interleave(server_only, listed, patch, &cur, None));
    }

    let key = r.merge_key().ok_or_else(|| {
        invalid(format!(
            "cannot merge lists without merge key for {}.{}",
            r.owner, r.field
        ))
    })?;
    let mut cur = cur;
    let mut rest: Vec<&Value> = Vec::with_capacity(patch.len());
    let mut replace = false;
    for v in patch {
        let Value::Object(m) = v else {
            return Err(bad_arg("map[string]interface {}", v));
        };
        let Some(d) = m.get(DIRECTIVE) else {
            rest.push(v);
            continue;
        };
        match d.as_str() {
            Some("delete") => {
                let id = identity(v, Some(key)).ok_or_else(|| no_merge_key(m, key))?;
                cur.retain(|e| identity(e, Some(key)).as_ref() != Some(&id));
            }
            // `{"$patch": "replace"}` as an element: the list becomes the
            // patch's other elements.
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(invalid(
                    "merging lists cannot yet be specified in the patch",
                ));
            }
            _ => return Err(bad_patch_type(d, m)),
        }
    }
    if replace {
        return rest
            .into_iter()
            .filter_map(Value::as_object)
            .map(|m| merge_map(Map::new(), m, r.ty).map(Value::Object))
            .collect();
    }

    let server_order = cur.clone();
    let mut merged = cur;
    let mut at: HashMap<String, usize> = HashMap::new();
    for (i, e) in merged.iter().enumerate() {
        if let Some(id) = identity(e, Some(key)) {
            at.entry(id).or_insert(i);
        }
    }
    for v in &rest {
        let Value::Object(m) = v else { continue };
        let id = identity(v, Some(key)).ok_or_else(|| no_merge_key(m, key))?;
        match at.get(&id).and_then(|&i| merged.get_mut(i)) {
            Some(slot) => {
                let base = match std::mem::take(slot) {
                    Value::Object(b) => b,
                    _ => Map::new(),
                };
                *slot = Value::Object(merge_map(base, m, r.ty)?);
            }
            None => {
                at.insert(id, merged.len());
                merged.push(Value::Object(merge_map(Map::new(), m, r.ty)?));
            }
        }
    }
    let in_patch: HashSet<String> = rest.iter().filter_map(|v| identity(v, Some(key))).collect();
    let (listed, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|e| identity(e, Some(key)).is_some_and(|id| in_patch.contains(&id)));
    let patch_order: Vec<Value> = rest.into_iter().cloned().collect();
    Ok(interleave(
        server_only,
        listed,
        &patch_order,
        &server_order,
        Some(key),
    ))
}

/// Comparable form of a JSON value. Numbers compare by value, as Go's
/// decoded `float64`s do, so `80` and `80.0` are the same port.
fn canonical(v: &Value) -> String {
    match v {
        Value::String(s) => format!("s{s}"),
        Value::Number(n) => match n.as_f64() {
            Some(f) => format!("n{f}"),
            None => format!("n{n}"),
        },
        other => format!("j{other}"),
    }
}

/// What identifies a list element: its merge key's value, or the element
/// itself in lists of primitives. `None` when the element lacks the key.
fn identity(v: &Value, key: Option<&str>) -> Option<String> {
    match key {
        Some(k) => v.get(k).map(canonical),
        None => Some(canonical(v)),
    }
}

/// First position of each element identity in `list`.
fn positions(list: &[Value], key: Option<&str>) -> HashMap<String, usize> {
    let mut at = HashMap::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        if let Some(id) = identity(v, key) {
            at.entry(id).or_insert(i);
        }
    }
    at
}

/// Upstream's ordering of a merged list: the patched elements in the
/// patch's order, the server-only ones in their existing order, the two
/// interleaved by their positions in the existing list. A patched element
/// that was not there before is placed at the first point it is compared,
/// which puts brand-new elements ahead of untouched existing ones.
fn interleave(
    server_only: Vec<Value>,
    patched: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let by_patch = positions(patch_order, key);
    let by_server = positions(server_order, key);
    let rank = |v: &Value, at: &HashMap<String, usize>| {
        identity(v, key).and_then(|id| at.get(&id).copied())
    };
    let ranked = |items: Vec<Value>, sort_by: &HashMap<String, usize>| {
        let mut items: Vec<(usize, Option<usize>, Value)> = items
            .into_iter()
            .map(|v| {
                (
                    rank(&v, sort_by).unwrap_or(usize::MAX),
                    rank(&v, &by_server),
                    v,
                )
            })
            .collect();
        // Stable: elements missing from the order keep their relative order.
        items.sort_by_key(|(sort, _, _)| *sort);
        items
            .into_iter()
            .map(|(_, server, v)| (server, v))
            .collect::<Vec<_>>()
    };
    let left = ranked(server_only, &by_server);
    let right = ranked(patched, &by_patch);

    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    while let (Some((l, _)), Some((r, _))) = (left.peek(), right.peek()) {
        let take_left = matches!((l, r), (Some(l), Some(r)) if l < r);
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next.map(|(_, v)| v));
    }
    out.extend(left.map(|(_, v)| v));
    out.extend(right.map(|(_, v)| v));
    out
}
