//! k3rs: the supervisor behind `k3rs server`.
//!
//! It reads one configuration (`config`), prepares the data dir, PKI, tokens
//! and kubeconfig (`bootstrap`, `token`), then runs the daemons listed in
//! `components` as child processes (`daemon`), starting each once the
//! previous is ready, health-checking and restarting them (`supervise`,
//! `probe`), and stopping them in reverse order on SIGTERM/SIGINT (`server`).
//! `manifests` applies the auto-deploy manifests once the API server is up.
//! `cli` is the `k3rs` command line; `check` is `k3rs check-config`.
//! `etcd` runs the embedded etcd member of `--cluster-init`/`--server`
//! servers; `server_bootstrap` is what such servers share and how a
//! further server fetches it.

pub mod agent;
pub mod bootstrap;
pub mod check;
pub mod cli;
pub mod components;
pub mod config;
pub mod daemon;
pub mod etcd;
pub mod manifests;
pub mod node;
pub mod probe;
pub mod registries;
pub mod server;
pub mod server_bootstrap;
pub mod snapshot;
pub mod supervise;
pub mod token;

pub use config::{ServerConfig, ServerFlags};
pub use server::run;

/// Errors of the `k3rs` commands, each with the process exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("{0}")]
    NotImplemented(&'static str),
    #[error("usage: {0}")]
    Usage(String),
    /// A request the command refuses as given (exit 2), e.g. restoring
    /// while the server runs.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Io(String),
    #[error("the configuration check failed")]
    CheckFailed,
}

impl Error {
    /// 2 for anything the user must fix in the configuration or command
    /// line (as clap and every k3rs daemon do), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::NotImplemented(_) | Error::Usage(_) | Error::Refused(_) => 2,
            Error::Bootstrap(
                bootstrap::BootstrapError::BadToken(_)
                | bootstrap::BootstrapError::TokenForOtherCa { .. }
                | bootstrap::BootstrapError::TokenChanged { .. },
            ) => 2,
            Error::Server(server::ServerError::Bootstrap(
                bootstrap::BootstrapError::BadToken(_)
                | bootstrap::BootstrapError::TokenForOtherCa { .. }
                | bootstrap::BootstrapError::TokenChanged { .. },
            )) => 2,
            Error::Server(server::ServerError::Join {
                source:
                    server_bootstrap::ServerJoinError::BadToken(_)
                    | server_bootstrap::ServerJoinError::BadServer(_)
                    | server_bootstrap::ServerJoinError::CaMismatch { .. }
                    | server_bootstrap::ServerJoinError::Refused { .. }
                    | server_bootstrap::ServerJoinError::OtherCluster { .. },
                ..
            }) => 2,
            _ => 1,
        }
    }
}
