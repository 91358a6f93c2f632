//! SQL cases as data: each folder of `tests/sql_cases/` holds
//! - `query.sql`: `CREATE STREAM` declarations (with columns) and one SELECT;
//! - `input.jsonl`: the records of the first declared stream, one JSON payload per line
//!   (offsets 0, 1, 2, … on partition 0 of a topic named after the stream);
//! - `expected.jsonl`: the exact result, one JSON object per line (`--format json-lines`), or
//!   `expected_error.txt`: text the planning error must contain;
//! - optionally `bad_records.txt`: how many input records must be rejected;
//! - optionally `batch_sizes.txt`: the micro-batch sizes the case holds for (default 1 3 10000),
//!   for cases about lateness, which depends on when the watermark moves;
//! - optionally `unordered.txt` (empty): compare rows as a multiset, for cases whose row order
//!   depends on the batching (LEAD holds a row back until its follower arrives).
//!
//! Every case runs through the engine (decode → plan → operators → encode, see
//! `velostream::replay`) with the input cut into micro-batches of each size, the watermark
//! advancing after each batch as the runtime does it: the output must be the same each time.
//! The input ends with the watermark at +∞.

use std::path::Path;

use velo_connectors::codec::{EncodedRows, JsonEncoder};
use velostream::replay::Replay;

struct Outcome {
    rows: Vec<String>,
    bad: usize,
}

fn run_case(dir: &Path, batch_size: usize) -> Result<Outcome, String> {
    let text = std::fs::read_to_string(dir.join("query.sql")).map_err(|e| e.to_string())?;
    let mut replay = Replay::plan(&text).map_err(|e| e.to_string())?;
    let lines: Vec<String> = std::fs::read_to_string(dir.join("input.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let encoder = JsonEncoder::default();
    let mut encoded = EncodedRows::default();
    for chunk in lines.chunks(batch_size.max(1)) {
        let payloads: Vec<&[u8]> = chunk.iter().map(|l| l.as_bytes()).collect();
        for out in replay.push(&payloads).map_err(|e| e.to_string())? {
            encoder
                .encode(&out, &mut encoded)
                .map_err(|e| e.to_string())?;
        }
        if replay.is_finished() {
            break;
        }
    }
    for out in replay.finish().map_err(|e| e.to_string())? {
        encoder
            .encode(&out, &mut encoded)
            .map_err(|e| e.to_string())?;
    }
    Ok(Outcome {
        rows: encoded
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect(),
        bad: replay.bad_records,
    })
}

#[test]
fn every_sql_case_gives_its_expected_output_at_every_batch_size() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_cases");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 8,
        "expected the SQL cases in {}",
        root.display()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let expected_error = std::fs::read_to_string(dir.join("expected_error.txt")).ok();
        let expected_rows: Vec<String> = std::fs::read_to_string(dir.join("expected.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let expected_bad: Option<usize> = std::fs::read_to_string(dir.join("bad_records.txt"))
            .ok()
            .map(|t| t.trim().parse().unwrap());
        let batch_sizes: Vec<usize> = std::fs::read_to_string(dir.join("batch_sizes.txt"))
            .map(|t| t.split_whitespace().map(|n| n.parse().unwrap()).collect())
            .unwrap_or_else(|_| vec![1, 3, 10_000]);
        for batch_size in batch_sizes {
            match (run_case(dir, batch_size), &expected_error) {
                (Err(e), Some(want)) if e.contains(want.trim()) => {}
                (Err(e), Some(want)) => failures.push(format!(
                    "{name}: error '{e}' does not contain '{}'",
                    want.trim()
                )),
                (Err(e), None) => failures.push(format!("{name} (batch {batch_size}): {e}")),
                (Ok(_), Some(want)) => failures.push(format!(
                    "{name}: expected an error containing '{}'",
                    want.trim()
                )),
                (Ok(mut outcome), None) => {
                    let mut expected_rows = expected_rows.clone();
                    if dir.join("unordered.txt").exists() {
                        outcome.rows.sort();
                        expected_rows.sort();
                    }
                    if outcome.rows != expected_rows {
                        failures.push(format!(
                            "{name} (batch {batch_size}):\n  expected {expected_rows:#?}\n  got {:#?}",
                            outcome.rows
                        ));
                    }
                    if let Some(bad) = expected_bad {
                        if outcome.bad != bad {
                            failures.push(format!(
                                "{name} (batch {batch_size}): {} bad records, expected {bad}",
                                outcome.bad
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
