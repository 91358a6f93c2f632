//! Criterion benchmark of the hot path on Nexmark bids: JSON bytes → RecordBatch →
//! filter/projection → JSON bytes, for Nexmark q1 (projection with exact decimal arithmetic)
//! and q2 (filter). Reports throughput in records/s (criterion's "elements").

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use velostream::hot_path::{nexmark_bid_batches, HotPath, NEXMARK_QUERIES};

const RECORDS: usize = 100_000;
const BATCH: usize = 8192;

fn hot_path(c: &mut Criterion) {
    let batches = nexmark_bid_batches(RECORDS, BATCH);
    let mut group = c.benchmark_group("json_hot_path");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    for (name, query) in NEXMARK_QUERIES {
        let mut path = HotPath::new(query).expect("plan");
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut rows = 0;
                for batch in &batches {
                    rows += path.run(batch).expect("run");
                }
                rows
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
