//! The `logbook` binary: parses the command line and runs a subcommand.

/// mimalloc instead of glibc malloc: the request path allocates small buffers
/// on many threads, where glibc spent a tenth of the CPU (see benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    logbook_server::cli::main()
}
