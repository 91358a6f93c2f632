//! Windowed queries through the binary against the real broker: every spelling, the Kafka
//! record timestamp as default event time, `--window-size`, continuous emission as the
//! watermark passes, and refused window specs.

mod common;

use common::*;

const SCHEMA: &str = "symbol VARCHAR, price DECIMAL(18,4), quantity BIGINT, ts TIMESTAMP";

fn trades_topic() -> String {
    let topic = unique_topic("wtrades");
    create_topic(&topic, 2);
    let rows = [
        ("AAPL", "150.2567", 100, "2024-01-01T00:00:05Z", 0),
        ("MSFT", "410.0000", 3, "2024-01-01T00:00:20Z", 1),
        ("AAPL", "150.0000", 10, "2024-01-01T00:00:59.999Z", 1),
        ("AAPL", "151.0000", 1, "2024-01-01T00:01:00Z", 0),
        ("MSFT", "409.5000", 2, "2024-01-01T00:01:30Z", 0),
    ];
    let records: Vec<Rec> = rows
        .iter()
        .map(|(s, p, q, ts, part)| {
            Rec::value(format!(
                r#"{{"symbol":"{s}","price":"{p}","quantity":{q},"ts":"{ts}"}}"#
            ))
            .partition(*part)
        })
        .collect();
    produce(&topic, &records);
    topic
}

fn sorted_csv(out: &str) -> Vec<String> {
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    let header = lines.remove(0);
    lines.sort();
    lines.insert(0, header);
    lines
}

#[test]
fn every_tumbling_spelling_gives_the_same_rows() {
    let topic = trades_topic();
    let expected = vec![
        "window_start,window_end,symbol,trades,notional".to_string(),
        "2024-01-01T00:00:00,2024-01-01T00:01:00,AAPL,2,16525.6700".to_string(),
        "2024-01-01T00:00:00,2024-01-01T00:01:00,MSFT,1,1230.0000".to_string(),
        "2024-01-01T00:01:00,2024-01-01T00:02:00,AAPL,1,151.0000".to_string(),
        "2024-01-01T00:01:00,2024-01-01T00:02:00,MSFT,1,819.0000".to_string(),
    ];
    let select = "SELECT window_start, window_end, symbol, COUNT(*) AS trades, SUM(price * quantity) AS notional";
    for query in [
        format!("{select} FROM trades WINDOW TUMBLING (ts, INTERVAL 1 MINUTE) GROUP BY symbol"),
        format!("{select} FROM trades GROUP BY symbol WINDOW TUMBLING(ts, 1m)"),
        format!("{select} FROM trades GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '1' MINUTE) EMIT FINAL"),
        "SELECT TUMBLE_START(ts, INTERVAL '1' MINUTE) AS window_start, TUMBLE_END(ts, INTERVAL '1' MINUTE) AS window_end, \
             symbol, COUNT(*) AS trades, SUM(price * quantity) AS notional FROM trades GROUP BY symbol, TUMBLE(ts, INTERVAL '1' MINUTE)".to_string(),
    ] {
        let out = run_ok(&["execute", "--query", &query, "--topic", &topic, "--schema", SCHEMA, "--format", "csv"]);
        assert_eq!(sorted_csv(&out), expected, "{query}");
    }
    let out = run_ok(&[
        "execute", "--query", "SELECT symbol, COUNT(*) AS trades, SUM(price * quantity) AS notional FROM trades GROUP BY symbol",
        "--topic", &topic, "--schema", SCHEMA, "--format", "csv", "--window-size", "60", "--event-time-column", "ts",
    ]);
    assert_eq!(
        sorted_csv(&out),
        expected,
        "--window-size adds window_start and window_end in front"
    );
}

#[test]
fn hop_and_session_windows_run_through_the_binary() {
    let topic = trades_topic();
    let out = run_ok(&[
        "execute", "--query",
        "SELECT window_start, symbol, COUNT(*) AS n FROM trades GROUP BY symbol, HOP(ts, INTERVAL '30' SECOND, INTERVAL '1' MINUTE)",
        "--topic", &topic, "--schema", SCHEMA, "--format", "csv",
    ]);
    assert_eq!(
        sorted_csv(&out),
        vec![
            "window_start,symbol,n",
            "2023-12-31T23:59:30,AAPL,1",
            "2023-12-31T23:59:30,MSFT,1",
            "2024-01-01T00:00:00,AAPL,2",
            "2024-01-01T00:00:00,MSFT,1",
            "2024-01-01T00:00:30,AAPL,2",
            "2024-01-01T00:01:00,AAPL,1",
            "2024-01-01T00:01:00,MSFT,1",
            "2024-01-01T00:01:30,MSFT,1",
        ]
    );
    let out = run_ok(&[
        "execute", "--query", "SELECT symbol, window_start, window_end, COUNT(*) AS n FROM trades WINDOW SESSION(ts, 30s) GROUP BY symbol",
        "--topic", &topic, "--schema", SCHEMA, "--format", "csv",
    ]);
    assert_eq!(
        sorted_csv(&out),
        vec![
            "symbol,window_start,window_end,n",
            "AAPL,2024-01-01T00:00:05,2024-01-01T00:00:35,1",
            "AAPL,2024-01-01T00:00:59.999,2024-01-01T00:01:30,2",
            "MSFT,2024-01-01T00:00:20,2024-01-01T00:00:50,1",
            "MSFT,2024-01-01T00:01:30,2024-01-01T00:02:00,1",
        ]
    );
}

#[test]
fn the_kafka_record_timestamp_is_the_default_event_time() {
    let topic = unique_topic("kts");
    create_topic(&topic, 1);
    let base = 1_704_067_200_000i64;
    produce(
        &topic,
        &[
            Rec::value(r#"{"n":1}"#).timestamp(base + 1_000),
            Rec::value(r#"{"n":2}"#).timestamp(base + 9_000),
            Rec::value(r#"{"n":4}"#).timestamp(base + 10_000),
        ],
    );
    let out = run_ok(&[
        "execute",
        "--query",
        "SELECT SUM(n) AS total FROM t WINDOW TUMBLING(10s)",
        "--topic",
        &topic,
        "--schema",
        "n BIGINT",
        "--format",
        "csv",
    ]);
    assert_eq!(
        out,
        "window_start,window_end,total\n2024-01-01T00:00:00,2024-01-01T00:00:10,3\n2024-01-01T00:00:10,2024-01-01T00:00:20,4\n"
    );
}

/// A continuous job in group `group` counting `topic`'s records of key `k` per 10 s tumbling
/// window of `ts`, with watermark delay `delay`, as JSON lines.
fn counting_job<'a>(topic: &'a str, group: &'a str, delay: &'a str) -> [&'a str; 13] {
    [
        "stream",
        "--query",
        "SELECT window_start, COUNT(*) AS n FROM t WINDOW TUMBLING(ts, 10s) GROUP BY k",
        "--topic",
        topic,
        "--schema",
        "k VARCHAR, ts TIMESTAMP",
        "--watermark-delay",
        delay,
        "--format",
        "json-lines",
        "--group-id",
        group,
    ]
}

#[test]
fn a_continuous_query_emits_each_window_when_the_watermark_passes_it_and_keeps_open_ones_across_a_stop(
) {
    let topic = unique_topic("live-w");
    create_topic(&topic, 1);
    let group = unique_topic("g");
    let args = counting_job(&topic, &group, "2s");
    let job = spawn(&args);
    let rec = |s: u32| Rec::value(format!(r#"{{"k":"a","ts":"2024-01-01T00:00:{s:02}Z"}}"#));
    produce(&topic, &[rec(1), rec(5), rec(11)]);
    // The watermark is 00:00:09: nothing closes yet. At 00:00:12 + 2 s delay the first closes.
    produce(&topic, &[rec(14)]);
    assert_eq!(
        job.take_lines(1),
        vec![r#"{"window_start":"2024-01-01T00:00:00","n":2}"#]
    );
    produce(&topic, &[rec(25)]);
    assert_eq!(
        job.take_lines(1),
        vec![r#"{"window_start":"2024-01-01T00:00:10","n":2}"#]
    );
    let (code, rest) = job.terminate();
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "the open window waits: {rest:?}");
    // Restarted, the job still holds 00:00:25 in its open window: it closes complete, and the
    // windows emitted before the stop are not emitted again.
    let job = spawn(&args);
    produce(&topic, &[rec(40)]);
    assert_eq!(
        job.take_lines(1),
        vec![r#"{"window_start":"2024-01-01T00:00:20","n":1}"#]
    );
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, vec![]));
}

#[test]
fn window_specs_that_cannot_work_are_refused_at_plan_time() {
    let topic = trades_topic();
    for (query, message) in [
        ("SELECT COUNT(*) FROM trades GROUP BY symbol WINDOW SLIDING(ts, 1m, 5m)", "WINDOW SLIDING: the slide (300000 ms) is larger than the size (60000 ms)"),
        ("SELECT COUNT(*) FROM trades GROUP BY symbol WINDOW TUMBLING(ts, 0s)", "WINDOW TUMBLING: the size must be positive"),
        ("SELECT COUNT(*) FROM trades GROUP BY symbol, TUMBLE(symbol, INTERVAL '1' MINUTE)", "TUMBLE(…): the event time 'trades.symbol' is Utf8, not a TIMESTAMP"),
        ("SELECT COUNT(*) FROM trades GROUP BY symbol, HOP(ts, INTERVAL '5' MINUTE, INTERVAL '1' MINUTE)", "HOP(…): the slide (300000 ms) is larger than the size"),
        ("SELECT COUNT(*) FROM trades GROUP BY symbol, HOP(ts, INTERVAL '1' MILLISECOND, INTERVAL '1' HOUR)", "HOP(…): each row would fall in 3600000 windows"),
    ] {
        run_failing(&["execute", "--query", query, "--topic", &topic, "--schema", SCHEMA], 2, message);
    }
}

#[test]
fn an_aggregate_over_a_group_by_without_a_window_is_exact_on_execute_and_refused_on_a_stream() {
    let topic = trades_topic();
    // Per symbol the largest quantity (AAPL 100, MSFT 3); then over those rows.
    let query = "SELECT COUNT(*) AS symbols, SUM(biggest) AS total FROM \
                 (SELECT symbol, MAX(quantity) AS biggest FROM trades GROUP BY symbol) q";
    assert_eq!(
        run_ok(&[
            "execute", "--query", query, "--topic", &topic, "--schema", SCHEMA, "--format", "csv"
        ]),
        "symbols,total\n2,103\n"
    );
    // On a stream the inner GROUP BY emits a row per change: counting those would be wrong.
    let group = unique_topic("g");
    run_failing(
        &[
            "stream",
            "--query",
            query,
            "--topic",
            &topic,
            "--schema",
            SCHEMA,
            "--group-id",
            &group,
        ],
        2,
        "an aggregate over the rows of a GROUP BY without a window cannot run on a stream",
    );
}

#[test]
fn a_group_by_without_a_window_gives_final_rows_when_bounded_and_keyed_changes_when_continuous() {
    let topic = unique_topic("upd");
    create_topic(&topic, 1);
    let order = |c: &str, a: &str| Rec::value(format!(r#"{{"customer":"{c}","amount":"{a}"}}"#));
    produce(&topic, &[order("c1", "5.00")]);
    let query =
        "SELECT customer, COUNT(*) AS orders, SUM(amount) AS total FROM orders GROUP BY customer";
    let schema = "customer VARCHAR, amount DECIMAL(10,2)";
    assert_eq!(
        run_ok(&[
            "execute", "--query", query, "--topic", &topic, "--schema", schema, "--format", "csv"
        ]),
        "customer,orders,total\nc1,1,5.00\n"
    );
    let out = unique_topic("upd-out");
    create_topic(&out, 1);
    let job = spawn(&[
        "stream",
        "--query",
        query,
        "--topic",
        &topic,
        "--schema",
        schema,
        "--output",
        "kafka",
        "--output-topic",
        &out,
        "--group-id",
        &unique_topic("g"),
    ]);
    // One record at a time, so each micro-batch changes one customer.
    let mut all = consume_keyed(&out, 1);
    for (i, (c, a)) in [("c2", "50.00"), ("c1", "6.50"), ("c2", "1.00")]
        .into_iter()
        .enumerate()
    {
        produce(&topic, &[order(c, a)]);
        all = consume_keyed(&out, i + 2);
    }
    let (code, _) = job.terminate();
    assert_eq!(code, 0);
    let change = |c: &str, n: u32, total: &str| {
        (
            Some(c.to_string()),
            format!(r#"{{"customer":"{c}","orders":{n},"total":"{total}"}}"#),
        )
    };
    assert_eq!(
        all,
        vec![
            change("c1", 1, "5.00"),
            change("c2", 1, "50.00"),
            change("c1", 2, "11.50"),
            change("c2", 2, "51.00")
        ],
        "one change per micro-batch, keyed by the group key"
    );
}

#[test]
fn late_records_are_dropped_or_routed_to_a_late_topic() {
    let topic = unique_topic("late");
    let late = unique_topic("late-out");
    let dlq = unique_topic("late-dlq");
    create_topic(&topic, 1);
    create_topic(&late, 1);
    create_topic(&dlq, 1);
    let rec = |s: u32| Rec::value(format!(r#"{{"k":"a","ts":"2024-01-01T00:00:{s:02}Z"}}"#));
    produce(
        &topic,
        &[
            rec(1),
            rec(12),
            rec(3),
            Rec::value(r#"{"k":"a","ts":null}"#),
            rec(25),
        ],
    );
    // One record per micro-batch, so the watermark passes 00:00:10 before 00:00:03 arrives.
    let out = run_ok(&[
        "execute",
        "--query",
        "SELECT window_start, COUNT(*) AS n FROM t WINDOW TUMBLING(ts, 10s) GROUP BY k",
        "--topic",
        &topic,
        "--schema",
        "k VARCHAR, ts TIMESTAMP",
        "--format",
        "csv",
        "--batch-size",
        "1",
        "--late-topic",
        &late,
        "--dlq-topic",
        &dlq,
    ]);
    assert_eq!(
        out,
        "window_start,n\n2024-01-01T00:00:00,1\n2024-01-01T00:00:10,1\n2024-01-01T00:00:20,1\n"
    );
    let routed: Vec<String> = consume(&late, 1).into_iter().map(|c| c.value).collect();
    assert_eq!(routed, vec![r#"{"k":"a","ts":"2024-01-01T00:00:03"}"#]);
    // A record without an event time is a bad record, not a late one.
    let dead = consume(&dlq, 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value, r#"{"k":"a","ts":null}"#);
    assert_eq!(dead[0].headers["velo.error"], "the event time 'ts' is NULL");
    assert_eq!(dead[0].headers["velo.source.offset"], "3");
}

#[test]
fn an_over_window_runs_through_the_binary() {
    let topic = trades_topic();
    let out = run_ok(&[
        "execute", "--query",
        "SELECT symbol, ts, price, \
           AVG(price) OVER (PARTITION BY symbol ORDER BY ts ROWS BETWEEN 4 PRECEDING AND CURRENT ROW) AS avg5, \
           ROW_NUMBER() OVER (PARTITION BY symbol ORDER BY ts) AS n \
         FROM trades",
        "--topic", &topic, "--schema", SCHEMA, "--format", "csv",
    ]);
    assert_eq!(
        out,
        "symbol,ts,price,avg5,n\n\
         AAPL,2024-01-01T00:00:05,150.2567,150.25670000,1\n\
         MSFT,2024-01-01T00:00:20,410.0000,410.00000000,1\n\
         AAPL,2024-01-01T00:00:59.999,150.0000,150.12835000,2\n\
         AAPL,2024-01-01T00:01:00,151.0000,150.41890000,3\n\
         MSFT,2024-01-01T00:01:30,409.5000,409.75000000,2\n"
    );
}

#[test]
fn a_continuous_over_window_emits_each_row_as_the_watermark_passes_it_and_continues_after_a_stop() {
    let topic = unique_topic("live-over");
    create_topic(&topic, 1);
    let group = unique_topic("g");
    let args = [
        "stream",
        "--query",
        "SELECT k, ts, v, SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s2, \
                ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) AS n FROM t",
        "--topic",
        &topic,
        "--schema",
        "k VARCHAR, v DECIMAL(10,2), ts TIMESTAMP",
        "--watermark-delay",
        "2s",
        "--format",
        "json-lines",
        "--group-id",
        &group,
        "--checkpoint-interval",
        "200ms",
    ];
    let job = spawn(&args);
    let rec = |s: u32, v: &str| {
        Rec::value(format!(
            r#"{{"k":"a","v":"{v}","ts":"2024-01-01T00:00:{s:02}Z"}}"#
        ))
    };
    // Out of order within the 2 s delay: 00:00:02 comes after 00:00:03.
    produce(&topic, &[rec(1, "1.10"), rec(3, "3.30"), rec(2, "2.20")]);
    // The watermark reaches 00:00:04: rows before it are emitted, in event-time order.
    produce(&topic, &[rec(6, "6.60")]);
    assert_eq!(
        job.take_lines(3),
        vec![
            r#"{"k":"a","ts":"2024-01-01T00:00:01","v":"1.10","s2":"1.10","n":1}"#,
            r#"{"k":"a","ts":"2024-01-01T00:00:02","v":"2.20","s2":"3.30","n":2}"#,
            r#"{"k":"a","ts":"2024-01-01T00:00:03","v":"3.30","s2":"5.50","n":3}"#,
        ]
    );
    std::thread::sleep(std::time::Duration::from_millis(600)); // a checkpoint holds 00:00:06
    let (code, rest) = job.terminate();
    assert_eq!(code, 0);
    assert!(
        rest.is_empty(),
        "00:00:06 waits for the watermark: {rest:?}"
    );
    // Restarted: 00:00:06 is still held, its frame and row number continue from before.
    let job = spawn(&args);
    produce(&topic, &[rec(9, "9.90")]);
    assert_eq!(
        job.take_lines(1),
        vec![r#"{"k":"a","ts":"2024-01-01T00:00:06","v":"6.60","s2":"9.90","n":4}"#]
    );
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, vec![]));
}

#[test]
fn state_over_the_memory_limit_fails_the_job_naming_the_operator() {
    let topic = trades_topic();
    let query =
        "SELECT symbol, COUNT(*) AS trades FROM trades WINDOW TUMBLING(ts, 1m) GROUP BY symbol";
    let args = |limit: &'static str| -> Vec<&str> {
        vec![
            "execute",
            "--topic",
            &topic,
            "--schema",
            SCHEMA,
            "--query",
            query,
            "--format",
            "csv",
            "--max-state-memory",
            limit,
        ]
    };
    run_failing(
        &args("100B"),
        1,
        "over the limit of 100 bytes (--max-state-memory); WindowAggregateExec holds the most",
    );
    let out = run_ok(&args("64MiB"));
    assert_eq!(
        sorted_csv(&out),
        [
            "window_start,window_end,symbol,trades",
            "2024-01-01T00:00:00,2024-01-01T00:01:00,AAPL,2",
            "2024-01-01T00:00:00,2024-01-01T00:01:00,MSFT,1",
            "2024-01-01T00:01:00,2024-01-01T00:02:00,AAPL,1",
            "2024-01-01T00:01:00,2024-01-01T00:02:00,MSFT,1",
        ]
    );
    run_failing(&args("lots"), 2, "--max-state-memory 'lots'");
}

#[test]
fn a_backlog_on_two_partitions_loses_no_record_as_late_when_a_group_member_starts() {
    // Both partitions hold the same 800 s of event time. The first micro-batch comes from one
    // partition only; the other, assigned in the same poll, must hold the watermark until its
    // records come, or most of them are behind it.
    let topic = unique_topic("backlog2");
    create_topic(&topic, 2);
    let group = unique_topic("g");
    let at = |ms: i64| {
        let (s, ms) = (ms / 1000, ms % 1000);
        format!(
            r#"{{"k":"a","ts":"2024-01-01T00:{:02}:{:02}.{ms:03}Z"}}"#,
            s / 60,
            s % 60
        )
    };
    let mut records: Vec<Rec> = (0..40_000)
        .map(|i| Rec::value(at(i * 20)).partition((i % 2) as i32))
        .collect();
    // Closers on both partitions: the watermark passes every window.
    records.extend((0..2).map(|p| Rec::value(at(2_000_000)).partition(p)));
    produce(&topic, &records);
    let job = spawn(&counting_job(&topic, &group, "1s"));
    let expected: Vec<String> = (0..80)
        .map(|w| {
            format!(
                r#"{{"window_start":"2024-01-01T00:{:02}:{:02}","n":500}}"#,
                w * 10 / 60,
                w * 10 % 60
            )
        })
        .collect();
    assert_eq!(job.take_lines(80), expected);
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, vec![]));
}
