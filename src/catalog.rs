//! What the names in FROM mean.
//!
//! A name is a stream declared with `CREATE STREAM` in the same text, otherwise the Kafka topic
//! of that name. Each stream has a source (a topic or a built-in generator), a payload format,
//! and a payload schema (declared, given on the command line, or inferred). The table SQL sees
//! is the payload columns followed by the metadata columns (`_key`, `_topic`, …).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use velo_connectors::codec::decimal::DecimalRounding;
use velo_connectors::codec::{PayloadDecoder, PayloadFormat};
use velo_connectors::generator::GeneratorSpec;
use velo_connectors::record::{is_metadata_column, metadata_fields};
use velo_connectors::registry::SchemaRegistry;

use crate::error::{Result, SqlLocation, VeloError};
use crate::sql::StreamDecl;

/// Where a stream's records come from.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamSource {
    Topic(String),
    Generator(GeneratorSpec),
    /// Files: a table's one file, read once; a stream's file, directory or glob, read as
    /// [`velo_connectors::file_source::FileSource`] (CSV with a header, JSON lines, Parquet).
    File {
        path: std::path::PathBuf,
        format: String,
    },
}

impl std::fmt::Display for StreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamSource::Topic(t) => write!(f, "topic '{t}'"),
            StreamSource::Generator(g) => write!(f, "generator:{}", g.name),
            StreamSource::File { path, .. } => write!(f, "file {}", path.display()),
        }
    }
}

/// A named stream.
#[derive(Debug, Clone)]
pub struct StreamDef {
    pub name: String,
    pub source: StreamSource,
    /// Payload encoding.
    pub format: PayloadFormat,
    /// The schema registry of a Confluent-framed Avro/Protobuf stream.
    pub registry: Option<Arc<SchemaRegistry>>,
    /// Payload columns, when known.
    pub schema: Option<SchemaRef>,
    /// Where it was declared, for error messages (`None` for implicit topic streams).
    pub declared_at: Option<SqlLocation>,
    /// The event-time column (`None`: the Kafka record timestamp, `_timestamp`).
    pub event_time: Option<String>,
    /// Bounded out-of-orderness: the watermark trails the largest event time by this much.
    pub watermark_delay_ms: i64,
    /// True for a table (`CREATE TABLE`): the build side of stream–table joins.
    pub is_table: bool,
    /// A topic-backed table's key column (its rows are the latest per Kafka record key).
    pub key: Option<String>,
    /// A table's rows, once loaded (see [`crate::table`]).
    pub rows: Option<Arc<Vec<arrow::array::RecordBatch>>>,
    /// A topic-backed table's offset per partition its loaded rows end at; following resumes
    /// there.
    pub loaded_up_to: std::collections::BTreeMap<i32, i64>,
    /// What a decimal with more fractional digits than its column gets (`'decimal.rounding'`;
    /// `None`: the job's `--decimal-rounding`, by default refused as a bad record).
    pub decimal_rounding: Option<DecimalRounding>,
    /// A table's records that could not be decoded when it was loaded.
    pub skipped_on_load: u64,
}

impl StreamDef {
    /// An undeclared name: the topic of that name, schema still unknown.
    pub fn implicit_topic(name: &str, topic: &str) -> Self {
        Self {
            name: name.to_string(),
            source: StreamSource::Topic(topic.to_string()),
            format: PayloadFormat::Json,
            registry: None,
            schema: None,
            declared_at: None,
            event_time: None,
            watermark_delay_ms: 0,
            is_table: false,
            key: None,
            rows: None,
            loaded_up_to: Default::default(),
            decimal_rounding: None,
            skipped_on_load: 0,
        }
    }

    /// A decoder of this stream's payloads into `columns`.
    pub fn decoder(&self, columns: SchemaRef) -> Result<PayloadDecoder> {
        Ok(self
            .format
            .decoder(columns, self.registry.clone())?
            .with_decimal_rounding(self.decimal_rounding.unwrap_or_default()))
    }

    /// From a `CREATE STREAM` declaration.
    pub fn from_decl(decl: &StreamDecl) -> Result<Self> {
        let at = Some(decl.location);
        let mut source = StreamSource::Topic(decl.name.clone());
        let mut format = PayloadFormat::Json;
        let mut format_name = "json".to_string();
        let mut format_given = false;
        let mut avro_schema_file: Option<String> = None;
        let mut proto_file: Option<String> = None;
        let mut proto_message: Option<String> = None;
        let mut registry = None;
        let mut path: Option<String> = None;
        let mut table_key: Option<String> = None;
        let mut event_time = None;
        let mut watermark_delay_ms = 0;
        let mut decimal_rounding = None;
        if let Some((column, expr)) = &decl.watermark {
            event_time = Some(column.clone());
            watermark_delay_ms = watermark_delay(column, expr).map_err(|why| {
                VeloError::sql(
                    format!(
                        "stream '{}': WATERMARK FOR {column} AS {expr}: {why}",
                        decl.name
                    ),
                    at,
                )
            })?;
        }
        for (key, value) in &decl.options {
            match key.as_str() {
                "topic" | "kafka_topic" | "kafka.topic" => {
                    source = StreamSource::Topic(value.clone())
                }
                "source" | "connector" if value.starts_with("generator:") => {
                    source = StreamSource::Generator(GeneratorSpec::parse(value)?)
                }
                "format" | "value.format" | "serialization" => {
                    format_name = value.to_ascii_lowercase();
                    format_given = true;
                }
                "avro.schema.file" | "avro_schema_file" | "avro.schema" => {
                    avro_schema_file = Some(value.clone())
                }
                "protobuf.file" | "proto.file" | "protobuf.schema.file" => {
                    proto_file = Some(value.clone())
                }
                "protobuf.message" | "proto.message" => proto_message = Some(value.clone()),
                "path" | "file" => path = Some(value.clone()),
                "key" if decl.is_table => table_key = Some(value.clone()),
                "schema.registry" | "schema.registry.url" => {
                    registry = Some(Arc::new(SchemaRegistry::new(
                        value,
                        std::time::Duration::from_secs(10),
                    )))
                }
                "event_time" | "event.time" | "timestamp" => event_time = Some(value.clone()),
                "watermark_delay" | "watermark.delay" => {
                    watermark_delay_ms = crate::sql::window::parse_duration(value).map_err(|why| {
                        VeloError::sql(format!("stream '{}': option '{key}': {why}", decl.name), at)
                    })?
                }
                "decimal.rounding" | "decimal_rounding" => {
                    decimal_rounding = Some(value.parse().map_err(|why: String| {
                        VeloError::sql(format!("stream '{}': option '{key}': {why}", decl.name), at)
                    })?)
                }
                other => {
                    return Err(VeloError::sql(
                        format!(
                            "stream '{}': unknown option '{other}' (known: topic, path, format, avro.schema.file, protobuf.file, protobuf.message, schema.registry, source, event_time, watermark_delay, decimal.rounding; tables also key)",
                            decl.name
                        ),
                        at,
                    ))
                }
            }
        }
        let mut schema = decl
            .columns
            .as_ref()
            .map(|cols| Arc::new(Schema::new(cols.clone())));
        if let Some(path) = path {
            let file_format = if !format_given && !decl.is_table {
                // A stream's files say their layout by extension, each its own (a folder, a
                // glob of mixed files); an extension on the path itself must be a known one.
                match std::path::Path::new(&path)
                    .extension()
                    .and_then(|e| e.to_str())
                {
                    Some(e) if velo_connectors::file_source::FileFormat::parse(e).is_some() => {
                        e.to_ascii_lowercase()
                    }
                    _ => String::new(),
                }
            } else {
                match format_name.as_str() {
                    "csv" | "json" | "jsonl" | "json-lines" | "ndjson" | "parquet" => {
                        format_name.clone()
                    }
                    "avro" if !decl.is_table => format_name.clone(),
                    other => {
                        return Err(VeloError::sql(
                            format!(
                                "'{}': file format '{other}' is not csv, json or parquet",
                                decl.name
                            ),
                            at,
                        ))
                    }
                }
            };
            source = StreamSource::File {
                path: path.into(),
                format: file_format,
            };
            format_name = "json".into();
        }
        match format_name.as_str() {
            "json" => {}
            "avro" => {
                let file = avro_schema_file.ok_or_else(|| {
                    VeloError::sql(
                        format!(
                            "stream '{}': format 'avro' needs 'avro.schema.file' = 'path.avsc'",
                            decl.name
                        ),
                        at,
                    )
                })?;
                let avro = velo_connectors::codec::avro::load_schema(std::path::Path::new(&file))?;
                if schema.is_none() {
                    schema = Some(velo_connectors::codec::avro::arrow_schema(&avro)?);
                }
                format = PayloadFormat::Avro(Arc::new(avro));
            }
            "protobuf" | "proto" => {
                let (Some(file), Some(message)) = (proto_file, proto_message) else {
                    return Err(VeloError::sql(
                        format!(
                            "stream '{}': format 'protobuf' needs 'protobuf.file' and 'protobuf.message'",
                            decl.name
                        ),
                        at,
                    ));
                };
                let message = velo_connectors::codec::protobuf::load_message(
                    std::path::Path::new(&file),
                    &message,
                )?;
                if schema.is_none() {
                    schema = Some(velo_connectors::codec::protobuf::arrow_schema(&message));
                }
                format = PayloadFormat::Protobuf(message);
            }
            other => {
                return Err(VeloError::sql(
                    format!(
                        "stream '{}': unknown format '{other}' (json, avro, protobuf)",
                        decl.name
                    ),
                    at,
                ))
            }
        }
        Ok(Self {
            name: decl.name.clone(),
            source,
            format,
            registry,
            schema,
            declared_at: at,
            event_time,
            watermark_delay_ms,
            is_table: decl.is_table,
            key: table_key,
            rows: None,
            loaded_up_to: Default::default(),
            decimal_rounding,
            skipped_on_load: 0,
        })
    }

    /// The table SQL sees: payload columns, then metadata columns.
    pub fn table_schema(&self) -> Result<SchemaRef> {
        let payload = self
            .schema
            .as_ref()
            .ok_or_else(|| VeloError::Usage(format!("stream '{}' has no schema yet", self.name)))?;
        if self.is_table {
            // A table's rows have no record metadata.
            return Ok(payload.clone());
        }
        let mut fields: Vec<Field> = payload
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if let Some(clash) = fields.iter().find(|f| is_metadata_column(f.name())) {
            return Err(VeloError::sql(
                format!(
                    "stream '{}': column '{}' clashes with a metadata column of the same name",
                    self.name,
                    clash.name()
                ),
                self.declared_at,
            ));
        }
        fields.extend(metadata_fields());
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// The delay of `WATERMARK FOR col AS col - INTERVAL '5' SECOND` (0 for `AS col`).
fn watermark_delay(column: &str, expr: &str) -> std::result::Result<i64, String> {
    let expr = expr.trim();
    let rest = expr
        .strip_prefix(column)
        .or_else(|| expr.strip_prefix(&format!("\"{column}\"")))
        .ok_or_else(|| format!("the expression must be '{column} - INTERVAL …'"))?
        .trim();
    if rest.is_empty() {
        return Ok(0);
    }
    let delay = rest
        .strip_prefix('-')
        .ok_or_else(|| format!("expected '{column} - INTERVAL …', found '{expr}'"))?;
    crate::sql::window::parse_duration(delay.trim())
}

/// The streams a query can name.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    streams: BTreeMap<String, StreamDef>,
}

impl Catalog {
    /// Adds (or replaces) a stream.
    pub fn insert(&mut self, stream: StreamDef) {
        self.streams.insert(stream.name.clone(), stream);
    }

    /// The stream called `name`.
    pub fn get(&self, name: &str) -> Option<&StreamDef> {
        self.streams.get(name)
    }

    /// Mutable access to the stream called `name`.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut StreamDef> {
        self.streams.get_mut(name)
    }

    /// Every stream and table.
    pub fn iter(&self) -> impl Iterator<Item = &StreamDef> {
        self.streams.values()
    }

    /// Declared names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.streams.keys().cloned().collect()
    }
}
