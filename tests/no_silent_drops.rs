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
        metrics.contains(r#"velo_record_errors_total{job="parse",kind="expression"} 2"#),
        "{metrics}"
    );
}
