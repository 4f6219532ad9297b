//! `k3rs agent`: this machine joins a cluster as a worker node. Runs
//! containerd (unless `--container-runtime-endpoint`) and the node agent
//! with the join flags, under the same supervision, logging and SIGTERM
//! handling as `k3rs server`.

use std::future::Future;
use std::time::Instant;

use crate::components::{self, ComponentError};
use crate::config::AgentConfig;
use crate::daemon::LogSink;
use crate::node::{self, Credentials};
use crate::server::{ServerError, Started};
use crate::supervise::{Options, Supervisor};

/// The line printed once containerd and the node agent are ready.
pub const READY_MESSAGE: &str = "k3rs agent is ready";

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    config: AgentConfig,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let started = Instant::now();
    tokio::pin!(shutdown);
    let settings = node::agent_settings(&config);
    let invalid = |message: String| ComponentError::Invalid {
        component: "agent",
        message,
    };
    let dir = settings.agent_dir();
    make_private_dir(&dir).map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
    // The token goes to the node agent in a 0600 file, not on its command
    // line where every user could read it.
    let token_file = dir.join("join-token");
    let token = config.token.as_deref().unwrap_or_default().trim();
    k3rs_common::pki::write_private(&token_file, &format!("{token}\n"))
        .map_err(|e| invalid(e.to_string()))?;
    let name = settings.resolved_node_name()?;
    let program = components::find_binary("k3rs-node-agent", config.bin_dir.as_deref())
        .ok_or_else(|| ComponentError::MissingBinary {
            binary: "k3rs-node-agent",
            searched: components::search_dirs(config.bin_dir.as_deref())
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let mut plan = Vec::new();
    plan.extend(node::containerd_spec(&settings)?);
    plan.push(node::node_agent_spec(
        &settings,
        program,
        &name,
        &Credentials::Join {
            server: config.server.clone().unwrap_or_default(),
            token_file,
        },
    )?);

    let sink = match &config.log_dir {
        Some(dir) => LogSink::Dir(dir.clone()),
        None => LogSink::Stream(config.log_format),
    };
    let mut supervisor = Supervisor::new(opts, sink);
    match crate::server::start_all(&mut supervisor, plan, Some(&settings), &mut shutdown).await? {
        Started::All => {}
        Started::Interrupted => return Ok(()),
    }
    let took = started.elapsed();
    tracing::info!(node = %name, server = config.server.as_deref().unwrap_or_default(), "{READY_MESSAGE} ({:.1}s)", took.as_secs_f64());
    crate::server::notify_systemd("READY=1");
    shutdown.await;
    crate::server::notify_systemd("STOPPING=1");
    tracing::info!("shutting down");
    supervisor.stop_all().await;
    tracing::info!("all daemons stopped");
    Ok(())
}

fn make_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
