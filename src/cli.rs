//! The `velo-sql` command line: `execute` (a bounded query), `stream` (a continuous query) and
//! `demo` (a continuous query over the built-in trades generator, no services needed).
//!
//! This module turns arguments into a catalog, a plan, a source and a sink, then hands them
//! to the [`crate::runtime`]. Exit codes: 0 success, 2 a mistake in the query or arguments
//! (syntax, unknown table or column, bad option), 1 anything else (broker down, I/O).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Schema, SchemaRef};
use clap::{Args, Parser, Subcommand, ValueEnum};
use datafusion::sql::sqlparser::ast::Statement;
use velo_connectors::codec::json::infer_schema;
use velo_connectors::codec::{DecimalFormat, PayloadFormat};
use velo_connectors::format::OutputFormat;
use velo_connectors::generator::{GeneratorSource, GeneratorSpec};
use velo_connectors::kafka::{
    DeadLetterQueue, KafkaConnection, KafkaSource, ReadMode, StartOffset,
};
use velo_connectors::record::Payload;
use velo_connectors::sink::{KafkaSink, MessageFormat, Sink, TextSink};
use velo_connectors::source::Source;

use crate::catalog::{Catalog, StreamDef, StreamSource};
use crate::error::{Result, VeloError};
use crate::planner::{plan_query, referenced_tables, PlannedQuery, QueryRequest};
use crate::runtime::{InputAdapter, Job, JobInput, JobProgress, JobStats, RuntimeOptions};
use crate::sql::window::{WindowClause, WindowKind};
use crate::sql::{parse_column_list, parse_script};
use crate::watermark::WatermarkTracker;

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
    /// Run a live query over the built-in trades generator (no Kafka needed).
    Demo(DemoArgs),
    /// Start the HTTP server (SQL API, streams catalog, jobs, metrics).
    Server(ServerArgs),
    /// Deploy an SQL application file: to a server (--server), or run its jobs here.
    DeployApp(DeployAppArgs),
    /// Manage the jobs of a server.
    Jobs(JobsArgs),
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
    /// Kafka bootstrap servers (in-process runs).
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
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
    /// Read the query's only input from a built-in generator instead of Kafka, e.g.
    /// `generator:trades?count=1000` or `generator:nexmark`.
    #[arg(long, conflicts_with = "topic")]
    pub source: Option<String>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Payload columns of the only input as a SQL column list, e.g.
    /// 'symbol VARCHAR, price DECIMAL(18,4)'. Without it the schema is inferred.
    #[arg(long)]
    pub schema: Option<String>,
    /// A file holding the column list of --schema.
    #[arg(long, conflicts_with = "schema")]
    pub schema_file: Option<PathBuf>,
    /// Output format: json, json-pretty, json-lines, csv, table.
    #[arg(long, default_value = "json")]
    pub format: OutputFormat,
    /// How decimals are written in JSON: string (exact text, default) or number.
    #[arg(long, default_value = "string")]
    pub decimal_format: DecimalFormat,
    /// Stop after this many result rows.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Where results go.
    #[arg(long, value_enum, default_value = "stdout")]
    pub output: OutputKind,
    /// File for --output file.
    #[arg(long)]
    pub output_file: Option<PathBuf>,
    /// Topic for --output kafka (one message per result row).
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
    /// Seconds allowed for broker requests before giving up.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Most records per micro-batch.
    #[arg(long, default_value_t = 8192)]
    pub batch_size: usize,
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
    /// Fail the job when operator state (open windows, sessions, OVER history, join tables)
    /// holds more than this, e.g. 512MiB or 2GB (checked about once a second).
    #[arg(long)]
    pub max_state_memory: Option<String>,
    /// Lets a join of two streams with no window and no time bound run as an updating INNER
    /// join that keeps each row this long (processing time), e.g. 1h or 10m.
    #[arg(long)]
    pub state_ttl: Option<String>,
    /// Shorthand for a tumbling window of this many seconds (`WINDOW TUMBLING(Ns)`).
    #[arg(long)]
    pub window_size: Option<u64>,
    /// Write records that arrive after their window closed to this topic (as JSON rows of the
    /// window's input), instead of only dropping and counting them.
    #[arg(long)]
    pub late_topic: Option<String>,
    /// Encoding of the only input: json (default) or avro. On `stream`, `--format avro` without
    /// `--input-format` means both sides are Avro.
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

/// `velo-sql stream`.
#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    pub query: QueryArgs,
    /// Where a consumer group without committed offsets starts: earliest or latest.
    #[arg(long, default_value = "earliest")]
    pub auto_offset_reset: StartOffset,
    /// Keep running until stopped (the default; accepted for compatibility).
    #[arg(long)]
    pub continuous: bool,
    /// Longest wait, in ms, before a micro-batch runs with the records it has.
    #[arg(long, default_value_t = 200)]
    pub flush_interval_ms: u64,
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
        Command::Demo(args) => demo(args).await,
        Command::Server(args) => return code_of(server(args).await),
        Command::DeployApp(args) => return code_of(deploy_app(args).await),
        Command::Jobs(args) => return code_of(jobs(args).await),
    };
    match result {
        Ok(stats) => {
            tracing::info!(
                records_in = stats.records_in,
                bad_records = stats.bad_records,
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

async fn deploy_app(args: DeployAppArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| VeloError::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let file = args.file.display().to_string();
    if let Some(server) = &args.server {
        let client =
            crate::server::client::Client::new(server, std::env::var("VELO_API_TOKEN").ok());
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
        return Ok(());
    }
    // In this process: the same job manager as the server's, without HTTP.
    let mut config = crate::server::config::Config::default();
    config.kafka.brokers = args.brokers.clone();
    config.kafka.group_prefix = args.group_prefix.clone();
    if let Some(max) = args.max_jobs {
        config.sql.max_jobs = max;
    }
    let manager = crate::server::jobs::JobManager::new(Arc::new(config));
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

/// How the inputs are read.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Execute {
        start: StartOffset,
        partition: Option<i32>,
    },
    Stream {
        reset: StartOffset,
    },
}

fn connection(args: &QueryArgs) -> KafkaConnection {
    KafkaConnection::new(
        args.brokers.clone(),
        Duration::from_secs(args.timeout.max(1)),
    )
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
        Ok(RuntimeOptions {
            batch_size: self.batch_size,
            flush_interval,
            max_state_bytes,
        })
    }
}

async fn execute(args: ExecuteArgs) -> Result<JobStats> {
    let mode = Mode::Execute {
        start: args.offset,
        partition: args.partition,
    };
    let options = args.query.runtime_options(Duration::from_millis(500))?;
    run(args.query, mode, options, true).await
}

async fn stream(args: StreamArgs) -> Result<JobStats> {
    let mode = Mode::Stream {
        reset: args.auto_offset_reset,
    };
    let options = args
        .query
        .runtime_options(Duration::from_millis(args.flush_interval_ms.max(1)))?;
    run(args.query, mode, options, false).await
}

async fn demo(args: DemoArgs) -> Result<JobStats> {
    let mut query = QueryArgs::for_sql(args.query);
    query.source = Some(format!("generator:trades?rate={}", args.rate.max(1)));
    query.brokers = String::new();
    query.format = args.format;
    query.limit = args.limit;
    let options = query.runtime_options(Duration::from_secs(1))?;
    run(
        query,
        Mode::Stream {
            reset: StartOffset::Earliest,
        },
        options,
        false,
    )
    .await
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

fn cli_schema(args: &QueryArgs) -> Result<Option<SchemaRef>> {
    let text = match (&args.schema, &args.schema_file) {
        (Some(s), _) => s.clone(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            VeloError::Usage(format!("cannot read schema file {}: {e}", path.display()))
        })?,
        (None, None) => return Ok(None),
    };
    let fields = parse_column_list(&text).map_err(|e| match e {
        VeloError::Sql { message, location } => VeloError::Usage(format!(
            "--schema{}: {message}",
            location.map(|l| format!(" at {l}")).unwrap_or_default()
        )),
        other => other,
    })?;
    Ok(Some(Arc::new(Schema::new(fields))))
}

/// Builds the catalog for `statement`: declared streams plus implicit topic streams, each with
/// a schema. Returns `None` when the only input is an empty topic with no schema to infer.
async fn resolve_inputs(
    args: &QueryArgs,
    ctx: &datafusion::prelude::SessionContext,
    declared: Vec<StreamDef>,
    statement: &Statement,
    both_sides: bool,
) -> Result<Option<Catalog>> {
    let mut catalog = Catalog::default();
    for stream in declared {
        catalog.insert(stream);
    }
    let names = referenced_tables(ctx, statement)?;
    // The query's stream inputs: every name but the declared tables.
    let stream_names: Vec<&String> = names
        .iter()
        .filter(|n| !catalog.get(n.as_str()).is_some_and(|s| s.is_table))
        .collect();
    if stream_names.len() > 1
        && (args.topic.is_some()
            || args.source.is_some()
            || args.schema.is_some()
            || args.schema_file.is_some())
    {
        return Err(VeloError::Usage(
            "--topic, --source and --schema describe a query's only input, but this query reads several; declare each with CREATE STREAM".into(),
        ));
    }
    let connection = connection(args);
    let mut topics: Option<Vec<String>> = None;
    for name in &names {
        if catalog.get(name).is_none() {
            let stream = match (&args.source, &args.topic) {
                (Some(source), _) => StreamDef {
                    source: StreamSource::Generator(GeneratorSpec::parse(source)?),
                    ..StreamDef::implicit_topic(name, name)
                },
                (None, Some(topic)) => StreamDef::implicit_topic(name, topic),
                (None, None) => StreamDef::implicit_topic(name, name),
            };
            catalog.insert(stream);
        }
        let stream = catalog.get(name).expect("inserted above").clone();
        if let StreamSource::Topic(topic) = &stream.source {
            if topics.is_none() {
                topics = Some(connection.topics()?);
            }
            if !topics.as_ref().is_some_and(|t| t.contains(topic)) {
                return Err(VeloError::UnknownTable {
                    name: topic.clone(),
                    location: None,
                    declared: list_or_none(
                        &catalog
                            .names()
                            .into_iter()
                            .filter(|n| catalog.get(n).is_some_and(|s| s.declared_at.is_some()))
                            .collect::<Vec<_>>(),
                    ),
                    topics: list_or_none(topics.as_deref().unwrap_or_default()),
                });
            }
        }
        if stream_names.len() == 1 && stream_names[0] == name {
            let target = catalog.get_mut(name).expect("inserted above");
            match input_format(args, both_sides)?.as_str() {
                "json" => {}
                "avro" => {
                    let avro = match (&args.avro_schema, registry(args), &target.source) {
                        (Some(path), _, _) => velo_connectors::codec::avro::load_schema(path)?,
                        (None, Some(registry), StreamSource::Topic(topic)) => {
                            let (_, text) = registry.latest(&format!("{topic}-value"))?;
                            velo_connectors::codec::avro::parse_schema(&text).map_err(|why| {
                                VeloError::Usage(format!(
                                    "the registry's schema for '{topic}-value': {why}"
                                ))
                            })?
                        }
                        _ => return Err(VeloError::Usage(
                            "Avro input needs --avro-schema PATH.avsc (or --schema-registry URL)"
                                .into(),
                        )),
                    };
                    if args.schema.is_none() && args.schema_file.is_none() {
                        target.schema = Some(velo_connectors::codec::avro::arrow_schema(&avro)?);
                    }
                    target.format = PayloadFormat::Avro(Arc::new(avro));
                }
                "protobuf" | "proto" => {
                    let message =
                        proto_message(args.proto_file.as_ref(), args.proto_message.as_ref(), "")?;
                    if args.schema.is_none() && args.schema_file.is_none() {
                        target.schema =
                            Some(velo_connectors::codec::protobuf::arrow_schema(&message));
                    }
                    target.format = PayloadFormat::Protobuf(message);
                }
                other => {
                    return Err(VeloError::Usage(format!(
                        "unknown --input-format '{other}' (json, avro, protobuf)"
                    )))
                }
            }
            if target.registry.is_none() && target.format.name() != "json" {
                target.registry = registry(args);
            }
            if let Some(column) = &args.event_time_column {
                target.event_time = Some(column.clone());
            }
            if let Some(delay) = &args.watermark_delay {
                target.watermark_delay_ms = crate::sql::window::parse_duration(delay)
                    .map_err(|why| VeloError::Usage(format!("--watermark-delay: {why}")))?;
            }
        }
        let stream = catalog.get(name).expect("inserted above").clone();
        if stream.is_table {
            let loaded = crate::table::load(&stream, &connection)?;
            let target = catalog.get_mut(name).expect("inserted above");
            target.schema = Some(loaded.schema);
            target.rows = Some(Arc::new(loaded.rows));
            target.loaded_up_to = loaded.end_offsets;
            continue;
        }
        if stream.schema.is_none() {
            let schema = match (&stream.source, cli_schema(args)?) {
                (_, Some(schema)) => schema,
                (StreamSource::File { .. }, None) => {
                    return Err(VeloError::Usage(format!(
                        "'{name}' reads a file: declare it with CREATE TABLE"
                    )))
                }
                (StreamSource::Generator(spec), None) => spec.schema(),
                (StreamSource::Topic(topic), None) => match infer_topic_schema(&connection, topic)?
                {
                    Some(schema) => schema,
                    None => return Ok(None),
                },
            };
            catalog.get_mut(name).expect("inserted above").schema = Some(schema);
        }
    }
    Ok(Some(catalog))
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

/// The schema registry given with `--schema-registry`.
fn registry(args: &QueryArgs) -> Option<Arc<velo_connectors::registry::SchemaRegistry>> {
    args.schema_registry.as_ref().map(|url| {
        Arc::new(velo_connectors::registry::SchemaRegistry::new(
            url,
            Duration::from_secs(args.timeout.max(1)),
        ))
    })
}

/// The message type named by `--{prefix}proto-file` and `--{prefix}proto-message`.
fn proto_message(
    file: Option<&PathBuf>,
    message: Option<&String>,
    prefix: &str,
) -> Result<prost_reflect::MessageDescriptor> {
    let (Some(file), Some(message)) = (file, message) else {
        return Err(VeloError::Usage(format!(
            "Protobuf needs --{prefix}proto-file PATH.proto and --{prefix}proto-message package.Message"
        )));
    };
    Ok(velo_connectors::codec::protobuf::load_message(
        file, message,
    )?)
}

/// The input encoding: `--input-format`, else on `stream` the output's when it is binary
/// (`--format avro` means both sides), else json.
fn input_format(args: &QueryArgs, both_sides: bool) -> Result<String> {
    Ok(match &args.input_format {
        Some(f) => f.to_ascii_lowercase(),
        None if both_sides && args.format == OutputFormat::Avro => "avro".into(),
        None if both_sides && args.format == OutputFormat::Protobuf => "protobuf".into(),
        None => "json".into(),
    })
}

/// Samples up to 100 records of `topic` and infers a schema; `None` for an empty topic.
fn infer_topic_schema(connection: &KafkaConnection, topic: &str) -> Result<Option<SchemaRef>> {
    let mut source = KafkaSource::open(
        connection,
        topic,
        ReadMode::Snapshot {
            start: StartOffset::Earliest,
            partition: None,
            group_id: None,
        },
    )?;
    let Some(sample) = source.poll_batch(100, Duration::from_secs(5))? else {
        tracing::warn!("topic '{topic}' is empty and no schema was given: the result is empty");
        return Ok(None);
    };
    let Payload::Encoded(payloads) = &sample.payload else {
        return Ok(None);
    };
    let schema = infer_schema(payloads.iter().flatten())?;
    tracing::warn!(
        "no schema declared for topic '{topic}'; inferred from {} records: {}",
        sample.len(),
        schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Some(Arc::new(schema)))
}

/// Builds the sink of a query run by the server from its output schema and the sink its
/// arguments describe (`None` when they say stdout).
pub type SinkFactory =
    Box<dyn FnOnce(SchemaRef, Option<Box<dyn Sink>>) -> Result<Box<dyn Sink>> + Send>;

/// How a query is run from elsewhere than a terminal (the server): its stop switch, its live
/// counters, and where its results go. The default is the command line's: stop on
/// SIGINT/SIGTERM, results where the arguments say.
#[derive(Default)]
pub struct RunHooks {
    pub stop: Option<Arc<AtomicBool>>,
    pub progress: Option<Arc<JobProgress>>,
    pub sink: Option<SinkFactory>,
}

/// Runs a query described by command-line arguments: bounded (`execute`: each input up to its
/// end offsets now) or continuous (`stream`, from the consumer group's offsets, else earliest).
pub async fn run_query(
    args: QueryArgs,
    continuous: bool,
    options: RuntimeOptions,
    hooks: RunHooks,
) -> Result<JobStats> {
    let mode = if continuous {
        Mode::Stream {
            reset: StartOffset::Earliest,
        }
    } else {
        Mode::Execute {
            start: StartOffset::Earliest,
            partition: None,
        }
    };
    run_with(args, mode, options, !continuous, hooks).await
}

async fn run(
    args: QueryArgs,
    mode: Mode,
    options: RuntimeOptions,
    bounded: bool,
) -> Result<JobStats> {
    run_with(args, mode, options, bounded, RunHooks::default()).await
}

async fn run_with(
    args: QueryArgs,
    mode: Mode,
    options: RuntimeOptions,
    bounded: bool,
    hooks: RunHooks,
) -> Result<JobStats> {
    let text = read_query_text(&args)?;
    let script = parse_script(&text)?;
    let statement = script
        .query
        .clone()
        .ok_or_else(|| VeloError::sql("the text holds no SELECT query", None))?;
    let mut request = QueryRequest::from_script(&script);
    request.limit = args.limit;
    request.bounded = bounded;
    request.state_ttl_ms = args
        .state_ttl
        .as_deref()
        .map(|ttl| {
            crate::sql::window::parse_duration(ttl)
                .map_err(|why| VeloError::Usage(format!("--state-ttl: {why}")))
        })
        .transpose()?;
    if let (None, Some(seconds)) = (&request.window, args.window_size) {
        request.window = Some(WindowClause {
            kind: WindowKind::Tumbling {
                size: seconds as i64 * 1000,
            },
            time_column: None,
            location: None,
        });
    }
    let idle_timeout = crate::sql::window::parse_duration(&args.idle_timeout)
        .map_err(|why| VeloError::Usage(format!("--idle-timeout: {why}")))?;
    let declared = script
        .streams
        .iter()
        .map(StreamDef::from_decl)
        .collect::<Result<Vec<_>>>()?;
    let ctx = crate::planner::new_session_with_memory_limit(options.max_state_bytes)?;
    let both_sides = matches!(mode, Mode::Stream { .. });
    let Some(catalog) = resolve_inputs(&args, &ctx, declared, &statement, both_sides).await? else {
        // An empty topic and no schema: nothing to plan against, and nothing to show.
        let empty: SchemaRef = Arc::new(Schema::empty());
        let mut sink = match hooks.sink {
            Some(factory) => factory(empty, None)?,
            None => open_sink(&args, &empty, bounded)?,
        };
        sink.finish()?;
        return Ok(JobStats::default());
    };
    let PlannedQuery {
        scans,
        pipeline,
        output_schema,
        logical_plan,
        group_key_columns,
        table_feeds,
    } = plan_query(&ctx, &catalog, &request).await?;
    tracing::debug!("plan:\n{logical_plan}");
    let connection = connection(&args);
    let several = scans.len() > 1;
    let mut inputs = Vec::new();
    let mut delays = Vec::new();
    for scan in scans {
        let event_time = match &scan.event_time {
            Some(column) => Some(scan.schema.index_of(column).map_err(|_| {
                VeloError::Usage(format!(
                    "the event time of a window must be a column of the stream; '{column}' is not"
                ))
            })?),
            None => None,
        };
        delays.push(scan.stream.watermark_delay_ms);
        let source: Box<dyn Source> = match &scan.stream.source {
            StreamSource::File { path, .. } => {
                return Err(VeloError::Unsupported(format!(
                    "the query reads only the table '{}' ({}); a query needs a stream to run on",
                    scan.stream.name,
                    path.display()
                )))
            }
            StreamSource::Generator(spec) => Box::new(GeneratorSource::new(spec.clone())),
            StreamSource::Topic(topic) => {
                let read_mode = match mode {
                    Mode::Execute { start, partition } => ReadMode::Snapshot {
                        start,
                        partition,
                        group_id: args.group_id.clone(),
                    },
                    Mode::Stream { reset } => ReadMode::Group {
                        group_id: group_id(args.group_id.as_deref(), &scan.stream.name, several),
                        reset,
                    },
                };
                Box::new(KafkaSource::open(&connection, topic, read_mode)?)
            }
        };
        inputs.push(JobInput::new(source, InputAdapter::new(scan)?, event_time));
    }
    let watermark = inputs.iter().any(|i| i.event_time.is_some()).then(|| {
        WatermarkTracker::with_inputs(delays, Duration::from_millis(idle_timeout.max(1) as u64))
    });
    // The changes of an updating aggregate are keyed by its group key, unless told otherwise.
    let mut args = args;
    if args.output_key.is_none() && group_key_columns.len() == 1 {
        args.output_key = group_key_columns.first().cloned();
    }
    let sink = match hooks.sink {
        Some(factory) => {
            let described = match args.output {
                OutputKind::Stdout => None,
                _ => Some(open_sink(&args, &output_schema, bounded)?),
            };
            factory(output_schema.clone(), described)?
        }
        None => open_sink(&args, &output_schema, bounded)?,
    };
    let dead_letters = args
        .dlq_topic
        .as_ref()
        .map(|topic| DeadLetterQueue::new(&connection, topic.clone()))
        .transpose()?;
    let late_rows: Option<Box<dyn Sink>> = match &args.late_topic {
        Some(topic) => Some(Box::new(KafkaSink::new(
            &connection,
            topic.clone(),
            MessageFormat::Json,
            &Arc::new(Schema::empty()),
            None,
            args.decimal_format,
        )?)),
        None => None,
    };
    let stop = match hooks.stop {
        Some(stop) => stop,
        None => {
            let stop = Arc::new(AtomicBool::new(false));
            spawn_signal_handler(stop.clone());
            stop
        }
    };
    let mut table_followers = Vec::new();
    if !bounded {
        for feed in table_feeds {
            let def = catalog.get(&feed.table).expect("planned from the catalog");
            let StreamSource::Topic(topic) = &def.source else {
                continue;
            };
            table_followers.push(crate::runtime::TableFollower {
                table: feed.table.clone(),
                source: Box::new(KafkaSource::open(
                    &connection,
                    topic,
                    ReadMode::Follow {
                        from: def.loaded_up_to.clone(),
                    },
                )?),
                decoder: def
                    .format
                    .decoder(def.table_schema()?, def.registry.clone())?,
                feed: feed.feed,
            });
        }
    }
    let mut job = Job {
        inputs,
        pipeline,
        sink,
        dead_letters,
        options,
        stop,
        watermark,
        late_rows,
        table_followers,
        progress: hooks
            .progress
            .unwrap_or_else(|| Arc::new(JobProgress::new("cli"))),
    };
    // The job's thread logs inside the caller's span (a server job's `job` span).
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| job.run()))
        .await
        .map_err(|e| VeloError::Execution(format!("the job thread failed: {e}")))?
}

/// The consumer group of a `stream` input: `--group-id` (default `velo-sql-<stream>`); a query
/// reading several streams gives each its own group, `<group>.<stream>`, so each input's
/// offsets are committed on their own.
fn group_id(given: Option<&str>, stream: &str, several: bool) -> String {
    match (given, several) {
        (Some(group), false) => group.to_string(),
        (Some(group), true) => format!("{group}.{stream}"),
        (None, _) => format!("velo-sql-{stream}"),
    }
}

fn open_sink(args: &QueryArgs, schema: &SchemaRef, bounded: bool) -> Result<Box<dyn Sink>> {
    if matches!(args.format, OutputFormat::Avro | OutputFormat::Protobuf)
        && args.output != OutputKind::Kafka
    {
        return Err(VeloError::Usage(format!(
            "--format {} writes binary records: use it with --output kafka",
            args.format
        )));
    }
    Ok(match args.output {
        OutputKind::Stdout => Box::new(TextSink::stdout(
            args.format,
            bounded,
            schema.clone(),
            args.decimal_format,
        )),
        OutputKind::File => {
            let path = args
                .output_file
                .as_ref()
                .ok_or_else(|| VeloError::Usage("--output file needs --output-file PATH".into()))?;
            Box::new(TextSink::create(
                path,
                args.format,
                bounded,
                schema.clone(),
                args.decimal_format,
            )?)
        }
        OutputKind::Kafka => {
            let topic = args.output_topic.as_ref().ok_or_else(|| {
                VeloError::Usage("--output kafka needs --output-topic TOPIC".into())
            })?;
            let format = match args.format {
                OutputFormat::Avro => {
                    let avro = match args
                        .output_avro_schema
                        .as_ref()
                        .or(args.avro_schema.as_ref())
                    {
                        Some(path) => velo_connectors::codec::avro::load_schema(path)?,
                        None => velo_connectors::codec::avro::derive_schema(schema, "velo_result")?,
                    };
                    let encoder = velo_connectors::codec::avro::AvroEncoder::new(avro, schema)?;
                    MessageFormat::Avro(match registry(args) {
                        Some(r) => encoder.with_registry(&r, &format!("{topic}-value"))?,
                        None => encoder,
                    })
                }
                OutputFormat::Protobuf => {
                    let message = proto_message(
                        args.output_proto_file.as_ref().or(args.proto_file.as_ref()),
                        args.output_proto_message
                            .as_ref()
                            .or(args.proto_message.as_ref()),
                        "output-",
                    )?;
                    let encoder = velo_connectors::codec::protobuf::ProtobufEncoder::new(message);
                    MessageFormat::Protobuf(match registry(args) {
                        Some(r) => {
                            let file = args
                                .output_proto_file
                                .as_ref()
                                .or(args.proto_file.as_ref())
                                .expect("proto_message checked the file");
                            let text = std::fs::read_to_string(file).map_err(|e| {
                                VeloError::Usage(format!("cannot read {}: {e}", file.display()))
                            })?;
                            encoder.with_registry(&r, &format!("{topic}-value"), &text)?
                        }
                        None => encoder,
                    })
                }
                other => MessageFormat::for_output(other)?,
            };
            Box::new(KafkaSink::new(
                &connection(args),
                topic.clone(),
                format,
                schema,
                args.output_key.as_deref(),
                args.decimal_format,
            )?)
        }
    })
}

/// Sets `stop` on SIGINT or SIGTERM; the job then finishes its epoch, flushes, commits and
/// exits 0. A second signal exits at once.
fn spawn_signal_handler(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            for _ in 0..2 {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
                if stop.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
                tracing::info!("stopping: finishing the current micro-batch");
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::SeqCst);
            }
        }
    });
}
