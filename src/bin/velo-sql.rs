//! The `velo-sql` binary: parses the command line and runs it (see `velostream::cli`).

use clap::Parser;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use velostream::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,velostream=info,velo_connectors=info"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter),
        )
        // Lines logged inside a server job also go to that job's log (GET /jobs/{id}/logs),
        // whatever RUST_LOG lets through to stderr. A filter function, not a `LevelFilter`:
        // its `sometimes` interest makes every event ask both filters, where two per-layer
        // filters with cached `always` interests lose the first event of a callsite
        // (tokio-rs/tracing#2519).
        .with(
            velostream::server::logs::JobLogLayer
                .with_filter(filter_fn(|meta| *meta.level() <= tracing::Level::INFO)),
        )
        .init();
    let cli = Cli::parse();
    // The server's runtime has sql.worker_threads threads (SQL_WORKER_THREADS).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Server(args) = &cli.command {
        let overrides = velostream::server::config::Overrides::default();
        match velostream::server::config::Config::load(args.config.as_deref(), &overrides) {
            Ok(config) => {
                builder.worker_threads(config.sql.worker_threads);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::from(e.exit_code() as u8);
            }
        }
    }
    // Planning walks expression trees recursively (DataFusion, sqlparser): every thread that
    // may plan a query gets a stack deep enough for the expression depth `sql` lets through
    // (reserved address space; only what is used is backed by memory).
    builder.thread_stack_size(velostream::sql::PLANNING_STACK_BYTES);
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    // The command runs on a thread of its own with the same deep stack (the main thread's is
    // fixed by the system).
    let code = std::thread::Builder::new()
        .name("velo-sql".into())
        .stack_size(velostream::sql::PLANNING_STACK_BYTES)
        .spawn(move || {
            let code = runtime.block_on(velostream::cli::main_with(cli));
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            code
        })
        .map(|t| t.join().unwrap_or(101))
        .unwrap_or_else(|e| {
            eprintln!("error: cannot start the main thread: {e}");
            1
        });
    std::process::ExitCode::from(code as u8)
}
