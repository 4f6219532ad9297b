//! `as=Table` responses for `kubectl get`: columns and cells come from the
//! per-kind printers in k3rs-apimachinery; this wraps them in a `Table`.

use serde_json::{Value, json};

use crate::request::Query;
use crate::resources::ResourceDef;

pub fn table(res: &ResourceDef, objs: &[Value], rev: i64, q: &Query) -> Value {
    let now = chrono::Utc::now().timestamp();
    let include = q.get("includeObject").unwrap_or("PartialObjectMetadata");
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let cells = k3rs_apimachinery::table::row_cells(res.group, res.kind, o, now);
            let mut row = json!({"cells": cells});
            match include {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
                    })
                }
            }
            row
        })
        .collect();
    let mut meta = json!({});
    if rev > 0 {
        meta["resourceVersion"] = json!(rev.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": k3rs_apimachinery::table::column_definitions(res.group, res.kind),
        "rows": rows,
    })
}
