//! What both binaries (`velo-sql`, `velo-sql-multi`) do around their command: logging to
//! stderr (and into server jobs' logs), an async runtime, and a thread with a stack deep enough
//! for planning.

use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;

/// Logs to stderr as `RUST_LOG` says (default: warnings, and this crate's info lines).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,velostream=info,velo_connectors=info"));
    // The most detailed level either layer takes (the job logs take INFO and above).
    let most = Layer::<tracing_subscriber::Registry>::max_level_hint(&filter)
        .map_or(LevelFilter::TRACE, |hint| hint.max(LevelFilter::INFO));
    let subscriber = tracing_subscriber::registry()
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
            crate::server::logs::JobLogLayer
                .with_filter(filter_fn(|meta| *meta.level() <= tracing::Level::INFO)),
        );
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        return;
    }
    // Records of the `log` crate become events, up to the level some layer takes: rdkafka
    // writes two trace records for every message it frees, and building and filtering them
    // cost about a microsecond a message. `librdkafka` is left out: librdkafka's own lines
    // reach `tracing` directly (the Kafka contexts), and rdkafka only asks
    // `log_enabled!(target: "librdkafka", …)` when it makes a client — a question with no
    // event after it, which leaves the per-layer filters' state of that thread set, so the
    // next event there (a warning) would be dropped from stderr.
    let _ = tracing_log::LogTracer::builder()
        .ignore_crate("librdkafka")
        .with_max_level(tracing_log::AsLog::as_log(&most))
        .init();
}

/// The worker threads a server started from `config` (a YAML file) wants; an error is
/// printed and becomes the exit code.
pub fn server_threads(config: Option<&std::path::Path>) -> Result<usize, std::process::ExitCode> {
    let overrides = crate::server::config::Overrides::default();
    match crate::server::config::Config::load(config, &overrides) {
        Ok(config) => Ok(config.sql.worker_threads),
        Err(e) => {
            eprintln!("error: {e}");
            Err(std::process::ExitCode::from(e.exit_code() as u8))
        }
    }
}

/// Runs `command` to its exit code on a runtime of `worker_threads` (default: one per core).
pub fn run<F>(worker_threads: Option<usize>, command: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = i32> + Send + 'static,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    // Planning walks expression trees recursively (DataFusion, sqlparser): every thread that
    // may plan a query gets a stack deep enough for the expression depth `sql` lets through
    // (reserved address space; only what is used is backed by memory).
    builder.thread_stack_size(crate::sql::PLANNING_STACK_BYTES);
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
        .stack_size(crate::sql::PLANNING_STACK_BYTES)
        .spawn(move || {
            let code = runtime.block_on(command);
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
