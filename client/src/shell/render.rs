//! Turning statement results into the text the shell prints.
//!
//! Everything here is a pure function from results to strings, so the output format is unit
//! tested without a server. The format follows `psql`: a minimal table (header, a separator,
//! rows; no outer borders), numeric columns aligned right, then `(N rows)`; statements without
//! rows print their command tag, such as `INSERT 0 3`. `NULL` is spelled out, unlike `psql`, so
//! that it cannot be mistaken for an empty string.
//!
//! The command tag is derived from the statement text and the affected-row count, because
//! tokio-postgres 0.7's simple-query API reports only the count, not the tag the server sent.

use std::time::Duration;

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use tokio_postgres::SimpleQueryMessage;

/// A `psql`-like comfy-table preset: spaces for every border, `|` between columns, and a `-`
/// line with `+` crossings under the header. Its positions follow comfy-table's
/// `TableComponent` order.
const PSQL_STYLE: &str = "     -+ |          ";

/// One row as the simple query protocol returns it: a text value per column, `None` for NULL.
pub type TextRow = Vec<Option<String>>;

/// What one statement produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A statement that returned rows (even zero of them), such as `SELECT` or `SHOW`.
    Rows {
        /// The column names, in order.
        columns: Vec<String>,
        /// The rows, in the order the server sent them.
        rows: Vec<TextRow>,
    },
    /// A statement that returned no rows; `tag` is its command tag, such as `INSERT 0 3`.
    Command {
        /// The command tag to print.
        tag: String,
    },
}

impl Outcome {
    /// Renders the outcome as `psql` would print it, without a trailing newline.
    pub fn render(&self) -> String {
        match self {
            Outcome::Rows { columns, rows } => {
                let mut text = render_table(columns, rows);
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&row_count_line(rows.len()));
                text
            }
            Outcome::Command { tag } => tag.clone(),
        }
    }
}

/// Collects the messages of one simple-query round trip into outcomes, one per statement the
/// server ran. `statement` is the text that was sent, used to name the command tags.
pub fn outcomes_from_messages(statement: &str, messages: Vec<SimpleQueryMessage>) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut pending: Option<(Vec<String>, Vec<TextRow>)> = None;
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                let names = columns.iter().map(|c| c.name().to_string()).collect();
                pending = Some((names, Vec::new()));
            }
            SimpleQueryMessage::Row(row) => {
                let (_, rows) = pending.get_or_insert_with(|| {
                    let names = row.columns().iter().map(|c| c.name().to_string()).collect();
                    (names, Vec::new())
                });
                let values = (0..row.len())
                    .map(|i| match row.try_get(i) {
                        Ok(value) => value.map(str::to_string),
                        Err(error) => Some(format!("<unreadable value: {error}>")),
                    })
                    .collect();
                rows.push(values);
            }
            SimpleQueryMessage::CommandComplete(count) => match pending.take() {
                Some((columns, rows)) => outcomes.push(Outcome::Rows { columns, rows }),
                None => outcomes.push(Outcome::Command {
                    tag: command_tag(statement, count),
                }),
            },
            // The enum is non-exhaustive; later versions may add messages the shell can skip.
            _ => {}
        }
    }
    if let Some((columns, rows)) = pending {
        outcomes.push(Outcome::Rows { columns, rows });
    }
    outcomes
}

/// Renders rows as a `psql`-style table without a trailing newline. Columns whose non-NULL
/// values are all numbers are aligned right, the rest left; headers are centred. A result with
/// no columns renders as the empty string.
pub fn render_table(columns: &[String], rows: &[TextRow]) -> String {
    if columns.is_empty() {
        return String::new();
    }
    let mut table = Table::new();
    table
        .load_preset(PSQL_STYLE)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(
            columns
                .iter()
                .map(|name| Cell::new(name).set_alignment(CellAlignment::Center)),
        );
    for row in rows {
        table.add_row(row.iter().map(|value| value.as_deref().unwrap_or("NULL")));
    }
    for (index, column) in table.column_iter_mut().enumerate() {
        if is_numeric_column(rows, index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.trim_fmt()
}

/// Whether the column holds at least one value and every non-NULL value parses as a number.
fn is_numeric_column(rows: &[TextRow], index: usize) -> bool {
    let mut values = rows
        .iter()
        .filter_map(|row| row.get(index).and_then(Option::as_deref))
        .peekable();
    values.peek().is_some() && values.all(|value| value.trim().parse::<f64>().is_ok())
}

/// The `(N rows)` footer, with `psql`'s singular for one row.
pub fn row_count_line(rows: usize) -> String {
    if rows == 1 {
        "(1 row)".to_string()
    } else {
        format!("({rows} rows)")
    }
}

/// The `Time: 3.2 ms` line printed after every statement.
pub fn elapsed_line(elapsed: Duration) -> String {
    format!("Time: {:.1} ms", elapsed.as_secs_f64() * 1000.0)
}

/// Derives the command tag PostgreSQL would send for `statement`, which affected `rows` rows.
///
/// Data-changing commands carry the count (`INSERT 0 3`, `UPDATE 2`, `DELETE 1`); DDL is named
/// by its verb and object (`CREATE TABLE`, `DROP INDEX`); transaction control uses the
/// canonical verb (`START TRANSACTION` is `BEGIN`, `END` is `COMMIT`); anything else is its
/// first keyword, with the count when it is not zero.
pub fn command_tag(statement: &str, rows: u64) -> String {
    let words: Vec<String> = statement
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .filter(|word| !word.is_empty())
        .take(6)
        .map(str::to_ascii_uppercase)
        .collect();
    let Some(verb) = words.first() else {
        return String::new();
    };
    match verb.as_str() {
        "INSERT" => format!("INSERT 0 {rows}"),
        "UPDATE" | "DELETE" | "SELECT" | "MERGE" | "MOVE" | "FETCH" | "COPY" => {
            format!("{verb} {rows}")
        }
        "CREATE" | "DROP" | "ALTER" => {
            const MODIFIERS: [&str; 6] =
                ["OR", "REPLACE", "UNIQUE", "TEMP", "TEMPORARY", "UNLOGGED"];
            let mut object = words[1..]
                .iter()
                .skip_while(|word| MODIFIERS.contains(&word.as_str()));
            match object.next() {
                Some(first) if first == "MATERIALIZED" => match object.next() {
                    Some(second) => format!("{verb} {first} {second}"),
                    None => format!("{verb} {first}"),
                },
                Some(first) => format!("{verb} {first}"),
                None => verb.clone(),
            }
        }
        "BEGIN" | "START" => "BEGIN".to_string(),
        "COMMIT" | "END" => "COMMIT".to_string(),
        "ROLLBACK" | "ABORT" => "ROLLBACK".to_string(),
        _ if rows > 0 => format!("{verb} {rows}"),
        _ => verb.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    fn row(values: &[Option<&str>]) -> TextRow {
        values
            .iter()
            .map(|value| value.map(str::to_string))
            .collect()
    }

    #[test]
    fn table_has_header_separator_and_aligned_rows() {
        let table = render_table(
            &names(&["id", "owner", "balance"]),
            &[
                row(&[Some("1"), Some("alice"), Some("100")]),
                row(&[Some("22"), Some("bob"), Some("2500")]),
            ],
        );
        let expected = [
            " id | owner | balance",
            "----+-------+---------",
            "  1 | alice |     100",
            " 22 | bob   |    2500",
        ]
        .join("\n");
        assert_eq!(table, expected);
    }

    #[test]
    fn null_is_spelled_out_and_does_not_make_a_column_textual() {
        let table = render_table(
            &names(&["n", "s"]),
            &[row(&[None, None]), row(&[Some("10"), Some("x")])],
        );
        let expected = ["   n  |   s", "------+------", " NULL | NULL", "   10 | x"].join("\n");
        assert_eq!(table, expected);
    }

    #[test]
    fn empty_result_keeps_the_header() {
        let outcome = Outcome::Rows {
            columns: names(&["table_name"]),
            rows: Vec::new(),
        };
        assert_eq!(
            outcome.render(),
            [" table_name", "------------", "(0 rows)"].join("\n")
        );
    }

    #[test]
    fn row_count_uses_singular_for_one_row() {
        assert_eq!(row_count_line(0), "(0 rows)");
        assert_eq!(row_count_line(1), "(1 row)");
        assert_eq!(row_count_line(3), "(3 rows)");
        let outcome = Outcome::Rows {
            columns: names(&["?column?"]),
            rows: vec![row(&[Some("1")])],
        };
        assert_eq!(
            outcome.render(),
            [" ?column?", "----------", "        1", "(1 row)"].join("\n")
        );
    }

    #[test]
    fn multi_line_values_stay_inside_their_cell() {
        let table = render_table(&names(&["note"]), &[row(&[Some("a\nbc")])]);
        assert_eq!(table, [" note", "------", " a", " bc"].join("\n"));
    }

    #[test]
    fn no_columns_renders_nothing_but_the_count() {
        let outcome = Outcome::Rows {
            columns: Vec::new(),
            rows: vec![Vec::new()],
        };
        assert_eq!(outcome.render(), "(1 row)");
    }

    #[test]
    fn command_tags_follow_postgres() {
        assert_eq!(
            command_tag("INSERT INTO t VALUES (1), (2)", 2),
            "INSERT 0 2"
        );
        assert_eq!(command_tag("update t set a = 1", 5), "UPDATE 5");
        assert_eq!(command_tag("DELETE FROM t", 0), "DELETE 0");
        assert_eq!(
            command_tag("CREATE TABLE t (id INT8 PRIMARY KEY)", 0),
            "CREATE TABLE"
        );
        assert_eq!(
            command_tag("create unique index i on t(a)", 0),
            "CREATE INDEX"
        );
        assert_eq!(
            command_tag("CREATE OR REPLACE VIEW v AS SELECT 1", 0),
            "CREATE VIEW"
        );
        assert_eq!(
            command_tag("CREATE MATERIALIZED VIEW m AS SELECT 1", 0),
            "CREATE MATERIALIZED VIEW"
        );
        assert_eq!(command_tag("DROP TABLE t", 0), "DROP TABLE");
        assert_eq!(
            command_tag("ALTER TABLE t ADD COLUMN b INT8", 0),
            "ALTER TABLE"
        );
        assert_eq!(command_tag("START TRANSACTION", 0), "BEGIN");
        assert_eq!(command_tag("begin read only", 0), "BEGIN");
        assert_eq!(command_tag("END", 0), "COMMIT");
        assert_eq!(command_tag("ABORT", 0), "ROLLBACK");
        assert_eq!(command_tag("SET application_name = 'x'", 0), "SET");
        assert_eq!(command_tag("TRUNCATE t", 0), "TRUNCATE");
    }

    #[test]
    fn elapsed_is_in_milliseconds() {
        assert_eq!(elapsed_line(Duration::from_micros(3_240)), "Time: 3.2 ms");
        assert_eq!(elapsed_line(Duration::from_secs(2)), "Time: 2000.0 ms");
    }
}
