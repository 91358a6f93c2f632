//! The `trades` generator: a deterministic market feed of 8 symbols whose prices walk in ticks
//! of 0.0001, with `DECIMAL(18,4)` prices so that sums and products are exact.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    Decimal128Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::Generator;

const SYMBOLS: [(&str, i128); 8] = [
    ("AAPL", 1_900_000),
    ("MSFT", 4_100_000),
    ("GOOG", 1_400_000),
    ("AMZN", 1_800_000),
    ("TSLA", 2_500_000),
    ("NVDA", 9_000_000),
    ("META", 4_800_000),
    ("JPM", 1_950_000),
];

/// 2024-01-01T00:00:00Z in milliseconds: event time of the first trade of a bounded run.
pub const BOUNDED_START_MS: i64 = 1_704_067_200_000;
/// Event-time spacing of trades in a bounded run.
pub const BOUNDED_SPACING_MS: i64 = 10;

/// SplitMix64: small, fast and good enough for test data.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Generates trades; prices are a per-symbol random walk, so the state depends on every trade
/// before. Generation must therefore be sequential (it is: sources ask in order).
pub struct TradesGenerator {
    rng: SplitMix64,
    prices: [i128; 8],
    /// Event time of trade 0; `None` until the first wall-clock batch fixes it.
    start_ms: Option<i64>,
    /// Event-time spacing of consecutive trades, in microseconds.
    spacing_us: i64,
    schema: SchemaRef,
}

impl TradesGenerator {
    /// A generator seeded with `seed`. With `wall_clock_rate`, trade `n` is stamped
    /// `n / rate` seconds after the first batch was generated (its scheduled time when paced at
    /// that rate); without, trades follow the fixed timeline from [`BOUNDED_START_MS`],
    /// [`BOUNDED_SPACING_MS`] apart.
    pub fn new(seed: u64, wall_clock_rate: Option<u64>) -> Self {
        let (start_ms, spacing_us) = match wall_clock_rate {
            Some(rate) => (None, 1_000_000 / rate.max(1) as i64),
            None => (Some(BOUNDED_START_MS), BOUNDED_SPACING_MS * 1000),
        };
        Self {
            rng: SplitMix64(seed),
            prices: SYMBOLS.map(|(_, p)| p),
            start_ms,
            spacing_us,
            schema: Self::trade_schema(),
        }
    }

    /// `trade_id BIGINT, symbol VARCHAR, price DECIMAL(18,4), quantity BIGINT, side VARCHAR,
    /// ts TIMESTAMP(3)`.
    pub fn trade_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("trade_id", DataType::Int64, false),
            Field::new("symbol", DataType::Utf8, false),
            Field::new("price", DataType::Decimal128(18, 4), false),
            Field::new("quantity", DataType::Int64, false),
            Field::new("side", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]))
    }
}

impl Generator for TradesGenerator {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn generate(&mut self, first: u64, count: usize) -> (RecordBatch, Vec<i64>) {
        let mut id = Int64Builder::with_capacity(count);
        let mut symbol = StringBuilder::with_capacity(count, count * 4);
        let mut price = Decimal128Builder::with_capacity(count);
        let mut quantity = Int64Builder::with_capacity(count);
        let mut side = StringBuilder::with_capacity(count, count * 4);
        let mut ts = TimestampMillisecondBuilder::with_capacity(count);
        let mut times = Vec::with_capacity(count);
        let start = *self.start_ms.get_or_insert_with(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        });
        for i in 0..count as u64 {
            let n = first + i;
            let s = self.rng.below(SYMBOLS.len() as u64) as usize;
            let step = self.rng.below(101) as i128 - 50;
            self.prices[s] = (self.prices[s] + step).max(1);
            id.append_value(n as i64 + 1);
            symbol.append_value(SYMBOLS[s].0);
            price.append_value(self.prices[s]);
            quantity.append_value(1 + self.rng.below(1000) as i64);
            side.append_value(if self.rng.below(2) == 0 {
                "BUY"
            } else {
                "SELL"
            });
            let t = start + n as i64 * self.spacing_us / 1000;
            ts.append_value(t);
            times.push(t);
        }
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(id.finish()),
                Arc::new(symbol.finish()),
                Arc::new(
                    price
                        .finish()
                        .with_precision_and_scale(18, 4)
                        .expect("valid precision"),
                ),
                Arc::new(quantity.finish()),
                Arc::new(side.finish()),
                Arc::new(ts.finish()),
            ],
        )
        .expect("the trades batch matches its schema");
        (batch, times)
    }
}
