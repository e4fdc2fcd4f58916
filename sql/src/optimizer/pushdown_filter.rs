//! Rule: merge a `Filter` into the `Scan` below it.

use crate::expr::ScalarExpr;
use crate::plan::Plan;

/// Rewrites `Filter(Scan)` into a `Scan` carrying the predicate, everywhere in the plan.
pub fn apply(plan: Plan) -> Plan {
    let plan = plan.map_inputs(&mut apply);
    match plan {
        Plan::Filter { input, predicate } => match *input {
            Plan::Scan {
                table,
                bounds,
                filter,
            } => {
                let filter = Some(match filter {
                    Some(existing) => ScalarExpr::And(Box::new(existing), Box::new(predicate)),
                    None => predicate,
                });
                Plan::Scan {
                    table,
                    bounds,
                    filter,
                }
            }
            other => Plan::Filter {
                input: Box::new(other),
                predicate,
            },
        },
        other => other,
    }
}
