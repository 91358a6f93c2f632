//! The `velo-sql` binary: parses the command line and runs it (see `velostream::cli`).

use clap::Parser;
use velostream::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    velostream::entry::init_logging();
    let cli = Cli::parse();
    // The server's runtime has sql.worker_threads threads (SQL_WORKER_THREADS).
    let threads = match &cli.command {
        Command::Server(args) => match velostream::entry::server_threads(args.config.as_deref()) {
            Ok(n) => Some(n),
            Err(code) => return code,
        },
        _ => None,
    };
    velostream::entry::run(threads, velostream::cli::main_with(cli))
}
