//! Termination messages: each container instance gets an empty host file
//! bind-mounted at its `terminationMessagePath`; once it exited, what it
//! wrote there (or, with `FallbackToLogsOnError` and a failure, the tail of
//! its log) becomes `state.terminated.message`.
//!
//! Everything needed later is on the container in the runtime (its mounts,
//! log path and our annotations), so a restarted agent reads the same message.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use crate::cri::ContainerStatus;
use crate::cri::v1::{Mount, MountPropagation};

pub const ANNOTATION_PATH: &str = "io.kubernetes.container.terminationMessagePath";
pub const ANNOTATION_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";

/// Upstream's caps: the file is read up to 4 KiB, the log fallback takes at
/// most 80 lines and 2 KiB.
const MAX_MESSAGE: u64 = 4096;
const LOG_LINES: usize = 80;
const LOG_BYTES: usize = 2048;

pub fn path(c: &Container) -> String {
    c.termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into())
}

pub fn policy(c: &Container) -> String {
    c.termination_message_policy
        .clone()
        .unwrap_or_else(|| "File".into())
}

/// Creates the (empty) host file for one container instance under
/// `<pods_dir>/<uid>/containers/<name>/` and the mount that exposes it.
pub fn prepare(
    pods_dir: &Path,
    uid: &str,
    c: &Container,
    attempt: u32,
) -> std::io::Result<Option<Mount>> {
    let target = path(c);
    if target.is_empty() {
        return Ok(None);
    }
    let dir: PathBuf = pods_dir.join(uid).join("containers").join(&c.name);
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{attempt}-termination-log"));
    std::fs::File::create(&file)?;
    // Writable by whatever user the container runs as.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))?;
    Ok(Some(Mount {
        container_path: target,
        host_path: file.display().to_string(),
        readonly: false,
        selinux_relabel: false,
        propagation: MountPropagation::PropagationPrivate as i32,
    }))
}

fn read_capped(path: &str, cap: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(cap).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The last lines of a CRI log file (`<time> <stream> <P|F> <text>`), as
/// the container printed them.
fn log_tail(log_path: &str) -> String {
    let text = std::fs::read_to_string(log_path).unwrap_or_default();
    let mut lines: Vec<String> = Vec::new();
    let mut partial = String::new();
    for l in text.lines() {
        let mut parts = l.splitn(4, ' ');
        let (Some(_ts), Some(_stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        partial.push_str(parts.next().unwrap_or_default());
        if tag != "P" {
            lines.push(std::mem::take(&mut partial));
        }
    }
    let start = lines.len().saturating_sub(LOG_LINES);
    let mut out = lines[start..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    if out.len() > LOG_BYTES {
        let mut cut = out.len() - LOG_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = out[cut..].to_string();
    }
    out
}

/// The message for an exited container, or empty.
pub fn message(s: &ContainerStatus) -> String {
    let from_file = s
        .annotations
        .get(ANNOTATION_PATH)
        .and_then(|p| s.mounts.iter().find(|m| &m.container_path == p))
        .map(|m| read_capped(&m.host_path, MAX_MESSAGE))
        .unwrap_or_default();
    if !from_file.is_empty() {
        return from_file;
    }
    let fallback =
        s.annotations.get(ANNOTATION_POLICY).map(String::as_str) == Some("FallbackToLogsOnError");
    if fallback && s.exit_code != 0 && !s.log_path.is_empty() {
        return log_tail(&s.log_path);
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(dir: &Path, policy: &str, exit: i32) -> ContainerStatus {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "app", "terminationMessagePath": "/tmp/msg",
        }))
        .unwrap();
        let m = prepare(dir, "u", &c, 0).unwrap().unwrap();
        assert_eq!(m.container_path, "/tmp/msg");
        ContainerStatus {
            exit_code: exit,
            annotations: [
                (ANNOTATION_PATH.to_string(), "/tmp/msg".to_string()),
                (ANNOTATION_POLICY.to_string(), policy.to_string()),
            ]
            .into(),
            mounts: vec![m],
            log_path: dir.join("0.log").display().to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn file_then_log_fallback_on_error_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("0.log"),
            "2026-01-01T00:00:00Z stdout F first\n2026-01-01T00:00:00Z stderr P par\n2026-01-01T00:00:00Z stderr F tial\n",
        )
        .unwrap();
        let s = status(dir.path(), "FallbackToLogsOnError", 1);
        assert_eq!(message(&s), "first\npartial\n");
        // Written file wins.
        std::fs::write(&s.mounts[0].host_path, "bye").unwrap();
        assert_eq!(message(&s), "bye");
        // A fresh instance starts with an empty file; success never reads logs.
        let s = status(dir.path(), "FallbackToLogsOnError", 0);
        assert_eq!(message(&s), "");
        let s = status(dir.path(), "File", 1);
        assert_eq!(message(&s), "");
    }

    #[test]
    fn log_tail_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let log: String = (0..200)
            .map(|i| format!("2026-01-01T00:00:00Z stdout F line {i}\n"))
            .collect();
        let p = dir.path().join("x.log");
        std::fs::write(&p, log).unwrap();
        let t = log_tail(&p.display().to_string());
        assert!(t.starts_with("line 120\n"), "{t}");
        assert!(t.ends_with("line 199\n"));
        let long: String = (0..5)
            .map(|_| format!("2026-01-01T00:00:00Z stdout F {}\n", "x".repeat(1000)))
            .collect();
        std::fs::write(&p, long).unwrap();
        assert_eq!(log_tail(&p.display().to_string()).len(), LOG_BYTES);
    }
}
