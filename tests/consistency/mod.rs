//! A history checker in the style of Jepsen: a workload records every operation clients made
//! against the nodes while faults were injected ([`history`]), and the checks hold each user's
//! operations to the promises of docs/api.md ([`check`]): real-time order of acknowledged
//! writes, integrity of what was read, no acknowledged write lost, monotonic reads per client,
//! read-your-writes at the writing node; [`staleness`] reports how long other nodes took to show
//! a write, overall and per kind of fault ([`faults`]). The runs are in `tests/api/history/` (`HISTORY_CYCLES` makes them long).

pub(crate) mod check;
pub(crate) mod faults;
pub(crate) mod history;
pub(crate) mod staleness;
pub(crate) mod workload;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use check::{CHECKS, Violation};
use faults::Faults;
use history::Op;
use staleness::Staleness;

/// What a run came to.
pub(crate) struct Report {
    pub(crate) operations: usize,
    pub(crate) violations: Vec<Violation>,
    pub(crate) staleness: Staleness,
    /// The same per kind of fault under way when the write was answered (empty without faults).
    pub(crate) by_fault: BTreeMap<&'static str, Staleness>,
}

impl Report {
    pub(crate) fn of(history: &[Op]) -> Self {
        Self {
            operations: history.len(),
            violations: check::check(history),
            staleness: Staleness::of(history),
            by_fault: BTreeMap::new(),
        }
    }

    /// The same, with staleness per kind of fault as `faults` recorded them.
    pub(crate) fn with_faults(history: &[Op], faults: &Faults) -> Self {
        Self { by_fault: Staleness::by_fault(history, faults), ..Self::of(history) }
    }

    /// Each check with the number of its violations.
    pub(crate) fn verdicts(&self) -> Vec<(&'static str, usize)> {
        CHECKS
            .iter()
            .map(|name| (*name, self.violations.iter().filter(|v| v.check == *name).count()))
            .collect()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} operations", self.operations)?;
        for (check, violations) in self.verdicts() {
            writeln!(
                f,
                "  {check:<28} {}",
                if violations == 0 { "ok".to_string() } else { format!("{violations} VIOLATIONS") }
            )?;
        }
        writeln!(f, "  staleness at other nodes: {}", self.staleness)?;
        for (kind, staleness) in &self.by_fault {
            writeln!(f, "    {kind:<26} {staleness}")?;
        }
        // The first few, each with the slice of history that shows it.
        for violation in self.violations.iter().take(5) {
            write!(f, "{violation}")?;
        }
        Ok(())
    }
}
