//! No record or row disappears without a trace: a row an expression cannot evaluate, a record
//! a decoder rejects, a result an encoder cannot write — each is counted by kind (the run's
//! last log line, job status, metrics) and dead-lettered or skipped or stops the job as
//! `on_error` says. Through the binary, against the real broker.

mod common;

use common::server::*;
use common::*;

/// A topic with ids 1..=4 where record 3 (offset 2) holds a value no BIGINT can hold.
fn topic_with_a_poison_value() -> String {
    let topic = unique_topic("poison");
    create_topic(&topic, 1);
    produce(
        &topic,
        &[
            Rec::value(r#"{"id":1,"v":"10"}"#),
            Rec::value(r#"{"id":2,"v":"20"}"#),
            Rec::value(r#"{"id":3,"v":"five"}"#).key("k3"),
            Rec::value(r#"{"id":4,"v":"40"}"#),
        ],
    );
    topic
}

const QUERY: &str = "SELECT id, CAST(v AS BIGINT) + 1 AS n FROM t WHERE id > 1";

#[test]
fn a_row_an_expression_cannot_evaluate_is_dead_lettered_as_its_record_and_counted() {
    let topic = topic_with_a_poison_value();
    let dlq = unique_topic("poison-dlq");
    create_topic(&dlq, 1);
    let out = run_with(
        &[
            "execute",
            "--query",
            QUERY,
            "--topic",
            &topic,
            "--schema",
            "id BIGINT, v VARCHAR",
            "--format",
            "json-lines",
            "--dlq-topic",
            &dlq,
        ],
        &[("RUST_LOG", "info")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"id\":2,\"n\":21}\n{\"id\":4,\"n\":41}\n");
    let log = stderr(&out);
    assert!(log.contains("expression_errors=1"), "{log}");
    assert!(log.contains("bad_records=0"), "{log}");
    // Traced back through the filter and the projection to the record it came from.
    let dead = consume(&dlq, 1);
    assert_eq!(dead[0].value, r#"{"id":3,"v":"five"}"#);
    assert_eq!(dead[0].key.as_deref(), Some("k3"));
    assert_eq!(dead[0].headers["velo.source.offset"], "2");
    assert_eq!(dead[0].headers["velo.source.topic"], topic);
    let reason = &dead[0].headers["velo.error"];
    assert!(
        reason.contains("SELECT cannot be evaluated: computing column 'n'")
            && reason.contains("five"),
        "{reason}"
    );
}

#[test]
fn on_error_skip_counts_and_fail_stops_at_the_record() {
    let topic = topic_with_a_poison_value();
    let args = |policy: &'static str| {
        vec![
            "execute".to_string(),
            "--query".into(),
            QUERY.into(),
            "--topic".into(),
            topic.clone(),
            "--schema".into(),
            "id BIGINT, v VARCHAR".into(),
            "--format".into(),
            "json-lines".into(),
            "--on-error".into(),
            policy.into(),
        ]
    };
    let skip: Vec<String> = args("skip");
    let out = run_with(
        &skip.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("RUST_LOG", "info")],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "{\"id\":2,\"n\":21}\n{\"id\":4,\"n\":41}\n");
    assert!(
        stderr(&out).contains("expression_errors=1"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!(
            "skipped the record at topic '{topic}' partition 0 offset 2"
        )),
        "{}",
        stderr(&out)
    );
    let fail: Vec<String> = args("fail");
    let out = run_with(&fail.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains(&format!(
            "stopped at a bad record (on_error = fail): the record at topic '{topic}' partition 0 offset 2 (expression error)"
        )),
        "{log}"
    );
    // Dead-lettering needs somewhere to write.
    let out = run_with(
        &args("dead-letter")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[("RUST_LOG", "info")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("on_error dead-letter needs a dead-letter topic"));
}

#[test]
fn a_row_computed_after_an_aggregate_is_dead_lettered_as_the_row() {
    let topic = unique_topic("agg-poison");
    let dlq = unique_topic("agg-dlq");
    create_topic(&topic, 1);
    create_topic(&dlq, 1);
    produce(
        &topic,
        &[
            Rec::value(r#"{"k":"a","v":600}"#),
            Rec::value(r#"{"k":"a","v":600}"#),
            Rec::value(r#"{"k":"b","v":7}"#),
        ],
    );
    // 1200 does not fit DECIMAL(3,0): the row for 'a' cannot be computed; 'b' is fine.
    let out = run_with(
        &[
            "execute",
            "--query",
            "SELECT k, CAST(SUM(v) AS DECIMAL(3,0)) AS total FROM t GROUP BY k",
            "--topic",
            &topic,
            "--schema",
            "k VARCHAR, v BIGINT",
            "--format",
            "json-lines",
            "--dlq-topic",
            &dlq,
        ],
        &[("RUST_LOG", "info")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"k\":\"b\",\"total\":\"7\"}\n");
    assert!(
        stderr(&out).contains("expression_errors=1"),
        "{}",
        stderr(&out)
    );
    let dead = consume(&dlq, 1);
    assert_eq!(dead[0].value, r#"{"k":"a","sum(t.v)":1200}"#);
    assert_eq!(dead[0].headers["velo.operator"], "ProjectionExec");
    assert!(!dead[0].headers.contains_key("velo.source.offset"));
}

#[test]
fn job_status_counts_errors_by_kind_while_the_job_runs() {
    let topic = unique_topic("status-poison");
    create_topic(&topic, 1);
    let server = start_server(&config_yaml(""));
    deploy(
        &server,
        &format!(
            "CREATE STREAM numbers (id BIGINT, v VARCHAR) WITH ('topic' = '{topic}');\n\
             START JOB parse AS SELECT id, CAST(v AS BIGINT) AS n FROM numbers;"
        ),
    );
    // Every row fails: the job runs, outputs nothing, and says why.
    produce(
        &topic,
        &[
            Rec::value(r#"{"id":1,"v":"x"}"#),
            Rec::value(r#"{"id":2,"v":"y"}"#),
            Rec::value("not json"),
        ],
    );
    let job = eventually("the errors to be counted", || {
        let (_, body) = call("GET", &format!("{}/jobs/parse", server.url), None, None);
        let j = json(&body);
        (j["errors"]["expression"] == 2 && j["errors"]["decode"] == 1).then_some(j)
    });
    assert_eq!(job["status"], "running");
    assert_eq!(job["records_out"], 0);
    assert_eq!(job["errors"]["encode"], 0);
    assert_eq!(job["bad_records"], 1);
    let (_, metrics) = call("GET", &format!("{}/metrics", server.url), None, None);
    assert!(
        metrics.contains(r#"velo_record_errors_total{job_id="parse",kind="expression"} 2"#),
        "{metrics}"
    );
}

/// Ten events a second apart from 2024-01-01T00:00:00Z with key `k<n % 2>`, starting at `from`.
fn events(from: i64, to: i64) -> Vec<Rec> {
    (from..to)
        .map(|n| {
            Rec::value(format!(
                r#"{{"k":"k{}","n":{n},"ts":"2024-01-01T00:00:{n:02}Z"}}"#,
                n % 2
            ))
        })
        .collect()
}

#[test]
fn a_record_from_the_far_future_is_an_event_time_error_not_a_watermark_move() {
    let topic = unique_topic("skew");
    let dlq = unique_topic("skew-dlq");
    create_topic(&topic, 1);
    create_topic(&dlq, 1);
    let mut records = events(0, 10);
    records.push(Rec::value(r#"{"k":"k0","n":99,"ts":"9999-12-31T00:00:00Z"}"#).key("poison"));
    records.extend(events(10, 25));
    produce(&topic, &records);
    let job = spawn(&[
        "stream",
        "--query",
        "SELECT k, window_start, COUNT(*) AS c, SUM(n) AS s FROM t \
         GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)",
        "--topic",
        &topic,
        "--schema",
        "k VARCHAR, n BIGINT, ts TIMESTAMP",
        "--event-time-column",
        "ts",
        "--format",
        "json-lines",
        "--dlq-topic",
        &dlq,
        "--group-id",
        &unique_topic("g"),
    ]);
    // While the stream runs: the windows after the poison record still close (the watermark
    // is at 00:00:24, so [0 s, 10 s) and [10 s, 20 s) are emitted), with every good event.
    let mut rows = job.take_lines(4);
    rows.sort();
    assert_eq!(
        rows,
        [
            r#"{"k":"k0","window_start":"2024-01-01T00:00:00","c":5,"s":20}"#,
            r#"{"k":"k0","window_start":"2024-01-01T00:00:10","c":5,"s":70}"#,
            r#"{"k":"k1","window_start":"2024-01-01T00:00:00","c":5,"s":25}"#,
            r#"{"k":"k1","window_start":"2024-01-01T00:00:10","c":5,"s":75}"#,
        ]
    );
    let dead = consume(&dlq, 1);
    assert_eq!(dead[0].key.as_deref(), Some("poison"));
    assert_eq!(dead[0].headers["velo.source.offset"], "10");
    let reason = &dead[0].headers["velo.error"];
    assert!(
        reason.starts_with("the event time 'ts' (9999-12-31T00:00:00.000Z) is later than"),
        "{reason}"
    );
    let (code, rest) = job.terminate();
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn max_event_time_skew_zero_lets_a_far_future_record_through() {
    // The bound is the user's: with 0 the far-future record moves the watermark as it always
    // did, and the later events are late (counted, not emitted).
    let topic = unique_topic("skew-off");
    create_topic(&topic, 1);
    let mut records = events(0, 5);
    records.push(Rec::value(
        r#"{"k":"k0","n":99,"ts":"9999-12-31T00:00:00Z"}"#,
    ));
    records.extend(events(5, 10));
    produce(&topic, &records);
    let out = run_with(
        &[
            "execute",
            "--query",
            "SELECT window_start, COUNT(*) AS c FROM t GROUP BY TUMBLE(ts, INTERVAL '1' HOUR)",
            "--topic",
            &topic,
            "--schema",
            "k VARCHAR, n BIGINT, ts TIMESTAMP",
            "--event-time-column",
            "ts",
            "--format",
            "csv",
            "--max-event-time-skew",
            "0",
            "--batch-size",
            "1",
        ],
        &[("RUST_LOG", "info")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "window_start,c\n2024-01-01T00:00:00,5\n9999-12-31T00:00:00,1\n"
    );
    let log = stderr(&out);
    assert!(log.contains("event_time_errors=0"), "{log}");
    assert!(log.contains("late_rows=5"), "{log}");
}

/// Runs `sql` over `lines` one record per micro-batch; the rows out and the errors by kind.
fn replay_one_by_one(sql: &str, lines: &[&str]) -> (Vec<String>, velostream::job::ErrorCounts) {
    let mut replay = velostream::replay::Replay::plan(sql).unwrap();
    let mut out = Vec::new();
    for line in lines {
        out.extend(replay.push(&[line.as_bytes()]).unwrap());
    }
    out.extend(replay.finish().unwrap());
    let mut rows: Vec<String> = out
        .iter()
        .flat_map(|b| {
            let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
            w.write(b).unwrap();
            w.finish().unwrap();
            String::from_utf8(w.into_inner())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort();
    (rows, replay.errors())
}

#[test]
fn a_row_whose_window_would_leave_the_timestamp_range_is_an_error_not_a_panic() {
    // Event times in milliseconds: the first is 2 s after the earliest instant a timestamp
    // can hold, so its one-minute window would start before it.
    let lines = [
        r#"{"k":"a","ts":-9223372036854773807}"#,
        r#"{"k":"a","ts":1000}"#,
        r#"{"k":"a","ts":2000}"#,
    ];
    for window in [
        "TUMBLING(ts, 1m)",
        "SLIDING(ts, 1m, 30s)",
        "SESSION(ts, 1m)",
    ] {
        let sql = format!(
            "CREATE STREAM t (k VARCHAR, ts TIMESTAMP, WATERMARK FOR ts AS ts);\n\
             SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW {window}"
        );
        let (rows, errors) = replay_one_by_one(&sql, &lines);
        let row = |start: &str, end: &str| {
            format!(r#"{{"window_start":"{start}","window_end":"{end}","k":"a","n":2}}"#)
        };
        let expected = match &window[..3] {
            "TUM" => vec![row("1970-01-01T00:00:00", "1970-01-01T00:01:00")],
            "SLI" => vec![
                row("1969-12-31T23:59:30", "1970-01-01T00:00:30"),
                row("1970-01-01T00:00:00", "1970-01-01T00:01:00"),
            ],
            _ => vec![row("1970-01-01T00:00:01", "1970-01-01T00:01:02")],
        };
        assert_eq!(rows, expected, "{window}");
        assert_eq!(errors.expression, 1, "{window}: {errors:?}");
    }
}
