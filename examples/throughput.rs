//! Throughput harness: runs the hot path (JSON bytes → RecordBatch → filter/projection → JSON
//! bytes) over generated Nexmark bids on one core and prints records/s per query.
//!
//! `cargo run --release --example throughput -- [RECORDS] [BATCH_SIZE]`

use std::time::Instant;

use velostream::hot_path::{nexmark_bid_batches, payload_bytes, HotPath, NEXMARK_QUERIES};

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
        "{records} Nexmark bids ({:.1} MB of JSON, {} per batch), one thread",
        bytes as f64 / 1e6,
        batch_size
    );
    for (name, query) in NEXMARK_QUERIES {
        let mut path = HotPath::new(query)?;
        // Warm up once, then time three passes and keep the best.
        for batch in &batches {
            path.run(batch)?;
        }
        let mut best = f64::MAX;
        let mut rows = 0;
        for _ in 0..3 {
            let start = Instant::now();
            rows = 0;
            for batch in &batches {
                rows += path.run(batch)?;
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "{name}: {:>12.0} records/s  ({:.1} MB/s in, {rows} rows out)   {query}",
            records as f64 / best,
            bytes as f64 / 1e6 / best
        );
    }
    Ok(())
}
