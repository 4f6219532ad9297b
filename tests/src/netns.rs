//! "Hosts" for multi-node tests: network namespaces joined by a bridge in
//! the root namespace (the LAN), each with its own address, loopback and
//! default route, and processes started inside them. Everything is removed
//! on drop, panics included: processes first (SIGTERM, then SIGKILL), then
//! the namespaces and the bridge.
//!
//! Processes enter only the network namespace (`nsenter --net`): `ip netns
//! exec` also makes a mount namespace and remounts /sys, which hides the
//! cgroup hierarchy containerd and runc need.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// `program` in network namespace `netns` (`None`: here).
pub fn command(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}"))
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One host on the LAN.
#[derive(Debug, Clone)]
pub struct Host {
    /// The network namespace (`/run/netns/<netns>`).
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl Host {
    /// `program` inside this host.
    pub fn command(&self, program: &str) -> Command {
        command(Some(&self.netns), program)
    }

    /// Runs `program args` inside this host; its output, whatever the status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("{program} in {}", self.netns))
    }

    /// stdout of `program args` inside this host ("" when it failed).
    pub fn stdout(&self, program: &str, args: &[&str]) -> String {
        self.exec(program, args)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// The LAN: a bridge holding the gateway address, hosts on the next ones.
pub struct Lan {
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub hosts: Vec<Host>,
}

impl Lan {
    /// Creates `hosts` namespaces named `<name>-<i>` on bridge `name`
    /// (≤ 12 characters, so veth names `<name>v<i>` fit in 15); the bridge
    /// has `gateway/prefix`, hosts the addresses after it, each with a
    /// default route via the gateway. Removes leftovers of a previous run
    /// with the same names first.
    pub fn new(name: &str, gateway: Ipv4Addr, prefix: u8, hosts: usize) -> Result<Self> {
        if name.len() > 12 {
            bail!("LAN name {name:?} is longer than 12 characters");
        }
        let mut lan = Lan {
            bridge: name.to_string(),
            gateway,
            hosts: Vec::new(),
        };
        for i in 0..hosts {
            let _ = run("ip", &["netns", "del", &format!("{name}-{i}")]);
        }
        let _ = run("ip", &["link", "del", name]);
        run("ip", &["link", "add", name, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{gateway}/{prefix}"), "dev", name],
        )?;
        run("ip", &["link", "set", name, "up"])?;
        for i in 0..hosts {
            let ns = format!("{name}-{i}");
            let veth = format!("{name}v{i}");
            let ip = Ipv4Addr::from(u32::from(gateway) + 1 + i as u32);
            run("ip", &["netns", "add", &ns])?;
            lan.hosts.push(Host {
                netns: ns.clone(),
                ip,
            });
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", name, "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{ip}/{prefix}"),
                    "dev",
                    "eth0",
                ],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "route",
                    "add",
                    "default",
                    "via",
                    &gateway.to_string(),
                ],
            )?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = run("ip", &["netns", "del", &h.netns]);
        }
        // The veths went with their namespaces.
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

/// A process started in a host; stopped (SIGTERM, then SIGKILL) on drop.
/// Its stdout and stderr go to a log file.
pub struct Process {
    pub name: String,
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let file = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawn {name}"))?;
        Ok(Self {
            name: name.to_string(),
            child: Mutex::new(Some(child)),
            log: log.to_path_buf(),
        })
    }

    /// Stops it and runs `cmd` in its place, appending to the same log.
    pub fn restart(&self, mut cmd: Command) -> Result<()> {
        self.stop();
        let file = std::fs::OpenOptions::new().append(true).open(&self.log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("spawn {}", self.name))?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(())
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, up to 10 s to exit, then SIGKILL.
    pub fn stop(&self) {
        let taken = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut child) = taken else {
            return;
        };
        // SAFETY: signalling a child we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}
