use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // clap prints help/version (exit 0) and usage errors (exit 2) itself.
    let matches = k3rs::cli::command().get_matches();
    match k3rs::cli::run(&matches).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("k3rs: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
