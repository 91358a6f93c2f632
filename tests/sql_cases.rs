//! SQL cases as data: each folder of `tests/sql_cases/` holds
//! - `query.sql`: `CREATE STREAM` declarations (with columns) and one SELECT;
//! - the input: `input.jsonl` for the first declared stream, or `input.<stream>.jsonl` for each
//!   stream a query reads (a join of two streams), one JSON payload per line;
//! - the answer: `expected.jsonl`, the exact result, one JSON object per line (`--format
//!   json-lines`), or `expected_error.txt`, lines of text the planning error must each contain
//!   (such a case needs no input);
//! - optionally `bad_records.txt`: how many input records must be rejected;
//! - optionally `unordered.txt` (empty): compare rows as a multiset, for cases whose row order
//!   depends on the batching (LEAD holds a row back until its follower arrives; a join emits a
//!   match when its second side arrives);
//! - optionally `changelog.txt`: the key columns of an `EMIT CHANGES` / updating result (one
//!   line, space-separated). `expected.jsonl` is then the changelog with every record its own
//!   micro-batch; with larger batches fewer changes are emitted, so the harness checks that each
//!   row emitted is one of the expected rows and that the last row of every key is the
//!   expected last row;
//! - optionally `continuous.txt` (empty): plan the query as `velo-sql stream` does (its input
//!   never ends: a GROUP BY without a window emits changes, ORDER BY sorts each window's rows);
//!   by default a case is planned as `execute` plans it (a bounded input);
//! - optionally `batch_sizes.txt`: the micro-batch sizes the case holds for, with a `#` line
//!   saying why (only for lateness, which depends on when the watermark moves);
//! - any data file `query.sql` names (a table's JSON lines or CSV).
//!
//! A case with a file the harness does not know, without an answer, or with an answer but no
//! input (while it declares a stream) fails: nothing is read as empty by mistake. Every case runs through the engine
//! (decode → plan → operators → encode, see `velostream::replay`) with the input cut into
//! micro-batches of 1, 7 and 8192 records (the runtime's default) unless `batch_sizes.txt`
//! says otherwise, the watermark advancing after each batch as the runtime does it: the answer
//! must be the same each time. Several inputs are fed in rounds, one batch of each stream in
//! declaration order per round. The input ends with the watermark at +∞.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use velo_connectors::codec::{EncodedRows, JsonEncoder};
use velostream::replay::Replay;

const DEFAULT_BATCH_SIZES: [usize; 3] = [1, 7, 8192];

enum Answer {
    Rows(Vec<String>),
    Error(String),
}

struct Case {
    name: String,
    query: String,
    /// (stream, lines); the stream `None` is the query's first input.
    inputs: Vec<(Option<String>, Vec<String>)>,
    answer: Answer,
    bad_records: Option<usize>,
    batch_sizes: Vec<usize>,
    unordered: bool,
    continuous: bool,
    changelog_key: Option<Vec<String>>,
}

fn lines(path: &Path) -> Result<Vec<String>, String> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Reads a case folder, refusing files it does not know and cases that check nothing.
fn load(dir: &Path) -> Result<Case, String> {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let query =
        std::fs::read_to_string(dir.join("query.sql")).map_err(|e| format!("query.sql: {e}"))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut case = Case {
        name,
        query,
        inputs: Vec::new(),
        answer: Answer::Rows(Vec::new()),
        bad_records: None,
        batch_sizes: DEFAULT_BATCH_SIZES.to_vec(),
        unordered: false,
        continuous: false,
        changelog_key: None,
    };
    let (mut rows, mut error) = (None, None);
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        match file.as_str() {
            "query.sql" => {}
            "input.jsonl" => case.inputs.push((None, lines(path)?)),
            "expected.jsonl" => rows = Some(lines(path)?),
            "expected_error.txt" => {
                error = Some(std::fs::read_to_string(path).unwrap().trim().to_string())
            }
            "bad_records.txt" => {
                let text = std::fs::read_to_string(path).unwrap();
                case.bad_records =
                    Some(text.trim().parse().map_err(|_| {
                        format!("bad_records.txt: '{}' is not a count", text.trim())
                    })?);
            }
            "unordered.txt" => case.unordered = true,
            "continuous.txt" => case.continuous = true,
            "changelog.txt" => {
                let text = std::fs::read_to_string(path).unwrap();
                let key: Vec<String> = text.split_whitespace().map(str::to_string).collect();
                if key.is_empty() {
                    return Err("changelog.txt names no key column".into());
                }
                case.changelog_key = Some(key);
            }
            "batch_sizes.txt" => {
                let text = std::fs::read_to_string(path).unwrap();
                if !text.lines().any(|l| l.trim_start().starts_with('#')) {
                    return Err("batch_sizes.txt must say why (a '#' line)".into());
                }
                case.batch_sizes = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .flat_map(|l| l.split_whitespace())
                    .map(|n| n.parse().map_err(|_| format!("batch_sizes.txt: '{n}'")))
                    .collect::<Result<_, String>>()?;
            }
            other => match other
                .strip_prefix("input.")
                .and_then(|s| s.strip_suffix(".jsonl"))
            {
                Some(stream) => case.inputs.push((Some(stream.to_string()), lines(path)?)),
                None if case.query.contains(other) => {} // a table's data file
                None => {
                    return Err(format!(
                        "unknown file '{other}' (known: query.sql, input.jsonl, \
                         input.<stream>.jsonl, expected.jsonl, expected_error.txt, \
                         bad_records.txt, unordered.txt, continuous.txt, changelog.txt, \
                         batch_sizes.txt, and \
                         the data files query.sql names)"
                    ))
                }
            },
        }
    }
    case.answer = match (rows, error) {
        (Some(_), Some(_)) => return Err("both expected.jsonl and expected_error.txt".into()),
        (None, None) => return Err("no expected.jsonl or expected_error.txt".into()),
        (None, Some(e)) if e.is_empty() => return Err("expected_error.txt is empty".into()),
        (None, Some(e)) => Answer::Error(e),
        (Some(rows), None) => {
            // Only a query that reads no stream (`SELECT 1`) has no input.
            if case.inputs.is_empty() && case.query.to_uppercase().contains("CREATE STREAM") {
                return Err("no input.jsonl or input.<stream>.jsonl".into());
            }
            Answer::Rows(rows)
        }
    };
    Ok(case)
}

struct Outcome {
    rows: Vec<String>,
    bad: usize,
}

fn run(case: &Case, batch_size: usize) -> Result<Outcome, String> {
    let continuous = case.continuous;
    let mut replay =
        Replay::plan_with(&case.query, |r| r.bounded = !continuous).map_err(|e| e.to_string())?;
    let encoder = JsonEncoder::default();
    let mut encoded = EncodedRows::default();
    let mut encode = |batches: Vec<arrow::array::RecordBatch>| -> Result<(), String> {
        for out in batches {
            encoder
                .encode(&out, &mut encoded)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    let rounds = case
        .inputs
        .iter()
        .map(|(_, l)| l.len().div_ceil(batch_size))
        .max()
        .unwrap_or(0);
    'rounds: for round in 0..rounds {
        for (stream, lines) in &case.inputs {
            let from = (round * batch_size).min(lines.len());
            let to = (from + batch_size).min(lines.len());
            if from == to {
                continue;
            }
            let payloads: Vec<&[u8]> = lines[from..to].iter().map(|l| l.as_bytes()).collect();
            let out = match stream {
                None => replay.push(&payloads),
                Some(stream) => replay.push_to(stream, &payloads),
            };
            encode(out.map_err(|e| e.to_string())?)?;
            if replay.is_finished() {
                break 'rounds;
            }
        }
    }
    encode(replay.finish().map_err(|e| e.to_string())?)?;
    Ok(Outcome {
        rows: encoded
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect(),
        bad: replay.bad_records,
    })
}

/// The values of `key` in a JSON row, as text.
fn key_of(row: &str, key: &[String]) -> String {
    let value: serde_json::Value = serde_json::from_str(row).unwrap();
    key.iter()
        .map(|k| value.get(k).map_or("∅".to_string(), |v| v.to_string()))
        .collect::<Vec<_>>()
        .join("|")
}

/// Compares what a run gave with the case's rows; `None` when they agree.
fn compare(case: &Case, want: &[String], got: &[String], batch_size: usize) -> Option<String> {
    let mismatch = || {
        Some(format!(
            "{} (batch {batch_size}):\n  expected {want:#?}\n  got {got:#?}",
            case.name
        ))
    };
    match &case.changelog_key {
        Some(key) if batch_size > 1 => {
            let last = |rows: &[String]| -> BTreeMap<String, String> {
                rows.iter().map(|r| (key_of(r, key), r.clone())).collect()
            };
            let unknown: Vec<&String> = got.iter().filter(|r| !want.contains(r)).collect();
            if !unknown.is_empty() || last(want) != last(got) {
                return mismatch();
            }
            None
        }
        _ => {
            let (mut want, mut got) = (want.to_vec(), got.to_vec());
            if case.unordered {
                want.sort();
                got.sort();
            }
            (want != got).then(mismatch).flatten()
        }
    }
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
        dirs.len() >= 24,
        "expected the SQL cases in {}",
        root.display()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let case = match load(dir) {
            Ok(case) => case,
            Err(e) => {
                failures.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for &batch_size in &case.batch_sizes {
            match (run(&case, batch_size), &case.answer) {
                (Err(e), Answer::Error(want)) if want.lines().all(|l| e.contains(l.trim())) => {}
                (Err(e), Answer::Error(want)) => failures.push(format!(
                    "{}: error '{e}' does not contain '{want}'",
                    case.name
                )),
                (Err(e), Answer::Rows(_)) => {
                    failures.push(format!("{} (batch {batch_size}): {e}", case.name))
                }
                (Ok(_), Answer::Error(want)) => failures.push(format!(
                    "{}: expected an error containing '{want}'",
                    case.name
                )),
                (Ok(outcome), Answer::Rows(want)) => {
                    failures.extend(compare(&case, want, &outcome.rows, batch_size));
                    if let Some(bad) = case.bad_records {
                        if outcome.bad != bad {
                            failures.push(format!(
                                "{} (batch {batch_size}): {} bad records, expected {bad}",
                                case.name, outcome.bad
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

#[test]
fn a_case_that_would_check_nothing_is_refused() {
    let root = std::env::temp_dir().join(format!("velo-cases-{}", std::process::id()));
    let case = |name: &str, files: &[(&str, &str)]| -> Result<(), String> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        load(&dir).map(|_| ())
    };
    let query = ("query.sql", "CREATE STREAM t (a BIGINT);\nSELECT a FROM t");
    let no_input = case("no_input", &[query, ("expected.jsonl", "{\"a\":1}\n")]);
    assert_eq!(
        no_input.unwrap_err(),
        "no input.jsonl or input.<stream>.jsonl"
    );
    let misnamed = case(
        "misnamed",
        &[query, ("input.jsonl", "{\"a\":1}\n"), ("expected.json", "")],
    );
    assert!(misnamed
        .unwrap_err()
        .starts_with("unknown file 'expected.json'"),);
    let no_answer = case("no_answer", &[query, ("input.jsonl", "{\"a\":1}\n")]);
    assert_eq!(
        no_answer.unwrap_err(),
        "no expected.jsonl or expected_error.txt"
    );
    let unexplained = case(
        "unexplained",
        &[
            query,
            ("input.jsonl", "{\"a\":1}\n"),
            ("expected.jsonl", "{\"a\":1}\n"),
            ("batch_sizes.txt", "1\n"),
        ],
    );
    assert_eq!(
        unexplained.unwrap_err(),
        "batch_sizes.txt must say why (a '#' line)"
    );
    std::fs::remove_dir_all(&root).unwrap();
}
