//! Forms other streaming SQL tools accept that standard SQL writes differently, rewritten to
//! the standard form before parsing (so errors still point at the user's text):
//!
//! - `CAST(x, 'FLOAT')` — the type as a string after a comma — is `CAST(x AS FLOAT)`.
//! - `price > "100.00"` — double quotes where a string is meant — reads `"100.00"` as the
//!   string `'100.00'` when it names no column ([`unquote_as_string`]; the planner, which knows
//!   the columns, calls it and warns).
//!
//! (`timestamp()` is a function, see `velo_udfs::processing_time`.)

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

use crate::error::{Result, SqlLocation, VeloError};

fn location(t: &TokenWithSpan) -> Option<SqlLocation> {
    (t.span.start.line > 0).then_some(SqlLocation {
        line: t.span.start.line,
        column: t.span.start.column,
    })
}

fn is_cast(t: &Token) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none()
        && (w.value.eq_ignore_ascii_case("CAST") || w.value.eq_ignore_ascii_case("TRY_CAST")))
}

/// Rewrites every `CAST(expr, 'TYPE')` of `tokens` into `CAST(expr AS TYPE)`.
pub fn rewrite_cast_with_type_string(tokens: &mut Vec<TokenWithSpan>) -> Result<()> {
    let mut i = 0;
    while i < tokens.len() {
        if !is_cast(&tokens[i].token) {
            i += 1;
            continue;
        }
        let cast = i;
        // The '(' after CAST, then the top-level ',' before its ')'.
        let Some(open) = (cast + 1..tokens.len())
            .find(|&j| !matches!(tokens[j].token, Token::Whitespace(_)))
            .filter(|&j| tokens[j].token == Token::LParen)
        else {
            i += 1;
            continue;
        };
        let mut depth = 0;
        let mut comma = None;
        let mut close = None;
        for (j, t) in tokens.iter().enumerate().skip(open + 1) {
            match t.token {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen if depth == 0 => {
                    close = Some(j);
                    break;
                }
                Token::RParen | Token::RBracket => depth -= 1,
                Token::Comma if depth == 0 && comma.is_none() => comma = Some(j),
                _ => {}
            }
        }
        let (Some(comma), Some(close)) = (comma, close) else {
            i += 1;
            continue;
        };
        let type_tokens: Vec<&TokenWithSpan> = tokens[comma + 1..close]
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        let [type_token] = type_tokens.as_slice() else {
            i += 1;
            continue;
        };
        let Token::SingleQuotedString(type_name) = &type_token.token else {
            return Err(VeloError::sql(
                "CAST(x, type): the type is a string, e.g. CAST(x, 'FLOAT') or write CAST(x AS FLOAT)",
                location(type_token),
            ));
        };
        let span = type_token.span;
        let parsed = super::tokenize(type_name).map_err(|_| {
            VeloError::sql(
                format!("CAST: '{type_name}' is not a type"),
                location(type_token),
            )
        })?;
        let space = || TokenWithSpan::new(Token::Whitespace(Whitespace::Space), span);
        let replacement: Vec<TokenWithSpan> = [
            space(),
            TokenWithSpan::new(Token::make_keyword("AS"), tokens[comma].span),
            space(),
        ]
        .into_iter()
        .chain(
            parsed
                .into_iter()
                .filter(|t| t.token != Token::EOF)
                .map(|t| TokenWithSpan::new(t.token, span)),
        )
        .collect();
        let added = replacement.len();
        tokens.splice(comma..close, replacement);
        i = comma + added;
    }
    Ok(())
}

/// Replaces every `"name"` identifier of `statement` by the string `'name'`; false when there
/// is none (the missing column was not written in double quotes).
pub fn unquote_as_string(
    statement: &mut datafusion::sql::sqlparser::ast::Statement,
    name: &str,
) -> bool {
    use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Expr, Value};
    let mut changed = false;
    let _ = visit_expressions_mut(statement, |e| {
        if let Expr::Identifier(id) = e {
            if id.quote_style == Some('"') && id.value == name {
                *e = Expr::value(Value::SingleQuotedString(name.to_string()));
                changed = true;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut tokens = super::super::tokenize(sql).unwrap();
        rewrite_cast_with_type_string(&mut tokens).unwrap();
        tokens.iter().map(|t| t.token.to_string()).collect()
    }

    #[test]
    fn a_type_given_as_a_string_after_a_comma_becomes_cast_as() {
        assert_eq!(
            rewritten("SELECT CAST(JSON_VALUE(p, '$.t'), 'FLOAT') AS t FROM s"),
            "SELECT CAST(JSON_VALUE(p, '$.t') AS FLOAT) AS t FROM s"
        );
        assert_eq!(
            rewritten("SELECT cast(a,'DECIMAL(10, 2)'), CAST(b AS INT) FROM s"),
            "SELECT cast(a AS DECIMAL(10, 2)), CAST(b AS INT) FROM s"
        );
    }

    #[test]
    fn a_type_that_is_not_a_string_is_named_with_its_place() {
        let mut tokens = super::super::tokenize("SELECT\n CAST(a, b) FROM s").unwrap();
        let e = rewrite_cast_with_type_string(&mut tokens)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2, column 10"), "{e}");
        assert!(e.contains("CAST(x AS FLOAT)"), "{e}");
    }
}
