//! Throughput harness: runs the hot path on one thread (the keyed queries on two lanes too)
//! and prints records/s for
//! - the JSON path (JSON bytes → RecordBatch → filter/projection → JSON bytes) on generated
//!   Nexmark bids, for q1 and q2;
//! - a tumbling GROUP BY and a 5-row moving average (OVER) over decoded batches with 10 000
//!   distinct keys;
//! - decoding and encoding the `trades` record as JSON, Avro and Protobuf;
//! - decoding an order with arrays and nested records as JSON and as Avro, and only its two
//!   flat fields as JSON, Avro and Protobuf.
//!
//! `cargo run --release --example throughput -- [RECORDS] [BATCH_SIZE] [checkpoints]`

use std::time::Instant;

#[path = "../benches/fixtures/mod.rs"]
mod fixtures;

use fixtures::{
    lookup_query, nexmark_bid_batches, payload_bytes, state_batches, tick_batches, CodecBench,
    HotPath, NestedBench, CODECS, GLOBAL_WINDOW_QUERY, INTERVAL_JOIN_QUERY, NEXMARK_QUERIES,
    OVER_QUERY, STATE_QUERY, WINDOW_QUERY,
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

/// What checkpoints cost: the tumbling-window job with a checkpoint every second against none,
/// and one checkpoint (write, then restore into a fresh job) of 10 000 and 1 000 000 groups.
fn checkpoints(
    ticks: &[velo_connectors::record::SourceBatch],
    records: usize,
    batch_size: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("velo-checkpoints-{}", std::process::id()));
    for every in [None, Some(std::time::Duration::from_secs(1))] {
        let mut written = (0, 0);
        let (secs, rows) = best_of_three(|| {
            let _ = std::fs::remove_dir_all(&dir);
            let mut path = HotPath::new(WINDOW_QUERY)?;
            if let Some(interval) = every {
                path.checkpoint_every(&dir, interval)?;
            }
            let mut rows = 0;
            for batch in ticks {
                rows += path.run(batch)?;
            }
            let p = path.replay().progress();
            written = (
                p.checkpoints.load(std::sync::atomic::Ordering::Relaxed),
                p.checkpoint_micros
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            Ok(rows + path.finish()?)
        })?;
        let share = match written {
            (0, _) => String::new(),
            (n, micros) => format!(
                "; {n} checkpoints took {:.1} ms in all, {:.2} % of the run",
                micros as f64 / 1000.0,
                micros as f64 / 1e6 / secs * 100.0
            ),
        };
        println!(
            "tumbling GROUP BY, 10k keys, {}: {:>12.0} records/s  ({rows} rows out{share})",
            match every {
                None => "no checkpoints".to_string(),
                Some(i) => format!("a checkpoint every {} s", i.as_secs()),
            },
            records as f64 / secs
        );
    }
    for groups in [10_000, 1_000_000] {
        let _ = std::fs::remove_dir_all(&dir);
        let mut path = HotPath::new(STATE_QUERY)?;
        for batch in &state_batches(groups, batch_size) {
            path.run(batch)?;
        }
        path.checkpoint_every(&dir, std::time::Duration::from_secs(3600))?;
        let start = Instant::now();
        path.replay().checkpoint_now()?;
        let written = start.elapsed().as_secs_f64();
        let bytes: u64 = walk_bytes(&dir);
        let start = Instant::now();
        let store = velostream::job::checkpoint::LocalStore::open(&dir)?;
        let checkpoint = velostream::job::checkpoint::load_latest(&store)?.expect("written");
        let mut fresh = HotPath::new(STATE_QUERY)?;
        fresh.replay().restore(&checkpoint, 0)?;
        let restored = start.elapsed().as_secs_f64();
        let rows = fresh.finish()?;
        println!(
            "checkpoint of {groups} window groups: written in {:.1} ms ({:.1} MB), read back and restored in {:.1} ms ({rows} rows emitted after)",
            written * 1000.0,
            bytes as f64 / 1e6,
            restored * 1000.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn walk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk_bytes(&path)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let batch_size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(8192);
    // `checkpoints`: only what checkpoints cost.
    if args.next().as_deref() == Some("checkpoints") {
        let ticks = tick_batches(records, batch_size);
        return checkpoints(&ticks, records, batch_size);
    }
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
    // On two lanes: q1 (each lane decodes, computes and encodes ranges of a batch), and a
    // global window (the bids decoded on both lanes, counted on the first).
    for (name, query, lanes) in [
        ("q1, 2 lanes", NEXMARK_QUERIES[0].1, 2),
        ("global 10 s window", GLOBAL_WINDOW_QUERY, 1),
        ("global 10 s window, 2 lanes", GLOBAL_WINDOW_QUERY, 2),
    ] {
        let (secs, rows) = best_of_three(|| {
            let mut path = HotPath::nexmark_on_lanes(query, lanes)?;
            let mut rows = 0;
            for batch in &batches {
                rows += path.run(batch)?;
            }
            Ok(rows + path.finish()?)
        })?;
        println!(
            "json {name}: {:>12.0} records/s  ({rows} rows out)",
            records as f64 / secs
        );
    }
    let ticks = tick_batches(records, batch_size);
    // Keyed queries on one lane, then on two (keys split between two threads).
    for (name, query, lanes) in [
        ("tumbling GROUP BY, 10k keys", WINDOW_QUERY, 1),
        ("OVER 5-row AVG, 10k keys", OVER_QUERY, 1),
        ("tumbling GROUP BY, 10k keys, 2 lanes", WINDOW_QUERY, 2),
        ("OVER 5-row AVG, 10k keys, 2 lanes", OVER_QUERY, 2),
    ] {
        let (secs, rows) = best_of_three(|| {
            let mut path = HotPath::on_lanes(query, lanes)?;
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
    // One table, shared by the lanes' lookups.
    let lookup_sql = lookup_query(&dir)?;
    for lanes in [1, 2] {
        let mut lookup = HotPath::on_lanes(&lookup_sql, lanes)?;
        let (secs, rows) = best_of_three(|| {
            let mut rows = 0;
            for batch in &ticks {
                rows += lookup.run(batch)?;
            }
            Ok(rows)
        })?;
        println!(
            "stream-table join, 100k-row table, {lanes} lane(s): {:>12.0} records/s  ({rows} rows out)",
            records as f64 / secs
        );
    }
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
    checkpoints(&ticks, records, batch_size)?;
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
    let mut nested = NestedBench::new(records, batch_size)?;
    for (codec, avro) in [("json", false), ("avro", true)] {
        let (secs, rows) = best_of_three(|| Ok(nested.decode_all(avro)?))?;
        println!(
            "nested orders {codec:<4}: decode {:>10.0} records/s  ({rows} rows)",
            records as f64 / secs
        );
    }
    let (secs, rows) = best_of_three(|| Ok(nested.decode_protobuf()?))?;
    println!(
        "nested orders protobuf: decode {:>10.0} records/s  ({rows} rows; every column, the map too)",
        records as f64 / secs
    );
    for (format, codec) in ["json", "avro", "protobuf"].into_iter().enumerate() {
        let (secs, rows) = best_of_three(|| Ok(nested.decode_flat(format)?))?;
        println!(
            "nested orders {codec:<8}, two flat columns read: decode {:>10.0} records/s  ({rows} rows)",
            records as f64 / secs
        );
    }
    Ok(())
}
