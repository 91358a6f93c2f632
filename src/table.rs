//! Tables: the build side of stream–table joins, loaded in full when the query starts.
//!
//! A file table is read once (CSV with a header, JSON lines, Parquet). A topic-backed table is
//! the latest record per Kafka key of a compacted topic, read up to its end offsets when the
//! query starts; a tombstone (a record with a key and no value) deletes its key. Columns come
//! from the declaration, else from the file (Parquet) or are inferred (CSV, JSON lines; money
//! stays exact only when declared as DECIMAL for CSV).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, BinaryArray, RecordBatch};
use arrow::datatypes::{Schema, SchemaRef};
use velo_connectors::codec::decimal;
use velo_connectors::codec::json::infer_schema;
use velo_connectors::kafka::{KafkaConnection, KafkaSource};
use velo_connectors::record::Payload;
use velo_connectors::source::Source;

use crate::catalog::{StreamDef, StreamSource};
use crate::error::{Result, VeloError};

fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

fn io_error(path: &std::path::Path, e: impl std::fmt::Display) -> VeloError {
    VeloError::Usage(format!("table file {}: {e}", path.display()))
}

/// A table as loaded when the query starts.
pub struct LoadedTable {
    pub schema: SchemaRef,
    pub rows: Vec<RecordBatch>,
    /// For a topic-backed table, the offset per partition the rows were read up to (exclusive):
    /// following the topic starts there, so no update is missed in between.
    pub end_offsets: BTreeMap<i32, i64>,
    /// Records that could not be decoded (logged and left out; the job counts them).
    pub skipped: u64,
}

/// Loads the rows of table `def`.
pub fn load(def: &StreamDef, connection: &KafkaConnection) -> Result<LoadedTable> {
    let mut end_offsets = BTreeMap::new();
    let mut skipped = 0;
    let (schema, rows) = load_rows(def, connection, &mut end_offsets, &mut skipped)?;
    Ok(LoadedTable {
        schema,
        rows,
        end_offsets,
        skipped,
    })
}

fn load_rows(
    def: &StreamDef,
    connection: &KafkaConnection,
    end_offsets: &mut BTreeMap<i32, i64>,
    skipped: &mut u64,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    match &def.source {
        StreamSource::File { path, format } => match format.as_str() {
            "csv" => {
                let schema = match &def.schema {
                    Some(s) => s.clone(),
                    None => {
                        let mut file = File::open(path).map_err(|e| io_error(path, e))?;
                        let (schema, _) = arrow::csv::reader::Format::default()
                            .with_header(true)
                            .infer_schema(&mut file, Some(1000))
                            .map_err(|e| io_error(path, e))?;
                        Arc::new(schema)
                    }
                };
                let schema = nullable(&schema);
                // Decimals are read as text and converted exactly (arrow-csv would truncate).
                let text_schema = decimal::text_schema(&schema);
                let file = File::open(path).map_err(|e| io_error(path, e))?;
                let reader =
                    arrow::csv::ReaderBuilder::new(text_schema.clone().unwrap_or(schema.clone()))
                        .with_header(true)
                        .build(file)
                        .map_err(|e| io_error(path, e))?;
                let mut batches = Vec::new();
                let mut line = 2; // the first data line, after the header
                for batch in reader {
                    let batch = batch.map_err(|e| io_error(path, e))?;
                    if text_schema.is_some() {
                        let rounding = def.decimal_rounding.unwrap_or_default();
                        let (converted, errors) =
                            decimal::convert_text_columns(&batch, &schema, rounding)
                                .map_err(|e| io_error(path, e))?;
                        if let Some(e) = errors.first() {
                            return Err(io_error(
                                path,
                                format!("line {}: {}", line + e.row, e.reason),
                            ));
                        }
                        batches.push(converted);
                    } else {
                        batches.push(batch);
                    }
                    line += batches.last().map_or(0, |b| b.num_rows());
                }
                Ok((schema, batches))
            }
            "parquet" => {
                let file = File::open(path).map_err(|e| io_error(path, e))?;
                let builder =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .map_err(|e| io_error(path, e))?;
                let schema = nullable(builder.schema());
                let batches = builder
                    .build()
                    .map_err(|e| io_error(path, e))?
                    .map(|b| b.and_then(|b| b.with_schema(schema.clone())))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| io_error(path, e))?;
                Ok((schema, batches))
            }
            _ => {
                let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
                let (numbers, lines): (Vec<usize>, Vec<&[u8]>) = text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .map(|(n, l)| (n + 1, l.as_bytes()))
                    .unzip();
                decode(
                    def,
                    BinaryArray::from_iter_values(lines.iter().copied()),
                    &|i| format!("table file {} line {}", path.display(), numbers[i]),
                    skipped,
                )
            }
        },
        StreamSource::Topic(topic) => {
            let mut source = KafkaSource::snapshot(connection, topic)?;
            let mut changes = Changes::default();
            while let Some(batch) = source.poll_batch(8192, Duration::from_millis(500))? {
                changes.fold(&batch);
            }
            end_offsets.clone_from(source.snapshot_end_offsets());
            let (values, keys, _) = changes.split_keyed();
            decode(
                def,
                values,
                &|i| {
                    format!(
                        "table topic '{topic}' key '{}'",
                        String::from_utf8_lossy(&keys[i])
                    )
                },
                skipped,
            )
        }
        StreamSource::Generator(_) => Err(VeloError::Usage(format!(
            "table '{}' cannot come from a generator",
            def.name
        ))),
    }
}

/// Changes of a compacted topic, folded to the latest per record key (`None`: deleted).
#[derive(Default)]
pub struct Changes {
    latest: HashMap<Vec<u8>, Option<Vec<u8>>>,
    order: Vec<Vec<u8>>,
}

impl Changes {
    /// Folds a polled batch in (records without a key are ignored).
    pub fn fold(&mut self, batch: &velo_connectors::record::SourceBatch) {
        let Payload::Encoded(payloads) = &batch.payload else {
            return;
        };
        for i in 0..batch.len() {
            if batch.meta.key.is_null(i) {
                continue;
            }
            let key = batch.meta.key.value(i).to_vec();
            let value = (!payloads.is_null(i)).then(|| payloads.value(i).to_vec());
            if !self.latest.contains_key(&key) {
                self.order.push(key.clone());
            }
            self.latest.insert(key, value);
        }
    }

    /// The latest payloads (in order of first appearance) and the deleted keys (as text).
    pub fn split(self) -> (BinaryArray, Vec<String>) {
        let (values, _, deleted) = self.split_keyed();
        (values, deleted)
    }

    /// [`Changes::split`], with the key of each payload.
    pub fn split_keyed(self) -> (BinaryArray, Vec<Vec<u8>>, Vec<String>) {
        let mut values = Vec::new();
        let mut keys = Vec::new();
        let mut deleted = Vec::new();
        for key in &self.order {
            match self.latest.get(key).cloned().flatten() {
                Some(v) => {
                    values.push(v);
                    keys.push(key.clone());
                }
                None => deleted.push(String::from_utf8_lossy(key).into_owned()),
            }
        }
        (BinaryArray::from_iter_values(values.iter()), keys, deleted)
    }
}

/// Decodes a table's payloads with its format; bad records are logged (`at(i)` says where
/// record `i` is), counted in `skipped` and left out.
fn decode(
    def: &StreamDef,
    payloads: BinaryArray,
    at: &dyn Fn(usize) -> String,
    skipped: &mut u64,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schema = match &def.schema {
        Some(s) => s.clone(),
        None if payloads.is_empty() => Arc::new(Schema::empty()),
        None => Arc::new(infer_schema(payloads.iter().flatten().take(1000))?),
    };
    let schema = nullable(&schema);
    let mut decoder = def.decoder(schema.clone())?;
    let decoded = decoder.decode(&payloads)?;
    for f in &decoded.failures {
        tracing::warn!("skipped the record at {}: {}", at(f.index), f.reason);
    }
    *skipped += decoded.failures.len() as u64;
    Ok((schema, vec![decoded.batch]))
}
