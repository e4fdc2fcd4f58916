//! Scenario tests for the replicated half of transactions, [`apply`] over [`TxnRecords`]:
//! scripts under `spanserver/testdata/txn/` apply commands to a few named replicas and their
//! output is compared with recorded `.out` files (`UPDATE_GOLDEN=1` rewrites them; then read
//! the diff, a golden file is only as good as its review).
//!
//! A replica here is what the driver keeps per hosted group, minus Raft and the lock table: a
//! descriptor, its transaction records, its largest applied timestamp, its lease and an
//! in-memory engine. Each command is one applied log entry, handled as `apply_committed` and
//! `answer_proposers` in `raft/driver.rs` handle it: [`apply`] fills a batch, the largest
//! applied timestamp rises with the timestamp of a `Committed`, `Prepared` or `Closed` result,
//! the applied index and that timestamp go into the same batch, the batch is written, and then
//! a lease is kept and a split opens its right half on the same engine. Nothing checks that a
//! leader would have proposed the command: scripts show what the state machine guarantees on
//! its own, and where it relies on the leader (locks, timestamp assignment).
//!
//! Commands (`R` a replica name; a mutation is `k=v`, or `-k` for a deletion; a span is
//! `[a,c)`, or `[a,)` unbounded):
//! - `replica R group=G range=SPAN [peers=1,2,3]`: a new replica on an empty engine;
//! - `commit R ts=T MUTATION...`: a single-group commit;
//! - `prepare R txn=N ts=T coord=G [prio=P] [parts=G,G] [read=SPAN]... MUTATION...`;
//! - `decide R txn=N commit ts=T [parts=G,G] MUTATION...` or `decide R txn=N abort` (the abort
//!   is also what a coordinator logs when asked for the status of a transaction it never
//!   decided);
//! - `resolve R txn=N commit ts=T` or `resolve R txn=N abort`; `forget R txn=N`;
//! - `close R ts=T`: a closed timestamp; `lease R holder=S term=N exp=T [after=T]`;
//! - `split R at=K new=G [as=R2]`: the right half becomes replica `R2` (default `gG`) on R's
//!   engine, as the driver opens it on the same server;
//! - `restart R`: a new leader, or a reboot: everything in memory is dropped and the
//!   descriptor, records, largest applied timestamp and lease are reloaded from the engine;
//! - `read R at=T KEY...`: `mvcc::get` at `T`, after saying whether the replica may serve a
//!   read at `T` (the condition `wait_safe` in `service.rs` waits for: largest applied
//!   timestamp `>= T` and no transaction with writes prepared below `T`);
//! - `safe R`: largest applied timestamp, smallest prepare timestamp in doubt and the safe time
//!   `min(max applied, min prepare - 1)` (`safe_ts` in `service.rs`);
//! - `records R`; `data R`: every version in the replica's range; `replicas`.
//!
//! Each applied command prints its [`Applied`] result, then what `apply` put in the batch.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use meridian_truetime::Timestamp;

use super::{
    apply, Applied, Command, DecisionRecord, KeyRange, Lease, Mutation, PreparedRecord,
    ReplicaDescriptor, TxnMeta, TxnRecords,
};
use meridian_common::GroupId;

use crate::storage::engine::{BatchOp, Cf, Engine, WriteBatch};
use crate::storage::keys;
use crate::storage::mem::MemEngine;
use crate::storage::mvcc;

/// One hosted replica, as the driver keeps it.
struct Replica {
    engine: MemEngine,
    desc: ReplicaDescriptor,
    records: TxnRecords,
    max_applied_ts: u64,
    applied_index: u64,
    lease: Lease,
}

impl Replica {
    /// Opens `group`'s replica from what `engine` holds, as the driver's `open_replica` does.
    fn open(engine: MemEngine, group: GroupId) -> Result<Replica, String> {
        let raw = engine
            .get(Cf::Meta, &keys::replica(group))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no descriptor for {group} in the engine"))?;
        let desc: ReplicaDescriptor = bincode::deserialize(&raw).map_err(|e| e.to_string())?;
        let (applied_index, max_applied_ts) =
            match engine.get(Cf::Raft, &keys::applied_index(group)) {
                Ok(Some(b)) if b.len() == 16 => (
                    keys::decode_u64(&b[..8]).unwrap_or(0),
                    keys::decode_u64(&b[8..]).unwrap_or(0),
                ),
                Ok(_) => (0, 0),
                Err(e) => return Err(e.to_string()),
            };
        let records = TxnRecords::load(&engine, group)?;
        let lease = match engine.get(Cf::Raft, &keys::lease(group)) {
            Ok(Some(b)) => bincode::deserialize(&b).map_err(|e| e.to_string())?,
            Ok(None) => Lease::default(),
            Err(e) => return Err(e.to_string()),
        };
        Ok(Replica {
            engine,
            desc,
            records,
            max_applied_ts,
            applied_index,
            lease,
        })
    }

    /// One line: group, range, largest applied timestamp, record counts and lease.
    fn describe(&self) -> String {
        let mut out = format!(
            "{} {} peers={:?} max_applied={} prepared={} decisions={}",
            self.desc.group,
            fmt_range(&self.desc.range),
            self.desc.peers.iter().map(|p| p.0).collect::<Vec<_>>(),
            self.max_applied_ts,
            self.records.prepared.len(),
            self.records.decisions.len(),
        );
        if self.lease != Lease::default() {
            out.push(' ');
            out.push_str(&fmt_lease(&self.lease));
        }
        out
    }
}

/// A command line's arguments: `name=value` options the command knows, `read=SPAN` spans,
/// mutations (`k=v`, `-k`) where the command takes them, and bare words.
#[derive(Default)]
struct Args {
    options: BTreeMap<String, String>,
    reads: Vec<KeyRange>,
    mutations: Vec<Mutation>,
    bare: Vec<String>,
}

impl Args {
    fn parse(words: &[&str], known: &[&str], takes_mutations: bool) -> Result<Args, String> {
        let mut args = Args::default();
        for word in words {
            let option = word.split_once('=').filter(|(k, _)| known.contains(k));
            if let Some(("read", span)) = option {
                args.reads.push(parse_range(span)?);
            } else if let Some((name, value)) = option {
                args.options.insert(name.to_string(), value.to_string());
            } else if !takes_mutations {
                if word.contains('=') {
                    return Err(format!("unknown option {word}"));
                }
                args.bare.push(word.to_string());
            } else if let Some((key, value)) = word.split_once('=') {
                args.mutations.push(Mutation {
                    key: key.as_bytes().to_vec(),
                    value: Some(value.as_bytes().to_vec()),
                });
            } else if let Some(key) = word.strip_prefix('-') {
                args.mutations.push(Mutation {
                    key: key.as_bytes().to_vec(),
                    value: None,
                });
            } else {
                args.bare.push(word.to_string());
            }
        }
        Ok(args)
    }

    fn get(&self, name: &str) -> Result<&str, String> {
        self.options
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("missing {name}="))
    }

    fn u64(&self, name: &str) -> Result<u64, String> {
        let value = self.get(name)?;
        value
            .parse()
            .map_err(|_| format!("bad number {name}={value}"))
    }

    fn u64_or(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.options.contains_key(name) {
            true => self.u64(name),
            false => Ok(default),
        }
    }

    /// A comma-separated list of numbers, empty if absent.
    fn list(&self, name: &str) -> Result<Vec<u64>, String> {
        let Some(value) = self.options.get(name) else {
            return Ok(Vec::new());
        };
        value
            .split(',')
            .map(|n| n.parse().map_err(|_| format!("bad list {name}={value}")))
            .collect()
    }

    /// `commit` or `abort`, the one bare word of `decide` and `resolve`.
    fn outcome(&self) -> Result<bool, String> {
        match self.bare.as_slice() {
            [w] if w == "commit" => Ok(true),
            [w] if w == "abort" => Ok(false),
            _ => Err("expected commit or abort".into()),
        }
    }
}

struct Harness {
    replicas: BTreeMap<String, Replica>,
    next_proposal: u64,
}

impl Harness {
    fn new() -> Self {
        Harness {
            replicas: BTreeMap::new(),
            next_proposal: 1,
        }
    }

    fn replica(&self, name: &str) -> Result<&Replica, String> {
        self.replicas
            .get(name)
            .ok_or_else(|| format!("no replica {name}"))
    }

    fn proposal(&mut self) -> u64 {
        self.next_proposal += 1;
        self.next_proposal - 1
    }

    fn run(&mut self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&verb) = words.first() else {
            return Ok(String::new());
        };
        if verb == "replicas" {
            let mut out = String::new();
            for (name, r) in &self.replicas {
                let _ = writeln!(out, "{name}: {}", r.describe());
            }
            return Ok(out);
        }
        let name = *words.get(1).ok_or("missing replica name")?;
        let rest = &words[2..];
        let proposal = self.proposal();
        match verb {
            "replica" => {
                let args = Args::parse(rest, &["group", "range", "peers"], false)?;
                self.create(name, &args)
            }
            "commit" => {
                let args = Args::parse(rest, &["ts", "gen"], true)?;
                let generation = args.u64_or("gen", self.replica(name)?.desc.generation)?;
                let command = Command::Commit {
                    proposal,
                    generation,
                    ts: args.u64("ts")?,
                    mutations: args.mutations,
                };
                Ok(self.apply(name, command)?.0)
            }
            "prepare" => {
                let known = ["txn", "ts", "coord", "prio", "parts", "read", "gen"];
                let args = Args::parse(rest, &known, true)?;
                let generation = args.u64_or("gen", self.replica(name)?.desc.generation)?;
                let txn = args.u64("txn")?;
                let record = PreparedRecord {
                    txn: TxnMeta {
                        id: txn,
                        priority: args.u64_or("prio", txn)?,
                    },
                    prepare_ts: args.u64("ts")?,
                    coordinator: args.u64("coord")?,
                    participants: args.list("parts")?,
                    reads: args.reads,
                    mutations: args.mutations,
                };
                let command = Command::Prepare {
                    proposal,
                    generation,
                    record,
                };
                Ok(self.apply(name, command)?.0)
            }
            "decide" => {
                let args = Args::parse(rest, &["txn", "ts", "parts", "at_ms", "gen"], true)?;
                let commit = args.outcome()?;
                let generation = args.u64_or("gen", self.replica(name)?.desc.generation)?;
                let command = Command::Decide {
                    proposal,
                    generation,
                    txn: args.u64("txn")?,
                    commit,
                    ts: if commit { args.u64("ts")? } else { 0 },
                    participants: args.list("parts")?,
                    decided_at_ms: args.u64_or("at_ms", 0)?,
                    mutations: args.mutations,
                };
                Ok(self.apply(name, command)?.0)
            }
            "resolve" => {
                let args = Args::parse(rest, &["txn", "ts"], false)?;
                let commit = args.outcome()?;
                let command = Command::Resolve {
                    proposal,
                    txn: args.u64("txn")?,
                    commit,
                    ts: if commit { args.u64("ts")? } else { 0 },
                };
                Ok(self.apply(name, command)?.0)
            }
            "forget" => {
                let args = Args::parse(rest, &["txn"], false)?;
                let txn = args.u64("txn")?;
                Ok(self.apply(name, Command::Forget { proposal, txn })?.0)
            }
            "close" => {
                let args = Args::parse(rest, &["ts"], false)?;
                let ts = args.u64("ts")?;
                Ok(self.apply(name, Command::CloseTs { proposal, ts })?.0)
            }
            "lease" => {
                let args = Args::parse(rest, &["holder", "term", "exp", "after"], false)?;
                let lease = Lease {
                    holder: args.u64("holder")?,
                    term: args.u64("term")?,
                    expiration: args.u64("exp")?,
                    start_after: args.u64_or("after", 0)?,
                };
                Ok(self.apply(name, Command::Lease { proposal, lease })?.0)
            }
            "split" => {
                let args = Args::parse(rest, &["at", "new", "as", "floor"], false)?;
                let new_group = args.u64("new")?;
                let command = Command::Split {
                    proposal,
                    at: args.get("at")?.as_bytes().to_vec(),
                    new_group: GroupId(new_group),
                    floor: args.u64_or("floor", 0)?,
                };
                let (mut out, applied) = self.apply(name, command)?;
                if let Applied::Split { right, .. } = applied {
                    let child = args
                        .options
                        .get("as")
                        .cloned()
                        .unwrap_or_else(|| format!("g{new_group}"));
                    let engine = self.replica(name)?.engine.clone();
                    let replica = Replica::open(engine, right.group_id())?;
                    let _ = writeln!(out, "  new replica {child}: {}", replica.describe());
                    self.replicas.insert(child, replica);
                }
                Ok(out)
            }
            "restart" => {
                let r = self.replica(name)?;
                let reopened = Replica::open(r.engine.clone(), r.desc.group_id())?;
                let mut out = format!("reloaded: {}\n", reopened.describe());
                out.push_str(&fmt_records(&reopened.records));
                self.replicas.insert(name.to_string(), reopened);
                Ok(out)
            }
            "read" => {
                let args = Args::parse(rest, &["at"], false)?;
                self.read(name, args.u64("at")?, &args.bare)
            }
            "safe" => {
                let r = self.replica(name)?;
                let min_prepare = r.records.min_prepare_ts();
                let safe = r.max_applied_ts.min(min_prepare.saturating_sub(1));
                let min_prepare = match min_prepare {
                    u64::MAX => "none".to_string(),
                    ts => ts.to_string(),
                };
                Ok(format!(
                    "max_applied={} min_prepare={min_prepare} safe={safe}\n",
                    r.max_applied_ts
                ))
            }
            "records" => Ok(fmt_records(&self.replica(name)?.records)),
            "data" => self.data(name),
            other => Err(format!("unknown command {other}")),
        }
    }

    /// `replica R group=G range=SPAN [peers=...]`: writes the descriptor, as creating a replica
    /// does, and opens the replica from the engine.
    fn create(&mut self, name: &str, args: &Args) -> Result<String, String> {
        if self.replicas.contains_key(name) {
            return Err(format!("replica {name} already exists"));
        }
        let desc = ReplicaDescriptor {
            group: GroupId(args.u64("group")?),
            range: parse_range(args.get("range")?)?,
            peers: args
                .list("peers")?
                .into_iter()
                .map(meridian_common::ServerId)
                .collect(),
            generation: 0,
        };
        let engine = MemEngine::new();
        let mut batch = WriteBatch::new();
        batch.put(
            Cf::Meta,
            keys::replica(desc.group_id()),
            bincode::serialize(&desc).map_err(|e| e.to_string())?,
        );
        engine.write(batch, true).map_err(|e| e.to_string())?;
        let replica = Replica::open(engine, desc.group_id())?;
        self.replicas.insert(name.to_string(), replica);
        Ok(String::new())
    }

    /// Applies `command` to replica `name` as one log entry, the way the driver does.
    fn apply(&mut self, name: &str, command: Command) -> Result<(String, Applied), String> {
        let r = self
            .replicas
            .get_mut(name)
            .ok_or_else(|| format!("no replica {name}"))?;
        let mut batch = WriteBatch::new();
        let applied = apply(&r.desc, &mut r.records, &mut batch, &command);
        let mut out = format!("{}\n", fmt_applied(&applied));
        if !batch.is_empty() {
            let _ = writeln!(out, "  batch: {}", fmt_batch(&batch)?);
        }
        if let Applied::Split { right, .. } = &applied {
            // The new group starts above every timestamp this one applied.
            batch.put(
                Cf::Raft,
                keys::applied_index(right.group_id()),
                applied_value(0, r.max_applied_ts),
            );
        }
        if let Applied::Committed { ts } | Applied::Prepared { ts } | Applied::Closed { ts } =
            &applied
        {
            r.max_applied_ts = r.max_applied_ts.max(*ts);
        }
        r.applied_index += 1;
        batch.put(
            Cf::Raft,
            keys::applied_index(r.desc.group_id()),
            applied_value(r.applied_index, r.max_applied_ts),
        );
        r.engine.write(batch, false).map_err(|e| e.to_string())?;
        match &applied {
            Applied::Lease(lease) => r.lease = lease.clone(),
            Applied::Split { left, .. } => r.desc = left.clone(),
            _ => {}
        }
        Ok((out, applied))
    }

    fn read(&self, name: &str, at: u64, read_keys: &[String]) -> Result<String, String> {
        let r = self.replica(name)?;
        let mut blockers = Vec::new();
        if r.max_applied_ts < at {
            blockers.push(format!("applied only up to {}", r.max_applied_ts));
        }
        for p in r.records.prepared.values() {
            if !p.mutations.is_empty() && p.prepare_ts < at {
                blockers.push(format!(
                    "txn {} prepared at {} in doubt",
                    p.txn.id, p.prepare_ts
                ));
            }
        }
        let mut out = match blockers.is_empty() {
            true => format!("safe at {at}\n"),
            false => format!("NOT safe at {at}: {}\n", blockers.join(", ")),
        };
        for key in read_keys {
            if !r.desc.range.contains(key.as_bytes()) {
                let _ = writeln!(out, "  {key}: not in this replica's range");
                continue;
            }
            let version =
                mvcc::get(&r.engine, key.as_bytes(), Timestamp(at)).map_err(|e| e.to_string())?;
            let shown = match version {
                None => "<none>".to_string(),
                Some(v) => format!("{}@{}", fmt_value(v.value.as_deref()), v.ts.0),
            };
            let _ = writeln!(out, "  {key}: {shown}");
        }
        Ok(out)
    }

    /// Every version of every key in the replica's range, newest first per key. Other groups
    /// on the same server (a split's two halves) share the engine but not the range.
    fn data(&self, name: &str) -> Result<String, String> {
        let r = self.replica(name)?;
        let start = mvcc::encode_user_key(&r.desc.range.start);
        let end = (!r.desc.range.end.is_empty()).then(|| mvcc::encode_user_key(&r.desc.range.end));
        let mut out = String::new();
        for item in r.engine.scan(Cf::Data, &start, end.as_deref()) {
            let (key, value) = item.map_err(|e| e.to_string())?;
            let (key, ts) = mvcc::decode_key(&key).map_err(|e| e.to_string())?;
            let value = mvcc::decode_value(&value).map_err(|e| e.to_string())?;
            let _ = writeln!(
                out,
                "{}@{}={}",
                String::from_utf8_lossy(&key),
                ts.0,
                fmt_value(value.as_deref())
            );
        }
        if out.is_empty() {
            out.push_str("(no data)\n");
        }
        Ok(out)
    }
}

/// The `Raft` CF value of a group's applied index and largest applied timestamp.
fn applied_value(index: u64, max_applied_ts: u64) -> Vec<u8> {
    let mut value = index.to_be_bytes().to_vec();
    value.extend_from_slice(&max_applied_ts.to_be_bytes());
    value
}

/// `[a,c)` or `[a,)` (unbounded).
fn parse_range(word: &str) -> Result<KeyRange, String> {
    let (start, end) = word
        .strip_prefix('[')
        .and_then(|w| w.strip_suffix(')'))
        .and_then(|w| w.split_once(','))
        .ok_or_else(|| format!("bad range {word}"))?;
    Ok(KeyRange {
        start: start.as_bytes().to_vec(),
        end: end.as_bytes().to_vec(),
    })
}

fn fmt_range(range: &KeyRange) -> String {
    format!(
        "[{},{})",
        String::from_utf8_lossy(&range.start),
        String::from_utf8_lossy(&range.end)
    )
}

fn fmt_value(value: Option<&[u8]>) -> String {
    match value {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => "<deleted>".to_string(),
    }
}

fn fmt_mutations(mutations: &[Mutation]) -> String {
    let shown: Vec<String> = mutations
        .iter()
        .map(|m| match &m.value {
            Some(v) => format!(
                "{}={}",
                String::from_utf8_lossy(&m.key),
                String::from_utf8_lossy(v)
            ),
            None => format!("-{}", String::from_utf8_lossy(&m.key)),
        })
        .collect();
    shown.join(" ")
}

fn fmt_lease(lease: &Lease) -> String {
    format!(
        "lease holder={} term={} exp={} after={}",
        lease.holder, lease.term, lease.expiration, lease.start_after
    )
}

fn fmt_applied(applied: &Applied) -> String {
    match applied {
        Applied::Committed { ts } => format!("committed ts={ts}"),
        Applied::Prepared { ts } => format!("prepared ts={ts}"),
        Applied::Aborted => "aborted".to_string(),
        Applied::Noop => "noop".to_string(),
        Applied::Closed { ts } => format!("closed ts={ts}"),
        Applied::Lease(lease) => fmt_lease(lease),
        Applied::Split { left, right } => format!(
            "split left={} {} right={} {}",
            left.group,
            fmt_range(&left.range),
            right.group,
            fmt_range(&right.range)
        ),
        Applied::Refused(reason) => format!("refused: {reason}"),
    }
}

fn fmt_prepared(r: &PreparedRecord) -> String {
    let reads: Vec<String> = r.reads.iter().map(fmt_range).collect();
    format!(
        "prepared txn={} ts={} coord={} parts={:?} reads=[{}] writes=[{}]",
        r.txn.id,
        r.prepare_ts,
        r.coordinator,
        r.participants,
        reads.join(" "),
        fmt_mutations(&r.mutations)
    )
}

fn fmt_decision(d: &DecisionRecord) -> String {
    format!(
        "decision txn={} {} ts={} parts={:?}",
        d.txn,
        if d.commit { "commit" } else { "abort" },
        d.ts,
        d.participants
    )
}

fn fmt_records(records: &TxnRecords) -> String {
    let mut out = String::new();
    for r in records.prepared.values() {
        let _ = writeln!(out, "{}", fmt_prepared(r));
    }
    for d in records.decisions.values() {
        let _ = writeln!(out, "{}", fmt_decision(d));
    }
    if out.is_empty() {
        out.push_str("(no records)\n");
    }
    out
}

/// The ops of a batch `apply` filled, with the keys decoded: data versions as `key@ts=value`,
/// records and descriptors by kind, group and transaction.
fn fmt_batch(batch: &WriteBatch) -> Result<String, String> {
    let mut ops = Vec::new();
    for op in &batch.ops {
        let (verb, cf, key, value) = match op {
            BatchOp::Put { cf, key, value } => ("put", *cf, key, Some(value)),
            BatchOp::Delete { cf, key } => ("delete", *cf, key, None),
            BatchOp::DeleteRange { cf, start, .. } => ("delete-range", *cf, start, None),
        };
        let what = match cf {
            Cf::Data => {
                let (user_key, ts) = mvcc::decode_key(key).map_err(|e| e.to_string())?;
                let shown = match value {
                    Some(v) => {
                        let v = mvcc::decode_value(v).map_err(|e| e.to_string())?;
                        format!("={}", fmt_value(v.as_deref()))
                    }
                    None => String::new(),
                };
                format!("{}@{}{shown}", String::from_utf8_lossy(&user_key), ts.0)
            }
            Cf::Meta => fmt_meta_key(key, value.map(Vec::as_slice))?,
            Cf::Raft => match (key.get(..8).and_then(keys::decode_u64), key.get(8)) {
                (Some(group), Some(0x04)) => format!("lease g{group}"),
                _ => format!("raft key {key:?}"),
            },
        };
        ops.push(format!("{verb} {what}"));
    }
    Ok(ops.join(", "))
}

/// A `Meta` CF key (see `raft/keys.rs`): a descriptor, a prepare record or a decision.
fn fmt_meta_key(key: &[u8], value: Option<&[u8]>) -> Result<String, String> {
    let group = key.get(1..9).and_then(keys::decode_u64);
    let txn = key.get(9..17).and_then(keys::decode_u64);
    Ok(match (key.first(), group, txn) {
        (Some(0x01), Some(group), None) => match value {
            Some(v) => {
                let desc: ReplicaDescriptor = bincode::deserialize(v).map_err(|e| e.to_string())?;
                format!("descriptor g{group} {}", fmt_range(&desc.range))
            }
            None => format!("descriptor g{group}"),
        },
        (Some(0x02), Some(group), Some(txn)) => format!("prepare-record g{group}/txn{txn}"),
        (Some(0x03), Some(group), Some(txn)) => format!("decision-record g{group}/txn{txn}"),
        _ => format!("meta key {key:?}"),
    })
}

#[test]
fn txn_state_machine_scenarios() {
    crate::scenarios::check("txn", || {
        let mut harness = Harness::new();
        move |line: &str| harness.run(line)
    });
}
