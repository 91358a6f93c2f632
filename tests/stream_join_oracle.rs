//! Oracle tests for joins of two streams: for random inputs (skewed keys, duplicate keys on
//! both sides, NULL keys, decimal keys, records out of order within the allowed lateness, the
//! two streams interleaved in random micro-batches), the streaming result equals DataFusion's
//! batch join over the same finite input with the same conditions, exactly, as multisets.
//! Interval joins (INNER, LEFT, RIGHT, FULL, strict and inclusive bounds, extra conditions),
//! window joins (INNER, LEFT, FULL over tumbling-window aggregates) and updating joins with a
//! state TTL; and a join restored from a mid-stream snapshot continues exactly.

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use velostream::replay::Replay;

mod oracle;
use oracle::{json_rows, register_json_table, sorted_json_rows, Rng};

const COLUMNS: &str = "k VARCHAR, d DECIMAL(8,2), v BIGINT, ts TIMESTAMP";
const LATENESS_MS: u64 = 5_000;

/// Events of streams `o` and `s` in arrival order: (stream, JSON payload).
fn events(rng: &mut Rng, count: usize) -> Vec<(&'static str, String)> {
    let mut base: i64 = 1_700_000_000_000;
    (0..count)
        .map(|i| {
            base += rng.below(400) as i64;
            let stream = if rng.below(2) == 0 { "o" } else { "s" };
            // Out of order, but never by more than the lateness: nothing is late.
            let ts = base - rng.below(LATENESS_MS) as i64;
            let k = match rng.below(10) {
                0 => "null".to_string(),
                1..=4 => "\"hot\"".to_string(),
                n => format!("\"k{}\"", n + rng.below(3)),
            };
            let d = format!("\"{}.{}\"", rng.below(2), [0, 5][rng.below(2) as usize]);
            (stream, format!(r#"{{"k":{k},"d":{d},"v":{i},"ts":{ts}}}"#))
        })
        .collect()
}

fn declarations() -> String {
    format!(
        "CREATE STREAM o ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{LATENESS_MS}' MILLISECOND);\n\
         CREATE STREAM s ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{LATENESS_MS}' MILLISECOND);\n"
    )
}

/// Feeds `events` to `replay` in micro-batches of one stream at a time, of random sizes.
fn feed(replay: &mut Replay, events: &[(&str, String)], rng: &mut Rng) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let stream = events[i].0;
        let n = 1 + rng.below(12) as usize;
        let chunk: Vec<&[u8]> = events[i..]
            .iter()
            .take_while(|(s, _)| *s == stream)
            .take(n)
            .map(|(_, l)| l.as_bytes())
            .collect();
        i += chunk.len();
        out.extend(replay.push_to(stream, &chunk).unwrap());
    }
    out
}

/// DataFusion's answer to `query` over the whole of both streams.
fn batch_answer(events: &[(&str, String)], query: &str) -> Vec<RecordBatch> {
    batch_answer_with(events, query, &[])
}

/// [`batch_answer`] with CSV files registered as tables too.
fn batch_answer_with(
    events: &[(&str, String)],
    query: &str,
    csv_tables: &[(&str, &std::path::Path)],
) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (name, path) in csv_tables {
        rt.block_on(ctx.register_csv(*name, path.to_str().unwrap(), Default::default()))
            .unwrap();
    }
    for name in ["o", "s"] {
        let lines: Vec<&String> = events
            .iter()
            .filter(|(s, _)| *s == name)
            .map(|(_, l)| l)
            .collect();
        register_json_table(&ctx, name, COLUMNS, &lines);
    }
    rt.block_on(async { ctx.sql(query).await.unwrap().collect().await.unwrap() })
}

/// Asserts the streamed result equals DataFusion's, and that there was something to compare.
fn assert_same(got: &[RecordBatch], want: &[RecordBatch], what: &str) {
    assert!(!want.iter().all(|b| b.num_rows() == 0), "{what}: no rows");
    assert_eq!(sorted_json_rows(got), sorted_json_rows(want), "{what}");
}

/// The streaming result of `replay` over `events`, and the state rows it held before the end.
/// `kept` rows (a lookup table's) stay in the state after it.
fn streamed_keeping(
    mut replay: Replay,
    events: &[(&str, String)],
    rng: &mut Rng,
    kept: u64,
) -> (Vec<RecordBatch>, u64) {
    let mut got = feed(&mut replay, events, rng);
    let held = replay.metrics().state_rows;
    got.extend(replay.finish().unwrap());
    assert_eq!(
        replay.metrics().state_rows,
        kept,
        "the end of input empties the join state"
    );
    (got, held)
}

fn streamed_with(
    replay: Replay,
    events: &[(&str, String)],
    rng: &mut Rng,
) -> (Vec<RecordBatch>, u64) {
    streamed_keeping(replay, events, rng, 0)
}

fn streamed(sql: &str, events: &[(&str, String)], rng: &mut Rng) -> Vec<RecordBatch> {
    let replay = Replay::plan(sql).unwrap_or_else(|e| panic!("{e}\n{sql}"));
    streamed_with(replay, events, rng).0
}

const INTERVAL_JOINS: [(&str, &str); 6] = [
    (
        "JOIN",
        "o.k = s.k AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND",
    ),
    (
        "LEFT JOIN",
        "o.k = s.k AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND",
    ),
    (
        "RIGHT JOIN",
        "o.k = s.k AND s.ts BETWEEN o.ts - INTERVAL '3' SECOND AND o.ts + INTERVAL '4' SECOND",
    ),
    (
        "FULL JOIN",
        "o.k = s.k AND s.ts > o.ts AND s.ts < o.ts + INTERVAL '8' SECOND AND s.v > o.v % 7",
    ),
    (
        "JOIN",
        "o.k = s.k AND o.d = s.d AND o.ts >= s.ts - INTERVAL '6' SECOND AND o.ts <= s.ts + INTERVAL '2' SECOND",
    ),
    (
        "LEFT JOIN",
        "o.k = s.k AND s.ts BETWEEN o.ts + INTERVAL '1' SECOND AND o.ts + INTERVAL '2' SECOND",
    ),
];

#[test]
fn interval_joins_equal_datafusion_batch_joins() {
    for seed in 0..18u64 {
        let mut rng = Rng(4200 + seed);
        let events = events(&mut rng, 300);
        let (join, on) = INTERVAL_JOINS[seed as usize % INTERVAL_JOINS.len()];
        let select =
            format!("SELECT o.k, o.d, o.v, o.ts, s.v AS sv, s.ts AS sts FROM o {join} s ON {on}");
        let replay = Replay::plan(&format!("{}{select}", declarations())).unwrap();
        let (got, held) = streamed_with(replay, &events, &mut rng);
        // The watermark expires rows: the state holds the last ~20 s of a 60 s input.
        assert!(held < 150, "seed {seed}: {held} rows held");
        let want = batch_answer(&events, &select);
        assert_same(&got, &want, &format!("seed {seed}: {select}"));
    }
}

/// A window-aggregate subquery per stream; `date_bin` for DataFusion's batch form.
fn windowed(stream: &str, aggregate: &str, streaming: bool) -> String {
    let (start, end, group) = if streaming {
        (
            "window_start".to_string(),
            "window_end".to_string(),
            "TUMBLE(ts, INTERVAL '10' SECOND)".to_string(),
        )
    } else {
        let bin = "date_bin(INTERVAL '10 seconds', ts, TIMESTAMP '1970-01-01T00:00:00')";
        (
            format!("{bin} AS window_start"),
            format!("{bin} + INTERVAL '10 seconds' AS window_end"),
            bin.to_string(),
        )
    };
    format!("(SELECT k, {aggregate}, {start}, {end} FROM {stream} GROUP BY k, {group})")
}

/// A 10 s tumbling window over `time`: the GROUP BY expression and the SELECT item of its start,
/// as `TUMBLE` when `streaming`, as `date_bin` for DataFusion's batch form.
fn window_10s(time: &str, streaming: bool) -> (String, String) {
    if streaming {
        (
            format!("TUMBLE({time}, INTERVAL '10' SECOND)"),
            "window_start".into(),
        )
    } else {
        let bin =
            format!("date_bin(INTERVAL '10 seconds', {time}, TIMESTAMP '1970-01-01T00:00:00')");
        (bin.clone(), format!("{bin} AS window_start"))
    }
}

/// `count` events of stream `o` only.
fn o_events(rng: &mut Rng, count: usize) -> Vec<(&'static str, String)> {
    let mut all = events(rng, count);
    all.retain(|(stream, _)| *stream == "o");
    all
}

/// Streams `query(true)` (TUMBLE windows) and compares with DataFusion's `query(false)`
/// (`date_bin`) over the same events.
fn compare_windowed(
    events: &[(&str, String)],
    rng: &mut Rng,
    query: impl Fn(bool) -> String,
    seed: u64,
) {
    let got = streamed(&format!("{}{}", declarations(), query(true)), events, rng);
    let want = batch_answer(events, &query(false));
    assert_same(&got, &want, &format!("seed {seed}: {}", query(true)));
}

#[test]
fn window_joins_equal_datafusion_batch_joins() {
    let shapes = [
        ("JOIN", "a.k = b.k AND a.window_start = b.window_start"),
        ("LEFT JOIN", "a.k = b.k AND a.window_end = b.window_end"),
        (
            "FULL JOIN",
            "a.k = b.k AND a.window_start = b.window_start AND a.window_end = b.window_end AND b.total > a.n",
        ),
    ];
    for seed in 0..9u64 {
        let mut rng = Rng(7700 + seed);
        let events = events(&mut rng, 300);
        let (join, on) = shapes[seed as usize % shapes.len()];
        let query = |streaming: bool| {
            format!(
                "SELECT a.k, a.n, b.total, a.window_start, b.window_end AS b_end FROM {} a {join} {} b ON {on}",
                windowed("o", "COUNT(*) AS n", streaming),
                windowed("s", "SUM(d) AS total", streaming),
            )
        };
        compare_windowed(&events, &mut rng, query, seed);
    }
}

/// Streams `query(true)` and compares with DataFusion's `query(false)`; also asserts that rows
/// came out while the input ran (windows closing), not only at its end, and that the end of
/// input leaves no state.
fn compare_windowed_while_running(
    events: &[(&str, String)],
    rng: &mut Rng,
    query: impl Fn(bool) -> String,
    seed: u64,
) {
    let sql = format!("{}{}", declarations(), query(true));
    let mut replay = Replay::plan(&sql).unwrap_or_else(|e| panic!("{e}\n{sql}"));
    let mut got = feed(&mut replay, events, rng);
    let while_running: usize = got.iter().map(|b| b.num_rows()).sum();
    got.extend(replay.finish().unwrap());
    assert!(
        while_running > 0,
        "seed {seed}: no rows before the end of input"
    );
    assert_eq!(replay.metrics().state_rows, 0, "seed {seed}: state left");
    let want = batch_answer(events, &query(false));
    assert_same(&got, &want, &format!("seed {seed}: {}", query(true)));
}

#[test]
fn an_aggregate_grouped_by_window_bounds_closes_with_the_window() {
    for seed in 0..4u64 {
        let mut rng = Rng(8600 + seed);
        let events = o_events(&mut rng, 300);
        let query = |streaming: bool| {
            format!(
                "SELECT c.window_end AS ends, COUNT(*) AS keys, MAX(c.n) AS most, SUM(c.n) AS all_rows \
                 FROM {} c GROUP BY c.window_end",
                windowed("o", "COUNT(*) AS n", streaming)
            )
        };
        compare_windowed_while_running(&events, &mut rng, query, seed);
    }
}

#[test]
fn the_busiest_keys_of_each_window_joined_back_like_nexmark_q5_equal_datafusion() {
    for seed in 0..6u64 {
        let mut rng = Rng(8800 + seed);
        let events = o_events(&mut rng, 300);
        let query = |streaming: bool| {
            let counts = windowed("o", "COUNT(*) AS n", streaming);
            format!(
                "SELECT a.k, a.n, m.maxn, a.window_start FROM {counts} a \
                 JOIN (SELECT MAX(c.n) AS maxn, c.window_start AS starttime, c.window_end AS endtime \
                       FROM {counts} c GROUP BY c.window_start, c.window_end) m \
                 ON a.window_start = m.starttime AND a.window_end = m.endtime AND a.n >= m.maxn"
            )
        };
        compare_windowed_while_running(&events, &mut rng, query, seed);
    }
}

#[test]
fn interval_and_ttl_joins_on_four_lanes_give_one_lanes_rows_in_one_lanes_order() {
    // Fed the same micro-batches, four lanes (rows exchanged by join key, outputs merged by
    // arrival and position) emit exactly what one lane emits, row for row.
    for seed in 0..8u64 {
        let events = events(&mut Rng(7100 + seed), 400);
        let (join, on) = INTERVAL_JOINS[seed as usize % INTERVAL_JOINS.len()];
        let sql = format!(
            "{}SELECT o.k, o.v, s.v AS sv FROM o {join} s ON {on}",
            declarations()
        );
        let one = streamed(&sql, &events, &mut Rng(seed));
        let four = Replay::plan_on_lanes(&sql, 4).unwrap();
        assert_eq!(four.lanes(), 4, "{sql}");
        let (got, _) = streamed_with(four, &events, &mut Rng(seed));
        assert!(
            json_rows(&one).len() > 10,
            "seed {seed}: a meaningful answer"
        );
        assert_eq!(json_rows(&got), json_rows(&one), "seed {seed}: {sql}");
    }
    let ttl = format!(
        "{}SELECT o.k, o.v, s.v AS sv FROM o JOIN s ON o.k = s.k",
        declarations()
    );
    let events = events(&mut Rng(7300), 400);
    let plan = |lanes| {
        Replay::plan_on_lanes_with(&ttl, lanes, |r| r.state_ttl_ms = Some(3_600_000)).unwrap()
    };
    let (one, _) = streamed_with(plan(1), &events, &mut Rng(1));
    let four = plan(4);
    assert_eq!(four.lanes(), 4);
    let (got, _) = streamed_with(four, &events, &mut Rng(1));
    assert_eq!(json_rows(&got), json_rows(&one), "TTL join");
}

/// `events` fed to `sql` planned on `lanes` lanes as `stream` plans it (ORDER BY per emission,
/// GROUP BY emitting changes): the streams' events taken in turns of `block` events of one
/// stream (each stream's events in their order), so that micro-batches are large enough to be
/// cut into ranges on the lanes; `o`'s only when the query reads no `s`. Every non-empty batch
/// emitted, as JSON rows, in order.
fn batches_on_lanes(
    sql: &str,
    lanes: usize,
    events: &[(&str, String)],
    block: usize,
) -> Vec<Vec<String>> {
    let mut replay = Replay::plan_on_lanes_with(sql, lanes, |r| r.bounded = false)
        .unwrap_or_else(|e| panic!("{e}\n{sql}"));
    assert_eq!(replay.lanes(), lanes, "{sql}");
    let of = |stream: &str| -> Vec<&[u8]> {
        events
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.as_bytes())
            .collect()
    };
    let query = &sql[sql.rfind(";\n").map_or(0, |i| i + 2)..];
    let (o, s) = match query.contains(" s ") {
        true => (of("o"), of("s")),
        false => (of("o"), Vec::new()),
    };
    let mut out = Vec::new();
    for turn in 0..o.len().max(s.len()).div_ceil(block) {
        for (stream, rows) in [("o", &o), ("s", &s)] {
            let chunk = &rows[(turn * block).min(rows.len())..((turn + 1) * block).min(rows.len())];
            if !chunk.is_empty() {
                out.extend(replay.push_to(stream, chunk).unwrap());
            }
        }
    }
    out.extend(replay.finish().unwrap());
    out.iter()
        .map(|b| json_rows(std::slice::from_ref(b)))
        .filter(|rows| !rows.is_empty())
        .collect()
}

#[test]
fn window_joins_and_joins_fed_by_aggregates_on_four_lanes_give_one_lanes_rows_in_one_lanes_batches()
{
    // The join is not split by join key here: each side's branch is split as it can be (a
    // keyed window on the lanes, its windows merged back into one lane's batches; a row-wise
    // branch on the lanes, its ranges arriving as one batch; a global aggregate on the first
    // lane), and the join and what follows run on the first lane. Micro-batches of up to
    // 2 500 records are cut into ranges; one of 5 records is not.
    let counts = windowed("o", "COUNT(*) AS n", true);
    let totals = windowed("s", "SUM(d) AS total", true);
    let queries = [
        format!(
            "SELECT a.k, a.n, b.total, a.window_start FROM {counts} a JOIN {totals} b \
             ON a.k = b.k AND a.window_start = b.window_start"
        ),
        format!(
            "SELECT a.k, a.n, b.total, a.window_start FROM {counts} a FULL JOIN {totals} b \
             ON a.k = b.k AND a.window_end = b.window_end AND b.total > a.n"
        ),
        // Nexmark q5's shape: the right side is a keyed window, then an aggregate over it.
        format!(
            "SELECT a.k, a.n, m.maxn, a.window_start FROM {counts} a \
             JOIN (SELECT MAX(c.n) AS maxn, c.window_start AS starttime, c.window_end AS endtime \
                   FROM {counts} c GROUP BY c.window_start, c.window_end) m \
             ON a.window_start = m.starttime AND a.window_end = m.endtime AND a.n >= m.maxn"
        ),
        // Nexmark q7's shape: raw rows (row-wise) against each window's maximum (global).
        "SELECT o.k, o.v, m.top FROM o JOIN \
           (SELECT MAX(v) AS top, window_end AS ts FROM o GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)) m \
         ON o.v = m.top WHERE o.ts BETWEEN m.ts - INTERVAL '10' SECOND AND m.ts"
            .to_string(),
        // An updating aggregate after the join, on the first lane: it emits its changes
        // after every batch it is given, so it shows the join's batches.
        format!(
            "SELECT a.k, COUNT(*) AS windows, SUM(b.total) AS total, MAX(a.n) AS most \
             FROM {counts} a JOIN {totals} b ON a.k = b.k AND a.window_start = b.window_start \
             WHERE b.total > 0.5 GROUP BY a.k"
        ),
    ];
    for (seed, query) in queries.iter().enumerate() {
        let events = events(&mut Rng(9100 + seed as u64), 12_000);
        let sql = format!("{}{query}", declarations());
        for block in [5, 2_500] {
            let one = batches_on_lanes(&sql, 1, &events, block);
            let rows: usize = one.iter().map(Vec::len).sum();
            assert!(rows > 5, "{query}: a meaningful answer");
            assert_eq!(
                batches_on_lanes(&sql, 4, &events, block),
                one,
                "{block}: {query}"
            );
        }
    }
}

/// Interval join `seed` of [`INTERVAL_JOINS`] (from `shape` on) over 240 events, stopped
/// after 120: its snapshot changed by `change` (an older format), restored into a fresh plan
/// that reads on. Asserts the rows equal an uninterrupted run's; returns the state (rows,
/// bytes) held before the stop and after the restore.
fn restored_midway(
    seed: u64,
    shape: usize,
    change: impl Fn(&mut velostream::job::checkpoint::Checkpoint),
) -> ((u64, u64), (u64, u64)) {
    let events = events(&mut Rng(seed * 1000 + 100), 240);
    let (join, on) = INTERVAL_JOINS[(seed as usize + shape) % INTERVAL_JOINS.len()];
    let sql = format!(
        "{}SELECT o.k, o.v, s.v AS sv FROM o {join} s ON {on}",
        declarations()
    );
    let whole = streamed(&sql, &events, &mut Rng(seed));
    let (first, second) = events.split_at(120);
    let mut before = Replay::plan(&sql).unwrap();
    let mut got = feed(&mut before, first, &mut Rng(seed));
    let mut state = before.snapshot().unwrap();
    change(&mut state);
    let mut after = Replay::plan(&sql).unwrap();
    after.restore(&state, before.next_offset()).unwrap();
    let held = |r: &Replay| (r.metrics().state_rows, r.metrics().state_bytes);
    let states = (held(&before), held(&after));
    got.extend(feed(&mut after, second, &mut Rng(seed + 1)));
    got.extend(after.finish().unwrap());
    assert_eq!(
        sorted_json_rows(&got),
        sorted_json_rows(&whole),
        "seed {seed}: {sql}"
    );
    states
}

#[test]
fn an_interval_join_restored_from_a_snapshot_continues_exactly() {
    for seed in 0..6u64 {
        let ((rows, bytes), (rows_after, bytes_after)) = restored_midway(seed, 0, |_| {});
        assert!(rows > 0, "seed {seed}: rows held across the checkpoint");
        // The restored rows are counted once each: no more state than was held.
        assert_eq!(rows_after, rows);
        assert!(
            bytes_after <= bytes,
            "seed {seed}: {bytes_after} bytes restored from {bytes}"
        );
    }
}

#[test]
fn an_interval_join_restored_from_a_checkpoint_older_than_arrival_numbers_continues_exactly() {
    // Checkpoints written before joins numbered their arrivals hold each side's rows without
    // `__arrival` and `__position`, and no next arrival number.
    for seed in 0..4u64 {
        let ((rows, _), _) = restored_midway(seed, 1, |state| {
            let join_state = &mut state.operators[0].batches;
            for side in [1, 2] {
                let columns = join_state[side].num_columns();
                assert_eq!(
                    join_state[side].schema().field(columns - 1).name(),
                    "__position"
                );
                join_state[side] = join_state[side]
                    .project(&(0..columns - 2).collect::<Vec<_>>())
                    .unwrap();
            }
            assert_eq!(
                join_state.pop().unwrap().schema().field(0).name(),
                "next_arrival"
            );
        });
        assert!(rows > 0, "seed {seed}: rows held across the checkpoint");
    }
}

#[test]
fn updating_joins_with_a_state_ttl_equal_datafusion_inner_joins() {
    for seed in 0..4u64 {
        let mut rng = Rng(5100 + seed);
        let events = events(&mut rng, 200);
        let on = ["o.k = s.k", "o.k = s.k AND o.d = s.d AND s.v > o.v"][seed as usize % 2];
        let select = format!("SELECT o.k, o.v, s.v AS sv, s.d FROM o JOIN s ON {on}");
        // A TTL far longer than the test: nothing is forgotten, so the result is the batch join.
        let replay = Replay::plan_with(&format!("{}{select}", declarations()), |r| {
            r.state_ttl_ms = Some(3_600_000)
        })
        .unwrap();
        let (got, held) = streamed_with(replay, &events, &mut rng);
        assert_eq!(
            held,
            200 - events
                .iter()
                .filter(|(_, l)| l.contains(r#""k":null"#))
                .count() as u64
        );
        let want = batch_answer(&events, &select);
        assert_eq!(
            sorted_json_rows(&got),
            sorted_json_rows(&want),
            "seed {seed}: {select}"
        );
    }
}

#[test]
fn a_join_with_a_state_ttl_forgets_rows_older_than_the_ttl() {
    let sql = format!(
        "{}SELECT o.v, s.v AS sv FROM o JOIN s ON o.k = s.k",
        declarations()
    );
    let mut replay = Replay::plan_with(&sql, |r| r.state_ttl_ms = Some(50)).unwrap();
    let row = |v: i64| format!(r#"{{"k":"a","d":"1.0","v":{v},"ts":1700000000000}}"#);
    assert!(replay
        .push_to("o", &[row(1).as_bytes()])
        .unwrap()
        .is_empty());
    let joined = replay.push_to("s", &[row(2).as_bytes()]).unwrap();
    assert_eq!(sorted_json_rows(&joined), vec![r#"{"v":1,"sv":2}"#]);
    std::thread::sleep(std::time::Duration::from_millis(120));
    let late = replay.push_to("s", &[row(3).as_bytes()]).unwrap();
    assert!(
        sorted_json_rows(&late).is_empty(),
        "row 1 was forgotten: {late:?}"
    );
}

/// (A join without bounds and one with a single bound are case files in `tests/sql_cases`.)
#[test]
fn a_state_ttl_is_refused_for_an_outer_join_of_two_streams() {
    let outer_ttl = format!(
        "{}SELECT o.v, s.v FROM o LEFT JOIN s ON o.k = s.k",
        declarations()
    );
    let err = Replay::plan_with(&outer_ttl, |r| r.state_ttl_ms = Some(1000))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("INNER only"), "{err}");
}

#[test]
fn aggregates_and_filters_over_a_window_join_equal_datafusion() {
    for seed in 0..4u64 {
        let mut rng = Rng(8800 + seed);
        let events = events(&mut rng, 300);
        let query = |streaming: bool| {
            format!(
                "SELECT a.k, COUNT(*) AS windows, SUM(b.total) AS total, MAX(a.n) AS most \
                 FROM {} a JOIN {} b ON a.k = b.k AND a.window_start = b.window_start \
                 WHERE b.total > 0.5 GROUP BY a.k",
                windowed("o", "COUNT(*) AS n", streaming),
                windowed("s", "SUM(d) AS total", streaming),
            )
        };
        compare_windowed(&events, &mut rng, query, seed);
    }
}

#[test]
fn an_interval_join_enriched_by_a_table_equals_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.csv");
    std::fs::write(&path, "k,label\nhot,H\nk5,five\nk7,seven\n").unwrap();
    for seed in 0..3u64 {
        let mut rng = Rng(6600 + seed);
        let events = events(&mut rng, 240);
        let select = "SELECT o.k, o.v, s.v AS sv, t.label FROM o \
             JOIN s ON o.k = s.k AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '5' SECOND \
             LEFT JOIN t ON o.k = t.k";
        let sql = format!(
            "{}CREATE TABLE t (k VARCHAR, label VARCHAR) WITH ('path' = '{}', 'format' = 'csv');\n{select}",
            declarations(),
            path.display()
        );
        let (got, _) = streamed_keeping(Replay::plan(&sql).unwrap(), &events, &mut rng, 3);
        let want = batch_answer_with(&events, select, &[("t", &path)]);
        assert_same(&got, &want, &format!("seed {seed}"));
    }
}

#[test]
fn streams_enriched_by_a_table_on_four_lanes_give_one_lanes_rows_in_one_lanes_batches() {
    // A lookup join is row-wise: every lane's copy holds the table, so a micro-batch cut into
    // ranges is enriched as one lane enriches it, before a keyed window and after a join.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.csv");
    std::fs::write(&path, "k,label\nhot,H\nk5,five\nk7,seven\nk8,eight\n").unwrap();
    let table = format!(
        "CREATE TABLE t (k VARCHAR, label VARCHAR) WITH ('path' = '{}', 'format' = 'csv');\n",
        path.display()
    );
    let queries = [
        "SELECT o.k, o.v, t.label FROM o LEFT JOIN t ON o.k = t.k WHERE o.v % 3 <> 0",
        "SELECT t.label, COUNT(*) AS n, SUM(o.d) AS total, window_start FROM o JOIN t ON o.k = t.k \
         GROUP BY t.label, TUMBLE(o.ts, INTERVAL '10' SECOND)",
        "SELECT o.k, o.v, s.v AS sv, t.label FROM o \
         JOIN s ON o.k = s.k AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '5' SECOND \
         LEFT JOIN t ON o.k = t.k",
    ];
    for (seed, query) in queries.iter().enumerate() {
        let events = events(&mut Rng(9300 + seed as u64), 12_000);
        let sql = format!("{}{table}{query}", declarations());
        for block in [5, 2_500] {
            let one = batches_on_lanes(&sql, 1, &events, block);
            let rows: usize = one.iter().map(Vec::len).sum();
            assert!(rows > 5, "{query}: a meaningful answer");
            let four = batches_on_lanes(&sql, 4, &events, block);
            match seed {
                // Row-wise: each range's rows are a batch of their own; rows and order count.
                0 => assert_eq!(four.concat(), one.concat(), "{block}: {query}"),
                _ => assert_eq!(four, one, "{block}: {query}"),
            }
        }
    }
}

#[test]
fn a_windowed_count_enriched_by_an_aggregated_table_runs_and_equals_datafusion() {
    // The table side's GROUP BY is a batch query run once, not an updating aggregate.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("levels.csv");
    std::fs::write(&path, "k,level\nhot,1\nhot,5\nk5,2\nk7,3\n").unwrap();
    let mut rng = Rng(9100);
    let events = o_events(&mut rng, 240);
    let query = |streaming: bool| {
        let (window, start) = window_10s("o.ts", streaming);
        format!(
            "SELECT o.k, t.top, COUNT(*) AS n, {start} FROM o \
             JOIN (SELECT k, MAX(level) AS top FROM t GROUP BY k) t ON o.k = t.k \
             GROUP BY o.k, t.top, {window}"
        )
    };
    let sql = format!(
        "{}CREATE TABLE t (k VARCHAR, level BIGINT) WITH ('path' = '{}', 'format' = 'csv');\n{}",
        declarations(),
        path.display(),
        query(true)
    );
    let replay = Replay::plan(&sql).unwrap_or_else(|e| panic!("{e}\n{sql}"));
    let (got, _) = streamed_keeping(replay, &events, &mut rng, 3);
    let want = batch_answer_with(&events, &query(false), &[("t", &path)]);
    assert_same(&got, &want, "aggregated table");
}

#[test]
fn emit_changes_is_refused_for_an_aggregate_over_a_windows_rows() {
    let sql = format!(
        "{}SELECT MAX(c.n) AS most, c.window_end FROM {} c GROUP BY c.window_end EMIT CHANGES",
        declarations(),
        windowed("o", "COUNT(*) AS n", true)
    );
    let error = Replay::plan(&sql).err().expect("refused").to_string();
    assert!(error.contains("remove EMIT CHANGES"), "{error}");
}

#[test]
fn a_windowed_count_distinct_runs_on_a_stream_and_equals_datafusion() {
    // DataFusion plans COUNT(DISTINCT …) as a GROUP BY over a windowed GROUP BY.
    for seed in 0..3u64 {
        let mut rng = Rng(9300 + seed);
        let events = o_events(&mut rng, 300);
        let query = |streaming: bool| {
            let (window, start) = window_10s("ts", streaming);
            format!("SELECT k, COUNT(DISTINCT d) AS amounts, {start} FROM o GROUP BY k, {window}")
        };
        compare_windowed_while_running(&events, &mut rng, query, seed);
    }
}
