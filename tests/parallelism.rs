//! Worker lanes (`--parallelism`): a row-wise query's micro-batches split across threads, and a
//! GROUP BY's keys shared among them, give exactly what one thread gives — the same rows in the
//! same order, the same bad records and row errors, the same dead letters — and that equals an
//! answer computed here, not by SQL. A keyed job restarted at another parallelism keeps its
//! checkpoint's lanes.

mod common;

use common::*;

const SCHEMA: &str = "id BIGINT, price DECIMAL(12,2), qty INT, sym VARCHAR";
/// Decimal arithmetic, an expression that fails on some rows (qty 0), and a filter.
const QUERY: &str = "SELECT id, price * 1.5 AS p, 100 / qty AS per, sym FROM s WHERE id % 3 <> 1";
const RECORDS: u64 = 30_000;

/// Record `i`: every 997th is broken JSON; the others have a price with cents and a qty in
/// 0..5 (0 makes `100 / qty` fail).
fn record(i: u64) -> String {
    if i.is_multiple_of(997) {
        return format!(r#"{{"id": {i}, "price": oops}}"#);
    }
    let cents = (i * 7919) % 100_000_000;
    format!(
        r#"{{"id":{i},"price":"{}.{:02}","qty":{},"sym":"{}"}}"#,
        cents / 100,
        cents % 100,
        (i * 31) % 5,
        ["A", "B", "C"][(i % 3) as usize]
    )
}

/// What the query must give, computed without SQL: output lines, and the ids of the records
/// that are bad (broken) or fail (qty 0), in order.
fn oracle() -> (String, Vec<u64>) {
    let mut out = String::new();
    let mut bad = Vec::new();
    for i in 0..RECORDS {
        if i.is_multiple_of(997) {
            bad.push(i);
            continue;
        }
        if i % 3 == 1 {
            continue;
        }
        let qty = (i * 31) % 5;
        if qty == 0 {
            bad.push(i);
            continue;
        }
        // price × 1.5 with three decimals: cents × 15, in thousandths.
        let thousandths = ((i * 7919) % 100_000_000) * 15;
        out.push_str(&format!(
            "{{\"id\":{i},\"p\":\"{}.{:03}\",\"per\":{},\"sym\":\"{}\"}}\n",
            thousandths / 1000,
            thousandths % 1000,
            100 / qty,
            ["A", "B", "C"][(i % 3) as usize]
        ));
    }
    (out, bad)
}

/// The warnings of a run's stderr without their timestamps.
fn warnings(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("WARN"))
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_string())
        .collect()
}

/// A JSON-lines file of the `RECORDS` records, in a folder of its own.
fn records_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    let text: String = (0..RECORDS).map(|i| record(i) + "\n").collect();
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn a_file_gives_the_same_rows_and_warnings_in_the_same_order_at_parallelism_1_2_and_4() {
    let (_dir, path) = records_file();
    let (expected, bad) = oracle();
    let source = format!("file:{}", path.display());
    let mut first: Option<Vec<String>> = None;
    for parallelism in ["1", "2", "4"] {
        let output = run(&[
            "execute",
            "--source",
            &source,
            "--schema",
            SCHEMA,
            "--query",
            QUERY,
            "--format",
            "json-lines",
            "--parallelism",
            parallelism,
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(stdout(&output), expected, "parallelism {parallelism}");
        let warned = warnings(&stderr(&output));
        // Within a micro-batch, records that do not decode are reported before rows that fail.
        let mut rows: Vec<u64> = warned
            .iter()
            .map(|w| {
                let row = w.split(" row ").nth(1).expect("a record position");
                row.split(':').next().unwrap().parse::<u64>().unwrap() - 1
            })
            .collect();
        rows.sort_unstable();
        assert_eq!(
            rows, bad,
            "parallelism {parallelism}: every bad record named once"
        );
        match &first {
            None => first = Some(warned),
            Some(one) => assert_eq!(&warned, one, "parallelism {parallelism}: the same warnings"),
        }
    }
}

#[test]
fn a_topic_gives_the_same_rows_and_dead_letters_at_parallelism_1_2_and_4() {
    let topic = unique_topic("par-in");
    create_topic(&topic, 1);
    let records: Vec<Rec> = (0..RECORDS).map(|i| Rec::value(record(i))).collect();
    produce(&topic, &records);
    let (expected, bad) = oracle();
    for parallelism in ["1", "2", "4"] {
        let dlq = unique_topic("par-dlq");
        create_topic(&dlq, 1);
        let output = run(&[
            "execute",
            "--topic",
            &topic,
            "--brokers",
            brokers(),
            "--schema",
            SCHEMA,
            "--query",
            QUERY,
            "--format",
            "json-lines",
            "--dlq-topic",
            &dlq,
            "--parallelism",
            parallelism,
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(stdout(&output), expected, "parallelism {parallelism}");
        // A dead letter the broker did not take in time is reported and lost to the topic
        // (`dlq.on_error` log, the default): said here, should the count below fall short.
        let lost: Vec<String> = stderr(&output)
            .lines()
            .filter(|l| l.contains("could not be written to the dead-letter topic"))
            .take(3)
            .map(str::to_string)
            .collect();
        let letters = consume(&dlq, bad.len());
        assert_eq!(
            letters.len(),
            bad.len(),
            "parallelism {parallelism}: dead letters on the topic; the job reported lost: {lost:?}"
        );
        let mut letters: Vec<(u64, String)> = letters
            .into_iter()
            .map(|m| (m.headers["velo.source.offset"].parse().unwrap(), m.value))
            .collect();
        letters.sort();
        let want: Vec<(u64, String)> = bad.iter().map(|&i| (i, record(i))).collect();
        assert_eq!(
            letters, want,
            "parallelism {parallelism}: each bad record dead-lettered once, as it was"
        );
    }
}

#[test]
fn a_json_document_of_rows_encoded_on_the_lanes_is_the_document_one_lane_writes() {
    // The lanes encode a row-wise query's rows; the sink still frames the document: one
    // opening bracket, commas between rows of different lanes' ranges, one closing bracket.
    let (dir, path) = records_file();
    let (lines, _) = oracle();
    let rows: Vec<&str> = lines.lines().collect();
    let document = format!("[\n  {}\n]\n", rows.join(",\n  "));
    let source = format!("file:{}", path.display());
    for parallelism in ["1", "2", "4"] {
        let out = dir.path().join(format!("out-{parallelism}.json"));
        let output = run_with(
            &[
                "execute",
                "--source",
                &source,
                "--schema",
                SCHEMA,
                "--query",
                QUERY,
                "--format",
                "json",
                "--output",
                "file",
                "--output-file",
                out.to_str().unwrap(),
                "--parallelism",
                parallelism,
            ],
            &[("RUST_LOG", "warn,velostream::job=debug")],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(
            stderr(&output).contains("rows encoded on the lanes"),
            parallelism != "1",
            "{}",
            stderr(&output)
        );
        let written = std::fs::read_to_string(&out).unwrap();
        assert!(
            written == document,
            "parallelism {parallelism}: {} bytes written, {} expected",
            written.len(),
            document.len()
        );
    }
}

/// Avro's zigzag varint of `n`.
fn avro_long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[test]
fn avro_messages_and_rows_too_wide_for_the_schema_are_the_same_at_parallelism_1_2_and_4() {
    // The lanes encode the messages; a row the output schema cannot hold is still dead-lettered
    // with its reason, once, and the messages keep the input's order.
    const N: u64 = 6000;
    let price = |i: u64| -> u64 {
        // Cents; every 500th is 10 000 000.00, too wide for DECIMAL(12,6).
        if i.is_multiple_of(500) {
            1_000_000_000
        } else {
            (i * 7919) % 100_000_000
        }
    };
    let topic = unique_topic("par-avro-in");
    create_topic(&topic, 1);
    let records: Vec<Rec> = (0..N)
        .map(|i| {
            let c = price(i);
            Rec::value(format!(
                r#"{{"id":{i},"price":"{}.{:02}"}}"#,
                c / 100,
                c % 100
            ))
        })
        .collect();
    produce(&topic, &records);
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("out.avsc");
    std::fs::write(
        &schema,
        r#"{"type":"record","name":"Out","fields":[{"name":"id","type":"long"},
            {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":6}}]}"#,
    )
    .unwrap();
    // Each datum: the id, then the price's unscaled value (cents × 10⁴) as the shortest
    // big-endian two's complement, length first.
    let expected: Vec<Vec<u8>> = (0..N)
        .filter(|&i| !i.is_multiple_of(500))
        .map(|i| {
            let mut datum = Vec::new();
            avro_long(i as i64, &mut datum);
            let unscaled = (price(i) as i64 * 10_000).to_be_bytes();
            let skip = unscaled
                .windows(2)
                .take_while(|w| w[0] == 0 && w[1] < 0x80)
                .count();
            avro_long((8 - skip) as i64, &mut datum);
            datum.extend_from_slice(&unscaled[skip..]);
            datum
        })
        .collect();
    let too_wide: Vec<String> = (0..N)
        .filter(|i| i.is_multiple_of(500))
        .map(|i| format!(r#"{{"id":{i},"price":"10000000.00"}}"#))
        .collect();
    for parallelism in ["1", "2", "4"] {
        let out_topic = unique_topic("par-avro-out");
        let dlq = unique_topic("par-avro-dlq");
        create_topic(&out_topic, 1);
        create_topic(&dlq, 1);
        run_ok(&[
            "execute",
            "--topic",
            &topic,
            "--schema",
            "id BIGINT, price DECIMAL(12,2)",
            "--query",
            "SELECT id, price FROM s",
            "--format",
            "avro",
            "--output",
            "kafka",
            "--output-topic",
            &out_topic,
            "--output-avro-schema",
            schema.to_str().unwrap(),
            "--dlq-topic",
            &dlq,
            "--parallelism",
            parallelism,
        ]);
        let datums = consume_bytes(&out_topic, expected.len());
        assert!(
            datums == expected,
            "parallelism {parallelism}: {} messages, {} expected; first difference at {:?}",
            datums.len(),
            expected.len(),
            datums.iter().zip(&expected).position(|(a, b)| a != b)
        );
        let letters = consume(&dlq, too_wide.len());
        let values: Vec<&str> = letters.iter().map(|m| m.value.as_str()).collect();
        assert_eq!(values, too_wide, "parallelism {parallelism}");
        for letter in &letters {
            assert!(
                letter.headers["velo.error"].contains("does not fit decimal(12, 6)"),
                "parallelism {parallelism}: {:?}",
                letter.headers
            );
        }
    }
}

#[test]
fn parallelism_zero_is_refused_with_the_flag_named() {
    run_failing(
        &[
            "execute",
            "--source",
            "file:/dev/null",
            "--schema",
            SCHEMA,
            "--query",
            QUERY,
            "--parallelism",
            "0",
        ],
        2,
        "--parallelism",
    );
}

/// Trades for the keyed queries: 40 symbols, prices with cents, event times 0–40 ms apart
/// (about 17 minutes in all), and a broken record now and then.
fn trade(i: u64) -> String {
    if i % 4999 == 7 {
        return r#"{"sym": "S1", "price": broken"#.to_string();
    }
    format!(
        r#"{{"sym":"S{}","price":"{}.{:02}","ts":"{}"}}"#,
        (i * 7 + i / 13) % 40,
        (i * 7919) % 100_000,
        (i * 31) % 100,
        iso(trade_ms(i))
    )
}

const TRADES: u64 = 24_000;
const TRADE_SCHEMA: &str = "sym VARCHAR, price DECIMAL(12,2), ts TIMESTAMP";

fn trade_ms(i: u64) -> u64 {
    i * 40 + (i * 17) % 23
}

/// 2024-01-01 plus `ms`, as the CSV output prints a TIMESTAMP (no fraction when whole).
fn iso(ms: u64) -> String {
    let (s, frac) = (ms / 1000, ms % 1000);
    let text = format!(
        "2024-01-01T{:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    match frac {
        0 => text,
        f => format!("{text}.{f:03}"),
    }
}

fn trades_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trades.jsonl");
    let text: String = (0..TRADES).map(|i| trade(i) + "\n").collect();
    std::fs::write(&path, text).unwrap();
    let source = format!("file:{}", path.display());
    (dir, source)
}

/// `execute` of `query` over the trades file `source` on `parallelism` lanes, with the job
/// layer's debug lines (which say how many lanes it runs on) in stderr.
fn run_trades(source: &str, query: &str, parallelism: &str) -> std::process::Output {
    run_with(
        &[
            "execute",
            "--source",
            source,
            "--schema",
            TRADE_SCHEMA,
            "--query",
            query,
            "--format",
            "csv",
            "--parallelism",
            parallelism,
        ],
        &[("RUST_LOG", "warn,velostream::job=debug")],
    )
}

/// Runs `query` over the trades at parallelism 1, 2 and 4; the output, the same at each.
fn same_at_every_parallelism(source: &str, query: &str) -> String {
    same_on_lanes(query, |parallelism| run_trades(source, query, parallelism))
}

/// `run` at parallelism 1, 2 and 4 (`query` names it in messages): the output, the same at
/// each, where at 2 and 4 the query ran on that many lanes, its rows exchanged by key.
fn same_on_lanes(query: &str, run: impl Fn(&str) -> std::process::Output) -> String {
    same_rows_on_lanes(query, true, BY_KEY, run)
}

/// How the job says a keyed query runs on its lanes.
const BY_KEY: &str = "rows exchanged by key";

/// How the job says a query whose first stateful operator has no key runs on its lanes.
const GATHERED: &str =
    "micro-batches split by range up to the first stateful operator, which runs on the first lane";

/// How the job says a global aggregate whose states merge exactly runs on its lanes.
const PARTIAL: &str = "micro-batches split by range and aggregated on the lanes, the partial \
                       aggregates merged on the first lane";

/// As [`same_on_lanes`], split as `how` says; unless `ordered`, the rows are compared as sets of lines. A query
/// reading two files sees their batches in whatever order the two reading threads deliver
/// them, at any parallelism: its rows come out in an order no run repeats. (That the lanes
/// keep one lane's order given the same batches is `tests/stream_join_oracle.rs`'s.)
fn same_rows_on_lanes(
    query: &str,
    ordered: bool,
    how: &str,
    mut run: impl FnMut(&str) -> std::process::Output,
) -> String {
    let mut outputs = Vec::new();
    let mut warned = Vec::new();
    for parallelism in ["1", "2", "4"] {
        let output = run(parallelism);
        assert!(output.status.success(), "{query}: {}", stderr(&output));
        if parallelism != "1" {
            // The query really ran on the lanes, split as `how` says.
            let said = format!("runs on {parallelism} lanes ({how})");
            assert!(
                stderr(&output).contains(&said),
                "{query}: {}",
                stderr(&output)
            );
        }
        outputs.push(stdout(&output));
        warned.push(warnings(&stderr(&output)).join("\n"));
    }
    // What is compared: each output (and the warnings: bad records, rows that failed) as it
    // is, or its lines sorted.
    let compared = |texts: &[String]| -> Vec<String> {
        match ordered {
            true => texts.to_vec(),
            false => texts.iter().map(|o| sorted_lines(o).join("\n")).collect(),
        }
    };
    let (rows, warned) = (compared(&outputs), compared(&warned));
    for (i, parallelism) in [(1, "2"), (2, "4")] {
        assert_eq!(
            rows[0], rows[i],
            "{query}: parallelism {parallelism} differs from 1"
        );
        assert_eq!(
            warned[0], warned[i],
            "{query}: parallelism {parallelism} warns otherwise than 1"
        );
    }
    outputs.remove(0)
}

/// The good trades: (symbol, cents, event time in ms).
fn good_trades() -> Vec<(String, u64, u64)> {
    (0..TRADES)
        .filter(|i| i % 4999 != 7)
        .map(|i| {
            let cents = (i * 7919) % 100_000 * 100 + (i * 31) % 100;
            (format!("S{}", (i * 7 + i / 13) % 40), cents, trade_ms(i))
        })
        .collect()
}

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[test]
fn a_tumbling_window_gives_the_same_exact_totals_at_parallelism_1_2_and_4() {
    let (_dir, source) = trades_file();
    let out = same_at_every_parallelism(
        &source,
        "SELECT window_start, sym, COUNT(*) AS n, SUM(price) AS total, MAX(price) AS hi \
         FROM trades GROUP BY sym WINDOW TUMBLING(ts, 10s)",
    );
    // The oracle: windows in order, each window's symbols in order.
    let mut windows: std::collections::BTreeMap<(u64, String), (u64, u64, u64)> =
        Default::default();
    for (sym, cents, ms) in good_trades() {
        let entry = windows.entry((ms / 10_000 * 10_000, sym)).or_default();
        entry.0 += 1;
        entry.1 += cents;
        entry.2 = entry.2.max(cents);
    }
    let mut expected = String::from("window_start,sym,n,total,hi\n");
    for ((start, sym), (n, total, hi)) in &windows {
        expected += &format!(
            "{},{sym},{n},{},{}\n",
            iso(*start),
            money(*total),
            money(*hi)
        );
    }
    assert_eq!(out, expected);
}

#[test]
fn an_aggregate_without_a_window_gives_each_symbols_exact_total_at_parallelism_1_2_and_4() {
    let (_dir, source) = trades_file();
    let out = same_at_every_parallelism(
        &source,
        "SELECT sym, COUNT(*) AS n, SUM(price) AS total FROM trades GROUP BY sym",
    );
    let mut totals: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for (sym, cents, _) in good_trades() {
        let entry = totals.entry(sym).or_default();
        entry.0 += 1;
        entry.1 += cents;
    }
    let mut expected = String::from("sym,n,total\n");
    for (sym, (n, total)) in &totals {
        expected += &format!("{sym},{n},{}\n", money(*total));
    }
    assert_eq!(out, expected);
}

#[test]
fn global_windows_over_and_order_by_without_keys_give_the_exact_answer_at_parallelism_1_2_and_4() {
    // No key to split the state by: the trades are decoded (and filtered) on the lanes, and
    // the window, the OVER or the sort runs on the first lane, fed what one lane would be.
    let (_dir, source) = trades_file();
    let same_as = |query: &str, how: &str| {
        same_rows_on_lanes(query, true, how, |parallelism| {
            run_trades(&source, query, parallelism)
        })
    };
    let same = |query: &str| same_as(query, GATHERED);
    let good = good_trades();

    // Aggregated range by range on the lanes, the partial aggregates merged on the first.
    let out = same_as(
        "SELECT window_start, COUNT(*) AS n, SUM(price) AS total, MAX(price) AS hi FROM trades \
         WHERE sym <> 'S3' GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)",
        PARTIAL,
    );
    let mut windows: std::collections::BTreeMap<u64, (u64, u64, u64)> = Default::default();
    for (_, cents, ms) in good.iter().filter(|(sym, _, _)| sym != "S3") {
        let w = windows.entry(ms / 10_000).or_default();
        w.0 += 1;
        w.1 += cents;
        w.2 = w.2.max(*cents);
    }
    let mut expected = String::from("window_start,n,total,hi\n");
    for (w, (n, total, hi)) in &windows {
        expected += &format!("{},{n},{},{}\n", iso(w * 10_000), money(*total), money(*hi));
    }
    assert!(windows.len() > 50, "a meaningful answer");
    assert_eq!(out, expected);

    // A floating-point sum depends on the order it adds in: not split into partial sums.
    let out = same(
        "SELECT window_start, SUM(CAST(price AS DOUBLE)) AS f FROM trades \
         GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)",
    );
    assert_eq!(out.lines().count(), windows.len() + 1, "{out}");

    // Event times increase with the record number: the OVER's order is the file's.
    let out = same(
        "SELECT ts, price, SUM(price) OVER (ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) \
         AS s3, ROW_NUMBER() OVER (ORDER BY ts) AS rn FROM trades",
    );
    let mut expected = String::from("ts,price,s3,rn\n");
    for (i, (_, cents, ms)) in good.iter().enumerate() {
        let s3: u64 = good[i.saturating_sub(2)..=i].iter().map(|t| t.1).sum();
        expected += &format!("{},{},{},{}\n", iso(*ms), money(*cents), money(s3), i + 1);
    }
    assert_eq!(out, expected);

    // A bounded sort, ties in arrival order.
    let out = same("SELECT sym, price FROM trades WHERE price > 99000.00 ORDER BY price DESC");
    let mut top: Vec<&(String, u64, u64)> = good.iter().filter(|t| t.1 > 9_900_000).collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    assert!(top.len() > 100, "a meaningful answer");
    let expected: String = std::iter::once("sym,price\n".to_string())
        .chain(
            top.iter()
                .map(|(sym, cents, _)| format!("{sym},{}\n", money(*cents))),
        )
        .collect();
    assert_eq!(out, expected);
}

#[test]
fn an_aggregate_over_a_windowed_aggregate_gives_the_exact_answer_at_parallelism_1_2_and_4() {
    // The windows are split by symbol across the lanes; what closes is merged and cut back
    // into a batch per window, which the aggregate after it takes on the first lane.
    let (_dir, source) = trades_file();
    let out = same_at_every_parallelism(
        &source,
        "SELECT c.starttime, MAX(c.n) AS busiest, SUM(c.total) AS total FROM \
         (SELECT sym, COUNT(*) AS n, SUM(price) AS total, window_start AS starttime, \
          window_end AS endtime FROM trades GROUP BY sym, TUMBLE(ts, INTERVAL '10' SECOND)) c \
         GROUP BY c.starttime, c.endtime",
    );
    let mut windows: std::collections::BTreeMap<
        u64,
        std::collections::BTreeMap<String, (u64, u64)>,
    > = Default::default();
    for (sym, cents, ms) in good_trades() {
        let per_sym = windows
            .entry(ms / 10_000)
            .or_default()
            .entry(sym)
            .or_default();
        per_sym.0 += 1;
        per_sym.1 += cents;
    }
    let mut expected = String::from("starttime,busiest,total\n");
    for (w, syms) in &windows {
        let busiest = syms.values().map(|s| s.0).max().unwrap();
        let total: u64 = syms.values().map(|s| s.1).sum();
        expected.push_str(&format!("{},{busiest},{}\n", iso(w * 10_000), money(total)));
    }
    assert_eq!(out, expected);
}

#[test]
fn over_windows_give_every_symbols_exact_moving_values_in_event_time_order_at_parallelism_1_2_and_4(
) {
    // Symbols change lanes by key; each lane releases its symbols' rows as the watermark
    // passes them, and the lanes' rows are merged back into event-time order.
    let (_dir, source) = trades_file();
    let over = "PARTITION BY sym ORDER BY ts";
    let out = same_at_every_parallelism(
        &source,
        &format!(
            "SELECT sym, ts, price, \
               SUM(price) OVER ({over} ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s3, \
               COUNT(*) OVER ({over} RANGE BETWEEN INTERVAL '5' SECOND PRECEDING AND CURRENT ROW) AS n5s, \
               ROW_NUMBER() OVER ({over}) AS rn, LAG(price) OVER ({over}) AS prev \
             FROM trades"
        ),
    );
    // The oracle: every good trade in event-time order, with its symbol's earlier trades.
    let mut seen: std::collections::HashMap<String, Vec<(u64, u64)>> = Default::default();
    let mut expected = String::from("sym,ts,price,s3,n5s,rn,prev\n");
    for (sym, cents, ms) in good_trades() {
        let before = seen.entry(sym.clone()).or_default();
        before.push((cents, ms));
        let s3: u64 = before.iter().rev().take(3).map(|(c, _)| c).sum();
        let n5s = before.iter().filter(|(_, t)| t + 5_000 >= ms).count();
        let prev = match before.len() {
            1 => String::new(),
            n => money(before[n - 2].0),
        };
        expected += &format!(
            "{sym},{},{},{},{n5s},{},{prev}\n",
            iso(ms),
            money(cents),
            money(s3),
            before.len()
        );
    }
    assert_eq!(out, expected);
}

#[test]
fn the_busiest_symbols_of_each_window_like_nexmark_q5_are_the_same_at_parallelism_1_2_and_4() {
    // A window join: each side's window is split by symbol across the lanes, the maximum per
    // window and the join run on the first lane.
    let (_dir, source) = trades_file();
    let counts = "SELECT sym, COUNT(*) AS n, window_start AS starttime, window_end AS endtime \
                  FROM trades GROUP BY sym, TUMBLE(ts, INTERVAL '10' SECOND)";
    let query = format!(
        "SELECT a.starttime, a.sym, a.n FROM ({counts}) a \
         JOIN (SELECT MAX(c.n) AS maxn, c.starttime, c.endtime FROM ({counts}) c \
               GROUP BY c.starttime, c.endtime) m \
         ON a.starttime = m.starttime AND a.endtime = m.endtime AND a.n >= m.maxn"
    );
    let out = same_rows_on_lanes(&query, false, BY_KEY, |parallelism| {
        run_trades(&source, &query, parallelism)
    });
    let mut windows: std::collections::BTreeMap<u64, std::collections::BTreeMap<String, u64>> =
        Default::default();
    for (sym, _, ms) in good_trades() {
        *windows
            .entry(ms / 10_000)
            .or_default()
            .entry(sym)
            .or_default() += 1;
    }
    let mut expected = vec!["starttime,sym,n".to_string()];
    for (w, syms) in &windows {
        let busiest = syms.values().max().unwrap();
        for (sym, n) in syms.iter().filter(|(_, n)| *n == busiest) {
            expected.push(format!("{},{sym},{n}", iso(w * 10_000)));
        }
    }
    expected.sort();
    assert!(expected.len() > 100, "a meaningful answer");
    assert_eq!(sorted_lines(&out), expected);
}

#[test]
fn sessions_hopping_windows_and_changes_are_the_same_at_parallelism_1_2_and_4() {
    let (_dir, source) = trades_file();
    for query in [
        "SELECT sym, window_start, window_end, COUNT(*) AS n, SUM(price) AS total FROM trades \
         WHERE price > 500 GROUP BY sym, SESSION(ts, INTERVAL '2' SECOND)",
        "SELECT window_start, sym, COUNT(*) AS n FROM trades \
         GROUP BY sym WINDOW HOPPING(ts, 20s, 5s) HAVING COUNT(*) > 11",
        "SELECT sym, window_start, COUNT(*) AS n, MIN(price) AS lo FROM trades \
         GROUP BY sym WINDOW TUMBLING(ts, 30s) EMIT CHANGES",
    ] {
        let out = same_at_every_parallelism(&source, query);
        assert!(
            out.lines().count() > 100,
            "{query}: a meaningful answer:\n{out}"
        );
    }
}

/// The `lanes` of the newest checkpoint of job `job` under state root `root`.
fn newest_checkpoint_lanes(root: &std::path::Path, job: &str) -> u64 {
    let folder = root.join(job).join("checkpoints");
    let newest = std::fs::read_dir(&folder)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("chk-"))
        .max()
        .expect("a checkpoint");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(newest.join("manifest.json")).unwrap()).unwrap();
    manifest["lanes"].as_u64().expect("lanes in the manifest")
}

#[test]
fn a_keyed_job_restarted_at_another_parallelism_keeps_its_checkpoints_lanes_and_counts() {
    let topic = unique_topic("par-keyed");
    create_topic(&topic, 2);
    let group = unique_topic("par-keyed-g");
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let query = "SELECT window_start, k, COUNT(*) AS n, SUM(v) AS total FROM t \
                 WHERE k <> 'end' GROUP BY k WINDOW TUMBLING(ts, 1m)";
    let schema = "k VARCHAR, v BIGINT, ts TIMESTAMP";
    let rec = |k: &str, i: u64, second: u64| {
        Rec::value(format!(
            r#"{{"k":"{k}","v":{i},"ts":"2024-01-01T00:{:02}:{:02}Z"}}"#,
            second / 60,
            second % 60
        ))
        .partition((i % 2) as i32)
    };
    let key = |i: u64| format!("k{}", i % 8);
    let args = |parallelism: &'static str| {
        vec![
            "stream".to_string(),
            "--query".into(),
            query.into(),
            "--topic".into(),
            topic.clone(),
            "--schema".into(),
            schema.into(),
            "--format".into(),
            "json-lines".into(),
            "--group-id".into(),
            group.clone(),
            "--job-name".into(),
            "keyed".into(),
            "--state-dir".into(),
            state_dir.clone(),
            "--parallelism".into(),
            parallelism.into(),
        ]
    };
    // Window 0 gets 5000 records before the stop (in batches big enough for every lane) and
    // 3000 after; window 1 only after.
    produce(
        &topic,
        &(0..5000)
            .map(|i| rec(&key(i), i, i % 60))
            .collect::<Vec<_>>(),
    );
    let first = args("2");
    let job = spawn(&first.iter().map(String::as_str).collect::<Vec<_>>());
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (code, rest) = job.terminate();
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "window 0 is still open: {rest:?}");
    assert_eq!(newest_checkpoint_lanes(state.path(), "keyed"), 2);
    let mut second: Vec<Rec> = (5000..8000)
        .map(|i| rec(&key(i), i, (i - 5000) % 90))
        .collect();
    // Records far ahead on both partitions close both windows.
    second.extend([rec("end", 0, 1000), rec("end", 1, 1000)]);
    produce(&topic, &second);
    let expected = sorted_lines(&run_ok(&[
        "execute",
        "--query",
        query,
        "--topic",
        &topic,
        "--schema",
        schema,
        "--format",
        "json-lines",
        "--parallelism",
        "1",
    ]));
    assert_eq!(expected.len(), 16, "8 keys in 2 windows: {expected:?}");
    // Asked for 4 lanes, the job goes on with its checkpoint's 2: each holds its keys' counts.
    let again = args("4");
    let job = spawn(&again.iter().map(String::as_str).collect::<Vec<_>>());
    let got = sorted_lines(&job.take_lines(16).join("\n"));
    let (code, rest) = job.terminate();
    assert_eq!(code, 0);
    assert_eq!(
        got, expected,
        "the restored lanes count what came before the stop"
    );
    assert!(rest.is_empty(), "nothing twice: {rest:?}");
    assert_eq!(newest_checkpoint_lanes(state.path(), "keyed"), 2);
}

/// Orders and payments for the join: order `i` (every 211th without an id) has `i % 3`
/// payments, each 2 s before, 5 s after or 12 s after it; every 307th payment names no order.
/// Both files are in event-time order. Returns the folder, the SQL declaring both streams, and
/// the FULL join's rows computed here (CSV lines, sorted).
fn orders_and_payments() -> (tempfile::TempDir, String, Vec<String>) {
    const ORDERS: u64 = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let order_id = |i: u64| (i % 211 != 5).then_some(i);
    let amount = |i: u64| (i * 7919) % 1_000_000;
    let order_ms = |i: u64| 10_000 + i * 20;
    let mut orders = String::new();
    for i in 0..ORDERS {
        let id = order_id(i).map_or("null".to_string(), |id| id.to_string());
        orders.push_str(&format!(
            "{{\"id\":{id},\"amount\":\"{}\",\"ts\":\"{}\"}}\n",
            money(amount(i)),
            iso(order_ms(i))
        ));
    }
    // (payment ms, pid, order, paid cents, matches)
    let mut payments = Vec::new();
    for i in 0..ORDERS {
        for k in 0..i % 3 {
            let pid = i * 3 + k;
            let order = (pid % 307 != 11).then_some(i);
            let delta = [-2_000i64, 5_000, 12_000][((i + k) % 3) as usize];
            let ms = (order_ms(i) as i64 + delta) as u64;
            let matches = delta == 5_000 && order.is_some() && order_id(i).is_some();
            payments.push((ms, pid, order, (i * 31 + k * 17) % 100_000, matches));
        }
    }
    payments.sort();
    let mut text = String::new();
    let mut expected = Vec::new();
    let mut paid_orders = std::collections::HashSet::new();
    for &(ms, pid, order, paid, matches) in &payments {
        let order_field = order.map_or("null".to_string(), |o| o.to_string());
        text.push_str(&format!(
            "{{\"pid\":{pid},\"order_id\":{order_field},\"paid\":\"{}\",\"ts\":\"{}\"}}\n",
            money(paid),
            iso(ms)
        ));
        let i = pid / 3;
        if matches {
            paid_orders.insert(i);
            expected.push(format!("{i},{},{pid},{}", money(amount(i)), money(paid)));
        } else {
            expected.push(format!(",,{pid},{}", money(paid)));
        }
    }
    for i in (0..ORDERS).filter(|i| !paid_orders.contains(i)) {
        let id = order_id(i).map_or(String::new(), |id| id.to_string());
        expected.push(format!("{id},{},,", money(amount(i))));
    }
    expected.sort();
    let orders_path = dir.path().join("orders.jsonl");
    let payments_path = dir.path().join("payments.jsonl");
    std::fs::write(&orders_path, orders).unwrap();
    std::fs::write(&payments_path, text).unwrap();
    let sql = format!(
        "CREATE STREAM orders (id BIGINT, amount DECIMAL(12,2), ts TIMESTAMP) \
         WITH ('path' = '{}', 'format' = 'json');\n\
         CREATE STREAM payments (pid BIGINT, order_id BIGINT, paid DECIMAL(12,2), ts TIMESTAMP) \
         WITH ('path' = '{}', 'format' = 'json');\n",
        orders_path.display(),
        payments_path.display()
    );
    (dir, sql, expected)
}

#[test]
fn an_interval_join_gives_the_same_rows_at_parallelism_1_2_and_4() {
    let (_dir, streams, expected) = orders_and_payments();
    // FULL: pairs as payments arrive, rows with a NULL key at once, and every row that never
    // matched once the watermark passes its bound.
    let query = "SELECT o.id AS oid, o.amount, p.pid, p.paid FROM orders o FULL JOIN payments p \
                 ON o.id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND";
    let sql = format!("{streams}{query}");
    let out = same_rows_on_lanes(query, false, BY_KEY, |parallelism| {
        execute_csv(&sql, parallelism)
    });
    let mut lines = sorted_lines(&out);
    assert_eq!(lines.pop().as_deref(), Some("oid,amount,pid,paid"));
    assert_eq!(lines.len(), expected.len());
    assert_eq!(lines, expected);
}

#[test]
fn rows_an_enriched_query_cannot_evaluate_are_reported_in_one_lanes_order_at_parallelism_1_2_and_4()
{
    // After a lookup join a failing row is not traced back to its record: one lane reports a
    // batch's such rows operator by operator (the WHERE's, then the SELECT's); the lanes, which
    // each run a range through every operator, must report them in that order too (they once
    // came range by range), and `--on-error fail` stop on the same row.
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s.jsonl");
    let t = dir.path().join("t.csv");
    let text: String = (0..8192u64)
        .map(|i| format!("{{\"id\":{i},\"b\":{},\"g\":{}}}\n", i % 5, i % 4))
        .collect();
    std::fs::write(&s, text).unwrap();
    std::fs::write(&t, "g,d\n0,0\n1,1\n2,2\n3,3\n").unwrap();
    // COALESCE keeps the LEFT JOIN a LEFT JOIN, and the WHERE after it.
    let query = "SELECT s.id, 10 / (s.b - 1) AS y FROM s LEFT JOIN t ON s.g = t.g \
                 WHERE COALESCE(100 / (s.b - t.d), 1) > 0";
    let sql = format!(
        "CREATE STREAM s (id BIGINT, b BIGINT, g BIGINT) WITH ('path' = '{}', 'format' = 'json');\n\
         CREATE TABLE t (g BIGINT, d BIGINT) WITH ('path' = '{}', 'format' = 'csv');\n{query}",
        s.display(),
        t.display()
    );
    let (b, d) = (|i: u64| i % 5, |i: u64| i % 4);
    let expected: String = std::iter::once("id,y\n".to_string())
        .chain(
            (0..8192u64)
                .filter(|&i| b(i) > d(i) && b(i) != 1)
                .map(|i| format!("{i},{}\n", 10 / (b(i) - 1))),
        )
        .collect();
    let failing = (0..8192u64)
        .filter(|&i| b(i) == d(i) || (b(i) > d(i) && b(i) == 1))
        .count();
    let mut reported = Vec::new();
    let out = same_rows_on_lanes(query, true, "micro-batches split by range", |parallelism| {
        let output = execute_csv(&sql, parallelism);
        reported.push(warnings(&stderr(&output)));
        output
    });
    assert_eq!(out, expected);
    assert_eq!(reported[0].len(), failing);
    for (i, parallelism) in [(1, "2"), (2, "4")] {
        let first_difference = reported[0]
            .iter()
            .zip(&reported[i])
            .position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "parallelism {parallelism}");
        assert_eq!(reported[i].len(), failing, "parallelism {parallelism}");
    }
    let stopped: Vec<String> = ["1", "4"]
        .iter()
        .map(|parallelism| {
            let output = run(&[
                "execute",
                "--query",
                &sql,
                "--format",
                "csv",
                "--batch-size",
                "4096",
                "--on-error",
                "fail",
                "--parallelism",
                parallelism,
            ]);
            assert!(!output.status.success());
            stderr(&output)
                .lines()
                .filter(|l| l.starts_with("error"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert!(stopped[0].contains("cannot be evaluated"), "{}", stopped[0]);
    assert_eq!(stopped[1], stopped[0]);
}

#[test]
fn a_row_a_window_rejects_is_reported_as_its_record_at_parallelism_1_2_and_4() {
    // Event times so far in the past that a window's start cannot be computed: the window
    // rejects the row. On the lanes the window runs on rows gathered or exchanged from ranges;
    // the row is still traced back through the ranges' filters to its record, and named as
    // one lane names it (it was once reported as a row, with an unprintable timestamp).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ev.jsonl");
    let absurd = |i: u64| match i {
        300 => Some(-9_223_372_036_854_775_002_i64),
        5000 => Some(-9_223_372_036_854_775_000),
        7000 => Some(-9_223_372_036_854_775_001),
        _ => None,
    };
    let ts = |i: u64| absurd(i).unwrap_or(1_704_067_200_000 + i as i64 * 10);
    let text: String = (0..10_000u64)
        .map(|i| format!("{{\"k\":\"k{}\",\"v\":{i},\"ts\":{}}}\n", i % 7, ts(i)))
        .collect();
    std::fs::write(&path, text).unwrap();
    let other = dir.path().join("other.jsonl");
    let text: String = (0..10_000u64)
        .map(|i| {
            format!(
                "{{\"k\":\"k{}\",\"ts\":{}}}\n",
                i % 7,
                // The right input's window rejects record 8000.
                match i {
                    8000 => -9_223_372_036_854_775_003,
                    i => 1_704_067_200_000 + i as i64 * 10,
                }
            )
        })
        .collect();
    std::fs::write(&other, text).unwrap();
    // Record 7000 (v % 3 = 1) is filtered out before the window: only 300 and 5000 reach it.
    let rejected: Vec<String> = [300, 5000]
        .iter()
        .map(|&i| {
            format!(
                " WARN skipped the record at file {} row {}: the event time {} ms is too close to \
                 the end of the timestamp range for a window of 10000 ms",
                path.display(),
                i + 1,
                ts(i)
            )
        })
        .collect();
    let rejected_right = format!(
        " WARN skipped the record at file {} row 8001: the event time -9223372036854775003 ms is \
         too close to the end of the timestamp range for a window of 10000 ms",
        other.display()
    );
    // The keyed window as a window join's input too (two inputs: rows and warnings compared as
    // sets, as the two files' batches interleave in any order).
    let counts = "SELECT k, COUNT(*) AS n, SUM(v) AS total, window_start FROM ev WHERE v % 3 <> 1 \
                  GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)";
    let joined = format!(
        "SELECT x.k, x.n, x.total, x.window_start FROM ({counts}) x JOIN \
         (SELECT k, COUNT(*) AS m, window_start FROM other GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)) y \
         ON x.k = y.k AND x.window_start = y.window_start"
    );
    for (how, query) in [
        (
            PARTIAL,
            "SELECT COUNT(*) AS n, SUM(v) AS total, window_start FROM ev WHERE v % 3 <> 1 \
             GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)",
        ),
        (BY_KEY, counts),
        (BY_KEY, joined.as_str()),
    ] {
        let sql = format!(
            "CREATE STREAM ev (k VARCHAR, v BIGINT, ts TIMESTAMP) WITH ('path' = '{}', 'format' = 'json');\n\
             CREATE STREAM other (k VARCHAR, ts TIMESTAMP) WITH ('path' = '{}', 'format' = 'json');\n{query}",
            path.display(),
            other.display()
        );
        let mut warned = Vec::new();
        let ordered = !query.contains("JOIN");
        let out = same_rows_on_lanes(query, ordered, how, |parallelism| {
            let output = execute_csv(&sql, parallelism);
            warned.push(warnings(&stderr(&output)));
            output
        });
        // The windows hold every other record but those filtered out.
        let kept = (0..10_000u64).filter(|&i| i % 3 != 1 && absurd(i).is_none());
        let expected: usize = kept.count();
        let counted: usize = out
            .lines()
            .skip(1)
            .map(|l| l.split(',').rev().nth(2).unwrap().parse::<usize>().unwrap())
            .sum();
        assert_eq!(counted, expected, "{query}");
        for w in &warned {
            match ordered {
                true => assert_eq!(w, &rejected, "{query}"),
                false => {
                    let mut both = rejected.clone();
                    both.push(rejected_right.clone());
                    both.sort();
                    let mut w = w.clone();
                    w.sort();
                    assert_eq!(w, both, "{query}");
                }
            }
        }
    }
}

#[test]
fn a_row_a_joins_input_cannot_evaluate_is_reported_with_its_record_at_parallelism_1_2_and_4() {
    // `100 / q` runs in the join's left input: rows with q = 0 fail there. They were once left
    // out without a word.
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    let second = |s: u64| iso(s * 1000);
    let mut a_text = String::new();
    let mut b_text = String::new();
    for i in 0..3000u64 {
        a_text.push_str(&format!(
            "{{\"id\":{i},\"q\":{},\"ts\":\"{}\"}}\n",
            i % 3,
            second(i)
        ));
        b_text.push_str(&format!("{{\"id\":{i},\"ts\":\"{}\"}}\n", second(i + 1)));
    }
    std::fs::write(&a, a_text).unwrap();
    std::fs::write(&b, b_text).unwrap();
    let query = "SELECT x.id, x.r FROM (SELECT id, 100 / q AS r, ts FROM a) x JOIN b \
                 ON x.id = b.id AND b.ts BETWEEN x.ts AND x.ts + INTERVAL '1' MINUTE";
    let sql = format!(
        "CREATE STREAM a (id BIGINT, q INT, ts TIMESTAMP) WITH ('path' = '{}', 'format' = 'json');\n\
         CREATE STREAM b (id BIGINT, ts TIMESTAMP) WITH ('path' = '{}', 'format' = 'json');\n{query}",
        a.display(),
        b.display()
    );
    let expected: String = std::iter::once("id,r\n".to_string())
        .chain(
            (0..3000u64)
                .filter(|i| i % 3 != 0)
                .map(|i| format!("{i},{}\n", 100 / (i % 3))),
        )
        .collect();
    let failing: Vec<String> = (0..3000u64)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("{} row {}:", a.display(), i + 1))
        .collect();
    let out = same_rows_on_lanes(query, false, BY_KEY, |parallelism| {
        let output = execute_csv(&sql, parallelism);
        let warned = warnings(&stderr(&output));
        let named: Vec<String> = failing
            .iter()
            .filter(|f| warned.iter().any(|w| w.contains(f.as_str())))
            .cloned()
            .collect();
        assert_eq!(
            named, failing,
            "parallelism {parallelism}: every failing row named"
        );
        assert_eq!(
            warned
                .iter()
                .filter(|w| w.contains("Divide by zero"))
                .count(),
            failing.len(),
            "parallelism {parallelism}: each failing row named once"
        );
        output
    });
    assert_eq!(sorted_lines(&out), sorted_lines(&expected));
}

/// `execute` of the script `sql` as CSV on `parallelism` lanes, in batches of 4096 records,
/// with the job layer's debug lines (which say how many lanes it runs on) in stderr.
fn execute_csv(sql: &str, parallelism: &str) -> std::process::Output {
    run_with(
        &[
            "execute",
            "--query",
            sql,
            "--format",
            "csv",
            "--batch-size",
            "4096",
            "--parallelism",
            parallelism,
        ],
        &[("RUST_LOG", "warn,velostream::job=debug")],
    )
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn a_group_by_a_volatile_key_is_not_exchanged_by_it() {
    let (_dir, source) = trades_file();
    // `random()` would come out one way when the exchange picks a lane and another when the
    // aggregate groups: such a query's rows are not exchanged by key; the aggregate runs on
    // the first lane.
    let output = run_trades(
        &source,
        "SELECT random() < 2.0 AS b, COUNT(*) AS n FROM trades GROUP BY random() < 2.0",
        "4",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("b,n\ntrue,{}\n", good_trades().len())
    );
    assert!(
        stderr(&output).contains(&format!("runs on 4 lanes ({GATHERED})")),
        "{}",
        stderr(&output)
    );
}
