//! Streaming a query's result to its connection a page at a time, so that a result of any size
//! is never held whole: the statement sends its columns, then each page of rows as the scan
//! under it reads them, through a bounded channel ([`RowSink`]) that the connection drains
//! into the socket; a slow client holds the scan back rather than filling memory.
//!
//! A result that fits in one page ([`PAGE_SIZE`] rows) is returned whole instead ([`Outcome`]),
//! so a point read or a short scan costs what it did before results streamed.
//!
//! What streams is what needs none of its input held: a scan, the filters and projections
//! over it, and a LIMIT/OFFSET on top ([`Pipeline`]). Anything else (a sort, aggregation,
//! DISTINCT, VALUES) runs materialized ([`super::run`], bounded by `max_result_bytes`) and its
//! rows are then sent in pages.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::mpsc;

use super::scan::{self, PAGE_SIZE};
use super::{filter_rows, row_count, run};
use crate::error::{Result, SqlError};
use crate::expr::ScalarExpr;
use crate::plan::{OutputColumn, Plan};
use crate::types::{Datum, Row};
use meridian_kv::Txn;

/// What a streaming statement hands its connection: first the result's columns, then its rows.
#[derive(Debug)]
pub enum Streamed {
    Columns(Vec<OutputColumn>),
    Rows(Vec<Row>),
}

/// Where a statement's result goes while it runs. Sending waits while the connection is behind.
pub struct RowSink {
    tx: mpsc::Sender<Streamed>,
    used: AtomicBool,
}

impl RowSink {
    /// A sink and the receiver its connection drains; `pages` pages may wait in between.
    pub fn new(pages: usize) -> (RowSink, mpsc::Receiver<Streamed>) {
        let (tx, rx) = mpsc::channel(pages.max(1));
        let sink = RowSink {
            tx,
            used: AtomicBool::new(false),
        };
        (sink, rx)
    }

    /// Hands `item` to the connection.
    pub async fn send(&self, item: Streamed) -> Result<()> {
        self.used.store(true, Ordering::Relaxed);
        self.tx
            .send(item)
            .await
            .map_err(|_| SqlError::Unavailable("the connection stopped taking rows".into()))
    }

    /// Whether anything was sent: the statement can then no longer be retried unseen.
    pub fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }
}

/// How a streamed query's result went.
#[derive(Debug)]
pub enum Outcome {
    /// It fit in one page, which is returned rather than sent (nothing went to the sink): a
    /// point read or a short scan costs no more than a statement that does not stream.
    Held(Vec<Row>),
    /// Its columns and this many rows went to the sink.
    Sent(usize),
}

/// Runs the query `plan`: a result of one page comes back whole; a longer one goes to `sink`,
/// its `columns` first, then its rows a page at a time.
pub async fn stream(
    plan: &Plan,
    columns: Vec<OutputColumn>,
    txn: &mut Txn,
    params: &[Datum],
    max_bytes: usize,
    sink: &RowSink,
) -> Result<Outcome> {
    let Some(mut pipeline) = Pipeline::build(plan, params)? else {
        let rows = run(plan, txn, params, None, max_bytes).await?;
        if rows.len() <= PAGE_SIZE {
            return Ok(Outcome::Held(rows));
        }
        sink.send(Streamed::Columns(columns)).await?;
        let (mut rows, mut sent) = (rows, 0);
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(PAGE_SIZE));
            sent += rows.len();
            sink.send(Streamed::Rows(rows)).await?;
            rows = rest;
        }
        return Ok(Outcome::Sent(sent));
    };
    // Hold rows until a page's worth (pages may come back empty when a filter drops every
    // row): a result that ends before is returned whole.
    let mut first = Vec::new();
    let more = loop {
        match pipeline.next(txn, params).await? {
            None => break false,
            Some(rows) => {
                first.extend(rows);
                if first.len() >= PAGE_SIZE {
                    break true;
                }
            }
        }
    };
    if !more {
        return Ok(Outcome::Held(first));
    }
    sink.send(Streamed::Columns(columns)).await?;
    let mut sent = first.len();
    sink.send(Streamed::Rows(first)).await?;
    while let Some(rows) = pipeline.next(txn, params).await? {
        if !rows.is_empty() {
            sent += rows.len();
            sink.send(Streamed::Rows(rows)).await?;
        }
    }
    Ok(Outcome::Sent(sent))
}

/// A query run a page at a time: the shapes that hold none of their input.
enum Pipeline<'p> {
    Scan(scan::Cursor<'p>),
    Filter {
        input: Box<Pipeline<'p>>,
        predicate: &'p ScalarExpr,
    },
    Project {
        input: Box<Pipeline<'p>>,
        exprs: &'p [ScalarExpr],
    },
    Limit {
        input: Box<Pipeline<'p>>,
        /// Rows still to skip (OFFSET).
        skip: usize,
        /// Rows still to return (LIMIT).
        left: usize,
    },
}

impl<'p> Pipeline<'p> {
    /// The pipeline running `plan`, or `None` if some operator in it must hold its input.
    fn build(plan: &'p Plan, params: &[Datum]) -> Result<Option<Pipeline<'p>>> {
        let inner = |input: &'p Plan| -> Result<Option<Box<Pipeline<'p>>>> {
            Ok(Pipeline::build(input, params)?.map(Box::new))
        };
        Ok(Some(match plan {
            Plan::Scan {
                table,
                bounds,
                filter,
            } => Pipeline::Scan(scan::Cursor::new(table, bounds, filter.as_ref(), params)?),
            Plan::Filter { input, predicate } => match inner(input)? {
                Some(input) => Pipeline::Filter { input, predicate },
                None => return Ok(None),
            },
            Plan::Project { input, exprs } => match inner(input)? {
                Some(input) => Pipeline::Project { input, exprs },
                None => return Ok(None),
            },
            Plan::Limit {
                input,
                limit,
                offset,
            } => {
                let left = row_count(limit.as_ref(), params, "LIMIT")?.unwrap_or(usize::MAX);
                let skip = row_count(offset.as_ref(), params, "OFFSET")?.unwrap_or(0);
                match inner(input)? {
                    Some(input) => Pipeline::Limit { input, skip, left },
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        }))
    }

    /// The next page of rows (possibly empty); `None` once there are no more.
    fn next<'a>(
        &'a mut self,
        txn: &'a mut Txn,
        params: &'a [Datum],
    ) -> BoxFuture<'a, Result<Option<Vec<Row>>>> {
        async move {
            match self {
                Pipeline::Scan(cursor) => Ok(cursor
                    .next_page(txn, params)
                    .await?
                    .map(|page| page.into_iter().map(|(row, _)| row).collect())),
                Pipeline::Filter { input, predicate } => match input.next(txn, params).await? {
                    Some(rows) => Ok(Some(filter_rows(rows, predicate, params)?)),
                    None => Ok(None),
                },
                Pipeline::Project { input, exprs } => match input.next(txn, params).await? {
                    Some(rows) => rows
                        .iter()
                        .map(|row| exprs.iter().map(|e| e.eval(row, params)).collect())
                        .collect::<Result<Vec<Row>>>()
                        .map(Some),
                    None => Ok(None),
                },
                Pipeline::Limit { input, skip, left } => {
                    if *left == 0 {
                        return Ok(None);
                    }
                    let Some(rows) = input.next(txn, params).await? else {
                        return Ok(None);
                    };
                    let mut kept = Vec::new();
                    for row in rows {
                        if *skip > 0 {
                            *skip -= 1;
                        } else if *left > 0 {
                            *left -= 1;
                            kept.push(row);
                        }
                    }
                    Ok(Some(kept))
                }
            }
        }
        .boxed()
    }
}
