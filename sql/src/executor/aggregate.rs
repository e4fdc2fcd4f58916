//! Hash aggregation.
//!
//! Groups are keyed by the tagged encoding of their values ([`encode_group_key`]) and kept in
//! first-seen order. Integer sums accumulate in `i128` and are range-checked at the end (sum of
//! any integer type is BIGINT; overflow is 22003); AVG is computed in floating point.

use std::collections::{HashMap, HashSet};

use crate::encoding::encode_group_key;
use crate::error::{Result, SqlError};
use crate::expr::{AggCall, AggFunc, ScalarExpr};
use crate::types::{DataType, Datum, Row};

/// The running state of one aggregate in one group.
#[derive(Debug)]
struct Accumulator {
    count: i64,
    int_sum: i128,
    float_sum: f64,
    saw_float: bool,
    extreme: Datum,
    seen: Option<HashSet<Vec<u8>>>,
}

impl Accumulator {
    fn new(call: &AggCall) -> Self {
        Accumulator {
            count: 0,
            int_sum: 0,
            float_sum: 0.0,
            saw_float: false,
            extreme: Datum::Null,
            seen: call.distinct.then(HashSet::new),
        }
    }

    fn add(&mut self, call: &AggCall, value: Option<Datum>) -> Result<()> {
        let Some(value) = value else {
            // count(*)
            self.count += 1;
            return Ok(());
        };
        if value.is_null() {
            return Ok(());
        }
        if let Some(seen) = &mut self.seen {
            if !seen.insert(encode_group_key(std::slice::from_ref(&value))) {
                return Ok(());
            }
        }
        self.count += 1;
        match call.func {
            AggFunc::Count => {}
            AggFunc::Sum | AggFunc::Avg => match value {
                Datum::Int(i) => self.int_sum += i128::from(i),
                Datum::Float(f) => {
                    self.float_sum += f;
                    self.saw_float = true;
                }
                other => return Err(SqlError::Internal(format!("sum of non-number {other:?}"))),
            },
            AggFunc::Min | AggFunc::Max => {
                let replace = match value.compare(&self.extreme) {
                    None => self.extreme.is_null(),
                    Some(ord) => {
                        (ord == std::cmp::Ordering::Less) == (call.func == AggFunc::Min)
                            && ord != std::cmp::Ordering::Equal
                    }
                };
                if replace {
                    self.extreme = value;
                }
            }
        }
        Ok(())
    }

    fn finish(self, call: &AggCall) -> Result<Datum> {
        match call.func {
            AggFunc::Count => Ok(Datum::Int(self.count)),
            _ if self.count == 0 => Ok(Datum::Null),
            AggFunc::Sum if self.saw_float || call.ty != DataType::Int8 => {
                Ok(Datum::Float(self.float_sum + self.int_sum as f64))
            }
            AggFunc::Sum => i64::try_from(self.int_sum)
                .map(Datum::Int)
                .map_err(|_| SqlError::NumericOutOfRange("bigint".into())),
            AggFunc::Avg => {
                let total = self.float_sum + self.int_sum as f64;
                Ok(Datum::Float(total / self.count as f64))
            }
            AggFunc::Min | AggFunc::Max => Ok(self.extreme),
        }
    }
}

/// A hash aggregation fed rows a batch at a time: `GROUP BY` `group_by`, computing
/// `aggregates`. Only the groups are held, never the input, so a scan can feed it page by page.
pub struct Aggregation<'a> {
    group_by: &'a [ScalarExpr],
    aggregates: &'a [AggCall],
    index: HashMap<Vec<u8>, usize>,
    groups: Vec<(Row, Vec<Accumulator>)>,
}

impl<'a> Aggregation<'a> {
    pub fn new(group_by: &'a [ScalarExpr], aggregates: &'a [AggCall]) -> Aggregation<'a> {
        let mut aggregation = Aggregation {
            group_by,
            aggregates,
            index: HashMap::new(),
            groups: Vec::new(),
        };
        // Without GROUP BY there is exactly one group, even over no rows.
        if group_by.is_empty() {
            aggregation
                .groups
                .push((Vec::new(), aggregation.accumulators()));
            aggregation.index.insert(Vec::new(), 0);
        }
        aggregation
    }

    fn accumulators(&self) -> Vec<Accumulator> {
        self.aggregates.iter().map(Accumulator::new).collect()
    }

    /// Adds `rows` to their groups.
    pub fn add(&mut self, rows: Vec<Row>, params: &[Datum]) -> Result<()> {
        for row in rows {
            let values = self
                .group_by
                .iter()
                .map(|e| e.eval(&row, params))
                .collect::<Result<Row>>()?;
            let key = encode_group_key(&values);
            let slot = match self.index.get(&key) {
                Some(&slot) => slot,
                None => {
                    let accumulators = self.accumulators();
                    self.groups.push((values, accumulators));
                    self.index.insert(key, self.groups.len() - 1);
                    self.groups.len() - 1
                }
            };
            let Some((_, accumulators)) = self.groups.get_mut(slot) else {
                return Err(SqlError::Internal("lost aggregation group".into()));
            };
            for (acc, call) in accumulators.iter_mut().zip(self.aggregates) {
                let value = match &call.arg {
                    Some(arg) => Some(arg.eval(&row, params)?),
                    None => None,
                };
                acc.add(call, value)?;
            }
        }
        Ok(())
    }

    /// One output row per group: the group's values followed by the aggregate results.
    pub fn finish(self) -> Result<Vec<Row>> {
        let aggregates = self.aggregates;
        self.groups
            .into_iter()
            .map(|(mut values, accumulators)| {
                for (acc, call) in accumulators.into_iter().zip(aggregates) {
                    values.push(acc.finish(call)?);
                }
                Ok(values)
            })
            .collect()
    }
}
