//! Shared parts of the oracle tests: a seeded random source, JSON lines as DataFusion tables,
//! and the canonical form results are compared in (each row as JSON text, sorted, so two
//! results compare as multisets).

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use velo_connectors::codec::{EncodedRows, JsonEncoder};

/// Registers JSON lines as table `name` of `ctx`, with `columns` (a SQL column list). The lines
/// are read with arrow-json's own reader, not ours, so a bug in our decoder cannot show on
/// both sides of a comparison.
pub fn register_json_table<S: AsRef<str>>(
    ctx: &SessionContext,
    name: &str,
    columns: &str,
    lines: &[S],
) {
    let schema = Arc::new(arrow::datatypes::Schema::new(
        velostream::sql::parse_column_list(columns).unwrap(),
    ));
    let text: String = lines.iter().map(|l| format!("{}\n", l.as_ref())).collect();
    let batches = arrow::json::ReaderBuilder::new(schema.clone())
        .build(std::io::Cursor::new(text))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    ctx.register_table(
        name,
        Arc::new(MemTable::try_new(schema, vec![batches]).unwrap()),
    )
    .unwrap();
}

/// SplitMix64, so every run of a test sees the same inputs for a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The rows of `batches` as JSON lines, sorted.
pub fn sorted_json_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = json_rows(batches);
    out.sort();
    out
}

/// Every row of `batches` as a JSON object, in order.
pub fn json_rows(batches: &[RecordBatch]) -> Vec<String> {
    let encoder = JsonEncoder::default();
    let mut rows = EncodedRows::default();
    for b in batches {
        encoder.encode(b, &mut rows).unwrap();
    }
    rows.iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

/// Asserts two sorted row lists are equal, naming the first rows that differ (not dumping both).
#[track_caller]
#[allow(dead_code)] // not every oracle test compares row lists
pub fn assert_same_rows(got: &[String], want: &[String], context: &str) {
    if got == want {
        return;
    }
    let missing: Vec<&String> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
    let extra: Vec<&String> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
    panic!(
        "{context}: {} rows, expected {}\n  missing (first 3): {missing:#?}\n  unexpected (first 3): {extra:#?}",
        got.len(),
        want.len()
    );
}
