//! `velo-sql bench nexmark`: Nexmark queries over the bids of the built-in generator, through
//! the same job runtime as `velo-sql execute`, in this process or through the broker, next to a
//! bare librdkafka consumer of the same topic.
//!
//! The bids (the generator's events, bids only, as flat JSON objects) are written first, untimed:
//! to a JSON-lines file, and with `--via-broker` to a fresh topic. Then each query is timed:
//! - in-process: the file → JSON decode → SQL → JSON lines to a discarded file;
//! - via broker: the topic → the same;
//! - raw consume (with `--via-broker`): every message of the topic read and counted, nothing
//!   decoded — what librdkafka alone costs.
//!
//! Each run's rows out are checked against the answer computed from the generated bids here (by
//! plain Rust, not SQL); a wrong count fails the command. Prints records/s and records per
//! CPU-second (user + system of this process, librdkafka's threads included).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use velo_connectors::generator::nexmark::{self, Bid, Event, JsonDialect, NexmarkConfig};
use velo_connectors::kafka::{count_messages, delete_topic, KafkaConnection};

use super::{cpu_seconds, parse_count};
use crate::error::{Result, VeloError};
use crate::job::spec::JobHooks;

/// `velo-sql bench nexmark`'s flags.
#[derive(Debug, Args)]
pub struct NexmarkArgs {
    /// The query: q0 (pass-through), q1 (currency conversion), q2 (selection), q11 (bid
    /// sessions per bidder), count10s (bids per auction in 10 s tumbling windows), or all.
    #[arg(long, default_value = "all", value_parser = ["q0", "q1", "q2", "q11", "count10s", "all"])]
    pub query: String,
    /// Worker lanes each timed run uses (`execute --parallelism`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: u16,
    /// Generator events (bids are 46 in 50 of them): `1M`, `500K`, `20000`.
    #[arg(long, default_value = "1M")]
    pub events: String,
    /// Also run every query from a topic of the broker, and a bare consumer of that topic.
    #[arg(long)]
    pub via_broker: bool,
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Records per micro-batch (throughput runs).
    #[arg(long, default_value_t = 8192)]
    pub batch_size: usize,
    /// Measure latency instead: a continuous job (`stream`, the low-latency profile) from one
    /// topic to another, fed the bids among `--events` events at `--rate` per second; prints the percentiles of
    /// record produced → its result consumed.
    #[arg(long)]
    pub latency: bool,
    /// Bids per second produced in a latency run (the bids among `--events` events).
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// In a latency run, the job runs eager micro-batches (`stream --eager-batches`).
    #[arg(long)]
    pub eager_batches: bool,
}

/// The bid stream's columns.
const BID_COLUMNS: &str = "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
                           url VARCHAR, date_time TIMESTAMP, extra VARCHAR";

/// The queries, as the Nexmark suite (Flink's, Arroyo's, RisingWave's) writes them over `bid`.
const QUERIES: [(&str, &str); 5] = [
    (
        "q0",
        "SELECT auction, bidder, price, date_time, extra FROM bid",
    ),
    (
        "q1",
        "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid",
    ),
    (
        "q2",
        "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    ),
    (
        "q11",
        "SELECT bidder, COUNT(*) AS bid_count, window_start, window_end FROM bid \
         GROUP BY bidder, SESSION(date_time, INTERVAL '10' SECOND)",
    ),
    (
        "count10s",
        "SELECT auction, window_start, COUNT(*) AS bids FROM bid \
         GROUP BY auction WINDOW TUMBLING(date_time, 10s)",
    ),
];

/// What the generated bids must give: rows out per query.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    bids: u64,
    /// Bids of auctions whose id is a multiple of 123 (q2).
    q2: u64,
    /// Sessions of bids less than 10 s apart, per bidder (q11).
    q11: u64,
    /// Distinct (auction, 10 s window) pairs (count10s).
    count10s: u64,
}

impl Expected {
    fn rows(&self, query: &str) -> u64 {
        match query {
            "q2" => self.q2,
            "q11" => self.q11,
            "count10s" => self.count10s,
            _ => self.bids,
        }
    }
}

/// Writes the bids among the first `events` generator events to `path` as JSON lines; what the
/// queries must answer over them.
fn write_bids(path: &Path, events: u64) -> Result<Expected> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut line = Vec::with_capacity(512);
    let mut expected = Expected::default();
    // Per bidder, the time of its last bid; per auction and window, seen.
    let mut last_bid: std::collections::HashMap<i64, i64> = Default::default();
    let mut windows: std::collections::HashSet<(i64, i64)> = Default::default();
    for bid in bids_of(events) {
        match last_bid.insert(bid.bidder, bid.date_time) {
            Some(last) if bid.date_time - last < 10_000 => {}
            _ => expected.q11 += 1,
        }
        windows.insert((bid.auction, bid.date_time.div_euclid(10_000)));
        line.clear();
        nexmark::write_bid_object(&bid, JsonDialect::RisingWave, &mut line);
        line.push(b'\n');
        out.write_all(&line)?;
        expected.bids += 1;
        expected.q2 += u64::from(bid.auction % 123 == 0);
    }
    out.flush()?;
    expected.count10s = windows.len() as u64;
    Ok(expected)
}

/// The bids among the generator's first `events` events.
pub(super) fn bids_of(events: u64) -> impl Iterator<Item = Bid> {
    let config = NexmarkConfig::default();
    (0..events as i64).filter_map(move |n| match nexmark::event(&config, n) {
        Event::Bid(bid) => Some(bid),
        _ => None,
    })
}

/// One timed run.
struct Run {
    what: String,
    records: u64,
    rows_out: Option<u64>,
    wall: f64,
    cpu: f64,
}

impl Run {
    fn print(&self) {
        let rows = self
            .rows_out
            .map_or_else(|| "-".to_string(), |r| r.to_string());
        println!(
            "| {} | {} | {:.2} M/s | {:.2} M/CPU-s | {:.2} s | {:.2} s | {rows} |",
            self.what,
            self.records,
            self.records as f64 / self.wall.max(1e-9) / 1e6,
            self.records as f64 / self.cpu.max(1e-9) / 1e6,
            self.wall,
            self.cpu,
        );
    }
}

/// Runs `velo-sql execute` with `args` in this process; its records in, rows out and times.
async fn execute(what: String, args: &[String]) -> Result<Run> {
    let mut argv = vec!["velo-sql".to_string(), "execute".into()];
    argv.extend(args.iter().cloned());
    let spec = super::spec_of(&argv)?;
    let (cpu, started) = (cpu_seconds(), Instant::now());
    let stats = crate::job::run(spec, JobHooks::default()).await?;
    Ok(Run {
        what,
        records: stats.records_in,
        rows_out: Some(stats.rows_out),
        wall: started.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu,
    })
}

/// A file of this process in the temporary folder, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("velo-bench-{}-{name}", std::process::id())))
    }
    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the benchmark; an error when a query's answer has the wrong number of rows.
pub async fn run(args: NexmarkArgs) -> Result<()> {
    if args.latency {
        return super::latency::run(&args, BID_COLUMNS).await;
    }
    let events = parse_count("--events", &args.events)?;
    let bids = TempFile::new("bids.jsonl");
    let expected = write_bids(&bids.0, events)?;
    let queries: Vec<(&str, &str)> = QUERIES
        .iter()
        .copied()
        .filter(|(name, _)| args.query == "all" || args.query == *name)
        .collect();
    let out = TempFile::new("out.jsonl");
    let common = |query: &str| {
        vec![
            "--schema".to_string(),
            BID_COLUMNS.into(),
            "--query".into(),
            query.into(),
            "--format".into(),
            "json-lines".into(),
            "--output-file".into(),
            out.arg(),
            "--batch-size".into(),
            args.batch_size.to_string(),
            "--parallelism".into(),
            args.parallelism.to_string(),
        ]
    };
    let topic = format!("velo-bench-nexmark-{}", std::process::id());
    if args.via_broker {
        // Not timed: the bids onto a topic of their own.
        let load = [
            "--source".to_string(),
            format!("file:{}", bids.arg()),
            "--schema".into(),
            BID_COLUMNS.into(),
            "--query".into(),
            "SELECT * FROM bid".into(),
            "--output".into(),
            "kafka".into(),
            "--output-topic".into(),
            topic.clone(),
            "--format".into(),
            "json".into(),
            "--brokers".into(),
            args.brokers.clone(),
        ];
        execute("load".into(), &load).await?;
    }
    println!(
        "Nexmark: {events} events, {} bids ({:.0} MB of JSON), {} records per batch, {} worker \
         lane{}",
        expected.bids,
        std::fs::metadata(&bids.0)?.len() as f64 / 1e6,
        args.batch_size,
        args.parallelism,
        if args.parallelism == 1 { "" } else { "s" }
    );
    println!();
    println!("| run | records | records/s | per CPU-second | wall | CPU | rows out |");
    println!("|---|---|---|---|---|---|---|");
    let mut wrong = Vec::new();
    for (name, query) in &queries {
        let mut runs = Vec::new();
        let mut file = vec!["--source".to_string(), format!("file:{}", bids.arg())];
        file.extend(common(query));
        runs.push(execute(format!("{name} in-process (JSON-lines file)"), &file).await?);
        if args.via_broker {
            let mut kafka = vec![
                "--topic".to_string(),
                topic.clone(),
                "--brokers".into(),
                args.brokers.clone(),
            ];
            kafka.extend(common(query));
            runs.push(execute(format!("{name} via broker"), &kafka).await?);
        }
        for run in &runs {
            run.print();
            let want = expected.rows(name);
            if run.records != expected.bids || run.rows_out != Some(want) {
                wrong.push(format!(
                    "{}: {} records in, {:?} rows out; expected {} and {want}",
                    run.what, run.records, run.rows_out, expected.bids
                ));
            }
        }
    }
    if args.via_broker {
        let connection = KafkaConnection::new(args.brokers.clone(), Duration::from_secs(10));
        let (reader, name) = (connection.clone(), topic.clone());
        let raw = tokio::task::spawn_blocking(move || {
            let (cpu, started) = (cpu_seconds(), Instant::now());
            let count = count_messages(&reader, &name);
            let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
            count.map(|records| Run {
                what: "raw consume (librdkafka, nothing decoded)".into(),
                records,
                rows_out: None,
                wall,
                cpu,
            })
        })
        .await
        .map_err(|e| VeloError::Execution(format!("the raw consumer: {e}")))?;
        if let Err(e) = delete_topic(&connection, &topic).await {
            tracing::warn!("the benchmark's topic is left on the broker: {e}");
        }
        let raw = raw?;
        raw.print();
        if raw.records != expected.bids {
            wrong.push(format!(
                "raw consume: {} messages; expected {}",
                raw.records, expected.bids
            ));
        }
    }
    match wrong.is_empty() {
        true => Ok(()),
        false => Err(VeloError::Execution(format!(
            "wrong answers: {}",
            wrong.join("; ")
        ))),
    }
}
