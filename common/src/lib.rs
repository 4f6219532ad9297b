//! Shared plumbing for the k3rs daemons: logging setup, the health/metrics
//! HTTP endpoint, the PKI and TLS loaders, and one retry/back-off helper.
//! Domain logic does not belong here; keep this crate small and boring.

pub mod backoff;
pub mod cli;
#[cfg(feature = "kube")]
pub mod events;
pub mod health;
pub mod http_proxy;
#[cfg(feature = "kube")]
pub mod join_client;
#[cfg(feature = "kube")]
pub mod leader_election;
pub mod logging;
pub mod node;
#[cfg(feature = "oci")]
pub mod oci_image;
pub mod pki;
pub mod tls;
pub mod token;

pub use backoff::Backoff;
pub use health::{HealthServer, Readiness};
pub use logging::LogFormat;
