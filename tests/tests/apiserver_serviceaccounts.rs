//! Service-account tokens through the real kubectl: `kubectl create token`
//! (a protobuf TokenRequest), using the token, bound tokens dying with their
//! pod, the projected API-access volume on pods, TokenReview, the OIDC
//! discovery documents, and tokens surviving an API server restart.

use base64::Engine;
use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::{Backend, TestStore};
use serde_json::Value;

const K: &str = "1.33";

/// A kubeconfig that authenticates with `token` only (no client cert, so
/// the server sees nothing but the bearer token).
fn token_kubeconfig(cp: &ControlPlane, token: &str, name: &str) -> std::path::PathBuf {
    let (server, ca) = cp.server_and_ca().expect("server and CA");
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    let path = cp.dir.path().join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

/// `kubectl auth whoami -o json` as the token's user; Err(stderr) when the
/// server refuses it.
async fn whoami(cp: &ControlPlane, token: &str) -> Result<Value, String> {
    let kc = token_kubeconfig(cp, token, "whoami");
    let kc = kc.display().to_string();
    let out = cp
        .kubectl_raw(K, &["--kubeconfig", &kc, "auth", "whoami", "-o", "json"])
        .await
        .expect("run kubectl");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("whoami JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("JWT");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&raw).expect("claims JSON")
}

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: worker}
spec:
  serviceAccountName: robot
  initContainers: [{name: init, image: busybox}]
  containers:
  - {name: main, image: busybox}
  - name: own-mount
    image: busybox
    volumeMounts: [{name: mine, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}]
  volumes: [{name: mine, emptyDir: {}}]
"#;

async fn tokens(backend: Backend) {
    let store = TestStore::start(backend).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    cp.kubectl(K, &["create", "serviceaccount", "robot"]).await;

    // kubectl create token: a protobuf TokenRequest; the token works.
    let token = cp.kubectl(K, &["create", "token", "robot"]).await;
    let token = token.trim().to_string();
    let c = claims(&token);
    assert_eq!(c["sub"], "system:serviceaccount:default:robot");
    assert_eq!(c["iss"], "https://kubernetes.default.svc.cluster.local");
    let ttl = c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap();
    assert_eq!(ttl, 3600, "default expiry is an hour");
    let me = whoami(&cp, &token).await.expect("token accepted");
    let info = &me["status"]["userInfo"];
    assert_eq!(info["username"], "system:serviceaccount:default:robot");
    let groups: Vec<&str> = info["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for g in [
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ] {
        assert!(groups.contains(&g), "{groups:?}");
    }
    let sa: Value =
        serde_json::from_str(&cp.kubectl(K, &["get", "sa", "robot", "-o", "json"]).await).unwrap();
    assert_eq!(info["uid"], sa["metadata"]["uid"]);

    // Durations: honoured, and refused below ten minutes.
    let long = cp
        .kubectl(K, &["create", "token", "robot", "--duration=2h"])
        .await;
    let c = claims(long.trim());
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        7200
    );
    let err = cp
        .kubectl_fails(K, &["create", "token", "robot", "--duration=5m"], None)
        .await;
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let err = cp
        .kubectl_fails(K, &["create", "token", "nobody"], None)
        .await;
    assert!(
        err.contains("serviceaccounts \"nobody\" not found"),
        "{err}"
    );

    // A token for another audience is not for this server.
    let foreign = cp
        .kubectl(K, &["create", "token", "robot", "--audience=vault"])
        .await;
    assert_eq!(claims(foreign.trim())["aud"], serde_json::json!(["vault"]));
    let err = whoami(&cp, foreign.trim())
        .await
        .expect_err("foreign audience refused");
    assert!(err.contains("Unauthorized"), "{err}");
    // Garbage and forged tokens are refused with 401, not a crash.
    let mut forged: Vec<&str> = token.split('.').collect();
    let fake = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"iss":"https://kubernetes.default.svc.cluster.local","sub":"system:admin"}"#);
    forged[1] = &fake;
    for bad in [
        forged.join("."),
        "not-a-jwt".to_string(),
        "a.b.c".to_string(),
    ] {
        let err = whoami(&cp, &bad).await.expect_err("bad token refused");
        assert!(err.contains("Unauthorized"), "{err}");
    }

    // Pods get the projected API-access volume, mounted where no container
    // mounts something of its own.
    cp.kubectl_in(K, &["create", "-f", "-"], Some(POD)).await;
    let pod: Value =
        serde_json::from_str(&cp.kubectl(K, &["get", "pod", "worker", "-o", "json"]).await)
            .unwrap();
    let spec = &pod["spec"];
    let vol = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .expect("projected volume")
        .clone();
    let sources = &vol["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(sources[2]["downwardAPI"]["items"][0]["path"], "namespace");
    let mount_of = |c: &Value| -> Vec<String> {
        c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        mount_of(&spec["initContainers"][0]),
        vec![vol["name"].as_str().unwrap()]
    );
    assert_eq!(
        mount_of(&spec["containers"][0]),
        vec![vol["name"].as_str().unwrap()]
    );
    assert_eq!(mount_of(&spec["containers"][1]), vec!["mine"]);

    let off = POD.replace("name: worker", "name: quiet").replace(
        "  serviceAccountName: robot\n",
        "  serviceAccountName: robot\n  automountServiceAccountToken: false\n",
    );
    cp.kubectl_in(K, &["create", "-f", "-"], Some(&off)).await;
    let quiet = cp
        .kubectl(
            K,
            &[
                "get",
                "pod",
                "quiet",
                "-o",
                "jsonpath={.spec.volumes[*].name}",
            ],
        )
        .await;
    assert_eq!(quiet.trim(), "mine");
    let err = cp
        .kubectl_fails(
            K,
            &["create", "-f", "-"],
            Some(
                &POD.replace("name: worker", "name: lost")
                    .replace("robot", "ghost"),
            ),
        )
        .await;
    assert!(err.contains("serviceaccount \"ghost\" not found"), "{err}");

    // A pod-bound token names the pod and dies with it.
    let bound = cp
        .kubectl(
            K,
            &[
                "create",
                "token",
                "robot",
                "--bound-object-kind=Pod",
                "--bound-object-name=worker",
            ],
        )
        .await;
    let bound = bound.trim().to_string();
    assert_eq!(
        claims(&bound)["kubernetes.io"]["pod"]["uid"],
        pod["metadata"]["uid"]
    );
    let me = whoami(&cp, &bound).await.expect("bound token accepted");
    assert_eq!(
        me["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"],
        serde_json::json!(["worker"])
    );
    cp.kubectl(
        K,
        &["delete", "pod", "worker", "--grace-period=0", "--force"],
    )
    .await;
    let err = whoami(&cp, &bound)
        .await
        .expect_err("token of a deleted pod");
    assert!(err.contains("Unauthorized"), "{err}");

    // TokenReview answers for any token.
    let review = format!(
        r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{token}"}}}}"#
    );
    let out = cp
        .kubectl_in(
            K,
            &[
                "create",
                "--raw",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                "-f",
                "-",
            ],
            Some(&review),
        )
        .await;
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(
        r["status"]["user"]["username"],
        "system:serviceaccount:default:robot"
    );

    // The OIDC discovery documents publish the key that signed the token.
    let oidc: Value = serde_json::from_str(
        &cp.kubectl(K, &["get", "--raw", "/.well-known/openid-configuration"])
            .await,
    )
    .unwrap();
    assert_eq!(
        oidc["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    let jwks: Value =
        serde_json::from_str(&cp.kubectl(K, &["get", "--raw", "/openid/v1/jwks"]).await).unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == header["kid"]),
        "{jwks}"
    );

    // The signing key survives a restart: the token still works after it.
    let cp = cp.restart(store.endpoint()).await.expect("restart");
    whoami(&cp, &token)
        .await
        .expect("token valid after restart");
    // Deleting the service account revokes its tokens.
    cp.kubectl(K, &["delete", "sa", "robot"]).await;
    let err = whoami(&cp, &token).await.expect_err("service account gone");
    assert!(err.contains("Unauthorized"), "{err}");
    cp.shutdown();
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_on_shim() {
    tokens(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_on_etcd() {
    tokens(Backend::Etcd).await;
}
