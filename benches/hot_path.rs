//! Criterion benchmarks of the hot path, reported in records/s (criterion's "elements"):
//! - `json_hot_path`: JSON bytes → RecordBatch → filter/projection → JSON bytes, for Nexmark
//!   q1 (projection with exact decimal arithmetic) and q2 (filter) on bid records;
//! - `window_aggregate`: a tumbling GROUP BY and a 5-row moving average (OVER) over decoded
//!   batches with 10 000 distinct keys;
//! - `stream_join`: an interval join of two tick streams with 10 000 active keys;
//! - `checkpoint`: one checkpoint of a window holding 10 000 groups (written and fsynced);
//! - `codecs`: decoding and encoding the `trades` record (DECIMAL(18,4) price) as JSON, Avro and
//!   Protobuf.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use velo_connectors::codec::EncodedRows;
mod fixtures;

use fixtures::{
    nexmark_bid_batches, state_batches, tick_batches, CodecBench, HotPath, CODECS,
    INTERVAL_JOIN_QUERY, NEXMARK_QUERIES, OVER_QUERY, STATE_QUERY, WINDOW_QUERY,
};

const RECORDS: usize = 100_000;
const BATCH: usize = 8192;

fn json_hot_path(c: &mut Criterion) {
    let batches = nexmark_bid_batches(RECORDS, BATCH);
    let mut group = c.benchmark_group("json_hot_path");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    for (name, query) in NEXMARK_QUERIES {
        let mut path = HotPath::nexmark(query).expect("plan");
        group.bench_function(*name, |b| {
            b.iter(|| {
                batches
                    .iter()
                    .map(|batch| path.run(batch).expect("run"))
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

fn stream_join(c: &mut Criterion) {
    let batches = tick_batches(RECORDS, BATCH);
    let mut group = c.benchmark_group("stream_join");
    // Every tick goes in twice: once as an order, once as a shipment.
    group.throughput(Throughput::Elements(2 * RECORDS as u64));
    group.sample_size(10);
    group.bench_function("interval_join_10k_keys", |b| {
        b.iter(|| {
            let mut path = HotPath::new(INTERVAL_JOIN_QUERY).expect("plan");
            let mut rows = 0;
            for batch in &batches {
                rows += path.run_input(0, batch).expect("orders");
                rows += path.run_input(1, batch).expect("shipments");
            }
            rows + path.finish().expect("finish")
        })
    });
    group.finish();
}

fn window_aggregate(c: &mut Criterion) {
    let batches = tick_batches(RECORDS, BATCH);
    let mut group = c.benchmark_group("window_aggregate");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    for (name, query) in [
        ("tumbling_10k_keys", WINDOW_QUERY),
        ("over_rows_10k_keys", OVER_QUERY),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                // A fresh pipeline per iteration: the same event times again would be late.
                let mut path = HotPath::new(query).expect("plan");
                let rows: usize = batches
                    .iter()
                    .map(|batch| path.run(batch).expect("run"))
                    .sum();
                rows + path.finish().expect("finish")
            })
        });
    }
    group.finish();
}

/// One checkpoint of a window holding 10 000 groups: snapshot, Arrow IPC encoding, fsync and
/// rename (reported in groups/s).
fn checkpoint(c: &mut Criterion) {
    const GROUPS: usize = 10_000;
    let dir = std::env::temp_dir().join(format!("velo-bench-checkpoint-{}", std::process::id()));
    let mut path = HotPath::new(STATE_QUERY).expect("plan");
    for batch in &state_batches(GROUPS, BATCH) {
        path.run(batch).expect("run");
    }
    path.checkpoint_every(&dir, std::time::Duration::from_secs(3600))
        .expect("checkpoints");
    let mut group = c.benchmark_group("checkpoint");
    group.throughput(Throughput::Elements(GROUPS as u64));
    group.sample_size(10);
    group.bench_function("window_state_10k_groups", |b| {
        b.iter(|| path.replay().checkpoint_now().expect("checkpoint"))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn codecs(c: &mut Criterion) {
    let mut group = c.benchmark_group("codecs");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    for codec in CODECS {
        let mut bench = CodecBench::new(codec, RECORDS, BATCH).expect("codec");
        group.bench_function(format!("decode_{codec}"), |b| {
            b.iter(|| bench.decode_all().expect("decode"))
        });
        let bench = CodecBench::new(codec, RECORDS, BATCH).expect("codec");
        let mut out = EncodedRows::default();
        group.bench_function(format!("encode_{codec}"), |b| {
            b.iter(|| bench.encode_all(&mut out).expect("encode"))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    json_hot_path,
    window_aggregate,
    stream_join,
    checkpoint,
    codecs
);
criterion_main!(benches);
