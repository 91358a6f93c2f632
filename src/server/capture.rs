//! Sinks the server puts behind a query: [`CaptureSink`] keeps a job's recent result rows (for
//! `/jobs/{id}/output`, and live for `?follow=true`) while passing every batch on to the job's
//! own sink; [`CollectSink`] gathers an ad-hoc query's result; [`ChannelSink`] streams a
//! followed query's rows to its HTTP response.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tokio::sync::broadcast;
use velo_connectors::codec::{DecimalFormat, Encoded, EncodedRows, JsonEncoder, RowEncoder};
use velo_connectors::sink::{RejectedRow, Sink, SinkState};
use velo_connectors::{ConnectorError, Result};

/// A job's recent result rows as JSON lines, kept as the encoded batches they came in (no
/// allocation per row), and a channel carrying new batches as they come.
pub struct OutputBuffer {
    chunks: Mutex<Chunks>,
    capacity: usize,
    live: broadcast::Sender<Arc<EncodedRows>>,
    /// The columns of the rows (set when the job's sink is built), to read them back typed.
    schema: Mutex<Option<SchemaRef>>,
}

#[derive(Default)]
struct Chunks {
    batches: VecDeque<Arc<EncodedRows>>,
    rows: usize,
}

impl OutputBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            chunks: Mutex::default(),
            capacity: capacity.max(1),
            live: broadcast::channel(256).0,
            schema: Mutex::default(),
        }
    }

    /// The last `n` rows kept, as typed columns (decimals, timestamps and nested values as the
    /// job produced them); `None` before the job has started.
    pub fn recent_batch(&self, n: usize) -> Result<Option<RecordBatch>> {
        let Some(schema) = self.schema.lock().expect("schema lock").clone() else {
            return Ok(None);
        };
        let rows = self.recent(n);
        let payloads =
            arrow::array::BinaryArray::from_iter_values(rows.iter().map(|r| r.as_bytes()));
        let decoded = velo_connectors::codec::JsonDecoder::new(schema)?.decode(&payloads)?;
        if let Some(failure) = decoded.failures.first() {
            return Err(ConnectorError::Config(format!(
                "an output row does not read back: {}",
                failure.reason
            )));
        }
        Ok(Some(decoded.batch))
    }

    /// Keeps a batch of rows; drops the oldest batches no longer needed for `capacity` rows.
    fn push(&self, rows: EncodedRows) {
        if rows.is_empty() {
            return;
        }
        let rows = Arc::new(rows);
        {
            let mut chunks = self.chunks.lock().expect("output buffer lock");
            chunks.rows += rows.len();
            chunks.batches.push_back(rows.clone());
            while chunks
                .batches
                .front()
                .is_some_and(|f| chunks.rows - f.len() >= self.capacity)
            {
                let gone = chunks.batches.pop_front().expect("front exists");
                chunks.rows -= gone.len();
            }
        }
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(rows);
        }
    }

    /// The last `n` rows kept (at most the capacity), oldest first.
    pub fn recent(&self, n: usize) -> Vec<String> {
        let n = n.min(self.capacity);
        let chunks = self.chunks.lock().expect("output buffer lock");
        let mut out: Vec<String> = Vec::with_capacity(n);
        'newest_first: for batch in chunks.batches.iter().rev() {
            for i in (0..batch.len()).rev() {
                if out.len() == n {
                    break 'newest_first;
                }
                out.push(String::from_utf8_lossy(batch.row(i)).into_owned());
            }
        }
        out.reverse();
        out
    }

    /// New batches of rows from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EncodedRows>> {
        self.live.subscribe()
    }
}

/// Copies every result row into an [`OutputBuffer`] and passes the batch to `inner` (the job's
/// topic), if any.
pub struct CaptureSink {
    inner: Option<Box<dyn Sink>>,
    buffer: Arc<OutputBuffer>,
    encoder: JsonEncoder,
    rows: u64,
}

impl CaptureSink {
    /// Keeps `schema`-shaped rows in `buffer`, passing them on to `inner`.
    pub fn new(inner: Option<Box<dyn Sink>>, buffer: Arc<OutputBuffer>, schema: SchemaRef) -> Self {
        *buffer.schema.lock().expect("schema lock") = Some(schema);
        Self {
            inner,
            buffer,
            encoder: JsonEncoder::new(DecimalFormat::String),
            rows: 0,
        }
    }
}

impl CaptureSink {
    /// Keeps the rows of `batch` (written to `inner` already).
    fn capture(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut encoded = EncodedRows::default();
        self.encoder.encode(batch, &mut encoded)?;
        self.buffer.push(encoded);
        self.rows += batch.num_rows() as u64;
        Ok(())
    }
}

impl Sink for CaptureSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Some(inner) = self.inner.as_mut() {
            inner.write(batch)?;
        }
        self.capture(batch)
    }

    fn row_encoder(&self) -> Option<RowEncoder> {
        self.inner.as_ref().and_then(|s| s.row_encoder())
    }

    fn write_encoded(&mut self, batch: &RecordBatch, encoded: Encoded) -> Result<()> {
        match self.inner.as_mut() {
            Some(inner) => inner.write_encoded(batch, encoded)?,
            None => return self.write(batch),
        }
        self.capture(batch)
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.as_mut().map_or(Ok(()), |s| s.flush())
    }

    fn finish(&mut self) -> Result<()> {
        self.inner.as_mut().map_or(Ok(()), |s| s.finish())
    }

    fn rows_written(&self) -> u64 {
        self.inner.as_ref().map_or(self.rows, |s| s.rows_written())
    }

    fn take_rejected(&mut self) -> Vec<RejectedRow> {
        self.inner
            .as_mut()
            .map(|s| s.take_rejected())
            .unwrap_or_default()
    }

    fn delivers_with_checkpoints(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|s| s.delivers_with_checkpoints())
    }

    fn checkpoint(&mut self, id: u64) -> Result<SinkState> {
        self.inner
            .as_mut()
            .map_or(Ok(SinkState::default()), |s| s.checkpoint(id))
    }

    fn checkpoint_complete(&mut self, id: u64) -> Result<()> {
        self.inner
            .as_mut()
            .map_or(Ok(()), |s| s.checkpoint_complete(id))
    }

    fn restore(&mut self, id: u64, state: SinkState) -> Result<()> {
        match self.inner.as_mut() {
            Some(s) => s.restore(id, state),
            None => Ok(()),
        }
    }
}

/// The result of an ad-hoc query: its schema and batches.
#[derive(Default)]
pub struct Collected {
    pub schema: Option<SchemaRef>,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
}

/// Gathers an ad-hoc query's result, failing once it holds more than `max_rows` rows.
pub struct CollectSink {
    pub collected: Arc<Mutex<Collected>>,
    max_rows: usize,
}

impl CollectSink {
    pub fn new(schema: SchemaRef, collected: Arc<Mutex<Collected>>, max_rows: usize) -> Self {
        collected.lock().expect("collect lock").schema = Some(schema);
        Self {
            collected,
            max_rows,
        }
    }
}

impl Sink for CollectSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut c = self.collected.lock().expect("collect lock");
        c.rows += batch.num_rows();
        if c.rows > self.max_rows {
            return Err(ConnectorError::Config(format!(
                "the result has more than {} rows; add a LIMIT, or follow the query",
                self.max_rows
            )));
        }
        c.batches.push(batch.clone());
        Ok(())
    }

    fn rows_written(&self) -> u64 {
        self.collected.lock().expect("collect lock").rows as u64
    }
}

/// Sends each result row (a JSON line) to a followed query's response; fails once the client
/// has gone, which stops the query.
pub struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<String>,
    encoder: JsonEncoder,
    encoded: EncodedRows,
    rows: u64,
}

impl ChannelSink {
    pub fn new(tx: tokio::sync::mpsc::Sender<String>) -> Self {
        Self {
            tx,
            encoder: JsonEncoder::new(DecimalFormat::String),
            encoded: EncodedRows::default(),
            rows: 0,
        }
    }
}

impl Sink for ChannelSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.encoded.clear();
        self.encoder.encode(batch, &mut self.encoded)?;
        for row in self.encoded.iter() {
            self.tx
                .blocking_send(String::from_utf8_lossy(row).into_owned())
                .map_err(|_| ConnectorError::Config("the client stopped following".into()))?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn rows_written(&self) -> u64 {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: &[&str]) -> EncodedRows {
        let mut r = EncodedRows::default();
        for v in values {
            r.bytes.extend_from_slice(v.as_bytes());
            r.ends.push(r.bytes.len());
        }
        r
    }

    #[test]
    fn the_output_buffer_keeps_the_last_rows_across_batches() {
        let buffer = OutputBuffer::new(3);
        buffer.push(rows(&["a", "b"]));
        buffer.push(rows(&["c", "d"]));
        buffer.push(rows(&["e"]));
        assert_eq!(buffer.recent(10), ["c", "d", "e"]);
        assert_eq!(buffer.recent(2), ["d", "e"]);
        assert_eq!(
            buffer.chunks.lock().unwrap().batches.len(),
            2,
            "batch [a, b] is gone"
        );
        let mut live = buffer.subscribe();
        buffer.push(rows(&["f"]));
        assert_eq!(live.try_recv().unwrap().row(0), b"f");
    }
}
