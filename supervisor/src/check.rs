//! `k3rs check-config`: can this machine run `k3rs server` with this
//! configuration? Binaries, data dir, ports, kubectl; and for a node
//! (unless `--disable-agent`) the kernel, cgroups, overlay, bridge
//! netfilter and the runtime packages, each failure with its fix.
//!
//! The machine is read through `Host`, so the rules are tested on fakes.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};

use crate::components::{self, COMPONENTS};
use crate::config::{Datastore, ServerConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Note,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    pub detail: String,
}

/// The findings for `config`; nothing is started and nothing but a probe
/// file in the data dir is written.
pub fn check(config: &ServerConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |level, what: &str, detail: String| {
        out.push(Finding {
            level,
            what: what.to_string(),
            detail,
        })
    };

    let file = &config.config_file;
    if file.exists() {
        add(Level::Ok, "config", format!("{} (valid)", file.display()));
    } else {
        add(
            Level::Note,
            "config",
            format!(
                "{} not present; defaults, env and flags only",
                file.display()
            ),
        );
    }

    for c in COMPONENTS {
        let what = format!("binary {}", c.binary);
        if !(c.enabled)(config) {
            add(
                Level::Note,
                &what,
                "not needed with this configuration".into(),
            );
            continue;
        }
        match components::find_binary(c.binary, config.bin_dir.as_deref()) {
            Some(p) => add(Level::Ok, &what, p.display().to_string()),
            None if c.required => add(
                Level::Fail,
                &what,
                "not found beside k3rs, in --bin-dir or on PATH".into(),
            ),
            None => add(
                Level::Note,
                &what,
                "not installed; the server runs without it".into(),
            ),
        }
    }

    add_data_dir(config, &mut add);
    for f in node_findings(config, &SystemHost) {
        add(f.level, &f.what, f.detail);
    }

    let mut ports: Vec<(String, SocketAddr)> = Vec::new();
    let api_bind = config
        .bind_address
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    ports.push((
        "https-listen-port".into(),
        SocketAddr::new(api_bind, config.https_listen_port),
    ));
    if matches!(config.datastore(), Datastore::Shim(_))
        && let Ok(listen) = config.datastore_listen()
    {
        ports.push(("datastore-listen-address".into(), listen));
        ports.push((
            "datastore health".into(),
            SocketAddr::new(listen.ip(), listen.port().saturating_add(2)),
        ));
    }
    for (what, addr) in ports {
        match TcpListener::bind(addr) {
            Ok(_) => add(
                Level::Ok,
                &format!("port {what}"),
                format!("{addr} is free"),
            ),
            Err(e) => add(
                Level::Fail,
                &format!("port {what}"),
                format!("{addr}: {e} (is k3rs or something else already running?)"),
            ),
        }
    }

    match config.datastore() {
        Datastore::Shim(e) if e.is_empty() => add(
            Level::Ok,
            "datastore",
            format!(
                "SQLite {}",
                config.server_dir().join("db/state.db").display()
            ),
        ),
        Datastore::Shim(e) => add(Level::Ok, "datastore", redact(&e)),
        Datastore::Etcd(urls) => add(
            Level::Ok,
            "datastore",
            format!("external etcd {}", urls.join(",")),
        ),
        Datastore::Embedded => match crate::node::system_binary("etcd", "etcd-server") {
            Ok(p) => add(
                Level::Ok,
                "datastore",
                format!("embedded etcd member ({})", p.display()),
            ),
            Err(_) => add(
                Level::Fail,
                "datastore",
                "etcd is not installed; fix: apt-get install etcd-server".into(),
            ),
        },
    }

    match components::find_binary("kubectl", None) {
        Some(p) => add(Level::Ok, "kubectl", p.display().to_string()),
        None => add(
            Level::Note,
            "kubectl",
            "not on PATH (`k3rs kubectl` needs it)".into(),
        ),
    }
    out
}

/// What the node checks read from the machine.
pub trait Host {
    /// A file's text (`/proc`, `/sys`), None when unreadable.
    fn read(&self, path: &str) -> Option<String>;
    /// The path of an executable on PATH or in the system dirs.
    fn program(&self, name: &str) -> Option<std::path::PathBuf>;
    fn is_file(&self, path: &std::path::Path) -> bool;
}

/// The real machine.
pub struct SystemHost;

impl Host for SystemHost {
    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    fn program(&self, name: &str) -> Option<std::path::PathBuf> {
        crate::node::find_system_program(name)
    }

    fn is_file(&self, path: &std::path::Path) -> bool {
        path.is_file()
    }
}

/// CNI plugins the node agent's network config uses.
const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// The node's requirements. With `--disable-agent` nothing here is needed,
/// so failures are only notes.
pub fn node_findings(config: &ServerConfig, host: &dyn Host) -> Vec<Finding> {
    let needed = !config.disable_agent;
    let mut out = Vec::new();
    let mut add = |ok: bool, what: &str, detail: String| {
        let level = match (ok, needed) {
            (true, _) => Level::Ok,
            (false, true) => Level::Fail,
            (false, false) => Level::Note,
        };
        out.push(Finding {
            level,
            what: what.to_string(),
            detail,
        });
    };

    let release = host
        .read("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    // cgroup v2 and the overlay features containerd uses need 4.15.
    add(
        version >= (4, 15),
        "kernel",
        if version >= (4, 15) {
            release.clone()
        } else {
            format!(
                "{release:?} is older than 4.15; fix: upgrade the kernel (apt-get install linux-image-amd64)"
            )
        },
    );

    match host.read("/sys/fs/cgroup/cgroup.controllers") {
        Some(list) => {
            let have: Vec<&str> = list.split_whitespace().collect();
            let missing: Vec<&str> = ["cpu", "memory", "pids"]
                .into_iter()
                .filter(|c| !have.contains(c))
                .collect();
            add(
                missing.is_empty(),
                "cgroups",
                if missing.is_empty() {
                    format!("v2 (unified), controllers: {}", have.join(" "))
                } else {
                    format!(
                        "v2 without {}; fix: enable them (cgroup_enable=memory on the kernel command line, or delegate them to this cgroup)",
                        missing.join(", ")
                    )
                },
            );
        }
        None => {
            // v1: /proc/cgroups lists name, hierarchy, count, enabled.
            let table = host.read("/proc/cgroups").unwrap_or_default();
            let enabled: Vec<&str> = table
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() == 4 && f[1] != "0" && f[3] == "1").then_some(f[0])
                })
                .collect();
            let missing: Vec<&str> = ["cpu", "cpuacct", "memory", "pids", "devices"]
                .into_iter()
                .filter(|c| !enabled.contains(c))
                .collect();
            add(
                missing.is_empty(),
                "cgroups",
                if missing.is_empty() {
                    "v1 (legacy/hybrid), cpu cpuacct memory pids devices mounted".to_string()
                } else {
                    format!(
                        "v1 without {}; fix: mount/enable them (cgroup_enable=memory on the kernel command line), or boot with systemd.unified_cgroup_hierarchy=1",
                        missing.join(", ")
                    )
                },
            );
        }
    }

    let overlay = host.read("/proc/filesystems").is_some_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    });
    let native = config.node.snapshotter == "native";
    add(
        overlay || native,
        "overlay filesystem",
        if overlay {
            "available".into()
        } else if native {
            "not loaded; not needed with --snapshotter native".into()
        } else {
            "not available; fix: modprobe overlay, or run with --snapshotter native".into()
        },
    );

    let br = host
        .read("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .map(|v| v.trim().to_string());
    add(
        br.is_some(),
        "bridge netfilter",
        match br {
            Some(v) => format!("br_netfilter loaded (bridge-nf-call-iptables = {v})"),
            None => "br_netfilter is not loaded; fix: modprobe br_netfilter (and add it to /etc/modules-load.d/k3rs.conf)".into(),
        },
    );

    for (program, package) in [("containerd", "containerd"), ("runc", "runc")] {
        let what = format!("binary {program}");
        match host.program(program) {
            Some(p) => add(true, &what, p.display().to_string()),
            None => add(
                false,
                &what,
                format!("not installed; fix: apt-get install {package}"),
            ),
        }
    }
    let firewall = host.program("nft").or_else(|| host.program("iptables"));
    add(
        firewall.is_some(),
        "binary nft or iptables",
        match firewall {
            Some(p) => p.display().to_string(),
            None => "neither is installed; fix: apt-get install nftables".into(),
        },
    );

    let cni_dir = cni_bin_dir(config);
    let missing: Vec<&str> = CNI_PLUGINS
        .iter()
        .copied()
        .filter(|p| !host.is_file(&cni_dir.join(p)))
        .collect();
    add(
        missing.is_empty(),
        "CNI plugins",
        if missing.is_empty() {
            format!("{} in {}", CNI_PLUGINS.join(" "), cni_dir.display())
        } else {
            format!(
                "{} missing in {}; fix: apt-get install containernetworking-plugins (or point --kubelet-arg cni-bin-dir= at them)",
                missing.join(" "),
                cni_dir.display()
            )
        },
    );
    out
}

/// The CNI plugin dir the node agent will use: `--kubelet-arg cni-bin-dir=`
/// when given, else the Debian package's.
fn cni_bin_dir(config: &ServerConfig) -> std::path::PathBuf {
    config
        .node
        .kubelet_arg
        .iter()
        .filter_map(|a| {
            a.trim()
                .trim_start_matches('-')
                .strip_prefix("cni-bin-dir=")
        })
        .next_back()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(crate::node::CNI_BIN_DIR))
}

fn add_data_dir(config: &ServerConfig, add: &mut impl FnMut(Level, &str, String)) {
    let dir = &config.data_dir;
    let probe = dir.join(".k3rs-check-config");
    let result = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"ok"))
        .and_then(|_| std::fs::remove_file(&probe));
    match result {
        Ok(()) => add(
            Level::Ok,
            "data dir",
            format!("{} is writable", dir.display()),
        ),
        Err(e) => add(Level::Fail, "data dir", format!("{}: {e}", dir.display())),
    }
}

/// Hides a password in a `scheme://user:password@host` endpoint.
fn redact(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => endpoint.to_string(),
        },
        None => endpoint.to_string(),
    }
}

/// The report as printed; the bool says whether everything needed is there.
pub fn report(findings: &[Finding]) -> (String, bool) {
    let mut s = String::new();
    for f in findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Note => "note",
            Level::Fail => "FAIL",
        };
        let _ = writeln!(s, "{tag}  {:<32} {}", f.what, f.detail);
    }
    let ok = findings.iter().all(|f| f.level != Level::Fail);
    let _ = writeln!(
        s,
        "{}",
        if ok {
            "k3rs server can run here."
        } else {
            "k3rs server cannot run here until the FAIL lines are fixed."
        }
    );
    (s, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine made of strings.
    struct FakeHost {
        files: Vec<(&'static str, &'static str)>,
        programs: Vec<&'static str>,
        cni: Vec<&'static str>,
    }

    impl Host for FakeHost {
        fn read(&self, path: &str) -> Option<String> {
            self.files
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, t)| t.to_string())
        }
        fn program(&self, name: &str) -> Option<std::path::PathBuf> {
            self.programs
                .contains(&name)
                .then(|| format!("/usr/bin/{name}").into())
        }
        fn is_file(&self, path: &std::path::Path) -> bool {
            path.file_name()
                .is_some_and(|n| self.cni.iter().any(|c| n == *c))
        }
    }

    fn config(extra: &[&str]) -> ServerConfig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yaml"), "").unwrap();
        let mut args = vec![
            "--config".to_string(),
            dir.path().join("c.yaml").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        crate::config::load_from_args(args).unwrap()
    }

    fn level_of(f: &[Finding], what: &str) -> (Level, String) {
        let f = f.iter().find(|f| f.what == what).unwrap();
        (f.level, f.detail.clone())
    }

    #[test]
    fn node_requirements_fail_with_their_fix() {
        let good = FakeHost {
            files: vec![
                ("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n"),
                (
                    "/sys/fs/cgroup/cgroup.controllers",
                    "cpuset cpu io memory pids\n",
                ),
                ("/proc/filesystems", "nodev\tproc\nnodev\toverlay\n"),
                ("/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n"),
            ],
            programs: vec!["containerd", "runc", "iptables"],
            cni: CNI_PLUGINS.to_vec(),
        };
        let f = node_findings(&config(&[]), &good);
        assert!(f.iter().all(|f| f.level == Level::Ok), "{f:?}");

        let bad = FakeHost {
            files: vec![
                ("/proc/sys/kernel/osrelease", "4.9.0\n"),
                ("/sys/fs/cgroup/cgroup.controllers", "cpu pids\n"),
                ("/proc/filesystems", "nodev\tproc\n"),
            ],
            programs: vec![],
            cni: vec!["bridge"],
        };
        let f = node_findings(&config(&[]), &bad);
        for (what, fix) in [
            ("kernel", "upgrade the kernel"),
            ("cgroups", "memory"),
            ("overlay filesystem", "modprobe overlay"),
            ("bridge netfilter", "modprobe br_netfilter"),
            ("binary containerd", "apt-get install containerd"),
            ("binary runc", "apt-get install runc"),
            ("binary nft or iptables", "apt-get install nftables"),
            ("CNI plugins", "host-local loopback portmap missing"),
        ] {
            let (level, detail) = level_of(&f, what);
            assert_eq!(level, Level::Fail, "{what}: {detail}");
            assert!(detail.contains(fix), "{what}: {detail}");
        }
        // Without a node they do not stop a server.
        let f = node_findings(&config(&["--disable-agent"]), &bad);
        assert!(f.iter().all(|f| f.level != Level::Fail), "{f:?}");
        // cgroup v1: the /proc/cgroups table decides.
        let v1 = FakeHost {
            files: vec![(
                "/proc/cgroups",
                "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\ncpuacct\t2\t1\t1\nmemory\t0\t1\t1\npids\t3\t1\t1\ndevices\t4\t1\t1\n",
            )],
            ..good
        };
        let (level, detail) = level_of(&node_findings(&config(&[]), &v1), "cgroups");
        assert_eq!(level, Level::Fail);
        assert!(detail.starts_with("v1 without memory"), "{detail}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
    }

    #[test]
    fn busy_port_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yaml"), "").unwrap();
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let c = crate::config::load_from_args([
            "--config",
            &dir.path().join("c.yaml").display().to_string(),
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            &port.to_string(),
        ])
        .unwrap();
        let findings = check(&c);
        let (text, ok) = report(&findings);
        assert!(!ok, "{text}");
        assert!(text.contains("FAIL  port https-listen-port"), "{text}");
        assert!(text.contains("ok    data dir"), "{text}");
    }
}
