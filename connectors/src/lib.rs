//! Sources, sinks and codecs of VeloStream.
//!
//! This crate owns everything that touches bytes outside the engine: reading records from Kafka
//! and the built-in generators ([`source`]), turning payload bytes into Arrow columns and back
//! ([`codec`]), and writing results to Kafka, stdout or files ([`sink`], [`format`]). It knows
//! nothing about SQL: the engine hands it Arrow schemas and `RecordBatch`es.

pub mod avro_file;
pub mod codec;
pub mod error;
pub mod exactly_once;
pub mod file_source;
pub mod format;
pub mod generator;
pub mod kafka;
pub mod memory;
pub mod parquet_file;
pub mod part_files;
pub mod prefetch;
pub mod record;
pub mod registry;
pub mod sink;
pub mod source;

pub use error::{ConnectorError, Result};
