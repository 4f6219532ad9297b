//! `k3rs etcd-snapshot`: save, list, restore and delete through the real
//! binary, on the SQLite datastore and on an external etcd 3.4.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use k3rs_e2e::supervisor::{K3rsServer, ServerOptions};
use k3rs_e2e::{Backend, TestStore};

const READY: Duration = Duration::from_secs(90);
const KUBECTL: Duration = Duration::from_secs(30);
const EXIT: Duration = Duration::from_secs(25);

fn configmap(name: &str, greeting: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  greeting: {greeting}\n"
    )
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn opts() -> ServerOptions {
    ServerOptions {
        args: vec!["--disable-agent".into()],
        ..Default::default()
    }
}

/// The path from "Snapshot <path> saved.".
fn saved_path(out: &std::process::Output) -> std::path::PathBuf {
    let t = text(out);
    assert!(out.status.success(), "save failed: {t}");
    let line = t
        .lines()
        .find(|l| l.starts_with("Snapshot ") && l.ends_with(" saved."))
        .unwrap_or_else(|| panic!("no 'Snapshot ... saved.' line in {t}"));
    line.trim_start_matches("Snapshot ")
        .trim_end_matches(" saved.")
        .into()
}

#[test]
fn sqlite_snapshot_saves_lists_restores_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = K3rsServer::start(dir.path(), &opts()).unwrap();
    server.wait_ready(READY).unwrap();
    server
        .kubectl_until_ok(
            &["apply", "-f", "-"],
            Some(&configmap("kept", "before")),
            KUBECTL,
        )
        .unwrap();

    let out = server
        .k3rs(&["etcd-snapshot", "save", "--name", "nightly"])
        .unwrap();
    let snap = saved_path(&out);
    let name = snap.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("nightly-"), "{name}");
    assert_eq!(
        snap.parent().unwrap(),
        server.data_dir.join("server/db/snapshots")
    );
    let mode = std::fs::metadata(&snap).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "snapshots hold Secrets");
    let bytes = std::fs::read(&snap).unwrap();
    assert!(bytes.starts_with(b"SQLite format 3\0"));

    let ls = server.k3rs(&["etcd-snapshot", "ls"]).unwrap();
    assert!(ls.status.success(), "{}", text(&ls));
    let ls = text(&ls);
    assert!(ls.lines().next().unwrap().starts_with("Name"), "{ls}");
    assert!(ls.contains(&name), "{ls}");

    // Changes after the snapshot, which the restore must undo.
    server
        .kubectl_until_ok(
            &["apply", "-f", "-"],
            Some(&configmap("kept", "after")),
            KUBECTL,
        )
        .unwrap();
    server
        .kubectl_until_ok(
            &["apply", "-f", "-"],
            Some(&configmap("later", "added-later")),
            KUBECTL,
        )
        .unwrap();

    // Refused while the datastore runs: one line, exit 2.
    let busy = server
        .k3rs(&["etcd-snapshot", "restore", snap.to_str().unwrap()])
        .unwrap();
    assert_eq!(busy.status.code(), Some(2), "{}", text(&busy));
    assert!(
        text(&busy).contains("stop k3rs server first"),
        "{}",
        text(&busy)
    );

    server.signal("TERM").unwrap();
    assert!(server.wait_exit(EXIT).unwrap().success());

    // Not a snapshot: refused with a clear message, nothing changed.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "not a database").unwrap();
    let bad = server
        .k3rs(&["etcd-snapshot", "restore", junk.to_str().unwrap()])
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("not a k3rs SQLite snapshot"),
        "{}",
        text(&bad)
    );

    let restored = server
        .k3rs(&["etcd-snapshot", "restore", snap.to_str().unwrap()])
        .unwrap();
    assert!(restored.status.success(), "{}", text(&restored));
    let kept_aside = std::fs::read_dir(server.data_dir.join("server/db"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.db.before-restore-")
        });
    assert!(kept_aside, "the replaced database is kept beside it");

    let mut server = K3rsServer::start(dir.path(), &opts()).unwrap();
    server.wait_ready(READY).unwrap();
    let greeting = server
        .kubectl_until_ok(
            &[
                "get",
                "configmap",
                "kept",
                "-o",
                "jsonpath={.data.greeting}",
            ],
            None,
            KUBECTL,
        )
        .unwrap();
    assert_eq!(greeting, "before");
    let later = server
        .kubectl(&["get", "configmap", "later"], None)
        .unwrap();
    assert!(!later.status.success());
    assert!(text(&later).contains("NotFound"), "{}", text(&later));
    // New writes work on the restored database.
    server
        .kubectl_until_ok(
            &["apply", "-f", "-"],
            Some(&configmap("fresh", "new-writes")),
            KUBECTL,
        )
        .unwrap();

    let del = server.k3rs(&["etcd-snapshot", "delete", &name]).unwrap();
    assert!(del.status.success(), "{}", text(&del));
    assert!(!snap.exists());
    let ls = text(&server.k3rs(&["etcd-snapshot", "ls"]).unwrap());
    assert!(!ls.contains(&name), "{ls}");
    server.signal("TERM").unwrap();
    assert!(server.wait_exit(EXIT).unwrap().success());
}

#[test]
fn external_etcd_snapshot_is_an_etcd_snapshot() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let etcd = rt.block_on(TestStore::start(Backend::Etcd)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.args.extend([
        "--datastore-endpoint".to_string(),
        etcd.endpoint().to_string(),
    ]);
    let mut server = K3rsServer::start(dir.path(), &o).unwrap();
    server.wait_ready(READY).unwrap();
    server
        .kubectl_until_ok(
            &["apply", "-f", "-"],
            Some(&configmap("kept", "before")),
            KUBECTL,
        )
        .unwrap();
    let out = server
        .k3rs(&[
            "etcd-snapshot",
            "save",
            "--datastore-endpoint",
            etcd.endpoint(),
        ])
        .unwrap();
    let snap = saved_path(&out);
    assert!(
        snap.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("on-demand-"),
        "{}",
        snap.display()
    );
    // etcd's own tool accepts it and sees our keys.
    let status = std::process::Command::new(k3rs_e2e::etcdctl_path().unwrap())
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&snap)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(v["totalKey"].as_u64().unwrap_or(0) > 10, "{v}");
    // Restoring an etcd through k3rs is refused with what to do instead.
    server.signal("TERM").unwrap();
    assert!(server.wait_exit(EXIT).unwrap().success());
    let r = server
        .k3rs(&[
            "etcd-snapshot",
            "restore",
            snap.to_str().unwrap(),
            "--datastore-endpoint",
            etcd.endpoint(),
        ])
        .unwrap();
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(
        text(&r).contains("etcdctl snapshot restore"),
        "{}",
        text(&r)
    );
    rt.block_on(etcd.stop());
}
