//! Request parsing: which resource a URL names and the query parameters the
//! REST verbs take.

use std::collections::HashMap;

/// What an API URL addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestInfo {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The deprecated `/watch/` path prefix.
    pub watch_path: bool,
}

/// Parses `/api/v1/...` and `/apis/<g>/<v>/...` resource paths; None for
/// anything else (discovery and non-resource paths are handled by the caller).
pub fn parse_path(path: &str) -> Option<RequestInfo> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return None,
    };
    let mut info = RequestInfo {
        group: group.to_string(),
        version: version.to_string(),
        ..Default::default()
    };
    let mut rest: Vec<String> = rest.iter().map(|s| percent_decode(s)).collect();
    if rest.first().map(String::as_str) == Some("watch") {
        info.watch_path = true;
        rest.remove(0);
    }
    if rest.iter().any(String::is_empty) {
        return None;
    }
    // `namespaces/<ns>/<resource>...` scopes a namespaced resource, unless it is
    // the namespace object itself (`namespaces/<name>[/status|finalize]`).
    if rest.len() >= 3
        && rest[0] == "namespaces"
        && !matches!(rest[2].as_str(), "status" | "finalize")
    {
        info.namespace = Some(rest[1].clone());
        rest.drain(..2);
    }
    match rest.as_slice() {
        [r] => info.resource = r.clone(),
        [r, n] => {
            info.resource = r.clone();
            info.name = Some(n.clone());
        }
        [r, n, s] => {
            info.resource = r.clone();
            info.name = Some(n.clone());
            info.subresource = Some(s.clone());
        }
        // `pods/<name>/proxy/<path...>` keeps the tail for the proxy.
        [r, n, s, ..] if s == "proxy" => {
            info.resource = r.clone();
            info.name = Some(n.clone());
            info.subresource = Some(s.clone());
        }
        _ => return None,
    }
    Some(info)
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Query parameters, decoded; repeated keys keep the last value.
#[derive(Debug, Default, Clone)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        let mut m = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(percent_decode(k), percent_decode(v));
        }
        Self(m)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.0.get(k).map(String::as_str), Some("true" | "1"))
    }

    pub fn int(&self, k: &str) -> Result<Option<i64>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("invalid value for {k}: {v:?} is not an integer")),
        }
    }

    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resource_paths() {
        let i = parse_path("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            (
                i.namespace.as_deref(),
                i.resource.as_str(),
                i.name.as_deref(),
                i.subresource.as_deref()
            ),
            (Some("default"), "pods", Some("web"), Some("status"))
        );
        let i = parse_path("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(
            (i.namespace, i.resource.as_str(), i.name.as_deref()),
            (None, "namespaces", Some("kube-system"))
        );
        let i = parse_path("/api/v1/namespaces/x/finalize").unwrap();
        assert_eq!(
            (i.resource.as_str(), i.subresource.as_deref()),
            ("namespaces", Some("finalize"))
        );
        let i = parse_path("/apis/apps/v1/watch/namespaces/a/deployments").unwrap();
        assert!(i.watch_path);
        assert_eq!(i.group, "apps");
        let i = parse_path("/api/v1/pods").unwrap();
        assert_eq!((i.namespace, i.resource.as_str()), (None, "pods"));
        assert!(parse_path("/api/v1").is_none());
        assert!(parse_path("/apis/apps").is_none());
        let q = Query::parse(Some("labelSelector=app%3Dweb&watch=1&limit=5"));
        assert_eq!(q.get("labelSelector"), Some("app=web"));
        assert!(q.flag("watch"));
        assert_eq!(q.int("limit").unwrap(), Some(5));
    }
}
