//! The [`Source`] trait: where records come from, one poll at a time.
//!
//! Implementations: [`crate::kafka::KafkaSource`] and the built-in generators
//! ([`crate::generator`]). A source returns records with their metadata; it commits only when
//! told to, after the records' results have reached the sink.

use std::time::Duration;

use crate::record::SourceBatch;
use crate::Result;

/// A supplier of record batches.
pub trait Source: Send {
    /// Waits up to `max_wait` and returns up to `max_records` records (possibly none).
    /// Returns `None` once a bounded source has nothing more to give.
    fn poll_batch(&mut self, max_records: usize, max_wait: Duration)
        -> Result<Option<SourceBatch>>;

    /// Marks every record returned so far as processed (Kafka: commits the offsets).
    fn commit(&mut self) -> Result<()> {
        Ok(())
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
}
