//! The engine's hot path without I/O, for benchmarks and the throughput harness: encoded
//! payloads → decode → pipeline → encoded rows. Planning happens once in [`HotPath::new`];
//! [`HotPath::run`] is what every micro-batch costs.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use velo_connectors::codec::{DecimalFormat, EncodedRows, JsonEncoder};
use velo_connectors::generator::nexmark::{self, JsonDialect, NexmarkConfig};
use velo_connectors::record::{Payload, RecordBatchCollector, SourceBatch};

use crate::catalog::{Catalog, StreamDef};
use crate::error::{Result, VeloError};
use crate::operators::Pipeline;
use crate::planner::{new_session, plan_query, QueryRequest};
use crate::runtime::InputAdapter;
use crate::sql::parse_script;

/// The Nexmark queries used as benchmarks, over a `bid` stream of flat bid records.
pub const NEXMARK_QUERIES: &[(&str, &str)] = &[
    (
        "q1",
        "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid",
    ),
    (
        "q2",
        "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    ),
];

/// `bid` payload columns as declared for the benchmarks.
pub const BID_SCHEMA: &str =
    "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time TIMESTAMP, extra VARCHAR";

/// `count` Nexmark bids as flat JSON objects (RisingWave field names), cut into batches of
/// `batch_size` records with metadata, as a Kafka source would hand them over.
pub fn nexmark_bid_batches(count: usize, batch_size: usize) -> Vec<SourceBatch> {
    let config = NexmarkConfig::default();
    let mut batches = Vec::new();
    let mut buffer = Vec::with_capacity(256);
    let mut collector = RecordBatchCollector::new(batch_size);
    let mut n = 0i64;
    let mut produced = 0usize;
    while produced < count {
        if let nexmark::Event::Bid(bid) = nexmark::event(&config, n) {
            buffer.clear();
            nexmark::write_bid_object(&bid, JsonDialect::RisingWave, &mut buffer);
            collector.push(
                Some(&buffer),
                None,
                "bid",
                0,
                n,
                Some(bid.date_time),
                std::iter::empty(),
            );
            produced += 1;
            if collector.len() == batch_size {
                batches.push(collector.finish());
            }
        }
        n += 1;
    }
    if !collector.is_empty() {
        batches.push(collector.finish());
    }
    batches
}

/// A query planned once over the `bid` stream, ready to run on batches.
pub struct HotPath {
    input: InputAdapter,
    pipeline: Pipeline,
    encoder: JsonEncoder,
    rows: EncodedRows,
    pub output_schema: SchemaRef,
}

impl HotPath {
    /// Plans `query` (over `bid`) once.
    pub fn new(query: &str) -> Result<Self> {
        let script = parse_script(query)?;
        let mut catalog = Catalog::default();
        let mut bid = StreamDef::implicit_topic("bid", "bid");
        bid.schema = Some(Arc::new(arrow::datatypes::Schema::new(
            crate::sql::parse_column_list(BID_SCHEMA)?,
        )));
        catalog.insert(bid);
        let ctx = new_session()?;
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        let planned = runtime.block_on(plan_query(
            &ctx,
            &catalog,
            &QueryRequest::from_script(&script),
        ))?;
        Ok(Self {
            input: InputAdapter::new(planned.scan)?,
            pipeline: planned.pipeline,
            encoder: JsonEncoder::new(DecimalFormat::String),
            rows: EncodedRows::default(),
            output_schema: planned.output_schema,
        })
    }

    /// Decodes, runs and encodes one batch; returns the number of output rows.
    pub fn run(&mut self, batch: &SourceBatch) -> Result<usize> {
        let mut bad = Vec::new();
        let input = self.input.adapt(batch, &mut bad)?;
        if !bad.is_empty() {
            return Err(VeloError::Execution(format!(
                "{} bad records in benchmark input",
                bad.len()
            )));
        }
        self.rows.clear();
        for out in self.pipeline.process(input)? {
            self.encoder.encode(&out, &mut self.rows)?;
        }
        Ok(self.rows.len())
    }

    /// The encoded rows of the last [`HotPath::run`].
    pub fn last_rows(&self) -> &EncodedRows {
        &self.rows
    }
}

/// Total payload bytes of `batches`.
pub fn payload_bytes(batches: &[SourceBatch]) -> usize {
    batches
        .iter()
        .map(|b| match &b.payload {
            Payload::Encoded(p) => p.value_data().len(),
            Payload::Decoded(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q1_converts_prices_exactly_and_q2_filters() {
        let batches = nexmark_bid_batches(300, 128);
        let mut q1 = HotPath::new(NEXMARK_QUERIES[0].1).unwrap();
        let rows = q1.run(&batches[0]).unwrap();
        assert_eq!(rows, 128);
        let first = std::str::from_utf8(q1.last_rows().row(0)).unwrap();
        // Event 4 is the first bid: price 32530001 cents × 0.908 = 29537240.908, exactly.
        assert!(first.starts_with(r#"{"auction":1000,"bidder":1001,"price":"29537240.908","date_time":"2015-07-15T00:00:00""#), "{first}");
        let mut q2 = HotPath::new(NEXMARK_QUERIES[1].1).unwrap();
        let kept: usize = batches.iter().map(|b| q2.run(b).unwrap()).sum();
        let expected = batches
            .iter()
            .flat_map(|b| match &b.payload {
                Payload::Encoded(p) => p
                    .iter()
                    .flatten()
                    .map(|bytes| {
                        let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                        v["auction"].as_i64().unwrap()
                    })
                    .collect::<Vec<_>>(),
                Payload::Decoded(_) => vec![],
            })
            .filter(|a| a % 123 == 0)
            .count();
        assert_eq!(kept, expected);
    }
}
