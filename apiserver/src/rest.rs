//! The generic REST verbs over every stored resource: get, list, watch,
//! create, update, patch, delete, deletecollection, and the status/scale
//! subresources. Per-kind behaviour comes from data (the resource table) and
//! the pure machinery in k3rs-apimachinery.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, header};
use k3rs_apimachinery::patch::{self, PatchType, StrategyLookup};
use k3rs_apimachinery::selector::{FieldSelector, LabelSelector};
use k3rs_apimachinery::{defaults, validation};
use serde_json::{Map, Value, json};

use crate::authn::UserInfo;
use crate::conversion;
use crate::http::{self as h, Resp};
use crate::managed_fields::{self, ListKind};
use crate::object::{self, meta_mut, meta_str};
use crate::request::{Query, RequestInfo};
use crate::resources::{ResourceDef, Storage};
use crate::status::{ApiError, ApiResult};
use crate::store::{Cas, Kv};
use crate::table;
use crate::watch_cache::Entry;
use crate::{Api, allocator};

/// Bodies above this are refused, as upstream does (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// How long a consistent list waits for the cache before reading etcd itself.
const CACHE_WAIT: Duration = Duration::from_secs(3);

/// Request context passed to every verb.
pub struct Ctx<'a> {
    pub api: &'a Arc<Api>,
    pub user: &'a UserInfo,
    pub res: &'static ResourceDef,
    pub info: RequestInfo,
    pub query: Query,
    pub headers: &'a HeaderMap,
}

impl Ctx<'_> {
    fn ns(&self) -> Option<&str> {
        if self.res.namespaced {
            self.info.namespace.as_deref()
        } else {
            None
        }
    }

    pub fn name(&self) -> &str {
        self.info.name.as_deref().unwrap_or("")
    }

    fn key(&self, name: &str) -> ApiResult<String> {
        self.res
            .key(self.ns(), name)
            .ok_or_else(ApiError::not_found_path)
    }

    fn wants_table(&self) -> bool {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=Table"))
    }

    fn type_ref(&self) -> Option<crate::schema::TypeRef> {
        crate::schema::TypeRef::root(self.res.group, self.res.version, self.res.kind)
    }

    fn field_manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager") {
            return m.to_string();
        }
        let ua = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        ua.split('/').next().unwrap_or("unknown").to_string()
    }
}

pub async fn handle(ctx: Ctx<'_>, method: &Method, body: Bytes) -> Resp {
    match dispatch(&ctx, method, body).await {
        Ok(r) => r,
        Err(e) => h::error(&e),
    }
}

async fn dispatch(ctx: &Ctx<'_>, method: &Method, body: Bytes) -> ApiResult<Resp> {
    let res = ctx.res;
    if res.namespaced && ctx.info.namespace.is_none() && ctx.info.name.is_some() {
        return Err(ApiError::not_found_path());
    }
    if !res.namespaced && ctx.info.namespace.is_some() {
        return Err(ApiError::not_found_path());
    }
    if res.storage == Storage::Virtual {
        return match *method {
            Method::POST => crate::review::create(ctx, &body).await,
            _ => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({})",
                res.plural
            ))),
        };
    }
    if let Some(sub) = ctx.info.subresource.clone() {
        return crate::subresource::dispatch(ctx, method, &sub, body).await;
    }
    let watch = ctx.info.watch_path || ctx.query.flag("watch");
    match (method, ctx.info.name.is_some()) {
        (&Method::GET, true) if watch => crate::watch::serve(ctx).await,
        (&Method::GET, true) => get(ctx).await,
        (&Method::GET, false) if watch => crate::watch::serve(ctx).await,
        (&Method::GET, false) => list(ctx).await,
        (&Method::POST, false) => create(ctx, &body).await,
        (&Method::PUT, true) => update(ctx, &body, Part::Main).await,
        (&Method::PATCH, true) => patch(ctx, &body, Part::Main).await,
        (&Method::DELETE, true) => delete(ctx, &body).await,
        (&Method::DELETE, false) => delete_collection(ctx, &body).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({})",
            res.plural
        ))),
    }
}

/// Decodes a JSON, YAML or Kubernetes-protobuf request body.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large());
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let v: Value = if ct.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else if ct.contains("json") || ct.is_empty() {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON: {e}"
            ))
        })?
    } else if ct.contains("application/vnd.kubernetes.protobuf") {
        // Typed clients (kubectl create/expose/drain, client-go) send
        // protobuf; the object is stored and served as JSON like any other.
        k3rs_apimachinery::protobuf::decode(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as protobuf: {e}"
            ))
        })?
    } else {
        return Err(ApiError::unsupported_media_type(ct));
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok(v)
}

/// Checks `apiVersion`/`kind` against the URL and fills them when absent.
fn check_type(res: &ResourceDef, obj: &mut Value) -> ApiResult<()> {
    let want_av = res.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want_av),
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(res.kind),
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )));
        }
    }
    Ok(())
}

/// Keyed lists and sets for managedFields, from the built-in patch strategies.
fn list_kind(owner: &str, field: &str) -> ListKind {
    match patch::field_strategy(owner, field) {
        Some(s) if s.strategy == patch::PatchStrategy::Merge => match s.merge_key {
            Some(k) => ListKind::Keyed(vec![k.to_string()]),
            None => ListKind::Set,
        },
        _ => ListKind::Atomic,
    }
}

/// `fieldValidation`: `Strict` refuses unknown fields; `Warn` (the default)
/// and `Ignore` drop them, `Warn` telling the client. Values of the wrong
/// type are refused in every mode, as decoding into typed structs does.
fn check_fields(ctx: &Ctx<'_>, obj: &mut Value) -> ApiResult<Vec<String>> {
    let res = ctx.res;
    let mode = ctx.query.get("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Ignore" | "Warn" | "Strict") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation: Unsupported value: \"{mode}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
        )));
    }
    let report = crate::schema::check(res.group, res.version, res.kind, obj, mode != "Strict");
    let cannot = |why: String| {
        ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: {why}",
            kind = res.kind,
            v = res.version
        ))
    };
    if let Some(e) = report.type_error {
        return Err(cannot(e));
    }
    let unknown: Vec<String> = report
        .unknown
        .iter()
        .map(|u| format!("unknown field \"{u}\""))
        .collect();
    match mode {
        "Strict" if !unknown.is_empty() => Err(cannot(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        ))),
        "Warn" => Ok(unknown),
        _ => Ok(Vec::new()),
    }
}

/// Adds `Warning: 299 - "..."` headers, which kubectl prints as `Warning: ...`.
fn with_warnings(mut r: Resp, warnings: &[String]) -> Resp {
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = header::HeaderValue::from_str(&v) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

fn served(kv: &Kv) -> ApiResult<Entry> {
    Entry::decode(&kv.key, &kv.value, kv.mod_rev)
        .ok_or_else(|| ApiError::internal(format!("stored object {} cannot be decoded", kv.key)))
}

fn entry_resp(ctx: &Ctx<'_>, code: u16, e: &Entry) -> Resp {
    if ctx.wants_table()
        && let Some(mut v) = e.value()
    {
        conversion::served_value(ctx.res, &mut v);
        return h::json(code, &table::table(ctx.res, &[v], e.rev, &ctx.query));
    }
    h::raw_json(code, conversion::served_raw(ctx.res, &e.raw))
}

fn value_resp(ctx: &Ctx<'_>, code: u16, v: &Value) -> Resp {
    if ctx.wants_table() {
        return h::json(
            code,
            &table::table(ctx.res, std::slice::from_ref(v), 0, &ctx.query),
        );
    }
    h::json(code, v)
}

async fn load(ctx: &Ctx<'_>, name: &str) -> ApiResult<Kv> {
    let key = ctx.key(name)?;
    ctx.api
        .store
        .get(&key)
        .await?
        .map(|kv| conversion::served_kv(ctx.res, kv))
        .ok_or_else(|| ApiError::not_found(ctx.res, name))
}

async fn get(ctx: &Ctx<'_>) -> ApiResult<Resp> {
    let name = ctx.name();
    // resourceVersion=0 means any recent state will do: serve it from the cache.
    if ctx.query.get("resourceVersion") == Some("0") {
        let key = ctx.key(name)?;
        return match ctx.api.cache.get(&key) {
            Some(e) => Ok(entry_resp(ctx, 200, &e)),
            None => Err(ApiError::not_found(ctx.res, name)),
        };
    }
    let kv = load(ctx, name).await?;
    Ok(entry_resp(ctx, 200, &served(&kv)?))
}

/// Label and field selectors of a list or watch, checked against what the
/// resource supports.
pub struct Filter {
    pub namespace_prefix: String,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    pub fn from_ctx(ctx: &Ctx<'_>) -> ApiResult<Self> {
        let prefix = ctx
            .res
            .key_prefix(ctx.ns())
            .ok_or_else(ApiError::not_found_path)?;
        let labels =
            match ctx.query.get("labelSelector") {
                Some(s) => Some(LabelSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("unable to parse requirement: {e}"))
                })?),
                None => None,
            };
        let fields = match ctx.query.get("fieldSelector") {
            Some(s) => {
                let f = FieldSelector::parse(s)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
                    .rename_fields(|f| conversion::stored_field(ctx.res, f));
                let mut supported: Vec<&str> = vec!["metadata.name", "metadata.namespace"];
                supported.extend_from_slice(ctx.res.fields);
                f.check_supported(&supported)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                Some(f)
            }
            None => None,
        };
        Ok(Self {
            namespace_prefix: prefix,
            labels,
            fields,
        })
    }

    pub fn matches(&self, e: &Entry) -> bool {
        if !e.key.starts_with(&self.namespace_prefix) {
            return false;
        }
        if let Some(l) = &self.labels
            && !l.matches_fn(|k| e.label(k))
        {
            return false;
        }
        if let Some(f) = &self.fields
            && !f.matches(|name| e.field(name))
        {
            return false;
        }
        true
    }
}

async fn list(ctx: &Ctx<'_>) -> ApiResult<Resp> {
    let filter = Filter::from_ctx(ctx)?;
    let limit = ctx
        .query
        .int("limit")
        .map_err(ApiError::bad_request)?
        .unwrap_or(0);
    let rv = ctx.query.get("resourceVersion");
    let exact = ctx.query.get("resourceVersionMatch") == Some("Exact");
    let continue_token = ctx.query.get("continue");

    // Pages and exact-revision reads come from etcd, which keeps history;
    // everything else is served from the watch cache.
    if limit > 0 || continue_token.is_some() || exact {
        return list_from_store(ctx, &filter, limit, continue_token, rv, exact).await;
    }
    let want = match rv {
        Some("0") => 0,
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        None => ctx.api.store.current_rev().await?,
    };
    if !ctx.api.cache.wait_for(want, CACHE_WAIT).await {
        if rv.is_some() {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {want}, current: {}",
                ctx.api.cache.rev()
            )));
        }
        return list_from_store(ctx, &filter, 0, None, None, false).await;
    }
    let (items, rev) = ctx.api.cache.list(&filter.namespace_prefix);
    let items: Vec<Arc<Entry>> = items.into_iter().filter(|e| filter.matches(e)).collect();
    Ok(list_resp(
        ctx,
        items.iter().map(|e| &**e),
        rev.max(want),
        None,
    ))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: i64,
    start: String,
}

async fn list_from_store(
    ctx: &Ctx<'_>,
    filter: &Filter,
    limit: i64,
    continue_token: Option<&str>,
    rv: Option<&str>,
    exact: bool,
) -> ApiResult<Resp> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (mut rev, mut start) = match continue_token {
        Some(t) => {
            let c: Continue = b64
                .decode(t)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
            if !c.start.starts_with(&filter.namespace_prefix) {
                return Err(ApiError::bad_request("continue key is not valid"));
            }
            (c.rv, c.start)
        }
        None => (0, String::new()),
    };
    if exact && rev == 0 {
        rev = rv.and_then(|s| s.parse().ok()).ok_or_else(|| {
            ApiError::bad_request("resourceVersionMatch=Exact needs a resourceVersion")
        })?;
    }
    let mut items = Vec::new();
    let mut more;
    loop {
        let page = if limit > 0 { limit.max(50) } else { 1000 };
        let (kvs, m, r) = match ctx
            .api
            .store
            .list(&filter.namespace_prefix, &start, page, rev)
            .await
        {
            Err(crate::store::StoreError::Compacted(_)) if continue_token.is_some() => {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            Err(crate::store::StoreError::Compacted(_)) => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {rev}"
                )));
            }
            other => other?,
        };
        if rev == 0 {
            rev = r;
        }
        more = m;
        for kv in &kvs {
            let e = served(kv)?;
            if filter.matches(&e) {
                items.push(e);
            }
        }
        if let Some(last) = kvs.last() {
            start = format!("{}\0", last.key);
        }
        if !more || (limit > 0 && items.len() as i64 >= limit) {
            break;
        }
    }
    let mut cont = None;
    if limit > 0 && items.len() as i64 > limit {
        items.truncate(limit as usize);
    }
    if limit > 0
        && (more || items.len() as i64 == limit)
        && let Some(last) = items.last()
    {
        let next = format!("{}\0", last.key);
        // Only hand out a token when something may follow it.
        if more || next < start {
            let token = serde_json::to_vec(&Continue {
                rv: rev,
                start: next,
            })
            .unwrap_or_default();
            cont = Some(b64.encode(token));
        }
    }
    Ok(list_resp(ctx, items.iter(), rev, cont))
}

fn list_resp<'e>(
    ctx: &Ctx<'_>,
    items: impl Iterator<Item = &'e Entry>,
    rev: i64,
    cont: Option<String>,
) -> Resp {
    if ctx.wants_table() {
        let objs: Vec<Value> = items
            .filter_map(Entry::value)
            .map(|mut v| {
                conversion::served_value(ctx.res, &mut v);
                v
            })
            .collect();
        let mut t = table::table(ctx.res, &objs, rev, &ctx.query);
        if let Some(c) = cont {
            t["metadata"]["continue"] = json!(c);
        }
        return h::json(200, &t);
    }
    // Items are spliced in as stored bytes: no re-encoding per list.
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let head = format!(
        "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{},\"items\":[",
        ctx.res.list_kind(),
        ctx.res.api_version(),
        meta
    );
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(head.as_bytes());
    for (i, e) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&conversion::served_raw(ctx.res, &e.raw));
    }
    out.extend_from_slice(b"]}");
    h::raw_json(200, out)
}

/// Fills server-owned metadata on create.
fn prepare_create(ctx: &Ctx<'_>, obj: &mut Value) -> ApiResult<String> {
    let res = ctx.res;
    check_type(res, obj)?;
    let url_ns = ctx.ns().map(str::to_string);
    let meta = meta_mut(obj);
    if res.namespaced {
        match (meta.get("namespace").and_then(Value::as_str), &url_ns) {
            (Some(n), Some(u)) if !n.is_empty() && n != u => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
        if let Some(u) = &url_ns {
            meta.insert("namespace".into(), json!(u));
        }
    } else {
        meta.remove("namespace");
    }
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("selfLink");
    if obj.get("spec").is_some() {
        meta_mut(obj).insert("generation".into(), json!(1));
    } else {
        meta_mut(obj).remove("generation");
    }
    Ok(name)
}

/// Gives a `generateName` object its name. Upstream does this after
/// admission, so admission errors name the prefix (`pods "web-7d4b-"`), which
/// lets repeated failures of one controller aggregate into one event.
fn generate_name(obj: &mut Value, name: String) -> String {
    if !name.is_empty() {
        return name;
    }
    let meta = meta_mut(obj);
    match meta.get("generateName").and_then(Value::as_str) {
        Some(g) if !g.is_empty() => {
            let n = format!("{g}{}", object::random_suffix());
            meta.insert("name".into(), json!(n));
            n
        }
        _ => String::new(),
    }
}

fn invalid(res: &ResourceDef, name: &str, errs: k3rs_apimachinery::FieldErrors) -> ApiResult<()> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res, name, &errs))
    }
}

/// The namespace a namespaced object goes into must exist and not be terminating.
async fn admit_namespace(ctx: &Ctx<'_>, ns: &str) -> ApiResult<()> {
    let key = format!("/registry/namespaces/{ns}");
    let kv = match ctx.api.cache.get(&key) {
        Some(e) => Some(e),
        None => ctx
            .api
            .store
            .get(&key)
            .await?
            .and_then(|kv| Entry::decode(&kv.key, &kv.value, kv.mod_rev).map(Arc::new)),
    };
    let Some(e) = kv else {
        return Err(ApiError::not_found(
            crate::resources::find("", "v1", "namespaces").unwrap_or(ctx.res),
            ns,
        ));
    };
    let terminating = e.value().is_some_and(|v| {
        v["metadata"].get("deletionTimestamp").is_some() || v["status"]["phase"] == "Terminating"
    });
    if terminating {
        return Err(ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            ctx.res.plural,
            ctx.name()
        )));
    }
    Ok(())
}

pub async fn create(ctx: &Ctx<'_>, body: &Bytes) -> ApiResult<Resp> {
    let mut obj = decode_body(ctx.headers, body)?;
    let res = ctx.res;
    check_type(res, &mut obj)?;
    let warnings = check_fields(ctx, &mut obj)?;
    create_checked(ctx, obj, true)
        .await
        .map(|r| with_warnings(r, &warnings))
}

/// Creates a checked object; `record` is false when server-side apply has
/// already written managedFields.
async fn create_checked(ctx: &Ctx<'_>, mut obj: Value, record: bool) -> ApiResult<Resp> {
    let res = ctx.res;
    let name = prepare_create(ctx, &mut obj)?;
    if res.namespaced {
        let ns = ctx.ns().ok_or_else(ApiError::not_found_path)?.to_string();
        admit_namespace(ctx, &ns).await?;
    }
    defaults::apply_defaults(res.group, res.version, res.kind, &mut obj);
    crate::admission::mutate_create(ctx.api, res, &mut obj).await?;
    let name = generate_name(&mut obj, name);
    invalid(
        res,
        &name,
        validation::validate(res.group, res.version, res.kind, &obj, res.namespaced),
    )?;
    if record {
        managed_fields::record_update(
            &mut obj,
            None,
            ctx.type_ref(),
            list_kind,
            &ctx.field_manager(),
            None,
        );
    }
    let claims = allocate(ctx, &name, &mut obj, None).await?;
    if ctx.query.dry_run() {
        return Ok(value_resp(ctx, 201, &obj));
    }
    let key = ctx.key(&name)?;
    let bytes =
        conversion::stored_bytes(ctx.res, &obj).map_err(|e| ApiError::internal(e.to_string()))?;
    let written = ctx.api.store.create(&key, bytes).await;
    let landed = matches!(written, Ok(Cas::Done(_)));
    settle(ctx, claims, landed).await;
    match written? {
        Cas::Done(rev) => {
            meta_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
            Ok(value_resp(ctx, 201, &obj))
        }
        Cas::Failed(_) => Err(ApiError::already_exists(res, &name)),
    }
}

/// Service addresses and node ports for a Service being written (nothing for
/// other kinds).
async fn allocate(
    ctx: &Ctx<'_>,
    name: &str,
    obj: &mut Value,
    old: Option<&Value>,
) -> ApiResult<Option<allocator::Claims>> {
    if !(ctx.res.group.is_empty() && ctx.res.kind == "Service") {
        return Ok(None);
    }
    let api = ctx.api;
    match allocator::allocate(&api.store, &api.ranges, obj, old, ctx.query.dry_run()).await {
        Ok(c) => Ok(Some(c)),
        Err(allocator::AllocError::Invalid(errs)) => Err(ApiError::invalid(ctx.res, name, &errs)),
        Err(allocator::AllocError::Full(msg)) => Err(ApiError::internal(msg)),
        Err(allocator::AllocError::Store(e)) => Err(e.into()),
    }
}

/// Keeps a write's allocations when it landed, gives them back when not.
async fn settle(ctx: &Ctx<'_>, claims: Option<allocator::Claims>, landed: bool) {
    if let Some(c) = claims {
        if landed {
            c.commit(&ctx.api.store).await;
        } else {
            c.rollback(&ctx.api.store).await;
        }
    }
}

/// Frees what a Service held once it is gone from the store.
async fn released(ctx: &Ctx<'_>, obj: &Value) {
    if ctx.res.group.is_empty() && ctx.res.kind == "Service" {
        allocator::release_service(&ctx.api.store, obj).await;
    }
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// Carries server-owned fields from the stored object into the new one and
/// confines the write to its part (spec vs status).
fn merge_system_fields(res: &ResourceDef, part: Part, new: &mut Value, old: &Value) {
    let status_sub = res.has_subresource("status");
    match part {
        Part::Status => {
            // A status write changes status (and, like upstream, labels/annotations are ignored).
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(o) = merged.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            *new = merged;
        }
        Part::Main if status_sub => match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        },
        Part::Main => {}
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let m = meta_mut(new);
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
    ] {
        match old_meta.get(f) {
            Some(v) => {
                m.insert(f.into(), v.clone());
            }
            None => {
                m.remove(f);
            }
        }
    }
    m.remove("selfLink");
    let old_gen = old_meta.get("generation").and_then(Value::as_i64);
    let generation = match old_gen {
        Some(g) if !object::spec_equal(new, old) => Some(g + 1),
        Some(g) => Some(g),
        None if new.get("spec").is_some() => Some(1),
        None => None,
    };
    if let Some(g) = generation {
        meta_mut(new).insert("generation".into(), json!(g));
    }
}

/// The shared tail of update and patch: validate, write with a
/// mod_revision precondition, answer.
async fn write_update(
    ctx: &Ctx<'_>,
    mut new: Value,
    cur: &Kv,
    part: Part,
    applied: bool,
) -> ApiResult<Result<Resp, ()>> {
    let res = ctx.res;
    let name = ctx.name().to_string();
    let old: Value = serde_json::from_slice(&cur.value)
        .map_err(|e| ApiError::internal(format!("stored object cannot be decoded: {e}")))?;
    check_type(res, &mut new)?;
    if let Some(n) = meta_str(&new, "name")
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(rv) = meta_str(&new, "resourceVersion")
        && rv != cur.mod_rev.to_string()
    {
        return Err(ApiError::stale(res, &name));
    }
    merge_system_fields(res, part, &mut new, &old);
    meta_mut(&mut new).remove("resourceVersion");
    if part == Part::Main {
        if res.group.is_empty() && res.kind == "Service" {
            // Allocated IPs and ports survive an update that leaves them out.
            defaults::prepare_service_update(&mut new, &old);
        }
        defaults::apply_defaults(res.group, res.version, res.kind, &mut new);
    }
    invalid(
        res,
        &name,
        validation::validate_update(res.group, res.version, res.kind, &new, &old, res.namespaced),
    )?;
    if !applied {
        let sub = (part == Part::Status).then_some("status");
        managed_fields::record_update(
            &mut new,
            Some(&old),
            ctx.type_ref(),
            list_kind,
            &ctx.field_manager(),
            sub,
        );
    }
    let claims = if part == Part::Main {
        allocate(ctx, &name, &mut new, Some(&old)).await?
    } else {
        None
    };

    // Finalizers gone from an object being deleted: the delete completes now.
    let deleting = new["metadata"].get("deletionTimestamp").is_some();
    let finalizers_empty = new["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty);
    // A terminating namespace also waits for its spec finalizers (the
    // namespace controller's `kubernetes`), which only `finalize` removes; a
    // status write in between (the controller's progress conditions) must not
    // complete the delete while content is still being removed.
    let ns_pending = ctx.res.group.is_empty()
        && ctx.res.kind == "Namespace"
        && new["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
    if deleting && finalizers_empty && !ns_pending && !ctx.query.dry_run() {
        settle(ctx, claims, false).await;
        return match ctx.api.store.delete(&ctx.key(&name)?, cur.mod_rev).await? {
            Cas::Done(rev) => {
                released(ctx, &old).await;
                meta_mut(&mut new).insert("resourceVersion".into(), json!(rev.to_string()));
                Ok(Ok(value_resp(ctx, 200, &new)))
            }
            Cas::Failed(_) => Ok(Err(())),
        };
    }
    if new == old || ctx.query.dry_run() {
        // A no-op write keeps the stored revision, as upstream does.
        settle(ctx, claims, false).await;
        meta_mut(&mut new).insert("resourceVersion".into(), json!(cur.mod_rev.to_string()));
        return Ok(Ok(value_resp(ctx, 200, &new)));
    }
    let bytes =
        conversion::stored_bytes(ctx.res, &new).map_err(|e| ApiError::internal(e.to_string()))?;
    let written = ctx
        .api
        .store
        .update(&ctx.key(&name)?, bytes, cur.mod_rev)
        .await;
    settle(ctx, claims, matches!(written, Ok(Cas::Done(_)))).await;
    match written? {
        Cas::Done(rev) => {
            meta_mut(&mut new).insert("resourceVersion".into(), json!(rev.to_string()));
            Ok(Ok(value_resp(ctx, 200, &new)))
        }
        Cas::Failed(None) => Err(ApiError::not_found(res, &name)),
        Cas::Failed(Some(_)) => Ok(Err(())),
    }
}

pub async fn update(ctx: &Ctx<'_>, body: &Bytes, part: Part) -> ApiResult<Resp> {
    let mut new = decode_body(ctx.headers, body)?;
    check_type(ctx.res, &mut new)?;
    let warnings = check_fields(ctx, &mut new)?;
    let cur = load(ctx, ctx.name()).await?;
    match write_update(ctx, new, &cur, part, false).await? {
        Ok(r) => Ok(with_warnings(r, &warnings)),
        Err(()) => Err(ApiError::stale(ctx.res, ctx.name())),
    }
}

pub async fn patch(ctx: &Ctx<'_>, body: &Bytes, part: Part) -> ApiResult<Resp> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large());
    }
    let ct = ctx
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = PatchType::from_content_type(ct).ok_or_else(|| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"),
        )
    })?;
    let patch_doc: Value = if kind == PatchType::Apply {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
    };
    let lookup = StrategyLookup::for_kind(ctx.res.group, ctx.res.kind);
    if kind == PatchType::StrategicMerge && !lookup.is_known() {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "strategic merge patch is not supported for this resource",
        ));
    }
    // Without a resourceVersion in the patch, a concurrent write just means
    // re-applying the patch to the newer object.
    for _ in 0..8 {
        let cur = match load(ctx, ctx.name()).await {
            Ok(c) => c,
            Err(e) if e.code == 404 && kind == PatchType::Apply && part == Part::Main => {
                return create_from_apply(ctx, patch_doc).await;
            }
            Err(e) => return Err(e),
        };
        let current = served(&cur)?
            .value()
            .ok_or_else(|| ApiError::internal("stored object cannot be decoded"))?;
        let patched = match kind {
            PatchType::Json => patch::apply_json_patch(&current, &patch_doc),
            PatchType::Merge => Ok(patch::apply_merge_patch(&current, &patch_doc)),
            PatchType::StrategicMerge => {
                patch::apply_strategic_merge_patch(&current, &patch_doc, &lookup)
            }
            PatchType::Apply => server_side_apply(ctx, Some(&current), &patch_doc, &lookup),
        }
        .map_err(|e| patch_error(ctx, e))?;
        let mut patched = patched;
        check_type(ctx.res, &mut patched)?;
        let warnings = check_fields(ctx, &mut patched)?;
        match write_update(ctx, patched, &cur, part, kind == PatchType::Apply).await? {
            Ok(r) => return Ok(with_warnings(r, &warnings)),
            Err(()) if meta_str(&patch_doc, "resourceVersion").is_some() => {
                return Err(ApiError::stale(ctx.res, ctx.name()));
            }
            Err(()) => continue,
        }
    }
    Err(ApiError::stale(ctx.res, ctx.name()))
}

fn patch_error(ctx: &Ctx<'_>, e: patch::PatchError) -> ApiError {
    match e {
        patch::PatchError::Conflict(m) => match serde_json::from_str::<Value>(&m) {
            // Apply conflicts carry their causes, as upstream reports them.
            Ok(v) if v.get("causes").is_some() => {
                let mut err = ApiError::new(
                    409,
                    "Conflict",
                    v["message"].as_str().unwrap_or("conflict").to_string(),
                );
                err.details = Some(
                    json!({"name": ctx.name(), "kind": ctx.res.plural, "group": ctx.res.group, "causes": v["causes"]}),
                );
                err
            }
            _ => ApiError::conflict(ctx.res, ctx.name(), &m),
        },
        patch::PatchError::Unprocessable(m) => ApiError::new(422, "Invalid", m),
        other => ApiError::bad_request(other.to_string()),
    }
}

/// Server-side apply onto `current` (None: the object is created).
fn server_side_apply(
    ctx: &Ctx<'_>,
    current: Option<&Value>,
    doc: &Value,
    lookup: &StrategyLookup,
) -> Result<Value, patch::PatchError> {
    if doc.get("kind").is_none() || doc.get("apiVersion").is_none() {
        return Err(patch::PatchError::Invalid(
            "apply patches must set apiVersion and kind".into(),
        ));
    }
    let mut applied = doc.clone();
    if let Some(m) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    let known = lookup.is_known();
    let merge = |a: &Value, b: &Value| {
        if known {
            patch::apply_strategic_merge_patch(a, b, lookup).map_err(|e| e.to_string())
        } else {
            Ok(patch::apply_merge_patch(a, b))
        }
    };
    let force = ctx.query.flag("force");
    match managed_fields::apply(current, &applied, ctx.type_ref(), list_kind, &ctx.field_manager(), force, merge) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(c)) => Err(patch::PatchError::Conflict(serde_json::to_string(&json!({
            "message": c.message,
            "causes": c.causes.iter().map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": m, "field": f})).collect::<Vec<_>>(),
        })).unwrap_or_default())),
        Err(e) => Err(patch::PatchError::Invalid(e)),
    }
}

async fn create_from_apply(ctx: &Ctx<'_>, doc: Value) -> ApiResult<Resp> {
    let lookup = StrategyLookup::for_kind(ctx.res.group, ctx.res.kind);
    let mut obj = server_side_apply(ctx, None, &doc, &lookup).map_err(|e| patch_error(ctx, e))?;
    check_type(ctx.res, &mut obj)?;
    let warnings = check_fields(ctx, &mut obj)?;
    create_checked(ctx, obj, false)
        .await
        .map(|r| with_warnings(r, &warnings))
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    propagation_policy: Option<String>,
    orphan_dependents: Option<bool>,
    preconditions: Option<Preconditions>,
    dry_run: Option<Vec<String>>,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

fn delete_options(ctx: &Ctx<'_>, body: &Bytes) -> ApiResult<DeleteOptions> {
    let mut o: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    if let Some(g) = ctx
        .query
        .int("gracePeriodSeconds")
        .map_err(ApiError::bad_request)?
    {
        o.grace_period_seconds = Some(g);
    }
    if let Some(p) = ctx.query.get("propagationPolicy") {
        o.propagation_policy = Some(p.to_string());
    }
    if ctx.query.dry_run() {
        o.dry_run = Some(vec!["All".into()]);
    }
    if let Some(p) = &o.propagation_policy
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
        )));
    }
    Ok(o)
}

async fn delete(ctx: &Ctx<'_>, body: &Bytes) -> ApiResult<Resp> {
    let opts = delete_options(ctx, body)?;
    for _ in 0..8 {
        let cur = load(ctx, ctx.name()).await?;
        match delete_one(ctx, &opts, &cur).await? {
            Some(r) => return Ok(r),
            None => continue,
        }
    }
    Err(ApiError::stale(ctx.res, ctx.name()))
}

/// Deletes one object, or marks it for deletion when finalizers, a graceful
/// pod shutdown or a namespace teardown must happen first. None = lost a race.
async fn delete_one(ctx: &Ctx<'_>, opts: &DeleteOptions, cur: &Kv) -> ApiResult<Option<Resp>> {
    let res = ctx.res;
    let mut obj = served(cur)?
        .value()
        .ok_or_else(|| ApiError::internal("stored object cannot be decoded"))?;
    let name = meta_str(&obj, "name").unwrap_or("").to_string();
    if let Some(p) = &opts.preconditions {
        if let Some(uid) = &p.uid
            && meta_str(&obj, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::conflict(
                res,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&obj, "uid").unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = &p.resource_version
            && *rv != cur.mod_rev.to_string()
        {
            return Err(ApiError::conflict(
                res,
                &name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    cur.mod_rev
                ),
            ));
        }
    }
    let dry = opts
        .dry_run
        .as_ref()
        .is_some_and(|d| d.iter().any(|x| x == "All"));
    let mut finalizers: Vec<Value> = obj["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let policy = opts.propagation_policy.clone().or_else(|| {
        opts.orphan_dependents
            .and_then(|o| o.then(|| "Orphan".to_string()))
    });
    let already = obj["metadata"].get("deletionTimestamp").is_some();
    match policy.as_deref() {
        Some("Foreground") if !already => finalizers.push(json!("foregroundDeletion")),
        Some("Orphan") if !already => finalizers.push(json!("orphan")),
        _ => {}
    }
    let is_ns = res.group.is_empty() && res.kind == "Namespace";
    let grace = if res.group.is_empty() && res.kind == "Pod" {
        let g = opts
            .grace_period_seconds
            .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30);
        // Pods never scheduled or already finished have nothing to stop.
        let bound = obj["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let done = matches!(
            obj["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        if bound && !done { g.max(0) } else { 0 }
    } else {
        0
    };
    let pending = !finalizers.is_empty() || grace > 0 || is_ns;
    if pending {
        if already && grace == 0 && !is_ns && finalizers.is_empty() {
            // fall through to the real delete below
        } else {
            let m = meta_mut(&mut obj);
            if !already || grace > 0 {
                m.insert("deletionTimestamp".into(), json!(object::rfc3339_in(grace)));
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            if !finalizers.is_empty() {
                m.insert("finalizers".into(), json!(finalizers));
            }
            if is_ns {
                obj["status"]["phase"] = json!("Terminating");
            }
            m_remove_rv(&mut obj);
            if dry {
                return Ok(Some(value_resp(ctx, 200, &obj)));
            }
            let bytes = conversion::stored_bytes(ctx.res, &obj)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            return match ctx.api.store.update(&cur.key, bytes, cur.mod_rev).await? {
                Cas::Done(rev) => {
                    meta_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
                    Ok(Some(value_resp(ctx, 200, &obj)))
                }
                Cas::Failed(None) => Err(ApiError::not_found(res, &name)),
                Cas::Failed(Some(_)) => Ok(None),
            };
        }
    }
    if dry {
        return Ok(Some(value_resp(ctx, 200, &obj)));
    }
    match ctx.api.store.delete(&cur.key, cur.mod_rev).await? {
        Cas::Done(_) => {
            released(ctx, &obj).await;
            Ok(Some(value_resp(ctx, 200, &obj)))
        }
        Cas::Failed(None) => Err(ApiError::not_found(res, &name)),
        Cas::Failed(Some(_)) => Ok(None),
    }
}

fn m_remove_rv(obj: &mut Value) {
    meta_mut(obj).remove("resourceVersion");
}

async fn delete_collection(ctx: &Ctx<'_>, body: &Bytes) -> ApiResult<Resp> {
    let opts = delete_options(ctx, body)?;
    let filter = Filter::from_ctx(ctx)?;
    let rev = ctx.api.store.current_rev().await?;
    ctx.api.cache.wait_for(rev, CACHE_WAIT).await;
    let (items, _) = ctx.api.cache.list(&filter.namespace_prefix);
    let mut deleted = Vec::new();
    for e in items.into_iter().filter(|e| filter.matches(e)) {
        let Some(kv) = ctx.api.store.get(&e.key).await? else {
            continue;
        };
        let kv = conversion::served_kv(ctx.res, kv);
        let sub = Ctx {
            api: ctx.api,
            user: ctx.user,
            res: ctx.res,
            info: RequestInfo {
                name: Some(e.name.to_string()),
                ..ctx.info.clone()
            },
            query: ctx.query.clone(),
            headers: ctx.headers,
        };
        if delete_one(&sub, &opts, &kv).await?.is_some() {
            deleted.push(e);
        }
    }
    let rev = ctx.api.cache.rev();
    Ok(list_resp(ctx, deleted.iter().map(|e| &**e), rev, None))
}

/// Helpers for subresources that read-modify-write the main object.
pub async fn load_value(ctx: &Ctx<'_>) -> ApiResult<(Kv, Value)> {
    let kv = load(ctx, ctx.name()).await?;
    let v = served(&kv)?
        .value()
        .ok_or_else(|| ApiError::internal("stored object cannot be decoded"))?;
    Ok((kv, v))
}

/// Writes `new` over `cur` (already validated by the caller).
pub async fn store_update(ctx: &Ctx<'_>, mut new: Value, cur: &Kv) -> ApiResult<Option<Value>> {
    meta_mut(&mut new).remove("resourceVersion");
    let bytes =
        conversion::stored_bytes(ctx.res, &new).map_err(|e| ApiError::internal(e.to_string()))?;
    match ctx.api.store.update(&cur.key, bytes, cur.mod_rev).await? {
        Cas::Done(rev) => {
            meta_mut(&mut new).insert("resourceVersion".into(), json!(rev.to_string()));
            Ok(Some(new))
        }
        Cas::Failed(None) => Err(ApiError::not_found(ctx.res, ctx.name())),
        Cas::Failed(Some(_)) => Ok(None),
    }
}

pub fn empty_map() -> Map<String, Value> {
    Map::new()
}
