//! SQL cases as data: each folder of `tests/sql_cases/` holds
//! - `query.sql`: `CREATE STREAM` declarations (with columns) and one SELECT;
//! - `input.jsonl`: the records of the first declared stream, one JSON payload per line
//!   (offsets 0, 1, 2, … on partition 0 of a topic named after the stream);
//! - `expected.jsonl`: the exact result, one JSON object per line (`--format json-lines`), or
//!   `expected_error.txt`: text the planning error must contain;
//! - optionally `bad_records.txt`: how many input records must be rejected;
//! - optionally `batch_sizes.txt`: the micro-batch sizes the case holds for (default 1 3 10000),
//!   for cases about lateness, which depends on when the watermark moves.
//!
//! Every case runs through the engine (decode → plan → operators → encode) with the input cut
//! into micro-batches of 1, 3 and all records, the watermark advancing after each batch as the
//! runtime does it: the output must be the same each time (windows emit in the same order
//! whatever the batching, since they close in event-time order). The input ends with the
//! watermark at +∞.

use std::path::Path;

use std::time::Duration;
use velo_connectors::codec::{EncodedRows, JsonEncoder};
use velo_connectors::record::RecordBatchCollector;
use velostream::catalog::{Catalog, StreamDef};
use velostream::operators::Watermark;

use velostream::planner::{new_session, plan_query, QueryRequest};
use velostream::runtime::InputAdapter;
use velostream::sql::parse_script;
use velostream::watermark::WatermarkTracker;

struct Outcome {
    rows: Vec<String>,
    bad: usize,
}

fn run_case(dir: &Path, batch_size: usize) -> Result<Outcome, String> {
    let text = std::fs::read_to_string(dir.join("query.sql")).map_err(|e| e.to_string())?;
    let script = parse_script(&text).map_err(|e| e.to_string())?;
    let mut catalog = Catalog::default();
    for decl in &script.streams {
        catalog.insert(StreamDef::from_decl(decl).map_err(|e| e.to_string())?);
    }
    let input_stream = script
        .streams
        .first()
        .ok_or("query.sql declares no stream")?
        .name
        .clone();
    let ctx = new_session().map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let planned = rt
        .block_on(plan_query(
            &ctx,
            &catalog,
            &QueryRequest::from_script(&script),
        ))
        .map_err(|e| e.to_string())?;
    let mut tracker = match &planned.event_time {
        Some(column) => Some((
            planned
                .scan
                .schema
                .index_of(column)
                .map_err(|e| e.to_string())?,
            WatermarkTracker::new(
                planned.scan.stream.watermark_delay_ms,
                Duration::from_secs(3600),
            ),
        )),
        None => None,
    };
    let mut input = InputAdapter::new(planned.scan).map_err(|e| e.to_string())?;
    let mut pipeline = planned.pipeline;
    let lines: Vec<String> = std::fs::read_to_string(dir.join("input.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let encoder = JsonEncoder::default();
    let mut encoded = EncodedRows::default();
    let mut bad_total = 0;
    let mut collector = RecordBatchCollector::new(batch_size);
    for (chunk_index, chunk) in lines.chunks(batch_size.max(1)).enumerate() {
        for (i, line) in chunk.iter().enumerate() {
            let offset = (chunk_index * batch_size + i) as i64;
            collector.push(
                Some(line.as_bytes()),
                Some(b"k"),
                &input_stream,
                0,
                offset,
                Some(1_700_000_000_000 + offset),
                std::iter::empty(),
            );
        }
        let batch = collector.finish();
        let mut bad = Vec::new();
        let (scan, partitions) = input
            .adapt_with_partitions(&batch, &mut bad)
            .map_err(|e| e.to_string())?;
        bad_total += bad.len();
        if let Some((column, t)) = tracker.as_mut() {
            t.observe(&partitions, scan.column(*column))
                .map_err(|e| e.to_string())?;
        }
        for out in pipeline.process(scan).map_err(|e| e.to_string())? {
            encoder
                .encode(&out, &mut encoded)
                .map_err(|e| e.to_string())?;
        }
        if let Some(wm) = tracker.as_mut().and_then(|(_, t)| t.current()) {
            for out in pipeline
                .advance_watermark(Watermark(wm))
                .map_err(|e| e.to_string())?
            {
                encoder
                    .encode(&out, &mut encoded)
                    .map_err(|e| e.to_string())?;
            }
        }
        if pipeline.is_finished() {
            break;
        }
    }
    for out in pipeline
        .advance_watermark(Watermark::END)
        .map_err(|e| e.to_string())?
    {
        encoder
            .encode(&out, &mut encoded)
            .map_err(|e| e.to_string())?;
    }
    Ok(Outcome {
        rows: encoded
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect(),
        bad: bad_total,
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
                (Ok(outcome), None) => {
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
