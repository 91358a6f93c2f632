//! The JSON bridge shared by the Avro and Protobuf decoders: each record is rewritten as exact
//! JSON text (decimals as their digits), then all of a batch is decoded column at a time by
//! [`JsonDecoder`]. Failures of either step are reported by the record's index in the batch.

use arrow::array::{BinaryBuilder, BooleanArray};
use arrow::datatypes::SchemaRef;

use super::json::JsonDecoder;
use super::{DecodeFailure, Decoded};
use crate::Result;

/// Collects one batch's records as JSON text and decodes them.
pub struct JsonBridge {
    json: JsonDecoder,
    text: BinaryBuilder,
    /// Batch index of each record in `text`.
    ok_index: Vec<usize>,
    failures: Vec<DecodeFailure>,
    /// Scratch buffer for one record's JSON.
    pub scratch: Vec<u8>,
}

impl JsonBridge {
    /// A bridge producing `columns`.
    pub fn new(columns: SchemaRef) -> Result<Self> {
        Ok(Self {
            json: JsonDecoder::new(columns)?,
            text: BinaryBuilder::new(),
            ok_index: Vec::new(),
            failures: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// The columns of decoded batches.
    pub fn columns(&self) -> &SchemaRef {
        self.json.schema()
    }

    /// See [`JsonDecoder::set_decimal_rounding`].
    pub fn set_decimal_rounding(&mut self, rounding: super::decimal::DecimalRounding) {
        self.json.set_decimal_rounding(rounding);
    }

    /// Record `index` could not be read.
    pub fn fail(&mut self, index: usize, reason: String) {
        self.failures.push(DecodeFailure { index, reason });
    }

    /// Record `index` was written to `scratch` as JSON.
    pub fn accept_scratch(&mut self, index: usize) {
        self.text.append_value(&self.scratch);
        self.ok_index.push(index);
    }

    /// Decodes the accepted records of a batch of `total` records.
    pub fn finish(&mut self, total: usize) -> Result<Decoded> {
        let text = self.text.finish();
        let decoded = self.json.decode(&text)?;
        let mut failures = std::mem::take(&mut self.failures);
        for f in decoded.failures {
            failures.push(DecodeFailure {
                index: self.ok_index[f.index],
                reason: f.reason,
            });
        }
        self.ok_index.clear();
        failures.sort_by_key(|f| f.index);
        if failures.is_empty() {
            return Ok(Decoded {
                batch: decoded.batch,
                keep: None,
                failures,
            });
        }
        let mut keep = vec![true; total];
        for f in &failures {
            keep[f.index] = false;
        }
        Ok(Decoded {
            batch: decoded.batch,
            keep: Some(BooleanArray::from(keep)),
            failures,
        })
    }
}
