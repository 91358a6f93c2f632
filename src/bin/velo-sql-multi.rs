//! The `velo-sql-multi` binary: the deployment guide's multi-job commands (see
//! `velostream::multi`).

use clap::Parser;
use velostream::multi::{MultiCli, MultiCommand};

fn main() -> std::process::ExitCode {
    velostream::entry::init_logging();
    let cli = MultiCli::parse();
    // Jobs run here behind the HTTP API: the configured worker threads.
    let threads = match &cli.command {
        MultiCommand::DeployApp(args) if cli.server.is_none() && args.continuous => {
            match velostream::entry::server_threads(args.config.as_deref()) {
                Ok(n) => Some(n),
                Err(code) => return code,
            }
        }
        _ => None,
    };
    velostream::entry::run(threads, velostream::multi::main_with(cli))
}
