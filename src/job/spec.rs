//! A job as a value: the query, where its input comes from, where its results go, how they
//! are delivered and where its state lives. The CLI builds one from flags, the server from
//! requests and application files, tests from code; [`super::build`] turns it into a
//! [`super::Runner`]. Nothing here knows about the command line.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use velo_connectors::codec::DecimalFormat;
use velo_connectors::format::OutputFormat;
use velo_connectors::kafka::StartOffset;
use velo_connectors::sink::Sink;

use super::progress::JobProgress;
use crate::error::Result;

/// Everything a job needs to run.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Names the job: its state folder, its metrics, the tags of exactly-once output.
    pub name: String,
    /// Optional `CREATE STREAM`/`CREATE TABLE` declarations and one query, separated by `;`.
    pub sql: String,
    pub kafka: KafkaSpec,
    /// What the settings say of the query's only input.
    pub input: InputSpec,
    pub read: ReadSpec,
    pub output: OutputSpec,
    /// Stop after this many result rows (of this run: not part of the query's state).
    pub limit: Option<u64>,
    /// A tumbling window of this many seconds added to a GROUP BY without one.
    pub window_size_s: Option<u64>,
    /// Lets a join of two streams with only equality keys run as an updating join keeping rows
    /// this long.
    pub state_ttl_ms: Option<i64>,
    /// A partition without records for this long stops holding the watermark back.
    pub idle_timeout_ms: i64,
    /// Where records that cannot be decoded go.
    pub dlq_topic: Option<String>,
    /// What happens when a dead letter cannot be written.
    pub dlq_on_error: velo_connectors::kafka::DeadLetterFailure,
    /// What a bad record or row does (`None`: dead-letter it when there is a dead-letter
    /// topic, else skip it; counted either way).
    pub on_error: Option<OnError>,
    /// Rounds input decimals with more fractional digits than their column, for every stream
    /// without its own `'decimal.rounding'` (`None`: such a record is bad).
    pub decimal_rounding: Option<velo_connectors::codec::decimal::DecimalRounding>,
    /// Where late rows go (instead of only being counted).
    pub late_topic: Option<String>,
    pub runtime: RuntimeOptions,
    pub delivery: Delivery,
    /// Where checkpoints go; `None`: none (bounded runs, ad-hoc queries, the demo).
    pub state: Option<StateSpec>,
    /// The SQL came over HTTP: errors from reading its files are logged on the server and
    /// reported without their content (see [`super::sandbox`]).
    pub conceal_file_errors: bool,
}

/// What a job does with a bad record or row — one that cannot be decoded, has no believable
/// event time, makes an expression fail, or cannot be encoded. Every one is counted (job
/// status `errors`, `velo_record_errors_total`, the run's last log line) whatever the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Log it and go on.
    Skip,
    /// Write it to the dead-letter topic (the original record where there is one, with the
    /// reason and its position) and go on.
    DeadLetter,
    /// Stop the job with an error naming it (a poison pill stops the line).
    Fail,
}

impl std::str::FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "skip" | "log" => Ok(OnError::Skip),
            "dead-letter" | "dlq" => Ok(OnError::DeadLetter),
            "fail" => Ok(OnError::Fail),
            other => Err(format!(
                "unknown on_error '{other}' (use skip, dead-letter or fail)"
            )),
        }
    }
}

/// The broker and how the job's consumers meet their group.
#[derive(Clone)]
pub struct KafkaSpec {
    pub brokers: String,
    /// How long broker requests may take.
    pub timeout: Duration,
    /// How long the group waits for a silent member (a killed job) before reassigning.
    pub session_timeout: Option<Duration>,
    /// Static group membership: a restarted member with this id gets its partitions back at once.
    pub instance_id: Option<String>,
    /// Extra librdkafka properties for every client of the job (`--kafka-property k=v`).
    pub properties: Vec<(String, String)>,
    /// librdkafka properties for the job's consumers and producers (security and tuning from
    /// the configuration and the `KAFKA_*` variables); `properties` win over them.
    pub consumer_properties: Vec<(String, String)>,
    pub producer_properties: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use velo_connectors::kafka::redacted_properties as shown;
        f.debug_struct("KafkaSpec")
            .field("brokers", &self.brokers)
            .field("timeout", &self.timeout)
            .field("session_timeout", &self.session_timeout)
            .field("instance_id", &self.instance_id)
            .field("properties", &shown(&self.properties))
            .field("consumer_properties", &shown(&self.consumer_properties))
            .field("producer_properties", &shown(&self.producer_properties))
            .finish()
    }
}

/// What the settings say of the query's only input (a query over several streams declares
/// each with `CREATE STREAM`).
#[derive(Debug, Clone, Default)]
pub struct InputSpec {
    /// Its topic, when not the name in FROM.
    pub topic: Option<String>,
    /// A generator instead of a topic, e.g. `generator:trades?count=1000`.
    pub generator: Option<String>,
    /// Its payload columns as a SQL column list.
    pub columns: Option<String>,
    /// `json` (default), `avro` or `protobuf`.
    pub format: Option<String>,
    pub avro_schema: Option<PathBuf>,
    pub proto_file: Option<PathBuf>,
    pub proto_message: Option<String>,
    /// A Confluent Schema Registry (wire format with schema ids).
    pub schema_registry: Option<String>,
    pub event_time_column: Option<String>,
    pub watermark_delay_ms: Option<i64>,
    /// A continuous read of only this partition (`stream --partition N`; `execute` says it in
    /// [`ReadSpec::Bounded`]).
    pub partition: Option<i32>,
}

/// How inputs are read.
#[derive(Debug, Clone)]
pub enum ReadSpec {
    /// Up to the end offsets seen at start, then the job ends (`execute`). Never commits.
    Bounded {
        start: StartOffset,
        partition: Option<i32>,
        group_id: Option<String>,
    },
    /// Forever, in a consumer group (default `velo-sql-<stream>`), from its committed offsets
    /// or the checkpoint's, else from `reset`.
    Continuous {
        group_id: Option<String>,
        reset: StartOffset,
    },
}

impl ReadSpec {
    pub fn is_bounded(&self) -> bool {
        matches!(self, ReadSpec::Bounded { .. })
    }
}

/// Where results go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    Stdout,
    File(PathBuf),
    /// Part files in a folder (see [`velo_connectors::part_files`]).
    Directory(PathBuf),
    Kafka(String),
}

/// Where and how results are written.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub target: OutputTarget,
    pub format: OutputFormat,
    pub decimal_format: DecimalFormat,
    /// The column keying each Kafka message.
    pub key: Option<String>,
    pub avro_schema: Option<PathBuf>,
    pub proto_file: Option<PathBuf>,
    pub proto_message: Option<String>,
    /// Compression and row groups of Parquet output.
    pub parquet: velo_connectors::parquet_file::ParquetOptions,
    /// When part files roll ([`OutputTarget::Directory`]).
    pub roll: velo_connectors::part_files::RollPolicy,
    /// Hive-style folders by these columns ([`OutputTarget::Directory`]).
    pub partition_by: Vec<String>,
}

/// What a reader of the output may see after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Nothing lost; after a crash, results since the last acknowledged point appear again.
    #[default]
    AtLeastOnce,
    /// Nothing lost and nothing repeated (Kafka output; see `velo_connectors::exactly_once`).
    ExactlyOnce,
}

impl std::str::FromStr for Delivery {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "at-least-once" => Ok(Delivery::AtLeastOnce),
            "exactly-once" => Ok(Delivery::ExactlyOnce),
            other => Err(format!(
                "unknown delivery '{other}' (at-least-once, exactly-once)"
            )),
        }
    }
}

/// Where a job's checkpoints live and how often they are written.
#[derive(Debug, Clone)]
pub struct StateSpec {
    /// The folder holding the jobs' state folders: this job's is `<root>/<job name>`, its
    /// checkpoints in `checkpoints/` below that.
    pub root: PathBuf,
    pub checkpoint_interval: Duration,
    /// Start without the state found (moved aside, not deleted).
    pub ignore_state: bool,
    /// Restore this savepoint (a checkpoint folder) instead of the job's own checkpoints.
    pub savepoint: Option<PathBuf>,
    /// Checkpoints kept.
    pub keep: usize,
}

impl StateSpec {
    /// Checkpoints every `interval` under `root`, the last 3 kept.
    pub fn new(root: impl Into<PathBuf>, interval: Duration) -> Self {
        Self {
            root: root.into(),
            checkpoint_interval: interval,
            ignore_state: false,
            savepoint: None,
            keep: 3,
        }
    }

    /// The state folder of job `name`.
    pub fn job_dir(&self, name: &str) -> PathBuf {
        self.root.join(folder_name(name))
    }

    /// The default root of jobs' state folders: `$VELO_STATE_DIR`, else
    /// `<user data dir>/velostream/state` (e.g. `~/.local/share/velostream/state`).
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("VELO_STATE_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("velostream")
            .join("state")
    }
}

/// The folder name of a job called `name`: its characters outside `[A-Za-z0-9._-]` become `_`,
/// and a leading `.` too (no `.`, `..` or hidden folders).
pub fn folder_name(name: &str) -> String {
    let mut folder: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if folder.is_empty() || folder.starts_with('.') {
        folder.replace_range(0..0, "_");
    }
    folder
}

/// True when `name` is its own folder name: a job id that can name a folder as it is.
pub fn is_plain_name(name: &str) -> bool {
    folder_name(name) == name
}

/// How the epoch loop runs.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeOptions {
    /// Most records per micro-batch.
    pub batch_size: usize,
    /// Longest wait for records before a micro-batch runs with what it has.
    pub flush_interval: Duration,
    /// A micro-batch from Kafka runs as soon as the consumer has nothing more buffered, rather
    /// than waiting up to `flush_interval` to fill.
    pub eager_batches: bool,
    /// Worker lanes the job runs on (see [`crate::job::lanes`]); 1: the runner's thread
    /// alone.
    pub parallelism: usize,
    /// Most bytes operator state may hold; the job fails with
    /// [`crate::VeloError::StateLimit`] past it. Checked about once a second.
    pub max_state_bytes: Option<u64>,
    /// A record whose event time is later than the watermark or the wall clock (whichever is
    /// later) by more than this is a bad record (`event_time`), not a watermark move; `None`:
    /// no bound.
    pub max_event_time_skew: Option<Duration>,
}

/// The default of [`RuntimeOptions::max_event_time_skew`]: an hour.
pub const DEFAULT_MAX_EVENT_TIME_SKEW: Duration = Duration::from_secs(3600);

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            batch_size: 8192,
            flush_interval: Duration::from_millis(200),
            eager_batches: false,
            parallelism: crate::job::lanes::default_parallelism(),
            max_state_bytes: None,
            max_event_time_skew: Some(DEFAULT_MAX_EVENT_TIME_SKEW),
        }
    }
}

impl JobSpec {
    /// A continuous job running `sql` with every other setting at its default: JSON in,
    /// JSON to stdout, at-least-once, no checkpoints.
    pub fn new(name: impl Into<String>, sql: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            sql: sql.into(),
            kafka: KafkaSpec {
                brokers: "127.0.0.1:9092".into(),
                timeout: Duration::from_secs(10),
                session_timeout: None,
                instance_id: None,
                properties: Vec::new(),
                consumer_properties: Vec::new(),
                producer_properties: Vec::new(),
            },
            input: InputSpec::default(),
            read: ReadSpec::Continuous {
                group_id: None,
                reset: StartOffset::Earliest,
            },
            output: OutputSpec {
                target: OutputTarget::Stdout,
                format: OutputFormat::Json,
                decimal_format: DecimalFormat::String,
                key: None,
                avro_schema: None,
                proto_file: None,
                proto_message: None,
                parquet: Default::default(),
                roll: Default::default(),
                partition_by: Vec::new(),
            },
            limit: None,
            window_size_s: None,
            state_ttl_ms: None,
            idle_timeout_ms: 30_000,
            dlq_topic: None,
            dlq_on_error: Default::default(),
            on_error: None,
            decimal_rounding: None,
            late_topic: None,
            runtime: RuntimeOptions::default(),
            delivery: Delivery::AtLeastOnce,
            state: None,
            conceal_file_errors: false,
        }
    }

    /// True when the job reads up to the end offsets seen at start and then ends.
    pub fn is_bounded(&self) -> bool {
        self.read.is_bounded()
    }
}

/// Builds the sink of a job run by the server from the output schema and the sink the spec
/// describes (`None` when it says stdout).
pub type SinkFactory =
    Box<dyn FnOnce(SchemaRef, Option<Box<dyn Sink>>) -> Result<Box<dyn Sink>> + Send>;

/// How a job is run from elsewhere than a terminal (the server): its stop switch, its live
/// counters, and where its results go. The default is the command line's: stop on
/// SIGINT/SIGTERM, results where the spec says.
#[derive(Default)]
pub struct JobHooks {
    pub stop: Option<Arc<AtomicBool>>,
    pub progress: Option<Arc<JobProgress>>,
    pub sink: Option<SinkFactory>,
}
