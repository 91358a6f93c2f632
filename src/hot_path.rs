//! The engine's hot path without I/O, for benchmarks and the throughput harness: a micro-batch
//! as a source hands it over → decode → pipeline → encoded rows. Planning happens once in
//! [`HotPath::new`]; [`HotPath::run`] is what every micro-batch costs.

use std::sync::Arc;

use arrow::array::BinaryArray;
use arrow::array::{Decimal128Builder, Int64Builder, RecordBatch, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use velo_connectors::codec::avro::{derive_schema, AvroEncoder};
use velo_connectors::codec::protobuf::{load_message, ProtobufEncoder};
use velo_connectors::codec::{
    DecimalFormat, EncodedRows, JsonEncoder, PayloadDecoder, PayloadFormat,
};
use velo_connectors::generator::nexmark::{self, JsonDialect, NexmarkConfig};
use velo_connectors::generator::trades::TradesGenerator;
use velo_connectors::generator::Generator;
use velo_connectors::record::{Payload, RecordBatchCollector, SourceBatch};
use velo_connectors::sink::MessageFormat;

use crate::error::{Result, VeloError};
use crate::replay::Replay;

/// Declaration of the flat `bid` stream the Nexmark benchmarks read.
pub const BID_STREAM: &str =
    "CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
url VARCHAR, date_time TIMESTAMP, extra VARCHAR);";

/// The Nexmark queries used as benchmarks of the JSON hot path, over [`BID_STREAM`].
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

/// The windowed aggregation benchmark: a tumbling GROUP BY over decoded batches with
/// [`WINDOW_KEYS`] distinct keys per window (see [`tick_batches`]).
pub const WINDOW_QUERY: &str = "CREATE STREAM ticks (k BIGINT, price DECIMAL(18,4), ts TIMESTAMP);
SELECT k, COUNT(*) AS n, SUM(price) AS total, MIN(price) AS low, MAX(price) AS high
FROM ticks GROUP BY k WINDOW TUMBLING(ts, 1s)";

/// The OVER benchmark: a 5-row moving average per key over the same decoded ticks.
pub const OVER_QUERY: &str = "CREATE STREAM ticks (k BIGINT, price DECIMAL(18,4), ts TIMESTAMP);
SELECT k, ts, price,
       AVG(price) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS avg5
FROM ticks";

/// Rows of the lookup-join benchmark's table.
pub const LOOKUP_TABLE_ROWS: usize = 100_000;

/// The lookup-join benchmark: ticks enriched from a 100 000-row table written to `dir` as CSV.
pub fn lookup_query(dir: &std::path::Path) -> Result<String> {
    let path = dir.join("reference.csv");
    let mut csv = String::with_capacity(LOOKUP_TABLE_ROWS * 24);
    csv.push_str("k,name,weight\n");
    for k in 0..LOOKUP_TABLE_ROWS {
        csv.push_str(&format!("{k},name-{k},{}.{:02}\n", k % 7, k % 100));
    }
    std::fs::write(&path, csv)?;
    Ok(format!(
        "CREATE STREAM ticks (k BIGINT, price DECIMAL(18,4), ts TIMESTAMP);
CREATE TABLE reference (k BIGINT, name VARCHAR, weight DECIMAL(10,2)) WITH ('path' = '{}', 'format' = 'csv');
SELECT t.k, r.name, t.price * r.weight AS weighted FROM ticks t JOIN reference r ON t.k = r.k",
        path.display()
    ))
}

/// The interval-join benchmark: two streams of ticks ([`tick_batches`], so [`WINDOW_KEYS`]
/// keys are active at once), each order joined with the shipments of its key in the second
/// after it. Feed input 0 (orders) and input 1 (shipments) alternately.
pub const INTERVAL_JOIN_QUERY: &str =
    "CREATE STREAM orders (k BIGINT, price DECIMAL(18,4), ts TIMESTAMP);
CREATE STREAM shipments (k BIGINT, price DECIMAL(18,4), ts TIMESTAMP);
SELECT o.k, o.price, s.price AS shipped_price, s.ts AS shipped
FROM orders o JOIN shipments s ON o.k = s.k AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '1' SECOND";

/// Distinct keys of [`tick_batches`].
pub const WINDOW_KEYS: i64 = 10_000;

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

/// `count` decoded ticks `(k, price, ts)`: key `i % WINDOW_KEYS`, ten ticks per millisecond
/// (so each 1-second window sees every key), in batches of `batch_size`.
pub fn tick_batches(count: usize, batch_size: usize) -> Vec<SourceBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("price", DataType::Decimal128(18, 4), true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]));
    let base = 1_704_067_200_000i64;
    (0..count)
        .step_by(batch_size)
        .map(|first| {
            let n = batch_size.min(count - first);
            let mut k = Int64Builder::with_capacity(n);
            let mut price = Decimal128Builder::with_capacity(n);
            let mut ts = TimestampMillisecondBuilder::with_capacity(n);
            let mut times = Vec::with_capacity(n);
            for i in first..first + n {
                let i = i as i64;
                k.append_value(i % WINDOW_KEYS);
                price.append_value((1_000_000 + (i * 7919) % 100_000) as i128);
                let t = base + i / 10;
                ts.append_value(t);
                times.push(t);
            }
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(k.finish()),
                    Arc::new(
                        price
                            .finish()
                            .with_precision_and_scale(18, 4)
                            .expect("valid decimal"),
                    ),
                    Arc::new(ts.finish()),
                ],
            )
            .expect("tick batch matches its schema");
            SourceBatch {
                payload: Payload::Decoded(batch),
                meta: RecordBatchCollector::generated_meta("ticks", first as i64, &times),
            }
        })
        .collect()
}

/// A query planned once, ready to run on batches.
pub struct HotPath {
    replay: Replay,
    encoder: JsonEncoder,
    rows: EncodedRows,
}

impl HotPath {
    /// Plans `sql` (stream declarations and one query) once.
    pub fn new(sql: &str) -> Result<Self> {
        Ok(Self {
            replay: Replay::plan(sql)?,
            encoder: JsonEncoder::new(DecimalFormat::String),
            rows: EncodedRows::default(),
        })
    }

    /// Plans one of [`NEXMARK_QUERIES`] over the bid stream.
    pub fn nexmark(query: &str) -> Result<Self> {
        Self::new(&format!("{BID_STREAM}\n{query}"))
    }

    /// Decodes, runs and encodes one batch; returns the number of output rows.
    pub fn run(&mut self, batch: &SourceBatch) -> Result<usize> {
        self.run_input(0, batch)
    }

    /// [`HotPath::run`] for input `input` of a query reading several streams.
    pub fn run_input(&mut self, input: usize, batch: &SourceBatch) -> Result<usize> {
        self.rows.clear();
        for out in self.replay.push_input(input, batch)? {
            self.encoder.encode(&out, &mut self.rows)?;
        }
        Ok(self.rows.len())
    }

    /// Ends the input (closing every window); returns the number of output rows.
    pub fn finish(&mut self) -> Result<usize> {
        self.rows.clear();
        for out in self.replay.finish()? {
            self.encoder.encode(&out, &mut self.rows)?;
        }
        Ok(self.rows.len())
    }

    /// The encoded rows of the last [`HotPath::run`].
    pub fn last_rows(&self) -> &EncodedRows {
        &self.rows
    }
}

/// The payload formats of the codec benchmarks.
pub const CODECS: &[&str] = &["json", "avro", "protobuf"];

/// Decoding and encoding the `trades` record (DECIMAL(18,4) price) in one format: the batches
/// (as the generator makes them) and their encoded payloads.
pub struct CodecBench {
    decoder: PayloadDecoder,
    message: MessageFormat,
    json: JsonEncoder,
    pub batches: Vec<RecordBatch>,
    pub payloads: Vec<BinaryArray>,
}

impl CodecBench {
    /// `count` trades in batches of `batch_size`, encoded as `codec` (json, avro, protobuf).
    pub fn new(codec: &str, count: usize, batch_size: usize) -> Result<Self> {
        let schema = TradesGenerator::trade_schema();
        let mut generator = TradesGenerator::new(42, None);
        let batches: Vec<RecordBatch> = (0..count)
            .step_by(batch_size)
            .map(|first| {
                generator
                    .generate(first as u64, batch_size.min(count - first))
                    .0
            })
            .collect();
        let (format, message) = match codec {
            "json" => (PayloadFormat::Json, MessageFormat::Json),
            "avro" => {
                let avro = derive_schema(&schema, "Trade")?;
                let encoder = AvroEncoder::new(avro.clone(), &schema)?;
                (
                    PayloadFormat::Avro(Arc::new(avro)),
                    MessageFormat::Avro(encoder),
                )
            }
            "protobuf" => {
                let proto =
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/trades.proto");
                let message = load_message(&proto, "velostream.examples.Trade")?;
                (
                    PayloadFormat::Protobuf(message.clone()),
                    MessageFormat::Protobuf(ProtobufEncoder::new(message)),
                )
            }
            other => return Err(VeloError::Usage(format!("unknown codec '{other}'"))),
        };
        let json = JsonEncoder::new(DecimalFormat::String);
        let mut payloads = Vec::with_capacity(batches.len());
        for batch in &batches {
            let mut rows = EncodedRows::default();
            message.encode(batch, &json, &mut rows)?;
            payloads.push(BinaryArray::from_iter_values(rows.iter()));
        }
        // Declared stream columns are nullable (a Protobuf Trade has no trade_id).
        let columns = Arc::new(arrow::datatypes::Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        Ok(Self {
            decoder: format.decoder(columns, None)?,
            message,
            json,
            batches,
            payloads,
        })
    }

    /// Decodes every payload; returns the rows decoded.
    pub fn decode_all(&mut self) -> Result<usize> {
        let mut rows = 0;
        for p in &self.payloads {
            rows += self.decoder.decode(p)?.batch.num_rows();
        }
        Ok(rows)
    }

    /// Encodes every batch into `out` (cleared per batch); returns the rows encoded.
    pub fn encode_all(&self, out: &mut EncodedRows) -> Result<usize> {
        let mut rows = 0;
        for b in &self.batches {
            out.clear();
            self.message.encode(b, &self.json, out)?;
            rows += out.len();
        }
        Ok(rows)
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
        let mut q1 = HotPath::nexmark(NEXMARK_QUERIES[0].1).unwrap();
        let rows = q1.run(&batches[0]).unwrap();
        assert_eq!(rows, 128);
        let first = std::str::from_utf8(q1.last_rows().row(0)).unwrap();
        // Event 4 is the first bid: price 32530001 cents × 0.908 = 29537240.908, exactly.
        assert!(
            first.starts_with(r#"{"auction":1000,"bidder":1001,"price":"29537240.908","date_time":"2015-07-15T00:00:00""#),
            "{first}"
        );
        let mut q2 = HotPath::nexmark(NEXMARK_QUERIES[1].1).unwrap();
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

    #[test]
    fn the_window_benchmark_emits_one_row_per_key_and_window() {
        // 25 000 ticks = 2.5 s of event time: windows [0,1), [1,2) full, [2,3) half.
        let batches = tick_batches(25_000, 4096);
        let mut path = HotPath::new(WINDOW_QUERY).unwrap();
        let mut rows: usize = batches.iter().map(|b| path.run(b).unwrap()).sum();
        rows += path.finish().unwrap();
        assert_eq!(rows, 10_000 + 10_000 + 5_000);
    }

    #[test]
    fn every_codec_round_trips_the_trades_benchmark_exactly() {
        for codec in CODECS {
            let mut bench = CodecBench::new(codec, 1000, 256).unwrap();
            assert_eq!(bench.decode_all().unwrap(), 1000, "{codec}");
            let mut out = EncodedRows::default();
            assert_eq!(bench.encode_all(&mut out).unwrap(), 1000, "{codec}");
            let decoded = bench.decoder.decode(&bench.payloads[0]).unwrap().batch;
            let original = &bench.batches[0];
            for column in ["symbol", "price", "quantity"] {
                assert_eq!(
                    decoded.column_by_name(column).unwrap().as_ref(),
                    original.column_by_name(column).unwrap().as_ref(),
                    "{codec}: {column}"
                );
            }
        }
    }

    #[test]
    fn the_lookup_benchmark_joins_every_tick_once() {
        let dir = std::env::temp_dir().join(format!("velo-lookup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut path = HotPath::new(&lookup_query(&dir).unwrap()).unwrap();
        let rows: usize = tick_batches(5_000, 1024)
            .iter()
            .map(|b| path.run(b).unwrap())
            .sum();
        assert_eq!(rows, 5_000);
        let first = std::str::from_utf8(path.last_rows().row(0))
            .unwrap()
            .to_string();
        assert!(
            first.starts_with(r#"{"k":4096,"name":"name-4096","weighted":""#),
            "{first}"
        );
    }

    #[test]
    fn the_over_benchmark_emits_every_row() {
        let batches = tick_batches(12_000, 4096);
        let mut path = HotPath::new(OVER_QUERY).unwrap();
        let mut rows: usize = batches.iter().map(|b| path.run(b).unwrap()).sum();
        rows += path.finish().unwrap();
        assert_eq!(rows, 12_000);
    }
}
