//! Output formats for people and files: `json`, `json-pretty`, `json-lines`, `csv`, `table`.
//!
//! A [`FormattedWriter`] writes batches as they come. A *bounded* result (from `execute`) is
//! one document: a JSON array, a CSV file with one header, one aligned table. A continuous result
//! (from `stream`) is written as it flows: one JSON object per line for `json`/`json-lines`,
//! pretty objects one after another for `json-pretty`, CSV with one header, and a table per
//! micro-batch for `table`.

use std::io::Write;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::codec::{DecimalFormat, EncodedRows, JsonEncoder, RowEncoder};
use crate::Result;

/// A textual output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    JsonPretty,
    JsonLines,
    Csv,
    Table,
    /// Avro datums: for Kafka output only (one datum per message).
    Avro,
    /// Protobuf messages: for Kafka output only.
    Protobuf,
    /// A Parquet file: for file output only.
    Parquet,
}

impl OutputFormat {
    /// The format a file name's extension implies (`.parquet`, `.avro`, `.jsonl`/`.ndjson`,
    /// `.json`, `.csv`).
    pub fn for_file(path: &std::path::Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "parquet" => Some(OutputFormat::Parquet),
            "avro" => Some(OutputFormat::Avro),
            "jsonl" | "ndjson" => Some(OutputFormat::JsonLines),
            "json" => Some(OutputFormat::Json),
            "csv" => Some(OutputFormat::Csv),
            _ => None,
        }
    }

    /// The names accepted on the command line.
    pub const NAMES: &'static [&'static str] = &[
        "json",
        "json-pretty",
        "json-lines",
        "csv",
        "table",
        "avro",
        "protobuf",
        "parquet",
    ];
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "json" => Ok(OutputFormat::Json),
            "json-pretty" => Ok(OutputFormat::JsonPretty),
            "json-lines" | "jsonl" | "ndjson" => Ok(OutputFormat::JsonLines),
            "csv" => Ok(OutputFormat::Csv),
            "table" => Ok(OutputFormat::Table),
            "avro" => Ok(OutputFormat::Avro),
            "protobuf" | "proto" => Ok(OutputFormat::Protobuf),
            "parquet" => Ok(OutputFormat::Parquet),
            other => Err(format!(
                "unknown format '{other}' (expected one of: {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputFormat::Json => "json",
            OutputFormat::JsonPretty => "json-pretty",
            OutputFormat::JsonLines => "json-lines",
            OutputFormat::Csv => "csv",
            OutputFormat::Table => "table",
            OutputFormat::Avro => "avro",
            OutputFormat::Protobuf => "protobuf",
            OutputFormat::Parquet => "parquet",
        })
    }
}

/// Writes batches in an [`OutputFormat`] to any `Write`.
pub struct FormattedWriter<W: Write> {
    out: W,
    format: OutputFormat,
    bounded: bool,
    schema: SchemaRef,
    json: JsonEncoder,
    rows: EncodedRows,
    rows_written: u64,
    csv_header_written: bool,
    table_batches: Vec<RecordBatch>,
}

impl<W: Write> FormattedWriter<W> {
    /// A writer of `schema`-shaped batches. `bounded` selects document output (see module doc).
    pub fn new(
        out: W,
        format: OutputFormat,
        bounded: bool,
        schema: SchemaRef,
        decimals: DecimalFormat,
    ) -> Self {
        Self {
            out,
            format,
            bounded,
            schema,
            json: JsonEncoder::new(decimals),
            rows: EncodedRows::default(),
            rows_written: 0,
            csv_header_written: false,
            table_batches: Vec::new(),
        }
    }

    /// The output goes on after what an earlier writer wrote (a file resumed by a restored
    /// job): no second CSV header.
    pub fn continue_document(&mut self) {
        self.csv_header_written = true;
    }

    /// The underlying writer, to read.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The underlying writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Rows written so far.
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// How the rows of a JSON format are encoded, to encode them on another thread and write
    /// them with [`FormattedWriter::write_encoded`]; `None` for the other formats.
    pub fn row_encoder(&self) -> Option<RowEncoder> {
        match self.format {
            OutputFormat::Json | OutputFormat::JsonPretty | OutputFormat::JsonLines => {
                let json = self.json.clone();
                Some(Arc::new(move |batch, out| {
                    json.encode(batch, out).map(|()| Vec::new())
                }))
            }
            _ => None,
        }
    }

    /// Writes one batch whose rows [`FormattedWriter::row_encoder`] encoded as `rows`.
    pub fn write_encoded(&mut self, batch: &RecordBatch, rows: &EncodedRows) -> Result<()> {
        debug_assert_eq!(rows.len(), batch.num_rows(), "a row each");
        match self.format {
            OutputFormat::Json | OutputFormat::JsonPretty | OutputFormat::JsonLines => {
                self.write_json_rows(rows)
            }
            _ => self.write(batch),
        }
    }

    /// Writes JSON rows as the format lays them out.
    fn write_json_rows(&mut self, rows: &EncodedRows) -> Result<()> {
        let array = self.bounded && self.format != OutputFormat::JsonLines;
        for row in rows.iter() {
            if array {
                self.out.write_all(if self.rows_written == 0 {
                    b"[\n  "
                } else {
                    b",\n  "
                })?;
            }
            if self.format == OutputFormat::JsonPretty {
                let indent = if array { 1 } else { 0 };
                write_pretty_json(row, indent, &mut self.out)?;
            } else {
                self.out.write_all(row)?;
            }
            if !array {
                self.out.write_all(b"\n")?;
            }
            self.rows_written += 1;
        }
        Ok(())
    }

    /// Writes one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self.format {
            OutputFormat::Json | OutputFormat::JsonPretty | OutputFormat::JsonLines => {
                let mut rows = std::mem::take(&mut self.rows);
                rows.clear();
                let written = self
                    .json
                    .encode(batch, &mut rows)
                    .and_then(|()| self.write_json_rows(&rows));
                self.rows = rows;
                written?;
            }
            OutputFormat::Csv => {
                if batch.num_rows() == 0 && self.csv_header_written {
                    return Ok(());
                }
                let mut writer = arrow_csv::WriterBuilder::new()
                    .with_header(!self.csv_header_written)
                    .build(&mut self.out);
                writer.write(batch)?;
                self.csv_header_written = true;
                self.rows_written += batch.num_rows() as u64;
            }
            OutputFormat::Avro | OutputFormat::Protobuf => {
                return Err(crate::ConnectorError::Config(format!(
                    "{} output is binary: write it to a topic with --output kafka",
                    self.format
                )))
            }
            OutputFormat::Parquet => {
                return Err(crate::ConnectorError::Config(
                    "parquet output is a file: write it with --output file --output-file PATH"
                        .into(),
                ))
            }
            OutputFormat::Table => {
                if batch.num_rows() == 0 {
                    return Ok(());
                }
                self.rows_written += batch.num_rows() as u64;
                // One table for the whole output, or per micro-batch (at its flush), however
                // many batches the micro-batch's rows came in (one per range on several lanes).
                self.table_batches.push(batch.clone());
            }
        }
        Ok(())
    }

    /// Pushes buffered bytes to the underlying writer; continuous `table` output first prints
    /// the micro-batch's table.
    pub fn flush(&mut self) -> Result<()> {
        if self.format == OutputFormat::Table && !self.bounded && !self.table_batches.is_empty() {
            let batches = std::mem::take(&mut self.table_batches);
            writeln!(
                self.out,
                "{}",
                arrow::util::pretty::pretty_format_batches(&batches)?
            )?;
        }
        self.out.flush()?;
        Ok(())
    }

    /// Ends the document (closing bracket, header of an empty CSV, the table) and flushes.
    pub fn finish(&mut self) -> Result<()> {
        match self.format {
            OutputFormat::Json | OutputFormat::JsonPretty if self.bounded => {
                self.out.write_all(if self.rows_written == 0 {
                    b"[]\n"
                } else {
                    b"\n]\n"
                })?;
            }
            OutputFormat::Csv if !self.csv_header_written => {
                let empty = RecordBatch::new_empty(self.schema.clone());
                self.write(&empty)?;
            }
            OutputFormat::Table if self.bounded => {
                let batches = if self.table_batches.is_empty() {
                    vec![RecordBatch::new_empty(self.schema.clone())]
                } else {
                    std::mem::take(&mut self.table_batches)
                };
                writeln!(
                    self.out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&batches)?
                )?;
            }
            _ => {}
        }
        self.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Re-indents one compact JSON value (as our encoder writes it) with two spaces per level,
/// without parsing it into a tree. `base` is the indentation level of the value itself.
pub fn write_pretty_json(compact: &[u8], base: usize, out: &mut impl Write) -> std::io::Result<()> {
    let mut level = base;
    let mut in_string = false;
    let mut escaped = false;
    let newline = |out: &mut dyn Write, level: usize| -> std::io::Result<()> {
        out.write_all(b"\n")?;
        for _ in 0..level {
            out.write_all(b"  ")?;
        }
        Ok(())
    };
    let mut i = 0;
    while i < compact.len() {
        let c = compact[i];
        if in_string {
            out.write_all(&[c])?;
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                in_string = true;
                out.write_all(b"\"")?;
            }
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                if compact.get(i + 1) == Some(&close) {
                    out.write_all(&[c, close])?;
                    i += 1;
                } else {
                    out.write_all(&[c])?;
                    level += 1;
                    newline(out, level)?;
                }
            }
            b'}' | b']' => {
                level = level.saturating_sub(1);
                newline(out, level)?;
                out.write_all(&[c])?;
            }
            b',' => {
                out.write_all(b",")?;
                newline(out, level)?;
            }
            b':' => out.write_all(b": ")?,
            _ => out.write_all(&[c])?,
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a,\"b\""), None])),
                Arc::new(
                    Decimal128Array::from(vec![Some(150025), Some(-5)])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ],
        )
        .unwrap()
    }

    fn render(format: OutputFormat, bounded: bool, batches: &[RecordBatch]) -> String {
        let schema = batch().schema();
        let mut w =
            FormattedWriter::new(Vec::new(), format, bounded, schema, DecimalFormat::String);
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        String::from_utf8(w.into_inner()).unwrap()
    }

    #[test]
    fn every_format_renders_exactly() {
        let b = batch();
        assert_eq!(
            render(OutputFormat::Json, true, std::slice::from_ref(&b)),
            "[\n  {\"id\":1,\"name\":\"a,\\\"b\\\"\",\"amount\":\"1500.25\"},\n  {\"id\":2,\"name\":null,\"amount\":\"-0.05\"}\n]\n"
        );
        assert_eq!(
            render(OutputFormat::JsonLines, true, std::slice::from_ref(&b)),
            "{\"id\":1,\"name\":\"a,\\\"b\\\"\",\"amount\":\"1500.25\"}\n{\"id\":2,\"name\":null,\"amount\":\"-0.05\"}\n"
        );
        assert_eq!(
            render(OutputFormat::JsonPretty, true, &[b.slice(1, 1)]),
            "[\n  {\n    \"id\": 2,\n    \"name\": null,\n    \"amount\": \"-0.05\"\n  }\n]\n"
        );
        assert_eq!(
            render(OutputFormat::Csv, true, &[b.slice(0, 1), b.slice(1, 1)]),
            "id,name,amount\n1,\"a,\"\"b\"\"\",1500.25\n2,,-0.05\n"
        );
        assert_eq!(
            render(OutputFormat::Table, true, std::slice::from_ref(&b)),
            "+----+-------+---------+\n| id | name  | amount  |\n+----+-------+---------+\n| 1  | a,\"b\" | 1500.25 |\n| 2  |       | -0.05   |\n+----+-------+---------+\n"
        );
    }

    #[test]
    fn a_continuous_table_is_one_per_micro_batch_however_many_batches_it_came_in() {
        let b = batch();
        let mut w = FormattedWriter::new(
            Vec::new(),
            OutputFormat::Table,
            false,
            b.schema(),
            DecimalFormat::String,
        );
        // A micro-batch's rows in two batches (two lanes' ranges), then one more micro-batch.
        w.write(&b.slice(0, 1)).unwrap();
        w.write(&b.slice(1, 1)).unwrap();
        w.flush().unwrap();
        w.write(&b.slice(1, 1)).unwrap();
        w.finish().unwrap();
        let header =
            "+----+-------+---------+\n| id | name  | amount  |\n+----+-------+---------+\n";
        let one = "| 1  | a,\"b\" | 1500.25 |\n";
        let two = "| 2  |       | -0.05   |\n";
        let end = "+----+-------+---------+\n";
        let second = "+----+------+--------+\n| id | name | amount |\n+----+------+--------+\n| 2  |      | -0.05  |\n+----+------+--------+\n";
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            format!("{header}{one}{two}{end}{second}")
        );
    }

    #[test]
    fn empty_results_are_valid_documents() {
        assert_eq!(render(OutputFormat::Json, true, &[]), "[]\n");
        assert_eq!(render(OutputFormat::JsonLines, true, &[]), "");
        assert_eq!(render(OutputFormat::Csv, true, &[]), "id,name,amount\n");
    }
}
