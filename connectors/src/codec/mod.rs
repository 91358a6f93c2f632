//! Codecs: payload bytes ↔ Arrow columns.
//!
//! Formats: JSON ([`json`]), Avro ([`avro`]) and Protobuf ([`protobuf`]). A decoder turns a column of encoded payloads
//! into a `RecordBatch` of the stream's schema and
//! reports each record it could not decode (by index, with the reason) instead of failing the
//! batch. An encoder turns a `RecordBatch` into one encoded message per row.

pub mod avro;
mod avro_columnar;
pub mod bridge;
pub mod cell;
pub mod decimal;
pub mod json;
mod json_flat;
pub mod protobuf;
mod protobuf_columnar;
mod scalar_builder;
pub mod text;

pub use json::{DecimalFormat, JsonDecoder, JsonEncoder};

use std::sync::Arc;

use arrow::array::BinaryArray;
use arrow::datatypes::SchemaRef;

/// How a stream's payloads are encoded.
#[derive(Debug, Clone)]
pub enum PayloadFormat {
    Json,
    /// Raw Avro datums written with this schema.
    Avro(Arc<apache_avro::Schema>),
    /// Protobuf messages of this type.
    Protobuf(prost_reflect::MessageDescriptor),
}

impl PayloadFormat {
    /// `json`, `avro`.
    pub fn name(&self) -> &'static str {
        match self {
            PayloadFormat::Json => "json",
            PayloadFormat::Avro(_) => "avro",
            PayloadFormat::Protobuf(_) => "protobuf",
        }
    }

    /// A decoder producing `columns`; with a `registry`, Avro and Protobuf records are read in
    /// the Confluent wire format.
    pub fn decoder(
        &self,
        columns: SchemaRef,
        registry: Option<Arc<crate::registry::SchemaRegistry>>,
    ) -> crate::Result<PayloadDecoder> {
        Ok(match (self, registry) {
            (PayloadFormat::Json, _) => PayloadDecoder::Json(JsonDecoder::new(columns)?),
            (PayloadFormat::Avro(schema), registry) => {
                let d = avro::AvroDecoder::new(schema.as_ref().clone(), columns)?;
                PayloadDecoder::Avro(Box::new(match registry {
                    Some(r) => d.with_registry(r),
                    None => d,
                }))
            }
            (PayloadFormat::Protobuf(message), registry) => {
                let d = protobuf::ProtobufDecoder::new(message.clone(), columns)?;
                PayloadDecoder::Protobuf(Box::new(match registry {
                    Some(r) => d.with_registry(r),
                    None => d,
                }))
            }
        })
    }
}

/// A decoder of any [`PayloadFormat`].
pub enum PayloadDecoder {
    Json(JsonDecoder),
    Avro(Box<avro::AvroDecoder>),
    Protobuf(Box<protobuf::ProtobufDecoder>),
}

impl PayloadDecoder {
    /// Rounds decimals with more fractional digits than their column's scale instead of
    /// refusing the record (see [`decimal::DecimalRounding`]).
    pub fn with_decimal_rounding(mut self, rounding: decimal::DecimalRounding) -> Self {
        match &mut self {
            PayloadDecoder::Json(d) => d.set_decimal_rounding(rounding),
            PayloadDecoder::Avro(d) => d.set_decimal_rounding(rounding),
            PayloadDecoder::Protobuf(d) => d.set_decimal_rounding(rounding),
        }
        self
    }

    /// Decodes one payload per record (see [`Decoded`]).
    pub fn decode(&mut self, payloads: &BinaryArray) -> crate::Result<Decoded> {
        match self {
            PayloadDecoder::Json(d) => d.decode(payloads),
            PayloadDecoder::Avro(d) => d.decode(payloads),
            PayloadDecoder::Protobuf(d) => d.decode(payloads),
        }
    }
}

use arrow::array::{BooleanArray, RecordBatch};

/// A record that could not be decoded: its index in the batch and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeFailure {
    pub index: usize,
    pub reason: String,
}

/// The result of decoding one batch of payloads.
#[derive(Debug)]
pub struct Decoded {
    /// The decoded rows, in input order, without the failed records.
    pub batch: RecordBatch,
    /// Which input records made it into `batch` (`None` when all did).
    pub keep: Option<BooleanArray>,
    /// The records that did not decode.
    pub failures: Vec<DecodeFailure>,
}

/// Encodes a batch's rows as a sink writes them (appending one message per row to the
/// buffer; the rows it cannot encode are returned and left empty), on any thread: a job's
/// lanes encode the rows they produce with it, and the sink takes them with
/// `Sink::write_encoded`.
pub type RowEncoder = Arc<
    dyn Fn(&RecordBatch, &mut EncodedRows) -> crate::Result<Vec<avro::EncodeFailure>> + Send + Sync,
>;

/// A batch's rows as a [`RowEncoder`] encoded them.
#[derive(Debug, Default)]
pub struct Encoded {
    pub rows: EncodedRows,
    pub failures: Vec<avro::EncodeFailure>,
}

impl Encoded {
    /// `batch` encoded by `encoder`.
    pub fn of(encoder: &RowEncoder, batch: &RecordBatch) -> crate::Result<Self> {
        let mut rows = EncodedRows::default();
        let failures = encoder(batch, &mut rows)?;
        Ok(Self { rows, failures })
    }
}

/// Encoded messages, one per row, stored back to back in one buffer.
#[derive(Debug, Default, Clone)]
pub struct EncodedRows {
    pub bytes: Vec<u8>,
    /// End offset in `bytes` of each row; row `i` spans `ends[i-1]..ends[i]` (from 0 for row 0).
    pub ends: Vec<usize>,
}

impl EncodedRows {
    /// Appends one message per row for `rows` rows: `prefix`, then the row as `direct` writes
    /// it (straight from the arrays) or, where it cannot (`false`), as `value` writes it
    /// (through the format library's values). A row `value` refuses is left empty and
    /// returned with the reason.
    pub(crate) fn push_rows(
        &mut self,
        rows: usize,
        prefix: &[u8],
        mut direct: impl FnMut(usize, &mut Vec<u8>) -> bool,
        mut value: impl FnMut(usize, &mut Vec<u8>) -> std::result::Result<(), String>,
    ) -> Vec<avro::EncodeFailure> {
        let mut failures = Vec::new();
        for row in 0..rows {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(prefix);
            if !direct(row, &mut self.bytes) {
                self.bytes.truncate(start + prefix.len());
                if let Err(reason) = value(row, &mut self.bytes) {
                    self.bytes.truncate(start);
                    failures.push(avro::EncodeFailure { row, reason });
                }
            }
            self.ends.push(self.bytes.len());
        }
        failures
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// Iterates over the rows' bytes.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(move |i| self.row(i))
    }

    /// Removes all rows, keeping the allocation.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// What the codecs' tests share.
#[cfg(test)]
pub(crate) mod testing {
    /// A small deterministic generator (xorshift) for the differential tests.
    pub(crate) struct Rng(pub u64);

    impl Rng {
        /// A number below `n`.
        pub(crate) fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        /// A signed number, often at an edge of `i64`.
        pub(crate) fn signed(&mut self) -> i64 {
            match self.next(4) {
                0 => 0,
                1 => i64::MIN + self.next(3) as i64,
                2 => i64::MAX - self.next(3) as i64,
                _ => self.next(2_000_001) as i64 - 1_000_000,
            }
        }

        /// A 64-bit pattern, often at an edge of `u64`, `i64` or `u32`.
        pub(crate) fn wide(&mut self) -> u64 {
            match self.next(5) {
                0 => 0,
                1 => u64::MAX - self.next(3),
                2 => (i64::MIN as u64) + self.next(3),
                3 => (u32::MAX as u64) + self.next(3),
                _ => self.next(100_000),
            }
        }
    }
}
