//! The real kubectl (1.32 and 1.33) against k3rs-apiserver, on the shim
//! (SQLite) and on a real etcd 3.4: what a user types, and what they see.

use std::time::Duration;

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::{Backend, TestStore};
use serde_json::Value;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
        env:
        - {name: A, value: "1"}
      - name: sidecar
        image: busybox
"#;

async fn with_cluster<F, Fut>(backend: Backend, f: F)
where
    F: FnOnce(ControlPlane) -> Fut,
    Fut: std::future::Future<Output = ControlPlane>,
{
    let store = TestStore::start(backend).await.expect("start datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("start apiserver");
    let cp = f(cp).await;
    cp.shutdown();
    store.stop().await;
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// create, get in every output format, describe, label, annotate, scale,
/// delete, and the errors a user sees.
async fn crud(cp: ControlPlane, k: &str) -> ControlPlane {
    let out = cp
        .kubectl_in(k, &["create", "-f", "-"], Some(DEPLOYMENT))
        .await;
    assert_eq!(out.trim(), "deployment.apps/web created");
    let err = cp
        .kubectl_fails(k, &["create", "-f", "-"], Some(DEPLOYMENT))
        .await;
    assert!(
        err.contains("AlreadyExists") && err.contains("deployments.apps \"web\" already exists"),
        "{err}"
    );

    let d = json(
        &cp.kubectl(
            k,
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "json",
                "--show-managed-fields",
            ],
        )
        .await,
    );
    // Defaults filled by the server.
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"],
        "Always"
    );
    assert_eq!(d["metadata"]["generation"], 1);
    assert!(d["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(d["metadata"]["managedFields"].is_array());

    let table = cp.kubectl(k, &["get", "deploy"]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(lines.next().unwrap_or("").starts_with("web "), "{table}");
    let wide = cp.kubectl(k, &["get", "deploy", "-o", "wide"]).await;
    assert!(
        wide.contains("CONTAINERS")
            && wide.contains("nginx,sidecar")
            && wide.contains("nginx:1.25,busybox")
            && wide.contains("app=web"),
        "{wide}"
    );
    let yaml = cp.kubectl(k, &["get", "deploy", "web", "-o", "yaml"]).await;
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 2"),
        "{yaml}"
    );
    let jp = cp
        .kubectl(
            k,
            &[
                "get",
                "deploy",
                "-o",
                "jsonpath={.items[*].spec.template.spec.containers[*].name}",
            ],
        )
        .await;
    assert_eq!(jp, "nginx sidecar");
    let names = cp
        .kubectl(k, &["get", "deploy,cm", "-n", "default", "-o", "name"])
        .await;
    assert!(names.contains("deployment.apps/web"), "{names}");

    let desc = cp.kubectl(k, &["describe", "deployment", "web"]).await;
    assert!(
        desc.contains("Name:")
            && desc.contains("web")
            && desc.contains("Replicas:")
            && desc.contains("2 desired"),
        "{desc}"
    );

    assert_eq!(
        cp.kubectl(k, &["label", "deploy", "web", "tier=frontend"])
            .await
            .trim(),
        "deployment.apps/web labeled"
    );
    assert_eq!(
        cp.kubectl(k, &["annotate", "deploy", "web", "note=hello"])
            .await
            .trim(),
        "deployment.apps/web annotated"
    );
    let sel = cp
        .kubectl(
            k,
            &[
                "get",
                "deploy",
                "-l",
                "tier=frontend,app in (web)",
                "-o",
                "name",
            ],
        )
        .await;
    assert_eq!(sel.trim(), "deployment.apps/web");
    let none = cp
        .kubectl(k, &["get", "deploy", "-l", "tier!=frontend", "-o", "name"])
        .await;
    assert_eq!(none.trim(), "");

    assert_eq!(
        cp.kubectl(k, &["scale", "deploy", "web", "--replicas=5"])
            .await
            .trim(),
        "deployment.apps/web scaled"
    );
    let d = json(&cp.kubectl(k, &["get", "deploy", "web", "-o", "json"]).await);
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2, "scale changes the spec");
    assert_eq!(d["metadata"]["labels"]["tier"], "frontend");
    assert_eq!(d["metadata"]["annotations"]["note"], "hello");

    // Invalid objects: 422 with field paths, as kubectl prints them.
    let bad = DEPLOYMENT
        .replace("name: web\n  labels", "name: Web_Bad\n  labels")
        .replace("replicas: 2", "replicas: -1");
    let err = cp
        .kubectl_fails(k, &["create", "-f", "-"], Some(&bad))
        .await;
    assert!(
        err.contains("is invalid")
            && err.contains("metadata.name: Invalid value: \"Web_Bad\"")
            && err.contains("spec.replicas: Invalid value: -1"),
        "{err}"
    );
    // Unknown fields are refused by server-side strict validation.
    let unknown = DEPLOYMENT.replace("replicas: 2", "replicas: 2\n  bogus: 1");
    let err = cp
        .kubectl_fails(k, &["create", "-f", "-"], Some(&unknown))
        .await;
    assert!(err.contains("unknown field \"spec.bogus\""), "{err}");
    let err = cp.kubectl_fails(k, &["get", "deploy", "nope"], None).await;
    assert!(
        err.contains("NotFound") && err.contains("deployments.apps \"nope\" not found"),
        "{err}"
    );
    let err = cp.kubectl_fails(k, &["get", "frobnicators"], None).await;
    assert!(
        err.contains("the server doesn't have a resource type \"frobnicators\""),
        "{err}"
    );
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n";
    let err = cp
        .kubectl_fails(k, &["create", "-n", "missing-ns", "-f", "-"], Some(cm))
        .await;
    assert!(err.contains("namespaces \"missing-ns\" not found"), "{err}");

    assert_eq!(
        cp.kubectl(k, &["delete", "deploy", "web"]).await.trim(),
        "deployment.apps \"web\" deleted"
    );
    let err = cp.kubectl_fails(k, &["get", "deploy", "web"], None).await;
    assert!(err.contains("not found"), "{err}");
    cp
}

/// Client-side apply (default validation), re-apply, server-side apply,
/// edit with a scripted editor, and the three patch types.
async fn apply_edit_patch(cp: ControlPlane, k: &str) -> ControlPlane {
    let out = cp
        .kubectl_in(k, &["apply", "-f", "-"], Some(DEPLOYMENT))
        .await;
    assert_eq!(out.trim(), "deployment.apps/web created");
    let again = cp
        .kubectl_in(k, &["apply", "-f", "-"], Some(DEPLOYMENT))
        .await;
    assert_eq!(again.trim(), "deployment.apps/web unchanged");
    // Re-apply with one container's image changed and the env var removed:
    // the three-way strategic merge keeps the other container.
    let changed = DEPLOYMENT
        .replace("nginx:1.25", "nginx:1.26")
        .replace("        env:\n        - {name: A, value: \"1\"}\n", "");
    let out = cp
        .kubectl_in(k, &["apply", "-f", "-"], Some(&changed))
        .await;
    assert_eq!(out.trim(), "deployment.apps/web configured");
    let d = json(&cp.kubectl(k, &["get", "deploy", "web", "-o", "json"]).await);
    let c = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(c[0]["image"], "nginx:1.26");
    assert!(c[0].get("env").is_none(), "env removed by apply: {c}");
    assert_eq!(c[1]["name"], "sidecar");
    assert_eq!(d["metadata"]["generation"], 2);

    // Strategic merge patch: one container's image, merged by name.
    cp.kubectl(k, &["patch", "deploy", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.36"}]}}}}"#]).await;
    // JSON merge patch.
    cp.kubectl(
        k,
        &[
            "patch",
            "deploy",
            "web",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"merged":"yes"}}}"#,
        ],
    )
    .await;
    // JSON patch.
    cp.kubectl(
        k,
        &[
            "patch",
            "deploy",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
        ],
    )
    .await;
    let d = json(&cp.kubectl(k, &["get", "deploy", "web", "-o", "json"]).await);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][1]["image"],
        "busybox:1.36"
    );
    assert_eq!(d["metadata"]["labels"]["merged"], "yes");
    assert_eq!(d["spec"]["replicas"], 3);
    let err = cp
        .kubectl_fails(
            k,
            &[
                "patch",
                "deploy",
                "web",
                "--type=json",
                "-p",
                r#"[{"op":"test","path":"/spec/replicas","value":9}]"#,
            ],
            None,
        )
        .await;
    assert!(err.contains("testing value /spec/replicas failed"), "{err}");

    // kubectl edit with a scripted editor.
    let out = cp
        .kubectl_with(
            k,
            &["edit", "deploy", "web"],
            None,
            &[("KUBE_EDITOR", "sed -i s/replicas:\\ 3/replicas:\\ 4/")],
        )
        .await
        .expect("kubectl edit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deployment.apps/web edited"
    );
    let r = cp
        .kubectl(
            k,
            &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
        )
        .await;
    assert_eq!(r, "4");

    // Server-side apply of a ConfigMap by two managers: a conflict, then force.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n";
    let out = cp
        .kubectl_in(k, &["apply", "--server-side", "-f", "-"], Some(cm))
        .await;
    assert_eq!(out.trim(), "configmap/settings serverside-applied");
    let other = cm.replace("blue", "red");
    let err = cp
        .kubectl_fails(
            k,
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            Some(&other),
        )
        .await;
    assert!(
        err.contains("conflict") && err.contains(".data.color"),
        "{err}"
    );
    cp.kubectl_in(
        k,
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(&other),
    )
    .await;
    let color = cp
        .kubectl(
            k,
            &["get", "cm", "settings", "-o", "jsonpath={.data.color}"],
        )
        .await;
    assert_eq!(color, "red");
    let mf = json(
        &cp.kubectl(
            k,
            &[
                "get",
                "cm",
                "settings",
                "-o",
                "json",
                "--show-managed-fields",
            ],
        )
        .await,
    );
    let managers: Vec<&str> = mf["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["manager"].as_str()).collect())
        .unwrap_or_default();
    assert!(managers.contains(&"other"), "{managers:?}");
    cp
}

/// get -w sees changes; wait returns when a condition holds.
async fn watch_and_wait(cp: ControlPlane, k: &str) -> ControlPlane {
    let cm = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: \"1\"\n")
    };
    cp.kubectl_in(k, &["create", "-f", "-"], Some(&cm("w1")))
        .await;
    let mut watcher = cp
        .kubectl_command(
            k,
            &[
                "get",
                "cm",
                "-w",
                "--output-watch-events",
                "-o",
                "custom-columns=EVENT:.type,NAME:.object.metadata.name",
                "--no-headers",
            ],
        )
        .expect("kubectl")
        .spawn()
        .expect("spawn kubectl get -w");
    let stdout = watcher.stdout.take().expect("stdout");
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            let l: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            seen.push(l.join(" "));
            if seen.iter().any(|s| s == "DELETED w2") {
                break;
            }
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cp.kubectl_in(k, &["create", "-f", "-"], Some(&cm("w2")))
        .await;
    cp.kubectl(
        k,
        &[
            "patch",
            "cm",
            "w2",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"2"}}"#,
        ],
    )
    .await;
    cp.kubectl(k, &["delete", "cm", "w2"]).await;
    let seen = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("watch saw the delete")
        .expect("reader");
    for want in ["ADDED w1", "ADDED w2", "MODIFIED w2", "DELETED w2"] {
        assert!(seen.iter().any(|s| s == want), "missing {want} in {seen:?}");
    }
    drop(watcher);

    // wait --for=jsonpath returns once a later patch makes it true.
    let waiter = cp.kubectl_with(
        k,
        &[
            "wait",
            "cm/w1",
            "--for=jsonpath={.data.a}=done",
            "--timeout=20s",
        ],
        None,
        &[],
    );
    let patcher = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        cp.kubectl(
            k,
            &[
                "patch",
                "cm",
                "w1",
                "--type=merge",
                "-p",
                r#"{"data":{"a":"done"}}"#,
            ],
        )
        .await
    };
    let (out, _) = tokio::join!(waiter, patcher);
    let out = out.expect("kubectl wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configmap/w1 condition met"
    );
    let del = cp.kubectl(k, &["delete", "cm", "w1", "--wait=true"]).await;
    assert_eq!(del.trim(), "configmap \"w1\" deleted");
    cp
}

/// Discovery, explain and auth.
async fn discovery_explain_auth(cp: ControlPlane, k: &str) -> ControlPlane {
    let res = cp.kubectl(k, &["api-resources"]).await;
    let line = res
        .lines()
        .find(|l| l.starts_with("deployments "))
        .unwrap_or_default();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cols,
        ["deployments", "deploy", "apps/v1", "true", "Deployment"],
        "{res}"
    );
    assert!(
        res.lines()
            .any(|l| l.starts_with("pods ") && l.contains("po") && l.contains("Pod"))
    );
    let versions = cp.kubectl(k, &["api-versions"]).await;
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "rbac.authorization.k8s.io/v1",
        "coordination.k8s.io/v1",
    ] {
        assert!(versions.lines().any(|l| l == gv), "{gv} in {versions}");
    }
    let ex = cp
        .kubectl(k, &["explain", "deployment.spec.replicas"])
        .await;
    assert!(
        ex.contains("KIND:")
            && ex.contains("Deployment")
            && ex.contains("replicas")
            && ex.contains("integer"),
        "{ex}"
    );
    let ex = cp.kubectl(k, &["explain", "pods.spec.containers"]).await;
    assert!(ex.contains("image") && ex.contains("<string>"), "{ex}");
    assert_eq!(
        cp.kubectl(k, &["auth", "can-i", "create", "pods"])
            .await
            .trim(),
        "yes"
    );
    let who = json(&cp.kubectl(k, &["auth", "whoami", "-o", "json"]).await);
    assert_eq!(who["status"]["userInfo"]["username"], "system:admin");
    let v = json(&cp.kubectl(k, &["version", "-o", "json"]).await);
    let git = v["serverVersion"]["gitVersion"].as_str().unwrap_or("");
    assert!(git.starts_with("v1.33.") && git.contains("k3rs"), "{git}");
    cp
}

/// kubectl's generators send protobuf bodies (typed client-go clients):
/// create configmap/secret/deployment/service/job/namespace/quota/role,
/// expose, and the objects come back as kubectl itself built them.
async fn generators(cp: ControlPlane, k: &str) -> ControlPlane {
    let run = |args: &'static [&'static str]| {
        let cp = &cp;
        async move { cp.kubectl(k, args).await }
    };
    let out = run(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=two",
    ])
    .await;
    assert_eq!(out.trim(), "configmap/cfg created");
    let cm = json(&run(&["get", "cm", "cfg", "-o", "json"]).await);
    assert_eq!(cm["data"], serde_json::json!({"a": "1", "b": "two"}));

    let out = run(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=password=s3cr3t",
    ])
    .await;
    assert_eq!(out.trim(), "secret/sec created");
    let sec = json(&run(&["get", "secret", "sec", "-o", "json"]).await);
    assert_eq!(sec["data"]["password"], "czNjcjN0");
    assert_eq!(sec["type"], "Opaque");

    let out = run(&[
        "create",
        "deployment",
        "gen",
        "--image=busybox:1.36",
        "--replicas=0",
        "--port=8080",
    ])
    .await;
    assert_eq!(out.trim(), "deployment.apps/gen created");
    let d = json(&run(&["get", "deploy", "gen", "-o", "json"]).await);
    assert_eq!(d["spec"]["replicas"], 0, "a pointer zero survives");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "gen");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "busybox:1.36");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(
        c["imagePullPolicy"], "IfNotPresent",
        "server defaults apply"
    );
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");

    let out = run(&[
        "expose",
        "deployment",
        "gen",
        "--port=80",
        "--target-port=8080",
    ])
    .await;
    assert_eq!(out.trim(), "service/gen exposed");
    let svc = json(&run(&["get", "svc", "gen", "-o", "json"]).await);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["selector"]["app"], "gen");
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.43."))
    );

    let out = run(&["create", "service", "nodeport", "np", "--tcp=80:8080"]).await;
    assert_eq!(out.trim(), "service/np created");
    let np = json(&run(&["get", "svc", "np", "-o", "json"]).await);
    assert!(
        np["spec"]["ports"][0]["nodePort"]
            .as_i64()
            .is_some_and(|p| p >= 30000)
    );
    assert_eq!(np["spec"]["ports"][0]["targetPort"], 8080);

    for (args, want) in [
        (
            &["create", "namespace", "gen-ns"][..],
            "namespace/gen-ns created",
        ),
        (
            &[
                "create",
                "job",
                "once",
                "--image=busybox:1.36",
                "--",
                "true",
            ][..],
            "job.batch/once created",
        ),
        (
            &[
                "create",
                "cronjob",
                "tick",
                "--image=busybox:1.36",
                "--schedule=*/5 * * * *",
            ][..],
            "cronjob.batch/tick created",
        ),
        (
            &["create", "quota", "q", "--hard=pods=10"][..],
            "resourcequota/q created",
        ),
        (
            &["create", "serviceaccount", "robot"][..],
            "serviceaccount/robot created",
        ),
        (
            &[
                "create",
                "role",
                "reader",
                "--verb=get,list",
                "--resource=pods",
            ][..],
            "role.rbac.authorization.k8s.io/reader created",
        ),
        (
            &[
                "create",
                "rolebinding",
                "rb",
                "--role=reader",
                "--serviceaccount=default:robot",
            ][..],
            "rolebinding.rbac.authorization.k8s.io/rb created",
        ),
        (
            &["create", "priorityclass", "high", "--value=1000"][..],
            "priorityclass.scheduling.k8s.io/high created",
        ),
        (
            &[
                "create",
                "pdb",
                "gen-pdb",
                "--selector=app=gen",
                "--min-available=1",
            ][..],
            "poddisruptionbudget.policy/gen-pdb created",
        ),
    ] {
        let out = cp.kubectl(k, args).await;
        assert_eq!(out.trim(), want, "{args:?}");
    }
    let job = json(&run(&["get", "job", "once", "-o", "json"]).await);
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["true"])
    );
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    let role = json(&run(&["get", "role", "reader", "-o", "json"]).await);
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["get", "list"])
    );

    // A duplicate create through protobuf is the same AlreadyExists.
    let err = cp
        .kubectl_fails(
            k,
            &["create", "configmap", "cfg", "--from-literal=a=1"],
            None,
        )
        .await;
    assert!(err.contains("configmaps \"cfg\" already exists"), "{err}");
    cp
}

macro_rules! matrix {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn shim_sqlite_kubectl_1_32() {
                with_cluster(Backend::Sqlite, |cp| super::$scenario(cp, "1.32")).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn shim_sqlite_kubectl_1_33() {
                with_cluster(Backend::Sqlite, |cp| super::$scenario(cp, "1.33")).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd_kubectl_1_33() {
                with_cluster(Backend::Etcd, |cp| super::$scenario(cp, "1.33")).await;
            }
        }
    )*};
}

matrix!(
    crud,
    apply_edit_patch,
    watch_and_wait,
    discovery_explain_auth,
    generators
);
