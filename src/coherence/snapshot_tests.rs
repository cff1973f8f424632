//! The snapshot's file: what is written reads back the same, and anything else reads as none.

use super::*;

use crate::model::{PresenceUpdate, UserId};

fn record(user: &str, revision: u64, message: Option<&str>) -> (Box<str>, Entry) {
    let update =
        PresenceUpdate::new("busy", message.map(String::from), Some(600), Duration::from_secs(60)).unwrap();
    let stored = StoredPresence::from_update(&UserId::parse(user).unwrap(), update, None, "n1", Utc::now());
    let presence = Some(CompactPresence::from(&stored));
    (Box::from(user), Arc::new(Record { revision, presence }))
}

fn header(revision: u64) -> Header {
    Header { format: FORMAT, created: 42, revision, records: 0, written_at: Utc::now() }
}

/// Writes `records` at `path`, nothing standing in the way of their going in place.
fn write_all(path: &Path, revision: u64, records: &[(Box<str>, Entry)]) -> anyhow::Result<u64> {
    write(path, header(revision), records.iter().cloned(), || Ok(()))
}

fn head(first_revision: u64, last_revision: u64) -> Head {
    Head { last_revision, first_revision, created: 42, records: 10, last_written_at: None, placement: None }
}

#[test]
fn what_is_written_reads_back_and_the_file_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut records: Vec<_> =
        (0..1000).map(|i| record(&format!("user-{i}"), i + 1, Some("a \"quoted\" \\ line, é"))).collect();
    records.push(record("ann_b-7", 7, None));
    assert_eq!(write_all(&path, 1001, &records).unwrap(), 1001);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the node's user only");
    let read = take(&path).expect("reads back");
    assert!(!path.exists(), "removed once read");
    assert_eq!(read.revision(), 1001);
    let mut got: Vec<_> = read
        .records
        .iter()
        .flatten()
        .map(|(u, e)| (u.clone(), e.revision, e.presence.as_ref().unwrap().to_stored(u)))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<_> = records
        .iter()
        .map(|(u, e)| (u.clone(), e.revision, e.presence.as_ref().unwrap().to_stored(u)))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want);
    assert!(take(&path).is_none(), "no file, no snapshot");
}

#[test]
fn a_write_that_fails_leaves_nothing_aside_and_the_last_snapshot_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let records = vec![record("ann", 3, None)];
    write_all(&path, 3, &records).unwrap();
    let whole = std::fs::read(&path).unwrap();
    // The file cannot go in place: a directory is where the rename would put it.
    let blocked = dir.path().join("blocked.jsonl");
    std::fs::create_dir(&blocked).unwrap();
    assert!(write_all(&blocked, 3, &records).is_err());
    assert!(!blocked.with_extension("partial").exists(), "nothing left aside");
    // Records that turn out unsound once written (the watcher started over) do not go in place.
    let refused = write(&path, header(4), records.iter().cloned(), || anyhow::bail!("started over"));
    assert!(refused.is_err());
    assert!(!path.with_extension("partial").exists(), "nothing left aside");
    assert_eq!(std::fs::read(&path).unwrap(), whole, "the earlier snapshot is untouched");
}

#[test]
fn a_damaged_or_short_file_is_no_snapshot_and_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let records = vec![record("ann", 3, None), record("bob", 4, None)];
    write_all(&path, 4, &records).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    assert!(first.contains(r#""records":2"#), "the header counts what was written: {first}");
    std::fs::write(&path, format!("{}\n{rest}", first.replace(r#""records":2"#, r#""records":3"#))).unwrap();
    assert!(take(&path).is_none(), "two records where the header says three");
    assert!(!path.exists());
    write_all(&path, 4, &records).unwrap();
    let mut text = std::fs::read(&path).unwrap();
    let at = text.len() - 10;
    text[at] = b'{';
    std::fs::write(&path, &text).unwrap();
    assert!(take(&path).is_none(), "a record that does not decode");
    std::fs::write(&path, b"{\"format\":99}\n").unwrap();
    assert!(take(&path).is_none(), "another format");
    assert!(!path.exists());
}

#[test]
fn every_record_is_read_once_however_the_runs_fall() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let records: Vec<_> =
        (0..37).map(|i| record(&format!("u{i}-{}", "x".repeat(i % 7)), i as u64 + 1, None)).collect();
    write_all(&path, 37, &records).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    let mut line = Vec::new();
    BufReader::new(File::open(&path).unwrap()).read_until(b'\n', &mut line).unwrap();
    let body = line.len() as u64;
    // Every cut, one byte at a time: each line is read by exactly one of the two runs.
    for cut in body..=len {
        let mut users: Vec<_> = decode(&path, body, cut, body).unwrap().into_iter().map(|(u, _)| u).collect();
        users.extend(decode(&path, cut, len, body).unwrap().into_iter().map(|(u, _)| u));
        users.sort();
        let mut want: Vec<_> = records.iter().map(|(u, _)| u.clone()).collect();
        want.sort();
        assert_eq!(users, want, "cut at {cut}");
    }
}

#[test]
fn only_the_same_bucket_with_every_change_since_and_a_recent_snapshot_fits() {
    let now = Utc::now();
    let snapshot = Snapshot { header: header(100), records: Vec::new() };
    assert_eq!(snapshot.unfit(&head(1, 100), now), None, "nothing changed since");
    assert_eq!(snapshot.unfit(&head(101, 250), now), None, "every change after it is still there");
    let other = Head { created: 43, ..head(1, 200) };
    assert!(snapshot.unfit(&other, now).is_some(), "another bucket");
    assert!(snapshot.unfit(&head(1, 99), now).is_some(), "a bucket behind the snapshot");
    assert!(snapshot.unfit(&head(102, 250), now).is_some(), "revision 101 is gone");
    let later = now + chrono::Duration::from_std(MAX_AGE).unwrap() + chrono::Duration::seconds(1);
    assert!(snapshot.unfit(&head(1, 100), later).is_some(), "too old");
    let earlier = now - chrono::Duration::minutes(5);
    assert!(snapshot.unfit(&head(1, 100), earlier).is_some(), "written in the future: clocks moved");
}
