//! The checks, per user: each user's record is a register of its own, and KV revisions order
//! its writes, so every check is a pass or two over the history (no search for an order).

use std::collections::{BTreeMap, HashMap};

use super::history::{Kind, Op, Outcome, line};

/// One broken promise, with the operations that show it.
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    pub(crate) check: &'static str,
    pub(crate) user: String,
    pub(crate) why: String,
    pub(crate) ops: Vec<Op>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} ({}): {}", self.check, self.user, self.why)?;
        for op in &self.ops {
            writeln!(f, "    {}", line(op))?;
        }
        Ok(())
    }
}

/// The checks' names, in the order they are reported.
pub(crate) const CHECKS: [&str; 5] =
    ["real-time order", "integrity", "no lost acknowledged write", "monotonic reads", "read-your-writes"];

fn violation(check: &'static str, user: &str, why: String, ops: &[&Op]) -> Violation {
    Violation { check, user: user.to_string(), why, ops: ops.iter().map(|op| (*op).clone()).collect() }
}

/// Every violation in `history`.
pub(crate) fn check(history: &[Op]) -> Vec<Violation> {
    let mut by_user: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_user.entry(&op.user).or_default().push(op);
    }
    let mut found = Vec::new();
    for (user, ops) in by_user {
        found.extend(real_time_order(user, &ops));
        found.extend(integrity(user, &ops));
        found.extend(no_lost_write(user, &ops));
        found.extend(monotonic_reads(user, &ops));
        found.extend(read_your_writes(user, &ops));
    }
    found
}

/// A write acknowledged before another was invoked has the lower revision.
pub(crate) fn real_time_order(user: &str, ops: &[&Op]) -> Vec<Violation> {
    let mut acked: Vec<&Op> = ops.iter().copied().filter(|op| op.acked_write().is_some()).collect();
    let mut by_return = acked.clone();
    by_return.sort_by_key(|op| op.returned_at);
    acked.sort_by_key(|op| op.invoked_at);
    let (mut next, mut highest): (usize, Option<&Op>) = (0, None);
    let mut found = Vec::new();
    for write in acked {
        while next < by_return.len() && by_return[next].returned_at < write.invoked_at {
            let done = by_return[next];
            if highest.is_none_or(|h| h.revision < done.revision) {
                highest = Some(done);
            }
            next += 1;
        }
        if let Some(before) = highest.filter(|h| h.revision >= write.revision) {
            let why = format!(
                "a write acknowledged before this one began has revision {:?}, not lower than its {:?}",
                before.revision, write.revision
            );
            found.push(violation("real-time order", user, why, &[before, write]));
        }
    }
    found
}

/// Every value read was written by some write, with that write's revision; none that failed
/// for certain.
pub(crate) fn integrity(user: &str, ops: &[&Op]) -> Vec<Violation> {
    let writes: HashMap<&str, &Op> = ops
        .iter()
        .filter(|op| op.kind == Kind::Write)
        .filter_map(|op| Some((op.value.as_deref()?, *op)))
        .collect();
    let mut found = Vec::new();
    for read in ops.iter().filter(|op| op.kind != Kind::Write && op.outcome == Outcome::Ok) {
        let Some(value) = read.value.as_deref() else { continue };
        match writes.get(value) {
            None => found.push(violation(
                "integrity",
                user,
                format!("read {value:?}, which nobody wrote"),
                &[read],
            )),
            Some(write) if write.outcome == Outcome::Failed => {
                let why = format!("read {value:?}, whose write failed for certain");
                found.push(violation("integrity", user, why, &[write, read]));
            }
            Some(write)
                if write.outcome == Outcome::Ok
                    && read.revision.is_some()
                    && write.revision != read.revision =>
            {
                let why = format!(
                    "read {value:?} at revision {:?}, written at {:?}",
                    read.revision, write.revision
                );
                found.push(violation("integrity", user, why, &[write, read]));
            }
            Some(_) => {}
        }
    }
    found
}

/// After the faults healed, every node's final read shows at least the highest acknowledged
/// revision.
pub(crate) fn no_lost_write(user: &str, ops: &[&Op]) -> Vec<Violation> {
    // A write answered 200 whose value the audit log does not hold never landed.
    let unheld =
        ops.iter().filter(|op| op.kind == Kind::Write && op.outcome == Outcome::Ok && op.revision.is_none());
    let mut found: Vec<Violation> = unheld
        .map(|op| {
            violation(
                "no lost acknowledged write",
                user,
                "acknowledged, and not in the audit log".into(),
                &[op],
            )
        })
        .collect();
    let Some(last) = ops.iter().copied().filter(|op| op.acked_write().is_some()).max_by_key(|op| op.revision)
    else {
        return found;
    };
    for read in ops.iter().filter(|op| op.kind == Kind::Final) {
        if read.seen() < last.revision {
            let why = format!(
                "node {} ends at revision {:?}; revision {:?} was acknowledged",
                read.node, read.revision, last.revision
            );
            found.push(violation("no lost acknowledged write", user, why, &[last, read]));
        }
    }
    found
}

/// What one client sees of a user never goes back: single reads, multi-reads and live changes
/// alike (a client does one thing at a time; a live change counts when it arrived).
pub(crate) fn monotonic_reads(user: &str, ops: &[&Op]) -> Vec<Violation> {
    let mut by_client: BTreeMap<usize, Vec<&Op>> = BTreeMap::new();
    for op in ops.iter().filter(|op| matches!(op.kind, Kind::Read | Kind::MultiRead | Kind::Live)) {
        by_client.entry(op.client).or_default().push(op);
    }
    let mut found = Vec::new();
    for (_, mut reads) in by_client {
        reads.sort_by_key(|op| op.returned_at);
        let mut highest: Option<(&Op, u64)> = None;
        for (read, seen) in reads.into_iter().filter_map(|op| Some((op, op.order()?))) {
            if let Some((before, _)) = highest.filter(|(_, h)| *h > seen) {
                let why = format!("saw revision {:?}, then {:?}", before.revision, read.revision);
                found.push(violation("monotonic reads", user, why, &[before, read]));
            }
            if highest.is_none_or(|(_, h)| h < seen) {
                highest = Some((read, seen));
            }
        }
    }
    found
}

/// A client that wrote at a node, and then reads there, sees its write or a later one.
pub(crate) fn read_your_writes(user: &str, ops: &[&Op]) -> Vec<Violation> {
    // Per client and node: its acknowledged writes by the time they returned, and its reads.
    type Group<'a> = (Vec<&'a Op>, Vec<&'a Op>);
    let mut groups: BTreeMap<(usize, &str), Group> = BTreeMap::new();
    for op in ops.iter().copied() {
        let (writes, reads) = groups.entry((op.client, op.node.as_str())).or_default();
        if op.acked_write().is_some() {
            writes.push(op);
        } else if matches!(op.kind, Kind::Read | Kind::MultiRead) {
            reads.push(op);
        }
    }
    let mut found = Vec::new();
    for (writes, reads) in groups.values_mut() {
        writes.sort_by_key(|w| w.returned_at);
        // The write of the highest revision among the first i + 1 to return.
        let mut highest: Vec<&Op> = Vec::with_capacity(writes.len());
        for write in writes.iter() {
            let best = match highest.last() {
                Some(h) if h.revision >= write.revision => *h,
                _ => *write,
            };
            highest.push(best);
        }
        for read in reads.iter() {
            let returned = writes.partition_point(|w| w.returned_at < read.invoked_at);
            let Some(write) = returned.checked_sub(1).map(|i| highest[i]) else { continue };
            if read.order().is_some_and(|seen| Some(seen) < write.revision) {
                let why = format!("wrote revision {:?} here, then read {:?}", write.revision, read.revision);
                found.push(violation("read-your-writes", user, why, &[write, read]));
            }
        }
    }
    found
}
