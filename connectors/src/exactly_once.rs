//! Exactly-once results to Kafka without broker transactions: results are written ahead into
//! checkpoints, and deduplicated after a restore.
//!
//! The results of a checkpoint interval are held back and saved in the checkpoint. Once the
//! checkpoint is durable they are sent, each message tagged with headers naming the job
//! ([`JOB_HEADER`]), the checkpoint ([`CHECKPOINT_HEADER`]) and its number among the
//! checkpoint's results ([`SEQ_HEADER`]). A job restored from checkpoint N sends N's results
//! again, skipping the numbers it finds on the output partitions after the end offsets N
//! recorded; results after N are not in any checkpoint yet, so they were never sent. Whatever
//! moment the job died at, each result reaches the topic once and readers need do nothing.
//! The cost: results appear once per checkpoint interval (as with Kafka transactions read
//! `read_committed`), and a checkpoint holds its interval's results.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{KafkaConnection, OwnedConsumer, QuietContext};
use crate::sink::{
    KafkaSink, MessageTag, RejectedRow, Sink, SinkState, CHECKPOINT_HEADER, JOB_HEADER, SEQ_HEADER,
};
use crate::{ConnectorError, Result};

/// A [`KafkaSink`] delivering each result exactly once through checkpoints.
pub struct ExactlyOnceKafkaSink {
    inner: KafkaSink,
    connection: KafkaConnection,
    job: String,
    /// Results since the last checkpoint.
    pending: Vec<RecordBatch>,
    /// Results of the last checkpoint, until it is complete.
    checkpointed: Vec<RecordBatch>,
    /// Reads the output topic's end offsets.
    metadata: OwnedConsumer<QuietContext>,
}

impl ExactlyOnceKafkaSink {
    /// Wraps `inner`; `job` names the job in every message's tags.
    pub fn new(
        inner: KafkaSink,
        connection: &KafkaConnection,
        job: impl Into<String>,
    ) -> Result<Self> {
        let metadata: BaseConsumer<QuietContext> = connection
            .consumer_config("velo-sql-exactly-once")
            .create_with_context(QuietContext)
            .map_err(|e| ConnectorError::kafka("creating a metadata client", e))?;
        Ok(Self {
            inner,
            connection: connection.clone(),
            job: job.into(),
            pending: Vec::new(),
            checkpointed: Vec::new(),
            metadata: OwnedConsumer::new(metadata, connection.plaintext()),
        })
    }

    /// The end offset of every partition of the output topic.
    fn end_offsets(&self) -> Result<BTreeMap<i32, i64>> {
        let topic = self.inner.topic();
        let mut ends = BTreeMap::new();
        for p in self.connection.partitions(&self.metadata, topic)? {
            let (_, high) = self
                .metadata
                .fetch_watermarks(topic, p, self.connection.timeout)
                .map_err(|e| ConnectorError::kafka(format!("reading the end of '{topic}'"), e))?;
            ends.insert(p, high);
        }
        Ok(ends)
    }

    /// The numbers of checkpoint `id`'s results already on the topic after `from`.
    fn written(&self, id: u64, from: &BTreeMap<i32, i64>) -> Result<HashSet<u64>> {
        let topic = self.inner.topic();
        let until = self.end_offsets()?;
        let mut assignment = TopicPartitionList::new();
        let mut left = BTreeMap::new();
        for (&p, &end) in &until {
            let start = from.get(&p).copied().unwrap_or(0);
            if start < end {
                assignment
                    .add_partition_offset(topic, p, Offset::Offset(start))
                    .map_err(|e| ConnectorError::kafka("building the assignment", e))?;
                left.insert(p, end);
            }
        }
        let mut found = HashSet::new();
        if left.is_empty() {
            return Ok(found);
        }
        let reader: BaseConsumer<QuietContext> = self
            .connection
            .consumer_config("velo-sql-exactly-once")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create_with_context(QuietContext)
            .map_err(|e| ConnectorError::kafka("creating a reader of the output", e))?;
        let reader = OwnedConsumer::new(reader, self.connection.plaintext());
        reader
            .assign(&assignment)
            .map_err(|e| ConnectorError::kafka(format!("reading back '{topic}'"), e))?;
        let id = id.to_string();
        // Gives up only when nothing arrives for a while, however long the read-back is.
        let patience = self.connection.timeout.max(Duration::from_secs(10)) * 3;
        let mut deadline = Instant::now() + patience;
        while !left.is_empty() {
            if Instant::now() > deadline {
                return Err(ConnectorError::Config(format!(
                    "reading back the output topic '{topic}' to find what was written after \
                     the checkpoint: nothing arrived for {} s; partitions left: {left:?}",
                    patience.as_secs()
                )));
            }
            let Some(polled) = reader.poll(Duration::from_millis(200)) else {
                continue;
            };
            deadline = Instant::now() + patience;
            let message = match polled {
                Ok(m) => m,
                // The partition's end: nothing after the last message read.
                Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                    left.remove(&p);
                    continue;
                }
                Err(e) => return Err(ConnectorError::kafka(format!("reading back '{topic}'"), e)),
            };
            let p = message.partition();
            if let Some(&end) = left.get(&p) {
                if message.offset() + 1 >= end {
                    left.remove(&p);
                }
            }
            let Some(headers) = message.headers() else {
                continue;
            };
            let mut job = None;
            let mut checkpoint = None;
            let mut seq = None;
            for h in headers.iter() {
                match h.key {
                    JOB_HEADER => job = h.value,
                    CHECKPOINT_HEADER => checkpoint = h.value,
                    SEQ_HEADER => seq = h.value,
                    _ => {}
                }
            }
            if job == Some(self.job.as_bytes()) && checkpoint == Some(id.as_bytes()) {
                if let Some(n) = seq
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    found.insert(n);
                }
            }
        }
        Ok(found)
    }

    /// Sends checkpoint `id`'s results but those numbered in `skip`, and waits for the acks.
    fn deliver(&mut self, id: u64, batches: &[RecordBatch], skip: &HashSet<u64>) -> Result<()> {
        let mut first_seq = 0;
        for batch in batches {
            let tag = MessageTag {
                job: &self.job,
                checkpoint: id,
                first_seq,
                skip,
            };
            self.inner.send(batch, Some(&tag))?;
            first_seq += batch.num_rows() as u64;
        }
        self.inner.flush()
    }
}

impl Sink for ExactlyOnceKafkaSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() > 0 {
            self.pending.push(batch.clone());
        }
        Ok(())
    }
    fn rows_written(&self) -> u64 {
        self.inner.rows_written()
    }
    fn take_rejected(&mut self) -> Vec<RejectedRow> {
        self.inner.take_rejected()
    }
    fn delivers_with_checkpoints(&self) -> bool {
        true
    }
    fn checkpoint(&mut self, _id: u64) -> Result<SinkState> {
        let ends = self.end_offsets()?;
        self.checkpointed = std::mem::take(&mut self.pending);
        Ok(SinkState {
            position: serde_json::json!({
                "topic": self.inner.topic(),
                "ends": ends,
            }),
            pending: self.checkpointed.clone(),
        })
    }
    fn checkpoint_complete(&mut self, id: u64) -> Result<()> {
        let batches = std::mem::take(&mut self.checkpointed);
        self.deliver(id, &batches, &HashSet::new())
    }
    fn restore(&mut self, id: u64, state: SinkState) -> Result<()> {
        if state.pending.is_empty() {
            return Ok(());
        }
        let ends: BTreeMap<i32, i64> = state
            .position
            .get("ends")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| {
                ConnectorError::Config(format!(
                    "the checkpoint's output offsets are unreadable: {e}"
                ))
            })?
            .unwrap_or_default();
        let written = self.written(id, &ends)?;
        let total: usize = state.pending.iter().map(|b| b.num_rows()).sum();
        tracing::info!(
            "exactly-once output: checkpoint {id} held {total} result(s), {} already on '{}'; \
             sending the rest",
            written.len(),
            self.inner.topic()
        );
        self.deliver(id, &state.pending, &written)
    }
}
