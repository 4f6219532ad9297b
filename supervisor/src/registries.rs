//! `registries.yaml` (K3s format: `mirrors:` with `endpoint:` lists,
//! `configs:` with `auth` and `tls`) turned into what containerd 1.6+ reads:
//! one `hosts.toml` per registry under a hosts directory (the CRI plugin's
//! `config_path`) for mirrors and TLS, and `registry.configs.<host>.auth` in
//! config.toml for logins (hosts.toml has no place for credentials).
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["https://mirror.example.com:5000"]
//! configs:
//!   mirror.example.com:5000:
//!     auth: {username: bob, password: secret}
//!     tls: {ca_file: /etc/ssl/mirror-ca.pem}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where K3s users expect it, under k3rs's name.
pub const DEFAULT_PATH: &str = "/etc/k3rs/registries.yaml";

#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Tried in order, then the registry itself.
    #[serde(default)]
    pub endpoint: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub tls: Option<Tls>,
}

#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// base64 of `user:password`.
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub identity_token: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A TOML basic string: JSON's escaping is a subset TOML accepts.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn quote_path(p: &Path) -> String {
    quote(&p.display().to_string())
}

/// `host[:port]` of an endpoint URL (or a bare host).
fn host_of(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// An endpoint with a scheme (K3s defaults to https).
fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.trim_end_matches('/').to_string()
    } else {
        format!("https://{}", endpoint.trim_end_matches('/'))
    }
}

/// The registry's own address: Docker Hub's API lives elsewhere.
fn upstream(registry: &str) -> String {
    match registry {
        "docker.io" => "https://registry-1.docker.io".into(),
        other => format!("https://{other}"),
    }
}

/// containerd's directory name for a registry (`*` is its `_default`).
fn host_dir_name(registry: &str) -> &str {
    if registry == "*" {
        "_default"
    } else {
        registry
    }
}

impl Registries {
    /// Reads `path`; a file that does not exist means no configuration.
    pub fn load(path: &Path) -> Result<Self, RegistriesError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(RegistriesError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let r: Self = serde_yaml::from_str(&text).map_err(|source| RegistriesError::Parse {
            path: path.into(),
            source,
        })?;
        r.validate(path)?;
        Ok(r)
    }

    fn validate(&self, path: &Path) -> Result<(), RegistriesError> {
        let bad = |message: String| RegistriesError::Invalid {
            path: path.into(),
            message,
        };
        for (name, m) in &self.mirrors {
            if name.is_empty() || name.contains('/') || name.contains("..") {
                return Err(bad(format!("mirrors: bad registry name {name:?}")));
            }
            for e in &m.endpoint {
                let scheme_ok =
                    !e.contains("://") || e.starts_with("http://") || e.starts_with("https://");
                if !scheme_ok || host_of(e).is_empty() {
                    return Err(bad(format!(
                        "mirrors.{name}: endpoint {e:?} is not an http(s) URL"
                    )));
                }
            }
        }
        for (name, c) in &self.configs {
            if name.is_empty() || name.contains('/') || name.contains("..") {
                return Err(bad(format!("configs: bad registry name {name:?}")));
            }
            if let Some(t) = &c.tls
                && t.cert_file.is_some() != t.key_file.is_some()
            {
                return Err(bad(format!(
                    "configs.{name}.tls: cert_file and key_file go together"
                )));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.mirrors.is_empty() && self.configs.is_empty()
    }

    /// The TLS settings of a host entry in hosts.toml, from `configs`.
    fn tls_lines(&self, host: &str, indent: &str) -> String {
        let Some(tls) = self.configs.get(host).and_then(|c| c.tls.as_ref()) else {
            return String::new();
        };
        let mut out = String::new();
        if let Some(ca) = &tls.ca_file {
            out += &format!("{indent}ca = {}\n", quote_path(ca));
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            out += &format!(
                "{indent}client = [[{}, {}]]\n",
                quote_path(cert),
                quote_path(key)
            );
        }
        if tls.insecure_skip_verify {
            out += &format!("{indent}skip_verify = true\n");
        }
        out
    }

    /// The `hosts.toml` files: registry directory name → contents.
    pub fn hosts_files(&self) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        for (registry, m) in &self.mirrors {
            let mut s = String::from("# Generated by k3rs from registries.yaml; edits are lost.\n");
            if registry != "*" {
                // The registry itself is tried after its mirrors, as in K3s.
                // An endpoint on the registry's own host is that server
                // (e.g. plain http): listing it again would only add a
                // second attempt whose error hides the registry's answer.
                let server = m
                    .endpoint
                    .iter()
                    .find(|e| host_of(e) == registry)
                    .map_or_else(|| upstream(registry), |e| with_scheme(e));
                s += &format!("server = {}\n", quote(&server));
                s += &self.tls_lines(registry, "");
            }
            let mut hosts: Vec<&String> = m
                .endpoint
                .iter()
                .filter(|e| host_of(e) != registry)
                .collect();
            if hosts.is_empty() && registry != "*" {
                // containerd 1.6 rejects a hosts.toml without any host
                // entry: list the server itself.
                hosts = m.endpoint.iter().collect();
            }
            for e in hosts {
                let url = with_scheme(e);
                s += &format!(
                    "\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
                    quote(&url)
                );
                s += &self.tls_lines(host_of(e), "  ");
            }
            files.insert(host_dir_name(registry).to_string(), s);
        }
        // Registries with only TLS settings get a file of their own.
        for (registry, c) in &self.configs {
            if self.mirrors.contains_key(registry) || c.tls.is_none() {
                continue;
            }
            let mut s = String::from("# Generated by k3rs from registries.yaml; edits are lost.\n");
            // containerd 1.6 wants at least one host entry besides `server`.
            s += &format!("server = {}\n", quote(&upstream(registry)));
            s += &self.tls_lines(registry, "");
            s += &format!(
                "\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
                quote(&upstream(registry))
            );
            s += &self.tls_lines(registry, "  ");
            files.insert(host_dir_name(registry).to_string(), s);
        }
        files
    }

    /// Replaces the hosts directory with this configuration's files.
    pub fn write_hosts_dir(&self, dir: &Path) -> Result<(), RegistriesError> {
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistriesError::Write { path, source }
        };
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(werr(dir))?;
        }
        std::fs::create_dir_all(dir).map_err(werr(dir))?;
        for (name, text) in self.hosts_files() {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).map_err(werr(&d))?;
            let f = d.join("hosts.toml");
            std::fs::write(&f, text).map_err(werr(&f))?;
        }
        Ok(())
    }

    /// The CRI plugin's `registry` section of containerd's config.toml:
    /// the hosts directory and the logins (which hosts.toml cannot hold).
    pub fn containerd_section(&self, hosts_dir: &Path) -> String {
        let mut s = format!(
            "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = {}\n",
            quote_path(hosts_dir)
        );
        for (host, c) in &self.configs {
            let Some(a) = &c.auth else { continue };
            s += &format!(
                "[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.{}.auth]\n  username = {}\n  password = {}\n  auth = {}\n  identity_token = {}\n",
                quote(host),
                quote(&a.username),
                quote(&a.password),
                quote(&a.auth),
                quote(&a.identity_token),
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Registries, RegistriesError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("registries.yaml");
        std::fs::write(&p, yaml).unwrap();
        Registries::load(&p)
    }

    #[test]
    fn k3s_example_renders_hosts_and_auth() {
        let r = parse(
            r#"
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.example.com:5000"
      - "plain.example.com"
  "*":
    endpoint: ["http://127.0.0.1:5001"]
configs:
  "mirror.example.com:5000":
    auth:
      username: bob
      password: "p\"w"
    tls:
      ca_file: /etc/ssl/ca.pem
      cert_file: /etc/ssl/c.pem
      key_file: /etc/ssl/k.pem
  insecure.example.com:
    tls:
      insecure_skip_verify: true
"#,
        )
        .unwrap();
        let files = r.hosts_files();
        let hub = &files["docker.io"];
        assert!(
            hub.contains("server = \"https://registry-1.docker.io\""),
            "{hub}"
        );
        let mirror = hub
            .find("[host.\"https://mirror.example.com:5000\"]")
            .unwrap();
        let plain = hub.find("[host.\"https://plain.example.com\"]").unwrap();
        assert!(mirror < plain, "endpoints keep their order: {hub}");
        assert!(hub.contains("  ca = \"/etc/ssl/ca.pem\""), "{hub}");
        assert!(
            hub.contains("  client = [[\"/etc/ssl/c.pem\", \"/etc/ssl/k.pem\"]]"),
            "{hub}"
        );
        let default = &files["_default"];
        assert!(!default.contains("server ="), "{default}");
        assert!(default.contains("[host.\"http://127.0.0.1:5001\"]"));
        assert!(files["insecure.example.com"].contains("skip_verify = true"));
        let section = r.containerd_section(Path::new("/d/certs.d"));
        assert!(
            section.contains("config_path = \"/d/certs.d\""),
            "{section}"
        );
        assert!(
            section.contains(
                "registry.configs.\"mirror.example.com:5000\".auth]\n  username = \"bob\"\n  password = \"p\\\"w\""
            ),
            "{section}"
        );
        assert!(!format!("{r:?}").contains("p\\\"w"));
    }

    #[test]
    fn missing_or_empty_file_is_no_configuration() {
        let r = Registries::load(Path::new("/nonexistent/k3rs/registries.yaml")).unwrap();
        assert!(r.is_empty());
        assert!(parse("\n").unwrap().is_empty());
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = parse("mirrors:\n  docker.io:\n    endpoints: [x]\n").unwrap_err();
        assert!(e.to_string().contains("endpoints"), "{e}");
        let e = parse("mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n").unwrap_err();
        assert!(e.to_string().contains("ftp://x"), "{e}");
        let e = parse("configs:\n  a.b:\n    tls: {cert_file: /c}\n").unwrap_err();
        assert!(e.to_string().contains("key_file"), "{e}");
        let e = parse("mirrors:\n  ../etc:\n    endpoint: []\n").unwrap_err();
        assert!(e.to_string().contains("bad registry name"), "{e}");
    }

    #[test]
    fn hosts_dir_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("certs.d");
        std::fs::create_dir_all(hosts.join("stale.example.com")).unwrap();
        let r = parse("mirrors:\n  k3rs.test:\n    endpoint: [\"http://127.0.0.1:1\"]\n").unwrap();
        r.write_hosts_dir(&hosts).unwrap();
        assert!(!hosts.join("stale.example.com").exists());
        let t = std::fs::read_to_string(hosts.join("k3rs.test/hosts.toml")).unwrap();
        assert!(t.contains("server = \"https://k3rs.test\""), "{t}");
        // A registry that is its own (plain http) mirror: that is its server.
        let own =
            parse("mirrors:\n  \"10.0.0.1:5000\":\n    endpoint: [\"http://10.0.0.1:5000\"]\n")
                .unwrap()
                .hosts_files();
        let t = &own["10.0.0.1:5000"];
        assert!(t.contains("server = \"http://10.0.0.1:5000\""), "{t}");
        assert!(t.contains("[host.\"http://10.0.0.1:5000\"]"), "{t}");
    }
}
