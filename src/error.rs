//! The engine's error type: every failure a user can meet, with what they need to fix it.

use velo_connectors::ConnectorError;

/// Where in a SQL text something went wrong (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SqlLocation {
    pub line: u64,
    pub column: u64,
}

impl std::fmt::Display for SqlLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Errors of the VeloStream engine.
#[derive(Debug, thiserror::Error)]
pub enum VeloError {
    /// The SQL text does not parse, or names something that does not exist.
    #[error("SQL error{}: {message}", location.map(|l| format!(" at {l}")).unwrap_or_default())]
    Sql {
        message: String,
        location: Option<SqlLocation>,
    },
    /// The query parses but cannot run on a stream (and why, and what to write instead).
    #[error("cannot run this query on a stream: {0}")]
    Unsupported(String),
    /// A name in FROM that is neither a declared stream nor an existing topic.
    #[error("unknown table '{name}'{}; streams declared: {declared}; topics on the broker: {topics}", location.map(|l| format!(" at {l}")).unwrap_or_default())]
    UnknownTable {
        name: String,
        location: Option<SqlLocation>,
        declared: String,
        topics: String,
    },
    /// Bad command-line arguments or settings.
    #[error("{0}")]
    Usage(String),
    /// More of something (jobs) than the configured limit allows.
    #[error("{0}")]
    OverLimit(String),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("query execution failed: {0}")]
    Execution(String),
    /// A bad record or row stopped the job (`on_error = fail`).
    #[error("stopped at a bad record (on_error = fail): {0}")]
    BadData(String),
    #[error("DataFusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Reading or writing a job's checkpoints failed.
    #[error("job state: {0}")]
    State(String),
    /// The checkpoint found was written by another query (or for other input schemas).
    #[error("the state in {dir} was written by a different query, so it cannot be restored into this one.\n  state written by: {old}\n  this query:       {new}\nStart with --ignore-state to run this query without the old state (the old checkpoints are moved aside), or give it its own --group-id / --state-dir to keep both")]
    StateMismatch {
        dir: String,
        old: String,
        new: String,
    },
    /// Operator state grew past `--max-state-memory`.
    #[error("operator state holds {bytes} bytes, over the limit of {limit} bytes (--max-state-memory); {operator} holds the most. Shorten windows or the watermark delay, narrow the keys, or raise the limit")]
    StateLimit {
        bytes: u64,
        limit: u64,
        operator: &'static str,
    },
}

impl VeloError {
    /// Process exit code for this error: 2 for mistakes in the query or the command line,
    /// 1 for everything else (broker down, I/O, execution).
    pub fn exit_code(&self) -> i32 {
        match self {
            VeloError::Sql { .. }
            | VeloError::Unsupported(_)
            | VeloError::UnknownTable { .. }
            | VeloError::Usage(_)
            | VeloError::StateMismatch { .. }
            | VeloError::OverLimit(_) => 2,
            VeloError::Connector(ConnectorError::UnknownTopic { .. })
            | VeloError::Connector(ConnectorError::UnknownPartition { .. })
            | VeloError::Connector(ConnectorError::Config(_))
            | VeloError::Connector(ConnectorError::Schema { .. }) => 2,
            _ => 1,
        }
    }

    /// A SQL error at `location`.
    pub fn sql(message: impl Into<String>, location: Option<SqlLocation>) -> Self {
        VeloError::Sql {
            message: message.into(),
            location,
        }
    }
}

/// Result alias of the engine.
pub type Result<T, E = VeloError> = std::result::Result<T, E>;
