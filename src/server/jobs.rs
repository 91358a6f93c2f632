//! Continuous jobs: deployed from application files, run in-process, supervised.
//!
//! Each job runs its query as `velo-sql stream` would (consumer group
//! `<group prefix><job id>`, so jobs are isolated), with a [`CaptureSink`] keeping its recent
//! results and a `job` span routing its log lines to its [`LogBuffer`]. A job that fails is
//! restarted per its restart policy (at most `max_restarts` times, the delay doubling from
//! `restart_delay_ms` up to a minute); its status, errors and restarts are visible in
//! [`JobStatus`] and the metrics. Stop, pause, resume and restart act between micro-batches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tracing::{Instrument, Level};

use super::app::{AppJob, Application};
use super::capture::{CaptureSink, OutputBuffer};
use super::config::{Config, RestartPolicy};
use super::logs::{self, now, LogBuffer};
use super::state::{Desired, JobDefinition};
use crate::error::{Result, VeloError};
use crate::job::{
    JobHooks, JobProgress, JobSpec, OutputTarget, ReadSpec, RuntimeOptions, StateSpec,
};
use velo_connectors::kafka::StartOffset;

/// How jobs of one deployment are named and run.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub job_prefix: String,
    pub group_prefix: String,
    pub default_topic: Option<String>,
    pub restart_policy: RestartPolicy,
    pub max_jobs: Option<usize>,
    /// False: each job reads what its topics hold now and ends (`deploy-app` without
    /// `--continuous`).
    pub continuous: bool,
    /// Jobs that exist already with the same definition are kept as they run (a server
    /// restarting with `SQL_FILE`); ones whose definition changed are replaced, their state
    /// discarded. False: an existing job refuses the deployment.
    pub reconcile: bool,
    /// Deployed by the operator (`SQL_FILE`, an in-process `deploy-app`), not over HTTP.
    pub trusted: bool,
}

/// A job's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Starting,
    Running,
    Paused,
    /// Failed; waiting to be restarted.
    Restarting,
    Stopped,
    Failed,
    /// The input ended (a bounded run) or the query completed (LIMIT).
    Finished,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Restarting => "restarting",
            JobState::Stopped => "stopped",
            JobState::Failed => "failed",
            JobState::Finished => "finished",
        }
    }

    fn is_active(self) -> bool {
        matches!(
            self,
            JobState::Starting | JobState::Running | JobState::Paused | JobState::Restarting
        )
    }
}

#[derive(Debug, Clone)]
struct Lifecycle {
    state: JobState,
    /// When the job was deployed, when its state last changed, when its current run began.
    created_at: String,
    updated_at: String,
    started_at: String,
    errors: u64,
    last_error: Option<String>,
}

/// One job.
pub struct ManagedJob {
    pub id: String,
    pub spec: AppJob,
    pub consumer_group: String,
    pub restart_policy: RestartPolicy,
    continuous: bool,
    trusted: bool,
    lifecycle: Mutex<Lifecycle>,
    /// Restarts of any kind (shown in the status).
    restarts: AtomicU32,
    /// Restarts after failures since the job last started by hand: the restart budget.
    failure_restarts: AtomicU32,
    /// Serializes stop, restart and delete of this job: whatever their order, one run or none.
    ops: tokio::sync::Mutex<()>,
    progress: Arc<JobProgress>,
    stop: Mutex<Arc<AtomicBool>>,
    pub output: Arc<OutputBuffer>,
    pub logs: Arc<LogBuffer>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What `GET /jobs/{id}` shows.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub id: String,
    /// The same as `id`, under the name the deployment guide's scripts read.
    pub job_id: String,
    pub name: String,
    pub status: JobState,
    /// Deployed at; last state change at; current run started at (RFC 3339).
    pub created_at: String,
    pub updated_at: String,
    pub started_at: String,
    pub records_in: u64,
    pub records_out: u64,
    pub bad_records: u64,
    pub dead_letters: u64,
    pub late_rows: u64,
    pub state_bytes: u64,
    pub state_rows: u64,
    /// Bad records and rows by kind (decode, event_time, expression, encode).
    pub errors: crate::job::ErrorCounts,
    /// Runs of the job that failed.
    pub failures: u64,
    pub last_error: Option<String>,
    /// The same as `last_error`, under the name the deployment guide's scripts read.
    pub error: Option<String>,
    /// Records behind the end of the input topic; null while unknown.
    pub lag: Option<i64>,
    pub restarts: u32,
    /// Checkpoints written since the job (re)started, and the id of the last one (0: none).
    pub checkpoints: u64,
    pub last_checkpoint: u64,
    pub restart_policy: RestartPolicy,
    pub consumer_group: String,
    pub input_topic: Option<String>,
    pub sink_topic: Option<String>,
    pub sql: String,
}

impl ManagedJob {
    /// A lifecycle line: into the job's log, and to the process log naming the job.
    fn say(&self, level: Level, message: &str) {
        self.logs.push(level.as_str(), message);
        let job = self.id.as_str();
        match level {
            Level::ERROR => tracing::error!(target: logs::LIFECYCLE, job, "{message}"),
            Level::WARN => tracing::warn!(target: logs::LIFECYCLE, job, "{message}"),
            _ => tracing::info!(target: logs::LIFECYCLE, job, "{message}"),
        }
    }

    pub fn status(&self) -> JobStatus {
        let life = self.lifecycle.lock().expect("job lock").clone();
        let p = &self.progress;
        let lag = p.lag.load(Ordering::Relaxed);
        JobStatus {
            id: self.id.clone(),
            job_id: self.id.clone(),
            name: self.spec.name.clone(),
            status: life.state,
            created_at: life.created_at,
            updated_at: life.updated_at,
            started_at: life.started_at,
            records_in: p.records_in.load(Ordering::Relaxed),
            records_out: p.rows_out.load(Ordering::Relaxed),
            bad_records: p.bad_records.load(Ordering::Relaxed),
            dead_letters: p.dead_letters.load(Ordering::Relaxed),
            late_rows: p.late_rows.load(Ordering::Relaxed),
            state_bytes: p.state_bytes.load(Ordering::Relaxed),
            state_rows: p.state_rows.load(Ordering::Relaxed),
            errors: p.error_counts(),
            failures: life.errors,
            error: life.last_error.clone(),
            last_error: life.last_error,
            lag: (lag >= 0).then_some(lag),
            restarts: self.restarts.load(Ordering::Relaxed),
            checkpoints: p.checkpoints.load(Ordering::Relaxed),
            last_checkpoint: p.last_checkpoint.load(Ordering::Relaxed),
            restart_policy: self.restart_policy,
            consumer_group: self.consumer_group.clone(),
            input_topic: self.spec.input_topic.clone(),
            sink_topic: self.spec.sink_topic.clone(),
            sql: self.spec.query.clone(),
        }
    }

    /// The job's throughput since this run started (records in and rows out per second) and
    /// its recent micro-batch latency percentiles (ms).
    pub fn performance(&self) -> serde_json::Value {
        let p = &self.progress;
        let seconds = p.started.elapsed().as_secs_f64().max(1e-3);
        let records_in = p.records_in.load(Ordering::Relaxed);
        let rows_out = p.rows_out.load(Ordering::Relaxed);
        let latency = p.latency_percentiles_ms();
        serde_json::json!({
            "records_in": records_in,
            "rows_out": rows_out,
            "records_in_per_second": (records_in as f64 / seconds * 10.0).round() / 10.0,
            "rows_out_per_second": (rows_out as f64 / seconds * 10.0).round() / 10.0,
            "batch_latency_ms": latency.map(|[p50, p95, p99]| {
                serde_json::json!({"p50": p50, "p95": p95, "p99": p99})
            }),
        })
    }

    /// The partitions the job reads, each with its position and end offset (sampled each
    /// second by the job).
    pub fn partitions(&self) -> Vec<(String, velo_connectors::source::PartitionProgress)> {
        self.progress
            .partitions
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    pub fn state(&self) -> JobState {
        self.lifecycle.lock().expect("job lock").state
    }

    fn set_state(&self, state: JobState) {
        let mut life = self.lifecycle.lock().expect("job lock");
        life.state = state;
        life.updated_at = now();
    }

    fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.lock().expect("job lock").clone()
    }

    /// The job as kept on disk.
    pub fn definition(&self, desired: Desired) -> JobDefinition {
        JobDefinition {
            id: self.id.clone(),
            job: self.spec.clone(),
            consumer_group: self.consumer_group.clone(),
            restart_policy: self.restart_policy,
            continuous: self.continuous,
            desired,
            trusted: self.trusted,
        }
    }

    /// Asks the running job for a checkpoint now and waits (at most `timeout`) until it is
    /// written; says why not when it is not.
    async fn checkpoint_now(&self, timeout: Duration) -> std::result::Result<(), String> {
        if !matches!(self.state(), JobState::Running | JobState::Paused) {
            return Err(format!("job '{}' is not running", self.id));
        }
        let before = self.progress.last_checkpoint.load(Ordering::Relaxed);
        self.progress
            .checkpoint_requested
            .store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.progress.last_checkpoint.load(Ordering::Relaxed) != before {
                return Ok(());
            }
            // The request was taken and no checkpoint came of it.
            if !self.progress.checkpoint_requested.load(Ordering::Relaxed) {
                return Err(format!(
                    "job '{}' keeps no checkpoints (it reads only generators)",
                    self.id
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "job '{}' did not write a checkpoint within {} s",
            self.id,
            timeout.as_secs()
        ))
    }
}

/// Every job of the server (or of an in-process `deploy-app`).
pub struct JobManager {
    config: Arc<Config>,
    jobs: Mutex<BTreeMap<String, Arc<ManagedJob>>>,
    /// Where the jobs' folders are (checkpoints, and the definitions of a server's jobs).
    jobs_dir: std::path::PathBuf,
    /// True for a server: job definitions are kept in the jobs' folders and redeployed when
    /// the server starts again.
    persist: bool,
}

impl JobManager {
    /// A server's job manager: jobs in `config`'s state folder, definitions kept.
    pub fn new(config: Arc<Config>) -> Arc<Self> {
        let jobs_dir = config.jobs_dir();
        Arc::new(Self {
            config,
            jobs: Mutex::new(BTreeMap::new()),
            jobs_dir,
            persist: true,
        })
    }

    /// The job manager of an in-process `deploy-app`: jobs checkpoint in `jobs_dir`; nothing
    /// is redeployed later.
    pub fn in_process(config: Arc<Config>, jobs_dir: std::path::PathBuf) -> Arc<Self> {
        Arc::new(Self {
            config,
            jobs: Mutex::new(BTreeMap::new()),
            jobs_dir,
            persist: false,
        })
    }

    /// The folder of job `id`.
    pub fn job_dir(&self, id: &str) -> std::path::PathBuf {
        self.jobs_dir.join(crate::job::spec::folder_name(id))
    }

    /// Writes job `job`'s definition into its folder (a server's jobs), `desired` saying
    /// whether it runs when the server starts again.
    fn keep_definition(&self, job: &ManagedJob, desired: Desired) -> Result<()> {
        if !self.persist {
            return Ok(());
        }
        super::state::write_definition(&self.job_dir(&job.id), &job.definition(desired))
    }

    /// Redeploys the jobs whose definitions are in the state folder (a server starting): each
    /// restores its last checkpoint. Returns their ids.
    pub fn redeploy_kept(self: &Arc<Self>) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for definition in super::state::read_definitions(&self.jobs_dir)? {
            let start = definition.desired == Desired::Running;
            let id = definition.id.clone();
            let job = self.add(definition)?;
            if start {
                self.start(job);
            } else {
                job.set_state(JobState::Stopped);
            }
            ids.push(id);
        }
        self.publish_active();
        Ok(ids)
    }

    /// Prepares deploying `app` again over the jobs a restarted server brought back: a job
    /// whose definition is unchanged keeps running from its state; one that changed is
    /// deleted (its state does not fit the new query) and deployed afresh.
    pub async fn reconcile(&self, app: &Application, options: &DeployOptions) {
        for spec in &app.jobs {
            let id = format!("{}{}", options.job_prefix, spec.name);
            let mut spec = spec.clone();
            if spec.input_topic.is_none() {
                spec.input_topic = options.default_topic.clone();
            }
            if let Some(existing) = self.get(&id) {
                if existing.spec != spec {
                    tracing::warn!(
                        "job '{id}' changed since it was deployed: replacing it (its state is discarded)"
                    );
                    self.delete(&existing).await;
                }
            }
        }
    }

    /// Registers a job from its definition (not started).
    fn add(&self, definition: JobDefinition) -> Result<Arc<ManagedJob>> {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        if jobs.contains_key(&definition.id) {
            return Err(VeloError::Usage(format!(
                "a job '{}' exists already",
                definition.id
            )));
        }
        let id = definition.id.clone();
        let job = Arc::new(ManagedJob {
            consumer_group: definition.consumer_group,
            spec: definition.job,
            restart_policy: definition.restart_policy,
            continuous: definition.continuous,
            trusted: definition.trusted,
            lifecycle: Mutex::new(Lifecycle {
                state: JobState::Starting,
                created_at: now(),
                updated_at: now(),
                started_at: now(),
                errors: 0,
                last_error: None,
            }),
            restarts: AtomicU32::new(0),
            failure_restarts: AtomicU32::new(0),
            ops: tokio::sync::Mutex::new(()),
            progress: Arc::new(JobProgress::new(id.clone())),
            stop: Mutex::new(Arc::new(AtomicBool::new(false))),
            output: Arc::new(OutputBuffer::new(self.config.sql.output_buffer_rows)),
            logs: Arc::new(LogBuffer::new(1000)),
            task: Mutex::new(None),
            id: id.clone(),
        });
        logs::register(&id, job.logs.clone());
        jobs.insert(id, job.clone());
        Ok(job)
    }

    /// Deploys every job of `app`, or none: names already taken or too many jobs refuse the
    /// whole deployment. Returns the new jobs' ids.
    pub fn deploy(
        self: &Arc<Self>,
        app: &Application,
        options: &DeployOptions,
    ) -> Result<Vec<String>> {
        let jobs = self.jobs.lock().expect("jobs lock");
        let active = jobs.values().filter(|j| j.state().is_active()).count();
        let limit = options
            .max_jobs
            .unwrap_or(self.config.sql.max_jobs)
            .min(self.config.sql.max_jobs);
        if active + app.jobs.len() > limit {
            return Err(VeloError::OverLimit(format!(
                "deploying {} job(s) would run {} jobs, over the limit of {limit} (sql.max_jobs / --max-jobs)",
                app.jobs.len(),
                active + app.jobs.len()
            )));
        }
        let ids: Vec<String> = app
            .jobs
            .iter()
            .map(|j| format!("{}{}", options.job_prefix, j.name))
            .collect();
        if let (Some(taken), false) = (
            ids.iter().find(|id| jobs.contains_key(*id)),
            options.reconcile,
        ) {
            return Err(VeloError::Usage(format!(
                "a job '{taken}' exists already; delete it first or use --job-prefix"
            )));
        }
        drop(jobs);
        for (spec, id) in app.jobs.iter().zip(&ids) {
            let mut spec = spec.clone();
            if spec.input_topic.is_none() {
                spec.input_topic = options.default_topic.clone();
            }
            if options.reconcile && self.get(id).is_some() {
                continue; // kept as it runs (see `reconcile`)
            }
            let job = self.add(JobDefinition {
                id: id.clone(),
                consumer_group: format!("{}{}", options.group_prefix, id),
                job: spec,
                restart_policy: options.restart_policy,
                continuous: options.continuous,
                desired: Desired::Running,
                trusted: options.trusted,
            })?;
            if options.continuous {
                // A new job starts afresh: state left by an earlier job of that name goes.
                let _ = std::fs::remove_dir_all(self.job_dir(id));
            }
            self.keep_definition(&job, Desired::Running)?;
            self.start(job);
        }
        metrics::gauge!("velo_active_jobs").set((active + ids.len()) as f64);
        Ok(ids)
    }

    fn start(self: &Arc<Self>, job: Arc<ManagedJob>) {
        let manager = self.clone();
        let span = tracing::info_span!("job", id = %job.id);
        let handle = tokio::spawn(manager.clone().supervise(job.clone()).instrument(span));
        *job.task.lock().expect("job lock") = Some(handle);
    }

    /// Runs a job until it is stopped, ends, or fails past its restart policy.
    async fn supervise(self: Arc<Self>, job: Arc<ManagedJob>) {
        loop {
            let stop = job.stop_flag();
            {
                let mut life = job.lifecycle.lock().expect("job lock");
                life.state = if job.progress.paused.load(Ordering::Relaxed) {
                    JobState::Paused
                } else {
                    JobState::Running
                };
                life.started_at = now();
                life.updated_at = life.started_at.clone();
            }
            job.say(Level::INFO, "started");
            let result = self.run_once(&job, stop.clone()).await;
            if stop.load(Ordering::Relaxed) {
                job.set_state(JobState::Stopped);
                job.say(Level::INFO, "stopped");
                break;
            }
            let failed = match result {
                Ok(stats) => {
                    job.say(
                        Level::INFO,
                        &format!(
                            "finished: {} records in, {} rows out",
                            stats.records_in, stats.rows_out
                        ),
                    );
                    None
                }
                Err(e) => {
                    let message = e.to_string();
                    job.say(Level::ERROR, &format!("failed: {message}"));
                    let mut life = job.lifecycle.lock().expect("job lock");
                    life.errors += 1;
                    life.last_error = Some(message.clone());
                    metrics::counter!("velo_job_failures_total", "job_id" => job.id.clone())
                        .increment(1);
                    Some(message)
                }
            };
            let again = match (job.restart_policy, &failed) {
                (RestartPolicy::Always, _) => job.continuous,
                (RestartPolicy::OnFailure, Some(_)) => true,
                _ => false,
            };
            let restarts = job.failure_restarts.load(Ordering::Relaxed);
            if !again || restarts >= self.config.sql.max_restarts {
                job.set_state(if failed.is_some() {
                    JobState::Failed
                } else {
                    JobState::Finished
                });
                if failed.is_some() && again {
                    job.say(
                        Level::ERROR,
                        &format!("gave up after {restarts} restart(s)"),
                    );
                }
                break;
            }
            let delay = Duration::from_millis(
                self.config
                    .sql
                    .restart_delay_ms
                    .saturating_mul(1 << restarts.min(16))
                    .min(60_000),
            );
            job.set_state(JobState::Restarting);
            job.say(
                Level::WARN,
                &format!(
                    "restarting in {} ms (restart {})",
                    delay.as_millis(),
                    restarts + 1
                ),
            );
            let deadline = tokio::time::Instant::now() + delay;
            while tokio::time::Instant::now() < deadline {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if stop.load(Ordering::Relaxed) {
                job.set_state(JobState::Stopped);
                job.say(Level::INFO, "stopped");
                break;
            }
            job.restarts.fetch_add(1, Ordering::Relaxed);
            job.failure_restarts.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("velo_job_restarts_total", "job_id" => job.id.clone()).increment(1);
        }
        self.publish_active();
    }

    async fn run_once(
        &self,
        job: &Arc<ManagedJob>,
        stop: Arc<AtomicBool>,
    ) -> Result<crate::job::JobStats> {
        let spec = self.job_spec(job)?;
        let output = job.output.clone();
        if let Some(text) = &job.spec.timeout {
            let limit = crate::sql::window::parse_duration(text).map_err(|why| {
                VeloError::Usage(format!("job '{}': TIMEOUT '{text}': {why}", job.id))
            })?;
            if job.continuous {
                tracing::warn!(
                    "job '{}': TIMEOUT applies to bounded jobs; a continuous job runs until \
                     stopped",
                    job.id
                );
            } else {
                // A bounded job past its time ends as a stop does (what it read is written).
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(limit.max(0) as u64)).await;
                    stop.store(true, Ordering::Relaxed);
                });
            }
        }
        let hooks = JobHooks {
            stop: Some(stop),
            progress: Some(job.progress.clone()),
            sink: Some(Box::new(move |schema, inner| {
                Ok(Box::new(CaptureSink::new(inner, output, schema.clone())))
            })),
        };
        let span = tracing::Span::current();
        let handle = tokio::runtime::Handle::current();
        // Planning talks to the broker with blocking calls: off the async workers.
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| handle.block_on(crate::job::run(spec, hooks)))
        })
        .await
        .map_err(|e| VeloError::Execution(format!("the job thread failed: {e}")))?
    }

    /// The job spec of a deployed job: its query, the server's broker and performance
    /// profile, its own consumer group, and (when continuous) checkpoints in the server's
    /// state folder.
    pub fn job_spec(&self, job: &ManagedJob) -> Result<JobSpec> {
        let config = &self.config;
        let performance = config.performance()?;
        let read = if job.continuous {
            ReadSpec::Continuous {
                group_id: Some(job.consumer_group.clone()),
                reset: StartOffset::Earliest,
            }
        } else {
            ReadSpec::Bounded {
                start: StartOffset::Earliest,
                partition: None,
                group_id: Some(job.consumer_group.clone()),
            }
        };
        let mut spec = JobSpec::new(job.id.clone(), job.spec.sql.clone());
        spec.conceal_file_errors = !job.trusted;
        spec.read = read;
        config.kafka_spec(&mut spec.kafka)?;
        spec.kafka.session_timeout = performance.session_timeout;
        spec.input.topic = job.spec.input_topic.clone();
        spec.dlq_topic = job.spec.dlq_topic.clone();
        if let Some(policy) = &job.spec.dlq_on_error {
            spec.dlq_on_error = policy.parse().map_err(|e: String| {
                VeloError::Usage(format!("job '{}': dlq.on_error: {e}", job.id))
            })?;
        }
        if let Some(policy) = &job.spec.on_error {
            spec.on_error = Some(policy.parse().map_err(|e: String| {
                VeloError::Usage(format!("job '{}': on_error: {e}", job.id))
            })?);
        }
        if let Some(skew) = &job.spec.max_event_time_skew {
            let ms = match skew.trim() {
                "0" => 0,
                text => crate::sql::window::parse_duration(text).map_err(|e| {
                    VeloError::Usage(format!("job '{}': max_event_time_skew: {e}", job.id))
                })?,
            };
            spec.runtime.max_event_time_skew = (ms > 0).then(|| Duration::from_millis(ms as u64));
        }
        if performance.decimals_as_numbers {
            spec.output.decimal_format = velo_connectors::codec::DecimalFormat::Number;
        }
        if let Some(topic) = &job.spec.sink_topic {
            spec.output.target = OutputTarget::Kafka(topic.clone());
            spec.output.key = job.spec.sink_key.clone();
            if let Some(format) = &job.spec.sink_format {
                spec.output.format = format.parse().map_err(|e: String| {
                    VeloError::Usage(format!("job '{}': sink.format: {e}", job.id))
                })?;
            }
        }
        if let Some(delivery) = &job.spec.delivery {
            spec.delivery = delivery.parse().map_err(|e: String| {
                VeloError::Usage(format!("job '{}': delivery: {e}", job.id))
            })?;
        }
        spec.runtime = RuntimeOptions {
            batch_size: performance.batch_size,
            flush_interval: Duration::from_millis(performance.flush_interval_ms),
            eager_batches: performance.eager_batches,
            parallelism: config.sql.worker_threads,
            max_state_bytes: Some(match &job.spec.memory_limit {
                Some(text) => text
                    .parse::<bytesize::ByteSize>()
                    .map(|b| b.as_u64())
                    .map_err(|why| {
                        VeloError::Usage(format!("job '{}': MEMORY_LIMIT '{text}': {why}", job.id))
                    })?,
                None => config.sql.memory_limit_mb.saturating_mul(1024 * 1024),
            }),
            ..spec.runtime
        };
        if job.continuous {
            spec.state = Some(StateSpec::new(
                self.jobs_dir.clone(),
                Duration::from_millis(config.checkpoint_interval_ms().max(1)),
            ));
        }
        Ok(spec)
    }

    fn publish_active(&self) {
        let active = self
            .jobs
            .lock()
            .expect("jobs lock")
            .values()
            .filter(|j| j.state().is_active())
            .count();
        metrics::gauge!("velo_active_jobs").set(active as f64);
    }

    pub fn get(&self, id: &str) -> Option<Arc<ManagedJob>> {
        self.jobs.lock().expect("jobs lock").get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<ManagedJob>> {
        self.jobs
            .lock()
            .expect("jobs lock")
            .values()
            .cloned()
            .collect()
    }

    /// True when no job is still starting.
    pub fn all_started(&self) -> bool {
        self.list().iter().all(|j| j.state() != JobState::Starting)
    }

    /// Stops a job (it stays listed as stopped, and stays stopped when the server starts
    /// again) and waits for it to end (its final checkpoint written).
    pub async fn stop(&self, job: &Arc<ManagedJob>) {
        let _one_at_a_time = job.ops.lock().await;
        self.halt(job).await;
        if self.get(&job.id).is_none() {
            return; // deleted meanwhile: nothing to keep
        }
        if let Err(e) = self.keep_definition(job, Desired::Stopped) {
            tracing::warn!("job '{}': {e}", job.id);
        }
    }

    /// Stops a job's run and waits for it to end, leaving what it should do next as it was.
    async fn halt(&self, job: &Arc<ManagedJob>) {
        job.stop_flag().store(true, Ordering::Relaxed);
        job.progress.paused.store(false, Ordering::Relaxed);
        let task = job.task.lock().expect("job lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        if job.state().is_active() {
            job.set_state(JobState::Stopped);
        }
        self.publish_active();
    }

    pub fn pause(&self, job: &ManagedJob) {
        job.progress.paused.store(true, Ordering::Relaxed);
        if job.state() == JobState::Running {
            job.set_state(JobState::Paused);
        }
        job.say(Level::INFO, "paused");
    }

    pub fn resume(&self, job: &ManagedJob) {
        job.progress.paused.store(false, Ordering::Relaxed);
        if job.state() == JobState::Paused {
            job.set_state(JobState::Running);
        }
        job.say(Level::INFO, "resumed");
    }

    /// Stops the job and starts it again (counted as a restart); it restores its checkpoint.
    pub async fn restart(self: &Arc<Self>, job: &Arc<ManagedJob>) {
        let _one_at_a_time = job.ops.lock().await;
        if self.get(&job.id).is_none() {
            return; // deleted meanwhile
        }
        self.halt(job).await;
        job.failure_restarts.store(0, Ordering::Relaxed);
        if let Err(e) = self.keep_definition(job, Desired::Running) {
            tracing::warn!("job '{}': {e}", job.id);
        }
        *job.stop.lock().expect("job lock") = Arc::new(AtomicBool::new(false));
        job.restarts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("velo_job_restarts_total", "job_id" => job.id.clone()).increment(1);
        job.set_state(JobState::Starting);
        self.start(job.clone());
        self.publish_active();
    }

    /// Stops and forgets a job: its definition and checkpoints go too.
    pub async fn delete(&self, job: &Arc<ManagedJob>) {
        let _one_at_a_time = job.ops.lock().await;
        self.halt(job).await;
        self.jobs.lock().expect("jobs lock").remove(&job.id);
        if job.continuous {
            let _ = std::fs::remove_dir_all(self.job_dir(&job.id));
        }
        logs::unregister(&job.id);
        self.publish_active();
    }

    /// Stops every job (server shutdown): each writes its final checkpoint, and the server's
    /// jobs that were running run again when it starts.
    pub async fn stop_all(&self) {
        for job in self.list() {
            let _one_at_a_time = job.ops.lock().await;
            self.halt(&job).await;
        }
    }

    /// Takes a savepoint of `job`: a fresh checkpoint when it runs (else its last one), copied
    /// to the server's savepoints folder. Returns the folder and the checkpoint's id.
    pub async fn savepoint(&self, job: &Arc<ManagedJob>) -> Result<(std::path::PathBuf, u64)> {
        if !job.continuous {
            return Err(VeloError::Usage(format!(
                "job '{}' reads a bounded input and keeps no checkpoints",
                job.id
            )));
        }
        if matches!(job.state(), JobState::Running | JobState::Paused) {
            job.checkpoint_now(Duration::from_secs(30))
                .await
                .map_err(VeloError::State)?;
        }
        super::state::savepoint(
            &self.job_dir(&job.id),
            &self.config.savepoints_dir(),
            &job.id,
        )
    }

    /// Exports `only` (or every job): definitions and newest checkpoints, running jobs
    /// checkpointed first so the export is current.
    pub async fn export(&self, only: Option<&str>) -> Result<super::state::Export> {
        let mut jobs = Vec::new();
        for job in self.list() {
            if only.is_some_and(|id| id != job.id) {
                continue;
            }
            // Best effort: a job that is not running exports its last checkpoint.
            let _ = job.checkpoint_now(Duration::from_secs(30)).await;
            let desired = if job.state() == JobState::Stopped {
                Desired::Stopped
            } else {
                Desired::Running
            };
            jobs.push(super::state::export_job(
                &self.job_dir(&job.id),
                job.definition(desired),
            )?);
        }
        if let (Some(id), true) = (only, jobs.is_empty()) {
            return Err(VeloError::Usage(format!("no job '{id}'")));
        }
        Ok(super::state::export(jobs))
    }

    /// Imports an export: each job's definition and checkpoint are written to its folder and
    /// the jobs that were running start, restoring the imported state. Jobs of the same id
    /// are refused, unless `replace` (then they are deleted first). Returns the ids.
    pub async fn import(
        self: &Arc<Self>,
        export: &super::state::Export,
        replace: bool,
    ) -> Result<Vec<String>> {
        super::state::check_export(export)?;
        // Everything is checked before anything changes: an import is whole or refused. The
        // jobs arrive over HTTP: sandboxed like any SQL from there.
        let sandbox = self.config.sandbox();
        let mut checked = Vec::new();
        for job in &export.jobs {
            let mut job = super::state::check_import(job)?;
            for decl in crate::sql::parse_script(&job.definition.job.sql)?.streams {
                sandbox.check(&decl)?;
            }
            job.definition.trusted = false;
            checked.push(job);
        }
        for job in &checked {
            if let Some(existing) = self.get(&job.definition.id) {
                if !replace {
                    return Err(VeloError::Usage(format!(
                        "a job '{}' exists already; delete it first or import with replace",
                        existing.id
                    )));
                }
            }
        }
        let mut ids = Vec::new();
        for job in checked {
            if let Some(existing) = self.get(&job.definition.id) {
                self.delete(&existing).await;
            }
            super::state::write_import(&self.job_dir(&job.definition.id), &job)?;
            let start = job.definition.desired == Desired::Running;
            let added = self.add(job.definition)?;
            if start {
                self.start(added.clone());
            } else {
                added.set_state(JobState::Stopped);
            }
            ids.push(added.id.clone());
        }
        self.publish_active();
        Ok(ids)
    }

    /// Waits until no job is active.
    pub async fn wait_all(&self) {
        loop {
            let tasks: Vec<_> = self
                .list()
                .iter()
                .filter_map(|j| j.task.lock().expect("job lock").take())
                .collect();
            if tasks.is_empty() {
                return;
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    }
}
