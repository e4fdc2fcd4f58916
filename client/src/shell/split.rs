//! Splitting shell input into statements.
//!
//! The shell sends one statement per simple-query round trip, so that each result is printed
//! under the statement that produced it and a failing statement does not take its neighbours
//! with it. [`split_statements`] cuts buffered input at every `;` that is outside a string
//! literal, a quoted identifier, a dollar-quoted string or a comment. It follows PostgreSQL's
//! lexical rules for those constructs:
//!
//! - `'…'` string literals, where `''` is an escaped quote; `E'…'` strings also treat `\` as an
//!   escape character;
//! - `"…"` quoted identifiers, where `""` is an escaped quote;
//! - `$tag$…$tag$` dollar-quoted strings (the tag may be empty; `$1` is a parameter, not a tag);
//! - `-- …` comments to the end of the line and nestable `/* … */` comments.
//!
//! The splitter is a lexer only: it never judges whether a statement is valid SQL, and it keeps
//! comments inside a statement (the server ignores them) while dropping the comments and
//! whitespace that lead a statement, so an input of only comments sends nothing.
//!
//! It is stateless on purpose. The interactive shell keeps the unfinished tail
//! ([`Split::rest`]) and scans it again with the next line appended; statements typed at a
//! terminal are short, so rescanning costs nothing that matters and keeps the lexer simple.

/// The result of scanning buffered input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// The complete statements, in input order: each was ended by a `;` outside quotes and
    /// comments. The `;` is not included, leading whitespace and comments are stripped, and
    /// empty statements (`;;`) are dropped.
    pub statements: Vec<String>,
    /// The unfinished text after the last statement-ending `;`, with leading whitespace and
    /// comments stripped but otherwise verbatim (it may end inside a string literal, whose
    /// trailing newline is content). Empty when nothing but whitespace and finished comments
    /// follows.
    pub rest: String,
}

/// Lexical state of the scanner: what the current byte is inside of.
enum State {
    /// Plain SQL text, where `;` ends a statement.
    Normal,
    /// A `'…'` string; `backslash_escapes` for the `E'…'` form.
    SingleQuoted { backslash_escapes: bool },
    /// A `"…"` quoted identifier.
    DoubleQuoted,
    /// A `$tag$…$tag$` string; `tag` includes both dollar signs.
    DollarQuoted { tag: String },
    /// A `--` comment, up to the end of the line.
    LineComment,
    /// A `/* … */` comment, which nests in PostgreSQL.
    BlockComment { depth: usize },
}

/// Splits `input` into complete statements and an unfinished rest. See the module docs for the
/// lexical rules.
///
/// Only ASCII bytes are ever compared, so slicing at the positions found is always on a UTF-8
/// character boundary.
pub fn split_statements(input: &str) -> Split {
    let bytes = input.as_bytes();
    let mut split = Split::default();
    let mut state = State::Normal;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let next = bytes.get(i + 1).copied();
        match &mut state {
            State::Normal => match bytes[i] {
                b';' => {
                    push_statement(&mut split.statements, &input[start..i]);
                    start = i + 1;
                    i += 1;
                }
                b'\'' => {
                    state = State::SingleQuoted {
                        backslash_escapes: is_escape_string_prefix(bytes, i),
                    };
                    i += 1;
                }
                b'"' => {
                    state = State::DoubleQuoted;
                    i += 1;
                }
                b'-' if next == Some(b'-') => {
                    state = State::LineComment;
                    i += 2;
                }
                b'/' if next == Some(b'*') => {
                    state = State::BlockComment { depth: 1 };
                    i += 2;
                }
                b'$' => match dollar_tag_len(bytes, i) {
                    Some(len) => {
                        state = State::DollarQuoted {
                            tag: input[i..i + len].to_string(),
                        };
                        i += len;
                    }
                    None => i += 1,
                },
                _ => i += 1,
            },
            State::SingleQuoted { backslash_escapes } => match bytes[i] {
                b'\\' if *backslash_escapes => i += 2,
                b'\'' if next == Some(b'\'') => i += 2,
                b'\'' => {
                    state = State::Normal;
                    i += 1;
                }
                _ => i += 1,
            },
            State::DoubleQuoted => match bytes[i] {
                b'"' if next == Some(b'"') => i += 2,
                b'"' => {
                    state = State::Normal;
                    i += 1;
                }
                _ => i += 1,
            },
            State::DollarQuoted { tag } => {
                if bytes[i..].starts_with(tag.as_bytes()) {
                    i += tag.len();
                    state = State::Normal;
                } else {
                    i += 1;
                }
            }
            State::LineComment => {
                if bytes[i] == b'\n' {
                    state = State::Normal;
                }
                i += 1;
            }
            State::BlockComment { depth } => {
                if bytes[i] == b'/' && next == Some(b'*') {
                    *depth += 1;
                    i += 2;
                } else if bytes[i] == b'*' && next == Some(b'/') {
                    *depth -= 1;
                    if *depth == 0 {
                        state = State::Normal;
                    }
                    i += 2;
                } else {
                    i += 1;
                }
            }
        }
    }
    // A `\` escape or a doubled quote at the very end may step past the input.
    let rest = &input[start.min(input.len())..];
    split.rest = strip_leading_trivia(rest).to_string();
    split
}

/// Appends `raw` to `statements` unless it holds nothing but whitespace and comments.
fn push_statement(statements: &mut Vec<String>, raw: &str) {
    let statement = strip_leading_trivia(raw).trim_end();
    if !statement.is_empty() {
        statements.push(statement.to_string());
    }
}

/// Strips the whitespace and finished comments that lead `text`. An unterminated block comment
/// is kept, so that the caller sees unfinished input.
fn strip_leading_trivia(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if let Some(comment) = text.strip_prefix("--") {
            text = match comment.find('\n') {
                Some(end) => &comment[end + 1..],
                None => "",
            };
        } else if text.starts_with("/*") {
            match block_comment_len(text.as_bytes()) {
                Some(len) => text = &text[len..],
                None => return text,
            }
        } else {
            return text;
        }
    }
}

/// The length of the (possibly nested) block comment at the start of `bytes`, or `None` if it
/// is not terminated.
fn block_comment_len(bytes: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if bytes[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// Whether the byte can continue an identifier (PostgreSQL also allows `$` after the first
/// character). Non-ASCII bytes count, as PostgreSQL accepts them in identifiers.
fn is_identifier_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

/// Whether the quote at `quote` opens an `E'…'` string: it follows an `E` that does not itself
/// end a longer identifier.
fn is_escape_string_prefix(bytes: &[u8], quote: usize) -> bool {
    quote >= 1
        && matches!(bytes[quote - 1], b'E' | b'e')
        && (quote < 2 || !is_identifier_byte(bytes[quote - 2]))
}

/// If a dollar-quote tag (`$$` or `$tag$`) starts at `dollar`, its length including both
/// dollar signs. A `$` that continues an identifier, or a parameter such as `$1`, is not one.
fn dollar_tag_len(bytes: &[u8], dollar: usize) -> Option<usize> {
    if dollar > 0 && is_identifier_byte(bytes[dollar - 1]) {
        return None;
    }
    let mut end = dollar + 1;
    while let Some(&byte) = bytes.get(end) {
        match byte {
            b'$' => return Some(end - dollar + 1),
            b'0'..=b'9' if end == dollar + 1 => return None,
            _ if byte.is_ascii_alphanumeric() || byte == b'_' || byte >= 0x80 => end += 1,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(input: &str) -> Vec<String> {
        split_statements(input).statements
    }

    #[test]
    fn splits_several_statements_on_one_line() {
        let split = split_statements("SELECT 1; SELECT 2;SELECT 3 ;");
        assert_eq!(split.statements, ["SELECT 1", "SELECT 2", "SELECT 3"]);
        assert_eq!(split.rest, "");
    }

    #[test]
    fn keeps_unterminated_tail_as_rest() {
        let split = split_statements("SELECT 1; SELECT\n  2");
        assert_eq!(split.statements, ["SELECT 1"]);
        assert_eq!(split.rest, "SELECT\n  2");
    }

    #[test]
    fn statement_spans_lines() {
        assert_eq!(
            statements("SELECT *\nFROM t\nWHERE id = 1;\n"),
            ["SELECT *\nFROM t\nWHERE id = 1"]
        );
    }

    #[test]
    fn drops_empty_statements() {
        assert_eq!(statements(";; ;\n; SELECT 1;;"), ["SELECT 1"]);
    }

    #[test]
    fn semicolon_inside_string_does_not_split() {
        assert_eq!(
            statements("INSERT INTO t VALUES ('a;b'); SELECT 1;"),
            ["INSERT INTO t VALUES ('a;b')", "SELECT 1"]
        );
    }

    #[test]
    fn doubled_quote_is_an_escape() {
        assert_eq!(
            statements("SELECT 'it''s; fine'; SELECT '';"),
            ["SELECT 'it''s; fine'", "SELECT ''"]
        );
    }

    #[test]
    fn unterminated_string_keeps_input_open() {
        let split = split_statements("SELECT 'abc;\n");
        assert!(split.statements.is_empty());
        assert_eq!(split.rest, "SELECT 'abc;\n");
    }

    #[test]
    fn escape_string_allows_backslash_quote() {
        assert_eq!(
            statements(r"SELECT E'a\';b'; SELECT 2;"),
            [r"SELECT E'a\';b'", "SELECT 2"]
        );
        // Outside an E'' string a backslash is an ordinary character.
        assert_eq!(
            statements(r"SELECT 'a\'; SELECT 2;"),
            [r"SELECT 'a\'", "SELECT 2"]
        );
        // An identifier ending in `e` is not an escape prefix.
        assert_eq!(
            statements(r"SELECT name'\'; SELECT 2;"),
            [r"SELECT name'\'", "SELECT 2"]
        );
    }

    #[test]
    fn quoted_identifier_may_hold_semicolon_and_quotes() {
        assert_eq!(
            statements(r#"SELECT "a;""b" FROM t; SELECT 2;"#),
            [r#"SELECT "a;""b" FROM t"#, "SELECT 2"]
        );
    }

    #[test]
    fn line_comment_hides_semicolon() {
        let split = split_statements("SELECT 1 -- not here; \n + 1; SELECT 2;");
        assert_eq!(
            split.statements,
            ["SELECT 1 -- not here; \n + 1", "SELECT 2"]
        );
    }

    #[test]
    fn leading_comments_are_stripped_and_comment_only_input_is_empty() {
        let split = split_statements("-- a comment\n/* another */ SELECT 1; -- trailing\n");
        assert_eq!(split.statements, ["SELECT 1"]);
        assert_eq!(split.rest, "");
        assert_eq!(
            split_statements("-- only a comment; really\n"),
            Split::default()
        );
    }

    #[test]
    fn block_comments_nest() {
        let split = split_statements("/* outer /* inner; */ still; */ SELECT 1;");
        assert_eq!(split.statements, ["SELECT 1"]);
        let open = split_statements("/* unterminated; ");
        assert!(open.statements.is_empty());
        assert_eq!(open.rest, "/* unterminated; ");
    }

    #[test]
    fn dollar_quoted_strings() {
        assert_eq!(
            statements("SELECT $$a;b$$; SELECT $tag$ $$; $tag$; SELECT 3;"),
            ["SELECT $$a;b$$", "SELECT $tag$ $$; $tag$", "SELECT 3"]
        );
        let open = split_statements("SELECT $x$ ; ");
        assert!(open.statements.is_empty());
        assert_eq!(open.rest, "SELECT $x$ ; ");
    }

    #[test]
    fn parameters_are_not_dollar_quotes() {
        assert_eq!(
            statements("SELECT * FROM t WHERE a = $1 AND b = $2; SELECT 2;"),
            ["SELECT * FROM t WHERE a = $1 AND b = $2", "SELECT 2"]
        );
    }

    #[test]
    fn non_ascii_text_is_kept_intact() {
        assert_eq!(
            statements("INSERT INTO t VALUES ('café; ☕'); SELECT 'ü';"),
            ["INSERT INTO t VALUES ('café; ☕')", "SELECT 'ü'"]
        );
    }

    #[test]
    fn rescanning_a_growing_buffer_finds_the_statement_once_finished() {
        let mut buffer = String::new();
        let mut found = Vec::new();
        for line in ["SELECT 'multi", "line;'", "FROM t; SELECT", "2;"] {
            buffer.push_str(line);
            buffer.push('\n');
            let split = split_statements(&buffer);
            found.extend(split.statements);
            buffer = split.rest;
        }
        assert_eq!(found, ["SELECT 'multi\nline;'\nFROM t", "SELECT\n2"]);
        assert_eq!(buffer, "");
    }
}
