//! `velo-sql-multi`: the deployment guide's multi-job command set. Every command but
//! `deploy-app` (without `--server`), `validate-schema` and `benchmark` talks to a server
//! (`--server`, or `VELO_HOST`, default `http://127.0.0.1:8080`) through its HTTP API; `velo-sql
//! jobs …` stays as it is.
//!
//! Choices where the guide is silent or vague (also in docs/multi.md):
//! - `deploy-app --continuous` without `--server` runs the jobs here *and* serves the HTTP API
//!   (`--port`, default 8080), so the other commands can manage them, as in the guide's
//!   containers; without `--continuous` the jobs read what their topics hold now and it exits.
//! - `execute` queries the virtual table `job_results(job_id, status, result, error,
//!   records_in, records_out)`: one row per recent output row of each job (`result` is the row
//!   as JSON text), or one row with a NULL `result` for a job without output; DataFusion runs
//!   the query here.
//! - `start-job` restarts a job that is not running; `stop-all-jobs` always stops gracefully
//!   (each job ends its micro-batch and checkpoints), so `--graceful` changes nothing.
//! - `--since` takes a timestamp (RFC 3339) or a duration back from now (`10m`); log lines carry
//!   their time, output rows do not, so `stream-all --since` keeps the jobs (re)started since.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::error::{Result, VeloError};
use crate::server::client::{jobs_table, Client};

/// The guide's multi-job CLI.
#[derive(Debug, Parser)]
#[command(
    name = "velo-sql-multi",
    version,
    about = "Deploy and manage many streaming SQL jobs (the deployment guide's multi-job commands)"
)]
pub struct MultiCli {
    /// The server (default: VELO_HOST, else http://127.0.0.1:8080).
    #[arg(long, env = "VELO_HOST", global = true)]
    pub server: Option<String>,
    #[command(subcommand)]
    pub command: MultiCommand,
}

/// How `stream-job` and `stream-all` print rows.
#[derive(Debug, Args)]
pub struct RowOutput {
    #[arg(long, default_value = "stdout", value_parser = ["stdout"])]
    pub output: String,
    #[arg(long, default_value = "json-lines", value_parser = ["json", "json-lines", "json-pretty"])]
    pub format: String,
    /// Wrap each row: {"job_id", "result"}.
    #[arg(long)]
    pub include_metadata: bool,
    /// Keep printing new rows until stopped.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct JobId {
    #[arg(long)]
    pub job_id: String,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum MultiCommand {
    /// Deploy an SQL application file: to the server (--server), or run its jobs here
    /// (with --continuous, here and behind an HTTP API on --port).
    DeployApp(DeployArgs),
    /// One job's result rows.
    StreamJob {
        #[arg(long)]
        job_id: String,
        #[command(flatten)]
        rows: RowOutput,
        /// Recent rows to print first.
        #[arg(long, default_value_t = 100)]
        tail: usize,
    },
    /// Every job's result rows.
    StreamAll {
        #[command(flatten)]
        rows: RowOutput,
        /// `job_name=PATTERN` (`*` and `?` wildcards).
        #[arg(long)]
        filter: Option<String>,
        /// Only jobs (re)started at or after this time (RFC 3339, or a duration back from now).
        #[arg(long)]
        since: Option<String>,
    },
    /// Run SQL over the jobs' status and recent results (table `job_results`).
    Execute {
        #[arg(long)]
        query: String,
        #[arg(long, default_value = "stdout", value_parser = ["stdout"])]
        output: String,
        #[arg(long, default_value = "json", value_parser = ["json", "json-pretty", "json-lines", "csv", "table"])]
        format: String,
        /// Seconds or a duration (`30s`).
        #[arg(long, default_value = "30s")]
        timeout: String,
        /// At most this many rows.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// List jobs.
    ListJobs {
        /// running, paused, stopped, failed, finished, … or all.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value = "table", value_parser = ["json", "table"])]
        format: String,
        #[arg(long, value_parser = ["name", "status", "created", "updated"])]
        sort_by: Option<String>,
    },
    /// Start a job that is not running (it resumes from its checkpoint).
    StartJob(JobId),
    /// Stop a job (it ends its micro-batch and checkpoints).
    StopJob(JobId),
    /// Pause a job (it stops reading; its state stays).
    PauseJob(JobId),
    /// Resume a paused job.
    ResumeJob(JobId),
    /// Stop and start a job (from its checkpoint).
    RestartJob(JobId),
    /// Delete a job (stopping it first).
    RemoveJob(JobId),
    /// A job's status.
    JobStatus {
        #[arg(long)]
        job_id: String,
        #[arg(long, default_value = "json", value_parser = ["json", "table"])]
        format: String,
    },
    /// A job's log lines.
    JobLogs {
        #[arg(long)]
        job_id: String,
        #[arg(long, default_value_t = 100)]
        tail: usize,
        #[arg(long)]
        follow: bool,
        /// Only lines at or after this time (RFC 3339, or a duration back from now).
        #[arg(long)]
        since: Option<String>,
        /// Only lines matching this regular expression.
        #[arg(long)]
        grep: Option<String>,
    },
    /// Stop every job (each ends its micro-batch and checkpoints).
    StopAllJobs {
        #[arg(long)]
        graceful: bool,
    },
    /// Start every job that is not running.
    StartAllJobs,
    /// Save every job (definition and last checkpoint) to a file.
    ExportState {
        #[arg(long)]
        output: PathBuf,
    },
    /// Load jobs saved by export-state; they start from their checkpoints.
    ImportState {
        #[arg(long)]
        input: PathBuf,
        /// Replace jobs of the same id.
        #[arg(long)]
        replace: bool,
    },
    /// Save one job's definition (its SQL and settings, no state) to a file.
    ExportJobConfig {
        #[arg(long)]
        job_id: String,
        #[arg(long)]
        output: PathBuf,
    },
    /// Deploy a job saved by export-job-config (it starts without state).
    ImportJobConfig {
        #[arg(long)]
        input: PathBuf,
    },
    /// Check a schema file (.avsc, .proto, or a SQL column list) and print its columns.
    ValidateSchema {
        #[arg(long)]
        file: PathBuf,
        /// Also refuse what a shared schema should not do: imports from outside its folder,
        /// files over 1 MiB, money in floating point (FLOAT/DOUBLE columns named like amounts).
        #[arg(long)]
        security_check: bool,
    },
    /// Measure the engine here, in this process: records/s and CPU seconds.
    Benchmark(crate::bench::BenchArgs),
}

/// `deploy-app`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    #[arg(long)]
    pub file: PathBuf,
    /// Kafka bootstrap servers (jobs run here).
    #[arg(long)]
    pub brokers: Option<String>,
    #[arg(long)]
    pub default_topic: Option<String>,
    /// Keep the jobs running (and serve the HTTP API on --port); without it each job reads
    /// what its topics hold now.
    #[arg(long)]
    pub continuous: bool,
    /// A server configuration file (Kafka security and tuning, profile, state folder).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value = "")]
    pub job_prefix: String,
    #[arg(long, default_value = "velo-")]
    pub group_prefix: String,
    #[arg(long)]
    pub max_jobs: Option<usize>,
    #[arg(long, value_enum, default_value = "on-failure")]
    pub restart_policy: crate::server::config::RestartPolicy,
    /// Replace jobs of the same id (to a server).
    #[arg(long)]
    pub replace: bool,
    /// The HTTP API's port when the jobs run here with --continuous (0: any free port).
    #[arg(long, env = "SERVER_PORT", default_value_t = 8080)]
    pub port: u16,
}

/// Runs a command; the process exit code.
pub async fn main_with(cli: MultiCli) -> i32 {
    match run(cli).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn client(server: &Option<String>) -> Client {
    Client::new(
        server.as_deref().unwrap_or("http://127.0.0.1:8080"),
        std::env::var("VELO_API_TOKEN").ok(),
    )
}

fn print_json(value: &Value, pretty: bool) {
    let text = match pretty {
        true => serde_json::to_string_pretty(value),
        false => serde_json::to_string(value),
    };
    println!("{}", text.unwrap_or_default());
}

async fn run(cli: MultiCli) -> Result<()> {
    let server = cli.server.clone();
    let c = client(&server);
    let post = |path: String| c.post(&path, &Value::Null);
    match cli.command {
        MultiCommand::DeployApp(args) => return deploy_app(server, args).await,
        MultiCommand::StreamJob { job_id, rows, tail } => {
            let follow = rows.follow;
            let shape = RowShape::new(&rows.format, rows.include_metadata);
            let mut rows = Vec::new();
            c.for_each_line(
                &format!("/jobs/{job_id}/output?limit={tail}&follow={follow}"),
                |line| shape.emit(&job_id, line, follow, &mut rows),
            )?;
            shape.finish(rows)?;
        }
        MultiCommand::StreamAll {
            rows,
            filter,
            since,
        } => stream_all(&c, &rows, filter, since)?,
        MultiCommand::Execute {
            query,
            format,
            timeout,
            limit,
            ..
        } => {
            let timeout = crate::cli::parse_timeout(&timeout).map_err(VeloError::Usage)?;
            job_results_query(&c, &query, &format, timeout, limit).await?
        }
        MultiCommand::ListJobs {
            status,
            format,
            sort_by,
        } => {
            let path = match &status {
                Some(s) => format!("/jobs?status={s}"),
                None => "/jobs".into(),
            };
            let mut jobs = c.get(&path)?["jobs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            sort_jobs(&mut jobs, sort_by.as_deref());
            match format.as_str() {
                "json" => print_json(&Value::Array(jobs), true),
                _ => print!("{}", jobs_table(&jobs)),
            }
        }
        MultiCommand::StartJob(j) => {
            let status = c.get(&format!("/jobs/{}", j.job_id))?;
            match status["status"].as_str() {
                Some("running") | Some("starting") => print_json(&status, true),
                _ => print_json(&post(format!("/jobs/{}/restart", j.job_id))?, true),
            }
        }
        MultiCommand::StopJob(j) => print_json(&post(format!("/jobs/{}/stop", j.job_id))?, true),
        MultiCommand::PauseJob(j) => print_json(&post(format!("/jobs/{}/pause", j.job_id))?, true),
        MultiCommand::ResumeJob(j) => {
            print_json(&post(format!("/jobs/{}/resume", j.job_id))?, true)
        }
        MultiCommand::RestartJob(j) => {
            print_json(&post(format!("/jobs/{}/restart", j.job_id))?, true)
        }
        MultiCommand::RemoveJob(j) => {
            c.delete(&format!("/jobs/{}", j.job_id))?;
            println!("removed {}", j.job_id);
        }
        MultiCommand::JobStatus { job_id, format } => {
            let status = c.get(&format!("/jobs/{job_id}"))?;
            match format.as_str() {
                "table" => print!("{}", jobs_table(std::slice::from_ref(&status))),
                _ => print_json(&status, true),
            }
        }
        MultiCommand::JobLogs {
            job_id,
            tail,
            follow,
            since,
            grep,
        } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let grep = grep
                .as_deref()
                .map(regex::Regex::new)
                .transpose()
                .map_err(|e| VeloError::Usage(format!("--grep: {e}")))?;
            let mut stdout = std::io::stdout();
            c.for_each_line(
                &format!("/jobs/{job_id}/logs?tail={tail}&follow={follow}"),
                |line| {
                    let recent =
                        since.is_none_or(|since| line_time(line).is_none_or(|t| t >= since));
                    if recent && grep.as_ref().is_none_or(|g| g.is_match(line)) {
                        writeln!(stdout, "{line}")?;
                        stdout.flush()?;
                    }
                    Ok(())
                },
            )?;
        }
        MultiCommand::StopAllJobs { .. } => {
            for job in c.get("/jobs")?["jobs"].as_array().into_iter().flatten() {
                let id = job["job_id"].as_str().unwrap_or_default();
                if matches!(
                    job["status"].as_str(),
                    Some("running" | "paused" | "starting" | "restarting")
                ) {
                    post(format!("/jobs/{id}/stop"))?;
                    println!("stopped {id}");
                }
            }
        }
        MultiCommand::StartAllJobs => {
            for job in c.get("/jobs")?["jobs"].as_array().into_iter().flatten() {
                let id = job["job_id"].as_str().unwrap_or_default();
                if !matches!(job["status"].as_str(), Some("running" | "starting")) {
                    post(format!("/jobs/{id}/restart"))?;
                    println!("started {id}");
                }
            }
        }
        MultiCommand::ExportState { output } => {
            crate::cli::export_state_to(&c, None, &output)?;
        }
        MultiCommand::ImportState { input, replace } => {
            crate::cli::import_state_from(&c, &input, replace)?;
        }
        MultiCommand::ExportJobConfig { job_id, output } => {
            // The job's entry of a state export, without its checkpoint: the definition only.
            let mut buffer = Vec::new();
            c.download(&format!("/state?job={job_id}"), &mut buffer)?;
            let mut document: Value = serde_json::from_slice(&buffer).map_err(|e| {
                VeloError::Execution(format!("the server's export is not JSON: {e}"))
            })?;
            for job in document["jobs"].as_array_mut().into_iter().flatten() {
                job["checkpoint"] = Value::Null;
            }
            let text = serde_json::to_string_pretty(&document).unwrap_or_default();
            std::fs::write(&output, text + "\n")
                .map_err(|e| VeloError::Usage(format!("cannot write {}: {e}", output.display())))?;
            eprintln!("wrote {}", output.display());
        }
        MultiCommand::ImportJobConfig { input } => {
            crate::cli::import_state_from(&c, &input, false)?;
        }
        MultiCommand::ValidateSchema {
            file,
            security_check,
        } => validate_schema(&file, security_check)?,
        MultiCommand::Benchmark(args) => crate::bench::run(args).await?,
    }
    Ok(())
}

async fn deploy_app(server: Option<String>, args: DeployArgs) -> Result<()> {
    let single = crate::cli::DeployAppArgs {
        file: args.file.clone(),
        server: server.clone(),
        brokers: args.brokers.clone(),
        config: args.config.clone(),
        default_topic: args.default_topic.clone(),
        job_prefix: args.job_prefix.clone(),
        group_prefix: args.group_prefix.clone(),
        max_jobs: args.max_jobs,
        restart_policy: args.restart_policy,
        continuous: false,
    };
    if server.is_some() {
        let text = std::fs::read_to_string(&args.file)
            .map_err(|e| VeloError::Usage(format!("cannot read {}: {e}", args.file.display())))?;
        let c = client(&server);
        if args.replace {
            // The jobs of the file go first, so the deployment takes their place.
            let app = crate::server::app::parse_application(&text)?;
            for job in &app.jobs {
                let id = format!("{}{}", args.job_prefix, job.name);
                let _ = c.delete(&format!("/jobs/{id}"));
            }
        }
        return crate::cli::deploy_to_server(&c, &text, &args.file.display().to_string(), &single);
    }
    if !args.continuous {
        return crate::cli::deploy_app(single).await;
    }
    // Here, continuously, behind the HTTP API: the server with the file deployed at start.
    let overrides = crate::server::config::Overrides {
        port: Some(args.port),
        brokers: args.brokers.clone(),
        sql_file: Some(args.file.clone()),
        ..Default::default()
    };
    let mut config = crate::server::config::Config::load(args.config.as_deref(), &overrides)?;
    config.kafka.group_prefix = args.group_prefix;
    config.sql.job_prefix = args.job_prefix;
    config.sql.default_topic = args.default_topic;
    config.sql.restart_policy = args.restart_policy;
    if let Some(max) = args.max_jobs {
        config.sql.max_jobs = max;
    }
    crate::server::serve(config).await
}

/// How `stream-job` / `stream-all` print rows: each row's JSON text as the job wrote it (column
/// order kept), optionally wrapped as `{"job_id", "result"}`.
struct RowShape {
    format: String,
    include_metadata: bool,
}

impl RowShape {
    fn new(format: &str, include_metadata: bool) -> Self {
        Self {
            format: format.to_string(),
            include_metadata,
        }
    }

    fn text(&self, job: &str, line: &str) -> String {
        match self.include_metadata {
            true => format!(
                "{{\"job_id\":{},\"result\":{line}}}",
                Value::String(job.to_string())
            ),
            false => line.to_string(),
        }
    }

    fn write(&self, text: &str, out: &mut impl Write) -> Result<()> {
        match self.format.as_str() {
            "json-pretty" => {
                velo_connectors::format::write_pretty_json(text.as_bytes(), 0, out)?;
                writeln!(out)?;
            }
            _ => writeln!(out, "{text}")?,
        }
        Ok(())
    }

    /// Prints a row now (JSON lines, or anything followed), or keeps it for one JSON document.
    fn emit(&self, job: &str, line: &str, follow: bool, kept: &mut Vec<String>) -> Result<()> {
        let text = self.text(job, line);
        if self.format == "json-lines" || follow {
            let mut out = std::io::stdout().lock();
            self.write(&text, &mut out)?;
            out.flush()?;
        } else {
            kept.push(text);
        }
        Ok(())
    }

    /// Prints the kept rows as one JSON array.
    fn finish(&self, kept: Vec<String>) -> Result<()> {
        if self.format != "json-lines" {
            self.write(
                &format!("[{}]", kept.join(",")),
                &mut std::io::stdout().lock(),
            )?;
        }
        Ok(())
    }
}

fn stream_all(
    c: &Client,
    rows: &RowOutput,
    filter: Option<String>,
    since: Option<String>,
) -> Result<()> {
    let follow = rows.follow;
    let pattern = match &filter {
        None => None,
        Some(f) => {
            let (key, value) = f.split_once('=').ok_or_else(|| {
                VeloError::Usage(format!("--filter '{f}': expected job_name=PATTERN"))
            })?;
            if !matches!(key.trim(), "job_name" | "job_id" | "name") {
                return Err(VeloError::Usage(format!(
                    "--filter '{f}': only job_name=PATTERN is supported"
                )));
            }
            Some(wildcard(value.trim())?)
        }
    };
    let since = since.as_deref().map(parse_since).transpose()?;
    let jobs: Vec<String> = c.get("/jobs")?["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| {
            let name = j["job_id"].as_str().unwrap_or_default();
            pattern.as_ref().is_none_or(|p| p.is_match(name))
                && since.is_none_or(|s| {
                    j["started_at"]
                        .as_str()
                        .and_then(parse_time)
                        .is_some_and(|t| t >= s)
                })
        })
        .filter_map(|j| j["job_id"].as_str().map(str::to_string))
        .collect();
    let shape = Arc::new(RowShape::new(&rows.format, rows.include_metadata));
    if !follow {
        let mut kept = Vec::new();
        for job in &jobs {
            c.for_each_line(&format!("/jobs/{job}/output?limit=1000"), |line| {
                shape.emit(job, line, false, &mut kept)
            })?;
        }
        shape.finish(kept)?;
        return Ok(());
    }
    // Followed: one reader per job, rows printed as they come (a line at a time).
    let threads: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let c = c.clone();
            let shape = shape.clone();
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                c.for_each_line(&format!("/jobs/{job}/output?limit=0&follow=true"), |line| {
                    shape.emit(&job, line, true, &mut kept)
                })
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| VeloError::Execution("a follower thread failed".into()))??;
    }
    Ok(())
}

/// `*` and `?` wildcards as an anchored regular expression.
fn wildcard(pattern: &str) -> Result<regex::Regex> {
    let mut re = String::from("^");
    for ch in pattern.chars() {
        match ch {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| VeloError::Usage(format!("--filter: {e}")))
}

type Time = chrono::DateTime<chrono::Utc>;

fn parse_time(text: &str) -> Option<Time> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// `--since`: an RFC 3339 time, or a duration back from now (`10m`, `2h`).
fn parse_since(text: &str) -> Result<Time> {
    if let Some(t) = parse_time(text) {
        return Ok(t);
    }
    let ms = crate::sql::window::parse_duration(text).map_err(|e| {
        VeloError::Usage(format!(
            "--since '{text}': not an RFC 3339 time nor a duration ({e})"
        ))
    })?;
    Ok(chrono::Utc::now() - chrono::Duration::milliseconds(ms))
}

/// The time a log line starts with.
fn line_time(line: &str) -> Option<Time> {
    parse_time(line.split_whitespace().next()?)
}

fn sort_jobs(jobs: &mut [Value], by: Option<&str>) {
    let key = |j: &Value, field: &str| j[field].as_str().unwrap_or_default().to_string();
    match by {
        Some("name") => jobs.sort_by_key(|j| key(j, "job_id")),
        Some("status") => jobs.sort_by_key(|j| (key(j, "status"), key(j, "job_id"))),
        Some("created") => jobs.sort_by_key(|j| (key(j, "created_at"), key(j, "job_id"))),
        Some("updated") => jobs.sort_by_key(|j| (key(j, "updated_at"), key(j, "job_id"))),
        _ => {}
    }
}

/// `execute`: the query over `job_results`, run here by DataFusion.
async fn job_results_query(
    c: &Client,
    query: &str,
    format: &str,
    timeout: Duration,
    limit: Option<usize>,
) -> Result<()> {
    use arrow::array::{RecordBatch, StringBuilder, UInt64Builder};
    use arrow::datatypes::{DataType, Field, Schema};
    let started = Instant::now();
    let jobs = c.get("/jobs?status=all")?["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut job_id = StringBuilder::new();
    let mut status = StringBuilder::new();
    let mut result = StringBuilder::new();
    let mut error = StringBuilder::new();
    let mut records_in = UInt64Builder::new();
    let mut records_out = UInt64Builder::new();
    for job in &jobs {
        let id = job["job_id"].as_str().unwrap_or_default().to_string();
        let mut rows = Vec::new();
        c.for_each_line(&format!("/jobs/{id}/output?limit=1000"), |line| {
            rows.push(line.to_string());
            Ok(())
        })?;
        let outputs: Vec<Option<String>> = match rows.is_empty() {
            true => vec![None],
            false => rows.into_iter().map(Some).collect(),
        };
        for row in outputs {
            job_id.append_value(&id);
            status.append_option(job["status"].as_str());
            result.append_option(row);
            error.append_option(job["error"].as_str());
            records_in.append_option(job["records_in"].as_u64());
            records_out.append_option(job["records_out"].as_u64());
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, true),
        Field::new("result", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("records_in", DataType::UInt64, true),
        Field::new("records_out", DataType::UInt64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(job_id.finish()),
            Arc::new(status.finish()),
            Arc::new(result.finish()),
            Arc::new(error.finish()),
            Arc::new(records_in.finish()),
            Arc::new(records_out.finish()),
        ],
    )?;
    let context = datafusion::prelude::SessionContext::new();
    let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])
        .map_err(|e| VeloError::Execution(e.to_string()))?;
    context
        .register_table("job_results", Arc::new(table))
        .map_err(|e| VeloError::Execution(e.to_string()))?;
    let left = timeout.saturating_sub(started.elapsed());
    let run = async {
        let frame = context
            .sql(query)
            .await
            .map_err(|e| VeloError::Usage(format!("--query: {e}")))?;
        let frame = match limit {
            Some(n) => frame
                .limit(0, Some(n))
                .map_err(|e| VeloError::Execution(e.to_string()))?,
            None => frame,
        };
        frame
            .collect()
            .await
            .map_err(|e| VeloError::Execution(e.to_string()))
    };
    let batches = tokio::time::timeout(left, run).await.map_err(|_| {
        VeloError::Execution(format!("the query did not finish within {timeout:?}"))
    })??;
    let format: velo_connectors::format::OutputFormat = format.parse().map_err(VeloError::Usage)?;
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => Arc::new(Schema::empty()),
    };
    let mut writer = velo_connectors::format::FormattedWriter::new(
        std::io::stdout(),
        format,
        true,
        schema,
        velo_connectors::codec::DecimalFormat::String,
    );
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(())
}

/// `validate-schema`: parses the file as its extension says and prints its columns.
fn validate_schema(file: &std::path::Path, security_check: bool) -> Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| VeloError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let name = file.display().to_string();
    if security_check && text.len() > 1024 * 1024 {
        return Err(VeloError::Usage(format!(
            "{name}: {} bytes; a schema over 1 MiB is refused by --security-check",
            text.len()
        )));
    }
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    let schema = match extension {
        "avsc" | "json" => {
            let avro = velo_connectors::codec::avro::parse_schema(&text)
                .map_err(|e| VeloError::Usage(format!("{name}: not an Avro schema: {e}")))?;
            velo_connectors::codec::avro::arrow_schema(&avro)
                .map_err(|e| VeloError::Usage(format!("{name}: {e}")))?
        }
        "proto" => {
            if security_check {
                let folder = file.parent().unwrap_or(std::path::Path::new("."));
                for line in text.lines() {
                    let line = line.trim();
                    if let Some(import) = line.strip_prefix("import") {
                        let path = import.trim().trim_start_matches("public").trim();
                        let path = path.trim_matches(|c| c == '"' || c == ';' || c == ' ');
                        let inside = !path.starts_with('/') && !path.split('/').any(|p| p == "..");
                        if !inside
                            || (!folder.join(path).exists()
                                && !path.starts_with("google/protobuf/"))
                        {
                            return Err(VeloError::Usage(format!(
                                "{name}: imports '{path}' from outside its folder (--security-check)"
                            )));
                        }
                    }
                }
            }
            let message = velo_connectors::codec::protobuf::load_message(file, "")
                .map_err(|e| VeloError::Usage(format!("{name}: {e}")))?;
            velo_connectors::codec::protobuf::arrow_schema(&message)
        }
        _ => Arc::new(arrow::datatypes::Schema::new(
            crate::sql::parse_column_list(&text)
                .map_err(|e| VeloError::Usage(format!("{name}: not a column list: {e}")))?,
        )),
    };
    if security_check {
        let money = [
            "price", "amount", "total", "cost", "balance", "value", "notional",
        ];
        for field in schema.fields() {
            let lower = field.name().to_ascii_lowercase();
            let float = matches!(
                field.data_type(),
                arrow::datatypes::DataType::Float32 | arrow::datatypes::DataType::Float64
            );
            if float && money.iter().any(|m| lower.contains(m)) {
                return Err(VeloError::Usage(format!(
                    "{name}: column '{}' looks like money but is {}; use a decimal (--security-check)",
                    field.name(),
                    field.data_type()
                )));
            }
        }
    }
    println!("{name}: valid, {} column(s)", schema.fields().len());
    for field in schema.fields() {
        println!(
            "  {} {}{}",
            field.name(),
            crate::server::api::sql_type_name(field.data_type()),
            if field.is_nullable() { "" } else { " NOT NULL" }
        );
    }
    Ok(())
}
