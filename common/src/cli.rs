//! Command-line parsing shared by the daemons' `main`s.
//!
//! Exit code 2 means "this configuration cannot work": a bad flag, or (the
//! node agent) a server refusing the node's token or name. The supervisor
//! does not restart a daemon that exits 2 before it was ever ready.

/// Parses the process's flags as `T`. `--help`/`--version` print and exit 0;
/// a bad flag prints one line naming the problem, prefixed with `program`,
/// and exits 2 (the convention every k3rs binary follows).
pub fn parse_or_exit<T: clap::Parser>(program: &str) -> T {
    match T::try_parse() {
        Ok(t) => t,
        Err(e) if e.use_stderr() => {
            let msg = e.to_string();
            let line = msg.lines().next().unwrap_or("invalid flags");
            eprintln!("{program}: {line}");
            std::process::exit(2);
        }
        Err(e) => e.exit(),
    }
}
