//! Checkpoints through the binary against the real broker: a stateful job stopped in the middle
//! of an open window or a pending join, then restarted, gives what an uninterrupted run gives;
//! file output keeps every row once across stops and kills; `--limit` twice with one group
//! skips nothing; state written by another query is refused; a damaged checkpoint falls back to
//! the one before.

mod common;

use common::*;

const SCHEMA: &str = "k VARCHAR, n BIGINT, ts TIMESTAMP";

fn rec(k: &str, n: i64, second: i64) -> Rec {
    Rec::value(format!(r#"{{"k":"{k}","n":{n},"ts":"{}"}}"#, iso(second)))
}

/// 2024-01-01T00:00:00Z plus `second` seconds, ISO-8601.
fn iso(second: i64) -> String {
    let (m, s) = (second / 60, second % 60);
    format!("2024-01-01T{:02}:{:02}:{:02}Z", m / 60, m % 60, s)
}

fn stream_args<'a>(topic: &'a str, query: &'a str, group: &'a str) -> Vec<&'a str> {
    vec![
        "stream",
        "--query",
        query,
        "--topic",
        topic,
        "--schema",
        SCHEMA,
        "--format",
        "json-lines",
        "--group-id",
        group,
    ]
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// The rows `execute` gives for `query` over the whole topic (the uninterrupted answer).
fn oracle(topic: &str, query: &str) -> Vec<String> {
    let out = run_ok(&[
        "execute",
        "--query",
        query,
        "--topic",
        topic,
        "--schema",
        SCHEMA,
        "--format",
        "json-lines",
    ]);
    sorted(out.lines().map(str::to_string).collect())
}

#[test]
fn a_window_stopped_while_open_and_restarted_emits_what_an_uninterrupted_run_emits() {
    let topic = unique_topic("ck-win");
    create_topic(&topic, 2);
    let group = unique_topic("ck-win-g");
    let query = "SELECT window_start, k, COUNT(*) AS trades, SUM(n) AS total FROM t \
                 WHERE k <> 'end' GROUP BY k WINDOW TUMBLING(ts, 1m)";
    // Window 0 gets 300 records before the stop and 200 after; window 1 only after.
    let first: Vec<Rec> = (0..300)
        .map(|i| rec(["a", "b", "c"][i as usize % 3], i, i % 60).partition((i % 2) as i32))
        .collect();
    produce(&topic, &first);
    let job = spawn(&stream_args(&topic, query, &group));
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (code, rest) = job.terminate();
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "window 0 is still open: {rest:?}");
    let second: Vec<Rec> = (300..600)
        .map(|i| rec(["a", "b", "c"][i as usize % 3], i, (i - 300) % 90).partition((i % 2) as i32))
        .chain([
            rec("end", 0, 1000).partition(0),
            rec("end", 0, 1000).partition(1),
        ])
        .collect();
    produce(&topic, &second);
    let expected = oracle(&topic, query);
    assert_eq!(expected.len(), 6, "3 keys in 2 windows: {expected:?}");
    let job = spawn(&stream_args(&topic, query, &group));
    let got = sorted(job.take_lines(6));
    let (code, rest) = job.terminate();
    assert_eq!(code, 0);
    assert_eq!(
        got, expected,
        "the restored window counts what came before the stop"
    );
    assert!(rest.is_empty(), "nothing twice: {rest:?}");
}

#[test]
fn a_pending_interval_join_survives_a_stop() {
    let orders = unique_topic("ck-orders");
    let shipments = unique_topic("ck-ships");
    create_topic(&orders, 1);
    create_topic(&shipments, 1);
    let sql = format!(
        "CREATE STREAM orders (id BIGINT, ts TIMESTAMP) WITH ('topic' = '{orders}');\n\
         CREATE STREAM shipments (id BIGINT, carrier VARCHAR, ts TIMESTAMP) WITH ('topic' = '{shipments}');\n\
         SELECT o.id, s.carrier FROM orders o JOIN shipments s \
         ON o.id = s.id AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '1' HOUR"
    );
    let order =
        |id: i64, second: i64| Rec::value(format!(r#"{{"id":{id},"ts":"{}"}}"#, iso(second)));
    let shipment = |id: i64, carrier: &str, second: i64| {
        Rec::value(format!(
            r#"{{"id":{id},"carrier":"{carrier}","ts":"{}"}}"#,
            iso(second)
        ))
    };
    produce(
        &orders,
        &(1..=5).map(|id| order(id, id * 10)).collect::<Vec<_>>(),
    );
    let group = unique_topic("ck-join-g");
    let args = |sql: &str, group: &str| -> Vec<String> {
        [
            "stream",
            "--query",
            sql,
            "--format",
            "json-lines",
            "--group-id",
            group,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let first = args(&sql, &group);
    let job = spawn(&first.iter().map(String::as_str).collect::<Vec<_>>());
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, vec![]), "no shipment yet");
    // The orders are only in the stopped job's state now; their offsets are committed.
    produce(
        &shipments,
        &[
            shipment(2, "dhl", 100),
            shipment(4, "ups", 200),
            shipment(9, "fedex", 300),
        ],
    );
    let job = spawn(&first.iter().map(String::as_str).collect::<Vec<_>>());
    let got = sorted(job.take_lines(2));
    let (code, rest) = job.terminate();
    assert_eq!(code, 0);
    assert_eq!(
        got,
        vec![r#"{"id":2,"carrier":"dhl"}"#, r#"{"id":4,"carrier":"ups"}"#]
    );
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn file_output_keeps_every_row_once_across_stops_and_kills() {
    let topic = unique_topic("ck-file");
    create_topic(&topic, 2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.csv");
    let file_arg = file.display().to_string();
    let group = unique_topic("ck-file-g");
    let query = "SELECT n, k FROM t WHERE n % 3 <> 0";
    let args = [
        "stream",
        "--query",
        query,
        "--topic",
        &topic,
        "--schema",
        SCHEMA,
        "--format",
        "csv",
        "--output",
        "file",
        "--output-file",
        &file_arg,
        "--group-id",
        &group,
        "--checkpoint-interval",
        "100ms",
        "--group-instance-id",
        &group,
    ];
    let batch = |range: std::ops::Range<i64>| -> Vec<Rec> {
        range
            .map(|n| rec("x", n, 0).partition((n % 2) as i32))
            .collect()
    };
    let rows_in_file = || -> Vec<String> {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let wait_for_rows = |n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while rows_in_file().len() < n + 1 {
            assert!(std::time::Instant::now() < deadline, "{:?}", rows_in_file());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    // A graceful stop, then a kill -9 while records flow, then a graceful run to the end.
    produce(&topic, &batch(0..300));
    let job = spawn(&args);
    wait_for_rows(200);
    assert_eq!(job.terminate().0, 0);
    produce(&topic, &batch(300..600));
    let mut job = spawn(&args);
    wait_for_rows(300);
    produce(&topic, &batch(600..900));
    std::thread::sleep(std::time::Duration::from_millis(150));
    job.child.kill().unwrap();
    job.child.wait().unwrap();
    produce(&topic, &batch(900..1200));
    let job = spawn(&args);
    wait_for_rows(800);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(job.terminate().0, 0);
    let lines = rows_in_file();
    assert_eq!(lines[0], "n,k", "one header");
    let mut numbers: Vec<i64> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    numbers.sort_unstable();
    let expected: Vec<i64> = (0..1200).filter(|n| n % 3 != 0).collect();
    assert_eq!(numbers, expected, "every row once, none lost, none twice");
}

#[test]
fn limit_twice_with_one_group_skips_nothing() {
    let topic = unique_topic("ck-limit");
    create_topic(&topic, 1);
    produce(&topic, &(0..20).map(|n| rec("x", n, n)).collect::<Vec<_>>());
    let group = unique_topic("ck-limit-g");
    // Stateless: every odd number, three at a time.
    let query = "SELECT n FROM t WHERE n % 2 = 1";
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut args = stream_args(&topic, query, &group);
        args.extend(["--limit", "3"]);
        let out = run_ok(&args);
        seen.extend(out.lines().map(str::to_string));
    }
    let expected: Vec<String> = [1, 3, 5, 7, 9, 11, 13, 15, 17]
        .iter()
        .map(|n| format!(r#"{{"n":{n}}}"#))
        .collect();
    assert_eq!(seen, expected);
    // Stateful: a window closing emits three rows at once; the limit takes one per run and
    // the others come in the next runs, not lost with the closed window.
    let group = unique_topic("ck-limit-w");
    let topic = unique_topic("ck-limit-wt");
    create_topic(&topic, 1);
    produce(
        &topic,
        &[
            rec("a", 1, 1),
            rec("b", 2, 2),
            rec("c", 3, 3),
            rec("a", 4, 70),
        ],
    );
    let query = "SELECT window_start, k, SUM(n) AS total FROM t GROUP BY k WINDOW TUMBLING(ts, 1m)";
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut args = stream_args(&topic, query, &group);
        args.extend(["--limit", "1"]);
        seen.extend(run_ok(&args).lines().map(str::to_string));
    }
    assert_eq!(
        sorted(seen),
        vec![
            r#"{"window_start":"2024-01-01T00:00:00","k":"a","total":1}"#,
            r#"{"window_start":"2024-01-01T00:00:00","k":"b","total":2}"#,
            r#"{"window_start":"2024-01-01T00:00:00","k":"c","total":3}"#,
        ]
    );
}

#[test]
fn state_written_by_another_query_is_refused_naming_both() {
    let topic = unique_topic("ck-other");
    create_topic(&topic, 1);
    produce(&topic, &[rec("a", 1, 1)]);
    let group = unique_topic("ck-other-g");
    let first = "SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(ts, 1m)";
    let job = spawn(&stream_args(&topic, first, &group));
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(job.terminate().0, 0);
    let second = "SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(ts, 5m)";
    let out = run_failing(
        &stream_args(&topic, second, &group),
        2,
        "written by a different query",
    );
    let err = stderr(&out);
    assert!(
        err.contains("TUMBLING(ts, 1m)") && err.contains("TUMBLING(ts, 5m)"),
        "{err}"
    );
    assert!(err.contains("--ignore-state"), "{err}");
    // With --ignore-state it runs, and the old state is kept aside.
    let mut args = stream_args(&topic, second, &group);
    args.push("--ignore-state");
    let job = spawn(&args);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(job.terminate().0, 0);
    let kept_aside = std::fs::read_dir(state_root().join(&group))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("checkpoints.ignored-")
        });
    assert!(kept_aside);
}

#[test]
fn a_damaged_checkpoint_falls_back_to_the_one_before() {
    let topic = unique_topic("ck-damaged");
    create_topic(&topic, 1);
    let group = unique_topic("ck-damaged-g");
    let query =
        "SELECT window_start, COUNT(*) AS n FROM t WHERE k <> 'end' WINDOW TUMBLING(ts, 1m)";
    produce(&topic, &(0..10).map(|n| rec("a", n, n)).collect::<Vec<_>>());
    let job = spawn(&stream_args(&topic, query, &group));
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(job.terminate().0, 0);
    produce(
        &topic,
        &(10..20).map(|n| rec("a", n, n)).collect::<Vec<_>>(),
    );
    let job = spawn(&stream_args(&topic, query, &group));
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(job.terminate().0, 0);
    // Damage the newest checkpoint's window state.
    let folder = state_root().join(&group).join("checkpoints");
    let mut checkpoints: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    checkpoints.sort();
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    let newest = checkpoints.last().unwrap();
    let state = std::fs::read_dir(newest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "arrow"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
    produce(&topic, &[rec("end", 0, 1000)]);
    // The window is complete: the older checkpoint's 10 records plus the 10 read again.
    let (line, err) = first_line_then_stop(&stream_args(&topic, query, &group));
    assert_eq!(line, r#"{"window_start":"2024-01-01T00:00:00","n":20}"#);
    assert!(err.contains("is damaged and is skipped"), "{err}");
}

#[test]
fn a_topic_created_again_is_read_from_its_start_not_skipped_to_the_old_position() {
    let topic = unique_topic("ck-again");
    create_topic(&topic, 1);
    produce(&topic, &(0..20).map(|n| rec("a", n, n)).collect::<Vec<_>>());
    let group = unique_topic("ck-again-g");
    let query = "SELECT k, COUNT(*) AS n FROM t GROUP BY k";
    let job = spawn(&stream_args(&topic, query, &group));
    assert_eq!(job.take_lines(1), vec![r#"{"k":"a","n":20}"#]);
    assert_eq!(job.terminate().0, 0);
    // The checkpoint says offset 20; the topic starts again at 0.
    delete_topic(&topic);
    create_topic(&topic, 1);
    produce(&topic, &(0..3).map(|n| rec("b", n, n)).collect::<Vec<_>>());
    let (line, err) = first_line_then_stop(&stream_args(&topic, query, &group));
    assert_eq!(line, r#"{"k":"b","n":3}"#);
    assert!(err.contains("created again or truncated"), "{err}");
}

#[test]
fn exactly_once_is_refused_where_it_cannot_hold() {
    let topic = unique_topic("ck-eo");
    create_topic(&topic, 1);
    let group = unique_topic("ck-eo-g");
    let mut to_stdout = stream_args(&topic, "SELECT k FROM t", &group);
    to_stdout.extend(["--delivery", "exactly-once"]);
    run_failing(
        &to_stdout,
        2,
        "--delivery exactly-once is for --output kafka",
    );
    let mut without_state = stream_args(&topic, "SELECT k FROM t", &group);
    without_state.extend([
        "--delivery",
        "exactly-once",
        "--no-state",
        "--output",
        "kafka",
        "--output-topic",
        &topic,
    ]);
    run_failing(
        &without_state,
        2,
        "--delivery exactly-once needs checkpoints",
    );
}

#[test]
fn limit_on_a_join_giving_several_rows_per_record_skips_none_of_them() {
    let topic = unique_topic("ck-limit-join");
    create_topic(&topic, 1);
    produce(&topic, &(1..=5).map(|n| rec("x", n, n)).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("colours.csv");
    std::fs::write(&table, "k,colour\nx,red\nx,blue\n").unwrap();
    let sql = format!(
        "CREATE STREAM s (k VARCHAR, n BIGINT, ts TIMESTAMP) WITH ('topic' = '{topic}');\n\
         CREATE TABLE colours (k VARCHAR, colour VARCHAR) WITH ('path' = '{}', 'format' = 'csv');\n\
         SELECT s.n, c.colour FROM s JOIN colours c ON s.k = c.k",
        table.display()
    );
    let group = unique_topic("ck-limit-join-g");
    // Each record gives two rows; a limit of 3 cuts through the second record's.
    let mut seen = Vec::new();
    for limit in ["3", "3", "3", "1"] {
        let out = run_ok(&[
            "stream",
            "--query",
            &sql,
            "--format",
            "csv",
            "--group-id",
            &group,
            "--limit",
            limit,
        ]);
        seen.extend(out.lines().skip(1).map(str::to_string));
    }
    seen.sort();
    let mut expected: Vec<String> = (1..=5)
        .flat_map(|n| [format!("{n},blue"), format!("{n},red")])
        .collect();
    expected.sort();
    assert_eq!(seen, expected, "every row once");
}

#[test]
fn file_output_without_state_appends_instead_of_erasing() {
    let topic = unique_topic("ck-append");
    create_topic(&topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.jsonl");
    let file_arg = file.display().to_string();
    let group = unique_topic("ck-append-g");
    let args = [
        "stream",
        "--query",
        "SELECT n FROM t",
        "--topic",
        &topic,
        "--schema",
        SCHEMA,
        "--format",
        "json-lines",
        "--output",
        "file",
        "--output-file",
        &file_arg,
        "--group-id",
        &group,
        "--no-state",
    ];
    let lines = || -> usize {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .count()
    };
    for round in 0..2 {
        produce(
            &topic,
            &(round * 5..round * 5 + 5)
                .map(|n| rec("a", n, n))
                .collect::<Vec<_>>(),
        );
        let job = spawn(&args);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while lines() < (round as usize + 1) * 5 {
            assert!(std::time::Instant::now() < deadline, "{}", lines());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(job.terminate().0, 0);
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let expected: String = (0..10).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    assert_eq!(
        text, expected,
        "the second run appended to the first's rows"
    );
}
