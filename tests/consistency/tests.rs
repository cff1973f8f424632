//! Each check on a hand-made history that breaks it (a check that cannot fail is worse than
//! none), and one history that keeps every promise.

use super::{
    Report,
    check::{self, Violation},
    faults::Faults,
    history::{Kind, Op, Outcome},
};

const MS: u64 = 1_000_000;

/// An operation of `client` at `node` on user `u`, from `at` ms to `to` ms.
fn op(
    client: usize,
    node: &str,
    kind: Kind,
    (at, to): (u64, u64),
    outcome: Outcome,
    seen: Option<(u64, &str)>,
) -> Op {
    Op {
        client,
        node: node.into(),
        kind,
        user: "u".into(),
        invoked_at: at * MS,
        returned_at: to * MS,
        outcome,
        revision: seen.map(|(r, _)| r),
        value: seen.map(|(_, v)| v.to_string()),
    }
}

fn write(client: usize, node: &str, span: (u64, u64), revision: u64, value: &str) -> Op {
    op(client, node, Kind::Write, span, Outcome::Ok, Some((revision, value)))
}

fn read(client: usize, node: &str, kind: Kind, span: (u64, u64), seen: Option<(u64, &str)>) -> Op {
    let outcome = if seen.is_some() { Outcome::Ok } else { Outcome::Absent };
    op(client, node, kind, span, outcome, seen)
}

fn only(violations: Vec<Violation>, check: &str) -> Vec<Violation> {
    assert!(violations.iter().all(|v| v.check == check), "{violations:#?}");
    violations
}

#[test]
fn a_history_that_keeps_every_promise_passes() {
    let history = vec![
        read(2, "leaf-a", Kind::Read, (0, 1), None),
        write(1, "center", (2, 4), 1, "v1"),
        read(1, "center", Kind::Read, (5, 6), Some((1, "v1"))),
        read(2, "leaf-a", Kind::Live, (9, 9), Some((1, "v1"))),
        write(3, "leaf-a", (10, 14), 3, "v3"),
        op(4, "center", Kind::Write, (11, 40), Outcome::Unknown, None),
        read(2, "leaf-a", Kind::MultiRead, (15, 16), Some((3, "v3"))),
        read(1, "center", Kind::Read, (20, 21), Some((3, "v3"))),
        read(9, "center", Kind::Final, (50, 51), Some((3, "v3"))),
        read(9, "leaf-a", Kind::Final, (50, 51), Some((3, "v3"))),
    ];
    let report = Report::of(&history);
    assert!(report.violations.is_empty(), "{report}");
    assert_eq!(
        report.staleness.count(),
        2,
        "v1 at leaf-a (live), v3 at the center (a read; finals do not count)"
    );
    assert_eq!(report.staleness.quantile(1.0), Some(7.0), "v3's 200 at 14 ms, seen at the center at 21 ms");
}

#[test]
fn a_write_acknowledged_first_with_the_higher_revision_breaks_real_time_order() {
    let history = [write(1, "center", (0, 10), 5, "a"), write(2, "leaf-a", (20, 30), 4, "b")];
    let ops: Vec<&Op> = history.iter().collect();
    let found = only(check::real_time_order("u", &ops), "real-time order");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].ops.len(), 2, "the slice: both writes");
    // Overlapping writes may take either order.
    let concurrent = [write(1, "center", (0, 25), 5, "a"), write(2, "leaf-a", (20, 30), 4, "b")];
    assert!(check::real_time_order("u", &concurrent.iter().collect::<Vec<_>>()).is_empty());
}

#[test]
fn a_value_nobody_wrote_or_at_another_revision_breaks_integrity() {
    let history = [
        write(1, "center", (0, 1), 1, "a"),
        op(2, "center", Kind::Write, (0, 1), Outcome::Failed, Some((0, "failed"))),
        op(3, "center", Kind::Write, (0, 9), Outcome::Unknown, Some((0, "maybe"))),
        read(4, "leaf-a", Kind::Read, (2, 3), Some((1, "ghost"))),
        read(4, "leaf-a", Kind::Read, (4, 5), Some((2, "a"))),
        read(4, "leaf-a", Kind::Read, (6, 7), Some((3, "failed"))),
        read(4, "leaf-a", Kind::Read, (8, 9), Some((4, "maybe"))),
    ];
    let found = only(check::integrity("u", &history.iter().collect::<Vec<_>>()), "integrity");
    assert_eq!(found.len(), 3, "nobody's value, a wrong revision, a failed write's value: {found:#?}");
}

#[test]
fn a_final_read_below_an_acknowledged_write_is_a_lost_write() {
    let history = [
        write(1, "center", (0, 1), 7, "a"),
        read(9, "center", Kind::Final, (50, 51), Some((7, "a"))),
        read(9, "leaf-a", Kind::Final, (50, 51), Some((5, "old"))),
        read(9, "leaf-b", Kind::Final, (50, 51), None),
        // Answered 200, and nowhere in the audit log.
        op(2, "leaf-a", Kind::Write, (2, 3), Outcome::Ok, None),
    ];
    let found =
        only(check::no_lost_write("u", &history.iter().collect::<Vec<_>>()), "no lost acknowledged write");
    assert_eq!(found.len(), 3, "leaf-a behind, leaf-b without it, a write never stored");
}

#[test]
fn a_client_that_sees_a_revision_go_back_breaks_monotonic_reads() {
    let history = [
        read(1, "leaf-a", Kind::Read, (0, 1), Some((5, "e"))),
        read(1, "leaf-a", Kind::MultiRead, (2, 3), Some((3, "c"))),
        read(2, "leaf-b", Kind::Live, (4, 4), Some((6, "f"))),
        read(2, "leaf-b", Kind::Read, (5, 6), None),
        // Another client behind the first is fine: each client on its own.
        read(3, "leaf-a", Kind::Read, (7, 8), Some((2, "b"))),
    ];
    let found = only(check::monotonic_reads("u", &history.iter().collect::<Vec<_>>()), "monotonic reads");
    assert_eq!(found.len(), 2, "5 then 3; a live 6 then never seen: {found:#?}");
}

#[test]
fn a_client_that_reads_less_than_it_wrote_at_that_node_breaks_read_your_writes() {
    let history = [
        write(1, "center", (0, 2), 4, "d"),
        read(1, "center", Kind::Read, (3, 4), Some((2, "b"))),
        // At another node, or read by another client, it may take a moment.
        read(1, "leaf-a", Kind::Read, (3, 4), Some((2, "b"))),
        read(2, "center", Kind::Read, (3, 4), Some((2, "b"))),
        // A read that began before the 200 may miss it.
        read(1, "center", Kind::Read, (1, 3), Some((2, "b"))),
    ];
    let found = only(check::read_your_writes("u", &history.iter().collect::<Vec<_>>()), "read-your-writes");
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn a_report_names_each_check_and_shows_the_slice() {
    let history = [write(1, "center", (0, 10), 5, "a"), write(2, "leaf-a", (20, 30), 4, "b")];
    let report = Report::of(&history).to_string();
    assert!(report.contains("real-time order") && report.contains("1 VIOLATIONS"), "{report}");
    assert!(report.contains("integrity                    ok"), "{report}");
    assert!(report.contains("client   2 @leaf-a"), "the ops that show it: {report}");
}

#[test]
fn staleness_is_reported_per_kind_of_fault() {
    let faults = Faults::default();
    let cut = faults.begin("link cut", 10 * MS);
    faults.end(cut, 30 * MS);
    faults.at("paused", 25 * MS, std::time::Duration::from_millis(10));
    let history = [
        // Answered in calm: seen 5 ms later.
        write(1, "center", (0, 2), 1, "a"),
        read(2, "leaf-a", Kind::Read, (6, 7), Some((1, "a"))),
        // Answered during the cut alone: seen 20 ms later.
        write(1, "center", (11, 12), 2, "b"),
        read(2, "leaf-a", Kind::Live, (32, 32), Some((2, "b"))),
        // Answered while both held: seen 10 ms later.
        write(1, "center", (26, 27), 3, "c"),
        read(2, "leaf-a", Kind::Read, (36, 37), Some((3, "c"))),
    ];
    let report = Report::with_faults(&history, &faults);
    let p50 = |kind: &str| report.by_fault[kind].quantile(0.5).unwrap();
    assert_eq!((p50("calm"), p50("link cut"), p50("mixed")), (5.0, 20.0, 10.0), "{report}");
    assert_eq!(report.staleness.count(), 3);
    assert_eq!(faults.kind_at(36 * MS), "calm");
    assert!(report.to_string().contains("link cut"), "{report}");
}
