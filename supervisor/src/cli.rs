//! The `k3rs` command line: `server`, `agent`, `token`, `kubectl`,
//! `check-config`, `certificate`, `etcd-snapshot`, `completion`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgMatches, CommandFactory, Parser, Subcommand};

use crate::config::{self, AgentFlags, ServerConfig, ServerFlags};
use crate::{Error, bootstrap, check, server, snapshot, supervise, token};

#[derive(Debug, Parser)]
#[command(
    name = "k3rs",
    version,
    about = "k3rs: lightweight Kubernetes. `k3rs server` runs a control plane from one config file.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

// Built once per process, so the size of the flag-holding variants is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run a server: the datastore, the API server and the other control-plane daemons.
    Server(ServerFlags),
    /// Join a cluster as a node: containerd and the node agent.
    Agent(AgentFlags),
    /// Print or create join tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run the system kubectl with this server's admin kubeconfig.
    #[command(disable_help_flag = true)]
    Kubectl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Check that this machine can run `k3rs server` with this configuration.
    CheckConfig(ServerFlags),
    /// Run one daemon (datastore, apiserver, scheduler, controller-manager)
    /// in the foreground with the flags `k3rs server` would give it, after
    /// the same bootstrap: for one systemd unit per daemon.
    Daemon {
        /// The daemon's name, as in `k3rs server`'s logs.
        name: String,
        #[command(flatten)]
        flags: ServerFlags,
    },
    /// Certificate maintenance.
    Certificate {
        #[command(subcommand)]
        command: CertificateCommand,
    },
    /// Datastore snapshots: save, list, delete, restore (SQLite: a consistent
    /// copy of the database; external etcd: etcd's own snapshot).
    EtcdSnapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Print a shell completion script (`source <(k3rs completion bash)`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot now, into `<dir>/<name>-<node>-<unix time>`.
    Save {
        /// Snapshot name prefix.
        #[arg(long, default_value = "on-demand")]
        name: String,
        /// Where snapshots live (default `<data-dir>/server/db/snapshots`).
        #[arg(long = "etcd-snapshot-dir", visible_alias = "dir")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        flags: ServerFlags,
    },
    /// List the saved snapshots.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long = "etcd-snapshot-dir", visible_alias = "dir")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        flags: ServerFlags,
    },
    /// Delete saved snapshots by name.
    #[command(visible_alias = "rm")]
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long = "etcd-snapshot-dir", visible_alias = "dir")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        flags: ServerFlags,
    },
    /// Replace the SQLite datastore with a snapshot (server stopped).
    Restore {
        /// The snapshot file.
        file: PathBuf,
        #[command(flatten)]
        flags: ServerFlags,
    },
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random secret, for `--token` / `token:` before a cluster's first start.
    Generate,
    /// Print this server's join token (K10 format).
    Show(ServerFlags),
    /// Create a bootstrap token agents can join with (until it expires or
    /// is deleted); prints it in K10 form.
    Create {
        /// Lifetime, e.g. 24h, 90m, 1h30m; 0 = never expires.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Free text shown by `k3rs token list`.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        flags: ServerFlags,
    },
    /// List the bootstrap tokens.
    #[command(visible_alias = "ls")]
    List(ServerFlags),
    /// Delete bootstrap tokens by id (or the full token).
    #[command(visible_alias = "rm")]
    Delete {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        #[command(flatten)]
        flags: ServerFlags,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Reissue the leaf certificates (never the CA) and rewrite the admin
    /// kubeconfig. Run it with the server stopped; the next start uses them.
    Rotate(ServerFlags),
}

/// The clap command (for `main` and help tests).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Runs the subcommand in `matches` (from `command()`).
pub async fn run(matches: &ArgMatches) -> Result<(), Error> {
    match matches.subcommand() {
        Some(("server", m)) => {
            let config = config::load(m)?;
            init_logging(&config);
            let shutdown = server::shutdown_signal().map_err(|e| Error::Io(e.to_string()))?;
            server::run(config, supervise::Options::default(), shutdown).await?;
            Ok(())
        }
        Some(("agent", m)) => {
            let config = config::load_agent(m)?;
            k3rs_common::logging::init(config.log_format.into(), u8::from(config.debug));
            let shutdown = server::shutdown_signal().map_err(|e| Error::Io(e.to_string()))?;
            crate::agent::run(config, supervise::Options::default(), shutdown).await?;
            Ok(())
        }
        Some(("token", m)) => match m.subcommand() {
            Some(("generate", _)) => {
                println!("{}", token::generate_secret());
                Ok(())
            }
            Some(("show", m)) => {
                let config = config::load(m)?;
                let path = bootstrap::Paths::new(&config).token;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Error::Io(format!(
                        "{}: {e} (has `k3rs server` run with this data dir?)",
                        path.display()
                    ))
                })?;
                print!("{text}");
                Ok(())
            }
            Some((sub @ ("create" | "list" | "delete"), m)) => bootstrap_tokens(sub, m).await,
            _ => Err(Error::Usage(
                "k3rs token generate|show|create|list|delete".into(),
            )),
        },
        Some(("kubectl", m)) => {
            let args: Vec<OsString> = m
                .get_many::<OsString>("args")
                .map(|v| v.cloned().collect())
                .unwrap_or_default();
            exec_kubectl(&args)
        }
        Some(("daemon", m)) => {
            let name = m.get_one::<String>("name").cloned().unwrap_or_default();
            let config = config::load(m)?;
            init_logging(&config);
            exec_daemon(&config, &name).await
        }
        Some(("check-config", m)) => {
            let config = config::load(m)?;
            let (text, ok) = check::report(&check::check(&config));
            print!("{text}");
            if ok { Ok(()) } else { Err(Error::CheckFailed) }
        }
        Some(("certificate", m)) => match m.subcommand() {
            Some(("rotate", m)) => {
                let config = config::load(m)?;
                let removed = bootstrap::rotate_certificates(&config)?;
                for p in &removed {
                    println!("removed {}", p.display());
                }
                println!(
                    "issued a new admin certificate and wrote {}; the API server issues its \
                     serving certificate when it next starts (restart k3rs server now)",
                    config.write_kubeconfig.display()
                );
                Ok(())
            }
            _ => Err(Error::Usage("k3rs certificate rotate".into())),
        },
        Some(("etcd-snapshot", m)) => etcd_snapshot(m).await,
        Some(("completion", m)) => {
            let shell = m
                .get_one::<clap_complete::Shell>("shell")
                .copied()
                .ok_or_else(|| Error::Usage("k3rs completion bash|zsh|fish".into()))?;
            let mut cmd = command();
            clap_complete::generate(shell, &mut cmd, "k3rs", &mut std::io::stdout());
            Ok(())
        }
        _ => Err(Error::Usage(
            "k3rs server|agent|daemon|token|kubectl|check-config|certificate|etcd-snapshot|completion"
                .into(),
        )),
    }
}

/// `k3rs token create|list|delete`, through the API server with the admin
/// kubeconfig of this data dir.
async fn bootstrap_tokens(sub: &str, m: &ArgMatches) -> Result<(), Error> {
    let config = config::load(m)?;
    let tls = config.server_dir().join("tls");
    // The API server's own admin kubeconfig names this server's port even
    // when --write-kubeconfig went elsewhere.
    let own = tls.join(k3rs_common::pki::layout::ADMIN_KUBECONFIG);
    let kubeconfig = if own.exists() {
        own
    } else {
        config.write_kubeconfig.clone()
    };
    let client = crate::manifests::client(&kubeconfig)
        .await
        .map_err(|e| Error::Io(format!("{}: {e}", kubeconfig.display())))?;
    let fail = |e: token::BootstrapTokenError| match e {
        token::BootstrapTokenError::BadTtl(_) | token::BootstrapTokenError::BadId(_) => {
            Error::Usage(e.to_string())
        }
        e => Error::Io(e.to_string()),
    };
    match sub {
        "create" => {
            let ttl = m
                .get_one::<String>("ttl")
                .map(String::as_str)
                .unwrap_or("24h");
            let ttl = token::parse_ttl(ttl).map_err(fail)?;
            let ca_file = tls.join(format!("{}.crt", k3rs_common::pki::layout::SERVER_CA));
            let ca_pem = std::fs::read_to_string(&ca_file).map_err(|e| {
                Error::Io(format!(
                    "{}: {e} (has `k3rs server` run with this data dir?)",
                    ca_file.display()
                ))
            })?;
            let description = m.get_one::<String>("description").map(String::as_str);
            let t = token::create(client, &ca_pem, ttl, description)
                .await
                .map_err(fail)?;
            println!("{t}");
        }
        "list" => {
            let tokens = token::list(client).await.map_err(fail)?;
            print!("{}", token::render(&tokens, chrono::Utc::now()));
        }
        _ => {
            let ids: Vec<String> = m
                .get_many::<String>("ids")
                .map(|v| v.cloned().collect())
                .unwrap_or_default();
            for id in ids {
                let id = token::delete(client.clone(), &id).await.map_err(fail)?;
                println!("bootstrap token {id:?} deleted");
            }
        }
    }
    Ok(())
}

async fn etcd_snapshot(m: &ArgMatches) -> Result<(), Error> {
    let Some((sub, m)) = m.subcommand() else {
        return Err(Error::Usage(
            "k3rs etcd-snapshot save|list|delete|restore".into(),
        ));
    };
    let config = config::load(m)?;
    // Not every subcommand has --etcd-snapshot-dir (restore takes a file).
    let dir = m
        .try_get_one::<PathBuf>("dir")
        .ok()
        .flatten()
        .map(PathBuf::as_path);
    let snap = |e: snapshot::SnapshotError| Error::Io(e.to_string());
    match sub {
        "save" => {
            let name = m
                .get_one::<String>("name")
                .map(String::as_str)
                .unwrap_or("on-demand");
            let path = snapshot::save(&config, dir, name).await.map_err(snap)?;
            println!("Snapshot {} saved.", path.display());
        }
        "list" => print!(
            "{}",
            snapshot::render(&snapshot::list(&config, dir).map_err(snap)?)
        ),
        "delete" => {
            let names: Vec<String> = m
                .get_many::<String>("names")
                .map(|v| v.cloned().collect())
                .unwrap_or_default();
            for p in snapshot::delete(&config, dir, &names).map_err(snap)? {
                println!("Removed {}", p.display());
            }
        }
        "restore" => {
            let file = m
                .get_one::<PathBuf>("file")
                .ok_or_else(|| Error::Usage("k3rs etcd-snapshot restore FILE".into()))?;
            let db = snapshot::restore(&config, file).map_err(|e| match e {
                snapshot::SnapshotError::Refused(m) => Error::Refused(m),
                e => Error::Io(e.to_string()),
            })?;
            println!(
                "Restored {} into {}; start k3rs server to use it.",
                file.display(),
                db.display()
            );
        }
        other => {
            return Err(Error::Usage(format!(
                "unknown etcd-snapshot command {other:?}"
            )));
        }
    }
    Ok(())
}

fn init_logging(config: &ServerConfig) {
    k3rs_common::logging::init(config.log_format.into(), u8::from(config.debug));
}

/// The configuration from the config file and environment only (for
/// subcommands that take no server flags).
fn config_without_flags() -> Result<ServerConfig, Error> {
    Ok(config::load_from_args(std::iter::empty::<OsString>())?)
}

/// Replaces this process with the daemon `name` as `k3rs server` would run
/// it (same bootstrap, same flags, the supervisor's own `K3RS_*` removed).
async fn exec_daemon(config: &ServerConfig, name: &str) -> Result<(), Error> {
    use std::os::unix::process::CommandExt;
    let known: Vec<&str> = crate::components::COMPONENTS
        .iter()
        .map(|c| c.name)
        .collect();
    if !known.contains(&name) {
        return Err(Error::Usage(format!(
            "unknown daemon {name:?}; one of: {}",
            known.join(", ")
        )));
    }
    let boot = server::prepare(config).await?;
    let plan = crate::components::plan(config, &boot).map_err(server::ServerError::from)?;
    let spec = plan.into_iter().find(|s| s.name == name).ok_or_else(|| {
        Error::Usage(format!(
            "{name} is disabled or not installed with this configuration"
        ))
    })?;
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args);
    for k in &spec.env_remove {
        cmd.env_remove(k);
    }
    let e = cmd.exec();
    Err(Error::Io(format!(
        "cannot run {}: {e}",
        spec.program.display()
    )))
}

/// Replaces this process with `kubectl args...`, `KUBECONFIG` pointing at the
/// server's admin kubeconfig unless the caller set one.
fn exec_kubectl(args: &[OsString]) -> Result<(), Error> {
    use std::os::unix::process::CommandExt;
    let kubectl = find_kubectl().ok_or_else(|| Error::Io("kubectl is not on PATH".into()))?;
    let mut cmd = std::process::Command::new(&kubectl);
    cmd.args(args);
    if std::env::var_os("KUBECONFIG").is_none() {
        let config = config_without_flags()?;
        let written = config.write_kubeconfig.clone();
        let fallback = config
            .server_dir()
            .join("tls")
            .join(k3rs_common::pki::layout::ADMIN_KUBECONFIG);
        let kubeconfig = if written.exists() { written } else { fallback };
        cmd.env("KUBECONFIG", kubeconfig);
    }
    let e = cmd.exec();
    Err(Error::Io(format!("cannot run {}: {e}", kubectl.display())))
}

/// The first `kubectl` on PATH that is not this program (in case it is
/// installed under that name too).
fn find_kubectl() -> Option<PathBuf> {
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| std::fs::canonicalize(p).ok());
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .filter(|p| p.is_file())
        .find(|p| std::fs::canonicalize(p).ok() != me)
}
