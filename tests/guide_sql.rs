//! The deployment guide's own SQL runs as written, through the binary against the real broker:
//! `ORDER BY timestamp DESC` in `execute`, ORDER BY per window in `stream` (and its refusal
//! without a window), `CAST(x, 'TYPE')`, `timestamp()`, `"100.00"` meaning a string, and
//! `SELECT 1 … LIMIT 1` without FROM. (Each is also a case file in `tests/sql_cases`.)

mod common;

use common::*;

fn orders() -> String {
    let topic = unique_topic("guide-orders");
    create_topic(&topic, 1);
    produce(
        &topic,
        &[
            Rec::value(
                r#"{"customer_id":"c1","amount":"10.00","timestamp":"2024-01-01T00:00:03Z"}"#,
            ),
            Rec::value(
                r#"{"customer_id":"c2","amount":"250.50","timestamp":"2024-01-01T00:00:09Z"}"#,
            ),
            Rec::value(
                r#"{"customer_id":"c3","amount":"99.99","timestamp":"2024-01-01T00:00:01Z"}"#,
            ),
            Rec::value(
                r#"{"customer_id":"c4","amount":"100.01","timestamp":"2024-01-01T00:00:05Z"}"#,
            ),
        ],
    );
    topic
}

const SCHEMA: &str = "customer_id VARCHAR, amount DECIMAL(10,2), timestamp TIMESTAMP";

#[test]
fn execute_sorts_a_bounded_query_by_timestamp_desc() {
    let topic = orders();
    let out = run_ok(&[
        "execute",
        "--query",
        "SELECT * FROM orders ORDER BY timestamp DESC",
        "--topic",
        &topic,
        "--schema",
        SCHEMA,
        "--limit",
        "3",
        "--format",
        "csv",
    ]);
    assert_eq!(
        out,
        "customer_id,amount,timestamp\n\
         c2,250.50,2024-01-01T00:00:09\n\
         c4,100.01,2024-01-01T00:00:05\n\
         c1,10.00,2024-01-01T00:00:03\n"
    );
}

#[test]
fn a_double_quoted_value_that_names_no_column_is_a_string_with_a_warning() {
    let topic = orders();
    let out = run(&[
        "execute",
        "--query",
        "SELECT customer_id, amount FROM orders WHERE amount > \"100.00\"",
        "--topic",
        &topic,
        "--schema",
        SCHEMA,
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "customer_id,amount\nc2,250.50\nc4,100.01\n");
    assert!(
        stderr(&out).contains("\"100.00\" names no column: read as the string '100.00'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cast_with_a_type_string_and_timestamp_are_understood() {
    let topic = unique_topic("guide-iot");
    create_topic(&topic, 1);
    produce(
        &topic,
        &[
            Rec::value(r#"{"payload":"{\"device_id\":\"d1\",\"temperature\":80.5}"}"#),
            Rec::value(r#"{"payload":"{\"device_id\":\"d2\",\"temperature\":60}"}"#),
        ],
    );
    let before = chrono::Utc::now().naive_utc();
    let out = run_ok(&[
        "execute",
        "--query",
        "SELECT JSON_VALUE(payload, '$.device_id') AS device_id, \
         timestamp() AS alert_time, 'TEMPERATURE_HIGH' AS alert_type \
         FROM sensor_data WHERE CAST(JSON_VALUE(payload, '$.temperature'), 'FLOAT') > 75.0",
        "--topic",
        &topic,
        "--schema",
        "payload VARCHAR",
        "--format",
        "json-lines",
    ]);
    let after = chrono::Utc::now().naive_utc();
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["device_id"], "d1");
    assert_eq!(row["alert_type"], "TEMPERATURE_HIGH");
    // The processing time: when the query ran.
    let at = chrono::NaiveDateTime::parse_from_str(
        row["alert_time"].as_str().unwrap(),
        "%Y-%m-%dT%H:%M:%S%.f",
    )
    .unwrap();
    let second = chrono::Duration::seconds(1);
    assert!(
        before - second <= at && at <= after + second,
        "{before} ≤ {at} ≤ {after}"
    );
}

#[test]
fn select_without_from_answers_at_once() {
    let out = run_ok(&[
        "execute",
        "--query",
        "SELECT 1 as test_value LIMIT 1",
        "--topic",
        "test",
        "--timeout",
        "60s",
        "--format",
        "json-lines",
    ]);
    assert_eq!(out, "{\"test_value\":1}\n");
}

#[test]
fn stream_sorts_each_window_and_refuses_order_by_without_one() {
    let topic = unique_topic("guide-trades");
    create_topic(&topic, 1);
    let trade = |symbol: &str, quantity: i64, second: i64| {
        Rec::value(format!(
            r#"{{"symbol":"{symbol}","quantity":{quantity},"ts":"2024-01-01T00:{:02}:{:02}Z"}}"#,
            second / 60,
            second % 60
        ))
    };
    produce(
        &topic,
        &[
            trade("AAPL", 10, 1),
            trade("MSFT", 30, 10),
            trade("IBM", 5, 20),
            trade("AAPL", 25, 30),
            trade("JPM", 7, 65),
        ],
    );
    let job = spawn(&[
        "stream",
        "--query",
        "SELECT window_start, symbol, SUM(quantity) AS volume FROM trades \
         GROUP BY symbol WINDOW TUMBLING(ts, 1m) ORDER BY volume DESC",
        "--topic",
        &topic,
        "--schema",
        "symbol VARCHAR, quantity BIGINT, ts TIMESTAMP",
        "--format",
        "json-lines",
        "--group-id",
        &unique_topic("g"),
    ]);
    // The first minute closes while the stream runs, its rows sorted.
    assert_eq!(
        job.take_lines(3),
        [
            r#"{"window_start":"2024-01-01T00:00:00","symbol":"AAPL","volume":35}"#,
            r#"{"window_start":"2024-01-01T00:00:00","symbol":"MSFT","volume":30}"#,
            r#"{"window_start":"2024-01-01T00:00:00","symbol":"IBM","volume":5}"#,
        ]
    );
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, Vec::<String>::new()));

    let out = run_failing(
        &[
            "stream",
            "--query",
            "SELECT symbol, quantity FROM trades ORDER BY quantity",
            "--topic",
            &topic,
            "--schema",
            "symbol VARCHAR, quantity BIGINT, ts TIMESTAMP",
        ],
        2,
        "ORDER BY on a stream sorts the rows of each window as it closes",
    );
    assert!(stderr(&out).contains("execute"), "{}", stderr(&out));
}
