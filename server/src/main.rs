//! The `logbook` binary: parses the command line and runs a subcommand.

/// jemalloc instead of glibc malloc: the request path allocates small buffers
/// on many threads, where glibc spent a tenth of the CPU; mimalloc was as fast
/// but held five times the memory (see benches/README.md, `http_load`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    logbook_server::cli::main()
}
