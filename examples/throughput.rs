//! Throughput harness: runs the hot path on one thread and prints records/s for
//! - the JSON path (JSON bytes → RecordBatch → filter/projection → JSON bytes) on generated
//!   Nexmark bids, for q1 and q2;
//! - a tumbling GROUP BY and a 5-row moving average (OVER) over decoded batches with 10 000
//!   distinct keys;
//! - decoding and encoding the `trades` record as JSON, Avro and Protobuf.
//!
//! `cargo run --release --example throughput -- [RECORDS] [BATCH_SIZE]`

use std::time::Instant;

#[path = "../benches/fixtures/mod.rs"]
mod fixtures;

use fixtures::{
    lookup_query, nexmark_bid_batches, payload_bytes, tick_batches, CodecBench, HotPath, CODECS,
    INTERVAL_JOIN_QUERY, NEXMARK_QUERIES, OVER_QUERY, WINDOW_QUERY,
};

fn best_of_three(
    mut run: impl FnMut() -> Result<usize, Box<dyn std::error::Error>>,
) -> Result<(f64, usize), Box<dyn std::error::Error>> {
    run()?; // warm-up
    let mut best = f64::MAX;
    let mut rows = 0;
    for _ in 0..3 {
        let start = Instant::now();
        rows = run()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok((best, rows))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let batch_size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(8192);
    let batches = nexmark_bid_batches(records, batch_size);
    let bytes = payload_bytes(&batches);
    println!(
        "{records} records per run, {batch_size} per micro-batch, one thread; Nexmark bids: {:.1} MB of JSON",
        bytes as f64 / 1e6
    );
    for (name, query) in NEXMARK_QUERIES {
        let mut path = HotPath::nexmark(query)?;
        let (secs, rows) = best_of_three(|| {
            let mut rows = 0;
            for batch in &batches {
                rows += path.run(batch)?;
            }
            Ok(rows)
        })?;
        println!(
            "json {name}: {:>12.0} records/s  ({:.1} MB/s in, {rows} rows out)   {query}",
            records as f64 / secs,
            bytes as f64 / 1e6 / secs
        );
    }
    let ticks = tick_batches(records, batch_size);
    for (name, query) in [
        ("tumbling GROUP BY, 10k keys", WINDOW_QUERY),
        ("OVER 5-row AVG, 10k keys", OVER_QUERY),
    ] {
        let (secs, rows) = best_of_three(|| {
            let mut path = HotPath::new(query)?;
            let mut rows = 0;
            for batch in &ticks {
                rows += path.run(batch)?;
            }
            Ok(rows + path.finish()?)
        })?;
        println!(
            "{name}: {:>12.0} records/s  ({rows} rows out)",
            records as f64 / secs
        );
    }
    let dir = std::env::temp_dir().join(format!("velo-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut lookup = HotPath::new(&lookup_query(&dir)?)?;
    let (secs, rows) = best_of_three(|| {
        let mut rows = 0;
        for batch in &ticks {
            rows += lookup.run(batch)?;
        }
        Ok(rows)
    })?;
    println!(
        "stream-table join, 100k-row table: {:>12.0} records/s  ({rows} rows out)",
        records as f64 / secs
    );
    let (secs, rows) = best_of_three(|| {
        let mut path = HotPath::new(INTERVAL_JOIN_QUERY)?;
        let mut rows = 0;
        for batch in &ticks {
            rows += path.run_input(0, batch)?;
            rows += path.run_input(1, batch)?;
        }
        Ok(rows + path.finish()?)
    })?;
    println!(
        "interval join, 10k active keys: {:>12.0} records/s  ({rows} rows out, {} records in)",
        2.0 * records as f64 / secs,
        2 * records
    );
    for codec in CODECS {
        let mut bench = CodecBench::new(codec, records, batch_size)?;
        let (secs, _) = best_of_three(|| Ok(bench.decode_all()?))?;
        let bench_encode = CodecBench::new(codec, records, batch_size)?;
        let mut out = velo_connectors::codec::EncodedRows::default();
        let (secs_encode, _) = best_of_three(|| Ok(bench_encode.encode_all(&mut out)?))?;
        println!(
            "trades {codec:<8}: decode {:>10.0} records/s, encode {:>10.0} records/s",
            records as f64 / secs,
            records as f64 / secs_encode
        );
    }
    Ok(())
}
