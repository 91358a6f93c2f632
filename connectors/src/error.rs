//! The error type of the connectors crate: one enum whose variants carry where things went wrong
//! (topic, partition, offset, file, broker) so the user can act on the message.

use std::path::PathBuf;

/// Errors raised by sources, sinks and codecs.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("Kafka error ({context}): {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("broker {brokers} is not reachable within {timeout_secs}s: {detail}")]
    BrokerUnreachable {
        brokers: String,
        timeout_secs: u64,
        detail: String,
    },
    #[error("topic '{topic}' does not exist on {brokers}; existing topics: {existing}")]
    UnknownTopic {
        topic: String,
        brokers: String,
        existing: String,
    },
    #[error("topic '{topic}' has no partition {partition} (it has {count})")]
    UnknownPartition {
        topic: String,
        partition: i32,
        count: usize,
    },
    #[error("delivery to topic '{topic}' failed for {failed} message(s): {first_error}")]
    Delivery {
        topic: String,
        failed: usize,
        first_error: String,
    },
    #[error("cannot write {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("schema registry {url} is not reachable: {detail}")]
    Registry { url: String, detail: String },
    #[error("schema file {path}: {reason}")]
    Schema { path: String, reason: String },
    #[error("cannot infer a schema: {0}")]
    Inference(String),
    #[error("{0}")]
    Config(String),
}

/// Result alias of this crate.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

impl ConnectorError {
    /// Wraps a Kafka client error with what we were doing. A refused client property is
    /// named without its value (it may be a password).
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        if let rdkafka::error::KafkaError::ClientConfig(_, description, key, value) = &source {
            let description = match value.is_empty() {
                true => description.clone(),
                false => description.replace(value.as_str(), "…"),
            };
            return ConnectorError::Config(format!(
                "{}: the Kafka client refuses the property '{key}': {description}",
                context.into()
            ));
        }
        ConnectorError::Kafka {
            context: context.into(),
            source,
        }
    }
}
