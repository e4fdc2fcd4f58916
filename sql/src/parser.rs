//! Parsing SQL text into [`Statement`]s: `sqlparser`'s PostgreSQL dialect, plus a token-level
//! pre-pass for the CockroachDB syntax it cannot parse.
//!
//! The text is tokenized once with sqlparser's own tokenizer, so string literals, quoted
//! identifiers, dollar quoting and comments are never mistaken for keywords, and keywords
//! match in any case. The tokens are split into statements at `;`, and each statement is
//!
//! 1. `ALTER TABLE <name> SPLIT AT VALUES (…), …` → [`Statement::SplitAt`]: the name and the
//!    `VALUES` list are parsed by sqlparser from the tokens around `SPLIT AT`;
//! 2. `CREATE USER` becomes `CREATE ROLE` (PostgreSQL's meaning; sqlparser reads the former
//!    as Snowflake's statement);
//! 3. otherwise, if it contains `AS OF SYSTEM TIME <value>` outside parentheses (after the
//!    FROM clause's tables, before WHERE, as CockroachDB places it; or anywhere else at the top
//!    level, such as the end of the statement or after BEGIN), that clause is cut out, its
//!    value parsed ([`crate::timestamp::parse_as_of`]), and the rest handed to sqlparser:
//!    [`Statement::Sql`] with `as_of` set. The value is a string literal or a bare number.
//!
//! Which statements may carry `AS OF SYSTEM TIME` is the session's business, not the parser's.
//! Parse errors keep sqlparser's messages and source locations (42601). Text over the
//! [`limits`] is refused before it is parsed (54000 for its length, 54001 for its nesting).

use sqlparser::ast;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::error::{Result, SqlError};
use crate::limits;
use crate::prepared::PlanCache;
use crate::timestamp::{parse_as_of, AsOf};

/// One parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// A statement sqlparser understands, with the `AS OF SYSTEM TIME` clause the pre-pass
    /// cut out of it, if any.
    Sql {
        /// The statement (boxed: sqlparser's AST is large).
        statement: Box<ast::Statement>,
        /// Its `AS OF SYSTEM TIME` value.
        as_of: Option<AsOf>,
        /// Its plan, once bound (queries and DML; shared by clones of the statement).
        plan: PlanCache,
    },
    /// `ALTER TABLE <table> SPLIT AT VALUES (…), …`: split the table's key range before the
    /// primary keys (or key prefixes) listed.
    SplitAt {
        /// The table.
        table: ast::ObjectName,
        /// The split points, one row per key (prefix).
        values: ast::Values,
    },
}

impl From<ast::Statement> for Statement {
    fn from(statement: ast::Statement) -> Statement {
        Statement::Sql {
            statement: Box::new(statement),
            as_of: None,
            plan: PlanCache::default(),
        }
    }
}

impl std::fmt::Display for Statement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Statement::Sql {
                statement,
                as_of: None,
                ..
            } => write!(f, "{statement}"),
            Statement::Sql {
                statement,
                as_of: Some(as_of),
                ..
            } => write!(f, "{statement} AS OF SYSTEM TIME {as_of}"),
            Statement::SplitAt { table, values } => {
                write!(f, "ALTER TABLE {table} SPLIT AT {values}")
            }
        }
    }
}

/// Parses SQL text (PostgreSQL dialect plus the extensions above) into statements; syntax
/// errors are 42601, malformed `AS OF SYSTEM TIME` values 22023.
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    limits::check_text(sql)?;
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| syntax(ParserError::from(e)))?;
    let mut statements = Vec::new();
    for group in tokens.split(|t| t.token == Token::SemiColon) {
        if group
            .iter()
            .all(|t| matches!(t.token, Token::Whitespace(_)))
        {
            continue;
        }
        statements.push(parse_one(&dialect, group.to_vec())?);
    }
    Ok(statements)
}

fn syntax(e: ParserError) -> SqlError {
    match e {
        ParserError::RecursionLimitExceeded => SqlError::StatementTooComplex(format!(
            "expressions nest deeper than the parser's limit of {}",
            limits::PARSER_RECURSION_LIMIT
        )),
        e => SqlError::Syntax(e.to_string()),
    }
}

/// sqlparser with Meridian's recursion limit, over `tokens`.
fn parser(dialect: &PostgreSqlDialect, tokens: Vec<TokenWithSpan>) -> Parser<'_> {
    Parser::new(dialect)
        .with_recursion_limit(limits::PARSER_RECURSION_LIMIT)
        .with_tokens_with_locations(tokens)
}

/// Parses the tokens of one statement (no `;`).
fn parse_one(dialect: &PostgreSqlDialect, tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    limits::check_nesting(&tokens)?;
    if let Some(split) = parse_split_at(dialect, &tokens)? {
        return Ok(split);
    }
    let tokens = create_user_as_role(tokens);
    let (tokens, as_of) = cut_as_of_system_time(tokens)?;
    let mut parsed = parser(dialect, tokens).parse_statements().map_err(syntax)?;
    match (parsed.pop(), parsed.is_empty()) {
        (Some(statement), true) => Ok(Statement::Sql {
            statement: Box::new(statement),
            as_of,
            plan: PlanCache::default(),
        }),
        // Only comments (the caller skips pure whitespace) or a sqlparser surprise.
        _ => Err(SqlError::Syntax(
            "expected exactly one statement between semicolons".into(),
        )),
    }
}

/// `CREATE USER …` is PostgreSQL's `CREATE ROLE … LOGIN`; sqlparser parses the former in
/// Snowflake's syntax, so the keyword is swapped for `ROLE` (every Meridian role may log in).
fn create_user_as_role(mut tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let sig = significant(&tokens);
    if let (Some(&create), Some(&user)) = (sig.first(), sig.get(1)) {
        if is_word(&tokens[create].token, "create") && is_word(&tokens[user].token, "user") {
            tokens[user].token = Token::make_keyword("ROLE");
        }
    }
    tokens
}

/// Whether `token` is the unquoted keyword `word` (any case).
fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// Indices of the tokens that are not whitespace or comments.
fn significant(tokens: &[TokenWithSpan]) -> Vec<usize> {
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .map(|(i, _)| i)
        .collect()
}

/// Recognizes `ALTER TABLE <name> SPLIT AT <VALUES …>`; `None` if the statement is not one.
fn parse_split_at(
    dialect: &PostgreSqlDialect,
    tokens: &[TokenWithSpan],
) -> Result<Option<Statement>> {
    let sig = significant(tokens);
    let word_at =
        |n: usize, word: &str| sig.get(n).is_some_and(|&i| is_word(&tokens[i].token, word));
    if !(word_at(0, "alter") && word_at(1, "table")) {
        return Ok(None);
    }
    // The name is the tokens up to SPLIT AT (a name never contains parentheses).
    let Some(split) = (2..sig.len()).find(|&n| word_at(n, "split") && word_at(n + 1, "at")) else {
        return Ok(None);
    };
    let (name_start, split_index, rest_start) =
        match (sig.get(2), sig.get(split), sig.get(split + 2)) {
            (Some(&a), Some(&b), Some(&c)) => (a, b, c),
            _ => {
                return Err(SqlError::Syntax(
                    "ALTER TABLE … SPLIT AT expects VALUES (…) after SPLIT AT".into(),
                ))
            }
        };
    let mut name_parser = parser(dialect, tokens[name_start..split_index].to_vec());
    let table = name_parser.parse_object_name(false).map_err(syntax)?;
    name_parser.expect_token(&Token::EOF).map_err(syntax)?;

    let mut values_parser = parser(dialect, tokens[rest_start..].to_vec());
    let query = values_parser.parse_query().map_err(syntax)?;
    values_parser.expect_token(&Token::EOF).map_err(syntax)?;
    let ast::Query {
        with: None,
        body,
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks,
        ..
    } = *query
    else {
        return Err(SqlError::unsupported(
            "ALTER TABLE … SPLIT AT with anything but a VALUES list",
        ));
    };
    match *body {
        ast::SetExpr::Values(values) if locks.is_empty() && !values.rows.is_empty() => {
            Ok(Some(Statement::SplitAt { table, values }))
        }
        _ => Err(SqlError::unsupported(
            "ALTER TABLE … SPLIT AT with anything but a VALUES list",
        )),
    }
}

/// Cuts `AS OF SYSTEM TIME <value>` out of a statement's top level, returning the other tokens
/// and the parsed value.
fn cut_as_of_system_time(
    mut tokens: Vec<TokenWithSpan>,
) -> Result<(Vec<TokenWithSpan>, Option<AsOf>)> {
    let sig = significant(&tokens);
    let mut depth = 0i32;
    let mut found: Option<(usize, usize, AsOf)> = None;
    for (n, &i) in sig.iter().enumerate() {
        match tokens[i].token {
            Token::LParen | Token::LBracket => depth += 1,
            Token::RParen | Token::RBracket => depth -= 1,
            _ => {}
        }
        let is_clause = depth == 0
            && ["as", "of", "system", "time"]
                .iter()
                .enumerate()
                .all(|(k, word)| {
                    sig.get(n + k)
                        .is_some_and(|&j| is_word(&tokens[j].token, word))
                });
        if !is_clause {
            continue;
        }
        if found.is_some() {
            return Err(SqlError::Syntax(
                "AS OF SYSTEM TIME specified more than once".into(),
            ));
        }
        let value_index = sig.get(n + 4).copied();
        let as_of = match value_index.map(|v| &tokens[v].token) {
            Some(Token::SingleQuotedString(s)) => parse_as_of(s)?,
            Some(Token::Number(s, _)) => parse_as_of(s)?,
            other => {
                return Err(SqlError::Syntax(format!(
                    "AS OF SYSTEM TIME expects a string literal such as '-10s' or \
                     '2026-01-01 00:00:00', or a number of nanoseconds; found {}",
                    other.map_or_else(|| "end of statement".to_string(), |t| t.to_string())
                )))
            }
        };
        found = value_index.map(|v| (i, v, as_of));
    }
    let Some((first, last, as_of)) = found else {
        return Ok((tokens, None));
    };
    // Keep one whitespace token so that the neighbours of the clause stay apart.
    tokens.splice(
        first..=last,
        [TokenWithSpan::wrap(Token::Whitespace(
            sqlparser::tokenizer::Whitespace::Space,
        ))],
    );
    Ok((tokens, Some(as_of)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn one(sql: &str) -> Statement {
        let mut statements = parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(statements.len(), 1, "{sql}");
        statements.remove(0)
    }

    #[test]
    fn as_of_system_time_is_cut_out_wherever_it_sits() {
        let ago = Some(AsOf::Ago(Duration::from_secs(10)));
        for sql in [
            "SELECT * FROM t AS OF SYSTEM TIME '-10s' WHERE k = 1",
            "select * from t as of system time '-10s' where k = 1",
            "SELECT * FROM t WHERE k = 1 AS OF SYSTEM TIME '-10s'",
            "SELECT * FROM t AS x AS OF SYSTEM TIME '-10s' WHERE k = 1",
            "SELECT * FROM t /* c */ AS  OF\nSYSTEM -- c\n TIME '-10s' WHERE k = 1;",
        ] {
            let Statement::Sql {
                statement, as_of, ..
            } = one(sql)
            else {
                panic!("{sql}: not SQL");
            };
            assert_eq!(as_of, ago, "{sql}");
            assert!(statement.to_string().contains("WHERE k = 1"), "{sql}");
            assert!(!statement.to_string().contains("SYSTEM"), "{sql}");
        }
        let Statement::Sql { as_of, .. } = one("SELECT 1 AS OF SYSTEM TIME 1795654800000000000")
        else {
            panic!("not SQL");
        };
        assert_eq!(as_of, Some(AsOf::At(1_795_654_800_000_000_000)));
    }

    #[test]
    fn as_of_system_time_inside_strings_and_identifiers_is_left_alone() {
        for sql in [
            "SELECT 'AS OF SYSTEM TIME ''-10s''' FROM t",
            "SELECT \"as\" FROM t",
            "SELECT $$ AS OF SYSTEM TIME '-1s' $$",
        ] {
            let Statement::Sql { as_of, .. } = one(sql) else {
                panic!("{sql}: not SQL");
            };
            assert_eq!(as_of, None, "{sql}");
        }
        // Only the top level is searched: inside parentheses it is left to sqlparser.
        assert!(parse("SELECT (1 AS OF SYSTEM TIME '-1s')").is_err());
    }

    #[test]
    fn malformed_as_of_system_time() {
        let code = |sql: &str| parse(sql).unwrap_err().sqlstate();
        assert_eq!(code("SELECT * FROM t AS OF SYSTEM TIME"), "42601");
        assert_eq!(code("SELECT * FROM t AS OF SYSTEM TIME now()"), "42601");
        assert_eq!(
            code("SELECT 1 AS OF SYSTEM TIME '-1s' AS OF SYSTEM TIME '-2s'"),
            "42601"
        );
        assert_eq!(code("SELECT * FROM t AS OF SYSTEM TIME 'soon'"), "22023");
        assert_eq!(code("SELECT * FROM t AS OF SYSTEM TIME '10s'"), "22023");
    }

    #[test]
    fn split_at() {
        let Statement::SplitAt { table, values } =
            one("alter table public.kv split at values (1), (5, 'a');")
        else {
            panic!("not SPLIT AT");
        };
        assert_eq!(table.to_string(), "public.kv");
        assert_eq!(values.rows.len(), 2);
        assert_eq!(
            one("ALTER TABLE \"T\" SPLIT AT VALUES (1)").to_string(),
            "ALTER TABLE \"T\" SPLIT AT VALUES (1)"
        );
        let code = |sql: &str| parse(sql).unwrap_err().sqlstate();
        assert_eq!(code("ALTER TABLE t SPLIT AT"), "42601");
        assert_eq!(code("ALTER TABLE t SPLIT AT VALUES (1) junk"), "42601");
        assert_eq!(code("ALTER TABLE SPLIT AT VALUES (1)"), "42601");
        assert_eq!(code("ALTER TABLE t SPLIT AT SELECT 1"), "0A000");
        // Other ALTER TABLEs still go to sqlparser.
        assert!(matches!(
            one("ALTER TABLE t ADD COLUMN c INT"),
            Statement::Sql { .. }
        ));
    }

    #[test]
    fn statements_split_at_semicolons_outside_literals() {
        let statements = parse("SELECT ';'; ; SELECT 2 -- ;\n").unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(parse("").unwrap(), Vec::new());
        assert_eq!(parse("SELECT 1 SELECT 2").unwrap_err().sqlstate(), "42601");
        assert_eq!(parse("SELECT 'open").unwrap_err().sqlstate(), "42601");
    }
}
