//! The `k3rs` command line as a user runs it (no daemons started).

use std::process::{Command, Output};

fn k3rs(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_k3rs"));
    cmd.args(args);
    // The machine's own settings must not leak into these runs.
    for (k, _) in std::env::vars() {
        if k.starts_with("K3RS_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run k3rs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn server_help_lists_flags_with_env_names_and_defaults() {
    let out = k3rs(&["server", "--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "--datastore-endpoint",
        "[env: K3RS_DATASTORE_ENDPOINT=]",
        "--write-kubeconfig-mode",
        "[default: 0600]",
        "--kube-apiserver-arg",
        "--disable-agent",
        "--log-format",
    ] {
        assert!(help.contains(needle), "{needle} missing:\n{help}");
    }
}

#[test]
fn config_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "service-cidr: not-a-cidr\n").unwrap();
    let cfg_s = cfg.display().to_string();
    let data = dir.path().join("data").display().to_string();

    let out = k3rs(&["server", "--config", &cfg_s, "--data-dir", &data], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&cfg_s) && err.contains("service-cidr"),
        "{err}"
    );

    // The environment beats the file, and its own mistakes name the variable.
    std::fs::write(&cfg, "").unwrap();
    let out = k3rs(
        &["server", "--config", &cfg_s, "--data-dir", &data],
        &[("K3RS_DATASTORE_ENDPOINT", "oracle://db")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("K3RS_DATASTORE_ENDPOINT"), "{err}");

    // An explicit config file that does not exist is an error.
    let missing = dir.path().join("missing.yaml").display().to_string();
    let out = k3rs(&["server", "--config", &missing], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.yaml"));
}

#[test]
fn token_generate_and_agent() {
    let out = k3rs(&["token", "generate"], &[]);
    assert!(out.status.success());
    let secret = text(&out.stdout);
    assert_eq!(secret.trim().len(), 32, "{secret}");
    assert!(secret.trim().bytes().all(|b| b.is_ascii_hexdigit()));

    // The agent needs a token and an https server URL, and says so.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "").unwrap();
    let cfg = cfg.display().to_string();
    let out = k3rs(
        &["agent", "--config", &cfg, "--server", "https://x:6443"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("needs --token"),
        "{}",
        text(&out.stderr)
    );
    let out = k3rs(
        &[
            "agent",
            "--config",
            &cfg,
            "--server",
            "http://x:6443",
            "--token",
            "abc",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("https://"),
        "{}",
        text(&out.stderr)
    );
    // The server URL also comes from the config file key `server`.
    std::fs::write(
        dir.path().join("config.yaml"),
        "server: ftp://x\ntoken: abc\n",
    )
    .unwrap();
    let out = k3rs(&["agent", "--config", &cfg], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("ftp://x"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_config_reports_and_certificate_rotate_keeps_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "").unwrap();
    let cfg_s = cfg.display().to_string();
    let data = dir.path().join("data");
    let data_s = data.display().to_string();
    let kc = dir.path().join("k3rs.yaml").display().to_string();
    let base = [
        "--config",
        &cfg_s,
        "--data-dir",
        &data_s,
        "--write-kubeconfig",
        &kc,
    ];

    let mut args = vec!["check-config"];
    args.extend(base);
    let out = k3rs(&args, &[]);
    let report = text(&out.stdout);
    assert!(report.contains("data dir"), "{report}");
    assert!(report.contains("binary k3rs-apiserver"), "{report}");

    // rotate on a fresh dir bootstraps it; a second rotate keeps CA and token.
    let mut args = vec!["certificate", "rotate"];
    args.extend(base);
    let out = k3rs(&args, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ca = std::fs::read_to_string(data.join("server/tls/server-ca.crt")).unwrap();
    let admin = std::fs::read_to_string(data.join("server/tls/client-admin.crt")).unwrap();
    let token = std::fs::read_to_string(data.join("server/token")).unwrap();
    let out = k3rs(&args, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("client-admin.crt"));
    assert_eq!(
        std::fs::read_to_string(data.join("server/tls/server-ca.crt")).unwrap(),
        ca
    );
    assert_eq!(
        std::fs::read_to_string(data.join("server/token")).unwrap(),
        token
    );
    assert_ne!(
        std::fs::read_to_string(data.join("server/tls/client-admin.crt")).unwrap(),
        admin
    );

    let mut args = vec!["token", "show"];
    args.extend(base);
    let out = k3rs(&args, &[]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), token);
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn check_config_passes_here_and_names_the_fix_for_missing_cni_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "").unwrap();
    let (https, etcd) = (free_port().to_string(), free_port());
    let listen = format!("127.0.0.1:{etcd}");
    let data = dir.path().join("data").display().to_string();
    let cfg_s = cfg.display().to_string();
    let base = vec![
        "check-config",
        "--config",
        &cfg_s,
        "--data-dir",
        &data,
        "--https-listen-port",
        &https,
        "--datastore-listen-address",
        &listen,
    ];
    let out = k3rs(&base, &[]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}");
    for item in [
        "kernel",
        "cgroups",
        "overlay filesystem",
        "bridge netfilter",
        "binary containerd",
        "binary runc",
        "binary nft or iptables",
        "CNI plugins",
    ] {
        let line = report
            .lines()
            .find(|l| l.contains(item))
            .unwrap_or_else(|| panic!("{item} missing:\n{report}"));
        assert!(line.starts_with("ok "), "{line}");
    }
    assert!(report.contains("k3rs server can run here."), "{report}");

    let empty = dir.path().join("no-plugins");
    std::fs::create_dir_all(&empty).unwrap();
    let arg = format!("cni-bin-dir={}", empty.display());
    let mut args = base.clone();
    args.extend(["--kubelet-arg", &arg]);
    let out = k3rs(&args, &[]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let line = report
        .lines()
        .find(|l| l.contains("CNI plugins"))
        .unwrap_or_default();
    assert!(
        line.starts_with("FAIL")
            && line.contains("bridge")
            && line.contains("fix: apt-get install containernetworking-plugins"),
        "{report}"
    );
    // Without a node to run, the same is only a note.
    args.push("--disable-agent");
    let out = k3rs(&args, &[]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn completion_scripts_cover_the_subcommands() {
    for shell in ["bash", "zsh"] {
        let out = k3rs(&["completion", shell], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let script = text(&out.stdout);
        for needle in ["k3rs", "etcd-snapshot", "--datastore-endpoint"] {
            assert!(script.contains(needle), "{shell}: {needle} missing");
        }
    }
    let bash = text(&k3rs(&["completion", "bash"], &[]).stdout);
    assert!(bash.contains("complete -F"), "not a bash completion script");
    let bad = k3rs(&["completion", "tcsh"], &[]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("tcsh"), "{}", text(&bad.stderr));
}

#[test]
fn snapshot_restore_of_a_missing_file_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "").unwrap();
    let out = k3rs(
        &[
            "etcd-snapshot",
            "restore",
            "/nonexistent/snap",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("/nonexistent/snap"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!data.join("server/db/state.db").exists());
}
