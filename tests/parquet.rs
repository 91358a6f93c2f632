//! Parquet written by VeloStream, read back by other ecosystems' readers — pyarrow and DuckDB —
//! value for value: decimals digit for digit, timestamps with their unit and zone, nested and
//! NULL values. Through the binary, from a topic on the real broker.

mod common;

use common::*;

const SCHEMA: &str =
    "id BIGINT, price DECIMAL(18,4), ts TIMESTAMP, ts_utc TIMESTAMP WITH TIME ZONE, \
     tags ARRAY<VARCHAR>, address STRUCT<city VARCHAR, zip VARCHAR>, note VARCHAR";

fn topic_with_every_kind_of_value() -> String {
    let topic = unique_topic("pq");
    create_topic(&topic, 1);
    produce(
        &topic,
        &[
            Rec::value(
                r#"{"id":1,"price":"150.2567","ts":"2024-01-01T00:00:00.123Z","ts_utc":"2024-01-01T00:00:00.123Z","tags":["a","b"],"address":{"city":"Oslo","zip":"0150"},"note":"first"}"#,
            )
            .header("trace", "t-1"),
            Rec::value(
                r#"{"id":2,"price":"-99999999999999.9999","ts":"1999-12-31T23:59:59.999Z","ts_utc":"1970-01-01T00:00:00Z","tags":[],"address":{"city":null,"zip":"x"},"note":null}"#,
            ),
            Rec::value(r#"{"id":3,"price":null,"ts":null,"ts_utc":null,"tags":null,"address":null,"note":""}"#),
        ],
    );
    topic
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("velo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_exported_topic_reads_back_exactly_in_pyarrow_and_duckdb() {
    let topic = topic_with_every_kind_of_value();
    let dir = temp_dir("export");
    let file = dir.join("snapshot.parquet");
    run_ok(&[
        "export",
        "--query",
        "SELECT *, _headers AS headers FROM t",
        "--topic",
        &topic,
        "--schema",
        SCHEMA,
        "--output-file",
        file.to_str().unwrap(),
    ]);
    let path = file.to_str().unwrap();
    assert_eq!(
        python_tool("tests/interop/parquet_tool.py", &["schema", path], &[]),
        [
            "id: int64",
            "price: decimal128(18, 4)",
            "ts: timestamp[ms]",
            "ts_utc: timestamp[ms, tz=UTC]",
            "tags: list<item: string>",
            "address: struct<city: string, zip: string>",
            "note: string",
            "headers: map<string ('keys'), string ('values') ('headers')>",
        ]
    );
    assert_eq!(
        python_tool("tests/interop/parquet_tool.py", &["pyarrow", path], &[]),
        [
            r#"{"id":1,"price":"150.2567","ts":"2024-01-01T00:00:00.123000","ts_utc":"2024-01-01T00:00:00.123000+00:00","tags":["a","b"],"address":{"city":"Oslo","zip":"0150"},"note":"first","headers":[["trace","t-1"]]}"#,
            r#"{"id":2,"price":"-99999999999999.9999","ts":"1999-12-31T23:59:59.999000","ts_utc":"1970-01-01T00:00:00+00:00","tags":[],"address":{"city":null,"zip":"x"},"note":null,"headers":[]}"#,
            r#"{"id":3,"price":null,"ts":null,"ts_utc":null,"tags":null,"address":null,"note":"","headers":[]}"#,
        ]
    );
    assert_eq!(
        python_tool("tests/interop/parquet_tool.py", &["duckdb", path], &[]),
        [
            r#"{"id":1,"price":"150.2567","ts":"2024-01-01T00:00:00.123000","ts_utc":"2024-01-01T00:00:00.123000+00:00","tags":["a","b"],"address":{"city":"Oslo","zip":"0150"},"note":"first","headers":{"trace":"t-1"}}"#,
            r#"{"id":2,"price":"-99999999999999.9999","ts":"1999-12-31T23:59:59.999000","ts_utc":"1970-01-01T00:00:00+00:00","tags":[],"address":{"city":null,"zip":"x"},"note":null,"headers":{}}"#,
            r#"{"id":3,"price":null,"ts":null,"ts_utc":null,"tags":null,"address":null,"note":"","headers":{}}"#,
        ]
    );
    // Nothing but the finished file is left in the folder.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["snapshot.parquet"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_of_a_whole_topic_needs_no_query_and_compression_and_row_groups_are_options() {
    let topic = topic_with_every_kind_of_value();
    let dir = temp_dir("export-opts");
    let file = dir.join("all.parquet");
    run_ok(&[
        "export",
        "--topic",
        &topic,
        "--schema",
        SCHEMA,
        "--output-file",
        file.to_str().unwrap(),
        "--compression",
        "snappy",
        "--row-group-rows",
        "2",
    ]);
    let meta = python_tool(
        "tests/interop/parquet_tool.py",
        &["meta", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(meta, ["row_groups=2 rows=3 compression=SNAPPY"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_export_leaves_no_file() {
    let dir = temp_dir("export-fail");
    let file = dir.join("never.parquet");
    run_failing(
        &[
            "export",
            "--query",
            "SELECT nope FROM t",
            "--source",
            "generator:trades?count=10",
            "--output-file",
            file.to_str().unwrap(),
        ],
        2,
        "nope",
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn output_file_alone_means_file_output_in_the_format_of_its_extension() {
    let dir = temp_dir("output-file");
    let file = dir.join("ids.jsonl");
    let printed = run_ok(&[
        "execute",
        "--source",
        "generator:trades?count=3",
        "--query",
        "SELECT trade_id FROM trades",
        "--output-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(printed, "");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\"trade_id\":1}\n{\"trade_id\":2}\n{\"trade_id\":3}\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_on_a_terminal_shows_each_partition_against_its_end_offset() {
    let topic = unique_topic("pq-progress");
    create_topic(&topic, 2);
    let records: Vec<Rec> = (0..30)
        .map(|n| Rec::value(format!(r#"{{"id":{n}}}"#)).partition(if n < 10 { 0 } else { 1 }))
        .collect();
    produce(&topic, &records);
    let dir = temp_dir("export-progress");
    let file = dir.join("ids.parquet");
    let command = format!(
        "{} export --topic {topic} --schema 'id BIGINT' --output-file {}",
        env!("CARGO_BIN_EXE_velo-sql"),
        file.display()
    );
    // `script` gives the export a terminal, as a user's shell would.
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("KAFKA_BROKERS", brokers())
        .env("RUST_LOG", "warn")
        .output()
        .expect("script (util-linux)");
    assert!(out.status.success(), "{out:?}");
    let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    for line in [
        "30/30 records",
        "partition 0",
        "10/10",
        "partition 1",
        "20/20",
    ] {
        assert!(screen.contains(line), "{line} in {screen}");
    }
    // Not on a terminal: no bar at all.
    let quiet = run_with(
        &[
            "export",
            "--topic",
            &topic,
            "--schema",
            "id BIGINT",
            "--output-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!stderr(&quiet).contains("records ·"), "{}", stderr(&quiet));
    std::fs::remove_dir_all(&dir).unwrap();
}
