//! SQL application files: a file of statements deployed as continuous jobs.
//!
//! ```sql
//! CREATE STREAM orders (customer_id BIGINT, amount DECIMAL(10,2)) WITH ('topic' = 'orders');
//!
//! -- JOB: high_value_orders
//! -- TOPIC: orders
//! START JOB high_value_orders AS
//! SELECT customer_id, amount FROM orders WHERE amount > 1000;
//!
//! CREATE STREAM customer_totals AS
//! SELECT customer_id, SUM(amount) AS total FROM orders GROUP BY customer_id
//! WITH ('sink.topic' = 'customer_totals');
//! ```
//!
//! - `START JOB name AS <query> [WITH (…)]` and `CREATE STREAM name AS <query> [WITH (…)]`
//!   are jobs; a bare `SELECT` is a job when a `-- JOB: name` comment names it.
//! - `CREATE STREAM|TABLE name (columns) WITH (…)` declarations are shared by every job.
//! - `-- TOPIC: t` before a job names the topic of its input (when the name in FROM is not a
//!   declared stream); `--default-topic` does for jobs without one. `-- MEMORY_LIMIT: 512MB`
//!   caps the job's operator state (it fails past it), `-- TIMEOUT: 30s` a bounded job's run
//!   time; any other `-- KEY:` annotation is warned about.
//! - Job options: `'sink.topic'` (where results go; `CREATE STREAM name AS` defaults to
//!   `name`, `START JOB` to no topic: results only in `/jobs/{id}/output`), `'sink.format'`
//!   (json, avro, protobuf), `'sink.key'` (the column keying each message), `'dlq.topic'`
//!   (records that cannot be decoded go there, with the reason in a header), `'dlq.on_error'`
//!   (`log` or `fail`, when a dead letter cannot be written), `'on_error'` (`skip`,
//!   `dead-letter` or `fail`: what a bad record or row does), `'max_event_time_skew'` (a
//!   duration; `0` turns the bound off), `'delivery'` (`at-least-once` or `exactly-once`).
//!
//! Every job's text is the file with all but the declarations and that job's query blanked
//! out, so a SQL error in any job names the file's own line and column. A file with an error
//! is refused whole: no job of it starts.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

use crate::error::{Result, SqlLocation, VeloError};
use crate::sql::{parse_script, tokenize};

/// A job of an application file (the server turns it into a [`crate::job::JobSpec`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AppJob {
    pub name: String,
    /// Declarations and the job's query, positioned as in the file.
    pub sql: String,
    /// The job's query as written.
    pub query: String,
    /// `-- TOPIC:`, the topic of the job's input.
    pub input_topic: Option<String>,
    pub sink_topic: Option<String>,
    pub sink_format: Option<String>,
    pub sink_key: Option<String>,
    /// Where records that cannot be decoded go (`'dlq.topic'`).
    pub dlq_topic: Option<String>,
    /// `'dlq.on_error'`: `log` (default) or `fail`, when a dead letter cannot be written.
    #[serde(default)]
    pub dlq_on_error: Option<String>,
    /// `'delivery'`: `at-least-once` (default) or `exactly-once`.
    pub delivery: Option<String>,
    /// `'on_error'`: `skip`, `dead-letter` or `fail`, for a bad record or row (default:
    /// dead-letter with a `dlq.topic`, else skip).
    #[serde(default)]
    pub on_error: Option<String>,
    /// `'max_event_time_skew'`: a duration (`0`: no bound; default 1h).
    #[serde(default)]
    pub max_event_time_skew: Option<String>,
    /// `-- MEMORY_LIMIT: 512MB`: the most operator state the job may hold.
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// `-- TIMEOUT: 30s`: how long a bounded job may run.
    #[serde(default)]
    pub timeout: Option<String>,
    pub location: SqlLocation,
}

/// The jobs of a file, and its stream declarations (their text).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Application {
    pub jobs: Vec<AppJob>,
    pub declarations: Vec<String>,
}

fn word(t: &TokenWithSpan) -> Option<String> {
    match &t.token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

fn location(t: &TokenWithSpan) -> SqlLocation {
    SqlLocation {
        line: t.span.start.line,
        column: t.span.start.column,
    }
}

/// Byte offsets of each line's start, to turn token locations into text ranges.
struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, starts }
    }

    /// The byte offset of a (1-based line, 1-based character column) location.
    fn offset(&self, line: u64, column: u64) -> usize {
        let Some(&start) = self.starts.get(line.saturating_sub(1) as usize) else {
            return self.text.len();
        };
        self.text[start..]
            .char_indices()
            .nth(column.saturating_sub(1) as usize)
            .map_or(self.text.len(), |(i, _)| start + i)
    }

    fn start(&self, t: &TokenWithSpan) -> usize {
        self.offset(t.span.start.line, t.span.start.column)
    }

    fn end(&self, t: &TokenWithSpan) -> usize {
        self.offset(t.span.end.line, t.span.end.column)
    }
}

/// `text` with everything outside `keep` replaced by spaces (line breaks and statement ends
/// kept, so the kept statements stay apart).
fn blank_outside(text: &str, keep: &[std::ops::Range<usize>]) -> String {
    text.char_indices()
        .map(|(i, c)| {
            if c == '\n' || c == ';' || keep.iter().any(|r| r.contains(&i)) {
                c
            } else {
                ' '
            }
        })
        .collect()
}

/// A statement's `WITH ('k' = 'v', …)` options.
fn parse_options(tokens: &[&TokenWithSpan]) -> Result<BTreeMap<String, String>> {
    let mut options = BTreeMap::new();
    let mut i = 0;
    while i < tokens.len() {
        let key = match &tokens[i].token {
            Token::SingleQuotedString(k) => k.to_ascii_lowercase(),
            Token::Comma => {
                i += 1;
                continue;
            }
            other => {
                return Err(VeloError::sql(
                    format!("expected an option name in quotes, found {other}"),
                    Some(location(tokens[i])),
                ))
            }
        };
        let value = match (tokens.get(i + 1).map(|t| &t.token), tokens.get(i + 2)) {
            (Some(Token::Eq), Some(v)) => match &v.token {
                Token::SingleQuotedString(v) | Token::Number(v, _) => v.clone(),
                other => {
                    return Err(VeloError::sql(
                        format!("option '{key}': expected a quoted value, found {other}"),
                        Some(location(v)),
                    ))
                }
            },
            _ => {
                return Err(VeloError::sql(
                    format!("option '{key}' needs = 'value'"),
                    Some(location(tokens[i])),
                ))
            }
        };
        options.insert(key, value);
        i += 3;
    }
    Ok(options)
}

/// Reads an application file's text.
pub fn parse_application(text: &str) -> Result<Application> {
    let tokens = tokenize(text)?;
    let lines = Lines::new(text);
    struct Draft {
        name: String,
        query: std::ops::Range<usize>,
        options: BTreeMap<String, String>,
        topic: Option<String>,
        memory_limit: Option<String>,
        timeout: Option<String>,
        location: SqlLocation,
    }
    let mut drafts: Vec<Draft> = Vec::new();
    let mut declarations: Vec<std::ops::Range<usize>> = Vec::new();
    for chunk in tokens.split(|t| t.token == Token::SemiColon) {
        let mut comment_job = None;
        let mut comment_topic = None;
        let mut memory_limit = None;
        let mut timeout = None;
        for t in chunk {
            if let Token::Whitespace(Whitespace::SingleLineComment { comment, .. }) = &t.token {
                let comment = comment.trim();
                if let Some((key, value)) = comment.split_once(':') {
                    let value = Some(value.trim().to_string());
                    match key.trim().to_ascii_uppercase().as_str() {
                        "JOB" => comment_job = value,
                        "TOPIC" => comment_topic = value,
                        "MEMORY_LIMIT" => memory_limit = value,
                        "TIMEOUT" => timeout = value,
                        // An annotation (`-- KEY: value`, KEY in capitals) this engine does
                        // not know; ordinary comments with a colon are left alone.
                        other
                            if key.trim() == other
                                && !other.is_empty()
                                && other.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') =>
                        {
                            tracing::warn!(
                                "line {}: the annotation '-- {other}:' has no effect here (known: \
                                 JOB, TOPIC, MEMORY_LIMIT, TIMEOUT)",
                                t.span.start.line
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
        let sig: Vec<&TokenWithSpan> = chunk
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
            .collect();
        let Some(first) = sig.first() else {
            continue;
        };
        let words: Vec<Option<String>> = sig.iter().take(4).map(|t| word(t)).collect();
        let w = |i: usize| words.get(i).cloned().flatten().unwrap_or_default();
        let (name, query_start) = match (w(0).as_str(), w(1).as_str()) {
            ("START", "JOB") => {
                if w(3) != "AS" {
                    return Err(VeloError::sql(
                        "write START JOB name AS SELECT …",
                        Some(location(first)),
                    ));
                }
                (sig[2].token.to_string(), 4)
            }
            ("CREATE", "STREAM") if w(3) == "AS" => (sig[2].token.to_string(), 4),
            ("CREATE", "STREAM" | "TABLE") => {
                declarations.push(lines.start(first)..lines.end(sig[sig.len() - 1]));
                continue;
            }
            ("SELECT" | "WITH", _) => match &comment_job {
                Some(name) => (name.clone(), 0),
                None => {
                    return Err(VeloError::sql(
                        "a query in an application file needs a name: START JOB name AS SELECT …, or a -- JOB: name comment",
                        Some(location(first)),
                    ))
                }
            },
            _ => {
                return Err(VeloError::sql(
                    format!(
                        "an application file holds START JOB, CREATE STREAM and SELECT statements, not '{}'",
                        first.token
                    ),
                    Some(location(first)),
                ))
            }
        };
        let body = &sig[query_start.min(sig.len())..];
        if body.is_empty() {
            return Err(VeloError::sql(
                format!("job '{name}' has no query"),
                Some(location(first)),
            ));
        }
        // A trailing WITH (…) holds the job's options.
        let mut query_end = body.len();
        let mut options = BTreeMap::new();
        if body.last().map(|t| &t.token) == Some(&Token::RParen) {
            let mut depth = 0;
            for i in (0..body.len()).rev() {
                match body[i].token {
                    Token::RParen => depth += 1,
                    Token::LParen => {
                        depth -= 1;
                        if depth == 0 {
                            if i > 1 && word(body[i - 1]).as_deref() == Some("WITH") {
                                options = parse_options(&body[i + 1..body.len() - 1])?;
                                query_end = i - 1;
                            }
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        let query = lines.start(body[0])..lines.end(body[query_end - 1]);
        drafts.push(Draft {
            name: name.trim_matches('"').to_string(),
            query,
            options,
            topic: comment_topic,
            memory_limit,
            timeout,
            location: location(first),
        });
    }
    let mut jobs: Vec<AppJob> = Vec::new();
    for draft in drafts {
        if jobs.iter().any(|j| j.name == draft.name) {
            return Err(VeloError::sql(
                format!("two jobs are named '{}'", draft.name),
                Some(draft.location),
            ));
        }
        let mut keep = declarations.clone();
        keep.push(draft.query.clone());
        let sql = blank_outside(text, &keep);
        let script = parse_script(&sql)?;
        if script.query.is_none() {
            return Err(VeloError::sql(
                format!("job '{}' has no SELECT", draft.name),
                Some(draft.location),
            ));
        }
        let mut options = draft.options;
        let sink_topic = options.remove("sink.topic");
        let sink_format = options.remove("sink.format");
        let sink_key = options.remove("sink.key");
        let dlq_topic = options.remove("dlq.topic");
        let delivery = options.remove("delivery");
        let dlq_on_error = options.remove("dlq.on_error");
        let on_error = options
            .remove("on_error")
            .or_else(|| options.remove("on.error"));
        let max_event_time_skew = options.remove("max_event_time_skew");
        if let Some(unknown) = options.keys().next() {
            return Err(VeloError::sql(
                format!("job '{}': unknown option '{unknown}' (known: sink.topic, sink.format, sink.key, dlq.topic, dlq.on_error, on_error, max_event_time_skew, delivery)", draft.name),
                Some(draft.location),
            ));
        }
        let is_create_stream = text[lines.offset(draft.location.line, draft.location.column)..]
            .to_ascii_uppercase()
            .starts_with("CREATE");
        jobs.push(AppJob {
            sink_topic: sink_topic.or_else(|| is_create_stream.then(|| draft.name.clone())),
            query: text[draft.query.clone()].to_string(),
            name: draft.name,
            sql,
            input_topic: draft.topic,
            sink_format,
            sink_key,
            dlq_topic,
            dlq_on_error,
            delivery,
            on_error,
            max_event_time_skew,
            memory_limit: draft.memory_limit,
            timeout: draft.timeout,
            location: draft.location,
        });
    }
    Ok(Application {
        jobs,
        declarations: declarations
            .iter()
            .map(|r| text[r.clone()].to_string())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str =
        "CREATE STREAM orders (customer_id BIGINT, amount DECIMAL(10,2)) WITH ('topic' = 'orders');

-- JOB: high_value_orders
-- TOPIC: orders
START JOB high_value_orders AS
SELECT customer_id, amount FROM orders WHERE amount > 1000;

CREATE STREAM customer_totals AS
SELECT customer_id, SUM(amount) AS total FROM orders GROUP BY customer_id
WITH ('sink.topic' = 'totals', 'sink.key' = 'customer_id');

-- JOB: everything
SELECT * FROM orders;
";

    #[test]
    fn memory_limit_and_timeout_annotations_belong_to_their_job() {
        let app = parse_application(
            "-- JOB: a\n-- MEMORY_LIMIT: 512MB\n-- TIMEOUT: 30s\n-- Note: a plain comment\nSELECT 1 AS x FROM t;\n\
             -- JOB: b\nSELECT 2 AS y FROM t;\n",
        )
        .unwrap();
        assert_eq!(app.jobs[0].memory_limit.as_deref(), Some("512MB"));
        assert_eq!(app.jobs[0].timeout.as_deref(), Some("30s"));
        assert_eq!(app.jobs[1].memory_limit, None);
        assert_eq!(app.jobs[1].timeout, None);
    }

    #[test]
    fn jobs_declarations_and_options_are_read_from_a_file() {
        let app = parse_application(APP).unwrap();
        let names: Vec<&str> = app.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            ["high_value_orders", "customer_totals", "everything"]
        );
        assert_eq!(app.declarations.len(), 1);
        let first = &app.jobs[0];
        assert_eq!(first.input_topic.as_deref(), Some("orders"));
        assert_eq!(first.sink_topic, None);
        let totals = &app.jobs[1];
        assert_eq!(totals.sink_topic.as_deref(), Some("totals"));
        assert_eq!(totals.sink_key.as_deref(), Some("customer_id"));
        assert!(!totals.sql.contains("sink.topic") && !totals.sql.contains("START"));
        // Positions are the file's: the job's SELECT is still on line 9.
        assert_eq!(
            totals.sql.lines().nth(8).unwrap().trim_start(),
            "SELECT customer_id, SUM(amount) AS total FROM orders GROUP BY customer_id"
        );
        let script = parse_script(&totals.sql).unwrap();
        assert_eq!(script.streams.len(), 1);
    }

    #[test]
    fn a_sql_error_anywhere_refuses_the_file_with_its_line_and_column() {
        let bad = APP.replace("GROUP BY customer_id", "GROUP BY BY customer_id");
        let e = parse_application(&bad).unwrap_err().to_string();
        assert!(e.contains("line 9, column"), "{e}");
        let e = parse_application("SELECT 1 FROM t;")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs a name") && e.contains("line 1, column 1"),
            "{e}"
        );
        let e = parse_application("START JOB a AS SELECT * FROM t WITH ('sink.topc' = 'x');")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown option 'sink.topc'"), "{e}");
    }
}
