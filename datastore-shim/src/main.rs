use std::process::ExitCode;

use clap::Parser;
use k3rs_datastore::config::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    k3rs_common::logging::init(cli.log_format, cli.verbose);
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("k3rs-datastore: {e}");
            return ExitCode::from(2);
        }
    };
    match k3rs_datastore::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "k3rs-datastore failed");
            eprintln!("k3rs-datastore: {e}");
            ExitCode::FAILURE
        }
    }
}
