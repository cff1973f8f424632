//! The faults a run injected, as windows on the recorder's clock, so that staleness can be
//! reported per fault kind: a write belongs to the fault whose window holds the moment it was
//! answered ("calm" outside every window, "mixed" inside several kinds at once).

use std::sync::{Arc, Mutex};

/// One fault: its kind, and from when to when (nanoseconds on the recorder's clock).
#[derive(Debug, Clone)]
struct Window {
    kind: &'static str,
    from: u64,
    to: Option<u64>,
}

/// The fault windows of a run (a cheap `Clone` handle).
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    windows: Arc<Mutex<Vec<Window>>>,
}

/// An open fault window, closed by [`Faults::end`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opened(usize);

impl Faults {
    pub(crate) fn begin(&self, kind: &'static str, at: u64) -> Opened {
        let mut windows = self.windows.lock().expect("faults lock");
        windows.push(Window { kind, from: at, to: None });
        Opened(windows.len() - 1)
    }

    pub(crate) fn end(&self, opened: Opened, at: u64) {
        self.windows.lock().expect("faults lock")[opened.0].to = Some(at);
    }

    /// A fault of no duration to speak of, counted for `lasting` after `at`.
    pub(crate) fn at(&self, kind: &'static str, at: u64, lasting: std::time::Duration) {
        let opened = self.begin(kind, at);
        self.end(opened, at + lasting.as_nanos() as u64);
    }

    /// Whether a fault of one of `kinds` was under way at some moment from `from` to `to`.
    pub(crate) fn during(&self, kinds: &[&str], (from, to): (u64, u64)) -> bool {
        let windows = self.windows.lock().expect("faults lock");
        windows.iter().any(|w| kinds.contains(&w.kind) && w.from <= to && w.to.is_none_or(|end| from <= end))
    }

    /// The kind of fault under way at `at`: "calm", one kind, or "mixed".
    pub(crate) fn kind_at(&self, at: u64) -> &'static str {
        let windows = self.windows.lock().expect("faults lock");
        let mut kinds =
            windows.iter().filter(|w| w.from <= at && w.to.is_none_or(|to| at <= to)).map(|w| w.kind);
        match (kinds.next(), kinds.find(|_| true)) {
            (None, _) => "calm",
            (Some(kind), None) => kind,
            (Some(first), Some(second)) if first == second => first,
            _ => "mixed",
        }
    }
}
