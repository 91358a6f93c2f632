//! `--output-dir`: part files rolled by rows, in Hive folders, committed with checkpoints —
//! read back by DuckDB and pyarrow while the job runs, across a kill -9. Through the binary,
//! against the real broker.

mod common;

use std::time::{Duration, Instant};

use common::*;

const PARQUET_TOOL: &str = "tests/interop/parquet_tool.py";

/// What DuckDB sees in the folder now (committed files only: in-progress ones are hidden).
fn duckdb(dir: &std::path::Path, sql: &str) -> Vec<String> {
    python_tool(PARQUET_TOOL, &["hive", dir.to_str().unwrap(), sql], &[])
}

fn visible_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if !entry.file_name().to_string_lossy().starts_with('.') {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn hidden_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else if entry.file_name().to_string_lossy().starts_with('.') {
                n += 1;
            }
        }
    }
    n
}

fn records(range: std::ops::Range<i64>) -> Vec<Rec> {
    range
        .map(|n| {
            Rec::value(format!(
                r#"{{"id":{n},"bucket":"b{}","amount":"{}.{:02}"}}"#,
                n % 3,
                n,
                n % 100
            ))
            .partition((n % 2) as i32)
        })
        .collect()
}

fn rows_committed(dir: &std::path::Path) -> usize {
    if visible_files(dir).is_empty() {
        return 0;
    }
    duckdb(dir, "SELECT COUNT(*) AS n FROM t")[0]
        .trim_start_matches("{\"n\":")
        .trim_end_matches('}')
        .parse()
        .unwrap()
}

fn wait_for_rows(dir: &std::path::Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = rows_committed(dir);
        if got >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{got} of {n} rows committed");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn rolling_parquet_part_files_in_hive_folders_hold_every_row_once_across_a_kill() {
    let topic = unique_topic("parts");
    create_topic(&topic, 2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let group = unique_topic("parts-g");
    let out_arg = out.display().to_string();
    let args = [
        "stream",
        "--query",
        "SELECT id, bucket, amount FROM t",
        "--topic",
        &topic,
        "--schema",
        "id BIGINT, bucket VARCHAR, amount DECIMAL(10,2)",
        "--output-dir",
        &out_arg,
        "--partition-by",
        "bucket",
        "--roll-rows",
        "40",
        "--group-id",
        &group,
        "--group-instance-id",
        &group,
        "--checkpoint-interval",
        "250ms",
    ];
    produce(&topic, &records(0..300));
    let mut job = spawn(&args);
    wait_for_rows(&out, 150);
    // Every visible file is whole (pyarrow reads its footer) while the job writes more.
    for file in visible_files(&out) {
        python_tool(PARQUET_TOOL, &["meta", file.to_str().unwrap()], &[]);
    }
    // Killed while records flow: part files are open (in progress) and rows wait for the
    // next checkpoint.
    let flowing = {
        let topic = topic.clone();
        std::thread::spawn(move || {
            for start in (300..610).step_by(10) {
                produce(&topic, &records(start..(start + 10).min(610)));
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(650));
    job.child.kill().unwrap();
    job.child.wait().unwrap();
    flowing.join().unwrap();
    produce(&topic, &records(610..900));
    let job = spawn(&args);
    wait_for_rows(&out, 900);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(job.terminate().0, 0);
    // Every row once: none lost to the kill, none written twice by the restart.
    assert_eq!(
        duckdb(
            &out,
            "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids, MIN(id) AS lo, MAX(id) AS hi, \
             SUM(amount) AS total FROM t"
        ),
        [r#"{"n":900,"ids":900,"lo":0,"hi":899,"total":"404995.50"}"#]
    );
    // Hive folders by bucket, read back by DuckDB's hive_partitioning; the bucket is in the
    // path, not in the files.
    assert_eq!(
        duckdb(
            &out,
            "SELECT bucket, COUNT(*) AS n FROM t GROUP BY bucket ORDER BY bucket"
        ),
        [
            r#"{"bucket":"b0","n":300}"#,
            r#"{"bucket":"b1","n":300}"#,
            r#"{"bucket":"b2","n":300}"#,
        ]
    );
    let schema = python_tool(
        PARQUET_TOOL,
        &["schema", visible_files(&out)[0].to_str().unwrap()],
        &[],
    );
    assert_eq!(schema, ["id: int64", "amount: decimal128(10, 2)"]);
    // No file holds more than --roll-rows rows; nothing in progress is left after the stop.
    for file in visible_files(&out) {
        let meta = python_tool(PARQUET_TOOL, &["meta", file.to_str().unwrap()], &[]);
        let rows: usize = meta[0]
            .split(' ')
            .find_map(|f| f.strip_prefix("rows="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rows <= 40, "{file:?}: {rows} rows");
    }
    assert_eq!(hidden_files(&out), 0);
}

#[test]
fn execute_writes_csv_and_json_lines_part_files_each_with_its_header() {
    let dir = tempfile::tempdir().unwrap();
    for (format, first_line) in [("csv", "trade_id,symbol"), ("json-lines", "{\"trade_id\":")] {
        let out = dir.path().join(format);
        run_ok(&[
            "execute",
            "--source",
            "generator:trades?count=25",
            "--query",
            "SELECT trade_id, symbol FROM trades",
            "--output-dir",
            out.to_str().unwrap(),
            "--format",
            format,
            "--roll-rows",
            "10",
        ]);
        let files = visible_files(&out);
        assert_eq!(files.len(), 3, "{files:?}");
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            assert!(text.starts_with(first_line), "{file:?}: {text}");
        }
        let rows: usize = files
            .iter()
            .map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .filter(|l| !l.starts_with("trade_id"))
                    .count()
            })
            .sum();
        assert_eq!(rows, 25, "{format}");
    }
}

#[test]
fn avro_part_files_are_container_files_fastavro_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("avro");
    run_ok(&[
        "execute",
        "--source",
        "generator:trades?count=25",
        "--query",
        "SELECT trade_id, price FROM trades",
        "--output-dir",
        out.to_str().unwrap(),
        "--format",
        "avro",
        "--roll-rows",
        "10",
    ]);
    let files = visible_files(&out);
    assert_eq!(files.len(), 3, "{files:?}");
    let mut ids = Vec::new();
    for file in &files {
        assert_eq!(file.extension().unwrap(), "avro");
        for line in python_tool(
            "tests/interop/avro_tool.py",
            &["read-container", file.to_str().unwrap()],
            &[],
        ) {
            let row: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(row["price"].as_str().unwrap().contains('.'), "{line}");
            ids.push(row["trade_id"].as_i64().unwrap());
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=25).collect::<Vec<i64>>());
}
