//! The `velo-sql` command line: `execute` (a bounded query), `stream` (a continuous query) and
//! `demo` (a continuous query over the built-in trades generator, no services needed).
//!
//! This module turns arguments into a [`JobSpec`] and hands it to the [`crate::job`] layer
//! (or, for `server`, `deploy-app` and `jobs`, to the [`crate::server`]). Exit codes: 0 success, 2 a mistake in the query or arguments
//! (syntax, unknown table or column, bad option), 1 anything else (broker down, I/O).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use velo_connectors::codec::DecimalFormat;
use velo_connectors::format::OutputFormat;
use velo_connectors::kafka::StartOffset;

use crate::error::{Result, VeloError};
use crate::job::{
    Delivery, InputSpec, JobHooks, JobProgress, JobSpec, JobStats, OutputSpec, OutputTarget,
    ReadSpec, RuntimeOptions, StateSpec,
};

/// Streaming SQL over Kafka topics.
#[derive(Debug, Parser)]
#[command(name = "velo-sql", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a query over what a topic holds now (up to its current end offsets), print, exit.
    Execute(ExecuteArgs),
    /// Run a continuous query until stopped (SIGINT/SIGTERM) or until --limit rows.
    Stream(StreamArgs),
    /// Write what a topic holds now (or a query's bounded result) to a file: Parquet (from
    /// the .parquet extension, the default), Avro, JSON lines or CSV.
    Export(ExportArgs),
    /// Run a live query over the built-in trades generator (no Kafka needed).
    Demo(DemoArgs),
    /// Start the HTTP server (SQL API, streams catalog, jobs, metrics).
    Server(ServerArgs),
    /// Deploy an SQL application file: to a server (--server), or run its jobs here.
    DeployApp(DeployAppArgs),
    /// Manage the jobs of a server.
    Jobs(JobsArgs),
    /// Save a server's jobs (definitions and their last checkpoints) to a file.
    ExportState(ExportStateArgs),
    /// Load jobs saved by export-state into a server; they start from their checkpoints.
    ImportState(ImportStateArgs),
    /// Measure the engine: records/s and records per CPU-second, answers checked.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// `velo-sql bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Nexmark q0–q2 over generated bids: in this process, and with --via-broker through a
    /// topic, next to a bare librdkafka consumer of it. Row counts are checked.
    Nexmark(crate::bench::nexmark::NexmarkArgs),
}

/// `velo-sql export-state`.
#[derive(Debug, Args)]
pub struct ExportStateArgs {
    /// The server.
    #[arg(long, env = "VELO_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Only this job (default: every job).
    #[arg(long, visible_alias = "job-id")]
    pub job: Option<String>,
    /// The file to write (JSON).
    #[arg(long)]
    pub output: PathBuf,
}

/// `velo-sql import-state`.
#[derive(Debug, Args)]
pub struct ImportStateArgs {
    /// The server.
    #[arg(long, env = "VELO_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A file written by export-state.
    #[arg(long)]
    pub input: PathBuf,
    /// Replace jobs of the same id (deleting them first) instead of refusing the import.
    #[arg(long)]
    pub replace: bool,
}

/// `velo-sql server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// YAML configuration (see configs/velo-default.yaml); environment variables override it,
    /// and these flags override both.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on (default 127.0.0.1).
    #[arg(long)]
    pub bind: Option<String>,
}

/// `velo-sql deploy-app`.
#[derive(Debug, Args)]
pub struct DeployAppArgs {
    /// The application file.
    #[arg(long)]
    pub file: PathBuf,
    /// Deploy to this server instead of running the jobs in this process.
    #[arg(long)]
    pub server: Option<String>,
    /// Kafka bootstrap servers (in-process runs; default: the config's, KAFKA_BROKERS, or
    /// 127.0.0.1:9092).
    #[arg(long)]
    pub brokers: Option<String>,
    /// A server configuration file (in-process runs): Kafka security and tuning, performance
    /// profile, restart policy, state folder.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Input topic of jobs whose file gives none (`-- TOPIC:`).
    #[arg(long)]
    pub default_topic: Option<String>,
    /// Prefix of every job id.
    #[arg(long, default_value = "")]
    pub job_prefix: String,
    /// Prefix of every job's consumer group (`<prefix><job id>`).
    #[arg(long, default_value = "velo-")]
    pub group_prefix: String,
    /// Most jobs to run.
    #[arg(long)]
    pub max_jobs: Option<usize>,
    #[arg(long, value_enum, default_value = "on-failure")]
    pub restart_policy: crate::server::config::RestartPolicy,
    /// Keep the jobs running until stopped (SIGINT/SIGTERM); without it each job reads what
    /// its topics hold now, and the command exits when all are done. Deploys to a server are
    /// always continuous.
    #[arg(long)]
    pub continuous: bool,
}

/// `velo-sql jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The server.
    #[arg(
        long,
        env = "VELO_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// What to do with jobs.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs.
    List {
        /// Only jobs in this state (running, paused, stopped, failed, finished, …).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// A job's status as JSON.
    Status {
        id: String,
    },
    Stop {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Restart {
        id: String,
    },
    /// Delete a job (stopping it first).
    Delete {
        id: String,
    },
    /// Take a savepoint: a fresh checkpoint of the job, copied to the server's savepoints
    /// folder (prints its path).
    Savepoint {
        id: String,
    },
    /// A job's recent results (JSON lines).
    Output {
        id: String,
        #[arg(long)]
        follow: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// A job's log lines.
    Logs {
        id: String,
        #[arg(long, default_value_t = 100)]
        tail: usize,
        #[arg(long)]
        follow: bool,
    },
}

/// Where results go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputKind {
    Stdout,
    File,
    Kafka,
}

/// Arguments shared by `execute` and `stream`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL text: optional CREATE STREAM declarations and one SELECT, separated by ';'.
    #[arg(long, short = 'q')]
    pub query: Option<String>,
    /// Read the SQL text from this file instead of --query.
    #[arg(long, short = 'f', conflicts_with = "query")]
    pub file: Option<PathBuf>,
    /// Topic of the query's only input (default: the name in FROM).
    #[arg(long, visible_alias = "input-topic")]
    pub topic: Option<String>,
    /// Read the query's only input from a built-in generator or files instead of Kafka, e.g.
    /// `generator:trades?count=1000`, `generator:nexmark`, `file:orders.parquet`,
    /// `file:incoming/` (a folder; `stream` picks up new files) or `file:'data/*.csv'`.
    #[arg(long, conflicts_with = "topic")]
    pub source: Option<String>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// A librdkafka property for every Kafka client of the query, `key=value` (repeatable),
    /// e.g. `fetch.min.bytes=65536` or `security.protocol=ssl`.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// Payload columns of the only input as a SQL column list, e.g.
    /// 'symbol VARCHAR, price DECIMAL(18,4)'. Without it the schema is inferred.
    #[arg(long)]
    pub schema: Option<String>,
    /// A file holding the column list of --schema.
    #[arg(long, conflicts_with = "schema")]
    pub schema_file: Option<PathBuf>,
    /// Output format: json, json-pretty, json-lines, csv, table; avro or protobuf (Kafka);
    /// parquet (a file). Default: from --output-file's extension (.parquet, .jsonl, .csv),
    /// else json.
    #[arg(long)]
    pub format: Option<OutputFormat>,
    /// How decimals are written in JSON: string (exact text, default) or number.
    #[arg(long, default_value = "string")]
    pub decimal_format: DecimalFormat,
    /// Stop after this many result rows.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Where results go.
    #[arg(long, value_enum, default_value = "stdout")]
    pub output: OutputKind,
    /// File for --output file (given alone, it means --output file).
    #[arg(long)]
    pub output_file: Option<PathBuf>,
    /// Part files in this folder (Parquet, Avro, JSON lines or CSV per --format), each renamed into
    /// place when committed (with a checkpoint on `stream`); implies --output file.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// --output-dir: start a new part file after this many rows.
    #[arg(long)]
    pub roll_rows: Option<u64>,
    /// --output-dir: start a new part file past this size, e.g. 128MiB.
    #[arg(long)]
    pub roll_bytes: Option<String>,
    /// --output-dir: start a new part file after this long, e.g. 5m.
    #[arg(long)]
    pub roll_interval: Option<String>,
    /// --output-dir: Hive-style folders by these columns (`dt=2024-01-01/`), e.g. dt,region.
    #[arg(long, value_delimiter = ',')]
    pub partition_by: Vec<String>,
    /// Parquet output: page compression, zstd (default), snappy or none.
    #[arg(long, default_value = "zstd")]
    pub compression: velo_connectors::parquet_file::ParquetCompression,
    /// Parquet output: most rows per row group.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub row_group_rows: usize,
    /// Topic for --output kafka (one message per result row; given alone, it means --output
    /// kafka).
    #[arg(long)]
    pub output_topic: Option<String>,
    /// Column whose value keys each output message.
    #[arg(long)]
    pub output_key: Option<String>,
    /// Consumer group id.
    #[arg(long)]
    pub group_id: Option<String>,
    /// Write records that cannot be decoded to this topic, unchanged, with the reason in the
    /// `velo.error` header.
    #[arg(long)]
    pub dlq_topic: Option<String>,
    /// When a dead letter cannot be written (too large for the broker, the topic unwritable):
    /// log (report it and go on, the default) or fail (stop the job).
    #[arg(long, default_value = "log")]
    pub dlq_on_error: velo_connectors::kafka::DeadLetterFailure,
    /// What a bad record or row does — one that cannot be decoded, has no believable event
    /// time, makes an expression fail or cannot be encoded: skip (log it), dead-letter (to
    /// --dlq-topic) or fail (stop the job). Default: dead-letter with --dlq-topic, else skip.
    /// Every one is counted either way.
    #[arg(long, value_parser = parse_on_error)]
    pub on_error: Option<crate::job::OnError>,
    /// Round input decimals with more fractional digits than their column's scale
    /// (half-even or half-up) instead of refusing the record (the default: money is never
    /// changed silently). A stream's own 'decimal.rounding' option wins.
    #[arg(long, value_parser = parse_rounding)]
    pub decimal_rounding: Option<velo_connectors::codec::decimal::DecimalRounding>,
    /// Time allowed for broker requests before giving up: seconds (`10`) or a duration (`60s`,
    /// `2m`).
    #[arg(long, default_value = "10", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Most records per micro-batch.
    #[arg(long, default_value_t = 8192)]
    pub batch_size: usize,
    /// Worker lanes (threads) the job runs on (default: one per core): a row-wise query's
    /// micro-batches are split across them, a GROUP BY's keys shared among them; other queries
    /// run on one.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: Option<u16>,
    /// Event-time column of the only input (default: the Kafka record timestamp, or the
    /// column of `WATERMARK FOR`).
    #[arg(long)]
    pub event_time_column: Option<String>,
    /// Allowed out-of-orderness of event time, e.g. 5s or 500ms.
    #[arg(long)]
    pub watermark_delay: Option<String>,
    /// A partition without records for this long stops holding the watermark back.
    #[arg(long, default_value = "30s")]
    pub idle_timeout: String,
    /// A record whose event time is later than the watermark and the clock by more than this
    /// is a bad record (counted, dead-lettered), not a watermark move; 0 turns the check off.
    #[arg(long, default_value = "1h")]
    pub max_event_time_skew: String,
    /// Fail the job when operator state (open windows, sessions, OVER history, join tables)
    /// holds more than this, e.g. 512MiB or 2GB (checked about once a second).
    #[arg(long)]
    pub max_state_memory: Option<String>,
    /// Lets a join of two streams with no window and no time bound run as an updating INNER
    /// join that keeps each row this long (processing time), e.g. 1h or 10m; an OVER window
    /// forgets a partition whose newest row is this far behind the watermark.
    #[arg(long)]
    pub state_ttl: Option<String>,
    /// Shorthand for a tumbling window of this many seconds (`WINDOW TUMBLING(Ns)`).
    #[arg(long)]
    pub window_size: Option<u64>,
    /// Write records that arrive after their window closed to this topic (as JSON rows of the
    /// window's input), instead of only dropping and counting them.
    #[arg(long)]
    pub late_topic: Option<String>,
    /// Encoding of the only input: json (default), avro or protobuf; for `--source file:`,
    /// json, csv, parquet or avro (default: from the extension). On `stream`, `--format avro`
    /// without `--input-format` means both sides are Avro.
    #[arg(long)]
    pub input_format: Option<String>,
    /// Avro schema (.avsc) of the input, and of the output unless --output-avro-schema is given.
    #[arg(long)]
    pub avro_schema: Option<PathBuf>,
    /// Avro schema (.avsc) of the output when it differs from the input's (default: derived
    /// from the result's columns).
    #[arg(long)]
    pub output_avro_schema: Option<PathBuf>,
    /// `.proto` file of the input (and of the output unless --output-proto-file is given).
    #[arg(long)]
    pub proto_file: Option<PathBuf>,
    /// Message type of the input, e.g. `velostream.examples.Trade`.
    #[arg(long)]
    pub proto_message: Option<String>,
    /// `.proto` file of the output when it differs from the input's.
    #[arg(long)]
    pub output_proto_file: Option<PathBuf>,
    /// Message type of the output when it differs from the input's.
    #[arg(long)]
    pub output_proto_message: Option<String>,
    /// Confluent Schema Registry URL: Avro and Protobuf records are read and written in the
    /// Confluent wire format (schema id in front), schemas fetched by id and registered under
    /// `<topic>-value`.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry: Option<String>,
}

/// `velo-sql execute`.
#[derive(Debug, Args)]
pub struct ExecuteArgs {
    #[command(flatten)]
    pub query: QueryArgs,
    /// Where to start in each partition: earliest, latest or an offset.
    #[arg(long, default_value = "earliest")]
    pub offset: StartOffset,
    /// Read only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
}

/// `velo-sql export`: `execute` into a file, with a progress bar on a terminal.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub read: ExecuteArgs,
    /// No progress bar (there is none when stderr is not a terminal anyway).
    #[arg(long)]
    pub quiet: bool,
}

/// `velo-sql stream`.
#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    pub query: QueryArgs,
    /// Where a consumer group without committed offsets starts: earliest or latest.
    #[arg(long, default_value = "earliest")]
    pub auto_offset_reset: StartOffset,
    /// Read only this partition of the input topic (assigned, not shared with the group's
    /// other members; offsets are still committed for the group).
    #[arg(long)]
    pub partition: Option<i32>,
    /// Keep running until stopped (the default; accepted for compatibility).
    #[arg(long)]
    pub continuous: bool,
    /// Longest wait, in ms, before a micro-batch runs with the records it has (a topic's
    /// reading thread waits 1 s at most: a longer interval still closes a batch after 1 s).
    #[arg(long, default_value_t = 200)]
    pub flush_interval_ms: u64,
    /// Run a micro-batch as soon as the consumer has nothing more buffered, instead of waiting
    /// up to the flush interval for it to fill: lower latency at low rates; under load, more
    /// and smaller batches.
    #[arg(long)]
    pub eager_batches: bool,
    /// Root of the jobs' state folders (checkpoints); the job's is `<dir>/<job name>`.
    /// Default `$VELO_STATE_DIR`, else the user's data dir (`~/.local/share/velostream/state`).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Names the job's state folder and its exactly-once tags (default: the consumer group).
    #[arg(long)]
    pub job_name: Option<String>,
    /// How often the job writes a checkpoint (state + offsets), e.g. 10s, 500ms.
    #[arg(long, default_value = "10s")]
    pub checkpoint_interval: String,
    /// Start without the state found in the state folder (it is moved aside, not deleted).
    #[arg(long)]
    pub ignore_state: bool,
    /// Start from this savepoint (a checkpoint folder, e.g. from `velo-sql jobs savepoint`).
    #[arg(long, conflicts_with = "ignore_state")]
    pub from_savepoint: Option<PathBuf>,
    /// Keep no state across runs: no checkpoints; offsets committed per micro-batch.
    #[arg(long, conflicts_with_all = ["ignore_state", "from_savepoint"])]
    pub no_state: bool,
    /// at-least-once (default) or exactly-once (Kafka output: results written once per
    /// checkpoint, never twice, whatever happens to the job).
    #[arg(long, default_value = "at-least-once")]
    pub delivery: Delivery,
    /// How long the consumer group waits for a silent member (a killed job) before giving its
    /// partitions to another, e.g. 10s (Kafka's default 45s).
    #[arg(long)]
    pub session_timeout: Option<String>,
    /// Static group membership: a job restarted with the same id gets its partitions back at
    /// once instead of after the session timeout. One id per running instance.
    #[arg(long)]
    pub group_instance_id: Option<String>,
}

/// `velo-sql demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The query to run over the `trades` stream.
    #[arg(long, short = 'q', default_value = DEMO_QUERY)]
    pub query: String,
    /// Trades per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Stop after this many result rows.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Output format.
    #[arg(long, default_value = "table")]
    pub format: OutputFormat,
}

/// The demo's default query: per-symbol OHLC-style figures over 2-second tumbling windows.
pub const DEMO_QUERY: &str =
    "SELECT window_start, symbol, COUNT(*) AS trades, SUM(quantity) AS volume, \
MIN(price) AS low, MAX(price) AS high, SUM(price * quantity) / SUM(quantity) AS vwap \
FROM trades WINDOW TUMBLING(ts, 2s) GROUP BY symbol";

/// Runs the command line; returns the process exit code.
pub async fn main_with(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Execute(args) => execute(args).await,
        Command::Stream(args) => stream(args).await,
        Command::Export(args) => export(args).await,
        Command::Demo(args) => demo(args).await,
        Command::Server(args) => return code_of(server(args).await),
        Command::DeployApp(args) => return code_of(deploy_app(args).await),
        Command::Jobs(args) => return code_of(jobs(args).await),
        Command::ExportState(args) => return code_of(export_state(args)),
        Command::ImportState(args) => return code_of(import_state(args)),
        Command::Bench(BenchCommand::Nexmark(args)) => {
            return code_of(crate::bench::nexmark::run(args).await)
        }
    };
    match result {
        Ok(stats) => {
            tracing::info!(
                records_in = stats.records_in,
                bad_records = stats.bad_records,
                decode_errors = stats.errors.decode,
                event_time_errors = stats.errors.event_time,
                expression_errors = stats.errors.expression,
                encode_errors = stats.errors.encode,
                rows_out = stats.rows_out,
                late_rows = stats.operators.late_rows,
                null_time_rows = stats.operators.null_time_rows,
                state_rows = stats.operators.state_rows,
                state_bytes = stats.operators.state_bytes,
                "done"
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn code_of(result: Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

async fn server(args: ServerArgs) -> Result<()> {
    let overrides = crate::server::config::Overrides {
        port: args.port,
        bind: args.bind,
        ..Default::default()
    };
    let config = crate::server::config::Config::load(args.config.as_deref(), &overrides)?;
    crate::server::serve(config).await
}

/// Deploys the application `text` (read from `file`) to the server behind `client`, with the
/// prefixes, default topic, restart policy and job limit of `args`; prints the job ids.
pub(crate) fn deploy_to_server(
    client: &crate::server::client::Client,
    text: &str,
    file: &str,
    args: &DeployAppArgs,
) -> Result<()> {
    let answer = client.post(
        "/jobs",
        &serde_json::json!({
            "sql": text,
            "file": file,
            "job_prefix": args.job_prefix,
            "group_prefix": args.group_prefix,
            "default_topic": args.default_topic,
            "restart_policy": args.restart_policy,
            "max_jobs": args.max_jobs,
        }),
    )?;
    for id in answer["jobs"].as_array().into_iter().flatten() {
        println!("{}", id.as_str().unwrap_or_default());
    }
    Ok(())
}

pub(crate) async fn deploy_app(args: DeployAppArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| VeloError::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let file = args.file.display().to_string();
    if let Some(server) = &args.server {
        let client =
            crate::server::client::Client::new(server, std::env::var("VELO_API_TOKEN").ok());
        return deploy_to_server(&client, &text, &file, &args);
    }
    // In this process: the same job manager as the server's, without HTTP.
    let overrides = crate::server::config::Overrides {
        brokers: args.brokers.clone(),
        ..Default::default()
    };
    let mut config = crate::server::config::Config::load(args.config.as_deref(), &overrides)?;
    config.warn_about_keys_without_effect();
    config.apply_registry_access()?;
    config.kafka.group_prefix = args.group_prefix.clone();
    if let Some(max) = args.max_jobs {
        config.sql.max_jobs = max;
    }
    let manager = crate::server::jobs::JobManager::in_process(
        Arc::new(config),
        crate::job::StateSpec::default_root(),
    );
    let app = crate::server::app::parse_application(&text).map_err(|e| match e {
        VeloError::Sql { message, location } => {
            VeloError::sql(format!("{file}: {message}"), location)
        }
        other => other,
    })?;
    let options = crate::server::jobs::DeployOptions {
        job_prefix: args.job_prefix,
        group_prefix: args.group_prefix,
        default_topic: args.default_topic,
        restart_policy: args.restart_policy,
        max_jobs: args.max_jobs,
        continuous: args.continuous,
        reconcile: false,
        trusted: true,
    };
    let ids = manager.deploy(&app, &options)?;
    tracing::info!("running {} job(s): {}", ids.len(), ids.join(", "));
    let waiting = manager.clone();
    tokio::select! {
        _ = waiting.wait_all() => {}
        _ = crate::server::shutdown_signal() => manager.stop_all().await,
    }
    let mut failed = false;
    for job in manager.list() {
        let status = job.status();
        println!("{}", serde_json::to_string(&status).unwrap_or_default());
        failed |= status.status == crate::server::jobs::JobState::Failed;
    }
    if failed {
        return Err(VeloError::Execution(
            "a job failed; see its last_error".into(),
        ));
    }
    Ok(())
}

async fn jobs(args: JobsArgs) -> Result<()> {
    use crate::server::client::{jobs_table, Client};
    let client = Client::new(&args.server, std::env::var("VELO_API_TOKEN").ok());
    let print = |v: &serde_json::Value| {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    };
    let mut stdout = std::io::stdout();
    match args.command {
        JobsCommand::List { status, format } => {
            let path = match &status {
                Some(s) => format!("/jobs?status={s}"),
                None => "/jobs".into(),
            };
            let answer = client.get(&path)?;
            let jobs = answer["jobs"].as_array().cloned().unwrap_or_default();
            if format == "json" {
                print(&serde_json::Value::Array(jobs));
            } else {
                print!("{}", jobs_table(&jobs));
            }
        }
        JobsCommand::Status { id } => print(&client.get(&format!("/jobs/{id}"))?),
        JobsCommand::Stop { id } => {
            print(&client.post(&format!("/jobs/{id}/stop"), &serde_json::Value::Null)?)
        }
        JobsCommand::Pause { id } => {
            print(&client.post(&format!("/jobs/{id}/pause"), &serde_json::Value::Null)?)
        }
        JobsCommand::Resume { id } => {
            print(&client.post(&format!("/jobs/{id}/resume"), &serde_json::Value::Null)?)
        }
        JobsCommand::Restart { id } => {
            print(&client.post(&format!("/jobs/{id}/restart"), &serde_json::Value::Null)?)
        }
        JobsCommand::Delete { id } => {
            client.delete(&format!("/jobs/{id}"))?;
        }
        JobsCommand::Savepoint { id } => {
            print(&client.post(&format!("/jobs/{id}/savepoint"), &serde_json::Value::Null)?)
        }
        JobsCommand::Output { id, follow, limit } => client.stream_lines(
            &format!("/jobs/{id}/output?limit={limit}&follow={follow}"),
            &mut stdout,
        )?,
        JobsCommand::Logs { id, tail, follow } => client.stream_lines(
            &format!("/jobs/{id}/logs?tail={tail}&follow={follow}"),
            &mut stdout,
        )?,
    }
    Ok(())
}

fn export_state(args: ExportStateArgs) -> Result<()> {
    let client =
        crate::server::client::Client::new(&args.server, std::env::var("VELO_API_TOKEN").ok());
    export_state_to(&client, args.job.as_deref(), &args.output)
}

/// Saves the server's jobs (or one) with their checkpoints to `output`.
pub(crate) fn export_state_to(
    client: &crate::server::client::Client,
    job: Option<&str>,
    output: &std::path::Path,
) -> Result<()> {
    let path = match job {
        Some(job) => format!("/state?job={job}"),
        None => "/state".to_string(),
    };
    let mut file = std::fs::File::create(output)
        .map_err(|e| VeloError::Usage(format!("cannot write {}: {e}", output.display())))?;
    let bytes = client.download(&path, &mut file)?;
    file.sync_all()?;
    eprintln!("wrote {} ({bytes} bytes)", output.display());
    Ok(())
}

fn import_state(args: ImportStateArgs) -> Result<()> {
    let client =
        crate::server::client::Client::new(&args.server, std::env::var("VELO_API_TOKEN").ok());
    import_state_from(&client, &args.input, args.replace)
}

/// Loads jobs saved by [`export_state_to`] into the server; prints their ids.
pub(crate) fn import_state_from(
    client: &crate::server::client::Client,
    input: &std::path::Path,
    replace: bool,
) -> Result<()> {
    let body = std::fs::read(input)
        .map_err(|e| VeloError::Usage(format!("cannot read {}: {e}", input.display())))?;
    let answer = client.post_raw(&format!("/state?replace={replace}"), body)?;
    for id in answer["jobs"].as_array().into_iter().flatten() {
        println!("{}", id.as_str().unwrap_or_default());
    }
    Ok(())
}

/// A duration flag's value in milliseconds; errors name the flag.
/// `--kafka-property key=value`.
fn parse_property(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("'{text}' is not key=value")),
    }
}

/// `--timeout`: a number of seconds, or a duration.
pub(crate) fn parse_timeout(text: &str) -> std::result::Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => crate::sql::window::parse_duration(text)
            .and_then(|ms| u64::try_from(ms).map_err(|_| format!("'{text}' is negative")))
            .map(Duration::from_millis),
    }
}

/// A duration flag: with a unit (`30s`, `500ms`, `2m`, `INTERVAL '5' SECOND`) or bare seconds
/// (`30`).
fn duration_ms(flag: &str, text: &str) -> Result<i64> {
    if let Ok(seconds) = text.trim().parse::<i64>() {
        return seconds
            .checked_mul(1000)
            .filter(|ms| *ms >= 0)
            .ok_or_else(|| VeloError::Usage(format!("--{flag}: '{text}' is out of range")));
    }
    crate::sql::window::parse_duration(text)
        .map_err(|why| VeloError::Usage(format!("--{flag}: {why}")))
}

impl QueryArgs {
    /// Arguments running `sql` with every other setting at its command-line default.
    pub fn for_sql(sql: impl Into<String>) -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: QueryArgs,
        }
        let mut args = Only::try_parse_from(["velo-sql"])
            .expect("the defaults of the query arguments parse")
            .args;
        args.query = Some(sql.into());
        args
    }

    /// The output format: `--format`, else what `--output-file`'s extension says, else JSON.
    pub fn output_format(&self) -> OutputFormat {
        self.format
            .or_else(|| self.output_file.as_deref().and_then(OutputFormat::for_file))
            .unwrap_or(match self.output_dir {
                Some(_) => OutputFormat::Parquet,
                None => OutputFormat::Json,
            })
    }

    /// The job these arguments describe, reading as `read` says.
    pub fn to_spec(&self, read: ReadSpec, flush_interval: Duration) -> Result<JobSpec> {
        let both_sides = !read.is_bounded();
        let mut spec = JobSpec::new(String::new(), read_query_text(self)?);
        // Security and tuning from the KAFKA_* variables; --kafka-property wins over them.
        let mut kafka = crate::server::config::KafkaConfig::default();
        kafka.apply_env(&|name: &str| std::env::var(name).ok())?;
        let mut config = crate::server::config::Config {
            kafka,
            ..Default::default()
        };
        config.kafka.brokers = self.brokers.clone();
        config.kafka_spec(&mut spec.kafka)?;
        spec.kafka.properties.clone_from(&self.kafka_properties);
        spec.kafka.timeout = self.timeout.max(Duration::from_millis(1));
        let columns = match (&self.schema, &self.schema_file) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
                VeloError::Usage(format!("cannot read schema file {}: {e}", path.display()))
            })?),
            (None, None) => None,
        };
        // `stream --format avro` without --input-format means both sides are Avro.
        let input_format = match &self.input_format {
            Some(f) => Some(f.to_ascii_lowercase()),
            None if both_sides && self.output_format() == OutputFormat::Avro => Some("avro".into()),
            None if both_sides && self.output_format() == OutputFormat::Protobuf => {
                Some("protobuf".into())
            }
            None => None,
        };
        spec.input = InputSpec {
            topic: self.topic.clone(),
            generator: self.source.clone(),
            columns,
            format: input_format,
            avro_schema: self.avro_schema.clone(),
            proto_file: self.proto_file.clone(),
            proto_message: self.proto_message.clone(),
            schema_registry: self.schema_registry.clone(),
            event_time_column: self.event_time_column.clone(),
            watermark_delay_ms: self
                .watermark_delay
                .as_deref()
                .map(|d| duration_ms("watermark-delay", d))
                .transpose()?,
            partition: None,
        };
        spec.read = read;
        spec.output = OutputSpec {
            target: match self.output {
                _ if self.output_dir.is_some() => {
                    if !matches!(self.output, OutputKind::Stdout | OutputKind::File) {
                        return Err(VeloError::Usage(
                            "--output-dir writes files: it goes with --output file".into(),
                        ));
                    }
                    OutputTarget::Directory(self.output_dir.clone().expect("checked"))
                }
                // `--output-file PATH` or `--output-topic T` alone says where results go.
                OutputKind::Stdout => {
                    match (&self.output_file, &self.output_topic) {
                        (Some(_), Some(_)) => return Err(VeloError::Usage(
                            "--output-file and --output-topic: choose one (or --output file|kafka)"
                                .into(),
                        )),
                        (Some(path), None) => OutputTarget::File(path.clone()),
                        (None, Some(topic)) => OutputTarget::Kafka(topic.clone()),
                        (None, None) => OutputTarget::Stdout,
                    }
                }
                OutputKind::File => {
                    OutputTarget::File(self.output_file.clone().ok_or_else(|| {
                        VeloError::Usage("--output file needs --output-file PATH".into())
                    })?)
                }
                OutputKind::Kafka => {
                    OutputTarget::Kafka(self.output_topic.clone().ok_or_else(|| {
                        VeloError::Usage("--output kafka needs --output-topic TOPIC".into())
                    })?)
                }
            },
            format: self.output_format(),
            decimal_format: self.decimal_format,
            key: self.output_key.clone(),
            avro_schema: self.output_avro_schema.clone().or(self.avro_schema.clone()),
            proto_file: self.output_proto_file.clone().or(self.proto_file.clone()),
            proto_message: self
                .output_proto_message
                .clone()
                .or(self.proto_message.clone()),
            parquet: velo_connectors::parquet_file::ParquetOptions {
                compression: self.compression,
                row_group_rows: self.row_group_rows,
            },
            roll: velo_connectors::part_files::RollPolicy {
                rows: self.roll_rows,
                bytes: self
                    .roll_bytes
                    .as_deref()
                    .map(|text| {
                        text.parse::<bytesize::ByteSize>()
                            .map(|size| size.as_u64())
                            .map_err(|why| {
                                VeloError::Usage(format!("--roll-bytes '{text}': {why}"))
                            })
                    })
                    .transpose()?,
                interval: self
                    .roll_interval
                    .as_deref()
                    .map(|t| {
                        duration_ms("roll-interval", t).map(|ms| Duration::from_millis(ms as u64))
                    })
                    .transpose()?,
            },
            partition_by: self.partition_by.clone(),
        };
        spec.limit = self.limit;
        spec.window_size_s = self.window_size;
        spec.state_ttl_ms = self
            .state_ttl
            .as_deref()
            .map(|t| duration_ms("state-ttl", t))
            .transpose()?;
        spec.idle_timeout_ms = duration_ms("idle-timeout", &self.idle_timeout)?;
        spec.dlq_topic = self.dlq_topic.clone();
        spec.dlq_on_error = self.dlq_on_error;
        spec.decimal_rounding = self.decimal_rounding;
        spec.on_error = self.on_error;
        spec.late_topic = self.late_topic.clone();
        spec.runtime = self.runtime_options(flush_interval)?;
        Ok(spec)
    }

    /// How the job's loop runs, flushing at least every `flush_interval`.
    pub fn runtime_options(&self, flush_interval: Duration) -> Result<RuntimeOptions> {
        let max_state_bytes = self
            .max_state_memory
            .as_deref()
            .map(|text| {
                text.parse::<bytesize::ByteSize>()
                    .map(|size| size.as_u64())
                    .map_err(|why| VeloError::Usage(format!("--max-state-memory '{text}': {why}")))
            })
            .transpose()?;
        let skew = duration_ms("max-event-time-skew", &self.max_event_time_skew)?;
        Ok(RuntimeOptions {
            batch_size: self.batch_size,
            flush_interval,
            eager_batches: false,
            parallelism: self
                .parallelism
                .map_or_else(crate::job::lanes::default_parallelism, usize::from),
            max_state_bytes,
            max_event_time_skew: (skew > 0).then(|| Duration::from_millis(skew as u64)),
        })
    }
}

async fn execute(args: ExecuteArgs) -> Result<JobStats> {
    crate::job::run(execute_spec(&args)?, JobHooks::default()).await
}

/// The job `velo-sql execute` runs for `args`.
pub(crate) fn execute_spec(args: &ExecuteArgs) -> Result<JobSpec> {
    let read = ReadSpec::Bounded {
        start: args.offset,
        partition: args.partition,
        group_id: args.query.group_id.clone(),
    };
    args.query.to_spec(read, Duration::from_millis(500))
}

async fn stream(args: StreamArgs) -> Result<JobStats> {
    crate::job::run(stream_spec(&args)?, JobHooks::default()).await
}

/// The job `velo-sql stream` runs.
pub fn stream_spec(args: &StreamArgs) -> Result<crate::job::spec::JobSpec> {
    let read = ReadSpec::Continuous {
        group_id: args.query.group_id.clone(),
        reset: args.auto_offset_reset,
    };
    let mut spec = args
        .query
        .to_spec(read, Duration::from_millis(args.flush_interval_ms.max(1)))?;
    spec.name = args.job_name.clone().unwrap_or_default();
    spec.runtime.eager_batches = args.eager_batches;
    spec.input.partition = args.partition;
    spec.delivery = args.delivery;
    spec.kafka.session_timeout = args
        .session_timeout
        .as_deref()
        .map(|t| duration_ms("session-timeout", t).map(|ms| Duration::from_millis(ms as u64)))
        .transpose()?;
    spec.kafka.instance_id = args.group_instance_id.clone();
    if !args.no_state {
        let interval = duration_ms("checkpoint-interval", &args.checkpoint_interval)?;
        let mut state = StateSpec::new(
            args.state_dir
                .clone()
                .unwrap_or_else(StateSpec::default_root),
            Duration::from_millis(interval.max(1) as u64),
        );
        state.ignore_state = args.ignore_state;
        state.savepoint = args.from_savepoint.clone();
        spec.state = Some(state);
    }
    Ok(spec)
}

async fn export(mut args: ExportArgs) -> Result<JobStats> {
    let query = &mut args.read.query;
    if query.query.is_none() && query.file.is_none() {
        let Some(topic) = query.topic.clone() else {
            return Err(VeloError::Usage(
                "export needs --topic T (all of it) or --query SQL".into(),
            ));
        };
        query.query = Some(format!("SELECT * FROM \"{}\"", topic.replace('"', "\"\"")));
    }
    if query.output_file.is_none() {
        return Err(VeloError::Usage(
            "export needs --output-file PATH (e.g. snapshot.parquet)".into(),
        ));
    }
    query.output = OutputKind::File;
    if query.format.is_none()
        && query
            .output_file
            .as_deref()
            .and_then(OutputFormat::for_file)
            .is_none()
    {
        query.format = Some(OutputFormat::Parquet);
    }
    let read = ReadSpec::Bounded {
        start: args.read.offset,
        partition: args.read.partition,
        group_id: args.read.query.group_id.clone(),
    };
    let spec = args.read.query.to_spec(read, Duration::from_millis(500))?;
    let progress = Arc::new(JobProgress::new("export"));
    let bar = (!args.quiet && std::io::stderr().is_terminal())
        .then(|| crate::job::progress::ProgressBar::start(progress.clone()));
    let hooks = JobHooks {
        progress: Some(progress),
        ..JobHooks::default()
    };
    let result = crate::job::run(spec, hooks).await;
    if let Some(bar) = bar {
        bar.finish();
    }
    result
}

async fn demo(args: DemoArgs) -> Result<JobStats> {
    let mut query = QueryArgs::for_sql(args.query);
    query.source = Some(format!("generator:trades?rate={}", args.rate.max(1)));
    query.brokers = String::new();
    query.format = Some(args.format);
    query.limit = args.limit;
    let read = ReadSpec::Continuous {
        group_id: None,
        reset: StartOffset::Earliest,
    };
    let mut spec = query.to_spec(read, Duration::from_secs(1))?;
    spec.name = "demo".into();
    crate::job::run(spec, JobHooks::default()).await
}

fn read_query_text(args: &QueryArgs) -> Result<String> {
    match (&args.query, &args.file) {
        (Some(q), _) => Ok(q.clone()),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| VeloError::Usage(format!("cannot read SQL file {}: {e}", path.display()))),
        (None, None) => Err(VeloError::Usage(
            "give the SQL with --query or --file".into(),
        )),
    }
}

fn parse_rounding(text: &str) -> Result<velo_connectors::codec::decimal::DecimalRounding, String> {
    text.parse()
}

fn parse_on_error(text: &str) -> Result<crate::job::OnError, String> {
    text.parse()
}
