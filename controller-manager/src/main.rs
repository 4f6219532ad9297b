#[tokio::main]
async fn main() {
    // glibc gives every thread its own malloc arena; a few arenas keep the
    // RSS of this allocation-heavy daemon down at no measurable cost.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread allocates much.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli: k3rs_controller_manager::Cli =
        k3rs_common::cli::parse_or_exit("k3rs-controller-manager");
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
