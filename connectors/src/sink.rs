//! The [`Sink`] trait and its implementations: formatted text to stdout or a file, and one Kafka
//! message per result row.
//!
//! `flush` is the acknowledgement point of an epoch: when it returns, everything written so far
//! is durable (written out, or acknowledged by the broker), so the source may commit.
//!
//! Sinks take part in checkpoints: [`Sink::checkpoint`] gives what the sink must find again
//! after a restart (a file's committed length, results held back for exactly-once delivery),
//! [`Sink::checkpoint_complete`] says the checkpoint holding it is durable, and
//! [`Sink::restore`] continues from it. A [`FileSink`] truncates its file back to the length of
//! the checkpoint it restores, so rows written after that checkpoint (and produced again from
//! its offsets) appear once.

use std::fs::File;
use std::io::{BufWriter, Stdout, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};

use crate::codec::avro::{AvroEncoder, EncodeFailure};
use crate::codec::protobuf::ProtobufEncoder;
use crate::codec::{DecimalFormat, Encoded, EncodedRows, JsonEncoder, RowEncoder};
use crate::format::{FormattedWriter, OutputFormat};
use crate::kafka::{KafkaConnection, KafkaProducer};
use crate::{ConnectorError, Result};
use rdkafka::message::{Header, OwnedHeaders};

/// A destination for result batches.
pub trait Sink: Send {
    /// Takes one batch of results.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// How this sink encodes rows, when others may do it for it (see [`RowEncoder`]); `None`:
    /// only the sink encodes.
    fn row_encoder(&self) -> Option<RowEncoder> {
        None
    }
    /// Takes one batch of results whose rows this sink's [`Sink::row_encoder`] encoded.
    fn write_encoded(&mut self, batch: &RecordBatch, encoded: Encoded) -> Result<()> {
        let _ = encoded;
        self.write(batch)
    }
    /// Makes everything written so far durable; called at the end of every epoch.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// Sends everything written so far on its way without waiting for it to be delivered:
    /// true when all of it is delivered (what [`Sink::flush`] waits for). A job acknowledging
    /// per micro-batch with eager batches commits its input only once this says so.
    fn send_written(&mut self) -> Result<bool> {
        self.flush().map(|()| true)
    }
    /// Ends the output (closes documents) after the last batch.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
    /// Rows written so far.
    fn rows_written(&self) -> u64;
    /// Result rows the sink could not encode since the last call (e.g. a decimal too wide for
    /// the output schema), as JSON, with the reason; for the dead-letter queue.
    fn take_rejected(&mut self) -> Vec<RejectedRow> {
        Vec::new()
    }
    /// True when the sink's output only counts once a checkpoint holds it (a file truncated
    /// back on restore, exactly-once Kafka output): the job then acknowledges its input with
    /// checkpoints, never per micro-batch.
    fn delivers_with_checkpoints(&self) -> bool {
        false
    }
    /// The sink's part of checkpoint `id`, taken after [`Sink::flush`] at a micro-batch
    /// boundary.
    fn checkpoint(&mut self, _id: u64) -> Result<SinkState> {
        Ok(SinkState::default())
    }
    /// Checkpoint `id` is durable: deliver what it holds back.
    fn checkpoint_complete(&mut self, _id: u64) -> Result<()> {
        Ok(())
    }
    /// Continues from the state saved in checkpoint `id`, before the first write. A sink that
    /// keeps no position ignores one (the job's output changed since the checkpoint); the job
    /// hands results held back in it to the sink before anything else.
    fn restore(&mut self, _id: u64, _state: SinkState) -> Result<()> {
        Ok(())
    }
}

/// What a sink keeps in a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct SinkState {
    /// Where the output stood (JSON; `null` for none): a file's length, a topic's end offsets.
    pub position: serde_json::Value,
    /// Results produced but not delivered yet.
    pub pending: Vec<RecordBatch>,
}

/// A result row a sink could not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    /// The row as a JSON object.
    pub row: Vec<u8>,
    pub reason: String,
    /// Where it was going.
    pub topic: String,
}

/// Formatted text to standard output or a file (see [`FormattedWriter`]).
pub struct TextSink<W: Write + Send> {
    writer: FormattedWriter<W>,
    /// The file written, for error messages (`None` for stdout).
    path: Option<PathBuf>,
}

impl TextSink<BufWriter<Stdout>> {
    /// Writes `schema`-shaped results to stdout in `format`.
    pub fn stdout(
        format: OutputFormat,
        bounded: bool,
        schema: SchemaRef,
        decimals: DecimalFormat,
    ) -> Self {
        Self {
            writer: FormattedWriter::new(
                BufWriter::new(std::io::stdout()),
                format,
                bounded,
                schema,
                decimals,
            ),
            path: None,
        }
    }
}

impl<W: Write + Send> TextSink<W> {
    fn with_path<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| match (e, &self.path) {
            (ConnectorError::Io(source), Some(path)) => ConnectorError::File {
                path: path.clone(),
                source,
            },
            (other, _) => other,
        })
    }
}

impl<W: Write + Send> Sink for TextSink<W> {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let r = self.writer.write(batch);
        self.with_path(r)
    }
    fn row_encoder(&self) -> Option<RowEncoder> {
        self.writer.row_encoder()
    }
    fn write_encoded(&mut self, batch: &RecordBatch, encoded: Encoded) -> Result<()> {
        let r = self.writer.write_encoded(batch, &encoded.rows);
        self.with_path(r)
    }
    fn flush(&mut self) -> Result<()> {
        let r = self.writer.flush();
        self.with_path(r)
    }
    fn finish(&mut self) -> Result<()> {
        let r = self.writer.finish();
        self.with_path(r)
    }
    fn rows_written(&self) -> u64 {
        self.writer.rows_written()
    }
}

/// Results to a file. A continuous job's file survives restarts: each checkpoint records the
/// file's length (after an fsync), and a restored job truncates the file back to it before
/// appending, so the rows written after the checkpoint (produced again from its offsets) are
/// not repeated and the rows before it are never erased. A job that is not restored starts
/// the file afresh.
pub struct FileSink {
    text: TextSink<BufWriter<File>>,
    path: PathBuf,
    continuous: bool,
    /// False until the file's start is settled: truncated (a fresh run) or cut back to a
    /// checkpoint's length (a restored run).
    settled: bool,
}

impl FileSink {
    /// Opens `path` for results (created when missing). Its content stays until the first
    /// write, which empties it, unless [`Sink::restore`] comes first.
    pub fn open(
        path: &Path,
        format: OutputFormat,
        bounded: bool,
        schema: SchemaRef,
        decimals: DecimalFormat,
    ) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|source| ConnectorError::File {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            text: TextSink {
                writer: FormattedWriter::new(
                    BufWriter::new(file),
                    format,
                    bounded,
                    schema,
                    decimals,
                ),
                path: Some(path.to_path_buf()),
            },
            path: path.to_path_buf(),
            continuous: !bounded,
            settled: false,
        })
    }

    /// Opens `path` to append results after what it holds (a continuous job that keeps no
    /// checkpoints: at-least-once, nothing erased).
    pub fn append(
        path: &Path,
        format: OutputFormat,
        schema: SchemaRef,
        decimals: DecimalFormat,
    ) -> Result<Self> {
        let mut sink = Self::open(path, format, false, schema, decimals)?;
        let bytes = std::fs::metadata(path)
            .map_err(|e| sink.file_error(e))?
            .len();
        sink.cut_to(bytes)?;
        if bytes > 0 {
            sink.text.writer.continue_document();
        }
        sink.continuous = false;
        Ok(sink)
    }

    fn file_error(&self, source: std::io::Error) -> ConnectorError {
        ConnectorError::File {
            path: self.path.clone(),
            source,
        }
    }

    /// Cuts the file to `bytes` and writes on from there.
    fn cut_to(&mut self, bytes: u64) -> Result<()> {
        use std::io::Seek;
        let path = self.path.clone();
        let error = |source| ConnectorError::File {
            path: path.clone(),
            source,
        };
        let file = self.text.writer.get_mut().get_mut();
        file.set_len(bytes).map_err(error)?;
        file.seek(std::io::SeekFrom::Start(bytes)).map_err(error)?;
        self.settled = true;
        Ok(())
    }

    fn settle(&mut self) -> Result<()> {
        if self.settled {
            return Ok(());
        }
        self.cut_to(0)
    }
}

impl Sink for FileSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.settle()?;
        self.text.write(batch)
    }
    fn row_encoder(&self) -> Option<RowEncoder> {
        self.text.row_encoder()
    }
    fn write_encoded(&mut self, batch: &RecordBatch, encoded: Encoded) -> Result<()> {
        self.settle()?;
        self.text.write_encoded(batch, encoded)
    }
    fn flush(&mut self) -> Result<()> {
        self.settle()?;
        self.text.flush()
    }
    fn finish(&mut self) -> Result<()> {
        self.settle()?;
        self.text.finish()
    }
    fn rows_written(&self) -> u64 {
        self.text.rows_written()
    }
    fn delivers_with_checkpoints(&self) -> bool {
        self.continuous
    }
    fn checkpoint(&mut self, _id: u64) -> Result<SinkState> {
        self.flush()?;
        let file = self.text.writer.get_mut().get_mut();
        let synced = file.sync_data().and_then(|()| file.metadata());
        let bytes = synced.map_err(|e| self.file_error(e))?.len();
        Ok(SinkState {
            position: serde_json::json!({
                "file": self.path.display().to_string(),
                "bytes": bytes,
            }),
            pending: Vec::new(),
        })
    }
    fn restore(&mut self, _id: u64, state: SinkState) -> Result<()> {
        let same_file = state
            .position
            .get("file")
            .and_then(|f| f.as_str())
            .is_some_and(|f| {
                let canonical = |p: &Path| std::fs::canonicalize(p).ok();
                canonical(Path::new(f)).is_some()
                    && canonical(Path::new(f)) == canonical(&self.path)
            });
        let bytes = state.position.get("bytes").and_then(|b| b.as_u64());
        let (Some(bytes), true) = (bytes, same_file) else {
            // The checkpoint's output was not this file: it starts afresh.
            tracing::warn!(
                "the checkpoint's output was not the file {} (the output changed): writing it \
                 afresh",
                self.path.display()
            );
            return Ok(());
        };
        let now = std::fs::metadata(&self.path)
            .map_err(|e| self.file_error(e))?
            .len();
        if now < bytes {
            return Err(ConnectorError::Config(format!(
                "the output file {} holds {now} bytes, fewer than the {bytes} its checkpoint \
                 committed: it was changed outside the job (move it away, or start with \
                 --ignore-state)",
                self.path.display()
            )));
        }
        self.cut_to(bytes)?;
        if bytes > 0 {
            self.text.writer.continue_document();
        }
        Ok(())
    }
}

/// How rows are encoded into Kafka messages.
pub enum MessageFormat {
    /// One JSON object per message.
    Json,
    /// One CSV line (no header) per message.
    Csv,
    /// One Avro datum per message.
    Avro(AvroEncoder),
    /// One Protobuf message per message.
    Protobuf(ProtobufEncoder),
}

impl MessageFormat {
    /// Appends one message per row of `batch` to `out` (`json` writes the JSON rows); returns
    /// the rows that could not be encoded, whose place in `out` is empty.
    pub fn encode(
        &self,
        batch: &RecordBatch,
        json: &JsonEncoder,
        out: &mut EncodedRows,
    ) -> Result<Vec<EncodeFailure>> {
        match self {
            MessageFormat::Json => json.encode(batch, out).map(|()| Vec::new()),
            MessageFormat::Avro(encoder) => encoder.encode(batch, out),
            MessageFormat::Protobuf(encoder) => encoder.encode(batch, out),
            MessageFormat::Csv => {
                let mut text = Vec::new();
                arrow_csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut text)
                    .write(batch)?;
                // Quoted CSV fields may hold newlines, so split rows on record boundaries
                // outside quotes.
                let mut in_quotes = false;
                let mut start = 0;
                for (i, &b) in text.iter().enumerate() {
                    match b {
                        b'"' => in_quotes = !in_quotes,
                        b'\n' if !in_quotes => {
                            out.bytes.extend_from_slice(&text[start..i]);
                            out.ends.push(out.bytes.len());
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                Ok(Vec::new())
            }
        }
    }

    /// The message format for a textual output format, or an error for formats that are
    /// documents. (Avro needs a schema: build [`MessageFormat::Avro`] directly.)
    pub fn for_output(format: OutputFormat) -> Result<Self> {
        match format {
            OutputFormat::Json | OutputFormat::JsonLines => Ok(MessageFormat::Json),
            OutputFormat::Csv => Ok(MessageFormat::Csv),
            other => Err(ConnectorError::Config(format!(
                "format '{other}' cannot be written to Kafka; use json, csv or avro"
            ))),
        }
    }
}

/// One Kafka message per result row, optionally keyed by a column.
pub struct KafkaSink {
    producer: KafkaProducer,
    topic: String,
    format: Arc<MessageFormat>,
    json: JsonEncoder,
    key_column: Option<usize>,
    rows: EncodedRows,
    rows_written: u64,
    /// Rows that could not be encoded (e.g. a decimal too wide for the output schema).
    rejected: u64,
    /// The rows of the current batch the encoder rejected, ascending.
    failed_rows: Vec<usize>,
    /// Rejected rows not yet taken by [`Sink::take_rejected`].
    rejected_rows: Vec<RejectedRow>,
}

impl KafkaSink {
    /// A sink producing to `topic`. `key_column` names the column whose value (as text) keys
    /// each message.
    pub fn new(
        connection: &KafkaConnection,
        topic: impl Into<String>,
        format: MessageFormat,
        schema: &SchemaRef,
        key_column: Option<&str>,
        decimals: DecimalFormat,
    ) -> Result<Self> {
        let key_column = key_column
            .map(|name| {
                schema.index_of(name).map_err(|_| {
                    ConnectorError::Config(format!(
                        "output key column '{name}' is not in the result; columns: {}",
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .transpose()?;
        Ok(Self {
            producer: KafkaProducer::new(connection)?,
            topic: topic.into(),
            format: Arc::new(format),
            json: JsonEncoder::new(decimals),
            key_column,
            rows: EncodedRows::default(),
            rows_written: 0,
            rejected: 0,
            failed_rows: Vec::new(),
            rejected_rows: Vec::new(),
        })
    }

    /// Encodes the messages of `batch` into `self.rows`.
    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut rows = std::mem::take(&mut self.rows);
        rows.clear();
        let failures = self.format.encode(batch, &self.json, &mut rows)?;
        self.take_encoded(batch, Encoded { rows, failures })
    }

    /// Takes `encoded`, the messages of `batch`, to send; its failures become rejected rows.
    fn take_encoded(&mut self, batch: &RecordBatch, encoded: Encoded) -> Result<()> {
        let Encoded { rows, failures } = encoded;
        debug_assert_eq!(rows.len(), batch.num_rows(), "a message each");
        self.rows = rows;
        self.failed_rows = failures.iter().map(|f| f.row).collect();
        for failure in &failures {
            let mut json = EncodedRows::default();
            self.json.encode(&batch.slice(failure.row, 1), &mut json)?;
            self.rejected_rows.push(RejectedRow {
                row: json.bytes,
                reason: failure.reason.clone(),
                topic: self.topic.clone(),
            });
        }
        self.rejected += self.failed_rows.len() as u64;
        Ok(())
    }
}

/// Tags naming each message of an exactly-once output: the job, the checkpoint whose results
/// it belongs to, and its number among them (see [`crate::exactly_once`]).
pub struct MessageTag<'a> {
    pub job: &'a str,
    pub checkpoint: u64,
    /// The number of the batch's first row.
    pub first_seq: u64,
    /// Numbers already on the topic: not sent again.
    pub skip: &'a std::collections::HashSet<u64>,
}

/// Header naming the job that wrote a tagged message.
pub const JOB_HEADER: &str = "velo.job";
/// Header naming the checkpoint a tagged message belongs to.
pub const CHECKPOINT_HEADER: &str = "velo.checkpoint";
/// Header holding a tagged message's number within its checkpoint.
pub const SEQ_HEADER: &str = "velo.seq";

impl KafkaSink {
    /// Sends one message per row of `batch` (tagged when `tag` says so); returns how many were
    /// sent.
    pub fn send(&mut self, batch: &RecordBatch, tag: Option<&MessageTag<'_>>) -> Result<u64> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        self.encode(batch)?;
        self.send_encoded(batch, tag)
    }

    /// Sends the messages of `batch` encoded last (see [`KafkaSink::send`]).
    fn send_encoded(&mut self, batch: &RecordBatch, tag: Option<&MessageTag<'_>>) -> Result<u64> {
        let keys: Option<ArrayRef> = match self.key_column {
            Some(i) => Some(match batch.column(i).data_type() {
                DataType::Utf8 => batch.column(i).clone(),
                _ => cast(batch.column(i), &DataType::Utf8)?,
            }),
            None => None,
        };
        let keys = keys.as_ref().map(|k| {
            k.as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .expect("cast to Utf8 gives a StringArray")
        });
        let mut sent = 0;
        for row in 0..self.rows.len() {
            if self.failed_rows.binary_search(&row).is_ok() {
                continue; // rejected by the encoder
            }
            let headers = match tag {
                Some(tag) => {
                    let seq = tag.first_seq + row as u64;
                    if tag.skip.contains(&seq) {
                        continue;
                    }
                    let checkpoint = tag.checkpoint.to_string();
                    let seq = seq.to_string();
                    Some(
                        OwnedHeaders::new_with_capacity(3)
                            .insert(Header {
                                key: JOB_HEADER,
                                value: Some(tag.job),
                            })
                            .insert(Header {
                                key: CHECKPOINT_HEADER,
                                value: Some(checkpoint.as_str()),
                            })
                            .insert(Header {
                                key: SEQ_HEADER,
                                value: Some(seq.as_str()),
                            }),
                    )
                }
                None => None,
            };
            let key = keys.and_then(|k| (!k.is_null(row)).then(|| k.value(row).as_bytes()));
            let topic = &self.topic;
            let payload = self.rows.row(row);
            self.producer.send(topic, key, payload, headers)?;
            sent += 1;
        }
        self.rows_written += sent;
        Ok(sent)
    }

    /// The topic written.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.send(batch, None).map(|_| ())
    }
    fn row_encoder(&self) -> Option<RowEncoder> {
        let (format, json) = (self.format.clone(), self.json.clone());
        Some(Arc::new(move |batch, out| format.encode(batch, &json, out)))
    }
    fn write_encoded(&mut self, batch: &RecordBatch, encoded: Encoded) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.take_encoded(batch, encoded)?;
        self.send_encoded(batch, None).map(|_| ())
    }
    fn flush(&mut self) -> Result<()> {
        self.producer.flush()
    }
    fn send_written(&mut self) -> Result<bool> {
        self.producer.send_queued()
    }
    fn finish(&mut self) -> Result<()> {
        self.producer.flush()
    }
    fn rows_written(&self) -> u64 {
        self.rows_written
    }
    fn take_rejected(&mut self) -> Vec<RejectedRow> {
        std::mem::take(&mut self.rejected_rows)
    }
}
