//! Every stateful operator survives a checkpoint: a run cut at random micro-batch boundaries,
//! each time checkpointed (through the on-disk encoding) and restored into a fresh job, emits
//! exactly what an uninterrupted run emits over the same micro-batches. Tumbling, sliding and
//! session windows, EMIT CHANGES, OVER (ROWS and RANGE frames, ranking), an updating aggregate
//! with COUNT(DISTINCT), a SQL LIMIT, interval and window joins of two streams.

use velostream::replay::Replay;

#[allow(dead_code)]
mod oracle;
use oracle::{sorted_json_rows, Rng};

const BASE_MS: i64 = 1_704_067_200_000;

/// Events of stream `name` with keys, decimal values and event times mostly increasing, with
/// duplicates, gaps and disorder within 2 s.
fn events(rng: &mut Rng, n: usize) -> Vec<(i64, String)> {
    let mut t = BASE_MS;
    let mut out = Vec::new();
    for i in 0..n {
        t += match rng.below(8) {
            0 | 1 => 0,
            2 => 15_000 + rng.below(20_000) as i64,
            _ => rng.below(1_200) as i64,
        };
        let k = ["a", "b", "c", "d"][rng.below(4) as usize];
        let v = rng.below(100_000) as i64 - 50_000;
        let arrival = t + rng.below(2_001) as i64;
        out.push((
            arrival,
            format!(
                r#"{{"id":{i},"k":"{k}","v":"{}.{:02}","ts":{t}}}"#,
                v / 100,
                (v % 100).abs()
            ),
        ));
    }
    out.sort_by_key(|(arrival, _)| *arrival);
    out
}

const STREAM: &str = "CREATE STREAM t (id BIGINT, k VARCHAR, v DECIMAL(12,2), ts TIMESTAMP, \
WATERMARK FOR ts AS ts - INTERVAL '2' SECOND);";

/// One micro-batch: which stream, which lines.
type Batch = (&'static str, Vec<String>);

fn batches(rng: &mut Rng, streams: &[&'static str], n: usize) -> Vec<Batch> {
    let mut all: Vec<(i64, &'static str, String)> = Vec::new();
    for &s in streams {
        for (arrival, line) in events(rng, n) {
            all.push((arrival, s, line));
        }
    }
    all.sort_by_key(|(arrival, _, _)| *arrival);
    let mut out: Vec<Batch> = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let size = 1 + rng.below(30) as usize;
        // A micro-batch reads one stream's records (as one input's poll does).
        let stream = all[i].1;
        let lines: Vec<String> = all[i..]
            .iter()
            .take(size)
            .take_while(|(_, s, _)| *s == stream)
            .map(|(_, _, l)| l.clone())
            .collect();
        i += lines.len();
        out.push((stream, lines));
    }
    out
}

fn push(replay: &mut Replay, batch: &Batch) -> Vec<arrow::array::RecordBatch> {
    let payloads: Vec<&[u8]> = batch.1.iter().map(|l| l.as_bytes()).collect();
    replay.push_to(batch.0, &payloads).unwrap()
}

/// The uninterrupted run, and a run checkpointed and restored at `cuts` (batch indexes).
fn compare(sql: &str, batches: &[Batch], cuts: &[usize]) {
    let mut uninterrupted = Replay::plan(sql).unwrap();
    let mut expected = Vec::new();
    for b in batches {
        expected.extend(push(&mut uninterrupted, b));
    }
    expected.extend(uninterrupted.finish().unwrap());

    let mut replay = Replay::plan(sql).unwrap();
    let mut got = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        if cuts.contains(&i) {
            let state = replay.snapshot().unwrap();
            let offset = replay.next_offset();
            replay = Replay::plan(sql).unwrap();
            replay.restore(&state, offset).unwrap();
        }
        got.extend(push(&mut replay, b));
    }
    got.extend(replay.finish().unwrap());
    let expected = sorted_json_rows(&expected);
    assert!(!expected.is_empty(), "{sql}");
    assert_eq!(sorted_json_rows(&got), expected, "{sql}\ncuts {cuts:?}");
}

fn random_cuts(rng: &mut Rng, batches: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..1 + rng.below(4))
        .map(|_| rng.below(batches as u64) as usize)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

fn check_single_stream(select: &str) {
    for seed in 0..6 {
        let mut rng = Rng(7_000 + seed);
        let batches = batches(&mut rng, &["t"], 250);
        let cuts = random_cuts(&mut rng, batches.len());
        compare(&format!("{STREAM}\n{select}"), &batches, &cuts);
    }
}

#[test]
fn tumbling_and_sliding_windows_continue_exactly_after_a_restore() {
    check_single_stream(
        "SELECT window_start, k, COUNT(*) AS n, SUM(v) AS total, MIN(v) AS low FROM t \
         GROUP BY k WINDOW TUMBLING(ts, 5s)",
    );
    check_single_stream(
        "SELECT window_start, k, COUNT(*) AS n, AVG(v) AS mean FROM t GROUP BY k \
         WINDOW SLIDING(ts, 10s, 5s)",
    );
}

#[test]
fn emit_changes_continues_exactly_after_a_restore() {
    check_single_stream(
        "SELECT window_start, k, COUNT(*) AS n, MAX(v) AS high FROM t GROUP BY k \
         WINDOW TUMBLING(ts, 5s) EMIT CHANGES",
    );
}

#[test]
fn session_windows_continue_exactly_after_a_restore() {
    check_single_stream(
        "SELECT k, window_start, window_end, COUNT(*) AS n, SUM(v) AS total FROM t \
         GROUP BY k, SESSION(ts, INTERVAL '3' SECOND)",
    );
}

#[test]
fn over_windows_continue_exactly_after_a_restore() {
    check_single_stream(
        "SELECT id, k, SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS s, \
         ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS n FROM t",
    );
    check_single_stream(
        "SELECT id, k, COUNT(*) OVER (PARTITION BY k ORDER BY ts \
         RANGE BETWEEN INTERVAL '4' SECOND PRECEDING AND CURRENT ROW) AS recent FROM t",
    );
}

#[test]
fn an_updating_aggregate_continues_exactly_after_a_restore() {
    check_single_stream(
        "SELECT k, COUNT(*) AS n, COUNT(DISTINCT id % 7) AS kinds, SUM(v) AS total FROM t GROUP BY k",
    );
}

#[test]
fn a_sql_limit_continues_its_count_after_a_restore() {
    check_single_stream("SELECT id, k FROM t WHERE v > 0 LIMIT 40");
}

const TWO_STREAMS: &str = "CREATE STREAM l (id BIGINT, k VARCHAR, v DECIMAL(12,2), ts TIMESTAMP, \
WATERMARK FOR ts AS ts - INTERVAL '2' SECOND);\n\
CREATE STREAM r (id BIGINT, k VARCHAR, v DECIMAL(12,2), ts TIMESTAMP, \
WATERMARK FOR ts AS ts - INTERVAL '2' SECOND);";

fn check_two_streams(select: &str) {
    for seed in 0..6 {
        let mut rng = Rng(9_000 + seed);
        let batches = batches(&mut rng, &["l", "r"], 150);
        let cuts = random_cuts(&mut rng, batches.len());
        compare(&format!("{TWO_STREAMS}\n{select}"), &batches, &cuts);
    }
}

#[test]
fn interval_joins_continue_exactly_after_a_restore() {
    check_two_streams(
        "SELECT l.id AS lid, r.id AS rid, l.k FROM l LEFT JOIN r \
         ON l.k = r.k AND r.ts BETWEEN l.ts AND l.ts + INTERVAL '3' SECOND",
    );
    check_two_streams(
        "SELECT l.id AS lid, r.id AS rid FROM l FULL JOIN r \
         ON l.k = r.k AND r.ts BETWEEN l.ts - INTERVAL '1' SECOND AND l.ts + INTERVAL '1' SECOND",
    );
}

#[test]
fn window_joins_continue_exactly_after_a_restore() {
    check_two_streams(
        "SELECT a.k, a.n, b.total FROM \
         (SELECT k, COUNT(*) AS n, window_start FROM l GROUP BY k, TUMBLE(ts, INTERVAL '5' SECOND)) a \
         JOIN (SELECT k, SUM(v) AS total, window_start FROM r GROUP BY k, TUMBLE(ts, INTERVAL '5' SECOND)) b \
         ON a.k = b.k AND a.window_start = b.window_start",
    );
}
