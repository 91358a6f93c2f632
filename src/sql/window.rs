//! Windowed GROUP BY in every spelling VeloStream accepts, turned into one internal form.
//!
//! Spellings (all meaning the same thing):
//! - `… FROM orders WINDOW TUMBLING (INTERVAL 1 MINUTE) GROUP BY customer_id`
//! - `… GROUP BY customer_id WINDOW TUMBLING(5m)`, `TUMBLING(ts, INTERVAL '1' MINUTE)`,
//!   `SLIDING(5m, 1m)` / `HOPPING(…)`, `SLIDING(ts, 5m, 1m)` (size, then slide), `SESSION(30s)`,
//!   `SESSION(ts, INTERVAL '30' SECOND)`
//! - `GROUP BY customer_id, TUMBLE(ts, INTERVAL '1' MINUTE)`,
//!   `HOP(ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)` (slide, then size, as in Flink),
//!   `SESSION(ts, INTERVAL '30' SECOND)`
//!
//! The `WINDOW …` clause and a trailing `EMIT CHANGES|FINAL` are taken out of the token stream
//! before sqlparser sees the query ([`extract_clauses`]). [`apply_window`] then writes the
//! internal form into the AST: a `tumble(…)`/`hop(…)`/`session(…)` call in GROUP BY (resolved by
//! DataFusion to the functions of `velo_udfs::window`), with `window_start`/`window_end`,
//! `TUMBLE_START(…)`/`TUMBLE_END(…)` (and `HOP_`/`SESSION_`) rewritten to fields of that call.
//! When the SELECT list names no window bound, `window_start, window_end` are added in front.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, GroupByExpr, Ident, SelectItem, SetExpr, Statement,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Result, SqlLocation, VeloError};

/// The kind and size of a window, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size: i64 },
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
}

/// A window clause: its kind and, when given, the event-time column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowClause {
    pub kind: WindowKind,
    pub time_column: Option<String>,
    pub location: Option<SqlLocation>,
}

/// When a windowed aggregate emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmitMode {
    /// Once per window, when the watermark passes its end.
    #[default]
    Final,
    /// The changed rows of every epoch.
    Changes,
}

fn loc(t: &TokenWithSpan) -> Option<SqlLocation> {
    (t.span.start.line > 0).then_some(SqlLocation {
        line: t.span.start.line,
        column: t.span.start.column,
    })
}

fn word(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

fn significant(tokens: &[TokenWithSpan]) -> Vec<usize> {
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .map(|(i, _)| i)
        .collect()
}

/// True when the token at `at` (an index into `tokens`) can follow a whole clause: nothing, `;`,
/// `)`, or a keyword starting another clause.
fn ends_clause(tokens: &[TokenWithSpan], at: Option<&usize>) -> bool {
    let Some(&at) = at else { return true };
    match &tokens[at].token {
        Token::SemiColon | Token::RParen => true,
        t => matches!(
            word(t).as_deref(),
            Some("LIMIT" | "WINDOW" | "ORDER" | "OFFSET")
        ),
    }
}

/// Removes a `WINDOW <kind>(…)` clause and a trailing `EMIT CHANGES|FINAL` from `tokens`.
pub fn extract_clauses(
    tokens: &mut Vec<TokenWithSpan>,
) -> Result<(Option<WindowClause>, Option<EmitMode>)> {
    let mut window = None;
    let mut emit = None;
    let idx = significant(tokens);
    let mut remove: Vec<std::ops::Range<usize>> = Vec::new();
    let mut k = 0;
    while k < idx.len() {
        let t = &tokens[idx[k]];
        match word(&t.token).as_deref() {
            Some("WINDOW")
                if idx
                    .get(k + 1)
                    .and_then(|&i| word(&tokens[i].token))
                    .is_some_and(|w| {
                        matches!(w.as_str(), "TUMBLING" | "SLIDING" | "HOPPING" | "SESSION")
                    }) =>
            {
                let kind_token = &tokens[idx[k + 1]];
                let kind = word(&kind_token.token).unwrap_or_default();
                let Some(&open) = idx
                    .get(k + 2)
                    .filter(|&&i| tokens[i].token == Token::LParen)
                else {
                    return Err(VeloError::sql(
                        format!("WINDOW {kind} needs its arguments in parentheses"),
                        loc(kind_token),
                    ));
                };
                // Arguments: comma-separated token runs up to the matching ')'.
                let mut depth = 0;
                let mut args: Vec<Vec<TokenWithSpan>> = vec![Vec::new()];
                let mut close = None;
                for (j, tok) in tokens.iter().enumerate().skip(open + 1) {
                    match &tok.token {
                        Token::LParen => depth += 1,
                        Token::RParen if depth == 0 => {
                            close = Some(j);
                            break;
                        }
                        Token::RParen => depth -= 1,
                        Token::Comma if depth == 0 => {
                            args.push(Vec::new());
                            continue;
                        }
                        _ => {}
                    }
                    if !matches!(tok.token, Token::Whitespace(_)) {
                        args.last_mut()
                            .expect("one argument at least")
                            .push(tok.clone());
                    }
                }
                let Some(close) = close else {
                    return Err(VeloError::sql(
                        format!("WINDOW {kind}( is not closed"),
                        loc(kind_token),
                    ));
                };
                if window.is_some() {
                    return Err(VeloError::sql("a query can have one WINDOW clause", loc(t)));
                }
                window = Some(window_clause(&kind, &args, loc(t))?);
                remove.push(idx[k]..close + 1);
                k = idx.iter().position(|&i| i > close).unwrap_or(idx.len());
                continue;
            }
            // `EMIT CHANGES|FINAL` closes the query (or comes before LIMIT); anywhere else
            // `emit` is a name (a column called emit).
            Some("EMIT") if ends_clause(tokens, idx.get(k + 2)) => {
                let mode = idx.get(k + 1).and_then(|&i| word(&tokens[i].token));
                emit = Some(match mode.as_deref() {
                    Some("CHANGES") => EmitMode::Changes,
                    Some("FINAL") => EmitMode::Final,
                    _ => {
                        return Err(VeloError::sql(
                            "EMIT must be followed by CHANGES or FINAL",
                            loc(t),
                        ))
                    }
                });
                remove.push(idx[k]..idx[k + 1] + 1);
                k += 2;
                continue;
            }
            _ => {}
        }
        k += 1;
    }
    for range in remove.into_iter().rev() {
        tokens.drain(range);
    }
    Ok((window, emit))
}

fn window_clause(
    kind: &str,
    args: &[Vec<TokenWithSpan>],
    location: Option<SqlLocation>,
) -> Result<WindowClause> {
    let clause = format!("WINDOW {kind}");
    let mut time_column = None;
    let mut durations = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        if arg.is_empty() {
            return Err(VeloError::sql(
                format!("{clause}: argument {} is empty", i + 1),
                location,
            ));
        }
        match parse_duration_tokens(arg) {
            Some(Ok(ms)) => durations.push(ms),
            Some(Err(why)) => {
                return Err(VeloError::sql(
                    format!("{clause}: {why}"),
                    loc(&arg[0]).or(location),
                ))
            }
            None if i == 0 && arg.len() == 1 => match &arg[0].token {
                Token::Word(w) => time_column = Some(w.value.clone()),
                other => {
                    return Err(VeloError::sql(
                        format!("{clause}: expected a time column or a duration, found {other}"),
                        loc(&arg[0]),
                    ))
                }
            },
            None => {
                let text: Vec<String> = arg.iter().map(|t| t.token.to_string()).collect();
                return Err(VeloError::sql(
                    format!("{clause}: '{}' is not a duration (write e.g. 5m, 30s or INTERVAL '1' MINUTE)", text.join(" ")),
                    loc(&arg[0]),
                ));
            }
        }
    }
    let kind = match (kind, durations.as_slice()) {
        ("TUMBLING", [size]) => WindowKind::Tumbling { size: *size },
        ("SLIDING" | "HOPPING", [size, slide]) => WindowKind::Sliding {
            size: *size,
            slide: *slide,
        },
        ("SESSION", [gap]) => WindowKind::Session { gap: *gap },
        ("TUMBLING", _) => {
            return Err(VeloError::sql(
                format!("{clause} takes ([time column,] size)"),
                location,
            ))
        }
        ("SESSION", _) => {
            return Err(VeloError::sql(
                format!("{clause} takes ([time column,] gap)"),
                location,
            ))
        }
        _ => {
            return Err(VeloError::sql(
                format!("{clause} takes ([time column,] size, slide)"),
                location,
            ))
        }
    };
    validate(&kind, &clause, location)?;
    Ok(WindowClause {
        kind,
        time_column,
        location,
    })
}

/// The most sliding windows one row may fall in (size / slide). Each is a group of state and
/// a row of output per key; past this a window is a memory bomb, not a query.
pub const MAX_WINDOWS_PER_ROW: i64 = 10_000;

/// Refuses windows that cannot work.
pub fn validate(kind: &WindowKind, clause: &str, location: Option<SqlLocation>) -> Result<()> {
    let bad = |why: String| Err(VeloError::sql(format!("{clause}: {why}"), location));
    match *kind {
        WindowKind::Tumbling { size } if size <= 0 => bad(format!("the size must be positive, got {size} ms")),
        WindowKind::Sliding { size, .. } if size <= 0 => bad(format!("the size must be positive, got {size} ms")),
        WindowKind::Sliding { slide, .. } if slide <= 0 => bad(format!("the slide must be positive, got {slide} ms")),
        WindowKind::Sliding { size, slide } if slide > size => {
            bad(format!("the slide ({slide} ms) is larger than the size ({size} ms), so some rows would fall in no window"))
        }
        WindowKind::Sliding { size, slide } if size / slide > MAX_WINDOWS_PER_ROW => bad(format!(
            "each row would fall in {} windows (size {size} ms / slide {slide} ms); at most \
             {MAX_WINDOWS_PER_ROW}: use a larger slide or a smaller size",
            size / slide
        )),
        WindowKind::Session { gap } if gap <= 0 => bad(format!("the gap must be positive, got {gap} ms")),
        _ => Ok(()),
    }
}

/// Milliseconds per unit name (singular or plural, any case), or `None`.
fn unit_millis(unit: &str) -> Option<i64> {
    Some(match unit.to_ascii_lowercase().trim_end_matches('s') {
        "m" | "" if unit.eq_ignore_ascii_case("ms") => 1,
        "millisecond" | "milli" => 1,
        "" | "sec" | "second" => 1000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" | "hr" => 3_600_000,
        "d" | "day" => 86_400_000,
        "w" | "week" => 7 * 86_400_000,
        _ => return None,
    })
}

/// Parses `5m`, `30s`, `500ms`, `INTERVAL 1 MINUTE`, `INTERVAL '1' MINUTE`,
/// `INTERVAL '5 minutes'`. `None` when the tokens are not a duration at all.
pub(crate) fn parse_duration_tokens(
    arg: &[TokenWithSpan],
) -> Option<std::result::Result<i64, String>> {
    let tokens: Vec<&Token> = arg.iter().map(|t| &t.token).collect();
    let number = |text: &str| {
        text.parse::<i64>()
            .map_err(|_| format!("'{text}' is not a whole number"))
    };
    match tokens.as_slice() {
        [Token::Word(w), rest @ ..] if w.value.eq_ignore_ascii_case("INTERVAL") => {
            Some(match rest {
                [Token::Number(n, _) | Token::SingleQuotedString(n), Token::Word(u)] => {
                    match unit_millis(&u.value) {
                        Some(ms) => number(n.trim()).map(|n| n * ms),
                        None => Err(format!("unknown time unit '{}'", u.value)),
                    }
                }
                [Token::SingleQuotedString(text)] => duration_text(text),
                _ => Err("write INTERVAL '1' MINUTE".to_string()),
            })
        }
        // 5m (number then unit word) or 500ms
        [Token::Number(n, _), Token::Word(u)] => Some(match unit_millis(&u.value) {
            Some(ms) => number(n).map(|n| n * ms),
            None => Err(format!("unknown time unit '{}'", u.value)),
        }),
        [Token::Number(n, _)] => Some(duration_text(n)),
        [Token::Minus, Token::Number(n, _), Token::Word(u)] => Some(match unit_millis(&u.value) {
            Some(ms) => number(n).map(|n| -n * ms),
            None => Err(format!("unknown time unit '{}'", u.value)),
        }),
        _ => None,
    }
}

/// `5 minutes`, `30s`, `1h` as text.
fn duration_text(text: &str) -> std::result::Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let unit = unit.trim();
    if unit.is_empty() {
        return Err(format!("'{text}' has no time unit (write e.g. {text}s)"));
    }
    let ms = unit_millis(unit).ok_or_else(|| format!("unknown time unit '{unit}'"))?;
    n.parse::<i64>()
        .map(|n| n * ms)
        .map_err(|_| format!("'{text}' is not a duration"))
}

/// Parses a duration written as in a window clause: `5s`, `500ms`, `INTERVAL '5' SECOND`.
pub fn parse_duration(text: &str) -> std::result::Result<i64, String> {
    let tokens = datafusion::sql::sqlparser::tokenizer::Tokenizer::new(&GenericDialect {}, text)
        .tokenize_with_location()
        .map_err(|e| e.message)?;
    let significant: Vec<TokenWithSpan> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .collect();
    match parse_duration_tokens(&significant) {
        Some(result) => result,
        None => Err(format!(
            "'{text}' is not a duration (write e.g. 5s, 500ms or INTERVAL '5' SECOND)"
        )),
    }
}

/// Parses a SQL expression from text (used for the internal form).
fn expr(text: &str) -> Expr {
    Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .expect("the internal window form is valid SQL")
}

/// The window call for a clause over `time_column`.
fn window_call(kind: &WindowKind, time_column: &str) -> Expr {
    let ident = Ident::with_quote('"', time_column).to_string();
    let iv = |ms: i64| format!("INTERVAL '{ms} milliseconds'");
    expr(&match *kind {
        WindowKind::Tumbling { size } => format!("tumble({ident}, {})", iv(size)),
        WindowKind::Sliding { size, slide } => format!("hop({ident}, {}, {})", iv(slide), iv(size)),
        WindowKind::Session { gap } => format!("session({ident}, {})", iv(gap)),
    })
}

fn is_window_fn(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "tumble" | "hop" | "session"
    )
}

fn function_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Function(f) => Some(f.name.to_string().to_ascii_lowercase()),
        _ => None,
    }
}

/// Writes the window into the query's AST (see the module doc). `default_time_column` is the
/// stream's event-time column, used when the clause names none. Returns the window call's time
/// column, or `None` when the query has no window.
pub fn apply_window(
    statement: &mut Statement,
    clause: Option<&WindowClause>,
    default_time_column: &dyn Fn() -> String,
) -> Result<Option<String>> {
    let Statement::Query(query) = statement else {
        return Ok(None);
    };
    apply_window_to_query(query, clause, default_time_column)
}

/// Writes windows written in GROUP BY into the subqueries of `select`'s FROM (the sides of a
/// window join), so their `window_start`/`window_end` resolve.
fn apply_window_to_derived(
    select: &mut datafusion::sql::sqlparser::ast::Select,
    default_time_column: &dyn Fn() -> String,
) -> Result<()> {
    for from in select.from.iter_mut() {
        let relations = std::iter::once(&mut from.relation)
            .chain(from.joins.iter_mut().map(|j| &mut j.relation));
        for relation in relations {
            if let datafusion::sql::sqlparser::ast::TableFactor::Derived { subquery, .. } = relation
            {
                apply_window_to_query(subquery, None, default_time_column)?;
            }
        }
    }
    Ok(())
}

fn apply_window_to_query(
    query: &mut datafusion::sql::sqlparser::ast::Query,
    clause: Option<&WindowClause>,
    default_time_column: &dyn Fn() -> String,
) -> Result<Option<String>> {
    if let SetExpr::Select(select) = query.body.as_mut() {
        apply_window_to_derived(select, default_time_column)?;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return match clause {
            Some(c) => Err(VeloError::sql(
                "a WINDOW clause needs a plain SELECT … GROUP BY",
                c.location,
            )),
            None => Ok(None),
        };
    };
    let GroupByExpr::Expressions(group_by, _) = &mut select.group_by else {
        return match clause {
            Some(c) => Err(VeloError::sql(
                "GROUP BY ALL cannot be windowed",
                c.location,
            )),
            None => Ok(None),
        };
    };
    // The window call: from the clause, or written by the user in GROUP BY.
    let call = match clause {
        Some(c) => {
            if group_by
                .iter()
                .any(|e| function_name(e).is_some_and(|n| is_window_fn(&n)))
            {
                return Err(VeloError::sql(
                    "the query has both a WINDOW clause and a window in GROUP BY",
                    c.location,
                ));
            }
            let column = c.time_column.clone().unwrap_or_else(default_time_column);
            let call = window_call(&c.kind, &column);
            group_by.push(call.clone());
            call
        }
        None => match group_by
            .iter()
            .find(|e| function_name(e).is_some_and(|n| is_window_fn(&n)))
        {
            Some(call) => call.clone(),
            None => return Ok(None),
        },
    };
    let time_column = match &call {
        Expr::Function(f) => f.args.to_string(),
        _ => String::new(),
    };
    let field = |name: &str| expr(&format!("{call}['{name}']"));
    let mut mentions_bounds = false;
    // window_start / window_end as bare columns in the SELECT list keep their names.
    for item in select.projection.iter_mut() {
        if let SelectItem::UnnamedExpr(Expr::Identifier(id)) = item {
            let name = id.value.to_ascii_lowercase();
            if name == "window_start" || name == "window_end" {
                mentions_bounds = true;
                *item = SelectItem::ExprWithAlias {
                    expr: field(&name),
                    alias: Ident::new(name),
                };
            }
        }
    }
    let mut rewrite = |e: &mut Expr| {
        match e {
            Expr::Identifier(id)
                if matches!(
                    id.value.to_ascii_lowercase().as_str(),
                    "window_start" | "window_end"
                ) =>
            {
                mentions_bounds = true;
                *e = field(&id.value.to_ascii_lowercase());
            }
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                if let Some((kind, bound)) = name.rsplit_once('_') {
                    if is_window_fn(kind) && (bound == "start" || bound == "end") {
                        mentions_bounds = true;
                        *e = expr(&format!(
                            "{kind}({})['window_{bound}']",
                            f.args
                                .to_string()
                                .trim_start_matches('(')
                                .trim_end_matches(')')
                        ));
                    }
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = visit_expressions_mut(&mut select.projection, &mut rewrite);
    if let Some(having) = select.having.as_mut() {
        let _ = visit_expressions_mut(having, &mut rewrite);
    }
    if !mentions_bounds {
        select.projection.splice(
            0..0,
            [
                SelectItem::ExprWithAlias {
                    expr: field("window_start"),
                    alias: Ident::new("window_start"),
                },
                SelectItem::ExprWithAlias {
                    expr: field("window_end"),
                    alias: Ident::new("window_end"),
                },
            ],
        );
    }
    let column = time_column
        .trim_start_matches('(')
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        // A qualified column (`o.ts` over a join) names the stream's column `ts`.
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    Ok(Some(column))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parse_script;

    fn window_of(sql: &str) -> (Option<WindowClause>, Option<EmitMode>) {
        let script = parse_script(sql).unwrap();
        (script.window, script.emit)
    }

    #[test]
    fn every_spelling_gives_the_same_window() {
        let minute = WindowKind::Tumbling { size: 60_000 };
        for sql in [
            "SELECT c, COUNT(*) FROM orders WINDOW TUMBLING (INTERVAL 1 MINUTE) GROUP BY c",
            "SELECT c, COUNT(*) FROM orders GROUP BY c WINDOW TUMBLING(1m)",
            "SELECT c, COUNT(*) FROM orders GROUP BY c WINDOW TUMBLING(ts, INTERVAL '1' MINUTE)",
            "SELECT c, COUNT(*) FROM orders GROUP BY c WINDOW TUMBLING(INTERVAL '60 seconds') EMIT FINAL",
        ] {
            assert_eq!(window_of(sql).0.unwrap().kind, minute, "{sql}");
        }
        assert_eq!(
            window_of("SELECT COUNT(*) FROM t GROUP BY k WINDOW SLIDING(ts, 5m, 1m) EMIT CHANGES"),
            (
                Some(WindowClause {
                    kind: WindowKind::Sliding {
                        size: 300_000,
                        slide: 60_000
                    },
                    time_column: Some("ts".into()),
                    location: Some(SqlLocation {
                        line: 1,
                        column: 35
                    })
                }),
                Some(EmitMode::Changes)
            )
        );
        assert_eq!(
            window_of("SELECT COUNT(*) FROM t WINDOW SESSION(30s) GROUP BY k")
                .0
                .unwrap()
                .kind,
            WindowKind::Session { gap: 30_000 }
        );
        assert_eq!(
            window_of("SELECT COUNT(*) FROM t WINDOW SESSION(ts, INTERVAL '30' SECOND) GROUP BY k")
                .0
                .unwrap()
                .kind,
            WindowKind::Session { gap: 30_000 }
        );
    }

    #[test]
    fn windows_that_cannot_work_are_refused_naming_the_clause() {
        for (sql, want) in [
            (
                "SELECT COUNT(*) FROM t GROUP BY k WINDOW TUMBLING(0s)",
                "WINDOW TUMBLING: the size must be positive",
            ),
            (
                "SELECT COUNT(*) FROM t GROUP BY k WINDOW SLIDING(1m, 5m)",
                "WINDOW SLIDING: the slide (300000 ms) is larger than the size",
            ),
            (
                "SELECT COUNT(*) FROM t GROUP BY k WINDOW SESSION(5 parsecs)",
                "unknown time unit 'parsecs'",
            ),
            (
                "SELECT COUNT(*) FROM t GROUP BY k WINDOW TUMBLING(ts)",
                "WINDOW TUMBLING takes ([time column,] size)",
            ),
        ] {
            let err = parse_script(sql).unwrap_err().to_string();
            assert!(err.contains(want), "{sql}: {err}");
        }
    }
}
