//! Limits on statement text, checked before sqlparser builds an AST, so that no statement can
//! exhaust a worker's stack or memory while it is parsed, bound, planned, evaluated or dropped.
//!
//! - [`MAX_STATEMENT_BYTES`]: longer text is refused with 54000 before it is tokenized.
//! - [`MAX_NESTING`]: a bound on how deep the statement's AST can be, computed from its tokens
//!   ([`nesting_bound`]); a deeper statement is refused with 54001 before it is parsed. The
//!   bound matters for operator chains such as `1+1+…+1`: sqlparser builds them without
//!   recursing, but as a tree as deep as the chain is long, and binding, evaluating and even
//!   dropping that tree recurse once per level.
//! - [`PARSER_RECURSION_LIMIT`]: sqlparser's own guard on its recursive descent (parentheses,
//!   prefix operators, subqueries); hitting it is also 54001.
//!
//! - [`DEFAULT_MAX_RESULT_BYTES`]: rows a statement reads into memory; more is 54000.
//! - [`deeper`]: every recursive walk over an expression (binding, evaluating, visiting,
//!   splitting conjuncts) runs through it, so a walk that nears the end of its thread's stack
//!   continues on a new heap-allocated segment instead of overflowing; the nesting limit then
//!   bounds the memory, not the stack.
//!
//! The bound over-counts (every operator in a comma-separated item counts, as if all of them
//! nested) and is meant never to under-count: every AST level below the statement's top comes
//! from a parenthesis, bracket, `CASE`, an operator between two items of one list element, or
//! a set operator (`UNION` …, counted across the whole group).

use sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Result, SqlError};

/// The most bytes of rows (as stored) one statement may read into memory, by default: results
/// are materialized before they are sent, so this bounds what one query can make a server hold.
/// `SET max_result_bytes` changes it for a session, up to [`MAX_RESULT_BYTES_LIMIT`].
pub const DEFAULT_MAX_RESULT_BYTES: usize = 256 << 20;

/// The most `max_result_bytes` may be set to.
pub const MAX_RESULT_BYTES_LIMIT: usize = 4 << 30;

/// The longest statement text accepted (1 MiB, Cloud Spanner's limit on a query's text).
pub const MAX_STATEMENT_BYTES: usize = 1 << 20;

/// The deepest AST [`nesting_bound`] may report.
pub const MAX_NESTING: usize = 2_000;

/// How deep sqlparser may recurse (its default is 50).
pub const PARSER_RECURSION_LIMIT: usize = 200;

/// AST levels one parenthesis (or bracket, or `CASE`) may add: a subquery in parentheses is a
/// `Subquery`, a `Query`, a `SetExpr` and a `Select` before its first expression.
const LEVELS_PER_PAREN: usize = 4;

/// Stack left below which [`deeper`] switches to a new segment.
const RED_ZONE: usize = 128 * 1024;
/// The size of each new stack segment.
const SEGMENT: usize = 2 * 1024 * 1024;

/// Runs `f`, on a fresh stack segment if this thread's stack is nearly used up. Every
/// recursive walk over an expression tree calls itself through this.
pub fn deeper<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(RED_ZONE, SEGMENT, f)
}

/// The error for a statement whose rows passed `limit` bytes (54000).
pub fn result_too_large(limit: usize) -> SqlError {
    SqlError::ProgramLimitExceeded(format!(
        "the statement read more than {limit} bytes of rows (max_result_bytes); add a LIMIT or \
         a narrower WHERE, or raise max_result_bytes"
    ))
}

/// Refuses text longer than [`MAX_STATEMENT_BYTES`] (54000).
pub fn check_text(sql: &str) -> Result<()> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(SqlError::ProgramLimitExceeded(format!(
            "statement text is {} bytes; the limit is {MAX_STATEMENT_BYTES}",
            sql.len()
        )));
    }
    Ok(())
}

/// Refuses a statement whose tokens allow an AST deeper than [`MAX_NESTING`] (54001).
pub fn check_nesting(tokens: &[TokenWithSpan]) -> Result<()> {
    let bound = nesting_bound(tokens.iter().map(|t| &t.token));
    if bound > MAX_NESTING {
        return Err(SqlError::StatementTooComplex(format!(
            "expressions nest up to {bound} levels deep; the limit is {MAX_NESTING}"
        )));
    }
    Ok(())
}

/// An upper bound on the depth of the AST the tokens of one statement parse into.
pub fn nesting_bound<'a>(tokens: impl Iterator<Item = &'a Token>) -> usize {
    let mut groups = vec![Group::default()];
    let mut deepest = 0usize;
    for token in tokens {
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => groups.push(Group::default()),
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("CASE") => {
                groups.push(Group::default())
            }
            Token::RParen | Token::RBracket | Token::RBrace => close(&mut groups),
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("END") => {
                close(&mut groups)
            }
            Token::Comma => top(&mut groups).operators = 0,
            // `a UNION b UNION c …` nests one level per operator, across the SELECTs.
            Token::Word(w) if w.quote_style.is_none() && is_set_operator(&w.value) => {
                top(&mut groups).set_operators += 1
            }
            Token::Word(w) if w.quote_style.is_none() && is_item_keyword(&w.value) => {
                top(&mut groups).operators = 0
            }
            Token::Word(w) if w.quote_style.is_none() && is_operator_keyword(&w.value) => {
                top(&mut groups).operators += 1
            }
            t if is_operator(t) => top(&mut groups).operators += 1,
            _ => {}
        }
        let depth = groups.iter().fold(0usize, |sum, g| {
            sum.saturating_add(g.operators)
                .saturating_add(g.set_operators)
                .saturating_add(LEVELS_PER_PAREN)
        });
        deepest = deepest.max(depth);
    }
    deepest
}

/// What one open group (the statement, a parenthesis, a `CASE`) has seen so far.
#[derive(Default)]
struct Group {
    /// Operators in its current list item.
    operators: usize,
    /// Set operators (`UNION` …) anywhere in it.
    set_operators: usize,
}

fn top(groups: &mut [Group]) -> &mut Group {
    // The statement's own group is never popped.
    let last = groups.len() - 1;
    &mut groups[last]
}

/// Closes the innermost group; an unbalanced close is sqlparser's error to report, not ours.
fn close(groups: &mut Vec<Group>) {
    if groups.len() > 1 {
        groups.pop();
    }
}

fn is_set_operator(word: &str) -> bool {
    ["UNION", "INTERSECT", "EXCEPT", "MINUS"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

/// Keywords that start a new, separately nested item of the enclosing group (a clause, or a
/// `CASE` arm): what follows them is a sibling of what came before, not a child.
fn is_item_keyword(word: &str) -> bool {
    const ITEMS: &[&str] = &[
        "SELECT",
        "FROM",
        "WHERE",
        "GROUP",
        "HAVING",
        "ORDER",
        "LIMIT",
        "OFFSET",
        "SET",
        "VALUES",
        "RETURNING",
        "WHEN",
        "THEN",
        "ELSE",
        "ON",
        "USING",
    ];
    ITEMS.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// Keywords that combine expressions into a deeper one.
fn is_operator_keyword(word: &str) -> bool {
    const OPERATORS: &[&str] = &[
        "AND", "OR", "NOT", "IS", "LIKE", "ILIKE", "SIMILAR", "IN", "BETWEEN", "COLLATE", "AT",
        "OVERLAPS", "ESCAPE", "ANY", "ALL", "SOME", "EXISTS", "JOIN",
    ];
    OPERATORS.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// Symbol tokens that are operators (everything but literals, names, punctuation, spaces).
fn is_operator(token: &Token) -> bool {
    !matches!(
        token,
        Token::EOF
            | Token::Word(_)
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Comma
            | Token::Whitespace(_)
            | Token::LParen
            | Token::RParen
            | Token::Period
            | Token::SemiColon
            | Token::LBracket
            | Token::RBracket
            | Token::LBrace
            | Token::RBrace
            | Token::Placeholder(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn bound(sql: &str) -> usize {
        let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize()
            .expect("tokenize");
        nesting_bound(tokens.iter())
    }

    #[test]
    fn chains_count_each_operator() {
        let chain = |n: usize| format!("SELECT {}", vec!["1"; n].join("+"));
        assert!(bound(&chain(10)) >= 9);
        assert!(bound(&chain(5_000)) > MAX_NESTING);
    }

    #[test]
    fn lists_and_clauses_do_not_add_up() {
        let values: Vec<String> = (0..10_000).map(|i| format!("({i}, -{i}, 'x')")).collect();
        let insert = format!("INSERT INTO t VALUES {}", values.join(", "));
        assert!(bound(&insert) < 20, "{}", bound(&insert));
        let in_list: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
        let select = format!(
            "SELECT a + 1, b FROM t WHERE a = 1 AND b IN ({}) ORDER BY a",
            in_list.join(",")
        );
        assert!(bound(&select) < 20, "{}", bound(&select));
    }

    #[test]
    fn parentheses_and_case_nest() {
        let nested = format!("SELECT {}1{}", "(".repeat(100), ")".repeat(100));
        assert!(bound(&nested) >= 100 * LEVELS_PER_PAREN);
        let cases = format!(
            "SELECT {} 1 {}",
            "CASE WHEN a THEN ".repeat(50),
            " END".repeat(50)
        );
        assert!(bound(&cases) >= 50);
    }

    #[test]
    fn set_operator_chains_nest() {
        let unions = vec!["SELECT 1"; 5_000].join(" UNION ");
        assert!(bound(&unions) > MAX_NESTING);
        let few = ["SELECT a + 1 FROM t"; 10].join(" UNION ALL ");
        assert!(bound(&few) < 20, "{}", bound(&few));
    }

    #[test]
    fn strings_and_unbalanced_closes_are_harmless() {
        assert!(bound("SELECT '+++++((((('") < 10);
        assert!(bound("SELECT 1)))) + 2") < 10);
    }

    #[test]
    fn long_text_is_refused_with_54000() {
        let text = "x".repeat(MAX_STATEMENT_BYTES + 1);
        let error = check_text(&text).expect_err("too long");
        assert_eq!(error.sqlstate(), "54000");
        assert!(check_text("SELECT 1").is_ok());
    }
}
