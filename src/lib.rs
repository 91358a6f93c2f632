//! VeloStream: streaming SQL over Kafka topics on Arrow micro-batches.
//!
//! The layers, in the order data meets them:
//! - [`sql`]: the SQL front end (statements, `CREATE STREAM`, column lists, error locations);
//! - [`catalog`]: what names in FROM mean (declared streams, topics, generators);
//! - [`planner`]: DataFusion plans the query once; the plan becomes a pipeline of
//!   [`operators`];
//! - [`runtime`]: the epoch loop (poll → decode → operators → sink → commit), with the
//!   [`watermark`] tracking event-time progress;
//! - [`cli`]: the `velo-sql` command line;
//! - [`hot_path`]: the decode → pipeline → encode path without I/O, for benchmarks;
//! - [`replay`]: a query fed from memory, micro-batch by micro-batch, for tests.
//!
//! Codecs, sources and sinks live in the `velo-connectors` crate; extra SQL functions in
//! `velo-udfs`.

pub mod catalog;
pub mod cli;
pub mod error;
pub mod hot_path;
pub mod operators;
pub mod planner;
pub mod replay;
pub mod runtime;
pub mod server;
pub mod sql;
pub mod table;
pub mod watermark;

pub use error::{Result, VeloError};
