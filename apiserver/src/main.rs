use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = k3rs_apiserver::Cli::parse();
    k3rs_common::logging::init(cli.log_format, cli.verbose);
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("k3rs-apiserver: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = k3rs_apiserver::run(config).await {
        eprintln!("k3rs-apiserver: {e}");
        std::process::exit(1);
    }
}
