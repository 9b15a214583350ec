//! The `logbook` binary: parses the command line and runs a subcommand.

fn main() -> std::process::ExitCode {
    logbook_server::cli::main()
}
