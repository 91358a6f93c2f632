//! The [`Source`] trait: where records come from, one poll at a time.
//!
//! Implementations: [`crate::kafka::KafkaSource`], the built-in generators ([`crate::generator`])
//! and [`crate::memory::MemorySource`]. A source returns records with their metadata; where it
//! starts and what it acknowledges are given to it as [`Positions`] (the next offset to read,
//! per partition) by the job that owns it: the job knows which records' effects are safe.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::record::SourceBatch;
use crate::Result;

/// The next offset to read, per partition: the position after the last record handled.
pub type Positions = BTreeMap<i32, i64>;

/// The most payload and key bytes one micro-batch collects, whatever its record count: large
/// records end a batch early, far below Arrow's 2 GiB limit on one array's values.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Asked by a source before a consumer group takes partitions away from it: the positions
/// to commit first (see [`Source::before_revoke`]). It may wait until the job has finished the
/// records it holds.
pub type RevokeHook = std::sync::Arc<dyn Fn() -> Positions + Send + Sync>;

/// How far a read has got in one partition; `total - read` is what is left (the lag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionProgress {
    pub partition: i32,
    /// A bounded read: records read so far; a continuous one: the partition's position (the
    /// next offset it reads).
    pub read: i64,
    /// A bounded read: records it will take in all; a continuous one: the partition's end
    /// offset.
    pub total: i64,
}

/// A supplier of record batches.
pub trait Source: Send {
    /// Waits up to `max_wait` and returns up to `max_records` records (possibly none).
    /// Returns `None` once a bounded source has nothing more to give.
    fn poll_batch(&mut self, max_records: usize, max_wait: Duration)
        -> Result<Option<SourceBatch>>;

    /// Starts each partition named in `positions` at that offset instead of where the source
    /// would start by itself (a consumer group's committed offset): a job restored from a
    /// checkpoint continues where the checkpoint's state ends. Call before the first poll.
    fn seek(&mut self, positions: &Positions) -> Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        Err(crate::ConnectorError::Config(format!(
            "{} cannot start at given offsets",
            self.describe()
        )))
    }

    /// Acknowledges every record before `positions` (Kafka: commits them for the consumer
    /// group). Sources without acknowledgement ignore it.
    fn commit(&mut self, _positions: &Positions) -> Result<()> {
        Ok(())
    }

    /// Partitions whose log now starts again below the job's position (a topic deleted and
    /// created again), found since the last call: the job forgets its positions for them, and
    /// their records are read as new.
    fn take_reset_partitions(&mut self) -> Vec<i32> {
        Vec::new()
    }

    /// Problems met reading that are not records (a file that cannot be read, a CSV row
    /// with too many fields), each naming where, since the last call. The job counts and
    /// reports them as bad input.
    fn take_errors(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// How far the read has got in each partition (empty when it cannot tell). May ask the
    /// broker: call it about once a second, not per poll.
    fn partition_progress(&self) -> Vec<PartitionProgress> {
        Vec::new()
    }

    /// True when nothing outside the job remembers how far this source was read (files; a
    /// topic has its consumer group's commits): a restored job always starts it at the
    /// checkpoint's positions.
    fn positions_only_in_checkpoints(&self) -> bool {
        false
    }

    /// A short description for logs and errors.
    fn describe(&self) -> String;

    /// True when the source ends by itself (a snapshot, a file, a finite generator).
    fn is_bounded(&self) -> bool;

    /// The partitions this source reads now (those with records to read, for a snapshot), or
    /// `None` when it cannot tell. Event time waits for every one of them.
    fn assigned_partitions(&self) -> Option<Vec<i32>> {
        None
    }

    /// Records between the read position and the end of the partitions read (consumer lag),
    /// when the source can tell. May ask the broker: call it about once a second, not per poll.
    fn lag(&self) -> Option<i64> {
        None
    }

    /// The end offset (the next offset to be written) of each partition this source follows,
    /// asked of the broker now; `None` when it cannot tell. Asks the broker: call it rarely.
    fn end_offsets(&self) -> Option<Positions> {
        None
    }

    /// A member of a consumer group calls `hook` when a rebalance takes partitions from it,
    /// before it lets them go, and commits the positions it returns (of the partitions it
    /// still owns): a job reading ahead (see [`crate::prefetch`]) finishes the batch it holds
    /// and has it committed, so that the next owner does not read it again. Sources without
    /// rebalances ignore it.
    fn before_revoke(&mut self, _hook: RevokeHook) {}

    /// The job has finished every batch it took and will not poll for a while (it is
    /// paused): a source reading ahead need not wait for it.
    fn idle(&mut self) {}
}
