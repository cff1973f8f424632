//! A history: every operation the workload made, as the client saw it. Times are nanoseconds
//! since the workload began, on one clock (the runner's).

use serde::{Deserialize, Serialize};

/// What an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// A PUT of a unique value.
    Write,
    /// A single-user GET.
    Read,
    /// One user's entry in a multi-user read.
    MultiRead,
    /// A change delivered on a live stream (its `returned_at` is when it arrived).
    Live,
    /// A read after the faults healed, on every node: what the history ended with.
    Final,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// 200: a write stored, a read answered.
    Ok,
    /// A read of a user never written (404), or shown as never seen.
    Absent,
    /// Refused or failed for certain: nothing was stored (a 503 saying so, a 4xx).
    Failed,
    /// No answer, or "outcome unknown": the write may or may not have landed.
    Unknown,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Op {
    pub(crate) client: usize,
    pub(crate) node: String,
    pub(crate) kind: Kind,
    pub(crate) user: String,
    pub(crate) invoked_at: u64,
    pub(crate) returned_at: u64,
    pub(crate) outcome: Outcome,
    /// The KV revision written, or read.
    pub(crate) revision: Option<u64>,
    /// The value written, or read (unique per write).
    pub(crate) value: Option<String>,
}

impl Op {
    /// A write the service acknowledged, with its revision.
    pub(crate) fn acked_write(&self) -> Option<u64> {
        (self.kind == Kind::Write && self.outcome == Outcome::Ok).then_some(self.revision).flatten()
    }

    /// What a read (of any kind) saw: its revision, when it saw a value.
    pub(crate) fn seen(&self) -> Option<u64> {
        (self.kind != Kind::Write && self.outcome == Outcome::Ok).then_some(self.revision).flatten()
    }

    /// Where a read stands in its user's order: 0 for a user not seen, the revision for a value;
    /// `None` when it cannot be placed (no answer, or a value whose revision nobody knows: a
    /// write whose outcome was unknown, that landed, and was overwritten before any record of
    /// it was kept).
    pub(crate) fn order(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Absent => Some(0),
            Outcome::Ok => self.revision,
            _ => None,
        }
    }
}

/// A compact line for a violation's report.
pub(crate) fn line(op: &Op) -> String {
    format!(
        "client {:>3} @{:<10} {:<9} {:<12} [{:>10.3} ms .. {:>10.3} ms] {:?} rev {} {}",
        op.client,
        op.node,
        format!("{:?}", op.kind).to_lowercase(),
        op.user,
        op.invoked_at as f64 / 1e6,
        op.returned_at as f64 / 1e6,
        op.outcome,
        op.revision.map_or("-".to_string(), |r| r.to_string()),
        op.value.as_deref().unwrap_or("-"),
    )
}
