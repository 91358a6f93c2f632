//! The [`Sink`] trait and its implementations: formatted text to stdout or a file, and one Kafka
//! message per result row.
//!
//! `flush` is the acknowledgement point of an epoch: when it returns, everything written so far
//! is durable (written out, or acknowledged by the broker), so the source may commit.

use std::fs::File;
use std::io::{BufWriter, Stdout, Write};
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};

use crate::codec::avro::{AvroEncoder, EncodeFailure};
use crate::codec::protobuf::ProtobufEncoder;
use crate::codec::{DecimalFormat, EncodedRows, JsonEncoder};
use crate::format::{FormattedWriter, OutputFormat};
use crate::kafka::{KafkaConnection, KafkaProducer};
use crate::{ConnectorError, Result};

/// A destination for result batches.
pub trait Sink: Send {
    /// Takes one batch of results.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Makes everything written so far durable; called at the end of every epoch.
    fn flush(&mut self) -> Result<()> {
        Ok(())
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

impl TextSink<BufWriter<File>> {
    /// Creates (or truncates) `path` and writes results to it in `format`.
    pub fn create(
        path: &Path,
        format: OutputFormat,
        bounded: bool,
        schema: SchemaRef,
        decimals: DecimalFormat,
    ) -> Result<Self> {
        let file = File::create(path).map_err(|source| ConnectorError::File {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            writer: FormattedWriter::new(BufWriter::new(file), format, bounded, schema, decimals),
            path: Some(path.to_path_buf()),
        })
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
    format: MessageFormat,
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
            format,
            json: JsonEncoder::new(decimals),
            key_column,
            rows: EncodedRows::default(),
            rows_written: 0,
            rejected: 0,
            failed_rows: Vec::new(),
            rejected_rows: Vec::new(),
        })
    }

    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows.clear();
        let failures = self.format.encode(batch, &self.json, &mut self.rows)?;
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

impl Sink for KafkaSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.encode(batch)?;
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
        for row in 0..self.rows.len() {
            if self.failed_rows.binary_search(&row).is_ok() {
                continue; // rejected by the encoder
            }
            let key = keys.and_then(|k| (!k.is_null(row)).then(|| k.value(row).as_bytes()));
            let topic = &self.topic;
            let payload = self.rows.row(row);
            self.producer.send(topic, key, payload, None)?;
        }
        self.rows_written += (batch.num_rows() - self.failed_rows.len()) as u64;
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        self.producer.flush()
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
