//! A job's inputs: each stream's source with the adapter that turns its batches into the
//! pipeline's scan layout ([`InputAdapter`]: decode, metadata columns, records without an
//! event time), and the table topics followed for lookup joins ([`TableFollower`]).

use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, RecordBatch, RecordBatchOptions,
};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Int32Type, TimeUnit, TimestampMillisecondType};
use velo_connectors::codec::PayloadDecoder;
use velo_connectors::record::{Payload, SourceBatch};
use velo_connectors::source::{Positions, Source};

use super::progress::ErrorKind;
use crate::error::{Result, VeloError};
use crate::operators::Pipeline;
use crate::planner::{ScanColumn, ScanLayout};

/// Turns source batches into the batches the pipeline expects (see [`ScanLayout`]).
pub struct InputAdapter {
    layout: ScanLayout,
    decoder: Option<PayloadDecoder>,
    /// The event-time column (index in the scan schema): a record without one is bad.
    event_time: Option<usize>,
    /// The masks the last adapted batch went through (records decoded, then records with an
    /// event time): scan row → source record (see [`InputAdapter::source_index`]).
    last_masks: Vec<arrow::array::BooleanArray>,
}

/// A record that could not be turned into a row.
#[derive(Debug, Clone)]
pub struct BadRecord {
    pub index: usize,
    pub kind: ErrorKind,
    pub reason: String,
}

impl InputAdapter {
    /// An adapter producing batches laid out as `layout` says.
    pub fn new(layout: ScanLayout) -> Result<Self> {
        Ok(Self {
            decoder: None,
            layout,
            event_time: None,
            last_masks: Vec::new(),
        })
    }

    /// The index in the last adapted source batch of the record scan row `row` came from.
    pub fn source_index(&self, row: usize) -> Option<usize> {
        crate::operators::trace_back(&self.last_masks, row)
    }

    /// How the scan rows of the last adapted source batch map to its records (see
    /// [`crate::operators::trace_back`]).
    pub(crate) fn masks(&self) -> &[arrow::array::BooleanArray] {
        &self.last_masks
    }

    /// Declares scan column `index` the event time: records whose event time is NULL are bad
    /// records (reported, dead-lettered), never placed in a window.
    pub fn set_event_time(&mut self, index: usize) {
        self.event_time = Some(index);
    }

    /// Whether the query reads metadata column `name` of this input.
    pub fn reads_metadata(&self, name: &str) -> bool {
        self.layout
            .columns
            .iter()
            .any(|c| matches!(c, ScanColumn::Metadata(m) if m == name))
    }

    /// The schema of produced batches.
    pub fn schema(&self) -> &arrow::datatypes::SchemaRef {
        &self.layout.schema
    }

    /// Decodes `batch` and assembles the scan columns, returning them with the source partition
    /// of each row. Records that fail are returned in `bad` and left out.
    /// A record whose event time is later than `horizon` (milliseconds) is bad too.
    pub fn adapt_with_partitions(
        &mut self,
        batch: &SourceBatch,
        bad: &mut Vec<BadRecord>,
        horizon: Option<i64>,
    ) -> Result<(RecordBatch, Int32Array)> {
        self.last_masks.clear();
        let (payload, keep) = match &batch.payload {
            Payload::Decoded(b) => (b.clone(), None),
            Payload::Encoded(bytes) => {
                if self.decoder.is_none() {
                    self.decoder = Some(self.layout.stream.decoder(self.layout.payload_schema()?)?);
                }
                let decoder = self.decoder.as_mut().expect("decoder was just created");
                let decoded = decoder.decode(bytes)?;
                bad.extend(decoded.failures.into_iter().map(|f| BadRecord {
                    index: f.index,
                    kind: ErrorKind::Decode,
                    reason: f.reason,
                }));
                (decoded.batch, decoded.keep)
            }
        };
        let columns = self
            .layout
            .columns
            .iter()
            .zip(self.layout.schema.fields())
            .map(|(column, field)| -> Result<ArrayRef> {
                let array = match column {
                    ScanColumn::Payload(name) => {
                        payload.column_by_name(name).cloned().ok_or_else(|| {
                            VeloError::Execution(format!(
                                "the source did not produce column '{name}'"
                            ))
                        })?
                    }
                    ScanColumn::Metadata(name) => batch.meta.column(name, keep.as_ref())?,
                };
                if array.data_type() != field.data_type() {
                    return Ok(arrow::compute::cast(&array, field.data_type())?);
                }
                Ok(array)
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(payload.num_rows()));
        let partitions = match &keep {
            Some(mask) => arrow::compute::filter(&batch.meta.partition, mask)?
                .as_primitive::<Int32Type>()
                .clone(),
            None => batch.meta.partition.clone(),
        };
        let scan =
            RecordBatch::try_new_with_options(self.layout.schema.clone(), columns, &options)?;
        let checked = match self.event_time {
            Some(column) => self.check_event_times(column, &scan, horizon)?,
            None => None,
        };
        match checked {
            Some((has_time, problems)) => {
                // Rows without a believable event time: bad records, reported by their source
                // index.
                let source_index: Vec<usize> = match &keep {
                    Some(mask) => (0..mask.len()).filter(|&i| mask.value(i)).collect(),
                    None => (0..scan.num_rows()).collect(),
                };
                bad.extend(problems.into_iter().map(|(row, reason)| BadRecord {
                    index: source_index[row],
                    kind: ErrorKind::EventTime,
                    reason,
                }));
                bad.sort_by_key(|b| b.index);
                self.last_masks.extend(keep.clone());
                self.last_masks.push(has_time.clone());
                Ok((
                    arrow::compute::filter_record_batch(&scan, &has_time)?,
                    arrow::compute::filter(&partitions, &has_time)?
                        .as_primitive::<Int32Type>()
                        .clone(),
                ))
            }
            None => {
                self.last_masks.extend(keep);
                Ok((scan, partitions))
            }
        }
    }

    /// The rows of `scan` whose event time (column `column`) is NULL, out of range or later
    /// than `horizon` (milliseconds): `None` when there are none (checked on whole columns),
    /// else the rows to keep and each bad row with its reason.
    #[allow(clippy::type_complexity)]
    fn check_event_times(
        &self,
        column: usize,
        scan: &RecordBatch,
        horizon: Option<i64>,
    ) -> Result<Option<(BooleanArray, Vec<(usize, String)>)>> {
        let raw = scan.column(column);
        // As milliseconds; a value that does not fit (seconds past ±292 million years) is NULL.
        let millis = arrow::compute::cast_with_options(
            raw,
            &DataType::Timestamp(TimeUnit::Millisecond, None),
            &CastOptions {
                safe: true,
                ..Default::default()
            },
        )?;
        let millis = millis.as_primitive::<TimestampMillisecondType>();
        let ahead = horizon.filter(|h| arrow::compute::max(millis).is_some_and(|max| max > *h));
        if millis.null_count() == 0 && ahead.is_none() {
            return Ok(None);
        }
        let name = self.layout.schema.field(column).name();
        let mut problems = Vec::new();
        let keep: BooleanArray = (0..millis.len())
            .map(|row| {
                let reason = if raw.is_null(row) {
                    format!("the event time '{name}' is NULL")
                } else if millis.is_null(row) {
                    format!("the event time '{name}' is out of range")
                } else if ahead.is_some_and(|h| millis.value(row) > h) {
                    format!(
                        "the event time '{name}' ({}) is later than {}, the latest believable \
                         now (the watermark or the clock, whichever is later, plus the max \
                         event-time skew)",
                        format_millis(millis.value(row)),
                        format_millis(horizon.unwrap_or_default())
                    )
                } else {
                    return Some(true);
                };
                problems.push((row, reason));
                Some(false)
            })
            .collect();
        Ok(Some((keep, problems)))
    }
}

/// `ms` since the epoch as an RFC 3339 time, or the number when it is not a date.
fn format_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A table topic followed while the job runs: its changes go to a lookup join.
pub struct TableFollower {
    pub table: String,
    pub source: Box<dyn Source>,
    pub decoder: PayloadDecoder,
    /// The feed number of the lookup join holding the table (see [`crate::planner::TableFeed`]).
    pub feed: usize,
    /// The next offset of each partition of the table topic after the changes applied.
    pub positions: Positions,
}

impl TableFollower {
    /// Applies what arrived on the table topic since the last poll (waits for nothing);
    /// returns the updates that could not be decoded (logged and left out), by key and reason.
    pub(crate) fn poll(&mut self, pipeline: &mut Pipeline) -> Result<Vec<String>> {
        self.poll_waiting(pipeline, Duration::ZERO)
    }

    /// Applies every change the table topic holds now, before the job reads its first
    /// records: after a restart the changes written while the job was down are then joined
    /// with, not applied some micro-batches late. Gives up after `within` (a warning says so)
    /// and returns the updates that could not be decoded.
    pub(crate) fn catch_up(
        &mut self,
        pipeline: &mut Pipeline,
        deadline: std::time::Instant,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<Vec<String>> {
        let Some(ends) = self.source.end_offsets() else {
            tracing::warn!(
                "could not ask where the topic of table '{}' ends: the job starts with the \
                 table as it is and applies changes as they come",
                self.table
            );
            return self.poll(pipeline);
        };
        let mut failures = Vec::new();
        // Polls in a row that gave nothing: the end offset can lie past the last record (a
        // transaction marker, a gap), which no poll reaches.
        let mut empty = 0;
        loop {
            // A partition the table has no position for (added to the topic after the table
            // was loaded) is followed from where it ended when the follower opened.
            let behind = ends
                .iter()
                .any(|(p, &end)| self.positions.get(p).is_some_and(|&at| at < end));
            if !behind || stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(failures);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || empty == 10 {
                tracing::warn!(
                    "table '{}' has not reached the end of its topic ({} polls in a row gave \
                     nothing, or the time to catch up ran out): the job starts with the rows \
                     read so far and applies the rest as it comes",
                    self.table,
                    empty
                );
                return Ok(failures);
            }
            let before = self.positions.clone();
            let wait = left.min(Duration::from_millis(200));
            failures.extend(self.poll_waiting(pipeline, wait)?);
            empty = match self.positions == before {
                true => empty + 1,
                false => 0,
            };
        }
    }

    fn poll_waiting(&mut self, pipeline: &mut Pipeline, wait: Duration) -> Result<Vec<String>> {
        let Some(batch) = self.source.poll_batch(8192, wait)? else {
            return Ok(Vec::new());
        };
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut changes = crate::table::Changes::default();
        changes.fold(&batch);
        let (values, keys, deleted) = changes.split_keyed();
        let decoded = self.decoder.decode(&values)?;
        let failures: Vec<String> = decoded
            .failures
            .iter()
            .map(|f| {
                format!(
                    "an update of table '{}' (key '{}'): {}",
                    self.table,
                    String::from_utf8_lossy(&keys[f.index]),
                    f.reason
                )
            })
            .collect();
        if !pipeline.apply_table_changes(self.feed, &decoded.batch, &deleted)? {
            return Err(VeloError::Execution(format!(
                "no join holds the table '{}'",
                self.table
            )));
        }
        batch.meta.advance(&mut self.positions, batch.len());
        Ok(failures)
    }
}

/// One input of a job: a stream's source and the adapter laying its batches out for the
/// pipeline.
pub struct JobInput {
    /// The stream's name in the query.
    pub name: String,
    pub source: Box<dyn Source>,
    pub adapter: InputAdapter,
    /// The scan column holding event time, when the watermark follows this input.
    pub event_time: Option<usize>,
    /// True once the source has ended (a bounded input read to its end).
    pub ended: bool,
    /// The next offset of each partition after the records processed so far.
    pub positions: Positions,
}

impl JobInput {
    /// An input reading `source` through `adapter` (told its event-time column already, see
    /// [`InputAdapter::set_event_time`]); `event_time` drives the watermark.
    pub fn new(
        name: impl Into<String>,
        source: Box<dyn Source>,
        adapter: InputAdapter,
        event_time: Option<usize>,
    ) -> Self {
        Self {
            name: name.into(),
            source,
            adapter,
            event_time,
            ended: false,
            positions: Positions::new(),
        }
    }
}
