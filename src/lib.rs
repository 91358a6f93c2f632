//! VeloStream: streaming SQL over Kafka topics on Arrow micro-batches.
//!
//! The layers, in the order data meets them:
//! - [`sql`]: the SQL front end (statements, `CREATE STREAM`, column lists, error locations);
//! - [`catalog`]: what names in FROM mean (declared streams, topics, generators);
//! - [`planner`]: DataFusion plans the query once; the plan becomes a pipeline of
//!   [`operators`];
//! - [`job`]: a job as a value (spec), built into a runner (the epoch loop: poll → decode →
//!   operators → sink → acknowledge) with checkpoints, the [`watermark`] tracking event-time
//!   progress;
//! - [`server`] and [`cli`]: the HTTP server and the `velo-sql` command line, both building
//!   job specs;
//! - [`replay`]: a query fed from memory through the real runner, for tests.
//!
//! Codecs, sources and sinks live in the `velo-connectors` crate; extra SQL functions in
//! `velo-udfs`.

pub mod bench;
pub mod catalog;
pub mod cli;
pub mod entry;
pub mod error;
pub mod job;
pub mod multi;
pub mod operators;
pub mod planner;
pub mod replay;
pub mod server;
pub mod sql;
pub mod table;
pub mod watermark;

pub use error::{Result, VeloError};
