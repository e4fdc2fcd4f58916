//! The logical plan: a tree of relational operators the binder builds, the optimizer rules
//! ([`crate::optimizer`]) rewrite, and the executor ([`crate::executor`]) runs.
//!
//! Each node produces rows; column references in a node's expressions are positions in its
//! input's rows. A table scan produces the table's full rows in column order (hidden row id
//! included), so expressions bound against a table index straight into them.
//!
//! Plans hold expressions, not values: parameters stay symbolic (`ScalarExpr::Param`) and key
//! bounds are expressions evaluated when the scan starts, so a plan does not depend on the
//! parameter values it runs with.

use std::sync::Arc;

use crate::catalog::TableDesc;
use crate::expr::{AggCall, ScalarExpr};
use crate::types::DataType;

/// The part of a table's primary index a scan reads, as expressions over parameters and
/// literals. Empty bounds mean the whole table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyBounds {
    /// Values of a prefix of the primary key columns (`pk[i] = eq[i]`).
    pub eq: Vec<ScalarExpr>,
    /// A lower bound on the next key column: (value, inclusive).
    pub lower: Option<(ScalarExpr, bool)>,
    /// An upper bound on the next key column: (value, inclusive).
    pub upper: Option<(ScalarExpr, bool)>,
}

impl KeyBounds {
    /// Whether the bounds pin every primary key column, making the scan a point read.
    pub fn is_point(&self, table: &TableDesc) -> bool {
        self.eq.len() == table.primary_key.len() && self.lower.is_none() && self.upper.is_none()
    }
}

/// One ORDER BY key: an expression over the input row.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// The value sorted on.
    pub expr: ScalarExpr,
    /// Descending order.
    pub desc: bool,
    /// NULLs before non-NULLs (PostgreSQL's default is NULLS LAST for ASC, FIRST for DESC).
    pub nulls_first: bool,
}

/// A relational operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Constant rows (a SELECT without FROM is one empty row).
    Values {
        /// The rows.
        rows: Vec<Vec<ScalarExpr>>,
    },
    /// Reads the table's rows within `bounds`, keeping those where `filter` is true.
    Scan {
        /// The table.
        table: Arc<TableDesc>,
        /// The key range read.
        bounds: KeyBounds,
        /// A predicate applied to every row read (the whole WHERE clause: key bounds only
        /// narrow what is read, they never replace the check).
        filter: Option<ScalarExpr>,
    },
    /// Keeps the input rows where `predicate` is true.
    Filter {
        /// Input.
        input: Box<Plan>,
        /// Predicate.
        predicate: ScalarExpr,
    },
    /// Groups the input by `group_by` and computes `aggregates` per group; output rows are the
    /// group values followed by the aggregate results. With no GROUP BY there is exactly one
    /// group, even for empty input.
    Aggregate {
        /// Input.
        input: Box<Plan>,
        /// Grouping expressions.
        group_by: Vec<ScalarExpr>,
        /// Aggregates.
        aggregates: Vec<AggCall>,
    },
    /// Computes `exprs` for each input row.
    Project {
        /// Input.
        input: Box<Plan>,
        /// Output expressions.
        exprs: Vec<ScalarExpr>,
    },
    /// Removes duplicate rows, keeping the first of each.
    Distinct {
        /// Input.
        input: Box<Plan>,
    },
    /// Sorts the input (stable).
    Sort {
        /// Input.
        input: Box<Plan>,
        /// Keys, most significant first.
        keys: Vec<SortKey>,
    },
    /// Skips `offset` rows then returns at most `limit` rows.
    Limit {
        /// Input.
        input: Box<Plan>,
        /// Maximum row count (an integer expression over parameters and literals).
        limit: Option<ScalarExpr>,
        /// Rows skipped first.
        offset: Option<ScalarExpr>,
    },
    /// Inserts the source rows; `columns[i]` is the table position the source's column `i`
    /// goes to (unlisted columns are NULL, or a generated value for the hidden row id).
    Insert {
        /// The table.
        table: Arc<TableDesc>,
        /// Target positions of the source columns.
        columns: Vec<usize>,
        /// Types of the source columns (converted to the column types on insert).
        source_types: Vec<DataType>,
        /// The rows to insert.
        source: Box<Plan>,
        /// RETURNING expressions over the inserted row.
        returning: Option<Vec<ScalarExpr>>,
    },
    /// Updates the source's rows (full table rows, from a scan).
    Update {
        /// The table.
        table: Arc<TableDesc>,
        /// The rows to update.
        source: Box<Plan>,
        /// (column position, new value over the old row).
        assignments: Vec<(usize, ScalarExpr)>,
        /// RETURNING expressions over the new row.
        returning: Option<Vec<ScalarExpr>>,
    },
    /// Deletes the source's rows (full table rows, from a scan).
    Delete {
        /// The table.
        table: Arc<TableDesc>,
        /// The rows to delete.
        source: Box<Plan>,
        /// RETURNING expressions over the deleted row.
        returning: Option<Vec<ScalarExpr>>,
    },
}

impl Plan {
    /// Rebuilds the plan with `f` applied to each direct child plan.
    pub fn map_inputs(self, f: &mut impl FnMut(Plan) -> Plan) -> Plan {
        let mut b = |p: Box<Plan>| Box::new(f(*p));
        match self {
            p @ (Plan::Values { .. } | Plan::Scan { .. }) => p,
            Plan::Filter { input, predicate } => Plan::Filter {
                input: b(input),
                predicate,
            },
            Plan::Aggregate {
                input,
                group_by,
                aggregates,
            } => Plan::Aggregate {
                input: b(input),
                group_by,
                aggregates,
            },
            Plan::Project { input, exprs } => Plan::Project {
                input: b(input),
                exprs,
            },
            Plan::Distinct { input } => Plan::Distinct { input: b(input) },
            Plan::Sort { input, keys } => Plan::Sort {
                input: b(input),
                keys,
            },
            Plan::Limit {
                input,
                limit,
                offset,
            } => Plan::Limit {
                input: b(input),
                limit,
                offset,
            },
            Plan::Insert {
                table,
                columns,
                source_types,
                source,
                returning,
            } => Plan::Insert {
                table,
                columns,
                source_types,
                source: b(source),
                returning,
            },
            Plan::Update {
                table,
                source,
                assignments,
                returning,
            } => Plan::Update {
                table,
                source: b(source),
                assignments,
                returning,
            },
            Plan::Delete {
                table,
                source,
                returning,
            } => Plan::Delete {
                table,
                source: b(source),
                returning,
            },
        }
    }
}

/// A column of a statement's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputColumn {
    /// Column name as clients see it.
    pub name: String,
    /// Column type.
    pub data_type: DataType,
}

impl OutputColumn {
    /// A column called `name` of type `data_type`.
    pub fn new(name: impl Into<String>, data_type: DataType) -> OutputColumn {
        OutputColumn {
            name: name.into(),
            data_type,
        }
    }
}
