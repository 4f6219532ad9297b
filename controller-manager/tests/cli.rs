//! The binary's flag handling: bad flags exit 2 with one line on stderr.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_k3rs-controller-manager"))
        .args(args)
        .env_remove("K3RS_KUBECONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        &["--bogus"][..],
        &[
            "--kubeconfig",
            "/nonexistent",
            "--node-cidr-mask-size",
            "40",
        ],
        &[
            "--kubeconfig",
            "/nonexistent",
            "--node-monitor-grace-period",
            "soon",
        ],
    ] {
        let (code, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("k3rs-controller-manager: "), "{err}");
    }
}

#[test]
fn unreadable_kubeconfig_fails_with_exit_1() {
    let (code, err) = run(&[
        "--kubeconfig",
        "/nonexistent/kubeconfig",
        "--secure-port",
        "0",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
}
