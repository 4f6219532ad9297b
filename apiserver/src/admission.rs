//! Built-in mutating admission on create: what upstream's admission chain
//! and registry strategies fill in before validation.

use serde_json::{Value, json};

use crate::Api;
use crate::resources::ResourceDef;
use crate::status::ApiResult;

pub async fn mutate_create(api: &Api, res: &ResourceDef, obj: &mut Value) -> ApiResult<()> {
    match (res.group, res.kind) {
        ("", "Pod") => {
            // ServiceAccount admission: every pod runs as some service account.
            if obj["spec"]["serviceAccountName"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                obj["spec"]["serviceAccountName"] = json!("default");
            }
            if obj["spec"]["serviceAccount"].is_null() {
                obj["spec"]["serviceAccount"] = obj["spec"]["serviceAccountName"].clone();
            }
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            crate::serviceaccount::admit_pod(api, &ns, obj).await?;
            // A new pod starts Pending whatever the client sent as status.
            obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(&obj["spec"])});
        }
        ("", "Namespace") => {
            obj["status"] = json!({"phase": "Active"});
        }
        _ => {}
    }
    Ok(())
}

/// Guaranteed when every container has equal limits and requests for cpu and
/// memory, BestEffort when none sets any, Burstable otherwise.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            let (q, l) = (req.get(r), lim.get(r));
            if q.is_some() || l.is_some() {
                any = true;
            }
            match (q, l) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}
