//! Image pulling policy around CRI `PullImage`: which pull policy applies,
//! the per-image back-off after a failed pull (kubelet's `ImagePullBackOff`:
//! 10 s doubling to 5 min), and registry credentials from the pod's
//! `imagePullSecrets` (`kubernetes.io/dockerconfigjson` and the older
//! `kubernetes.io/dockercfg`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, Secret};

use crate::cri::CriError;
use crate::cri::v1::AuthConfig;

/// First delay after a failed pull and its cap (kubelet's image back-off).
pub const PULL_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const PULL_BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// The container's `imagePullPolicy`, or upstream's default for it: `Always`
/// for `:latest` or an untagged image, `IfNotPresent` otherwise.
pub fn pull_policy(c: &Container) -> PullPolicy {
    let image = c.image.as_deref().unwrap_or_default();
    match c.image_pull_policy.as_deref() {
        Some("Always") => PullPolicy::Always,
        Some("Never") => PullPolicy::Never,
        Some("IfNotPresent") => PullPolicy::IfNotPresent,
        _ => {
            let last = image.rsplit('/').next().unwrap_or(image);
            let latest = !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"));
            if latest {
                PullPolicy::Always
            } else {
                PullPolicy::IfNotPresent
            }
        }
    }
}

/// A failed image pull and how long to wait before the next one.
#[derive(Debug, Clone)]
struct Failure {
    at: Instant,
    delay: Duration,
}

/// Back-off per pod and image, shared by every pod worker. Kubelet keys it
/// the same way, so one pod's bad image never slows another pod down.
#[derive(Debug, Clone, Default)]
pub struct PullBackoff {
    failures: Arc<Mutex<HashMap<String, Failure>>>,
}

fn backoff_key(pod_uid: &str, image: &str) -> String {
    format!("{pod_uid}_{image}")
}

impl PullBackoff {
    /// Time left before `image` may be pulled again for this pod.
    pub fn remaining(&self, pod_uid: &str, image: &str, now: Instant) -> Option<Duration> {
        let m = self.failures.lock().ok()?;
        let f = m.get(&backoff_key(pod_uid, image))?;
        let elapsed = now.saturating_duration_since(f.at);
        (elapsed < f.delay).then(|| f.delay - elapsed)
    }

    /// Records a failed pull: the first waits 10 s, each next one twice as
    /// long up to 5 min; a failure long after the last one starts over.
    pub fn failed(&self, pod_uid: &str, image: &str, now: Instant) -> Duration {
        let Ok(mut m) = self.failures.lock() else {
            return PULL_BACKOFF_INITIAL;
        };
        // Entries this old would start over anyway: drop them so pods that
        // are gone do not leave their keys behind.
        m.retain(|_, f| now.saturating_duration_since(f.at) <= 2 * PULL_BACKOFF_MAX);
        let key = backoff_key(pod_uid, image);
        let delay = match m.get(&key) {
            Some(f) => (f.delay * 2).min(PULL_BACKOFF_MAX),
            None => PULL_BACKOFF_INITIAL,
        };
        m.insert(key, Failure { at: now, delay });
        delay
    }

    /// A pull worked: the next failure starts at 10 s again.
    pub fn succeeded(&self, pod_uid: &str, image: &str) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(&backoff_key(pod_uid, image));
        }
    }
}

/// One registry login from a pull secret. `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The key in the docker config (`registry.example.com`,
    /// `https://index.docker.io/v1/`, `*.example.com/team`).
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credential {
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            username: self.username.clone(),
            password: self.password.clone(),
            // Left empty as kubelet does: containerd would use it to limit
            // the login to that exact host (and wants a URL there), which
            // breaks logins used through a mirror.
            ..Default::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullSecretError {
    #[error("secret {0:?} has no .dockerconfigjson or .dockercfg key")]
    NoConfig(String),
    #[error("secret {name:?}: {message}")]
    Invalid { name: String, message: String },
}

#[derive(serde::Deserialize)]
struct DockerEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// base64 of `user:password`, what `docker login` writes.
    #[serde(default)]
    auth: String,
}

#[derive(serde::Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: HashMap<String, DockerEntry>,
}

/// The logins in a pull secret.
pub fn credentials(secret: &Secret) -> Result<Vec<Credential>, PullSecretError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let data = secret.data.clone().unwrap_or_default();
    let invalid = |message: String| PullSecretError::Invalid {
        name: name.clone(),
        message,
    };
    let entries: HashMap<String, DockerEntry> = if let Some(v) = data.get(".dockerconfigjson") {
        serde_json::from_slice::<DockerConfigJson>(&v.0)
            .map_err(|e| invalid(format!(".dockerconfigjson: {e}")))?
            .auths
    } else if let Some(v) = data.get(".dockercfg") {
        serde_json::from_slice(&v.0).map_err(|e| invalid(format!(".dockercfg: {e}")))?
    } else {
        return Err(PullSecretError::NoConfig(name));
    };
    let mut out = Vec::new();
    for (registry, e) in entries {
        let (username, password) = if e.username.is_empty() && !e.auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(e.auth.trim())
                .map_err(|err| invalid(format!("auth for {registry}: {err}")))?;
            let text = String::from_utf8(raw)
                .map_err(|_| invalid(format!("auth for {registry} is not UTF-8")))?;
            match text.split_once(':') {
                Some((u, p)) => (u.to_string(), p.to_string()),
                None => return Err(invalid(format!("auth for {registry} is not user:password"))),
            }
        } else {
            (e.username, e.password)
        };
        out.push(Credential {
            registry,
            username,
            password,
        });
    }
    Ok(out)
}

/// `host` and `path` of an image reference, with Docker Hub's defaults
/// (`busybox` → `docker.io`, `library/busybox`).
fn image_location(image: &str) -> (String, String) {
    let name = image.split('@').next().unwrap_or(image);
    let (first, rest) = match name.split_once('/') {
        Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" => {
            (f.to_string(), r.to_string())
        }
        Some(_) => ("docker.io".to_string(), name.to_string()),
        None => ("docker.io".to_string(), format!("library/{name}")),
    };
    // Drop the tag from the last path segment.
    let path = match rest.rsplit_once('/') {
        Some((dir, last)) => format!("{dir}/{}", last.split(':').next().unwrap_or(last)),
        None => rest.split(':').next().unwrap_or(&rest).to_string(),
    };
    (first, path)
}

/// Docker Hub goes by several names in docker configs.
fn normalize_host(h: &str) -> &str {
    match h {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        other => other,
    }
}

/// Whether `host` matches the pattern (`*` stands for one DNS label).
fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (normalize_host(pattern), normalize_host(host));
    let (p_name, p_port) = pattern.split_once(':').unwrap_or((pattern, ""));
    let (h_name, h_port) = host.split_once(':').unwrap_or((host, ""));
    if p_port != h_port {
        return false;
    }
    let p: Vec<&str> = p_name.split('.').collect();
    let h: Vec<&str> = h_name.split('.').collect();
    p.len() == h.len() && p.iter().zip(&h).all(|(p, h)| *p == "*" || p == h)
}

/// How specific a match is (a longer path wins), or None when `key` does
/// not cover `image`.
fn match_len(key: &str, host: &str, path: &str) -> Option<usize> {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (k_host, k_path) = k.split_once('/').unwrap_or((k, ""));
    // `https://index.docker.io/v1/` is Docker Hub itself, not a path on it.
    let k_path = if normalize_host(k_host) == "docker.io" && k_path.trim_end_matches('/') == "v1" {
        ""
    } else {
        k_path.trim_end_matches('/')
    };
    if !host_matches(k_host, host) {
        return None;
    }
    if !k_path.is_empty() && path != k_path && !path.starts_with(&format!("{k_path}/")) {
        return None;
    }
    Some(k_host.len() + k_path.len())
}

/// The credentials that apply to `image`, most specific first.
pub fn for_image<'a>(creds: &'a [Credential], image: &str) -> Vec<&'a Credential> {
    let (host, path) = image_location(image);
    let mut hits: Vec<(usize, &Credential)> = creds
        .iter()
        .filter_map(|c| match_len(&c.registry, &host, &path).map(|n| (n, c)))
        .collect();
    hits.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    hits.into_iter().map(|(_, c)| c).collect()
}

/// The runtime's error as kubelet words it (`rpc error: code = NotFound desc = ...`).
pub fn pull_error_message(e: &CriError) -> String {
    match e {
        CriError::Rpc { status, .. } => format!(
            "rpc error: code = {:?} desc = {}",
            status.code(),
            status.message()
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn container(image: &str, policy: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn default_policies() {
        assert_eq!(pull_policy(&container("busybox", None)), PullPolicy::Always);
        assert_eq!(
            pull_policy(&container("busybox:latest", None)),
            PullPolicy::Always
        );
        assert_eq!(
            pull_policy(&container("localhost:5000/busybox", None)),
            PullPolicy::Always
        );
        assert_eq!(
            pull_policy(&container("localhost:5000/busybox:1", None)),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            pull_policy(&container("busybox@sha256:abc", None)),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            pull_policy(&container("busybox:1", Some("Never"))),
            PullPolicy::Never
        );
    }

    #[test]
    fn backoff_doubles_per_pod_and_image_to_five_minutes() {
        let b = PullBackoff::default();
        let t0 = Instant::now();
        assert_eq!(b.remaining("u", "img", t0), None);
        assert_eq!(b.failed("u", "img", t0), Duration::from_secs(10));
        assert_eq!(
            b.remaining("u", "img", t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        // Another pod with the same image is not held back.
        assert_eq!(b.remaining("v", "img", t0), None);
        assert_eq!(b.remaining("u", "img", t0 + Duration::from_secs(10)), None);
        let mut t = t0;
        let mut delays = Vec::new();
        for _ in 0..6 {
            t += Duration::from_secs(11);
            delays.push(b.failed("u", "img", t).as_secs());
        }
        assert_eq!(delays, vec![20, 40, 80, 160, 300, 300]);
        b.succeeded("u", "img");
        assert_eq!(b.failed("u", "img", t), Duration::from_secs(10));
        // Long after the last failure the back-off starts over.
        let later = t + Duration::from_secs(3600);
        assert_eq!(b.failed("u", "img", later), Duration::from_secs(10));
    }

    fn secret(key: &str, json: serde_json::Value) -> Secret {
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("regcred".into()),
                ..Default::default()
            },
            data: Some(
                [(key.to_string(), ByteString(json.to_string().into_bytes()))]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn dockerconfigjson_and_dockercfg() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret:x");
        let s = secret(
            ".dockerconfigjson",
            serde_json::json!({"auths": {
                "reg.example.com:5000": {"auth": auth},
                "https://index.docker.io/v1/": {"username": "alice", "password": "pw"},
            }}),
        );
        let mut creds = credentials(&s).unwrap();
        creds.sort_by(|a, b| a.registry.cmp(&b.registry));
        assert_eq!(creds[1].username, "bob");
        assert_eq!(creds[1].password, "s3cret:x");
        assert!(!format!("{:?}", creds[1]).contains("s3cret"));
        let hub = for_image(&creds, "busybox:1");
        assert_eq!(hub.len(), 1);
        assert_eq!(hub[0].username, "alice");
        assert_eq!(
            for_image(&creds, "reg.example.com:5000/team/app:2")[0].username,
            "bob"
        );
        assert!(for_image(&creds, "reg.example.com/team/app:2").is_empty());
        let old = secret(
            ".dockercfg",
            serde_json::json!({"reg.example.com": {"username": "u", "password": "p"}}),
        );
        assert_eq!(credentials(&old).unwrap()[0].username, "u");
        let bad = secret(".dockerconfigjson", serde_json::json!("nope"));
        assert!(
            credentials(&bad)
                .unwrap_err()
                .to_string()
                .contains("regcred")
        );
    }

    #[test]
    fn matching_prefers_the_longest_key() {
        let c = |r: &str, u: &str| Credential {
            registry: r.into(),
            username: u.into(),
            password: String::new(),
        };
        let creds = vec![
            c("*.example.com", "wild"),
            c("reg.example.com/team", "team"),
            c("reg.example.com/other", "other"),
        ];
        let names: Vec<_> = for_image(&creds, "reg.example.com/team/app:1")
            .iter()
            .map(|c| c.username.as_str())
            .collect();
        assert_eq!(names, vec!["team", "wild"]);
        assert!(for_image(&creds, "a.b.example.com/x").is_empty());
        assert_eq!(for_image(&creds, "x.example.com/app")[0].username, "wild");
    }
}
