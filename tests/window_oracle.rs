//! Oracle tests for windowed aggregation: for random keyed inputs — out of order within the
//! allowed lateness, with duplicate timestamps, empty windows and decimal values — the streaming
//! result, run in micro-batches of random sizes, must equal DataFusion's batch result over the
//! same finite input, exactly (as multisets of rows). A second property: a pipeline restored
//! from a snapshot taken mid-stream continues exactly as an uninterrupted one.

use datafusion::prelude::SessionContext;
use velostream::replay::Replay;

mod oracle;
use oracle::{assert_same_rows, register_json_table, sorted_json_rows, Rng};

const BASE_MS: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z
const LATENESS_MS: i64 = 3_000;

struct Record {
    k: String,
    v_units: i64, // DECIMAL(12,3) units
    ts: i64,
}

/// Random records in arrival order: event times mostly increasing with duplicates and gaps
/// (empty windows), then reordered by at most LATENESS_MS.
fn records(rng: &mut Rng, n: usize) -> Vec<Record> {
    let keys = ["alpha", "beta", "gamma", "delta", "eps"];
    let mut t = BASE_MS + rng.below(10_000) as i64;
    let mut out: Vec<(i64, Record)> = Vec::new();
    for _ in 0..n {
        t += match rng.below(10) {
            0..=2 => 0,                             // duplicate timestamp
            3 => 20_000 + rng.below(40_000) as i64, // a gap: empty windows
            _ => rng.below(1_500) as i64,
        };
        // Skewed keys: alpha about half the time.
        let k = if rng.below(2) == 0 {
            keys[0]
        } else {
            keys[rng.below(5) as usize]
        };
        let v_units = rng.below(2_000_000) as i64 - 1_000_000;
        let arrival = t + rng.below(LATENESS_MS as u64 + 1) as i64;
        out.push((
            arrival,
            Record {
                k: k.to_string(),
                v_units,
                ts: t,
            },
        ));
    }
    out.sort_by_key(|(arrival, _)| *arrival);
    out.into_iter().map(|(_, r)| r).collect()
}

fn decimal(units: i64) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let u = units.abs();
    format!("{sign}{}.{:03}", u / 1000, u % 1000)
}

fn json_lines(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            format!(
                r#"{{"k":"{}","v":"{}","ts":{},"tms":{}}}"#,
                r.k,
                decimal(r.v_units),
                r.ts,
                r.ts
            )
        })
        .collect()
}

const COLUMNS: &str = "k VARCHAR, v DECIMAL(12,3), ts TIMESTAMP, tms BIGINT";

/// Runs the streaming query over `lines` in random micro-batches.
fn streaming(sql: &str, lines: &[String], rng: &mut Rng) -> Vec<String> {
    let mut replay = Replay::plan(sql).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let n = 1 + rng.below(25) as usize;
        let chunk: Vec<&[u8]> = lines[i..(i + n).min(lines.len())]
            .iter()
            .map(|l| l.as_bytes())
            .collect();
        i += n;
        out.extend(replay.push(&chunk).unwrap());
    }
    out.extend(replay.finish().unwrap());
    assert_eq!(replay.bad_records, 0);
    sorted_json_rows(&out)
}

/// Runs `sql` in DataFusion over the records as one table `t` (plus `extra` rows for `x`).
fn batch_oracle(sql: &str, lines: &[String], extra: Option<(&str, Vec<String>)>) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ctx = SessionContext::new();
    register_json_table(&ctx, "t", COLUMNS, lines);
    if let Some((columns, rows)) = &extra {
        register_json_table(&ctx, "x", columns, rows);
    }
    let batches = rt.block_on(async { ctx.sql(sql).await.unwrap().collect().await.unwrap() });
    sorted_json_rows(&batches)
}

fn stream_sql(window: &str) -> String {
    format!(
        "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{LATENESS_MS}' MILLISECOND);\n\
         SELECT window_start, window_end, k, COUNT(*) AS n, SUM(v) AS total, MIN(v) AS lo, MAX(v) AS hi, AVG(v) AS mean, COUNT(DISTINCT tms) AS instants\n\
         FROM t GROUP BY k WINDOW {window}"
    )
}

const AGGREGATES: &str = "COUNT(*) AS n, SUM(v) AS total, MIN(v) AS lo, MAX(v) AS hi, AVG(v) AS mean, COUNT(DISTINCT tms) AS instants";

#[test]
fn tumbling_windows_equal_datafusion_date_bin() {
    for seed in 0..12 {
        let mut rng = Rng(seed);
        let size = [1_000, 5_000, 60_000][seed as usize % 3];
        let lines = json_lines(&records(&mut rng, 300));
        let got = streaming(
            &stream_sql(&format!("TUMBLING(ts, {size}ms)")),
            &lines,
            &mut rng,
        );
        let want = batch_oracle(
            &format!(
                "SELECT date_bin(INTERVAL '{size} milliseconds', ts, TIMESTAMP '1970-01-01T00:00:00') AS window_start, \
                        date_bin(INTERVAL '{size} milliseconds', ts, TIMESTAMP '1970-01-01T00:00:00') + INTERVAL '{size} milliseconds' AS window_end, \
                        k, {AGGREGATES} FROM t GROUP BY 1, 2, k"
            ),
            &lines,
            None,
        );
        assert!(!want.is_empty());
        assert_eq!(got, want, "seed {seed}, size {size}");
    }
}

#[test]
fn sliding_windows_equal_datafusion_over_exploded_windows() {
    for seed in 0..10 {
        let mut rng = Rng(100 + seed);
        let (size, slide) = [(10_000, 2_000), (6_000, 3_000), (4_000, 4_000)][seed as usize % 3];
        let recs = records(&mut rng, 200);
        let lines = json_lines(&recs);
        let got = streaming(
            &stream_sql(&format!("SLIDING(ts, {size}ms, {slide}ms)")),
            &lines,
            &mut rng,
        );
        // Each record once per window that holds it, computed here independently.
        let mut exploded = Vec::new();
        for r in &recs {
            let mut start = r.ts - r.ts.rem_euclid(slide);
            while start > r.ts - size {
                exploded.push(format!(
                    r#"{{"ws":{start},"we":{},"k":"{}","v":"{}","tms":{}}}"#,
                    start + size,
                    r.k,
                    decimal(r.v_units),
                    r.ts
                ));
                start -= slide;
            }
        }
        let want = batch_oracle(
            &format!("SELECT ws AS window_start, we AS window_end, k, {AGGREGATES} FROM x GROUP BY ws, we, k"),
            &lines,
            Some(("ws TIMESTAMP, we TIMESTAMP, k VARCHAR, v DECIMAL(12,3), tms BIGINT", exploded)),
        );
        assert_eq!(got, want, "seed {seed}, size {size}, slide {slide}");
    }
}

#[test]
fn session_windows_equal_datafusion_sessionisation() {
    for seed in 0..10 {
        let mut rng = Rng(200 + seed);
        let gap = [1_000, 2_500, 20_000][seed as usize % 3];
        let lines = json_lines(&records(&mut rng, 250));
        let got = streaming(
            &stream_sql(&format!("SESSION(ts, {gap}ms)")),
            &lines,
            &mut rng,
        );
        let want = batch_oracle(
            &format!(
                "WITH marked AS (
                   SELECT k, v, ts, tms,
                          CASE WHEN tms - LAG(tms) OVER (PARTITION BY k ORDER BY tms) < {gap} THEN 0 ELSE 1 END AS brk
                   FROM t),
                 numbered AS (
                   SELECT *, SUM(brk) OVER (PARTITION BY k ORDER BY tms, brk DESC ROWS UNBOUNDED PRECEDING) AS sid FROM marked)
                 SELECT MIN(ts) AS window_start, MAX(ts) + INTERVAL '{gap} milliseconds' AS window_end, k, {AGGREGATES}
                 FROM numbered GROUP BY k, sid"
            ),
            &lines,
            None,
        );
        assert_eq!(got, want, "seed {seed}, gap {gap}");
    }
}

/// Records with event times unique per key (ROWS frames and LAG/LEAD depend on the order of
/// ties, which SQL leaves open), out of order within the lateness.
fn records_unique_times(rng: &mut Rng, n: usize) -> Vec<Record> {
    let mut recs = records(rng, n);
    let mut seen = std::collections::HashSet::new();
    for r in recs.iter_mut() {
        while !seen.insert((r.k.clone(), r.ts)) {
            r.ts += 1;
        }
    }
    recs
}

const OVER: &str = "PARTITION BY k ORDER BY ts";

fn over_select(table: &str) -> String {
    format!(
        "SELECT k, ts, v, \
           AVG(v) OVER ({OVER} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS avg4, \
           MIN(v) OVER ({OVER} ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS min3, \
           SUM(v) OVER ({OVER} RANGE BETWEEN INTERVAL '5' SECOND PRECEDING AND CURRENT ROW) AS sum5s, \
           COUNT(*) OVER ({OVER} RANGE BETWEEN INTERVAL '5' SECOND PRECEDING AND CURRENT ROW) AS n5s, \
           ROW_NUMBER() OVER ({OVER}) AS rn, RANK() OVER ({OVER}) AS rk, \
           LAG(v, 2) OVER ({OVER}) AS lag2, LEAD(v) OVER ({OVER}) AS lead1, \
           FIRST_VALUE(v) OVER ({OVER} ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS first3 \
         FROM {table}"
    )
}

#[test]
fn over_windows_equal_datafusion_over_the_whole_input() {
    for seed in 0..10 {
        let mut rng = Rng(400 + seed);
        let lines = json_lines(&records_unique_times(&mut rng, 250));
        let sql = format!(
            "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{LATENESS_MS}' MILLISECOND);\n{}",
            over_select("t")
        );
        let got = streaming(&sql, &lines, &mut rng);
        let want = batch_oracle(&over_select("t"), &lines, None);
        assert_eq!(got.len(), lines.len(), "every row once");
        assert_same_rows(&got, &want, &format!("seed {seed}"));
    }
}

/// `lines` with `v` NULL in line `at` of every `every`.
fn with_null_values(lines: Vec<String>, every: usize, at: usize) -> Vec<String> {
    lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            if i % every != at {
                return line;
            }
            let start = line.find(r#""v":""#).unwrap();
            let end = start + 5 + line[start + 5..].find('"').unwrap() + 1;
            format!("{}\"v\":null{}", &line[..start], &line[end..])
        })
        .collect()
}

/// Sliding aggregates over ROWS frames ending at the current row, which the operator computes
/// itself (columnar, every partition at once): integer and decimal arguments, NULLs, frames of
/// one row to more than the operator scans for MIN and MAX (those go to DataFusion).
fn sliding_select(table: &str) -> String {
    format!(
        "SELECT k, ts, v, \
           SUM(v) OVER ({OVER} ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS s4, \
           AVG(v) OVER ({OVER} ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS a3, \
           MIN(v) OVER ({OVER} ROWS BETWEEN 5 PRECEDING AND CURRENT ROW) AS lo6, \
           MAX(v) OVER ({OVER} ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS hi2, \
           COUNT(v) OVER ({OVER} ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS n5, \
           COUNT(*) OVER ({OVER} ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS all5, \
           SUM(tms) OVER ({OVER} ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS t3, \
           MAX(tms - 1704067200000) OVER ({OVER} ROWS BETWEEN 0 PRECEDING AND CURRENT ROW) AS t1, \
           AVG(v) OVER ({OVER} ROWS BETWEEN 100 PRECEDING AND CURRENT ROW) AS a101, \
           MIN(v) OVER ({OVER} ROWS BETWEEN 80 PRECEDING AND CURRENT ROW) AS lo81 \
         FROM {table}"
    )
}

#[test]
fn sliding_aggregates_computed_by_the_operator_equal_datafusion_to_the_last_digit() {
    for seed in 0..10 {
        let mut rng = Rng(700 + seed);
        let records = records_unique_times(&mut rng, 400);
        // One value in seven is NULL: a frame may hold none.
        let lines = with_null_values(json_lines(&records), 7, 3);
        assert!(lines[3].contains(r#""v":null"#), "{}", lines[3]);
        let sql = format!(
            "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{LATENESS_MS}' MILLISECOND);\n{}",
            sliding_select("t")
        );
        let got = streaming(&sql, &lines, &mut rng);
        let want = batch_oracle(&sliding_select("t"), &lines, None);
        assert_eq!(got.len(), lines.len(), "every row once");
        assert_same_rows(&got, &want, &format!("seed {seed}"));
    }
}

/// Sliding aggregates over RANGE frames of event time, which the operator computes itself too:
/// a frame reaches back through the interval and forward to the current row's last peer (rows
/// with the same event time, which the input has plenty of).
fn sliding_range_select(table: &str) -> String {
    format!(
        "SELECT k, ts, v, \
           SUM(v) OVER ({OVER} RANGE BETWEEN INTERVAL '5' SECOND PRECEDING AND CURRENT ROW) AS s5, \
           AVG(v) OVER ({OVER} RANGE BETWEEN INTERVAL '3' SECOND PRECEDING AND CURRENT ROW) AS a3, \
           MIN(v) OVER ({OVER} RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS lo10, \
           MAX(v) OVER ({OVER} RANGE BETWEEN INTERVAL '1500' MILLISECOND PRECEDING AND CURRENT ROW) AS hi, \
           COUNT(v) OVER ({OVER} RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW) AS n2, \
           COUNT(*) OVER ({OVER} RANGE BETWEEN INTERVAL '0' SECOND PRECEDING AND CURRENT ROW) AS peers, \
           SUM(tms) OVER ({OVER} RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW) AS t60 \
         FROM {table}"
    )
}

#[test]
fn sliding_aggregates_over_range_frames_with_peers_equal_datafusion_to_the_last_digit() {
    for seed in 0..10 {
        let mut rng = Rng(800 + seed);
        // Duplicate event times within a key: peers, which a RANGE frame takes whole.
        let records = records(&mut rng, 400);
        let lines = with_null_values(json_lines(&records), 6, 2);
        let sql = format!(
            "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{LATENESS_MS}' MILLISECOND);\n{}",
            sliding_range_select("t")
        );
        let got = streaming(&sql, &lines, &mut rng);
        let want = batch_oracle(&sliding_range_select("t"), &lines, None);
        assert_eq!(got.len(), lines.len(), "every row once");
        assert_same_rows(&got, &want, &format!("seed {seed}"));
    }
}

/// OVER functions whose frames look only backwards: a row's result is final once the
/// watermark passes it.
fn over_backwards_select(table: &str) -> String {
    format!(
        "SELECT k, tms, v, \
           AVG(v) OVER ({OVER} ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS avg5, \
           SUM(v) OVER ({OVER} RANGE BETWEEN INTERVAL '5' SECOND PRECEDING AND CURRENT ROW) AS sum5s, \
           ROW_NUMBER() OVER ({OVER}) AS rn, LAG(v) OVER ({OVER}) AS lag1 \
         FROM {table}"
    )
}

#[test]
fn over_windows_emit_each_row_once_the_watermark_passes_it() {
    for seed in 0..8 {
        let mut rng = Rng(500 + seed);
        let recs = records_unique_times(&mut rng, 250);
        let lines = json_lines(&recs);
        let sql = format!(
            "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{LATENESS_MS}' MILLISECOND);\n{}",
            over_backwards_select("t")
        );
        let want = batch_oracle(&over_backwards_select("t"), &lines, None);
        let time_of = |row: &String| -> i64 {
            let v: serde_json::Value = serde_json::from_str(row).unwrap();
            v["tms"].as_i64().unwrap()
        };
        let mut replay = Replay::plan(&sql).unwrap();
        let mut emitted = Vec::new();
        let (mut i, mut max_seen) = (0, i64::MIN);
        while i < recs.len() {
            let n = 1 + rng.below(25) as usize;
            let end = (i + n).min(recs.len());
            let chunk: Vec<&[u8]> = lines[i..end].iter().map(|l| l.as_bytes()).collect();
            max_seen = recs[i..end].iter().map(|r| r.ts).fold(max_seen, i64::max);
            i = end;
            emitted.extend(replay.push(&chunk).unwrap());
            // While the stream runs: exactly the rows behind the watermark, with their final
            // values.
            let watermark = max_seen - LATENESS_MS;
            let due: Vec<String> = want
                .iter()
                .filter(|row| time_of(row) < watermark)
                .cloned()
                .collect();
            assert_same_rows(
                &sorted_json_rows(&emitted),
                &due,
                &format!("seed {seed}, after {i} records"),
            );
        }
        emitted.extend(replay.finish().unwrap());
        assert_same_rows(
            &sorted_json_rows(&emitted),
            &want,
            &format!("seed {seed}, at the end"),
        );
    }
}

/// `lines` with the key NULL in line `at` of every `every`.
fn with_null_keys(lines: Vec<String>, every: usize, at: usize) -> Vec<String> {
    lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| match i % every == at {
            true => {
                let end = line.find(r#","v""#).unwrap();
                format!("{{\"k\":null{}", &line[end..])
            }
            false => line,
        })
        .collect()
}

/// `sql` planned on `lanes` lanes, fed `lines` in the micro-batches `rng` cuts, snapshotted
/// and restored into a fresh plan after `stop` lines: every batch it emitted, in order.
fn over_lanes_run(
    sql: &str,
    lanes: usize,
    lines: &[String],
    rng: &mut Rng,
    stop: usize,
) -> Vec<String> {
    let plan = || Replay::plan_on_lanes(sql, lanes).unwrap();
    let mut replay = plan();
    assert_eq!(replay.lanes(), lanes, "{sql}");
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let n = 1 + rng.below(40) as usize;
        let end = (i + n).min(lines.len());
        let chunk: Vec<&[u8]> = lines[i..end].iter().map(|l| l.as_bytes()).collect();
        out.extend(oracle::json_rows(&replay.push(&chunk).unwrap()));
        if i < stop && end >= stop {
            let state = replay.snapshot().unwrap();
            replay = plan();
            replay.restore(&state, end as i64).unwrap();
        }
        i = end;
    }
    out.extend(oracle::json_rows(&replay.finish().unwrap()));
    out
}

#[test]
fn over_windows_on_four_lanes_give_one_lanes_rows_in_one_lanes_order() {
    // Partitions change lanes by key; what the lanes release is merged back into one lane's
    // order: event time, then partition key (many rows share an event time across keys here),
    // each partition's rows in its own order. LEAD and FOLLOWING rows wait for followers and
    // come out at the end of the input; some keys are NULL (a partition of their own); the run
    // is checkpointed and restored midway, on four lanes and on one.
    for seed in 0..6u64 {
        let mut rng = Rng(900 + seed);
        let lines = with_null_keys(json_lines(&records(&mut rng, 500)), 11, 4);
        assert!(lines[4].starts_with(r#"{"k":null,"v""#), "{}", lines[4]);
        let select = match seed % 2 {
            0 => over_select("t"),
            _ => sliding_range_select("t"),
        };
        let sql = format!(
            "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{LATENESS_MS}' MILLISECOND);\n{select}"
        );
        let one = over_lanes_run(&sql, 1, &lines, &mut Rng(seed), 250);
        let four = over_lanes_run(&sql, 4, &lines, &mut Rng(seed), 250);
        assert_eq!(one.len(), lines.len(), "seed {seed}: every row once");
        assert_eq!(four, one, "seed {seed}: {sql}");
    }
}

#[test]
fn a_checkpoint_of_lanes_split_otherwise_is_refused_not_restored_into_the_wrong_lanes() {
    // Each lane's state is its keys': restored into a query split another way (another build
    // or plan), lane states would be read as keys they do not hold.
    let sql = format!(
        "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{LATENESS_MS}' MILLISECOND);\n{}",
        over_select("t")
    );
    let lines = json_lines(&records(&mut Rng(77), 100));
    let payloads: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    let mut replay = Replay::plan_on_lanes(&sql, 4).unwrap();
    replay.push(&payloads).unwrap();
    let mut state = replay.snapshot().unwrap();
    assert_eq!(state.lanes, 4);
    let split = state
        .split
        .clone()
        .expect("a checkpoint of four lanes says how they split");
    assert!(split.starts_with("by key before operator"), "{split}");
    // The same split restores.
    Replay::plan_on_lanes(&sql, 4)
        .unwrap()
        .restore(&state, lines.len() as i64)
        .unwrap();
    state.split = Some("by join key".into());
    let refused = Replay::plan_on_lanes(&sql, 4)
        .unwrap()
        .restore(&state, lines.len() as i64)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("split as 'by join key'") && refused.contains(&format!("'{split}'")),
        "{refused}"
    );
}

/// `lines` fed to `sql` planned on `lanes` lanes as `stream` plans it (ORDER BY sorts each
/// emission, GROUP BY emits changes), in micro-batches of 1 to `most` records (random, from
/// `seed`): every non-empty batch emitted, as JSON rows, in order.
fn batches_on_lanes(
    sql: &str,
    lanes: usize,
    lines: &[String],
    seed: u64,
    most: u64,
) -> Vec<Vec<String>> {
    let mut replay = Replay::plan_on_lanes_with(sql, lanes, |r| r.bounded = false).unwrap();
    assert_eq!(replay.lanes(), lanes, "{sql}");
    let mut rng = Rng(seed);
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let end = (i + 1 + rng.below(most) as usize).min(lines.len());
        let chunk: Vec<&[u8]> = lines[i..end].iter().map(|l| l.as_bytes()).collect();
        out.extend(
            replay
                .push(&chunk)
                .unwrap()
                .into_iter()
                .map(|b| oracle::json_rows(&[b])),
        );
        i = end;
    }
    out.extend(
        replay
            .finish()
            .unwrap()
            .into_iter()
            .map(|b| oracle::json_rows(&[b])),
    );
    // The sink writes nothing for an empty batch.
    out.retain(|rows| !rows.is_empty());
    out
}

#[test]
fn operators_after_a_keyed_window_on_four_lanes_give_one_lanes_rows_in_one_lanes_batches() {
    // The windows are computed on four lanes, keys split among them; what closes is merged
    // and cut back into one lane's batches (a batch per window), which the operators after it
    // see on the first lane. An aggregate over the windows' rows, an updating aggregate that
    // emits its changes after every batch, and an ORDER BY that sorts each batch would all
    // give other rows if they saw other batches.
    let inner = "SELECT k, COUNT(*) AS n, SUM(v) AS total, window_start, window_end FROM t \
                 GROUP BY k, HOP(ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND)";
    let selects = [
        format!(
            "SELECT c.window_start, MAX(c.n) AS busiest, SUM(c.total) AS total, COUNT(*) AS keys \
             FROM ({inner}) c GROUP BY c.window_start, c.window_end"
        ),
        format!(
            "SELECT c.k, COUNT(*) AS windows, SUM(c.total) AS total FROM ({inner}) c GROUP BY c.k"
        ),
        "SELECT k, window_start, COUNT(*) AS n, SUM(v) AS total FROM t \
         GROUP BY k, TUMBLE(ts, INTERVAL '5' SECOND) ORDER BY n DESC, total"
            .to_string(),
    ];
    for (seed, select) in selects.iter().enumerate() {
        let mut rng = Rng(950 + seed as u64);
        let lines = with_null_keys(json_lines(&records(&mut rng, 600)), 13, 5);
        let sql = format!(
            "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{LATENESS_MS}' MILLISECOND);\n{select}"
        );
        let batches = |lanes| batches_on_lanes(&sql, lanes, &lines, seed as u64, 40);
        let one = batches(1);
        assert!(one.len() > 20, "{select}: a meaningful answer");
        assert_eq!(batches(4), one, "{select}");
    }
}

#[test]
fn a_pipeline_restored_mid_stream_continues_exactly() {
    for (seed, window) in [
        (1, "TUMBLING(ts, 5s)"),
        (2, "SLIDING(ts, 10s, 5s)"),
        (3, "SESSION(ts, 2s)"),
        (4, "OVER"),
    ] {
        let mut rng = Rng(300 + seed);
        let lines = json_lines(&records(&mut rng, 200));
        let sql = if window == "OVER" {
            format!(
                "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{LATENESS_MS}' MILLISECOND);\n{}",
                over_select("t")
            )
        } else {
            stream_sql(window)
        };
        let payloads: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        let (first, second) = payloads.split_at(120);

        let mut uninterrupted = Replay::plan(&sql).unwrap();
        let mut expected = uninterrupted.push(first).unwrap();
        expected.extend(uninterrupted.push(second).unwrap());
        expected.extend(uninterrupted.finish().unwrap());

        let mut before = Replay::plan(&sql).unwrap();
        let mut got = before.push(first).unwrap();
        let state = before.snapshot().unwrap();
        // The snapshot left the running pipeline intact too.
        drop(before);
        let mut after = Replay::plan(&sql).unwrap();
        after.restore(&state, first.len() as i64).unwrap();
        got.extend(after.push(second).unwrap());
        got.extend(after.finish().unwrap());
        assert_eq!(
            sorted_json_rows(&got),
            sorted_json_rows(&expected),
            "{window}"
        );
    }
}

#[test]
fn over_window_state_stays_bounded_while_the_stream_runs() {
    // RANGE frames keep the rows of the last interval; without ranking functions a partition
    // holding nothing is forgotten.
    let sql = format!(
        "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);\n\
         SELECT k, SUM(v) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '5' SECOND PRECEDING AND CURRENT ROW) AS s FROM t"
    );
    let mut replay = Replay::plan(&sql).unwrap();
    let mut emitted = 0;
    let mut peak = 0;
    for i in 0..3_000i64 {
        // A new key every 10 records, one record a second.
        let line = format!(
            r#"{{"k":"key{}","v":"1.000","ts":{},"tms":0}}"#,
            i / 10,
            BASE_MS + i * 1_000
        );
        emitted += replay
            .push(&[line.as_bytes()])
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>();
        peak = peak.max(replay.metrics().state_rows);
    }
    assert_eq!(
        emitted, 2_998,
        "every row but the last two is behind the watermark"
    );
    assert!(peak <= 10, "state peaked at {peak} rows");
}

#[test]
fn over_window_state_holds_only_live_rows_when_rare_keys_outlive_a_busy_one() {
    // Every micro-batch: 100 rows of a busy key, whose 5 s RANGE frame keeps about 500 rows,
    // and one row of a key seen only then, which its ROWS frame keeps for good. Each release
    // copies the kept rows of the partitions it touched; the rare keys must not pin the busy
    // key's superseded copies (that would be ~600 rows held per micro-batch, for ever).
    let select = format!(
        "SELECT k, tms, v, \
           SUM(v) OVER ({OVER} RANGE BETWEEN INTERVAL '5' SECOND PRECEDING AND CURRENT ROW) AS sum5s, \
           AVG(v) OVER ({OVER} ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg3 \
         FROM t"
    );
    let sql = format!(
        "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);\n{select}"
    );
    let mut replay = Replay::plan(&sql).unwrap();
    let (mut all, mut emitted) = (Vec::new(), Vec::new());
    let (mut peak_rows, mut peak_bytes) = (0, 0);
    for batch in 0..300i64 {
        let mut recs: Vec<Record> = (0..100)
            .map(|i| Record {
                k: "busy".into(),
                v_units: (batch * 100 + i) % 997 - 400,
                ts: BASE_MS + batch * 1_000 + i * 10,
            })
            .collect();
        recs.push(Record {
            k: format!("rare{batch}"),
            v_units: batch * 7,
            ts: BASE_MS + batch * 1_000 + 505,
        });
        let lines = json_lines(&recs);
        let chunk: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        emitted.extend(replay.push(&chunk).unwrap());
        all.extend(lines);
        let m = replay.metrics();
        peak_rows = peak_rows.max(m.state_rows);
        peak_bytes = peak_bytes.max(m.state_bytes);
    }
    emitted.extend(replay.finish().unwrap());
    assert_same_rows(
        &sorted_json_rows(&emitted),
        &batch_oracle(&select, &all, None),
        "rare keys and a busy one",
    );
    // Live: ~500 busy rows in the frame, ~100 not yet released, one row per rare key.
    assert!(peak_rows <= 1_000, "state peaked at {peak_rows} rows");
    // Held: at most twice the live rows plus 8192 (the compaction slack), ~50 bytes each.
    assert!(
        peak_bytes <= 1_500_000,
        "state peaked at {peak_bytes} bytes"
    );
}

#[test]
fn stateful_operators_without_keys_on_four_lanes_give_one_lanes_rows_in_one_lanes_batches() {
    // The first stateful operator has no key to split by: micro-batches of up to 5 000
    // records are cut into ranges, decoded and filtered on four lanes, and their rows gathered
    // into one batch for the operator on the first lane. Global windows, an updating total
    // that emits after every batch, OVER without PARTITION BY and LIMIT would give
    // other rows, or other batches, if they saw other rows or batches than one lane's.
    let selects = [
        "SELECT COUNT(*) AS n, SUM(v) AS total, MIN(v) AS low, MAX(v) AS high, window_start \
         FROM t WHERE k <> 'beta' GROUP BY TUMBLE(ts, INTERVAL '5' SECOND)",
        "SELECT COUNT(*) AS n, AVG(v) AS mean, window_start, window_end FROM t \
         GROUP BY HOP(ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND)",
        "SELECT COUNT(*) AS n, SUM(v) AS total, COUNT(k) AS keyed FROM t WHERE v > 1",
        "SELECT k, ts, v, SUM(v) OVER (ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s3, \
         ROW_NUMBER() OVER (ORDER BY ts) AS rn FROM t",
        "SELECT k, v, tms FROM t WHERE k = 'alpha' LIMIT 3000",
    ];
    for (seed, select) in selects.iter().enumerate() {
        let mut rng = Rng(1950 + seed as u64);
        let lines = with_null_keys(json_lines(&records(&mut rng, 12_000)), 13, 5);
        let sql = format!(
            "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '{LATENESS_MS}' MILLISECOND);\n{select}"
        );
        let one = batches_on_lanes(&sql, 1, &lines, seed as u64, 5_000);
        let rows: usize = one.iter().map(Vec::len).sum();
        assert!(rows >= 3, "{select}: a meaningful answer");
        assert_eq!(
            batches_on_lanes(&sql, 4, &lines, seed as u64, 5_000),
            one,
            "{select}"
        );
    }
}

#[test]
fn a_global_window_aggregated_on_four_lanes_drops_and_counts_the_rows_one_lane_drops() {
    // Aggregated on the lanes, range by range, and merged on the first lane: which rows come
    // too late and which windows they close against must be one lane's. Records 12 hours late and a lateness of 200 ms against a disorder of up to 3 s
    // leave rows late, in batches that also close windows.
    let select = "SELECT window_start, COUNT(*) AS n, SUM(v) AS total, MIN(v) AS low, \
                  MAX(v) AS high, AVG(v) AS mean, COUNT(k) AS keyed FROM t \
                  GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)";
    let sql = format!(
        "CREATE STREAM t ({COLUMNS}, WATERMARK FOR ts AS ts - INTERVAL '200' MILLISECOND);\n{select}"
    );
    let mut rng = Rng(2024);
    let mut records = records(&mut rng, 20_000);
    // Every 50th record 12 hours late (about 12 500 records earlier): late once an earlier
    // micro-batch moved the watermark past it.
    for r in records.iter_mut().skip(7).step_by(50) {
        r.ts -= 43_200_000;
    }
    let lines = with_null_keys(json_lines(&records), 13, 5);
    let run = |lanes: usize| {
        let mut replay = Replay::plan_on_lanes_with(&sql, lanes, |r| r.bounded = false).unwrap();
        assert_eq!(replay.lanes(), lanes);
        let mut rng = Rng(7);
        let mut out: Vec<Vec<String>> = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let end = (i + 2_048 + rng.below(4_000) as usize).min(lines.len());
            let chunk: Vec<&[u8]> = lines[i..end].iter().map(|l| l.as_bytes()).collect();
            out.extend(
                replay
                    .push(&chunk)
                    .unwrap()
                    .iter()
                    .map(|b| oracle::json_rows(std::slice::from_ref(b))),
            );
            i = end;
        }
        out.extend(
            replay
                .finish()
                .unwrap()
                .iter()
                .map(|b| oracle::json_rows(std::slice::from_ref(b))),
        );
        out.retain(|rows| !rows.is_empty());
        (out, replay.metrics().late_rows)
    };
    let (one, late) = run(1);
    assert!(late > 200, "a meaningful share of late rows: {late}");
    assert!(one.len() > 100, "a meaningful answer");
    let (four, four_late) = run(4);
    assert_eq!(four_late, late, "late rows on four lanes");
    assert_eq!(four, one);
}
