//! Who may use the kubelet API: kubelet's `--authorization-mode=Webhook`.
//! The client certificate names the user (CN) and groups (O); each request
//! is mapped to attributes on the `nodes` resource and the API server is
//! asked with a SubjectAccessReview. Answers are cached (allowed 5 min,
//! denied 30 s, as kubelet does) so a log stream or stats scrape does not
//! cost a round trip per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::Method;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};

pub const ALLOW_TTL: Duration = Duration::from_secs(300);
pub const DENY_TTL: Duration = Duration::from_secs(30);
/// Cached answers kept at most; expired ones are swept when it fills.
const CACHE_MAX: usize = 4096;

/// An authenticated client of the kubelet API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// The user a verified client certificate (DER) stands for; every
    /// certificate-authenticated user is also `system:authenticated`.
    pub fn from_cert(der: &[u8]) -> Option<Self> {
        let (cn, mut groups) = k3rs_common::pki::subject_of(der)?;
        if cn.is_empty() {
            return None;
        }
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Some(Self { name: cn, groups })
    }
}

/// What a request asks to do, in kubelet's terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub user: User,
    pub verb: &'static str,
    pub subresource: &'static str,
    pub node: String,
}

impl Attributes {
    /// Kubelet's mapping: the HTTP method gives the verb (a streaming
    /// upgrade is a `create` whatever its method), the path the subresource.
    pub fn of(user: User, node: &str, method: &Method, path: &str, upgrade: bool) -> Self {
        let verb = if upgrade {
            "create"
        } else {
            match *method {
                Method::POST => "create",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "get",
            }
        };
        let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
        let subresource = if under("/stats") {
            "stats"
        } else if under("/metrics") {
            "metrics"
        } else if under("/logs") {
            "log"
        } else if under("/spec") {
            "spec"
        } else {
            "proxy"
        };
        Self {
            user,
            verb,
            subresource,
            node: node.to_string(),
        }
    }

    /// Kubelet's 403 text.
    pub fn forbidden(&self) -> String {
        format!(
            "Forbidden (user={}, verb={}, resource=nodes, subresource(s)=[{}])\n",
            self.user.name, self.verb, self.subresource
        )
    }

    /// Kubelet's 500 text when the API server could not be asked.
    pub fn error(&self) -> String {
        format!(
            "Authorization error (user={}, verb={}, resource=nodes, subresource(s)=[{}])\n",
            self.user.name, self.verb, self.subresource
        )
    }
}

/// Asks whether attributes are allowed: `Ok(allowed)` or why it could not tell.
pub trait Reviewer: Send + Sync {
    fn review<'a>(&'a self, a: &'a Attributes) -> BoxFuture<'a, Result<bool, String>>;
}

/// The API server's SubjectAccessReview.
pub struct ApiReviewer(pub kube::Client);

impl Reviewer for ApiReviewer {
    fn review<'a>(&'a self, a: &'a Attributes) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let sar = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(a.user.name.clone()),
                    groups: Some(a.user.groups.clone()),
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some(a.verb.into()),
                        group: Some(String::new()),
                        version: Some("v1".into()),
                        resource: Some("nodes".into()),
                        subresource: Some(a.subresource.into()),
                        name: Some(a.node.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.0.clone());
            let out = api
                .create(&kube::api::PostParams::default(), &sar)
                .await
                .map_err(|e| e.to_string())?;
            Ok(out.status.is_some_and(|s| s.allowed))
        })
    }
}

/// Reviews with a TTL cache in front.
pub struct Authorizer {
    reviewer: Arc<dyn Reviewer>,
    cache: Mutex<HashMap<Attributes, (bool, Instant)>>,
}

impl Authorizer {
    pub fn new(reviewer: Arc<dyn Reviewer>) -> Self {
        Self {
            reviewer,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn allowed(&self, a: &Attributes) -> Result<bool, String> {
        let now = Instant::now();
        if let Some(&(allowed, until)) = self.lock().get(a)
            && until > now
        {
            return Ok(allowed);
        }
        // Errors are not cached: the next request asks again.
        let allowed = self.reviewer.review(a).await?;
        let ttl = if allowed { ALLOW_TTL } else { DENY_TTL };
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(a.clone(), (allowed, now + ttl));
        Ok(allowed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Attributes, (bool, Instant)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn alice() -> User {
        User {
            name: "alice".into(),
            groups: vec!["system:authenticated".into()],
        }
    }

    #[test]
    fn maps_requests_like_kubelet() {
        let a = |m: Method, p: &str, up: bool| {
            let a = Attributes::of(alice(), "n1", &m, p, up);
            (a.verb, a.subresource)
        };
        assert_eq!(a(Method::GET, "/pods", false), ("get", "proxy"));
        assert_eq!(
            a(Method::GET, "/containerLogs/ns/p/c", false),
            ("get", "proxy")
        );
        assert_eq!(a(Method::GET, "/stats/summary", false), ("get", "stats"));
        assert_eq!(a(Method::GET, "/metrics", false), ("get", "metrics"));
        assert_eq!(
            a(Method::GET, "/metrics/resource", false),
            ("get", "metrics")
        );
        assert_eq!(a(Method::GET, "/metricsx", false), ("get", "proxy"));
        assert_eq!(a(Method::GET, "/logs/syslog", false), ("get", "log"));
        assert_eq!(a(Method::GET, "/spec", false), ("get", "spec"));
        assert_eq!(a(Method::POST, "/exec/ns/p/c", false), ("create", "proxy"));
        assert_eq!(a(Method::GET, "/exec/ns/p/c", true), ("create", "proxy"));
        assert_eq!(a(Method::PUT, "/x", false), ("update", "proxy"));
        assert_eq!(a(Method::PATCH, "/x", false), ("patch", "proxy"));
        assert_eq!(a(Method::DELETE, "/x", false), ("delete", "proxy"));
        let at = Attributes::of(alice(), "n1", &Method::GET, "/pods", false);
        assert_eq!(
            at.forbidden(),
            "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[proxy])\n"
        );
    }

    struct Counting {
        calls: AtomicUsize,
        answer: Mutex<Result<bool, String>>,
    }

    impl Reviewer for Counting {
        fn review<'a>(&'a self, _: &'a Attributes) -> BoxFuture<'a, Result<bool, String>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let a = self.answer.lock().unwrap().clone();
            Box::pin(async move { a })
        }
    }

    #[tokio::test]
    async fn caches_allowed_longer_than_denied_and_never_errors() {
        let r = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            answer: Mutex::new(Err("down".into())),
        });
        let authz = Authorizer::new(r.clone());
        let a = Attributes::of(alice(), "n1", &Method::GET, "/pods", false);
        assert!(authz.allowed(&a).await.is_err());
        assert!(authz.allowed(&a).await.is_err());
        assert_eq!(r.calls.load(Ordering::SeqCst), 2, "errors are not cached");

        *r.answer.lock().unwrap() = Ok(false);
        assert_eq!(authz.allowed(&a).await, Ok(false));
        *r.answer.lock().unwrap() = Ok(true);
        assert_eq!(authz.allowed(&a).await, Ok(false), "denial cached");
        assert_eq!(r.calls.load(Ordering::SeqCst), 3);
        // Age the entries by hand rather than sleeping for minutes.
        expire(&authz);
        assert_eq!(authz.allowed(&a).await, Ok(true));
        *r.answer.lock().unwrap() = Ok(false);
        assert_eq!(authz.allowed(&a).await, Ok(true), "allow cached");
        assert_eq!(r.calls.load(Ordering::SeqCst), 4);
        // Other attributes are asked separately.
        let b = Attributes::of(alice(), "n1", &Method::GET, "/stats/summary", false);
        assert_eq!(authz.allowed(&b).await, Ok(false));
        assert_eq!(r.calls.load(Ordering::SeqCst), 5);
        let cache = authz.lock();
        let (_, until) = cache[&a];
        let (_, until_b) = cache[&b];
        assert!(
            until > until_b + Duration::from_secs(200),
            "allow TTL > deny TTL"
        );
    }

    fn expire(authz: &Authorizer) {
        let past = Instant::now() - Duration::from_secs(1);
        for v in authz.lock().values_mut() {
            v.1 = past;
        }
    }
}
