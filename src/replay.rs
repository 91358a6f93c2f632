//! Runs a query over records held in memory, micro-batch by micro-batch, through the real job
//! runner ([`crate::job::Runner`]): each pushed batch goes to an in-memory source, one epoch
//! runs (decode → pipeline → watermark → emit), and a collecting sink hands back what it
//! emitted. Used by the SQL cases harness, the oracle tests and benchmarks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use velo_connectors::memory::{Collected, CollectingSink, MemoryQueue, MemorySource};
use velo_connectors::record::{RecordBatchCollector, SourceBatch};

use crate::catalog::{Catalog, StreamDef};
use crate::error::{Result, VeloError};
use crate::job::checkpoint::Checkpoint;
use crate::job::{JobInput, JobProgress, Runner, RuntimeOptions};
use crate::planner::{new_session, plan_query, QueryRequest};
use crate::sql::parse_script;

/// A planned query fed by hand. The SQL text must declare its input with `CREATE STREAM` and
/// columns; pushed records are that stream's payloads (partition 0, offsets counting from 0,
/// record timestamps `1_700_000_000_000 + offset`, key `k`).
pub struct Replay {
    runner: Runner,
    /// Per input (in pipeline input order): the stream's name and its queue.
    queues: Vec<(String, MemoryQueue)>,
    collected: Collected,
    next_offset: i64,
    /// Records rejected so far (bad JSON, wrong types).
    pub bad_records: usize,
}

impl Replay {
    /// Plans `sql`.
    pub fn plan(sql: &str) -> Result<Self> {
        Self::plan_with(sql, |_| {})
    }

    /// Plans `sql` to run on `lanes` worker lanes where the query can be split (see
    /// [`crate::job::lanes`]), as `--parallelism` does: the same input gives exactly what one
    /// lane gives.
    pub fn plan_on_lanes(sql: &str, lanes: usize) -> Result<Self> {
        Self::plan_inner(sql, |_| {}, lanes)
    }

    /// [`Replay::plan_on_lanes`] with the request changed first, as [`Replay::plan_with`].
    pub fn plan_on_lanes_with(
        sql: &str,
        lanes: usize,
        configure: impl FnOnce(&mut QueryRequest),
    ) -> Result<Self> {
        Self::plan_inner(sql, configure, lanes)
    }

    /// Plans `sql`, letting `configure` change the request first (e.g. a state TTL).
    pub fn plan_with(sql: &str, configure: impl FnOnce(&mut QueryRequest)) -> Result<Self> {
        Self::plan_inner(sql, configure, 1)
    }

    fn plan_inner(
        sql: &str,
        configure: impl FnOnce(&mut QueryRequest),
        lanes: usize,
    ) -> Result<Self> {
        let script = parse_script(sql)?;
        let mut catalog = Catalog::default();
        for decl in &script.streams {
            let mut def = StreamDef::from_decl(decl)?;
            if def.is_table {
                // File tables only: there is no broker here.
                let nowhere = velo_connectors::kafka::KafkaConnection::new(
                    "127.0.0.1:1",
                    Duration::from_secs(1),
                );
                let loaded = crate::table::load(&def, &nowhere)?;
                def.schema = Some(loaded.schema);
                def.rows = Some(std::sync::Arc::new(loaded.rows));
            }
            catalog.insert(def);
        }
        let ctx = new_session()?;
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        let mut request = QueryRequest::from_script(&script);
        configure(&mut request);
        let mut planned = runtime.block_on(plan_query(&ctx, &catalog, &request))?;
        let (adapters, watermark) =
            crate::job::build::scan_inputs(planned.scans, Duration::from_secs(86_400))?;
        let mut queues = Vec::new();
        let mut inputs = Vec::new();
        for input in adapters {
            let queue = MemoryQueue::default();
            let source = MemorySource::new(input.name.clone(), queue.clone());
            queues.push((input.name.clone(), queue));
            inputs.push(JobInput::new(
                input.name,
                Box::new(source),
                input.adapter,
                input.event_time,
            ));
        }
        let split = crate::job::lanes::Split::of(&planned.pipeline).filter(|_| lanes > 1);
        let extra = match split {
            Some(split) => runtime.block_on(crate::job::build::plan_lanes(
                &ctx,
                &catalog,
                &request,
                &mut planned.pipeline,
                split,
                lanes,
                Duration::from_secs(86_400),
            ))?,
            None => crate::job::lanes::Lanes::default(),
        };
        let collected: Collected = Arc::new(Mutex::new(Vec::new()));
        let mut runner = Runner::new(
            inputs,
            planned.pipeline,
            Box::new(CollectingSink::new(collected.clone())),
            watermark,
            RuntimeOptions {
                flush_interval: Duration::ZERO,
                ..RuntimeOptions::default()
            },
            Arc::new(AtomicBool::new(false)),
            Arc::new(JobProgress::new("replay")),
        );
        runner.lanes = extra;
        Ok(Self {
            runner,
            queues,
            collected,
            next_offset: 0,
            bad_records: 0,
        })
    }

    /// The worker lanes the query runs on (1 when it is not split).
    pub fn lanes(&self) -> usize {
        1 + self.runner.lanes.extra.len()
    }

    /// Runs one micro-batch of payloads of the (first) input; returns what the query emitted.
    pub fn push(&mut self, payloads: &[&[u8]]) -> Result<Vec<RecordBatch>> {
        let batch = self.collect(0, payloads);
        self.push_input(0, &batch)
    }

    /// Runs one micro-batch of payloads of the stream `stream` (a query reading several).
    /// Every input reading that stream gets the batch, as every reference of a stream in a
    /// query reads its topic (a self-join reads it twice).
    pub fn push_to(&mut self, stream: &str, payloads: &[&[u8]]) -> Result<Vec<RecordBatch>> {
        let inputs: Vec<usize> = (0..self.queues.len())
            .filter(|&i| self.queues[i].0 == stream)
            .collect();
        let Some(&first) = inputs.first() else {
            return Err(VeloError::Usage(format!(
                "the query does not read '{stream}'"
            )));
        };
        let batch = self.collect(first, payloads);
        for &input in &inputs[1..] {
            self.queues[input].1.push(batch.clone());
        }
        self.push_input(first, &batch)
    }

    fn collect(&mut self, input: usize, payloads: &[&[u8]]) -> SourceBatch {
        let mut collector = RecordBatchCollector::new(payloads.len());
        for payload in payloads {
            let offset = self.next_offset;
            self.next_offset += 1;
            collector.push(
                Some(payload),
                Some(b"k"),
                &self.queues[input].0,
                0,
                offset,
                Some(1_700_000_000_000 + offset),
                std::iter::empty(),
            );
        }
        collector.finish()
    }

    /// Runs one micro-batch of input `input` (in the order the pipeline numbers its inputs), as
    /// a source hands it over (encoded or already decoded).
    pub fn push_input(&mut self, input: usize, batch: &SourceBatch) -> Result<Vec<RecordBatch>> {
        self.queues[input].1.push(batch.clone());
        self.runner.step()?;
        self.bad_records = self.runner.progress.bad_records.load(Ordering::Relaxed) as usize;
        Ok(self.take())
    }

    fn take(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut *self.collected.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Ends the input: the watermark goes to +∞ and everything held is emitted.
    pub fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        self.runner.end_of_input()?;
        Ok(self.take())
    }

    /// True when the query can emit nothing more (a reached LIMIT).
    pub fn is_finished(&self) -> bool {
        self.runner.pipeline.is_finished()
    }

    /// Writes a checkpoint to `dir` every `interval` (at micro-batch boundaries), as a job
    /// does: for measuring what checkpoints cost.
    pub fn checkpoint_every(&mut self, dir: &std::path::Path, interval: Duration) -> Result<()> {
        self.runner.checkpoints = Some(crate::job::checkpoint::Checkpointer {
            store: Box::new(crate::job::checkpoint::LocalStore::open(dir)?),
            interval,
            keep: 3,
            next_id: 1,
            job: "replay".into(),
            fingerprint: String::new(),
            query: String::new(),
            acknowledge: crate::job::checkpoint::Acknowledge::WithCheckpoints,
            last: std::time::Instant::now(),
        });
        Ok(())
    }

    /// Writes a checkpoint now (see [`Replay::checkpoint_every`]); returns its id.
    pub fn checkpoint_now(&mut self) -> Result<u64> {
        self.runner.checkpoint()
    }

    /// The job's state as a checkpoint, round-tripped through its on-disk encoding.
    pub fn snapshot(&mut self) -> Result<Checkpoint> {
        let checkpoint = self.runner.take_checkpoint(1)?;
        let files: std::collections::HashMap<String, Vec<u8>> =
            checkpoint.encode()?.into_iter().collect();
        Checkpoint::decode(|name| {
            files
                .get(name)
                .cloned()
                .ok_or_else(|| VeloError::State(format!("no file {name}")))
        })
    }

    /// Restores a [`Replay::snapshot`] (from a replay of the same SQL) and continues numbering
    /// records at `next_offset`.
    pub fn restore(&mut self, state: &Checkpoint, next_offset: i64) -> Result<()> {
        self.next_offset = next_offset;
        self.runner.restore(state)
    }

    /// The job's live counters (checkpoints written and the time they took among them).
    pub fn progress(&self) -> &crate::job::JobProgress {
        &self.runner.progress
    }

    /// Bad records and rows so far, by kind.
    pub fn errors(&self) -> crate::job::ErrorCounts {
        self.runner.progress.error_counts()
    }

    /// The operators' counters and state size now.
    pub fn metrics(&self) -> crate::operators::OperatorMetrics {
        self.runner.operator_metrics()
    }

    /// The offset the next pushed record gets.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
}
