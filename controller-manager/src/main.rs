use clap::Parser;

#[tokio::main]
async fn main() {
    // glibc gives every thread its own malloc arena; a few arenas keep the
    // RSS of this allocation-heavy daemon down at no measurable cost.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread allocates much.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = match k3rs_controller_manager::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            eprintln!(
                "k3rs-controller-manager: {}",
                e.to_string().lines().next().unwrap_or("bad flags")
            );
            std::process::exit(2);
        }
        Err(e) => e.exit(),
    };
    k3rs_common::logging::init(cli.log_format, cli.verbose);
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("k3rs-controller-manager: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = k3rs_controller_manager::run(config).await {
        eprintln!("k3rs-controller-manager: {e}");
        std::process::exit(1);
    }
}
