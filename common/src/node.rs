//! This machine's node identity, shared by the supervisor (which names the
//! node on servers) and the node agent (`--with-node-id`).

use std::path::Path;

/// The default node name: the host name, lower-cased as Node names must be.
pub fn default_node_name() -> String {
    crate::pki::hostname().to_lowercase()
}

/// A stable random suffix for `--with-node-id`, created on first use in
/// `<dir>/node-id` so the node keeps its name across restarts.
pub fn node_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)?;
    let id: String = crate::token::generate_secret().chars().take(8).collect();
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

/// `<name>-<node id>` when `with_node_id`, else `name`.
pub fn node_name(name: Option<&str>, with_node_id: bool, dir: &Path) -> std::io::Result<String> {
    let base = match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => n.to_lowercase(),
        None => default_node_name(),
    };
    Ok(if with_node_id {
        format!("{base}-{}", node_id(dir)?)
    } else {
        base
    })
}

/// The address other machines reach us on: the source address of the default route.
pub fn detect_node_ip() -> std::net::IpAddr {
    let guess = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        // No packet is sent: connecting a UDP socket only picks a route.
        s.connect("10.255.255.255:9")?;
        s.local_addr()
    });
    match guess {
        Ok(a) if !a.ip().is_unspecified() => a.ip(),
        _ => std::net::IpAddr::from([127, 0, 0, 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = node_name(Some("Edge"), true, dir.path()).unwrap();
        assert!(
            a.starts_with("edge-") && a.len() == "edge-".len() + 8,
            "{a}"
        );
        assert_eq!(node_name(Some("edge"), true, dir.path()).unwrap(), a);
        assert_eq!(node_name(Some("edge"), false, dir.path()).unwrap(), "edge");
    }
}
