//! Pod lifecycle in k3rs-node-agent end to end: probes (exec, httpGet,
//! tcpSocket; startup, liveness, readiness) against busybox pods on a
//! private containerd, with a real apiserver + datastore and kubectl as the
//! user. Needs root and the packages scripts/setup.sh installs.
//!
//! One test drives every scenario: they share one containerd and one pod
//! bridge of their own (the bridge plugin refuses a second pod subnet on a
//! bridge another test holds). The pods of a scenario run side by side to
//! keep the wall time down.

use std::path::Path;
use std::time::{Duration, Instant};

use k3rs_e2e::cluster::ControlPlane;
use k3rs_e2e::containerd::{BUSYBOX_IMAGE, Containerd};
use k3rs_e2e::{Backend, TestStore};

const NODE: &str = "k3rs-podlife-e2e";
const POD_CIDR: &str = "10.244.83.0/24";
const BRIDGE: &str = "k3rslc0";
const V: &str = "1.33";

fn agent_config(cp: &ControlPlane, ctd: &Containerd, dir: &Path) -> k3rs_node_agent::Config {
    ctd.agent_config(&cp.kubeconfig, NODE, POD_CIDR, BRIDGE, dir)
}

async fn jsonpath(cp: &ControlPlane, what: &[&str], path: &str) -> String {
    cp.jsonpath(V, what, path).await
}

async fn events_of(cp: &ControlPlane, pod: &str) -> String {
    let sel = format!("involvedObject.name={pod}");
    cp.kubectl(V, &["get", "events", "--field-selector", &sel])
        .await
}

/// Polls `f` until it returns Some; on timeout prints the pods, events and
/// containerd's log, then fails with `what`.
async fn wait_for<T, F, Fut>(
    cp: &ControlPlane,
    ctd: &Containerd,
    what: &str,
    timeout: Duration,
    mut f: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            let pods = cp
                .kubectl_raw(V, &["get", "pods", "-o", "yaml"])
                .await
                .unwrap();
            let events = cp.kubectl_raw(V, &["get", "events", "-A"]).await.unwrap();
            let log = ctd.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "timed out waiting for {what}\npods:\n{}\nevents:\n{}{}\ncontainerd log (newest first):\n{}",
                String::from_utf8_lossy(&pods.stdout),
                String::from_utf8_lossy(&events.stdout),
                String::from_utf8_lossy(&events.stderr),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn pod(name: &str, grace: u32, containers: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: {grace}
  containers:
{containers}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_agent_pod_lifecycle() {
    let store = TestStore::start(Backend::Sqlite).await.expect("datastore");
    let cp = ControlPlane::start(store.endpoint())
        .await
        .expect("apiserver");
    let ctd = Containerd::start().await.expect("containerd");
    let dir = tempfile::tempdir().unwrap();
    let agent = k3rs_node_agent::start(agent_config(&cp, &ctd, dir.path()))
        .await
        .expect("start agent");
    wait_for(&cp, &ctd, "node Ready", Duration::from_secs(60), || async {
        let s = jsonpath(
            &cp,
            &["node", NODE],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        )
        .await;
        (s == "True").then_some(())
    })
    .await;
    // What the controller manager would publish; the pods' token volume needs both.
    cp.kubectl(V, &["create", "serviceaccount", "default"])
        .await;
    let ca = format!("--from-file=ca.crt={}", cp.api.ca_file.display());
    cp.kubectl(V, &["create", "configmap", "kube-root-ca.crt", &ca])
        .await;

    // --- Probes. All pods start at once; each is checked below.
    // `ready`: an exec readiness probe passes only once the app wrote its file.
    let ready = pod(
        "ready",
        1,
        &format!(
            r#"  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "sleep 15; touch /tmp/ready; sleep 3600"]
    readinessProbe:
      exec: {{command: ["cat", "/tmp/ready"]}}
      periodSeconds: 1
"#
        ),
    );
    // `live`: healthy for a few seconds, then the exec liveness probe fails
    // and the container is restarted.
    let live = pod(
        "live",
        1,
        &format!(
            r#"  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "touch /tmp/healthy; sleep 4; rm /tmp/healthy; sleep 3600"]
    livenessProbe:
      exec: {{command: ["cat", "/tmp/healthy"]}}
      periodSeconds: 1
      failureThreshold: 2
"#
        ),
    );
    // `web`: busybox httpd; httpGet readiness with a header and a named
    // port, tcpSocket liveness on the same port (passes), and a second
    // container whose readiness never passes. (Status codes other than
    // 2xx/3xx are covered by the prober's unit tests: host-to-pod
    // connections on this shared test host stall now and then.)
    let web = pod(
        "web",
        1,
        &format!(
            r#"  - name: server
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /healthz, port: http, httpHeaders: [{{name: X-Probe, value: k3rs}}]}}
      periodSeconds: 1
    livenessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
      timeoutSeconds: 3
      failureThreshold: 15
  - name: sidecar
    image: {BUSYBOX_IMAGE}
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {{command: ["false"]}}
      periodSeconds: 1
"#
        ),
    );
    // `slow`: a startup probe that never passes; liveness (which would pass)
    // is never run, and the container is restarted for the startup probe.
    let slow = pod(
        "slow",
        1,
        &format!(
            r#"  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sleep", "3600"]
    startupProbe:
      tcpSocket: {{port: 9999}}
      periodSeconds: 1
      failureThreshold: 3
    livenessProbe:
      exec: {{command: ["true"]}}
      periodSeconds: 1
"#
        ),
    );
    // --- Resources: limits reach the container's cgroups, under the
    // kubepods hierarchy of its QoS class; past its memory limit a container
    // is OOM-killed.
    let report = r#"["sh", "-c", "echo cgroup=$(grep :memory: /proc/self/cgroup); echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); echo quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us); echo shares=$(cat /sys/fs/cgroup/cpu/cpu.shares); echo oom=$(cat /proc/self/oom_score_adj); sleep 3600"]"#;
    let guar = pod(
        "guar",
        1,
        &format!(
            r#"  - name: app
    image: {BUSYBOX_IMAGE}
    command: {report}
    resources:
      limits: {{cpu: 500m, memory: 64Mi}}
"#
        ),
    );
    let burst = pod(
        "burst",
        1,
        &format!(
            r#"  - name: app
    image: {BUSYBOX_IMAGE}
    command: {report}
    resources:
      requests: {{cpu: 100m, memory: 16Mi}}
      limits: {{memory: 64Mi}}
"#
        ),
    );
    let oom = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: oom
spec:
  nodeName: {NODE}
  restartPolicy: Never
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "x=a; while :; do x=$x$x; done"]
    resources:
      limits: {{memory: 32Mi}}
"#
    );
    // --- Termination messages: from the file, and from the log on error.
    let msg = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: msg
spec:
  nodeName: {NODE}
  restartPolicy: Never
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "echo -n bye from app > /dev/termination-log; exit 3"]
  - name: custom
    image: {BUSYBOX_IMAGE}
    terminationMessagePath: /tmp/why
    command: ["sh", "-c", "echo done > /tmp/why"]
  - name: fallback
    image: {BUSYBOX_IMAGE}
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "echo some log; sleep 1; echo boom >&2; exit 2"]
"#
    );
    // --- Lifecycle hooks: postStart runs right after the start, preStop
    // before SIGTERM on deletion; a failing postStart kills the container.
    let shared = dir.path().join("hooks");
    let hooks = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hooks
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 20
  volumes:
  - name: shared
    hostPath: {{path: {shared}, type: DirectoryOrCreate}}
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "trap 'echo term >> /shared/order; exit 0' TERM; while [ ! -f /tmp/ps ]; do sleep 1; done; echo poststart=$(cat /tmp/ps); sleep 3600 & wait"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo ran > /tmp/ps"]}}
      preStop:
        exec: {{command: ["sh", "-c", "echo prestop >> /shared/order; sleep 2"]}}
"#,
        shared = shared.display()
    );
    let badhook = pod(
        "badhook",
        1,
        &format!(
            r#"  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sleep", "3600"]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo no-way; exit 7"]}}
"#
        ),
    );
    // --- securityContext.
    let secure = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: secure
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "echo uid=$(id -u) gid=$(id -g); touch /x 2>/dev/null || echo ro-ok; grep -E '^(CapBnd|NoNewPrivs)' /proc/self/status; echo done; sleep 3600"]
    securityContext:
      runAsUser: 1000
      runAsGroup: 3000
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL], add: [NET_BIND_SERVICE]}}
  - name: priv
    image: {BUSYBOX_IMAGE}
    command: ["sh", "-c", "grep -E '^CapBnd' /proc/self/status; echo done; sleep 3600"]
    securityContext: {{privileged: true}}
"#
    );
    let nonroot = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: nonroot
spec:
  nodeName: {NODE}
  securityContext: {{runAsNonRoot: true}}
  containers:
  - name: app
    image: {BUSYBOX_IMAGE}
    command: ["sleep", "3600"]
"#
    );
    for p in [
        &ready, &live, &web, &slow, &guar, &burst, &oom, &msg, &hooks, &badhook,
    ] {
        cp.kubectl_in(V, &["apply", "-f", "-"], Some(p)).await;
    }

    // ready: Running but 0/1 until the file exists, then 1/1 with Ready=True.
    wait_for(
        &cp,
        &ctd,
        "ready Running and unready",
        Duration::from_secs(90),
        || async {
            let s = jsonpath(
                &cp,
                &["pod", "ready"],
                "{.status.phase} {.status.containerStatuses[0].ready} {.status.conditions[?(@.type==\"Ready\")].status}",
            )
            .await;
            (s == "Running false False").then_some(())
        },
    )
    .await;
    let row = cp
        .kubectl(V, &["get", "pod", "ready", "--no-headers"])
        .await;
    assert!(row.contains("0/1") && row.contains("Running"), "{row}");
    let reason = jsonpath(
        &cp,
        &["pod", "ready"],
        "{.status.conditions[?(@.type==\"ContainersReady\")].reason}",
    )
    .await;
    assert_eq!(reason, "ContainersNotReady");
    let events = events_of(&cp, "ready").await;
    assert!(
        events.contains("Readiness probe failed: cat: can't open '/tmp/ready'"),
        "{events}"
    );
    wait_for(&cp, &ctd, "ready Ready", Duration::from_secs(30), || async {
        let s = jsonpath(
            &cp,
            &["pod", "ready"],
            "{.status.containerStatuses[0].ready} {.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"ContainersReady\")].status}",
        )
        .await;
        (s == "true True True").then_some(())
    })
    .await;
    let row = cp
        .kubectl(V, &["get", "pod", "ready", "--no-headers"])
        .await;
    assert!(row.contains("1/1"), "{row}");
    let restarts = jsonpath(
        &cp,
        &["pod", "ready"],
        "{.status.containerStatuses[0].restartCount}",
    )
    .await;
    assert_eq!(restarts, "0", "readiness failures never restart");

    // live: Unhealthy + Killing events, then a restart; the killed instance
    // shows in lastState.
    wait_for(
        &cp,
        &ctd,
        "live restarted",
        Duration::from_secs(90),
        || async {
            let s = jsonpath(
                &cp,
                &["pod", "live"],
                "{.status.containerStatuses[0].restartCount}",
            )
            .await;
            (s.parse::<u32>().unwrap_or(0) >= 1).then_some(())
        },
    )
    .await;
    let events = events_of(&cp, "live").await;
    assert!(
        events.contains("Liveness probe failed: cat: can't open '/tmp/healthy'"),
        "{events}"
    );
    assert!(events.contains("Unhealthy"), "{events}");
    assert!(
        events.contains("Container app failed liveness probe, will be restarted"),
        "{events}"
    );
    assert!(events.contains("Killing"), "{events}");
    let last = jsonpath(
        &cp,
        &["pod", "live"],
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
    )
    .await;
    // sleep as PID 1 ignores SIGTERM: SIGKILL after the 1 s grace period.
    assert_eq!(last, "137");

    // web: the server turns ready through its httpGet probe, the tcpSocket
    // liveness keeps passing; the sidecar's 404 keeps the pod unready.
    wait_for(
        &cp,
        &ctd,
        "web server ready",
        Duration::from_secs(60),
        || async {
            let s = jsonpath(
                &cp,
                &["pod", "web"],
                "{.status.containerStatuses[?(@.name==\"server\")].ready} {.status.containerStatuses[?(@.name==\"sidecar\")].started}",
            )
            .await;
            (s == "true true").then_some(())
        },
    )
    .await;
    // The sidecar's probe keeps failing.
    wait_for(
        &cp,
        &ctd,
        "web's sidecar probed",
        Duration::from_secs(30),
        || async {
            events_of(&cp, "web")
                .await
                .contains("Readiness probe failed:")
                .then_some(())
        },
    )
    .await;
    let s = jsonpath(
        &cp,
        &["pod", "web"],
        "{.status.containerStatuses[?(@.name==\"sidecar\")].ready} {.status.conditions[?(@.type==\"Ready\")].status} {.status.containerStatuses[?(@.name==\"server\")].restartCount}",
    )
    .await;
    assert_eq!(s, "false False 0", "{}", events_of(&cp, "web").await);
    let msg = jsonpath(
        &cp,
        &["pod", "web"],
        "{.status.conditions[?(@.type==\"Ready\")].message}",
    )
    .await;
    assert_eq!(msg, "containers with unready status: [sidecar]");
    let row = cp.kubectl(V, &["get", "pod", "web", "--no-headers"]).await;
    assert!(row.contains("1/2") && row.contains("Running"), "{row}");

    // slow: never started, so never ready and never liveness-probed; then
    // restarted for its startup probe.
    wait_for(
        &cp,
        &ctd,
        "slow restarted",
        Duration::from_secs(90),
        || async {
            let s = jsonpath(
                &cp,
                &["pod", "slow"],
                "{.status.containerStatuses[0].restartCount}",
            )
            .await;
            (s.parse::<u32>().unwrap_or(0) >= 1).then_some(())
        },
    )
    .await;
    let s = jsonpath(
        &cp,
        &["pod", "slow"],
        "{.status.containerStatuses[0].ready}",
    )
    .await;
    assert_eq!(s, "false");
    let events = events_of(&cp, "slow").await;
    assert!(
        events.contains("Startup probe failed: dial tcp 10.244.83."),
        "{events}"
    );
    assert!(
        // "connect: connection refused", or "i/o timeout" when host-to-pod
        // packets stall on this shared host.
        events.contains(":9999: "),
        "{events}"
    );
    assert!(
        events.contains("Container app failed startup probe, will be restarted"),
        "{events}"
    );

    // Resources.
    let logs = dir.path().join("pods-logs");
    let report_of = |name: &'static str| {
        let logs = logs.clone();
        let cp = &cp;
        async move {
            let uid = jsonpath(cp, &["pod", name], "{.metadata.uid}").await;
            let log = logs
                .join(format!("default_{name}_{uid}"))
                .join("app")
                .join("0.log");
            let text = std::fs::read_to_string(log).unwrap_or_default();
            text.contains("oom=").then_some((uid, text))
        }
    };
    let (uid, text) = wait_for(&cp, &ctd, "guar's report", Duration::from_secs(60), || {
        report_of("guar")
    })
    .await;
    let qos = jsonpath(&cp, &["pod", "guar"], "{.status.qosClass}").await;
    assert_eq!(qos, "Guaranteed");
    assert!(
        text.contains(&format!(":memory:/kubepods/pod{uid}/")),
        "{text}"
    );
    assert!(text.contains(&format!("mem={}", 64 << 20)), "{text}");
    assert!(text.contains("quota=50000"), "{text}");
    assert!(text.contains("shares=512"), "{text}");
    let (uid, text) = wait_for(&cp, &ctd, "burst's report", Duration::from_secs(60), || {
        report_of("burst")
    })
    .await;
    let burst_uid = uid.clone();
    let qos = jsonpath(&cp, &["pod", "burst"], "{.status.qosClass}").await;
    assert_eq!(qos, "Burstable");
    assert!(
        text.contains(&format!(":memory:/kubepods/burstable/pod{uid}/")),
        "{text}"
    );
    assert!(text.contains("quota=-1"), "no CPU limit: {text}");
    assert!(text.contains("shares=102"), "{text}");
    // 1000 - 1000 * request / node memory; containerd here never goes below its own score.
    let total: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024;
    let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = (1000 - (1000 * (16i64 << 20)) / total as i64)
        .clamp(3, 999)
        .max(own);
    assert!(
        text.contains(&format!("oom={want}\n")),
        "oom={want} in {text}"
    );
    wait_for(&cp, &ctd, "oom OOMKilled", Duration::from_secs(60), || async {
        let s = jsonpath(
            &cp,
            &["pod", "oom"],
            "{.status.containerStatuses[0].state.terminated.reason} {.status.containerStatuses[0].state.terminated.exitCode} {.status.phase}",
        )
        .await;
        (s == "OOMKilled 137 Failed").then_some(())
    })
    .await;
    let row = cp.kubectl(V, &["get", "pod", "oom", "--no-headers"]).await;
    assert!(row.contains("OOMKilled"), "{row}");

    // Termination messages.
    wait_for(&cp, &ctd, "msg Failed", Duration::from_secs(60), || async {
        let s = jsonpath(&cp, &["pod", "msg"], "{.status.phase}").await;
        (s == "Failed").then_some(())
    })
    .await;
    let term = |c: &'static str| {
        let cp = &cp;
        async move {
            let path = format!(
                "{{.status.containerStatuses[?(@.name==\"{c}\")].state.terminated.exitCode}}:{{.status.containerStatuses[?(@.name==\"{c}\")].state.terminated.message}}"
            );
            jsonpath(cp, &["pod", "msg"], &path).await
        }
    };
    assert_eq!(term("app").await, "3:bye from app");
    assert_eq!(term("custom").await, "0:done\n");
    assert_eq!(term("fallback").await, "2:some log\nboom\n");

    // Hooks.
    wait_for(
        &cp,
        &ctd,
        "hooks' postStart",
        Duration::from_secs(60),
        || async {
            let uid = jsonpath(&cp, &["pod", "hooks"], "{.metadata.uid}").await;
            let log = logs
                .join(format!("default_hooks_{uid}"))
                .join("app")
                .join("0.log");
            let text = std::fs::read_to_string(log).unwrap_or_default();
            text.contains("poststart=ran").then_some(())
        },
    )
    .await;
    let started = Instant::now();
    cp.kubectl(
        V,
        &["delete", "pod", "hooks", "--wait=true", "--timeout=60s"],
    )
    .await;
    let took = started.elapsed();
    let order = std::fs::read_to_string(shared.join("order")).unwrap_or_default();
    assert_eq!(order, "prestop\nterm\n", "preStop, then SIGTERM");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "the preStop hook's 2 s, not the 20 s grace period: {took:?}"
    );
    wait_for(
        &cp,
        &ctd,
        "badhook restarted",
        Duration::from_secs(60),
        || async {
            let s = jsonpath(
                &cp,
                &["pod", "badhook"],
                "{.status.containerStatuses[0].restartCount}",
            )
            .await;
            (s.parse::<u32>().unwrap_or(0) >= 1).then_some(())
        },
    )
    .await;
    let events = events_of(&cp, "badhook").await;
    assert!(events.contains("FailedPostStartHook"), "{events}");
    assert!(
        events.contains("command 'sh -c echo no-way; exit 7' exited with 7: no-way"),
        "{events}"
    );

    // securityContext, started once the probe pods are checked.
    for p in [&secure, &nonroot] {
        cp.kubectl_in(V, &["apply", "-f", "-"], Some(p)).await;
    }
    let log_of = |pod: &'static str, c: &'static str| {
        let logs = logs.clone();
        let cp = &cp;
        async move {
            let uid = jsonpath(cp, &["pod", pod], "{.metadata.uid}").await;
            let log = logs
                .join(format!("default_{pod}_{uid}"))
                .join(c)
                .join("0.log");
            let text = std::fs::read_to_string(log).unwrap_or_default();
            text.contains("done").then_some(text)
        }
    };
    let text = wait_for(
        &cp,
        &ctd,
        "secure's app log",
        Duration::from_secs(60),
        || log_of("secure", "app"),
    )
    .await;
    assert!(text.contains("uid=1000 gid=3000"), "{text}");
    assert!(text.contains("ro-ok"), "read-only root: {text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    // NET_BIND_SERVICE (bit 10) is all that is left.
    assert!(text.contains("CapBnd:\t0000000000000400"), "{text}");
    let text = wait_for(
        &cp,
        &ctd,
        "secure's priv log",
        Duration::from_secs(60),
        || log_of("secure", "priv"),
    )
    .await;
    let host_bnd = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap()
        .to_string();
    assert!(text.contains(&host_bnd), "privileged: {host_bnd} in {text}");
    let s = wait_for(
        &cp,
        &ctd,
        "nonroot refused",
        Duration::from_secs(60),
        || async {
            let s = jsonpath(
                &cp,
                &["pod", "nonroot"],
                "{.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}",
            )
            .await;
            s.starts_with("CreateContainerConfigError|").then_some(s)
        },
    )
    .await;
    let uid = jsonpath(&cp, &["pod", "nonroot"], "{.metadata.uid}").await;
    assert_eq!(
        s,
        format!(
            "CreateContainerConfigError|container has runAsNonRoot and image will run as root (pod: \"nonroot_default({uid})\", container: app)"
        )
    );
    let row = cp
        .kubectl(V, &["get", "pod", "nonroot", "--no-headers"])
        .await;
    assert!(row.contains("CreateContainerConfigError"), "{row}");

    for p in [
        "ready", "live", "web", "slow", "guar", "burst", "oom", "msg", "badhook", "secure",
        "nonroot",
    ] {
        cp.kubectl(V, &["delete", "pod", p, "--wait=true", "--timeout=60s"])
            .await;
    }
    // The pods' cgroups went with them.
    let left = std::fs::read_dir("/sys/fs/cgroup/memory/kubepods/burstable")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(!left.iter().any(|n| n.contains(&burst_uid)), "{left:?}");
    agent.stop().await;
    drop(ctd);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", BRIDGE])
        .status();
    cp.shutdown();
    drop(store);
}
