//! Avro object container files (`.avro`): the result's rows as Avro records under a schema
//! derived from the result's columns (decimals as `decimal` logical types, timestamps as
//! `timestamp-millis`), written by apache-avro's container writer.

use std::io::Write;

use apache_avro::schema::Schema as AvroSchema;
use apache_avro::Writer;
use arrow::array::RecordBatch;
use arrow::datatypes::Schema;

use crate::codec::avro::{derive_schema, AvroEncoder};
use crate::{ConnectorError, Result};

/// What every container file of one output shares: its schema and the row encoder.
pub struct AvroContainerFormat {
    /// The container writer borrows its schema for as long as it lives; one schema per output
    /// (not per file) is kept for the process's life.
    schema: &'static AvroSchema,
    encoder: AvroEncoder,
}

impl AvroContainerFormat {
    /// The format for results shaped like `result`.
    pub fn new(result: &Schema) -> Result<Self> {
        let schema = derive_schema(result, "velo_result")?;
        let encoder = AvroEncoder::new(schema.clone(), result)?;
        Ok(Self {
            schema: Box::leak(Box::new(schema)),
            encoder,
        })
    }

    /// A container file written to `out`.
    pub fn writer<W: Write>(&self, out: W) -> Writer<'static, W> {
        Writer::new(self.schema, out)
    }

    /// Appends `batch`'s rows to `writer`.
    pub fn write<W: Write>(
        &self,
        writer: &mut Writer<'static, W>,
        batch: &RecordBatch,
    ) -> Result<()> {
        let mut result = Ok(());
        self.encoder.for_each_value(batch, |_, value| {
            if result.is_err() {
                return;
            }
            result = value
                .map_err(|why| {
                    ConnectorError::Config(format!("a row cannot be written as Avro: {why}"))
                })
                .and_then(|value| {
                    writer.append_value_ref(&value).map(|_| ()).map_err(|e| {
                        ConnectorError::Config(format!("writing an Avro container file: {e}"))
                    })
                });
        });
        result
    }
}
