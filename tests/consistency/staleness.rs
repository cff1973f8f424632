//! How long a write takes to show at the nodes other than the one that took it: from the
//! write's 200 to the first read there (single, multi or live) that shows it or a later revision.
//! A bound to report, not a promise of zero.

use std::collections::BTreeMap;

use super::{
    faults::Faults,
    history::{Kind, Op},
};

/// Milliseconds from a write's 200 to its first sighting at another node, over every
/// (write, other node) pair that was seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct Staleness {
    samples: Vec<f64>,
}

impl Staleness {
    pub(crate) fn of(history: &[Op]) -> Self {
        Self::from_samples(sightings(history).into_iter().map(|(_, ms)| ms).collect())
    }

    /// The same, per kind of fault under way when each write was answered.
    pub(crate) fn by_fault(history: &[Op], faults: &Faults) -> BTreeMap<&'static str, Self> {
        let mut samples: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        for (write, ms) in sightings(history) {
            samples.entry(faults.kind_at(write.returned_at)).or_default().push(ms);
        }
        samples.into_iter().map(|(kind, samples)| (kind, Self::from_samples(samples))).collect()
    }

    fn from_samples(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        Self { samples }
    }

    pub(crate) fn count(&self) -> usize {
        self.samples.len()
    }

    /// The `q` quantile (0 to 1), in milliseconds.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let last = self.samples.len().checked_sub(1)?;
        Some(self.samples[((last as f64) * q).round() as usize])
    }
}

impl std::fmt::Display for Staleness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.quantile(0.5), self.quantile(0.99), self.quantile(1.0)) {
            (Some(p50), Some(p99), Some(max)) => {
                write!(f, "p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms over {} sightings", self.count())
            }
            _ => write!(f, "no sightings"),
        }
    }
}

/// Every (acknowledged write, other node) pair that was seen: the write, and the milliseconds
/// from its 200 to the first read there that shows it or a later revision.
fn sightings(history: &[Op]) -> Vec<(&Op, f64)> {
    let mut reads: BTreeMap<(&str, &str), Vec<&Op>> = BTreeMap::new();
    for op in history.iter().filter(|op| matches!(op.kind, Kind::Read | Kind::MultiRead | Kind::Live)) {
        if op.seen().is_some() {
            reads.entry((op.user.as_str(), op.node.as_str())).or_default().push(op);
        }
    }
    for list in reads.values_mut() {
        list.sort_by_key(|op| op.returned_at);
    }
    let mut found = Vec::new();
    for write in history.iter().filter(|op| op.acked_write().is_some()) {
        for ((user, node), list) in &reads {
            if *user != write.user || *node == write.node {
                continue;
            }
            let from = list.partition_point(|op| op.returned_at <= write.returned_at);
            if let Some(first) = list[from..].iter().find(|op| op.seen() >= write.revision) {
                found.push((write, (first.returned_at - write.returned_at) as f64 / 1e6));
            }
        }
    }
    found
}
