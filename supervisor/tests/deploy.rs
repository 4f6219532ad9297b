//! deploy/: install.sh into a scratch root, the units it writes pass
//! `systemd-analyze verify`, the uninstall script removes everything; and
//! `k3rs daemon NAME`, which the per-daemon units run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn k3rs() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_k3rs"))
}

/// Runs install.sh into `<dir>/root` with the built `k3rs` as the only artifact.
fn install(dir: &Path, units: &str) -> PathBuf {
    let root = dir.join("root");
    let out = run_install(dir, units, &[]);
    assert!(
        out.status.success(),
        "install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    root
}

/// install.sh into `<dir>/root` with `env` (K3RS_URL, K3RS_TOKEN) set.
fn run_install(dir: &Path, units: &str, env: &[(&str, &str)]) -> std::process::Output {
    let art = dir.join("art");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::copy(k3rs(), art.join("k3rs")).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg(repo().join("deploy/install.sh"))
        .env("INSTALL_K3RS_ROOT", dir.join("root"))
        .env("INSTALL_K3RS_ARTIFACT_DIR", &art)
        .env("INSTALL_K3RS_SKIP_DOWNLOAD", "true")
        .env("INSTALL_K3RS_SKIP_DEPS", "true")
        .env("INSTALL_K3RS_UNITS", units)
        .env_remove("K3RS_URL")
        .env_remove("K3RS_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `systemd-analyze verify` on the written units, their binary paths pointed
/// into the scratch root (verify checks that ExecStart is executable).
fn verify_units(root: &Path, dir: &Path) -> Vec<String> {
    let written = root.join("etc/systemd/system");
    let check = dir.join("verify");
    std::fs::create_dir_all(&check).unwrap();
    let mut names = Vec::new();
    for e in std::fs::read_dir(&written).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        // Only units; the agent's environment file sits beside them.
        if !(name.ends_with(".service") || name.ends_with(".target")) {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        let bin = root.join("usr/local/bin/");
        let text = text.replace("/usr/local/bin/", &bin.display().to_string());
        std::fs::write(check.join(e.file_name()), text).unwrap();
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&names)
        .current_dir(&check)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify {names:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    names
}

#[test]
fn install_writes_verified_units_and_uninstall_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let root = install(dir.path(), "single");
    let bin = root.join("usr/local/bin");
    assert!(bin.join("k3rs").is_file());
    for script in ["k3rs-killall.sh", "k3rs-uninstall.sh"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(bin.join(script))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is executable");
    }
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/k3rs.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/k3rs server"),
        "{unit}"
    );
    assert!(unit.contains("Type=notify") && unit.contains("KillMode=process"));
    // The example config is valid configuration for k3rs itself.
    let config = root.join("etc/k3rs/config.yaml");
    let out = Command::new(k3rs())
        .args(["token", "show", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("nodata"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nodata"), "the config loaded: {err}");
    assert_eq!(verify_units(&root, dir.path()), ["k3rs.service"]);

    let out = Command::new("sh")
        .arg(bin.join("k3rs-uninstall.sh"))
        .env("K3RS_UNINSTALL_ROOT", &root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = walk(&root);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn split_units_verify_and_order_after_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let root = install(dir.path(), "split");
    let names = verify_units(&root, dir.path());
    assert_eq!(
        names,
        [
            "k3rs-apiserver.service",
            "k3rs-controller-manager.service",
            "k3rs-datastore.service",
            "k3rs-scheduler.service",
            "k3rs-split.target"
        ]
    );
    let api =
        std::fs::read_to_string(root.join("etc/systemd/system/k3rs-apiserver.service")).unwrap();
    assert!(api.contains("After=network-online.target k3rs-datastore.service"));
    assert!(api.contains("ExecStart=/usr/local/bin/k3rs daemon apiserver"));
}

#[test]
fn install_refuses_bad_settings_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg(repo().join("deploy/install.sh"))
        .env("INSTALL_K3RS_ROOT", dir.path())
        .env("INSTALL_K3RS_UNITS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("INSTALL_K3RS_UNITS"));
}

#[test]
fn agent_mode_installs_the_agent_unit_with_a_private_token() {
    let dir = tempfile::tempdir().unwrap();
    let url = "https://10.0.0.1:6443";
    let token = format!("K10{}::server:s3cret", "a".repeat(64));
    let env = [("K3RS_URL", url), ("K3RS_TOKEN", token.as_str())];

    // k3rs-node-agent is what an agent runs: without it, a clear refusal.
    let out = run_install(dir.path(), "single", &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("k3rs-node-agent"));

    // (install.sh only copies it; a stand-in is enough here.)
    let art = dir.path().join("art");
    std::fs::write(art.join("k3rs-node-agent"), "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        art.join("k3rs-node-agent"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = run_install(dir.path(), "single", &env);
    assert!(
        out.status.success(),
        "install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dir.path().join("root");
    let units = root.join("etc/systemd/system");
    let unit = std::fs::read_to_string(units.join("k3rs-agent.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/k3rs agent"),
        "{unit}"
    );
    assert!(unit.contains("EnvironmentFile=-/etc/systemd/system/k3rs-agent.service.env"));
    assert!(!units.join("k3rs.service").exists(), "no server unit");
    let env_file = units.join("k3rs-agent.service.env");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        format!("K3RS_URL={url}\nK3RS_TOKEN={token}\n")
    );
    assert!(root.join("usr/local/bin/k3rs-node-agent").is_file());
    assert!(
        !root.join("etc/k3rs/config.yaml").exists(),
        "no server config on an agent"
    );
    assert_eq!(verify_units(&root, dir.path()), ["k3rs-agent.service"]);

    let out = Command::new("sh")
        .arg(root.join("usr/local/bin/k3rs-uninstall.sh"))
        .env("K3RS_UNINSTALL_ROOT", &root)
        .output()
        .unwrap();
    assert!(out.status.success());
    let left = walk(&root);
    assert!(left.is_empty(), "left behind: {left:?}");

    // Bad agent settings: exit 2 naming the variable.
    for (bad, needle) in [
        (vec![("K3RS_URL", url)], "K3RS_TOKEN"),
        (
            vec![("K3RS_URL", "http://10.0.0.1:6443"), ("K3RS_TOKEN", "t")],
            "K3RS_URL",
        ),
    ] {
        let out = run_install(dir.path(), "single", &bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle));
    }
    let out = run_install(dir.path(), "split", &env);
    assert_eq!(out.status.code(), Some(2));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn daemon_subcommand_runs_one_daemon_with_the_server_flags() {
    let out = Command::new(k3rs())
        .args(["daemon", "kube-proxy"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown daemon \"kube-proxy\"") && err.contains("apiserver"),
        "{err}"
    );

    // The datastore binary sits beside k3rs in the target dir when its
    // package was built; `k3rs daemon` execs it in place.
    let datastore = k3rs().with_file_name("k3rs-datastore");
    if !datastore.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "k3rs-datastore"])
            .current_dir(repo())
            .status()
            .unwrap();
        assert!(st.success());
    }
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(dir.path().join("c.yaml"), "").unwrap();
    let mut child = Command::new(k3rs())
        .arg("daemon")
        .arg("datastore")
        .arg("--config")
        .arg(dir.path().join("c.yaml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--write-kubeconfig")
        .arg(dir.path().join("k.yaml"))
        .args(["--datastore-listen-address", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ok = false;
    while Instant::now() < deadline {
        let comm =
            std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap_or_default();
        if comm.trim() == "k3rs-datastore"
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ok,
        "k3rs daemon datastore did not become k3rs-datastore serving on {port}"
    );
    // The same bootstrap as `k3rs server`: PKI and tokens exist.
    assert!(dir.path().join("data/server/token").is_file());
    assert!(dir.path().join("data/server/db/state.db").is_file());
}
