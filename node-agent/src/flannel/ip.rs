//! The real [`Dataplane`]: iproute2's `ip` and `bridge` with JSON output,
//! and `nft` for the masquerade table. Also the one-time host setup
//! (forwarding, the VXLAN device) the entries depend on.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::dataplane::{Dataplane, Fdb, Neigh, NetError, Route};
use super::{Ipv4Cidr, ROUTE_PROTO, VNI, VXLAN_DEV, VXLAN_PORT};

fn run(program: &'static str, args: &[&str]) -> Result<String, NetError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetError::Spawn { program, source })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Failed {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn json(program: &'static str, args: &[&str]) -> Result<Vec<Value>, NetError> {
    let text = run(program, args)?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&text).map_err(|e| NetError::Output {
        command: format!("{program} {}", args.join(" ")),
        message: e.to_string(),
    })
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Whether a link exists in this network namespace.
pub fn link_exists(name: &str) -> bool {
    run("ip", &["link", "show", "dev", name]).is_ok()
}

/// The link holding `ip`, and its MTU.
pub fn lan_link(ip: Ipv4Addr) -> Result<(String, u32), NetError> {
    let links = json("ip", &["-j", "-4", "addr", "show"])?;
    let want = ip.to_string();
    links
        .iter()
        .find(|l| {
            l.get("addr_info")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|i| str_field(i, "local") == Some(&want)))
        })
        .and_then(|l| {
            let name = str_field(l, "ifname")?.to_string();
            let mtu = l.get("mtu").and_then(Value::as_u64).unwrap_or(1500);
            Some((name, u32::try_from(mtu).unwrap_or(1500)))
        })
        .ok_or(NetError::NoLink(ip))
}

/// Routing between the pod bridge and the LAN needs IPv4 forwarding.
pub fn enable_forwarding() -> Result<(), NetError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(PATH, "1").map_err(|source| NetError::Sysctl { path: PATH, source })
}

/// Creates (or keeps) `flannel.1` bound to `local` on `lan_dev`, gives it
/// `addr`/32 and `mtu`, and returns its MAC. An existing device with the
/// right parameters is kept, so its MAC (published to the other nodes)
/// survives agent restarts.
pub fn ensure_vxlan(
    local: Ipv4Addr,
    lan_dev: &str,
    mtu: u32,
    addr: Ipv4Addr,
) -> Result<String, NetError> {
    let existing = json("ip", &["-j", "-d", "link", "show", "dev", VXLAN_DEV]).unwrap_or_default();
    let fits = existing.first().is_some_and(|l| {
        let info = l.pointer("/linkinfo/info_data");
        l.pointer("/linkinfo/info_kind").and_then(Value::as_str) == Some("vxlan")
            && info.and_then(|i| i.get("id")).and_then(Value::as_u64) == Some(u64::from(VNI))
            && info.and_then(|i| str_field(i, "local")) == Some(&local.to_string())
            && info.and_then(|i| i.get("port")).and_then(Value::as_u64)
                == Some(u64::from(VXLAN_PORT))
    });
    if !existing.is_empty() && !fits {
        tracing::info!(
            dev = VXLAN_DEV,
            "recreating the VXLAN device with new parameters"
        );
        run("ip", &["link", "del", VXLAN_DEV])?;
    }
    if !fits {
        run(
            "ip",
            &[
                "link",
                "add",
                VXLAN_DEV,
                "type",
                "vxlan",
                "id",
                &VNI.to_string(),
                "local",
                &local.to_string(),
                "dev",
                lan_dev,
                "dstport",
                &VXLAN_PORT.to_string(),
                // Peers come from Node annotations, not flooding.
                "nolearning",
            ],
        )?;
    }
    run(
        "ip",
        &["link", "set", VXLAN_DEV, "mtu", &mtu.to_string(), "up"],
    )?;
    let want = format!("{addr}/32");
    let addrs = json("ip", &["-j", "-4", "addr", "show", "dev", VXLAN_DEV])?;
    for a in addrs
        .iter()
        .filter_map(|l| l.get("addr_info").and_then(Value::as_array))
        .flatten()
    {
        if let (Some(local), Some(len)) = (
            str_field(a, "local"),
            a.get("prefixlen").and_then(Value::as_u64),
        ) {
            let have = format!("{local}/{len}");
            if have != want {
                // A pod range this node no longer has.
                run("ip", &["addr", "del", &have, "dev", VXLAN_DEV])?;
            }
        }
    }
    run("ip", &["addr", "replace", &want, "dev", VXLAN_DEV])?;
    let link = json("ip", &["-j", "link", "show", "dev", VXLAN_DEV])?;
    link.first()
        .and_then(|l| str_field(l, "address"))
        .map(str::to_string)
        .ok_or_else(|| NetError::Output {
            command: format!("ip link show dev {VXLAN_DEV}"),
            message: "no MAC address".into(),
        })
}

/// Removes `flannel.1` (after switching to host-gw).
pub fn remove_vxlan() -> Result<(), NetError> {
    if link_exists(VXLAN_DEV) {
        run("ip", &["link", "del", VXLAN_DEV])?;
    }
    Ok(())
}

/// The masquerade rules: pod traffic leaving the cluster CIDR gets the
/// node's address; pod to pod (on any node) keeps its source.
pub fn masquerade_script(table: &str, cluster: Ipv4Cidr) -> String {
    format!(
        "table ip {table}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {cluster} ip daddr {cluster} return\n\
         \t\tip saddr {cluster} ip daddr != 224.0.0.0/4 masquerade fully-random\n\
         \t}}\n\
         }}\n"
    )
}

/// Whether `nft` runs here.
pub fn nft_available() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs (atomically replaces) the masquerade table.
pub fn apply_masquerade(table: &str, cluster: Ipv4Cidr) -> Result<(), NetError> {
    let script = masquerade_script(table, cluster);
    crate::proxy::apply::run_with_stdin("nft", &["-f", "-"], &script).map_err(|e| match e {
        crate::proxy::apply::ApplyError::Spawn { program, source } => {
            NetError::Spawn { program, source }
        }
        crate::proxy::apply::ApplyError::Rejected { program, stderr } => NetError::Failed {
            command: format!("{program} -f -"),
            stderr,
        },
    })
}

/// `ip` and `bridge` on this network namespace.
pub struct IpCommand;

fn parse_route(v: &Value) -> Option<Route> {
    let dst = str_field(v, "dst")?;
    let dst = if dst.contains('/') {
        dst.parse().ok()?
    } else {
        format!("{dst}/32").parse().ok()?
    };
    Some(Route {
        dst,
        via: str_field(v, "gateway")?.parse().ok()?,
        dev: str_field(v, "dev")?.to_string(),
        onlink: v
            .get("flags")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("onlink"))),
    })
}

/// `ip route VERB dst via gw proto P dev D [onlink]`.
fn route_cmd(verb: &str, r: &Route) -> Result<(), NetError> {
    let (dst, via, proto) = (
        r.dst.to_string(),
        r.via.to_string(),
        ROUTE_PROTO.to_string(),
    );
    let mut args = vec![
        "route", verb, &dst, "via", &via, "proto", &proto, "dev", &r.dev,
    ];
    if r.onlink {
        args.push("onlink");
    }
    run("ip", &args).map(drop)
}

impl Dataplane for IpCommand {
    fn routes(&self) -> Result<Vec<Route>, NetError> {
        let proto = ROUTE_PROTO.to_string();
        Ok(json("ip", &["-j", "-4", "route", "show", "proto", &proto])?
            .iter()
            .filter_map(parse_route)
            .collect())
    }

    fn add_route(&self, r: &Route) -> Result<(), NetError> {
        // `add`, not `replace`: a route someone else owns for that range
        // (a local bridge, another CNI) is reported, never overwritten.
        route_cmd("add", r)
    }

    fn del_route(&self, r: &Route) -> Result<(), NetError> {
        route_cmd("del", r)
    }

    fn neighs(&self) -> Result<Vec<Neigh>, NetError> {
        if !link_exists(VXLAN_DEV) {
            return Ok(Vec::new());
        }
        Ok(json(
            "ip",
            &[
                "-j",
                "-4",
                "neigh",
                "show",
                "dev",
                VXLAN_DEV,
                "nud",
                "permanent",
            ],
        )?
        .iter()
        .filter_map(|v| {
            Some(Neigh {
                ip: str_field(v, "dst")?.parse().ok()?,
                mac: str_field(v, "lladdr")?.to_lowercase(),
            })
        })
        .collect())
    }

    fn add_neigh(&self, n: &Neigh) -> Result<(), NetError> {
        let ip = n.ip.to_string();
        run(
            "ip",
            &[
                "neigh",
                "replace",
                &ip,
                "lladdr",
                &n.mac,
                "dev",
                VXLAN_DEV,
                "nud",
                "permanent",
            ],
        )
        .map(drop)
    }

    fn del_neigh(&self, n: &Neigh) -> Result<(), NetError> {
        let ip = n.ip.to_string();
        run("ip", &["neigh", "del", &ip, "dev", VXLAN_DEV]).map(drop)
    }

    fn fdb(&self) -> Result<Vec<Fdb>, NetError> {
        if !link_exists(VXLAN_DEV) {
            return Ok(Vec::new());
        }
        Ok(json("bridge", &["-j", "fdb", "show", "dev", VXLAN_DEV])?
            .iter()
            .filter_map(|v| {
                let mac = str_field(v, "mac")?.to_lowercase();
                // The all-zero entry is the flood default, not a peer.
                if mac == "00:00:00:00:00:00" {
                    return None;
                }
                Some(Fdb {
                    mac,
                    dst: str_field(v, "dst")?.parse().ok()?,
                })
            })
            .collect())
    }

    fn add_fdb(&self, f: &Fdb) -> Result<(), NetError> {
        let dst = f.dst.to_string();
        run(
            "bridge",
            &[
                "fdb",
                "replace",
                &f.mac,
                "dev",
                VXLAN_DEV,
                "dst",
                &dst,
                "self",
                "permanent",
            ],
        )
        .map(drop)
    }

    fn del_fdb(&self, f: &Fdb) -> Result<(), NetError> {
        let dst = f.dst.to_string();
        run(
            "bridge",
            &["fdb", "del", &f.mac, "dev", VXLAN_DEV, "dst", &dst, "self"],
        )
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_route_json() {
        let v: Value = serde_json::from_str(
            r#"{"dst":"10.245.1.0/24","gateway":"10.245.1.0","dev":"flannel.1","flags":["onlink"]}"#,
        )
        .unwrap();
        let r = parse_route(&v).unwrap();
        assert_eq!(r.dst.to_string(), "10.245.1.0/24");
        assert!(r.onlink);
        let host: Value = serde_json::from_str(
            r#"{"dst":"10.9.9.9","gateway":"172.31.100.3","dev":"eth0","flags":[]}"#,
        )
        .unwrap();
        assert_eq!(parse_route(&host).unwrap().dst.to_string(), "10.9.9.9/32");
        // A route without a gateway is not one of ours.
        let direct: Value = serde_json::from_str(r#"{"dst":"10.9.9.0/24","dev":"eth0"}"#).unwrap();
        assert!(parse_route(&direct).is_none());
    }

    #[test]
    fn masquerade_spares_pod_to_pod() {
        let s = masquerade_script("k3rs-flannel", "10.245.0.0/16".parse().unwrap());
        assert!(s.contains("ip saddr 10.245.0.0/16 ip daddr 10.245.0.0/16 return"));
        assert!(s.contains("ip saddr 10.245.0.0/16 ip daddr != 224.0.0.0/4 masquerade"));
        // Replaced atomically: created, deleted and recreated in one run.
        assert!(s.starts_with("table ip k3rs-flannel\ndelete table ip k3rs-flannel\n"));
    }
}
