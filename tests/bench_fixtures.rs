//! The benchmark fixtures compute what they claim: the hot paths the benchmarks time give the
//! exact rows (the fixtures live in `benches/fixtures`, outside the library).

#[path = "../benches/fixtures/mod.rs"]
mod fixtures;

use fixtures::*;
use velo_connectors::codec::EncodedRows;
use velo_connectors::record::Payload;
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
