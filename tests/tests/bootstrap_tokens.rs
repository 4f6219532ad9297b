//! `k3rs token create|list|delete`: bootstrap tokens agents join with,
//! through the real `k3rs` binary, the real API server and the real
//! `k3rs-node-agent` join flow.

use std::time::Duration;

use k3rs_e2e::supervisor::{K3rsServer, ServerOptions, node_agent_join};

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn agents_join_with_a_bootstrap_token_until_it_is_deleted_or_expired() {
    let tmp = tempfile::Builder::new()
        .prefix("k3rs-btok")
        .tempdir()
        .unwrap();
    let mut server = K3rsServer::start(tmp.path(), &ServerOptions::default()).unwrap();
    server.wait_ready(Duration::from_secs(90)).unwrap();

    let token = stdout(
        &server
            .k3rs(&[
                "token",
                "create",
                "--ttl",
                "2h",
                "--description",
                "ci agents",
            ])
            .unwrap(),
    )
    .trim()
    .to_string();
    // K10<hash of this cluster's CA>::<6>.<16>
    let ca = std::fs::read_to_string(server.data_dir.join("server/tls/server-ca.crt")).unwrap();
    let (prefix, creds) = token.split_once("::").unwrap();
    assert_eq!(prefix, format!("K10{}", k3rs_common::token::ca_hash(&ca)));
    let (id, secret) = creds.split_once('.').unwrap();
    assert_eq!((id.len(), secret.len()), (6, 16), "{token}");

    let list = stdout(&server.k3rs(&["token", "list"]).unwrap());
    let header = list.lines().next().unwrap_or_default();
    for col in ["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION"] {
        assert!(header.contains(col), "{list}");
    }
    let row = list
        .lines()
        .find(|l| l.starts_with(&format!("{id}.")))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains(" 1h ") && row.contains("ci agents"), "{row}");
    let stored = server
        .kubectl_until_ok(
            &[
                "get",
                "secret",
                "-n",
                "kube-system",
                &format!("bootstrap-token-{id}"),
                "-o",
                "jsonpath={.type}",
            ],
            None,
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(stored, "bootstrap.kubernetes.io/token");

    // An agent joins with it.
    let root = tmp.path().join("agents");
    let (code, err) = node_agent_join(
        &server,
        &root.join("a"),
        &token,
        "btok-a",
        &root.join("a-password"),
    )
    .unwrap();
    assert_eq!(code, None, "the join should go through: {err}");

    // Deleted: the same token is refused.
    let out = stdout(&server.k3rs(&["token", "delete", id]).unwrap());
    assert!(out.contains(id), "{out}");
    let (code, err) = node_agent_join(
        &server,
        &root.join("b"),
        &token,
        "btok-b",
        &root.join("b-password"),
    )
    .unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("401"), "{err}");
    let list = stdout(&server.k3rs(&["token", "list"]).unwrap());
    assert!(!list.contains(id), "{list}");
    let again = server.k3rs(&["token", "delete", id]).unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not found"));

    // Expired: refused too, and listed as such.
    server
        .kubectl_until_ok(
            &[
                "create",
                "secret",
                "generic",
                "bootstrap-token-old123",
                "-n",
                "kube-system",
                "--type",
                "bootstrap.kubernetes.io/token",
                "--from-literal=token-id=old123",
                "--from-literal=token-secret=0123456789abcdef",
                "--from-literal=expiration=2020-01-01T00:00:00Z",
                "--from-literal=usage-bootstrap-authentication=true",
            ],
            None,
            Duration::from_secs(10),
        )
        .unwrap();
    let list = stdout(&server.k3rs(&["token", "list"]).unwrap());
    assert!(
        list.lines()
            .any(|l| l.starts_with("old123.") && l.contains("<expired>")),
        "{list}"
    );
    let old = format!("{prefix}::old123.0123456789abcdef");
    let (code, err) = node_agent_join(
        &server,
        &root.join("c"),
        &old,
        "btok-c",
        &root.join("c-password"),
    )
    .unwrap();
    assert_eq!(code, Some(2), "{err}");

    // A bad --ttl is a usage error.
    let bad = server.k3rs(&["token", "create", "--ttl", "soon"]).unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
