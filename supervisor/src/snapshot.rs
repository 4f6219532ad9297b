//! `k3rs etcd-snapshot`: backups of the datastore through the etcd v3
//! Maintenance API, so one code path serves both the SQLite shim (the blob is
//! a consistent copy of the SQLite file) and an external etcd (the blob is
//! etcd's own snapshot). Restore needs the server stopped: for SQLite it puts
//! the copy in place of `state.db`; an etcd is restored with its own tooling.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Datastore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("connecting to the datastore at {endpoint}: {source} (is `k3rs server` running?)")]
    Connect {
        endpoint: String,
        source: etcd_client::Error,
    },
    #[error("taking the snapshot: {0}")]
    Stream(etcd_client::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `--etcd-snapshot-dir`, default `<data-dir>/server/db/snapshots` (K3s's).
pub fn snapshot_dir(config: &ServerConfig, dir: Option<&Path>) -> PathBuf {
    dir.map(Path::to_path_buf)
        .unwrap_or_else(|| config.server_dir().join("db").join("snapshots"))
}

/// The client URLs of the datastore this configuration uses.
fn endpoints(config: &ServerConfig) -> Result<Vec<String>, SnapshotError> {
    Ok(match config.datastore() {
        Datastore::Etcd(urls) => urls,
        Datastore::Embedded => vec![crate::etcd::local_client_url(config)],
        Datastore::Shim(_) => {
            let listen = config
                .datastore_listen()
                .map_err(|e| SnapshotError::Refused(e.to_string()))?;
            vec![format!("http://{listen}")]
        }
    })
}

/// K3s names snapshots `<name>-<node>-<unix seconds>`.
fn file_name(name: &str, now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    format!("{name}-{}-{secs}", k3rs_common::pki::hostname())
}

/// Streams a snapshot into `<dir>/<name>-<node>-<ts>` (written to a temp
/// name first, so a failed save never leaves a truncated snapshot behind).
pub async fn save(
    config: &ServerConfig,
    dir: Option<&Path>,
    name: &str,
) -> Result<PathBuf, SnapshotError> {
    if name.is_empty() || name.contains('/') {
        return Err(SnapshotError::Refused(format!(
            "--name {name:?}: must be non-empty and contain no '/'"
        )));
    }
    let dir = snapshot_dir(config, dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let urls = endpoints(config)?;
    let client = if config.datastore() == Datastore::Embedded {
        // The embedded member takes clients with the etcd client certificate.
        crate::etcd::client(&crate::etcd::EtcdPaths::new(config), &urls)
            .await
            .map_err(|e| SnapshotError::Refused(e.to_string()))?
    } else {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(300));
        etcd_client::Client::connect(&urls, Some(opts))
            .await
            .map_err(|source| SnapshotError::Connect {
                endpoint: urls.join(","),
                source,
            })?
    };
    let target = dir.join(file_name(name, SystemTime::now()));
    let partial = target.with_extension("part");
    let result = async {
        let mut stream = client
            .maintenance_client()
            .snapshot()
            .await
            .map_err(SnapshotError::Stream)?;
        let mut out = Vec::new();
        while let Some(msg) = stream.message().await.map_err(SnapshotError::Stream)? {
            out.extend_from_slice(msg.blob());
        }
        if out.is_empty() {
            return Err(SnapshotError::Refused(
                "the datastore sent an empty snapshot".into(),
            ));
        }
        write_0600(&partial, &out).map_err(io(&partial))?;
        std::fs::rename(&partial, &target).map_err(io(&target))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result.map(|()| target)
}

/// Snapshots hold every Secret: readable by root only, like the database.
fn write_0600(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// One saved snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub created: SystemTime,
}

/// Snapshots in the directory, oldest first.
pub fn list(config: &ServerConfig, dir: Option<&Path>) -> Result<Vec<Entry>, SnapshotError> {
    let dir = snapshot_dir(config, dir);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".part") || name.starts_with('.') {
            continue;
        }
        let meta = e.metadata().map_err(io(&e.path()))?;
        if !meta.is_file() {
            continue;
        }
        out.push(Entry {
            name,
            path: e.path(),
            size: meta.len(),
            created: meta.modified().unwrap_or(UNIX_EPOCH),
        });
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// `k3rs etcd-snapshot ls`'s table (K3s's columns).
pub fn render(entries: &[Entry]) -> String {
    let mut rows = vec![(
        "Name".to_string(),
        "Location".to_string(),
        "Size".to_string(),
        "Created".to_string(),
    )];
    for e in entries {
        let created = e
            .created
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let created = k8s_openapi::jiff::Timestamp::from_second(created)
            .map(|t| t.to_string())
            .unwrap_or_default();
        rows.push((
            e.name.clone(),
            format!("file://{}", e.path.display()),
            e.size.to_string(),
            created,
        ));
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(a, b, c, d)| format!("{a:<w0$} {b:<w1$} {c:<w2$} {d}\n"))
        .collect()
}

/// Removes the named snapshots (names as `list` shows them).
pub fn delete(
    config: &ServerConfig,
    dir: Option<&Path>,
    names: &[String],
) -> Result<Vec<PathBuf>, SnapshotError> {
    let dir = snapshot_dir(config, dir);
    let mut removed = Vec::new();
    for n in names {
        if n.contains('/') || n.is_empty() {
            return Err(SnapshotError::Refused(format!(
                "{n:?} is not a snapshot name"
            )));
        }
        let p = dir.join(n);
        std::fs::remove_file(&p).map_err(io(&p))?;
        removed.push(p);
    }
    Ok(removed)
}

/// SQLite files start with this header.
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

/// Puts a SQLite snapshot in place of the server's database. The previous
/// database is kept beside it as `state.db.before-restore-<ts>`.
pub fn restore(config: &ServerConfig, file: &Path) -> Result<PathBuf, SnapshotError> {
    let db = match config.datastore() {
        Datastore::Etcd(_) => {
            return Err(SnapshotError::Refused(
                "the datastore is an external etcd: restore with `etcdctl snapshot restore` \
                 on its members"
                    .into(),
            ));
        }
        Datastore::Embedded => {
            return Err(SnapshotError::Refused(
                "the datastore is the embedded etcd: restore with `etcdctl snapshot restore` \
                 into <data-dir>/server/db/etcd on every server (servers stopped)"
                    .into(),
            ));
        }
        Datastore::Shim(e) if e.is_empty() => config.server_dir().join("db").join("state.db"),
        Datastore::Shim(e) => match e.strip_prefix("sqlite://") {
            Some(p) => PathBuf::from(p.split('?').next().unwrap_or(p)),
            None => {
                return Err(SnapshotError::Refused(format!(
                    "the datastore is {}: restore it with the database's own tools",
                    e.split("://").next().unwrap_or("a server database")
                )));
            }
        },
    };
    let mut head = [0u8; 16];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(file).map_err(io(file))?;
        f.read_exact(&mut head).map_err(|_| {
            SnapshotError::Refused(format!("{} is not a k3rs SQLite snapshot", file.display()))
        })?;
    }
    if head != SQLITE_MAGIC {
        return Err(SnapshotError::Refused(format!(
            "{} is not a k3rs SQLite snapshot (an etcd snapshot is restored with etcdctl)",
            file.display()
        )));
    }
    if datastore_running(config) {
        return Err(SnapshotError::Refused(
            "the datastore is running: stop k3rs server first, then restore".into(),
        ));
    }
    let dir = db.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let staged = dir.join(".state.db.restore");
    std::fs::copy(file, &staged).map_err(io(&staged))?;
    if db.exists() {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let keep = dir.join(format!(
            "{}.before-restore-{secs}",
            db.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        std::fs::rename(&db, &keep).map_err(io(&keep))?;
    }
    // The old WAL belongs to the old file; replaying it onto the copy would corrupt it.
    for suffix in ["-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    std::fs::rename(&staged, &db).map_err(io(&db))?;
    Ok(db)
}

/// Whether something answers on the datastore's listen address.
fn datastore_running(config: &ServerConfig) -> bool {
    config.datastore_listen().ok().is_some_and(|a| {
        std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_k3s() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let n = file_name("on-demand", t);
        assert!(n.starts_with("on-demand-"), "{n}");
        assert!(n.ends_with("-1700000000"), "{n}");
    }

    #[test]
    fn render_has_header_and_rows() {
        let e = Entry {
            name: "a-h-1".into(),
            path: "/x/a-h-1".into(),
            size: 42,
            created: UNIX_EPOCH + Duration::from_secs(86_400),
        };
        let t = render(&[e]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("Name"));
        assert!(lines[1].contains("file:///x/a-h-1"));
        assert!(lines[1].contains(" 42 "));
        assert!(lines[1].contains("1970-01-02T00:00:00Z"));
    }
}
