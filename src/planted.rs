//! Bugs planted on purpose, to show that the history checker finds them (docs/testing.md, "The
//! history checker"): only in a build with the `planted-bugs` feature, and then only the one
//! named in `PLANTED_BUG`. A normal build has none: `planted` is `false`, and the
//! compiler removes what it guards.
//!
//! - `stale-watcher`: the watcher lands an older revision over the newer one the cache holds.
//! - `no-cache-before-200`: the write path answers before the record lands in the cache.
//! - `unconfirmed-200`: a write whose acknowledgement never came is answered 200.
//! - `erasure-unmarked`: an erasure leaves no marker in the audit log (found by the erasure
//!   tests, `tests/api/lifecycle/erasure.rs`, not by the history checker, which erases nobody).

/// Whether `bug` is planted in this run.
#[cfg(feature = "planted-bugs")]
pub(crate) fn planted(bug: &str) -> bool {
    std::env::var("PLANTED_BUG").is_ok_and(|planted| planted == bug)
}

/// Whether `bug` is planted in this run: never, in this build.
#[cfg(not(feature = "planted-bugs"))]
pub(crate) const fn planted(_bug: &str) -> bool {
    false
}
