//! The job layer: what a job is ([`spec`]), how it is built from that ([`build`]), how it runs
//! ([`runner`]: the epoch loop), how its state survives restarts ([`checkpoint`]) and what
//! SQL arriving over HTTP may touch ([`sandbox`]).
//!
//! Every caller goes through here — `velo-sql execute` and `stream`, the server's jobs and
//! ad-hoc queries, the test harness — so there is one path from SQL to sink:
//! a [`JobSpec`] (built by the CLI from flags, by the server from requests) → [`build()`] →
//! [`Runner::run`]. Dependencies point down: CLI and server use this module; it uses the
//! planner, the operators and the connectors.

pub mod build;
pub mod checkpoint;
pub mod input;
pub mod lanes;
pub mod progress;
pub mod runner;
pub mod sandbox;
pub mod spec;

pub use build::{build, group_id_of, run};
pub use input::{InputAdapter, JobInput, TableFollower};
pub use progress::{ErrorCounts, ErrorKind, JobProgress, JobStats};
pub use runner::{Runner, Step};
pub use spec::{
    Delivery, InputSpec, JobHooks, JobSpec, KafkaSpec, OnError, OutputSpec, OutputTarget, ReadSpec,
    RuntimeOptions, SinkFactory, StateSpec,
};
