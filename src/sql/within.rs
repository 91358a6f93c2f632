//! `JOIN … WITHIN <duration> ON …`: the ksqlDB shorthand for an interval join on the streams'
//! event times.
//!
//! `a JOIN b WITHIN INTERVAL '1' HOUR ON a.id = b.id` joins rows whose event times are at most
//! one hour apart, either way; `WITHIN (INTERVAL '1' HOUR, INTERVAL '2' HOUR)` allows `b` up to
//! one hour before and two hours after `a` (ksqlDB's `WITHIN (before, after)`). The clause is
//! taken out of the text before sqlparser sees it ([`extract_within`]) and written into the
//! join's ON condition at plan time ([`apply_within`]), when the streams' event-time columns
//! are known: `b.t BETWEEN a.t - before AND a.t + after`.

use datafusion::sql::sqlparser::ast::{
    Expr, JoinConstraint, JoinOperator, SetExpr, Statement, TableFactor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use super::window::parse_duration_tokens;
use crate::error::{Result, SqlLocation, VeloError};

/// A `WITHIN` clause: how far before and after the left row's event time the right row's may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWithin {
    pub before_ms: i64,
    pub after_ms: i64,
    pub location: Option<SqlLocation>,
}

fn location(t: &TokenWithSpan) -> Option<SqlLocation> {
    (t.span.start.line > 0).then_some(SqlLocation {
        line: t.span.start.line,
        column: t.span.start.column,
    })
}

fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn duration(tokens: &[TokenWithSpan], at: Option<SqlLocation>) -> Result<i64> {
    let significant: Vec<TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .cloned()
        .collect();
    match parse_duration_tokens(&significant) {
        Some(Ok(ms)) if ms >= 0 => Ok(ms),
        Some(Ok(_)) => Err(VeloError::sql("WITHIN: a duration cannot be negative", at)),
        Some(Err(why)) => Err(VeloError::sql(format!("WITHIN: {why}"), at)),
        None => Err(VeloError::sql(
            "WITHIN takes a duration, e.g. WITHIN INTERVAL '1' HOUR, or (before, after)",
            at,
        )),
    }
}

/// Where a `WITHIN` clause starts: a WITHIN between a JOIN and its ON (anywhere else `within`
/// is a name, e.g. a column).
fn join_within(tokens: &[TokenWithSpan]) -> Option<usize> {
    let mut in_join = false;
    tokens.iter().position(|t| {
        if is_word(&t.token, "JOIN") {
            in_join = true;
        } else if is_word(&t.token, "ON") {
            in_join = false;
        }
        in_join && is_word(&t.token, "WITHIN")
    })
}

/// Removes `WITHIN <duration>` or `WITHIN (<before>, <after>)` (before `ON`) from `tokens`.
pub fn extract_within(tokens: &mut Vec<TokenWithSpan>) -> Result<Option<JoinWithin>> {
    let Some(start) = join_within(tokens) else {
        return Ok(None);
    };
    let at = location(&tokens[start]);
    let end = tokens[start + 1..]
        .iter()
        .position(|t| is_word(&t.token, "ON"))
        .map(|p| start + 1 + p)
        .ok_or_else(|| VeloError::sql("WITHIN must come before the join's ON", at))?;
    let body: Vec<TokenWithSpan> = tokens[start + 1..end]
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .cloned()
        .collect();
    let (before_ms, after_ms) = match body.as_slice() {
        [open, inner @ .., close]
            if open.token == Token::LParen && close.token == Token::RParen =>
        {
            let parts: Vec<&[TokenWithSpan]> = inner.split(|t| t.token == Token::Comma).collect();
            let [before, after] = parts.as_slice() else {
                return Err(VeloError::sql(
                    "WITHIN (before, after) takes two durations",
                    at,
                ));
            };
            (duration(before, at)?, duration(after, at)?)
        }
        other => {
            let ms = duration(other, at)?;
            (ms, ms)
        }
    };
    tokens.drain(start..end);
    if join_within(tokens).is_some() {
        return Err(VeloError::sql("a query can have one WITHIN clause", at));
    }
    Ok(Some(JoinWithin {
        before_ms,
        after_ms,
        location: at,
    }))
}

/// Writes `within` into the ON condition of the query's first join:
/// `right.t BETWEEN left.t - before AND left.t + after`, where `event_time(name)` gives the
/// event-time column of the stream `name`.
pub fn apply_within(
    statement: &mut Statement,
    within: &JoinWithin,
    event_time: &dyn Fn(&str) -> String,
) -> Result<()> {
    let missing = || {
        VeloError::sql(
            "WITHIN belongs to a join of two streams: FROM a JOIN b WITHIN INTERVAL '1' HOUR ON …",
            within.location,
        )
    };
    let Statement::Query(query) = statement else {
        return Err(missing());
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(missing());
    };
    let from = select.from.first_mut().ok_or_else(missing)?;
    let left = relation_name(&from.relation).ok_or_else(missing)?;
    let join = from.joins.first_mut().ok_or_else(missing)?;
    let right = relation_name(&join.relation).ok_or_else(missing)?;
    let constraint = match &mut join.join_operator {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c) => c,
        _ => return Err(missing()),
    };
    let JoinConstraint::On(on) = constraint else {
        return Err(VeloError::sql(
            "WITHIN needs the join's condition as ON …",
            within.location,
        ));
    };
    let column =
        |(alias, stream): &(String, String)| format!("\"{alias}\".\"{}\"", event_time(stream));
    let (l, r) = (column(&left), column(&right));
    let bound = format!(
        "{r} BETWEEN {l} - INTERVAL '{} milliseconds' AND {l} + INTERVAL '{} milliseconds'",
        within.before_ms, within.after_ms
    );
    let bound = Parser::new(&GenericDialect {})
        .try_with_sql(&bound)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| VeloError::sql(format!("WITHIN: {e}"), within.location))?;
    *on = Expr::BinaryOp {
        left: Box::new(Expr::Nested(Box::new(on.clone()))),
        op: datafusion::sql::sqlparser::ast::BinaryOperator::And,
        right: Box::new(bound),
    };
    Ok(())
}

/// (alias or name, stream name) of a plain table relation.
fn relation_name(relation: &TableFactor) -> Option<(String, String)> {
    let TableFactor::Table { name, alias, .. } = relation else {
        return None;
    };
    let stream = name.0.last()?.to_string().trim_matches('"').to_string();
    let alias = alias
        .as_ref()
        .map_or(stream.clone(), |a| a.name.value.clone());
    Some((alias, stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parse_script;

    #[test]
    fn within_one_duration_bounds_both_ways_and_a_pair_bounds_before_and_after() {
        let script =
            parse_script("SELECT * FROM a JOIN b WITHIN INTERVAL '1' HOUR ON a.id = b.id").unwrap();
        let w = script.within.unwrap();
        assert_eq!((w.before_ms, w.after_ms), (3_600_000, 3_600_000));
        let mut statement = script.query.unwrap();
        apply_within(&mut statement, &w, &|s| format!("{s}_ts")).unwrap();
        assert_eq!(
            statement.to_string(),
            "SELECT * FROM a JOIN b ON (a.id = b.id) AND \"b\".\"b_ts\" BETWEEN \"a\".\"a_ts\" - INTERVAL '3600000 milliseconds' AND \"a\".\"a_ts\" + INTERVAL '3600000 milliseconds'"
        );
        let script = parse_script(
            "SELECT * FROM a x JOIN b y WITHIN (10s, INTERVAL '2' MINUTE) ON x.id = y.id",
        )
        .unwrap();
        let w = script.within.unwrap();
        assert_eq!((w.before_ms, w.after_ms), (10_000, 120_000));
    }

    #[test]
    fn within_without_a_duration_or_an_on_is_an_error_with_its_place() {
        let e = parse_script("SELECT * FROM a JOIN b WITHIN soon ON a.id = b.id")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("WITHIN takes a duration") && e.contains("line 1, column 24"),
            "{e}"
        );
        let e = parse_script("SELECT * FROM a JOIN b WITHIN 1h")
            .unwrap_err()
            .to_string();
        assert!(e.contains("before the join's ON"), "{e}");
    }
}
