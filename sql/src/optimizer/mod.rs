//! Optimizer rules: rewrites of the logical plan that keep its result and schema.
//!
//! Rules run in order, each a function from plan to plan, one per file:
//!
//! 1. [`pushdown_filter`]: a `Filter` directly over a `Scan` becomes the scan's filter, so the
//!    scan can see the predicate.
//! 2. [`key_bounds`]: from a scan's filter, derive the primary-key range to read: equality on
//!    all key columns is a point read; equality on a key prefix and/or a range on the next key
//!    column is a bounded scan; anything else reads the whole table.
//!
//! The filter always stays on the scan after rule 2: key bounds only narrow what is read, so a
//! rule that derives bounds too loosely costs time, never correctness.
//!
//! LIMIT is not a rule: the executor passes a row budget down through operators that preserve
//! row counts (project, filter in the scan) so a scan stops early when no sort or aggregate
//! sits in between.

pub mod key_bounds;
pub mod pushdown_filter;

use crate::plan::Plan;

/// Applies every rule, in order.
pub fn optimize(plan: Plan) -> Plan {
    let plan = pushdown_filter::apply(plan);
    key_bounds::apply(plan)
}
