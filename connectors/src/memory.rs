//! A source fed from memory and a sink collecting into memory: how tests and the SQL-case
//! harness run queries through the real job runner without a broker.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;

use crate::record::SourceBatch;
use crate::sink::Sink;
use crate::source::{Positions, Source};
use crate::Result;

/// Batches queued by hand, handed out one per poll.
#[derive(Clone, Default)]
pub struct MemoryQueue {
    batches: Arc<Mutex<VecDeque<SourceBatch>>>,
}

impl MemoryQueue {
    /// Queues one batch for the next poll.
    pub fn push(&self, batch: SourceBatch) {
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(batch);
    }
}

/// A [`Source`] reading a [`MemoryQueue`]; unbounded (it ends when the job is finished by
/// hand), partitions as the queued batches say.
pub struct MemorySource {
    queue: MemoryQueue,
    name: String,
}

impl MemorySource {
    /// A source named `name` reading `queue`.
    pub fn new(name: impl Into<String>, queue: MemoryQueue) -> Self {
        Self {
            queue,
            name: name.into(),
        }
    }
}

impl Source for MemorySource {
    fn poll_batch(&mut self, _max: usize, _wait: Duration) -> Result<Option<SourceBatch>> {
        let next = self
            .queue
            .batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        Ok(Some(next.unwrap_or_else(|| {
            crate::record::RecordBatchCollector::new(0).finish()
        })))
    }

    fn seek(&mut self, _positions: &Positions) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        format!("memory '{}'", self.name)
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn assigned_partitions(&self) -> Option<Vec<i32>> {
        None
    }
}

/// Result batches collected by a [`CollectingSink`].
pub type Collected = Arc<Mutex<Vec<RecordBatch>>>;

/// A [`Sink`] keeping every result batch in memory.
pub struct CollectingSink {
    batches: Collected,
    rows: u64,
}

impl CollectingSink {
    /// A sink appending to `batches`.
    pub fn new(batches: Collected) -> Self {
        Self { batches, rows: 0 }
    }
}

impl Sink for CollectingSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(batch.clone());
        Ok(())
    }

    fn rows_written(&self) -> u64 {
        self.rows
    }
}
