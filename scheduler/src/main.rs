//! `k3rs-scheduler`: parse flags, set up logging, run the scheduler.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use k3rs_common::LogFormat;
use k3rs_scheduler::{Config, LeaderElectionConfig};

/// Go-style durations as upstream flags take them: `15s`, `500ms`, `1m30s`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let (num, tail) = rest.split_at(num_end);
        let value: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let secs = match unit {
            "h" => value * 3600.0,
            "m" => value * 60.0,
            "s" => value,
            "ms" => value / 1000.0,
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += Duration::from_secs_f64(secs);
        rest = next;
    }
    Ok(total)
}

#[derive(Parser, Debug)]
#[command(
    name = "k3rs-scheduler",
    version,
    about = "The k3rs scheduler: binds pending pods to nodes"
)]
struct Flags {
    /// kubeconfig with the apiserver address and credentials.
    #[arg(long, env = "K3RS_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Run only while holding the leader lease.
    #[arg(long, env = "K3RS_LEADER_ELECT", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    leader_elect: bool,
    #[arg(long, env = "K3RS_LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    #[arg(long, env = "K3RS_LEADER_ELECT_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: Duration,
    #[arg(long, env = "K3RS_LEADER_ELECT_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: Duration,
    #[arg(
        long,
        env = "K3RS_LEADER_ELECT_RESOURCE_NAME",
        default_value = "kube-scheduler"
    )]
    leader_elect_resource_name: String,
    #[arg(
        long,
        env = "K3RS_LEADER_ELECT_RESOURCE_NAMESPACE",
        default_value = "kube-system"
    )]
    leader_elect_resource_namespace: String,
    /// Pods naming this scheduler (or none) are ours.
    #[arg(long, env = "K3RS_SCHEDULER_NAME", default_value = "default-scheduler")]
    scheduler_name: String,
    /// Address of the health/metrics endpoint.
    #[arg(long, env = "K3RS_BIND_ADDRESS", default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// Port of the health/metrics endpoint; 0 disables it.
    #[arg(long, env = "K3RS_SECURE_PORT", default_value_t = 10259)]
    secure_port: u16,
    #[arg(long, env = "K3RS_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// More logging (-v debug, -vv trace).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let flags: Flags = k3rs_common::cli::parse_or_exit("k3rs-scheduler");
    k3rs_common::logging::init(flags.log_format, flags.verbose);
    let leader_election = flags.leader_elect.then(|| {
        let mut le = LeaderElectionConfig::new(&flags.leader_elect_resource_name);
        le.namespace = flags.leader_elect_resource_namespace.clone();
        le.lease_duration = flags.leader_elect_lease_duration;
        le.renew_deadline = flags.leader_elect_renew_deadline;
        le.retry_period = flags.leader_elect_retry_period;
        le
    });
    let config = Config {
        kubeconfig: flags.kubeconfig,
        health_addr: (flags.secure_port != 0)
            .then(|| SocketAddr::new(flags.bind_address, flags.secure_port)),
        scheduler_name: flags.scheduler_name,
        leader_election,
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("k3rs-scheduler: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(k3rs_scheduler::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "k3rs-scheduler failed");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
