//! Server configuration: YAML (`configs/velo-default.yaml`), then environment variables, then
//! command-line flags, each overriding the one before. Unknown keys and bad values are startup
//! errors naming the key (or variable) and what was wrong.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, VeloError};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub server: ServerConfig,
    pub sql: SqlConfig,
    pub performance: PerformanceConfig,
    pub state: StateConfig,
    /// The seed configuration's spelling of `state.checkpoint_interval_ms`.
    pub storage: StorageConfig,
    pub schema_registry: super::kafka_config::SchemaRegistryConfig,
    /// Keys of the file accepted without effect here, each with why (warned about at start).
    #[serde(skip)]
    pub without_effect: Vec<String>,
}

/// `state:` — where jobs keep their checkpoints and the server its deployed jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// The server's state folder (`VELO_STATE_DIR`): deployed jobs in `jobs/<id>/` (definition
    /// and checkpoints), savepoints in `savepoints/`. Default
    /// `<user data dir>/velostream/server`.
    pub dir: Option<PathBuf>,
    /// How often each job writes a checkpoint (default 10 000).
    pub checkpoint_interval_ms: Option<u64>,
}

/// `storage:` — accepted for configurations written for the seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Same as `state.checkpoint_interval_ms` (which wins when both are given).
    pub checkpoint_interval_ms: Option<u64>,
}

impl Config {
    /// How often each job writes a checkpoint, in ms.
    pub fn checkpoint_interval_ms(&self) -> u64 {
        self.state
            .checkpoint_interval_ms
            .or(self.storage.checkpoint_interval_ms)
            .unwrap_or(10_000)
    }

    /// The server's state folder.
    pub fn state_dir(&self) -> PathBuf {
        self.state.dir.clone().unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("velostream")
                .join("server")
        })
    }

    /// Where the deployed jobs' folders are.
    pub fn jobs_dir(&self) -> PathBuf {
        self.state_dir().join("jobs")
    }

    /// The micro-batching settings: the profile, the explicit `performance:` keys, and the
    /// guide's `kafka.max_poll_records` as the batch size when `performance.batch_size` is not
    /// given.
    pub fn performance(&self) -> Result<Performance> {
        let mut performance = self.performance.resolve()?;
        if let (None, Some(n)) = (self.performance.batch_size, self.kafka.max_poll_records()) {
            performance.batch_size = n;
        }
        Ok(performance)
    }

    /// Sets the broker, timeout and client properties of a job's Kafka settings.
    pub fn kafka_spec(&self, spec: &mut crate::job::spec::KafkaSpec) -> Result<()> {
        use super::kafka_config::Role;
        let env = |name: &str| std::env::var(name).ok();
        spec.brokers = self.kafka.brokers.clone();
        spec.timeout = std::time::Duration::from_secs(self.kafka.timeout_seconds.max(1));
        spec.consumer_properties = self.kafka.client_properties(Role::Consumer, &env)?;
        spec.producer_properties = self.kafka.client_properties(Role::Producer, &env)?;
        Ok(())
    }

    /// A connection to the configured brokers with the consumers' properties (for metadata).
    pub fn kafka_connection(
        &self,
        timeout: std::time::Duration,
    ) -> Result<velo_connectors::kafka::KafkaConnection> {
        let mut spec = crate::job::spec::JobSpec::new("config", String::new()).kafka;
        self.kafka_spec(&mut spec)?;
        let mut connection = velo_connectors::kafka::KafkaConnection::new(spec.brokers, timeout);
        connection.consumer_properties = spec.consumer_properties;
        connection.producer_properties = spec.producer_properties;
        Ok(connection)
    }

    /// Makes the `schema_registry:` credentials and CA what every registry client of this
    /// process starts from.
    pub fn apply_registry_access(&self) -> Result<()> {
        self.schema_registry
            .access(&|name| std::env::var(name).ok())?
            .set_process_default();
        Ok(())
    }

    /// One warning listing the file's keys that have no effect here.
    pub fn warn_about_keys_without_effect(&self) {
        if !self.without_effect.is_empty() {
            tracing::warn!(
                "configuration keys accepted without effect here: {}",
                self.without_effect.join("; ")
            );
        }
    }

    /// What SQL arriving over HTTP may touch.
    pub fn sandbox(&self) -> crate::job::sandbox::Sandbox {
        crate::job::sandbox::Sandbox {
            allowed_paths: self.server.allowed_paths.clone(),
            allowed_registries: self.server.allowed_registries.clone(),
        }
    }

    /// Where savepoints go.
    pub fn savepoints_dir(&self) -> PathBuf {
        self.state_dir().join("savepoints")
    }
}

pub use super::kafka_config::KafkaConfig;

/// `server:` — the HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind (`SERVER_BIND`, `--bind`); 127.0.0.1 unless told otherwise.
    pub bind: String,
    /// Port (`SERVER_PORT`, `--port`); 0 picks a free one.
    pub port: u16,
    /// A second port serving only `/metrics` (and `/health`) for Prometheus
    /// (`VELO_METRICS_PORT`); none: metrics on the API's port only.
    pub metrics_port: Option<u16>,
    /// Bearer token every route but `/health` requires (`VELO_API_TOKEN`); none: no auth.
    pub auth_token: Option<String>,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Largest state document `POST /state` accepts (an import of jobs and their checkpoints).
    pub max_import_bytes: usize,
    /// Ad-hoc queries running at once; more get 429.
    pub max_concurrent_queries: usize,
    /// Longest an ad-hoc query may run.
    pub query_timeout_seconds: u64,
    /// Origins allowed by CORS; empty: CORS off; `"*"`: any.
    pub cors_origins: Vec<String>,
    /// Directories whose files SQL arriving over HTTP may read (table files, schema files);
    /// empty: none.
    pub allowed_paths: Vec<PathBuf>,
    /// Schema registries SQL arriving over HTTP may use; empty: none.
    pub allowed_registries: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1".into(),
            port: 8080,
            metrics_port: None,
            auth_token: None,
            max_body_bytes: 1024 * 1024,
            max_import_bytes: 1024 * 1024 * 1024,
            max_concurrent_queries: 4,
            query_timeout_seconds: 30,
            cors_origins: Vec::new(),
            allowed_paths: Vec::new(),
            allowed_registries: Vec::new(),
        }
    }
}

/// What a failed job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    Never,
    OnFailure,
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            "on-failure" => Ok(Self::OnFailure),
            other => Err(format!(
                "unknown restart policy '{other}' (always, never, on-failure)"
            )),
        }
    }
}

/// `sql:` — jobs and queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// An application file deployed at start (`SQL_FILE`).
    pub file: Option<PathBuf>,
    /// Threads of the async runtime, and the lanes each job's stateless queries run on
    /// (`SQL_WORKER_THREADS`; default one per core).
    pub worker_threads: usize,
    /// Most operator state a query or job may hold, in MiB (`SQL_MEMORY_LIMIT_MB`).
    pub memory_limit_mb: u64,
    /// Most jobs at once (`SQL_MAX_JOBS`).
    pub max_jobs: usize,
    pub restart_policy: RestartPolicy,
    /// Restarts of a failing job before it stays failed.
    pub max_restarts: u32,
    /// First delay before a restart, doubled after each (at most a minute).
    pub restart_delay_ms: u64,
    /// Recent result rows kept per job for `/jobs/{id}/output`.
    pub output_buffer_rows: usize,
    /// Stream declarations (`CREATE STREAM …;`) known to every query and job.
    pub streams: Vec<String>,
    /// Prefix of the ids of jobs deployed from `sql.file` (`deploy-app --job-prefix`).
    pub job_prefix: String,
    /// Input topic of `sql.file` jobs that name none (`deploy-app --default-topic`).
    pub default_topic: Option<String>,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            file: None,
            worker_threads: crate::job::lanes::default_parallelism(),
            memory_limit_mb: 512,
            max_jobs: 16,
            restart_policy: RestartPolicy::OnFailure,
            max_restarts: 3,
            restart_delay_ms: 1000,
            output_buffer_rows: 1000,
            streams: Vec::new(),
            job_prefix: String::new(),
            default_topic: None,
        }
    }
}

/// `performance:` — micro-batching. `profile` picks a preset; keys given override it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceConfig {
    /// `default` (or `standard`), `low-latency`, `high-throughput` or `financial`, with `-` or
    /// `_` (`VELO_PERFORMANCE_PROFILE`).
    pub profile: Option<String>,
    /// Most records per micro-batch.
    pub batch_size: Option<usize>,
    /// Longest wait before a micro-batch runs with what it has.
    pub flush_interval_ms: Option<u64>,
    /// Run a micro-batch as soon as the consumer has nothing more buffered.
    pub eager_batches: Option<bool>,
    /// JSON decimals as `string` (exact text) or `number`.
    pub decimal_format: Option<String>,
}

/// Micro-batching settings after the profile is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Performance {
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    /// See [`crate::job::spec::RuntimeOptions::eager_batches`].
    pub eager_batches: bool,
    pub decimals_as_numbers: bool,
    /// How long a job's consumer group waits for a silent member before reassigning its
    /// partitions (`None`: Kafka's default, 45 s).
    pub session_timeout: Option<std::time::Duration>,
}

/// The presets: (name, batch size, flush interval ms, decimals as numbers, eager batches).
pub const PROFILES: &[(&str, usize, u64, bool, bool)] = &[
    ("default", 8192, 200, false, false),
    ("low-latency", 256, 10, false, true),
    ("high-throughput", 65_536, 1000, false, false),
    ("financial", 1024, 50, false, false),
];

impl PerformanceConfig {
    /// The profile's settings with the explicit keys applied.
    pub fn resolve(&self) -> Result<Performance> {
        // The guide's spellings too: `low_latency`, `high_throughput`, `standard`.
        let given = self
            .profile
            .as_deref()
            .unwrap_or("default")
            .to_ascii_lowercase();
        let name = match given.replace('_', "-").as_str() {
            "standard" => "default".to_string(),
            other => other.to_string(),
        };
        let name = name.as_str();
        let &(_, batch_size, flush_interval_ms, numbers, eager) = PROFILES
            .iter()
            .find(|p| p.0 == name)
            .ok_or_else(|| {
                VeloError::Usage(format!(
                    "performance.profile: unknown profile '{given}' (default or standard, low-latency, high-throughput, financial; _ or -)"
                ))
            })?;
        let decimals_as_numbers = match self.decimal_format.as_deref() {
            None => numbers,
            Some("string") => false,
            Some("number") => true,
            Some(other) => {
                return Err(VeloError::Usage(format!(
                    "performance.decimal_format: '{other}' is not string or number"
                )))
            }
        };
        let batch_size = self.batch_size.unwrap_or(batch_size);
        if batch_size == 0 {
            return Err(VeloError::Usage(
                "performance.batch_size must be at least 1".into(),
            ));
        }
        Ok(Performance {
            batch_size,
            flush_interval_ms: self.flush_interval_ms.unwrap_or(flush_interval_ms).max(1),
            eager_batches: self.eager_batches.unwrap_or(eager),
            decimals_as_numbers,
            // Low latency also means a killed job's partitions move on quickly.
            session_timeout: (name == "low-latency").then(|| std::time::Duration::from_secs(6)),
        })
    }
}

/// Overrides from the command line (`velo-sql server --port …`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub port: Option<u16>,
    pub bind: Option<String>,
    pub brokers: Option<String>,
    pub sql_file: Option<PathBuf>,
}

impl Config {
    /// Reads `path` (or the defaults when `None`), then the environment, then `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        let mut config = match path {
            Some(path) => Self::from_yaml_file(path)?,
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        if let Some(port) = overrides.port {
            config.server.port = port;
        }
        if let Some(bind) = &overrides.bind {
            config.server.bind = bind.clone();
        }
        if let Some(brokers) = &overrides.brokers {
            config.kafka.brokers = brokers.clone();
        }
        if let Some(file) = &overrides.sql_file {
            config.sql.file = Some(file.clone());
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a YAML file; unknown keys and wrong types name the key and the line.
    pub fn from_yaml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| VeloError::Usage(format!("cannot read config {}: {e}", path.display())))?;
        Self::from_yaml(&text)
            .map_err(|why| VeloError::Usage(format!("config {}: {why}", path.display())))
    }

    /// Parses YAML text: the deployment guide's spellings are accepted (see
    /// [`super::config_keys`]); keys without effect are listed in `without_effect`.
    pub fn from_yaml(text: &str) -> std::result::Result<Self, String> {
        let mut value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let known = serde_yaml_ng::to_value(Config::default()).map_err(|e| e.to_string())?;
        let without_effect = super::config_keys::normalize(&mut value, &known)?;
        let mut config: Config = match value {
            serde_yaml_ng::Value::Null => Config::default(),
            value => serde_yaml_ng::from_value(value).map_err(|e| e.to_string())?,
        };
        config.without_effect = without_effect;
        config
            .without_effect
            .extend(config.kafka.keys_without_effect());
        Ok(config)
    }

    /// Applies the environment variables `lookup` finds.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<()> {
        fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T>
        where
            T::Err: std::fmt::Display,
        {
            value.trim().parse::<T>().map_err(|e| {
                VeloError::Usage(format!("environment variable {name}='{value}': {e}"))
            })
        }
        self.kafka.apply_env(&lookup)?;
        // Accepted, checked, without effect here (listed in the start-up warning).
        if let Some(v) = lookup("VELO_SERIALIZATION_FORMATS") {
            for format in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                if !["json", "avro", "protobuf"].contains(&format.to_ascii_lowercase().as_str()) {
                    return Err(VeloError::Usage(format!(
                        "environment variable VELO_SERIALIZATION_FORMATS='{v}': '{format}' is not json, avro or protobuf"
                    )));
                }
            }
            self.without_effect.push(
                "VELO_SERIALIZATION_FORMATS (every format is always available; each stream declares its own)".into(),
            );
        }
        if let Some(v) = lookup("VELO_DEFAULT_DECIMAL_PLACES") {
            let places: u8 = parse("VELO_DEFAULT_DECIMAL_PLACES", &v)?;
            if places > 38 {
                return Err(VeloError::Usage(format!(
                    "environment variable VELO_DEFAULT_DECIMAL_PLACES='{v}': at most 38"
                )));
            }
            self.without_effect.push(
                "VELO_DEFAULT_DECIMAL_PLACES (a decimal keeps its column's declared scale, or every digit sampled)".into(),
            );
        }
        if let Some(v) = lookup("VELO_BIND_HOST") {
            self.server.bind = v;
        }
        if let Some(v) = lookup("VELO_ALLOWED_ORIGINS") {
            self.server.cors_origins = v
                .split(',')
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect();
        }
        if let Some(v) = lookup("SQL_FILE") {
            self.sql.file = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("SQL_WORKER_THREADS") {
            self.sql.worker_threads = parse("SQL_WORKER_THREADS", &v)?;
        }
        if let Some(v) = lookup("SQL_MEMORY_LIMIT_MB") {
            self.sql.memory_limit_mb = parse("SQL_MEMORY_LIMIT_MB", &v)?;
        }
        if let Some(v) = lookup("SQL_MAX_JOBS") {
            self.sql.max_jobs = parse("SQL_MAX_JOBS", &v)?;
        }
        if let Some(v) = lookup("SQL_RESTART_POLICY") {
            self.sql.restart_policy = parse("SQL_RESTART_POLICY", &v)?;
        }
        if let Some(v) = lookup("VELO_PERFORMANCE_PROFILE") {
            self.performance.profile = Some(v);
        }
        if let Some(v) = lookup("VELO_API_TOKEN") {
            self.server.auth_token = Some(v);
        }
        if let Some(v) = lookup("SERVER_PORT") {
            self.server.port = parse("SERVER_PORT", &v)?;
        }
        if let Some(v) = lookup("VELO_METRICS_PORT") {
            self.server.metrics_port = Some(parse("VELO_METRICS_PORT", &v)?);
        }
        if let Some(v) = lookup("SERVER_BIND") {
            self.server.bind = v;
        }
        if let Some(v) = lookup("VELO_STATE_DIR").filter(|v| !v.is_empty()) {
            self.state.dir = Some(PathBuf::from(v));
        }
        Ok(())
    }

    fn cors_origins_mix_any(&self) -> bool {
        let origins = &self.server.cors_origins;
        origins.len() > 1 && origins.iter().any(|o| o == "*")
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(&|name| std::env::var(name).ok())
    }

    /// [`Config::validate`] with the environment `lookup` reads.
    pub fn validate_with(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        self.performance()?;
        // Secrets named by variable or file must be there now, not at the first job.
        use super::kafka_config::Role;
        self.kafka.client_properties(Role::Consumer, lookup)?;
        self.schema_registry.access(lookup)?;
        if self.sql.worker_threads == 0 {
            return Err(VeloError::Usage(
                "sql.worker_threads must be at least 1".into(),
            ));
        }
        if self.sql.max_jobs == 0 {
            return Err(VeloError::Usage("sql.max_jobs must be at least 1".into()));
        }
        if self.server.max_concurrent_queries == 0 {
            return Err(VeloError::Usage(
                "server.max_concurrent_queries must be at least 1".into(),
            ));
        }
        if self.server.bind.parse::<std::net::IpAddr>().is_err() {
            return Err(VeloError::Usage(format!(
                "server.bind: '{}' is not an IP address",
                self.server.bind
            )));
        }
        self.kafka.validate()?;
        for origin in &self.server.cors_origins {
            let valid = origin == "*"
                || (origin.parse::<axum::http::HeaderValue>().is_ok()
                    && (origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/'));
            if !valid {
                return Err(VeloError::Usage(format!(
                    "server.cors_origins: '{origin}' is not an origin (scheme://host[:port], no \
                     path) or \"*\" (any origin)"
                )));
            }
        }
        if self.cors_origins_mix_any() {
            return Err(VeloError::Usage(
                "server.cors_origins: \"*\" allows any origin; give it alone".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_config_loads_and_every_key_in_it_has_an_effect() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let config = Config::from_yaml_file(&path).unwrap();
            // The secrets they name by variable, as a deployment would set them.
            config
                .validate_with(&|name| name.starts_with("KAFKA_").then(|| "x".to_string()))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                config.without_effect,
                Vec::<String>::new(),
                "{}",
                path.display()
            );
            seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "kafka-sasl.yaml",
                "kafka-ssl-sasl.yaml",
                "kafka-ssl.yaml",
                "velo-compatibility.yaml",
                "velo-default.yaml",
                "velo-financial.yaml",
                "velo-high-throughput.yaml",
                "velo-low-latency.yaml",
            ]
        );
    }

    /// The deployment guide's own YAML blocks that configure VeloStream (taken from the guide
    /// at test time) all load: each key honoured or listed as without effect, none refused.
    #[test]
    fn the_deployment_guides_config_blocks_load() {
        let guide = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/reference/velostream-deployment-guide.txt");
        let Ok(text) = std::fs::read_to_string(&guide) else {
            eprintln!(
                "SKIPPED: {} is not here (the guide is beside the project only on the team's machines)",
                guide.display()
            );
            return;
        };
        // ```yaml … ``` blocks whose top-level keys are all sections of this configuration
        // (the others are compose files, Kubernetes manifests, Prometheus rules, CI files).
        let sections = [
            "kafka",
            "server",
            "sql",
            "performance",
            "state",
            "storage",
            "jobs",
            "serialization",
            "schema_registry",
            "logging",
            "monitoring",
            "auth",
        ];
        let mut blocks = Vec::new();
        let mut current: Option<(usize, String)> = None;
        for (n, line) in text.lines().enumerate() {
            match (&mut current, line) {
                (None, "```yaml") => current = Some((n + 2, String::new())),
                (Some(_), "```") => blocks.push(current.take().unwrap()),
                (Some((_, body)), line) => {
                    body.push_str(line);
                    body.push('\n');
                }
                _ => {}
            }
        }
        let mut loaded = 0;
        for (line, body) in blocks {
            let Ok(serde_yaml_ng::Value::Mapping(top)) = serde_yaml_ng::from_str(&body) else {
                continue;
            };
            let ours = !top.is_empty()
                && top
                    .keys()
                    .all(|k| k.as_str().is_some_and(|k| sections.contains(&k)));
            if !ours {
                continue;
            }
            let config = Config::from_yaml(&body)
                .unwrap_or_else(|e| panic!("the guide's block at line {line}: {e}\n{body}"));
            config
                .validate_with(&|_| Some("x".to_string()))
                .unwrap_or_else(|e| panic!("the guide's block at line {line}: {e}"));
            loaded += 1;
        }
        // The low-latency, high-throughput, financial and compatibility files, the security and
        // Kafka files, the memory, query, state and tuned-profile examples.
        assert!(
            loaded >= 15,
            "only {loaded} of the guide's config blocks found"
        );
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_names_it() {
        let e = Config::from_yaml("server:\n  prot: 8080\n").unwrap_err();
        assert!(e.contains("unknown key `server.prot`"), "{e}");
        let e = Config::from_yaml("server:\n  port: lots\n").unwrap_err();
        assert!(e.contains("server.port") || e.contains("invalid"), "{e}");
        let mut c = Config::default();
        let e = c
            .apply_env(|n| (n == "SQL_MAX_JOBS").then(|| "many".to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SQL_MAX_JOBS='many'"), "{e}");
        c.performance.profile = Some("turbo".into());
        assert!(c.validate().unwrap_err().to_string().contains("'turbo'"));
    }

    #[test]
    fn profile_names_take_the_guides_spellings_too() {
        let resolve = |name: &str| {
            PerformanceConfig {
                profile: Some(name.into()),
                ..Default::default()
            }
            .resolve()
            .unwrap()
        };
        assert_eq!(resolve("low_latency").batch_size, 256);
        assert_eq!(resolve("LOW-LATENCY").batch_size, 256);
        assert_eq!(resolve("high_throughput").batch_size, 65_536);
        assert_eq!(resolve("standard").batch_size, 8192);
    }

    #[test]
    fn the_checkpoint_interval_is_read_from_state_or_the_seeds_storage_key() {
        assert_eq!(Config::default().checkpoint_interval_ms(), 10_000);
        let seed = Config::from_yaml("storage:\n  checkpoint_interval_ms: 30000\n").unwrap();
        assert_eq!(seed.checkpoint_interval_ms(), 30_000);
        let both = Config::from_yaml(
            "storage:\n  checkpoint_interval_ms: 30000\nstate:\n  checkpoint_interval_ms: 500\n",
        )
        .unwrap();
        assert_eq!(both.checkpoint_interval_ms(), 500);
        let e = Config::from_yaml("storage:\n  state_bakend: rocksdb\n").unwrap_err();
        assert!(e.contains("unknown key `storage.state_bakend`"), "{e}");
        let mut c = Config::default();
        c.apply_env(|n| (n == "VELO_STATE_DIR").then(|| "/srv/velo".to_string()))
            .unwrap();
        assert_eq!(c.jobs_dir(), Path::new("/srv/velo/jobs"));
    }

    #[test]
    fn the_guides_environment_variables_are_honoured_or_named_in_the_warning() {
        let mut c = Config::default();
        c.apply_env(|n| {
            match n {
                "VELO_BIND_HOST" => Some("0.0.0.0"),
                "VELO_ALLOWED_ORIGINS" => Some("https://a.example, https://b.example"),
                "VELO_SERIALIZATION_FORMATS" => Some("json,avro,protobuf"),
                "VELO_DEFAULT_DECIMAL_PLACES" => Some("4"),
                "KAFKA_FETCH_MIN_BYTES" => Some("1000"),
                _ => None,
            }
            .map(str::to_string)
        })
        .unwrap();
        assert_eq!(c.server.bind, "0.0.0.0");
        assert_eq!(
            c.server.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(c.kafka.common.fetch_min_bytes, Some(1000));
        assert_eq!(c.without_effect.len(), 2, "{:?}", c.without_effect);
        assert!(c.without_effect[0].starts_with("VELO_SERIALIZATION_FORMATS"));
        let e = Config::default()
            .apply_env(|n| (n == "VELO_SERIALIZATION_FORMATS").then(|| "json,xml".to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'xml' is not json, avro or protobuf"), "{e}");
    }

    #[test]
    fn the_environment_overrides_the_file_and_flags_override_both() {
        let mut c =
            Config::from_yaml("kafka:\n  brokers: file:9092\nsql:\n  max_jobs: 3\n").unwrap();
        c.apply_env(|n| match n {
            "KAFKA_BROKERS" => Some("env:9092".into()),
            "VELO_PERFORMANCE_PROFILE" => Some("low-latency".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.kafka.brokers, "env:9092");
        assert_eq!(c.sql.max_jobs, 3);
        let p = c.performance.resolve().unwrap();
        assert_eq!((p.batch_size, p.flush_interval_ms), (256, 10));
        c.performance.batch_size = Some(100);
        assert_eq!(c.performance.resolve().unwrap().batch_size, 100);
    }
}
