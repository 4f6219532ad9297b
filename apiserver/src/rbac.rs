//! RBAC evaluation for access reviews: does any (Cluster)RoleBinding give
//! this user or one of its groups a rule that covers the request? Webhook
//! authorizers (the kubelet API) ask through SubjectAccessReview and need a
//! real answer. `system:masters` is allowed everything, as upstream's
//! privileged group. Roles and bindings are read from the watch cache.

use serde_json::Value;

use crate::watch_cache::WatchCache;

/// The request attributes a review asks about.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub user: String,
    pub groups: Vec<String>,
    pub verb: String,
    /// `Some`: a resource request; `None`: a non-resource URL (`path`).
    pub resource: Option<ResourceAttrs>,
    pub path: String,
}

#[derive(Debug, Clone, Default)]
pub struct ResourceAttrs {
    pub namespace: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

pub const SUPERUSER_GROUP: &str = "system:masters";

/// `(allowed, reason)` for `a`.
pub fn authorize(cache: &WatchCache, a: &Attributes) -> (bool, String) {
    if a.groups.iter().any(|g| g == SUPERUSER_GROUP) {
        return (true, format!("allowed by the {SUPERUSER_GROUP} group"));
    }
    let (crbs, _) = cache.list("/registry/clusterrolebindings/");
    for b in crbs.iter().filter_map(|e| e.value()) {
        if let Some(reason) = binding_allows(cache, &b, None, a) {
            return (true, reason);
        }
    }
    if let Some(r) = &a.resource
        && !r.namespace.is_empty()
    {
        let (rbs, _) = cache.list(&format!("/registry/rolebindings/{}/", r.namespace));
        for b in rbs.iter().filter_map(|e| e.value()) {
            if let Some(reason) = binding_allows(cache, &b, Some(&r.namespace), a) {
                return (true, reason);
            }
        }
    }
    (false, String::new())
}

/// Why `binding` allows `a`, if it does; `ns` is the namespace of a RoleBinding.
fn binding_allows(
    cache: &WatchCache,
    binding: &Value,
    ns: Option<&str>,
    a: &Attributes,
) -> Option<String> {
    let subject = binding["subjects"]
        .as_array()?
        .iter()
        .find(|s| subject_matches(s, ns, a))?;
    let kind = binding["roleRef"]["kind"].as_str().unwrap_or("");
    let role = binding["roleRef"]["name"].as_str().unwrap_or("");
    let key = match (kind, ns) {
        ("ClusterRole", _) => format!("/registry/clusterroles/{role}"),
        ("Role", Some(ns)) => format!("/registry/roles/{ns}/{role}"),
        _ => return None,
    };
    let role_obj = cache.get(&key)?.value()?;
    let rules = role_obj["rules"].as_array()?;
    if !rules.iter().any(|r| rule_allows(r, a)) {
        return None;
    }
    let bname = binding["metadata"]["name"].as_str().unwrap_or("");
    let bkind = match ns {
        Some(ns) => format!("RoleBinding \"{bname}/{ns}\""),
        None => format!("ClusterRoleBinding \"{bname}\""),
    };
    Some(format!(
        "RBAC: allowed by {bkind} of {kind} \"{role}\" to {} \"{}\"",
        subject["kind"].as_str().unwrap_or(""),
        subject["name"].as_str().unwrap_or("")
    ))
}

fn subject_matches(s: &Value, binding_ns: Option<&str>, a: &Attributes) -> bool {
    let name = s["name"].as_str().unwrap_or("");
    match s["kind"].as_str().unwrap_or("") {
        "User" => name == a.user,
        "Group" => a.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = s["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .or(binding_ns)
                .unwrap_or("");
            a.user == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !strings(&rule["verbs"]).any(|v| v == "*" || v == a.verb) {
        return false;
    }
    match &a.resource {
        Some(r) => {
            let combined = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let any_sub = format!("*/{}", r.subresource);
            let names: Vec<&str> = strings(&rule["resourceNames"]).collect();
            strings(&rule["apiGroups"]).any(|g| g == "*" || g == r.group)
                && strings(&rule["resources"]).any(|res| {
                    res == "*" || res == combined || (!r.subresource.is_empty() && res == any_sub)
                })
                && (names.is_empty() || names.contains(&r.name.as_str()))
        }
        None => strings(&rule["nonResourceURLs"]).any(|u| {
            u == "*"
                || u == a.path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| a.path.starts_with(prefix))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, resource: &str, sub: &str) -> Attributes {
        Attributes {
            user: "alice".into(),
            groups: vec!["system:authenticated".into()],
            verb: verb.into(),
            resource: Some(ResourceAttrs {
                namespace: String::new(),
                group: String::new(),
                resource: resource.into(),
                subresource: sub.into(),
                name: "n1".into(),
            }),
            path: String::new(),
        }
    }

    #[test]
    fn rules_match_verbs_resources_subresources_and_names() {
        let rule = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["nodes/proxy"]});
        assert!(rule_allows(&rule, &attrs("get", "nodes", "proxy")));
        assert!(!rule_allows(&rule, &attrs("create", "nodes", "proxy")));
        assert!(!rule_allows(&rule, &attrs("get", "nodes", "stats")));
        assert!(!rule_allows(&rule, &attrs("get", "nodes", "")));
        let any_sub = json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/proxy"]});
        assert!(rule_allows(&any_sub, &attrs("create", "nodes", "proxy")));
        assert!(!rule_allows(&any_sub, &attrs("create", "nodes", "")));
        let named = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["nodes/stats"], "resourceNames": ["n2"]});
        assert!(!rule_allows(&named, &attrs("get", "nodes", "stats")));
        let wrong_group = json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["*"]});
        assert!(!rule_allows(&wrong_group, &attrs("get", "nodes", "proxy")));
        let urls = json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/metrics/*"]});
        let mut nr = attrs("get", "", "");
        nr.resource = None;
        nr.path = "/metrics/cadvisor".into();
        assert!(rule_allows(&urls, &nr));
        nr.path = "/readyz".into();
        assert!(!rule_allows(&urls, &nr));
    }

    #[test]
    fn subjects_match_users_groups_and_service_accounts() {
        let mut a = attrs("get", "nodes", "proxy");
        assert!(subject_matches(
            &json!({"kind": "User", "name": "alice"}),
            None,
            &a
        ));
        assert!(!subject_matches(
            &json!({"kind": "User", "name": "bob"}),
            None,
            &a
        ));
        assert!(subject_matches(
            &json!({"kind": "Group", "name": "system:authenticated"}),
            None,
            &a
        ));
        a.user = "system:serviceaccount:ns1:sa".into();
        assert!(subject_matches(
            &json!({"kind": "ServiceAccount", "name": "sa"}),
            Some("ns1"),
            &a
        ));
        assert!(!subject_matches(
            &json!({"kind": "ServiceAccount", "name": "sa", "namespace": "ns2"}),
            Some("ns1"),
            &a
        ));
    }
}
