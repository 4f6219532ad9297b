//! `k3rs check-config`: can this machine run `k3rs server` with this
//! configuration? Binaries, data dir, ports, kubectl.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};

use crate::components::{self, COMPONENTS};
use crate::config::{Datastore, ServerConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Note,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    pub detail: String,
}

/// The findings for `config`; nothing is started and nothing but a probe
/// file in the data dir is written.
pub fn check(config: &ServerConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |level, what: &str, detail: String| {
        out.push(Finding {
            level,
            what: what.to_string(),
            detail,
        })
    };

    let file = &config.config_file;
    if file.exists() {
        add(Level::Ok, "config", format!("{} (valid)", file.display()));
    } else {
        add(
            Level::Note,
            "config",
            format!(
                "{} not present; defaults, env and flags only",
                file.display()
            ),
        );
    }

    for c in COMPONENTS {
        let what = format!("binary {}", c.binary);
        if !(c.enabled)(config) {
            add(
                Level::Note,
                &what,
                "not needed with this configuration".into(),
            );
            continue;
        }
        match components::find_binary(c.binary, config.bin_dir.as_deref()) {
            Some(p) => add(Level::Ok, &what, p.display().to_string()),
            None if c.required => add(
                Level::Fail,
                &what,
                "not found beside k3rs, in --bin-dir or on PATH".into(),
            ),
            None => add(
                Level::Note,
                &what,
                "not installed; the server runs without it".into(),
            ),
        }
    }

    add_data_dir(config, &mut add);

    let mut ports: Vec<(String, SocketAddr)> = Vec::new();
    let api_bind = config
        .bind_address
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    ports.push((
        "https-listen-port".into(),
        SocketAddr::new(api_bind, config.https_listen_port),
    ));
    if matches!(config.datastore(), Datastore::Shim(_))
        && let Ok(listen) = config.datastore_listen()
    {
        ports.push(("datastore-listen-address".into(), listen));
        ports.push((
            "datastore health".into(),
            SocketAddr::new(listen.ip(), listen.port().saturating_add(2)),
        ));
    }
    for (what, addr) in ports {
        match TcpListener::bind(addr) {
            Ok(_) => add(
                Level::Ok,
                &format!("port {what}"),
                format!("{addr} is free"),
            ),
            Err(e) => add(
                Level::Fail,
                &format!("port {what}"),
                format!("{addr}: {e} (is k3rs or something else already running?)"),
            ),
        }
    }

    match config.datastore() {
        Datastore::Shim(e) if e.is_empty() => add(
            Level::Ok,
            "datastore",
            format!(
                "SQLite {}",
                config.server_dir().join("db/state.db").display()
            ),
        ),
        Datastore::Shim(e) => add(Level::Ok, "datastore", redact(&e)),
        Datastore::Etcd(urls) => add(
            Level::Ok,
            "datastore",
            format!("external etcd {}", urls.join(",")),
        ),
        Datastore::Embedded => match crate::node::system_binary("etcd", "etcd-server") {
            Ok(p) => add(
                Level::Ok,
                "datastore",
                format!("embedded etcd member ({})", p.display()),
            ),
            Err(_) => add(
                Level::Fail,
                "datastore",
                "etcd is not installed; fix: apt-get install etcd-server".into(),
            ),
        },
    }

    match components::find_binary("kubectl", None) {
        Some(p) => add(Level::Ok, "kubectl", p.display().to_string()),
        None => add(
            Level::Note,
            "kubectl",
            "not on PATH (`k3rs kubectl` needs it)".into(),
        ),
    }
    out
}

fn add_data_dir(config: &ServerConfig, add: &mut impl FnMut(Level, &str, String)) {
    let dir = &config.data_dir;
    let probe = dir.join(".k3rs-check-config");
    let result = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"ok"))
        .and_then(|_| std::fs::remove_file(&probe));
    match result {
        Ok(()) => add(
            Level::Ok,
            "data dir",
            format!("{} is writable", dir.display()),
        ),
        Err(e) => add(Level::Fail, "data dir", format!("{}: {e}", dir.display())),
    }
}

/// Hides a password in a `scheme://user:password@host` endpoint.
fn redact(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => endpoint.to_string(),
        },
        None => endpoint.to_string(),
    }
}

/// The report as printed; the bool says whether everything needed is there.
pub fn report(findings: &[Finding]) -> (String, bool) {
    let mut s = String::new();
    for f in findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Note => "note",
            Level::Fail => "FAIL",
        };
        let _ = writeln!(s, "{tag}  {:<32} {}", f.what, f.detail);
    }
    let ok = findings.iter().all(|f| f.level != Level::Fail);
    let _ = writeln!(
        s,
        "{}",
        if ok {
            "k3rs server can run here."
        } else {
            "k3rs server cannot run here until the FAIL lines are fixed."
        }
    );
    (s, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
    }

    #[test]
    fn busy_port_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yaml"), "").unwrap();
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let c = crate::config::load_from_args([
            "--config",
            &dir.path().join("c.yaml").display().to_string(),
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            &port.to_string(),
        ])
        .unwrap();
        let findings = check(&c);
        let (text, ok) = report(&findings);
        assert!(!ok, "{text}");
        assert!(text.contains("FAIL  port https-listen-port"), "{text}");
        assert!(text.contains("ok    data dir"), "{text}");
    }
}
