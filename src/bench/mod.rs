//! Benchmark commands: `velo-sql bench nexmark` ([`nexmark`]) and `velo-sql-multi benchmark`.
//!
//! `velo-sql-multi benchmark`, test types (the deployment guide's names):
//! - `throughput`: `bench nexmark` over `--data-size` events (`--query`, `--via-broker`,
//!   `--parallelism` as there);
//! - `latency`: `bench nexmark --latency` at `--target-rps` (default 2 000 bids/s) for
//!   `--duration`, printing the `--percentiles` of record produced → result consumed.
//!
//! The other types run the engine in this process on the built-in trades generator, through
//! the same job runtime as `velo-sql execute` (generate → JSON → SQL → JSON lines into a
//! temporary file, removed after), and print records/s, wall and CPU seconds per run:
//! - `query_performance`: `--concurrent-queries` different queries (filter, tumbling window,
//!   GROUP BY, OVER) at once, each timed;
//! - `memory_stress`: a GROUP BY over many keys, reporting the state held (`--memory-limit`
//!   caps it: the run fails cleanly past it);
//! - `scalability`: `--concurrent-jobs` copies of the throughput query at once, and their
//!   total records/s.

mod latency;
pub mod nexmark;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::error::{Result, VeloError};
use crate::job::progress::JobProgress;
use crate::job::spec::JobHooks;

/// `benchmark`'s flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, value_parser = ["throughput", "latency", "query_performance", "memory_stress", "scalability"])]
    pub test_type: String,
    /// How long a `latency` run produces bids; the longest a trades run may take (it stops
    /// there). In seconds or with a unit. A `throughput` run reads its `--data-size` events.
    #[arg(long, default_value = "60")]
    pub duration: String,
    #[arg(long, default_value_t = 4)]
    pub concurrent_queries: usize,
    /// Records per run: `1M`, `500K`, `20000`.
    #[arg(long, default_value = "1M")]
    pub data_size: String,
    /// Bids per second a `latency` run produces (default 2 000); trades runs are paced at it
    /// when given. A `throughput` run reads as fast as it can.
    #[arg(long)]
    pub target_rps: Option<u64>,
    #[arg(long, default_value_t = 8192)]
    pub batch_size: usize,
    /// State limit of each run, e.g. `8G`, `512MB`.
    #[arg(long)]
    pub memory_limit: Option<String>,
    #[arg(long, default_value_t = 4)]
    pub concurrent_jobs: usize,
    /// Latency percentiles to print.
    #[arg(long, default_value = "50,95,99")]
    pub percentiles: String,
    /// The Nexmark query of a `throughput` run (as `bench nexmark --query`).
    #[arg(long, default_value = "all", value_parser = nexmark::QUERY_NAMES)]
    pub query: String,
    /// A `throughput` run also reads every stream from topics of the broker.
    #[arg(long)]
    pub via_broker: bool,
    /// Worker lanes of a `throughput` run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: u16,
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
}

/// The guide's `--percentiles 50,95,99`.
fn parse_percentiles(text: &str) -> Result<Vec<f64>> {
    text.split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
        })
        .collect::<Option<Vec<f64>>>()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            VeloError::Usage(format!(
                "--percentiles '{text}' is not a list of percentiles like 50,95,99"
            ))
        })
}

/// `throughput` and `latency`: the Nexmark benchmark, with the guide's flags mapped onto
/// `bench nexmark`'s.
async fn run_nexmark(args: BenchArgs) -> Result<()> {
    let percentiles = parse_percentiles(&args.percentiles)?;
    let latency = args.test_type == "latency";
    let rate = args.target_rps.unwrap_or(2_000).max(1);
    let events = if latency {
        // Enough events for `--duration` of bids at `rate` (46 events in 50 are bids).
        let seconds = crate::cli::parse_timeout(&args.duration)
            .map_err(|e| VeloError::Usage(format!("--duration '{}': {e}", args.duration)))?
            .as_secs_f64();
        let bids = (rate as f64 * seconds).ceil().max(2.0);
        ((bids * 50.0 / 46.0).ceil() as u64 + 50).to_string()
    } else {
        if args.target_rps.is_some() {
            println!("(--target-rps paces latency runs; a throughput run reads as fast as it can)");
        }
        args.data_size.clone()
    };
    let nexmark_args = nexmark::NexmarkArgs {
        query: if latency { "q0".into() } else { args.query },
        parallelism: args.parallelism,
        events,
        via_broker: args.via_broker,
        brokers: args.brokers,
        batch_size: args.batch_size,
        latency,
        rate,
        eager_batches: false,
    };
    match latency {
        true => latency::run(&nexmark_args, nexmark::BID_COLUMNS, &percentiles).await,
        false => nexmark::run(nexmark_args).await,
    }
}

const THROUGHPUT: &str =
    "SELECT symbol, price, quantity, price * quantity AS notional FROM trades WHERE quantity > 100";

const QUERIES: [(&str, &str); 4] = [
    ("filter", THROUGHPUT),
    (
        "tumbling_window",
        "SELECT symbol, COUNT(*) AS trades, SUM(quantity) AS volume FROM trades \
         GROUP BY symbol, TUMBLE(ts, INTERVAL '1' SECOND)",
    ),
    (
        "group_by",
        "SELECT symbol, side, COUNT(*) AS n, MAX(price) AS high FROM trades GROUP BY symbol, side",
    ),
    (
        "over",
        "SELECT symbol, price, AVG(price) OVER (PARTITION BY symbol ORDER BY ts \
         ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS moving FROM trades",
    ),
];

/// Runs started in this process (names their output files apart).
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One run's measurement.
struct Measured {
    name: String,
    records: u64,
    rows_out: u64,
    wall: Duration,
    state_bytes: u64,
    progress: Arc<JobProgress>,
}

/// `1M` → 1 000 000.
pub(crate) fn parse_count(flag: &str, text: &str) -> Result<u64> {
    let t = text.trim().to_ascii_uppercase();
    let (digits, factor) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 1_000),
        Some('M') => (&t[..t.len() - 1], 1_000_000),
        Some('G' | 'B') => (&t[..t.len() - 1], 1_000_000_000),
        _ => (t.as_str(), 1),
    };
    digits
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| *n > 0.0)
        .map(|n| (n * factor as f64) as u64)
        .ok_or_else(|| VeloError::Usage(format!("{flag} '{text}' is not a count like 1M")))
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

/// The job `argv` (`velo-sql execute …` or `velo-sql stream …`) describes, parsed as the
/// command line is.
fn spec_of(argv: &[String]) -> Result<crate::job::spec::JobSpec> {
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(argv)
        .map_err(|e| VeloError::Usage(e.to_string()))?;
    match cli.command {
        crate::cli::Command::Execute(execute) => crate::cli::execute_spec(&execute),
        crate::cli::Command::Stream(stream) => crate::cli::stream_spec(&stream),
        _ => Err(VeloError::Usage(format!(
            "not an execute or stream command: {argv:?}"
        ))),
    }
}

/// Runs `query` over `count` generated trades; rows go to a discarded JSON-lines file.
async fn run_one(
    name: &str,
    query: &str,
    count: u64,
    rate: Option<u64>,
    args: &BenchArgs,
) -> Result<Measured> {
    let mut source = format!("generator:trades?count={count}");
    if let Some(rate) = rate {
        source.push_str(&format!("&rate={rate}"));
    }
    // A file of this run's own, removed after (the file sink syncs and renames its file).
    let out = std::env::temp_dir().join(format!(
        "velo-bench-{}-{name}-{}.jsonl",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut argv = vec![
        "velo-sql".to_string(),
        "execute".into(),
        "--source".into(),
        source,
        "--query".into(),
        query.into(),
        "--format".into(),
        "json-lines".into(),
        "--output-file".into(),
        out.display().to_string(),
        "--batch-size".into(),
        args.batch_size.to_string(),
        "--timeout".into(),
        args.duration.clone(),
    ];
    if let Some(limit) = &args.memory_limit {
        argv.extend(["--max-state-memory".into(), limit.clone()]);
    }
    let spec = spec_of(&argv)?;
    let progress = Arc::new(JobProgress::new(name));
    let hooks = JobHooks {
        progress: Some(progress.clone()),
        ..JobHooks::default()
    };
    let started = Instant::now();
    let stats = crate::job::run(spec, hooks).await;
    let _ = std::fs::remove_file(&out);
    let stats = stats?;
    Ok(Measured {
        name: name.to_string(),
        records: stats.records_in,
        rows_out: stats.rows_out,
        wall: started.elapsed(),
        state_bytes: stats.operators.state_bytes,
        progress,
    })
}

fn report(m: &Measured) {
    let secs = m.wall.as_secs_f64().max(1e-9);
    println!(
        "{:<16} {:>10} records  {:>10} rows out  {:>8.3} s  {:>12.0} records/s",
        m.name,
        m.records,
        m.rows_out,
        secs,
        m.records as f64 / secs
    );
}

/// Runs the benchmark `args` names and prints its measurements.
pub async fn run(args: BenchArgs) -> Result<()> {
    if matches!(args.test_type.as_str(), "throughput" | "latency") {
        return run_nexmark(args).await;
    }
    let count = parse_count("--data-size", &args.data_size)?;
    let percentiles = parse_percentiles(&args.percentiles)?;
    let cpu = cpu_seconds();
    let started = Instant::now();
    let runs: Vec<Measured> = match args.test_type.as_str() {
        "query_performance" => {
            let runs = QUERIES
                .iter()
                .cycle()
                .take(args.concurrent_queries.max(1))
                .map(|(name, q)| run_one(name, q, count, args.target_rps, &args));
            futures::future::try_join_all(runs).await?
        }
        "memory_stress" => {
            let query = "SELECT trade_id % 1000000 AS k, COUNT(*) AS n, SUM(quantity) AS q \
                         FROM trades GROUP BY trade_id % 1000000";
            vec![run_one("memory_stress", query, count, args.target_rps, &args).await?]
        }
        _ => {
            let runs = (0..args.concurrent_jobs.max(1)).map(|i| {
                run_one(
                    Box::leak(format!("job_{}", i + 1).into_boxed_str()),
                    THROUGHPUT,
                    count,
                    args.target_rps,
                    &args,
                )
            });
            futures::future::try_join_all(runs).await?
        }
    };
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let cpu = cpu_seconds() - cpu;
    println!("benchmark {} ({} records per run)", args.test_type, count);
    for m in &runs {
        report(m);
        if args.test_type == "query_performance" {
            if let Some(values) = m.progress.latency_percentiles_at(&percentiles) {
                let shown: Vec<String> = percentiles
                    .iter()
                    .zip(values)
                    .map(|(p, v)| format!("p{p}={v:.3} ms"))
                    .collect();
                println!("{:<16} micro-batch latency {}", "", shown.join(" "));
            }
        }
        if args.test_type == "memory_stress" {
            println!("{:<16} state held at the end: {} bytes", "", m.state_bytes);
        }
    }
    let total: u64 = runs.iter().map(|m| m.records).sum();
    println!(
        "total: {total} records in {wall:.3} s wall, {cpu:.3} CPU-s: {:.0} records/s, {:.0} records/CPU-s",
        total as f64 / wall,
        total as f64 / cpu.max(1e-9)
    );
    Ok(())
}
