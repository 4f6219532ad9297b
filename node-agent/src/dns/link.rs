//! Makes the cluster DNS address local on the node: a `dummy` link (or a
//! port-less bridge where the kernel has no dummy driver) holding
//! it as a host address (/32 or /128), as kube-proxy's IPVS mode does for
//! service addresses. Idempotent, and left in place on restart so pods keep
//! resolving while the agent is down for an upgrade.

use std::net::IpAddr;

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("running `ip {args}`: {source}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("`ip {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
}

async fn ip(args: &[&str]) -> Result<String, LinkError> {
    let joined = args.join(" ");
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|source| LinkError::Spawn {
            args: joined.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(LinkError::Failed {
            args: joined,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the dummy link `name` if missing, puts `addr` on it and sets it up.
pub async fn ensure(name: &str, addr: IpAddr) -> Result<(), LinkError> {
    if ip(&["link", "show", "dev", name]).await.is_err() {
        create(name).await?;
    }
    let cidr = match addr {
        IpAddr::V4(_) => format!("{addr}/32"),
        IpAddr::V6(_) => format!("{addr}/128"),
    };
    // `replace` does not fail when the address is already there; `nodad`
    // lets an IPv6 address be bound at once.
    let mut args = vec!["addr", "replace", &cidr, "dev", name];
    if addr.is_ipv6() {
        args.push("nodad");
    }
    ip(&args).await?;
    ip(&["link", "set", name, "up"]).await?;
    Ok(())
}

async fn create(name: &str) -> Result<(), LinkError> {
    // Kernels built without the dummy driver (some containers and minimal
    // images) still have bridges; a bridge without ports works the same here.
    for kind in ["dummy", "bridge"] {
        match ip(&["link", "add", name, "type", kind]).await {
            Ok(_) => {
                tracing::info!(link = name, kind, "created the cluster DNS link");
                return Ok(());
            }
            // Another agent (or an earlier run) won the race.
            Err(LinkError::Failed { stderr, .. }) if stderr.contains("exists") => return Ok(()),
            Err(LinkError::Failed { stderr, .. })
                if kind == "dummy"
                    && (stderr.contains("Unknown device type")
                        || stderr.contains("not supported")) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes the link (tests, uninstall); a missing link is fine.
pub async fn remove(name: &str) -> Result<(), LinkError> {
    match ip(&["link", "del", name]).await {
        Ok(_) => Ok(()),
        Err(LinkError::Failed { stderr, .. })
            if stderr.contains("Cannot find") || stderr.contains("does not exist") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
