//! Rule: derive a scan's primary-key bounds from its filter.
//!
//! The filter is split into its top-level AND terms; a term `pk_col op constant` (either way
//! round, `constant` free of column references so it can be evaluated before the scan) is
//! usable when the constant's type encodes like the column (integers for integer columns, any
//! number for float columns, strings for string columns, ...). Walking the key columns in
//! order, an equality extends the pinned prefix; the first column without one may take a lower
//! and an upper bound, and the walk stops there.

use crate::catalog::TableDesc;
use crate::expr::{CmpOp, ScalarExpr};
use crate::plan::{KeyBounds, Plan};
use crate::types::{DataType, TypeFamily};

/// Derives key bounds for every scan with a filter and no bounds yet.
pub fn apply(plan: Plan) -> Plan {
    let plan = plan.map_inputs(&mut apply);
    match plan {
        Plan::Scan {
            table,
            bounds,
            filter: Some(filter),
        } if bounds == KeyBounds::default() => {
            let bounds = derive(&table, &filter);
            Plan::Scan {
                table,
                bounds,
                filter: Some(filter),
            }
        }
        other => other,
    }
}

fn conjuncts<'e>(e: &'e ScalarExpr, out: &mut Vec<&'e ScalarExpr>) {
    crate::limits::deeper(|| conjuncts_here(e, out))
}

fn conjuncts_here<'e>(e: &'e ScalarExpr, out: &mut Vec<&'e ScalarExpr>) {
    match e {
        ScalarExpr::And(a, b) => {
            conjuncts(a, out);
            conjuncts(b, out);
        }
        other => out.push(other),
    }
}

/// `column op constant`, normalized so the column is on the left.
fn key_comparison(e: &ScalarExpr) -> Option<(usize, CmpOp, &ScalarExpr)> {
    let ScalarExpr::Compare(op, a, b) = e else {
        return None;
    };
    match (a.as_ref(), b.as_ref()) {
        (ScalarExpr::Column { index, .. }, value) if value.is_constant() => {
            Some((*index, *op, value))
        }
        (value, ScalarExpr::Column { index, .. }) if value.is_constant() => {
            Some((*index, op.flip(), value))
        }
        _ => None,
    }
}

/// Whether a constant of `value`'s type can be encoded exactly as a key of `column` type.
fn usable(column: DataType, value: &ScalarExpr) -> bool {
    let value = value.data_type();
    match column.family() {
        TypeFamily::Numeric if column.is_integer() => value.is_integer(),
        family => value.family() == family,
    }
}

/// The key bounds `filter` implies for `table`'s primary key.
pub fn derive(table: &TableDesc, filter: &ScalarExpr) -> KeyBounds {
    let mut terms = Vec::new();
    conjuncts(filter, &mut terms);
    let comparisons: Vec<_> = terms.into_iter().filter_map(key_comparison).collect();
    let mut bounds = KeyBounds::default();
    for &column in &table.primary_key {
        let Some(ty) = table.columns.get(column).map(|c| c.data_type) else {
            break;
        };
        let find = |ops: &[CmpOp]| {
            comparisons
                .iter()
                .find(|(c, op, v)| *c == column && ops.contains(op) && usable(ty, v))
        };
        if let Some((_, _, value)) = find(&[CmpOp::Eq]) {
            bounds.eq.push((*value).clone());
            continue;
        }
        bounds.lower =
            find(&[CmpOp::Gt, CmpOp::GtEq]).map(|(_, op, v)| ((*v).clone(), *op == CmpOp::GtEq));
        bounds.upper =
            find(&[CmpOp::Lt, CmpOp::LtEq]).map(|(_, op, v)| ((*v).clone(), *op == CmpOp::LtEq));
        break;
    }
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ColumnDesc;
    use crate::types::Datum;

    fn table() -> TableDesc {
        let column = |id: u32, name: &str, data_type| ColumnDesc {
            id,
            name: name.into(),
            data_type,
            nullable: false,
            hidden: false,
        };
        TableDesc {
            id: 100,
            name: "t".into(),
            columns: vec![
                column(1, "a", DataType::Int4),
                column(2, "b", DataType::Text),
                column(3, "c", DataType::Int8),
            ],
            primary_key: vec![0, 1],
            next_column_id: 4,
        }
    }

    fn col(index: usize, ty: DataType) -> Box<ScalarExpr> {
        Box::new(ScalarExpr::Column {
            index,
            ty,
            name: String::new(),
        })
    }

    fn int(v: i64) -> Box<ScalarExpr> {
        Box::new(ScalarExpr::Literal(Datum::Int(v), DataType::Int4))
    }

    fn text(v: &str) -> Box<ScalarExpr> {
        Box::new(ScalarExpr::Literal(Datum::Text(v.into()), DataType::Text))
    }

    #[test]
    fn full_key_equality_is_a_point() {
        let t = table();
        let filter = ScalarExpr::And(
            Box::new(ScalarExpr::Compare(
                CmpOp::Eq,
                int(1),
                col(0, DataType::Int4),
            )),
            Box::new(ScalarExpr::Compare(
                CmpOp::Eq,
                col(1, DataType::Text),
                text("x"),
            )),
        );
        let bounds = derive(&t, &filter);
        assert!(bounds.is_point(&t));
        assert_eq!(bounds.eq.len(), 2);
    }

    #[test]
    fn prefix_and_range() {
        let t = table();
        let filter = ScalarExpr::And(
            Box::new(ScalarExpr::Compare(
                CmpOp::Eq,
                col(0, DataType::Int4),
                int(1),
            )),
            Box::new(ScalarExpr::Compare(
                CmpOp::Lt,
                text("m"),
                col(1, DataType::Text),
            )),
        );
        let bounds = derive(&t, &filter);
        assert_eq!(bounds.eq.len(), 1);
        assert_eq!(bounds.lower, Some((*text("m"), false)));
        assert_eq!(bounds.upper, None);
        assert!(!bounds.is_point(&t));
    }

    #[test]
    fn non_key_and_or_predicates_give_full_scan() {
        let t = table();
        let on_c = ScalarExpr::Compare(CmpOp::Eq, col(2, DataType::Int8), int(1));
        assert_eq!(derive(&t, &on_c), KeyBounds::default());
        let or = ScalarExpr::Or(
            Box::new(ScalarExpr::Compare(
                CmpOp::Eq,
                col(0, DataType::Int4),
                int(1),
            )),
            Box::new(ScalarExpr::Compare(
                CmpOp::Eq,
                col(0, DataType::Int4),
                int(2),
            )),
        );
        assert_eq!(derive(&t, &or), KeyBounds::default());
        // A float constant cannot bound an integer key exactly.
        let float = ScalarExpr::Compare(
            CmpOp::Gt,
            col(0, DataType::Int4),
            Box::new(ScalarExpr::Literal(Datum::Float(1.5), DataType::Float8)),
        );
        assert_eq!(derive(&t, &float), KeyBounds::default());
    }
}
