//! The SQL front end: VeloStream's dialect on top of sqlparser (as DataFusion uses it).
//!
//! It owns splitting a text into statements, the statements DataFusion does not know
//! (`CREATE STREAM … WITH (…)`), column lists given on the command line, and turning parser
//! errors into errors with a line and column. Everything else — name resolution, types,
//! expressions — is DataFusion's job ([`crate::planner`]).

pub mod compat;
pub mod types;
pub mod wildcard;
pub mod window;
pub mod within;

use std::collections::BTreeMap;

use arrow::datatypes::Field;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use crate::error::{Result, SqlLocation, VeloError};

/// The stack every thread that plans queries gets: planning walks expression trees
/// recursively, a level of stack per level of nesting (a chain of `OR`s nests one level per
/// term). With [`MAX_EXPR_DEPTH`] it leaves a wide margin.
pub const PLANNING_STACK_BYTES: usize = 256 * 1024 * 1024;

/// How deep expressions may nest in a statement. A chain of `AND`, `OR`, `+`… nests one level
/// per term, so this is also the longest such chain. Deeper statements are refused before
/// planning (planning recurses once per level).
pub const MAX_EXPR_DEPTH: usize = 2000;

/// Refuses a statement whose expressions nest deeper than [`MAX_EXPR_DEPTH`].
fn check_depth(statement: &Statement, at: Option<SqlLocation>) -> Result<()> {
    use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};
    use std::ops::ControlFlow;
    struct Depth(usize);
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.0 += 1;
            if self.0 > MAX_EXPR_DEPTH {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.0 -= 1;
            ControlFlow::Continue(())
        }
    }
    if statement.visit(&mut Depth(0)).is_break() {
        return Err(VeloError::sql(
            format!(
                "the statement's expressions nest more than {MAX_EXPR_DEPTH} levels deep (a chain \
                 of AND, OR or + counts a level per term); write long lists of alternatives as \
                 `column IN (…)`, or split the query"
            ),
            at,
        ));
    }
    Ok(())
}

/// A parsed SQL text: stream declarations, then at most one query.
#[derive(Debug, Clone)]
pub struct Script {
    pub streams: Vec<StreamDecl>,
    pub query: Option<Statement>,
    /// The query's `WINDOW …` clause, taken out of the text (see [`window`]).
    pub window: Option<window::WindowClause>,
    /// The query's `EMIT CHANGES|FINAL`, taken out of the text.
    pub emit: Option<window::EmitMode>,
    /// The query's `JOIN … WITHIN <duration>`, taken out of the text.
    pub within: Option<within::JoinWithin>,
}

/// `CREATE STREAM name (columns) WITH (options)`, or `CREATE TABLE …` for a table (the
/// latest row per key, from a compacted topic or a file).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamDecl {
    pub name: String,
    /// True for `CREATE TABLE`.
    pub is_table: bool,
    /// Declared columns; `None` when the declaration gives none (schema inferred or from
    /// options).
    pub columns: Option<Vec<Field>>,
    /// `WATERMARK FOR column AS expression`, kept as text for the event-time layer.
    pub watermark: Option<(String, String)>,
    /// The `WITH` options, keys lower-cased.
    pub options: BTreeMap<String, String>,
    pub location: SqlLocation,
}

fn dialect() -> GenericDialect {
    GenericDialect {}
}

fn location(loc: Location) -> Option<SqlLocation> {
    (loc.line > 0).then_some(SqlLocation {
        line: loc.line,
        column: loc.column,
    })
}

/// Converts a sqlparser error ("… at Line: 3, Column: 7") into a located [`VeloError::Sql`].
fn parser_error(e: ParserError, fallback: Option<SqlLocation>) -> VeloError {
    let text = match e {
        ParserError::ParserError(t) | ParserError::TokenizerError(t) => t,
        ParserError::RecursionLimitExceeded => "the query is nested too deeply".to_string(),
    };
    let (message, location) = split_location(&text);
    VeloError::sql(message, location.or(fallback))
}

fn split_location(text: &str) -> (String, Option<SqlLocation>) {
    if let Some(at) = text.rfind(" at Line: ") {
        let tail = &text[at + " at Line: ".len()..];
        if let Some((line, rest)) = tail.split_once(", Column: ") {
            let column: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let (Ok(line), Ok(column)) = (line.trim().parse(), column.parse()) {
                return (text[..at].to_string(), Some(SqlLocation { line, column }));
            }
        }
    }
    (text.to_string(), None)
}

pub(crate) fn tokenize(text: &str) -> Result<Vec<TokenWithSpan>> {
    Tokenizer::new(&dialect(), text)
        .tokenize_with_location()
        .map_err(|e| {
            let loc = location(e.location);
            VeloError::sql(e.message, loc)
        })
}

fn is_blank(token: &Token) -> bool {
    matches!(token, Token::Whitespace(_) | Token::EOF)
}

fn eof_after(tokens: &[TokenWithSpan]) -> TokenWithSpan {
    let end = tokens
        .last()
        .map(|t| t.span.end)
        .unwrap_or(Location { line: 1, column: 1 });
    TokenWithSpan::new(Token::EOF, Span::new(end, end))
}

/// Parses a whole SQL text: statements separated by `;`.
pub fn parse_script(text: &str) -> Result<Script> {
    let tokens = tokenize(text)?;
    let mut script = Script {
        streams: Vec::new(),
        query: None,
        window: None,
        emit: None,
        within: None,
    };
    for chunk in tokens.split(|t| t.token == Token::SemiColon) {
        let Some(first) = chunk.iter().find(|t| !is_blank(&t.token)) else {
            continue;
        };
        let start = location(first.span.start);
        let dialect = dialect();
        if is_create_stream(chunk) {
            let mut statement_tokens = chunk.to_vec();
            statement_tokens.push(eof_after(chunk));
            let mut parser = Parser::new(&dialect).with_tokens_with_locations(statement_tokens);
            let decl = parse_create_stream(&mut parser).map_err(|e| parser_error(e, start))?;
            expect_end(&parser)?;
            script.streams.push(decl);
        } else {
            let mut statement_tokens = chunk.to_vec();
            compat::rewrite_cast_with_type_string(&mut statement_tokens)?;
            let (window, emit) = window::extract_clauses(&mut statement_tokens)?;
            let within = within::extract_within(&mut statement_tokens)?;
            statement_tokens.push(eof_after(chunk));
            let mut parser = Parser::new(&dialect).with_tokens_with_locations(statement_tokens);
            let statement = parser
                .parse_statement()
                .map_err(|e| parser_error(e, start))?;
            expect_end(&parser)?;
            check_depth(&statement, start)?;
            if !matches!(statement, Statement::Query(_)) {
                return Err(VeloError::sql(
                    format!(
                        "only SELECT queries and CREATE STREAM declarations are accepted here, not '{}'",
                        first.token
                    ),
                    start,
                ));
            }
            if script.query.is_some() {
                return Err(VeloError::sql(
                    "more than one query in the text; run one query at a time",
                    start,
                ));
            }
            script.query = Some(statement);
            script.window = window;
            script.emit = emit;
            script.within = within;
        }
    }
    Ok(script)
}

/// Refuses trailing text after a complete statement.
fn expect_end(parser: &Parser) -> Result<()> {
    let next = parser.peek_token();
    if next.token == Token::EOF {
        return Ok(());
    }
    Err(VeloError::sql(
        format!("unexpected '{}' after the end of the statement", next.token),
        location(next.span.start),
    ))
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.value.eq_ignore_ascii_case(word) && w.quote_style.is_none())
}

fn is_create_stream(chunk: &[TokenWithSpan]) -> bool {
    let mut words = chunk
        .iter()
        .filter(|t| !is_blank(&t.token))
        .map(|t| match &t.token {
            Token::Word(w) => w.value.to_ascii_uppercase(),
            _ => String::new(),
        });
    words.next().as_deref() == Some("CREATE")
        && matches!(words.next().as_deref(), Some("STREAM") | Some("TABLE"))
}

fn parse_create_stream(parser: &mut Parser) -> std::result::Result<StreamDecl, ParserError> {
    let start = parser.peek_token().span.start;
    parser.expect_keyword(Keyword::CREATE)?;
    let is_table = parser.parse_keyword(Keyword::TABLE);
    if !is_table {
        parser.expect_keyword(Keyword::STREAM)?;
    }
    let _ = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parser.parse_object_name(false)?.to_string();
    let mut columns = None;
    let mut watermark = None;
    if parser.consume_token(&Token::LParen) {
        let mut fields = Vec::new();
        loop {
            if is_word(&parser.peek_token().token, "WATERMARK") {
                parser.next_token();
                parser.expect_keyword(Keyword::FOR)?;
                let column = parser.parse_identifier()?.value;
                parser.expect_keyword(Keyword::AS)?;
                let expr = parser.parse_expr()?;
                watermark = Some((column, expr.to_string()));
            } else {
                let def = parser.parse_column_def()?;
                let data_type = types::arrow_type(&def.data_type).map_err(|m| {
                    ParserError::ParserError(format!("column '{}': {m}", def.name.value))
                })?;
                fields.push(Field::new(def.name.value.clone(), data_type, true));
            }
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen)?;
        columns = Some(fields);
    }
    let mut options = BTreeMap::new();
    if parser.parse_keyword(Keyword::WITH) {
        parser.expect_token(&Token::LParen)?;
        loop {
            let key = match parser.next_token().token {
                Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s,
                Token::Word(w) => {
                    // Unquoted dotted keys: avro.schema.file
                    let mut key = w.value;
                    while parser.consume_token(&Token::Period) {
                        key.push('.');
                        key.push_str(&parser.parse_identifier()?.value);
                    }
                    key
                }
                other => {
                    return Err(ParserError::ParserError(format!(
                        "Expected: an option name such as 'topic', found: {other}"
                    )))
                }
            };
            parser.expect_token(&Token::Eq)?;
            let value = match parser.next_token().token {
                Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s,
                Token::Number(n, _) => n,
                Token::Word(w) => w.value,
                other => {
                    return Err(ParserError::ParserError(format!(
                        "Expected: a value for option '{key}', found: {other}"
                    )))
                }
            };
            options.insert(key.to_ascii_lowercase(), value);
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen)?;
    } else if parser.parse_keyword(Keyword::AS) {
        return Err(ParserError::ParserError(
            "CREATE STREAM … AS SELECT is not supported yet; run the SELECT with `velo-sql stream --output kafka`".into(),
        ));
    }
    Ok(StreamDecl {
        name,
        is_table,
        columns,
        watermark,
        options,
        location: location(start).unwrap_or(SqlLocation { line: 1, column: 1 }),
    })
}

/// Parses a column list such as `symbol VARCHAR, price DECIMAL(18,4)` (from `--schema`).
pub fn parse_column_list(text: &str) -> Result<Vec<Field>> {
    let tokens = tokenize(text)?;
    let mut all = tokens.clone();
    all.push(eof_after(&tokens));
    let dialect = dialect();
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(all);
    let mut fields = Vec::new();
    loop {
        let def = parser
            .parse_column_def()
            .map_err(|e| parser_error(e, None))?;
        let data_type = types::arrow_type(&def.data_type).map_err(|m| {
            VeloError::sql(
                format!("column '{}': {m}", def.name.value),
                location(def.name.span.start),
            )
        })?;
        fields.push(Field::new(def.name.value, data_type, true));
        if !parser.consume_token(&Token::Comma) {
            break;
        }
    }
    expect_end(&parser)?;
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, TimeUnit};

    #[test]
    fn create_stream_then_query_parse_with_options() {
        let script = parse_script(
            "CREATE STREAM trades (symbol VARCHAR, price DECIMAL(18,4), ts TIMESTAMP)\n  WITH ('topic' = 'trades_v1', 'format' = 'json');\nSELECT symbol FROM trades WHERE price > '100.00';",
        )
        .unwrap();
        assert_eq!(script.streams.len(), 1);
        let s = &script.streams[0];
        assert_eq!(s.name, "trades");
        assert_eq!(
            s.options.get("topic").map(String::as_str),
            Some("trades_v1")
        );
        let cols = s.columns.as_ref().unwrap();
        assert_eq!(cols[1].data_type(), &DataType::Decimal128(18, 4));
        assert_eq!(
            cols[2].data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert!(script.query.is_some());
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = parse_script("SELECT a,\n  FROM").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn trailing_text_is_an_error() {
        let err = parse_script("SELECT a FROM t x y z").unwrap_err();
        assert_eq!(
            err.to_string(),
            "SQL error at line 1, column 19: unexpected 'y' after the end of the statement"
        );
    }

    #[test]
    fn column_lists_parse() {
        let fields =
            parse_column_list("symbol VARCHAR, price DECIMAL(18,4), quantity BIGINT, ts TIMESTAMP")
                .unwrap();
        let names: Vec<_> = fields.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["symbol", "price", "quantity", "ts"]);
        assert!(parse_column_list("a WIDGET")
            .unwrap_err()
            .to_string()
            .contains("column 'a'"));
    }
}
