//! Files as a stream (`--source file:PATH`, `CREATE STREAM … WITH ('path' = …)`): JSON lines,
//! CSV and Parquet give the same answers as the same records on a topic; a directory followed
//! by `stream` picks up new files and, restarted, reads none twice; a malformed file is
//! reported with its name and row and the rest is read. Through the binary.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const SCHEMA: &str = "id BIGINT, customer VARCHAR, amount DECIMAL(12,2), vip BOOLEAN, ts TIMESTAMP";
const QUERY: &str = "SELECT window_start, customer, COUNT(*) AS n, SUM(amount) AS total, \
     SUM(CASE WHEN vip THEN 1 ELSE 0 END) AS vips FROM t GROUP BY customer WINDOW TUMBLING(ts, 1m)";

/// Order `n`: customer c<n % 3>, amount n.05, vip every 4th, a minute per 10 orders.
fn order(n: i64) -> (String, String) {
    let json = format!(
        r#"{{"id":{n},"customer":"c{}","amount":"{n}.05","vip":{},"ts":"2024-01-01T00:{:02}:{:02}Z"}}"#,
        n % 3,
        n % 4 == 0,
        n / 10,
        (n * 7) % 60
    );
    let csv = format!(
        "{n},c{},{n}.05,{},2024-01-01T00:{:02}:{:02}Z",
        n % 3,
        n % 4 == 0,
        n / 10,
        (n * 7) % 60
    );
    (json, csv)
}

fn run_csv(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--query", QUERY, "--format", "csv"]);
    run_ok(&all)
}

#[test]
fn json_lines_csv_and_parquet_files_answer_as_the_same_records_on_a_topic() {
    let dir = tempfile::tempdir().unwrap();
    let orders: Vec<(String, String)> = (0..60).map(order).collect();
    let topic = unique_topic("files-vs-topic");
    create_topic(&topic, 1);
    produce(
        &topic,
        &orders
            .iter()
            .map(|(j, _)| Rec::value(j.clone()))
            .collect::<Vec<_>>(),
    );
    let jsonl = dir.path().join("orders.jsonl");
    std::fs::write(
        &jsonl,
        orders
            .iter()
            .map(|(j, _)| format!("{j}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let csv = dir.path().join("orders.csv");
    std::fs::write(
        &csv,
        format!(
            "id,customer,amount,vip,ts\n{}",
            orders
                .iter()
                .map(|(_, c)| format!("{c}\n"))
                .collect::<String>()
        ),
    )
    .unwrap();
    let parquet = dir.path().join("orders.parquet");
    run_ok(&[
        "export",
        "--topic",
        &topic,
        "--schema",
        SCHEMA,
        "--output-file",
        parquet.to_str().unwrap(),
    ]);
    let from_topic = run_csv(&["execute", "--topic", &topic, "--schema", SCHEMA]);
    assert_eq!(from_topic.lines().count(), 19, "{from_topic}");
    for file in [&jsonl, &csv] {
        let source = format!("file:{}", file.display());
        assert_eq!(
            run_csv(&["execute", "--source", &source, "--schema", SCHEMA]),
            from_topic,
            "{}",
            file.display()
        );
    }
    // Parquet brings its own columns.
    let source = format!("file:{}", parquet.display());
    assert_eq!(run_csv(&["execute", "--source", &source]), from_topic);
    // The same from a declaration, over the directory's CSV files by glob.
    let declared = format!(
        "CREATE STREAM t ({SCHEMA}) WITH ('path' = '{}/*.csv');\n{QUERY}",
        dir.path().display()
    );
    assert_eq!(
        run_ok(&["execute", "--query", &declared, "--format", "csv"]),
        from_topic
    );
}

/// Writes a file into `dir` as a producer should: under a hidden name, then renamed.
fn drop_file(dir: &Path, name: &str, text: &str) {
    let hidden = dir.join(format!(".{name}.tmp"));
    std::fs::write(&hidden, text).unwrap();
    std::fs::rename(&hidden, dir.join(name)).unwrap();
}

#[test]
fn a_followed_directory_picks_up_new_files_and_a_restart_reads_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    drop_file(dir.path(), "001.jsonl", "{\"id\":1}\n{\"id\":2}\n");
    let source = format!("file:{}", dir.path().display());
    let state_dir = state.path().display().to_string();
    let args = [
        "stream",
        "--source",
        &source,
        "--query",
        "SELECT id, _topic AS file FROM t",
        "--schema",
        "id BIGINT",
        "--format",
        "json-lines",
        "--state-dir",
        &state_dir,
        "--job-name",
        "files",
        "--checkpoint-interval",
        "100ms",
    ];
    let row = |id: i64, file: &str| {
        format!(
            r#"{{"id":{id},"file":"{}"}}"#,
            dir.path().join(file).display()
        )
    };
    let job = spawn(&args);
    assert_eq!(
        job.take_lines(2),
        [row(1, "001.jsonl"), row(2, "001.jsonl")]
    );
    drop_file(dir.path(), "002.jsonl", "{\"id\":3}\n");
    assert_eq!(job.take_lines(1), [row(3, "002.jsonl")]);
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, Vec::<String>::new()));
    // Restarted from its checkpoint: only the new file's rows.
    drop_file(dir.path(), "003.jsonl", "{\"id\":4}\n{\"id\":5}\n");
    let job = spawn(&args);
    assert_eq!(
        job.take_lines(2),
        [row(4, "003.jsonl"), row(5, "003.jsonl")]
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (code, rest) = job.terminate();
    assert_eq!(
        (code, rest),
        (0, Vec::<String>::new()),
        "nothing read twice"
    );
}

#[test]
fn a_malformed_file_is_reported_with_its_name_and_row_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.csv"),
        "id,amount\n1,1.50\n2,abc\n3,2.25,extra\n4,4.00\n",
    )
    .unwrap();
    // A Parquet file cut short: no footer.
    let whole = dir.path().join("whole.parquet.keep");
    run_ok(&[
        "export",
        "--source",
        "generator:trades?count=50",
        "--query",
        "SELECT trade_id AS id FROM trades",
        "--output-file",
        whole.to_str().unwrap(),
        "--format",
        "parquet",
    ]);
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(dir.path().join("b.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    // A whole Parquet file without the stream's `amount` column.
    std::fs::write(dir.path().join("c.parquet"), &bytes).unwrap();
    std::fs::remove_file(&whole).unwrap();
    let out = run_with(
        &[
            "execute",
            "--source",
            &format!("file:{}", dir.path().display()),
            "--query",
            "SELECT id, amount FROM t",
            "--schema",
            "id BIGINT, amount DECIMAL(6,2)",
            "--format",
            "csv",
        ],
        &[("RUST_LOG", "info")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "id,amount\n1,1.50\n4,4.00\n");
    let log = stderr(&out);
    let a = dir.path().join("a.csv").display().to_string();
    let b = dir.path().join("b.parquet").display().to_string();
    for needle in [
        format!("file {a} row 2: column 'amount': 'abc' is not a number"),
        format!("file {a}: line 4: 3 fields, the header names 2"),
        format!("file {b}: not a readable Parquet file"),
        format!(
            "file {}: not a readable Parquet file: Parquet error: it has no column 'amount' \
             (its columns: id)",
            dir.path().join("c.parquet").display()
        ),
        "decode_errors=4".to_string(),
    ] {
        assert!(log.contains(&needle), "{needle}\n{log}");
    }
}

#[test]
fn avro_container_files_are_read_and_written_as_fastavro_writes_and_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("trades.avro");
    let records = [
        r#"{"symbol":"AAPL","price":"150.2567","quantity":2,"side":"BUY","note":null,"ts":1704067200123}"#.to_string(),
        r#"{"symbol":"MSFT","price":"-0.0001","quantity":5,"side":"SELL","note":"x","ts":1704067201000}"#.to_string(),
    ];
    python_tool(
        "tests/interop/avro_tool.py",
        &[
            "write-container",
            "schemas/trades.avsc",
            input.to_str().unwrap(),
        ],
        &records,
    );
    // Read: the columns come from the file's own schema.
    let source = format!("file:{}", input.display());
    assert_eq!(
        run_ok(&[
            "execute",
            "--source",
            &source,
            "--query",
            "SELECT symbol, price, quantity * price AS notional, side, note, ts FROM t",
            "--format",
            "csv",
        ]),
        "symbol,price,notional,side,note,ts\n\
         AAPL,150.2567,300.5134,BUY,,2024-01-01T00:00:00.123\n\
         MSFT,-0.0001,-0.0005,SELL,x,2024-01-01T00:00:01\n"
    );
    // Written: a container file fastavro reads back digit for digit.
    let output = dir.path().join("out.avro");
    run_ok(&[
        "execute",
        "--source",
        &source,
        "--query",
        "SELECT symbol, price, ts FROM t",
        "--output-file",
        output.to_str().unwrap(),
    ]);
    assert_eq!(
        python_tool(
            "tests/interop/avro_tool.py",
            &["read-container", output.to_str().unwrap()],
            &[]
        ),
        [
            r#"{"symbol": "AAPL", "price": "150.2567", "ts": 1704067200123}"#,
            r#"{"symbol": "MSFT", "price": "-0.0001", "ts": 1704067201000}"#,
        ]
    );
}

#[test]
fn a_json_line_that_is_not_utf8_is_a_bad_record_and_the_next_lines_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ids.jsonl");
    std::fs::write(
        &file,
        b"{\"id\":1}\n{\"id\":2,\"s\":\"\xff\xfe\"}\r\n{\"id\":3}\n\n",
    )
    .unwrap();
    let out = run_with(
        &[
            "execute",
            "--source",
            &format!("file:{}", file.display()),
            "--schema",
            "id BIGINT, s VARCHAR",
            "--query",
            "SELECT id FROM t",
            "--format",
            "csv",
        ],
        &[("RUST_LOG", "info")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "id\n1\n3\n");
    let log = stderr(&out);
    assert!(
        log.contains(&format!("file {} row 2", file.display())) && log.contains("decode_errors=1"),
        "{log}"
    );
}

#[test]
fn a_finished_file_stops_holding_the_watermark_so_windows_close_while_the_stream_runs() {
    let dir = tempfile::tempdir().unwrap();
    let event = |minute: u32, second: u32| {
        format!(r#"{{"k":"a","ts":"2024-01-01T00:{minute:02}:{second:02}Z"}}"#)
    };
    drop_file(
        dir.path(),
        "001.jsonl",
        &[event(0, 1), event(0, 30), event(1, 10)].join("\n"),
    );
    drop_file(dir.path(), "002.jsonl", &event(5, 0));
    let source = format!("file:{}", dir.path().display());
    let job = spawn(&[
        "stream",
        "--source",
        &source,
        "--schema",
        "k VARCHAR, ts TIMESTAMP",
        "--event-time-column",
        "ts",
        "--query",
        "SELECT window_start, COUNT(*) AS n FROM t GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE)",
        "--format",
        "json-lines",
        "--no-state",
    ]);
    // File 002 moved the watermark to 00:05: both windows of file 001 close while the
    // stream runs (the finished file does not hold the watermark at its last time, 00:01:10).
    assert_eq!(
        job.take_lines(2),
        [
            r#"{"window_start":"2024-01-01T00:00:00","n":2}"#,
            r#"{"window_start":"2024-01-01T00:01:00","n":1}"#,
        ]
    );
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, Vec::<String>::new()));
}
