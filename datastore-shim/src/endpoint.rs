//! Parsing of `--datastore-endpoint` (K3s-compatible forms).

use std::path::{Path, PathBuf};

use crate::error::Error;

/// Which SQL database keeps the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Embedded SQLite file.
    Sqlite(PathBuf),
    /// `postgres://user:pass@host:port/db?params` (kept verbatim for the driver).
    Postgres(String),
    /// `mysql://user:pass@host:port/db?params` (normalised from the Go DSN form).
    Mysql(String),
}

impl Endpoint {
    /// Parses an endpoint; an empty string means SQLite at `<data_dir>/server/db/state.db`.
    pub fn parse(s: &str, data_dir: &Path) -> Result<Self, Error> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self::Sqlite(data_dir.join("server/db/state.db")));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(Error::Config(format!(
                "datastore endpoint {s:?} has no scheme; expected sqlite://, postgres://, mysql:// or http(s)://"
            )));
        };
        match scheme {
            "sqlite" => {
                let path = rest.split('?').next().unwrap_or_default();
                if path.is_empty() {
                    return Err(Error::Config(format!(
                        "sqlite endpoint {s:?} names no file"
                    )));
                }
                Ok(Self::Sqlite(PathBuf::from(path)))
            }
            "postgres" | "postgresql" => {
                let url = url::Url::parse(s)
                    .map_err(|e| Error::Config(format!("invalid postgres endpoint: {e}")))?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(Error::Config("postgres endpoint names no host".into()));
                }
                Ok(Self::Postgres(s.to_string()))
            }
            "mysql" => Ok(Self::Mysql(normalize_mysql(rest)?)),
            "http" | "https" | "unix" | "unixs" => Err(Error::Config(format!(
                "{s:?} names an etcd cluster; k3rs-datastore only serves SQL backends (point the apiserver at etcd directly)"
            ))),
            other => Err(Error::Config(format!(
                "unsupported datastore scheme {other:?} in {s:?}; expected sqlite, postgres or mysql"
            ))),
        }
    }

    /// The database name for server-based backends.
    pub fn database_name(&self) -> Option<String> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(u) | Self::Mysql(u) => url::Url::parse(u)
                .ok()
                .map(|u| u.path().trim_start_matches('/').to_string())
                .filter(|d| !d.is_empty()),
        }
    }

    /// A description safe to log (no password).
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite://{}", p.display()),
            Self::Postgres(u) | Self::Mysql(u) => match url::Url::parse(u) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("***"));
                    }
                    url.to_string()
                }
                Err(_) => "<unparseable url>".into(),
            },
        }
    }
}

/// Accepts both `user:pass@tcp(host:port)/db` (the Go driver DSN K3s users have)
/// and `user:pass@host:port/db`; returns a `mysql://` URL.
fn normalize_mysql(rest: &str) -> Result<String, Error> {
    let (userinfo, hostpart) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let hostpart = if let Some(inner) = hostpart.strip_prefix("tcp(") {
        let Some((addr, tail)) = inner.split_once(')') else {
            return Err(Error::Config(format!(
                "mysql endpoint: unclosed tcp( in {hostpart:?}"
            )));
        };
        format!("{addr}{tail}")
    } else if hostpart.starts_with("unix(") {
        return Err(Error::Config(
            "mysql endpoint: unix sockets are not supported; use tcp(host:port)".into(),
        ));
    } else {
        hostpart.to_string()
    };
    let url = match userinfo {
        Some(u) => format!("mysql://{u}@{hostpart}"),
        None => format!("mysql://{hostpart}"),
    };
    let parsed =
        url::Url::parse(&url).map_err(|e| Error::Config(format!("invalid mysql endpoint: {e}")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::Config("mysql endpoint names no host".into()));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Endpoint, Error> {
        Endpoint::parse(s, Path::new("/var/lib/k3rs"))
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse("").unwrap(),
            Endpoint::Sqlite("/var/lib/k3rs/server/db/state.db".into())
        );
        assert_eq!(
            parse("sqlite:///tmp/x.db?_journal=WAL").unwrap(),
            Endpoint::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            parse("mysql://root:pw@tcp(127.0.0.1:3306)/k3rs").unwrap(),
            Endpoint::Mysql("mysql://root:pw@127.0.0.1:3306/k3rs".into())
        );
        assert_eq!(
            parse("mysql://root@127.0.0.1:3306/k3rs").unwrap(),
            Endpoint::Mysql("mysql://root@127.0.0.1:3306/k3rs".into())
        );
        let pg = parse("postgres://postgres:secret@127.0.0.1:5432/k3rs").unwrap();
        assert_eq!(pg.database_name().as_deref(), Some("k3rs"));
        assert!(!pg.redacted().contains("secret"));
    }

    #[test]
    fn bad_forms_explain_themselves() {
        for bad in [
            "nonsense",
            "redis://x",
            "https://127.0.0.1:2379",
            "mysql://root@tcp(127.0.0.1:3306/k3rs",
            "postgres://",
            "sqlite://",
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(!err.is_empty() && !err.contains('\n'), "{bad}: {err}");
        }
    }
}
