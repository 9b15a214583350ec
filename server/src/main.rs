//! The `logbook` binary: parses the command line and runs a subcommand.

/// mimalloc rather than glibc's malloc: see the dependency's note in
/// `server/Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    logbook_server::cli::main()
}
