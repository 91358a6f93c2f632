//! A batch of records as a source hands it to the engine, before and after decoding.
//!
//! Payloads and Kafka metadata are kept column by column (Arrow builders), so reading a batch
//! allocates per batch, not per record. The metadata columns that every stream exposes
//! (`_key`, `_topic`, `_partition`, `_offset`, `_timestamp`, `_headers`) are defined here, once.

use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, Int32Array, Int32Builder, Int64Array,
    Int64Builder, MapArray, MapBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondArray, TimestampMillisecondBuilder,
};
use arrow::compute::filter;
use arrow::datatypes::{DataType, Field, Fields, TimeUnit};

/// Name of the record key column (UTF-8; invalid UTF-8 is replaced lossily).
pub const KEY_COLUMN: &str = "_key";
/// Name of the source topic column.
pub const TOPIC_COLUMN: &str = "_topic";
/// Name of the source partition column.
pub const PARTITION_COLUMN: &str = "_partition";
/// Name of the source offset column.
pub const OFFSET_COLUMN: &str = "_offset";
/// Name of the Kafka record timestamp column (milliseconds since the epoch, UTC).
pub const TIMESTAMP_COLUMN: &str = "_timestamp";
/// Name of the record headers column (map of header name to UTF-8 value).
pub const HEADERS_COLUMN: &str = "_headers";

/// The metadata columns every stream exposes, in this order, after its payload columns.
pub fn metadata_fields() -> Vec<Field> {
    vec![
        Field::new(KEY_COLUMN, DataType::Utf8, true),
        Field::new(TOPIC_COLUMN, DataType::Utf8, false),
        Field::new(PARTITION_COLUMN, DataType::Int32, false),
        Field::new(OFFSET_COLUMN, DataType::Int64, false),
        Field::new(
            TIMESTAMP_COLUMN,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new(HEADERS_COLUMN, headers_type(), true),
    ]
}

/// True when `name` is one of the metadata columns.
pub fn is_metadata_column(name: &str) -> bool {
    matches!(
        name,
        KEY_COLUMN
            | TOPIC_COLUMN
            | PARTITION_COLUMN
            | OFFSET_COLUMN
            | TIMESTAMP_COLUMN
            | HEADERS_COLUMN
    )
}

fn headers_type() -> DataType {
    let entries = Fields::from(vec![
        Field::new("keys", DataType::Utf8, false),
        Field::new("values", DataType::Utf8, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    )
}

/// Where one record came from: used in error messages and dead-letter headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for RecordPosition {
    /// `topic 'T' partition P offset O`; a file source's records (their "topic" is a path,
    /// which no topic name can be) read `file PATH row N` (data rows counted from 1).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.topic.contains('/') {
            return write!(f, "file {} row {}", self.topic, self.offset + 1);
        }
        write!(
            f,
            "topic '{}' partition {} offset {}",
            self.topic, self.partition, self.offset
        )
    }
}

/// Metadata of a batch of records, one entry per record, as Arrow arrays.
#[derive(Debug, Clone)]
pub struct RecordMeta {
    pub key: BinaryArray,
    pub topic: StringArray,
    pub partition: Int32Array,
    pub offset: Int64Array,
    pub timestamp: TimestampMillisecondArray,
    pub headers: MapArray,
}

impl RecordMeta {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.offset.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves `positions` past the first `records` records: each partition's next offset
    /// becomes one after the highest offset read from it.
    pub fn advance(&self, positions: &mut crate::source::Positions, records: usize) {
        let partitions = self.partition.values();
        let offsets = self.offset.values();
        for i in 0..records.min(self.len()) {
            let next = offsets[i] + 1;
            let entry = positions.entry(partitions[i]).or_insert(next);
            *entry = (*entry).max(next);
        }
    }

    /// Position of record `i`.
    pub fn position(&self, i: usize) -> RecordPosition {
        RecordPosition {
            topic: self.topic.value(i).to_string(),
            partition: self.partition.value(i),
            offset: self.offset.value(i),
        }
    }

    /// The metadata column `name` (see [`metadata_fields`]) for the records kept by `keep`
    /// (all when `None`).
    pub fn column(
        &self,
        name: &str,
        keep: Option<&BooleanArray>,
    ) -> arrow::error::Result<ArrayRef> {
        let full: ArrayRef = match name {
            KEY_COLUMN => {
                // Keys are bytes on the wire; the column is text, like ksqlDB's and Flink's
                // default key format. Only this column is converted, and only when asked for.
                let mut builder =
                    StringBuilder::with_capacity(self.key.len(), self.key.value_data().len());
                for key in self.key.iter() {
                    match key {
                        Some(bytes) => builder.append_value(String::from_utf8_lossy(bytes)),
                        None => builder.append_null(),
                    }
                }
                Arc::new(builder.finish())
            }
            TOPIC_COLUMN => Arc::new(self.topic.clone()),
            PARTITION_COLUMN => Arc::new(self.partition.clone()),
            OFFSET_COLUMN => Arc::new(self.offset.clone()),
            TIMESTAMP_COLUMN => Arc::new(self.timestamp.clone()),
            HEADERS_COLUMN => Arc::new(self.headers.clone()),
            other => {
                return Err(arrow::error::ArrowError::SchemaError(format!(
                    "'{other}' is not a metadata column"
                )))
            }
        };
        match keep {
            Some(mask) => filter(&full, mask),
            None => Ok(full),
        }
    }
}

/// What a source hands over per poll: the records' payloads and their metadata.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Encoded payloads (one entry per record; null for a tombstone), still to be decoded.
    Encoded(BinaryArray),
    /// Payloads already in columns (generators produce these).
    Decoded(RecordBatch),
}

/// One poll's worth of records.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    pub payload: Payload,
    pub meta: RecordMeta,
}

impl SourceBatch {
    /// Bytes of payload read: the encoded bytes, or the columns' size for decoded payloads.
    pub fn payload_bytes(&self) -> u64 {
        match &self.payload {
            Payload::Encoded(bytes) => bytes.values().len() as u64,
            Payload::Decoded(batch) => batch.get_array_memory_size() as u64,
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Records `offset..offset + len` (zero-copy).
    pub fn slice(&self, offset: usize, len: usize) -> SourceBatch {
        let m = &self.meta;
        SourceBatch {
            payload: match &self.payload {
                Payload::Encoded(bytes) => Payload::Encoded(bytes.slice(offset, len)),
                Payload::Decoded(batch) => Payload::Decoded(batch.slice(offset, len)),
            },
            meta: RecordMeta {
                key: m.key.slice(offset, len),
                topic: m.topic.slice(offset, len),
                partition: m.partition.slice(offset, len),
                offset: m.offset.slice(offset, len),
                timestamp: m.timestamp.slice(offset, len),
                headers: m.headers.slice(offset, len),
            },
        }
    }
}

/// Collects records into a [`SourceBatch`] without allocating per record.
pub struct RecordBatchCollector {
    payload: BinaryBuilder,
    key: BinaryBuilder,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    headers: MapBuilder<StringBuilder, StringBuilder>,
}

impl Default for RecordBatchCollector {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl RecordBatchCollector {
    /// A collector sized for about `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Self {
            payload: BinaryBuilder::with_capacity(capacity, capacity * 128),
            key: BinaryBuilder::with_capacity(capacity, capacity * 16),
            topic: StringBuilder::with_capacity(capacity, capacity * 16),
            partition: Int32Builder::with_capacity(capacity),
            offset: Int64Builder::with_capacity(capacity),
            timestamp: TimestampMillisecondBuilder::with_capacity(capacity),
            headers: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
        }
    }

    /// Number of records collected so far.
    pub fn len(&self) -> usize {
        arrow::array::ArrayBuilder::len(&self.offset)
    }

    /// True when nothing was collected yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of payloads and keys collected so far.
    pub fn bytes(&self) -> usize {
        self.payload.values_slice().len() + self.key.values_slice().len()
    }

    /// Adds one record. `headers` yields (name, value) pairs.
    #[allow(clippy::too_many_arguments)]
    pub fn push<'h>(
        &mut self,
        payload: Option<&[u8]>,
        key: Option<&[u8]>,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) {
        self.payload.append_option(payload);
        self.key.append_option(key);
        self.topic.append_value(topic);
        self.partition.append_value(partition);
        self.offset.append_value(offset);
        self.timestamp.append_option(timestamp_ms);
        for (name, value) in headers {
            self.headers.keys().append_value(name);
            match value {
                Some(v) => self
                    .headers
                    .values()
                    .append_value(String::from_utf8_lossy(v)),
                None => self.headers.values().append_null(),
            }
        }
        // A map entry per record; cannot fail because keys and values were appended in pairs.
        self.headers
            .append(true)
            .expect("header keys and values are appended in pairs");
    }

    /// Finishes the batch of encoded payloads and resets the collector.
    pub fn finish(&mut self) -> SourceBatch {
        let payload = self.payload.finish();
        // The next batch is likely the same size: room for it now, not by doubling as it grows.
        self.payload = BinaryBuilder::with_capacity(payload.len(), payload.values().len());
        SourceBatch {
            payload: Payload::Encoded(payload),
            meta: self.finish_meta(),
        }
    }

    fn finish_meta(&mut self) -> RecordMeta {
        RecordMeta {
            key: self.key.finish(),
            topic: self.topic.finish(),
            partition: self.partition.finish(),
            offset: self.offset.finish(),
            timestamp: self.timestamp.finish(),
            headers: self.headers.finish(),
        }
    }

    /// Metadata for `n` records produced in-process (generators): no key, no headers, the given
    /// pseudo-topic, partition 0, offsets from `first_offset`, and the given timestamps.
    pub fn generated_meta(topic: &str, first_offset: i64, timestamps_ms: &[i64]) -> RecordMeta {
        let n = timestamps_ms.len();
        let mut collector = RecordBatchCollector::new(n);
        for (i, ts) in timestamps_ms.iter().enumerate() {
            collector.key.append_null();
            collector.topic.append_value(topic);
            collector.partition.append_value(0);
            collector.offset.append_value(first_offset + i as i64);
            collector.timestamp.append_value(*ts);
            collector
                .headers
                .append(true)
                .expect("an empty map entry is always valid");
        }
        collector.finish_meta()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collector_counts_the_bytes_it_holds() {
        let mut c = RecordBatchCollector::new(4);
        assert_eq!(c.bytes(), 0);
        c.push(
            Some(b"abcd"),
            Some(b"k1"),
            "t",
            0,
            0,
            None,
            std::iter::empty(),
        );
        c.push(None, None, "t", 0, 1, None, std::iter::empty());
        assert_eq!(c.bytes(), 6);
        let batch = c.finish();
        assert_eq!(batch.len(), 2);
        assert_eq!(c.bytes(), 0, "finish starts a new batch");
    }
}
