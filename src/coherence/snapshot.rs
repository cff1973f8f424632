//! The cache's snapshot: the presences a center node's cache held, with the revision its
//! watcher had applied, written next to the embedded server's store when the node stops and,
//! while it runs, every `cache.snapshot_interval` ([`super::keeper`]). The next start reads them
//! from that one file (decoded on every core) instead of a million messages through a consumer,
//! and the watcher carries on from that revision ([`super::restore`]). The file is removed as
//! soon as it is read, and written again by the running node.
//!
//! Used only where the node owns the store beside it: a center with an embedded server and no
//! encryption at rest (the snapshot is plain JSON, like the bucket's own values). See
//! docs/architecture.md, "The cache's snapshot".

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, BufWriter, ErrorKind, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    cache::Entry,
    config::{Config, NodeType},
    model::{CompactPresence, Record, StoredPresence},
    store::{Head, MARKER_TTL},
};

pub(super) const FORMAT: u32 = 1;
/// The file's name in `nats.data_dir`.
pub(crate) const FILE_NAME: &str = "cache-snapshot.jsonl";
/// The oldest snapshot a start uses: the bucket's markers for records its retention removed live
/// this long, and a snapshot older than that may hold such a record with nothing to say it left.
const MAX_AGE: Duration = MARKER_TTL;
/// How far this node's clock may have stepped back since it wrote a snapshot it still uses.
const CLOCK_STEP: chrono::Duration = chrono::Duration::seconds(60);

/// Where `config`'s node keeps its snapshot: a center with an embedded server whose store is
/// not encrypted.
pub(crate) fn path(config: &Config) -> Option<PathBuf> {
    let nats = &config.nats;
    let kept =
        nats.embedded && config.service.node_type == NodeType::Center && nats.jetstream.encryption.is_none();
    kept.then(|| nats.data_dir.join(FILE_NAME))
}

/// The snapshot being read while the node starts: begun once the embedded server is up (begun
/// before, it slowed that server's start from 0.7 to 1.1 s to healthy with a million on two
/// cores, and hardly made the cache warm sooner).
pub(crate) struct Preload(tokio::task::JoinHandle<Option<Snapshot>>);

impl Preload {
    /// Starts reading `config`'s node's snapshot, if it keeps one and one is there. Removes what
    /// a stop that did not finish writing left aside, and a snapshot the node no longer keeps (its
    /// store now encrypted, say): a plaintext copy of the presences must not outlive the setting
    /// that allowed it.
    pub(crate) fn start(config: &Config) -> Option<Self> {
        if !config.nats.embedded {
            return None;
        }
        let file = config.nats.data_dir.join(FILE_NAME);
        let _ = std::fs::remove_file(file.with_extension("partial"));
        if path(config).is_none() {
            match std::fs::remove_file(&file) {
                Ok(()) => {
                    tracing::info!(path = %file.display(), "removed a cache snapshot this node no longer keeps")
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(error = %e, path = %file.display(), "cannot remove a cache snapshot")
                }
            }
            return None;
        }
        file.exists().then(|| Self(tokio::task::spawn_blocking(move || take(&file))))
    }

    /// The snapshot, once read (`None` if it did not read whole).
    pub(crate) async fn read(self) -> Option<Snapshot> {
        self.0.await.ok().flatten()
    }
}

/// The file's first line.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Header {
    pub format: u32,
    /// When the bucket's stream was created (nanoseconds): which bucket the records are from.
    pub created: i128,
    /// Every change up to this revision is in the records.
    pub revision: u64,
    pub records: u64,
    pub written_at: DateTime<Utc>,
}

/// Records as one reader decoded them.
pub(crate) type Run = Vec<(Box<str>, Entry)>;

/// A snapshot read back, not yet checked against the bucket.
pub(crate) struct Snapshot {
    header: Header,
    pub records: Vec<Run>,
}

impl Snapshot {
    /// The revision the records are at.
    pub(crate) fn revision(&self) -> u64 {
        self.header.revision
    }

    /// Why the bucket as `head` shows it cannot continue from this snapshot, if it cannot: it is
    /// another bucket, it lost changes made after the snapshot (purged, restored from a backup),
    /// or the snapshot is too old.
    pub(crate) fn unfit(&self, head: &Head, now: DateTime<Utc>) -> Option<&'static str> {
        let h = &self.header;
        let age = now.signed_duration_since(h.written_at);
        if head.created != h.created {
            Some("the bucket is not the one the snapshot was taken of")
        } else if head.last_revision < h.revision || head.first_revision > h.revision + 1 {
            Some("the bucket no longer holds every change since the snapshot")
        } else if age > chrono::Duration::from_std(MAX_AGE).unwrap_or(chrono::Duration::MAX)
            || age < -CLOCK_STEP
        {
            Some("the snapshot is too old")
        } else {
            None
        }
    }
}

/// Room for the header on the file's first line: it is written there once the records are, with
/// their count, and the rest of the line stays blank (JSON allows the trailing spaces).
const HEADER_ROOM: usize = 256;

/// Writes `records` (their count goes into `header`) aside and, if `sound` then says they are,
/// renames the file into place: a file at `path` is always whole. What was written aside goes if
/// anything fails (a full disk, say). Records are written as they come, so that a snapshot of a
/// running node's cache holds no copy of it in memory.
pub(super) fn write(
    path: &Path,
    header: Header,
    records: impl IntoIterator<Item = (Box<str>, Entry)>,
    sound: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let partial = path.with_extension("partial");
    let written = write_to(&partial, header, records).and_then(|written| {
        sound()?;
        std::fs::rename(&partial, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(written)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

fn write_to(
    partial: &Path,
    mut header: Header,
    records: impl IntoIterator<Item = (Box<str>, Entry)>,
) -> anyhow::Result<u64> {
    // Readable by this node's user only, like the store beside it.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&[b' '; HEADER_ROOM])?;
    out.write_all(b"\n")?;
    let mut written = 0;
    for (user, entry) in records {
        if let Some(presence) = &entry.presence {
            serde_json::to_writer(&mut out, &(entry.revision, presence.to_stored(&user)))?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    header.records = written;
    let line = serde_json::to_vec(&header)?;
    anyhow::ensure!(line.len() <= HEADER_ROOM, "a header of {} bytes", line.len());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&line)?;
    file.sync_all()?;
    Ok(written)
}

/// Reads the snapshot at `path` and removes the file, whatever it holds. `None` if there is none,
/// or if it does not read whole (logged).
pub(crate) fn take(path: &Path) -> Option<Snapshot> {
    let started = std::time::Instant::now();
    let read = match read(path) {
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == ErrorKind::NotFound) => {
            return None;
        }
        read => read,
    };
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(error = %e, path = %path.display(), "cannot remove the cache snapshot");
    }
    let read = read
        .inspect_err(
            |e| tracing::warn!(error = %format!("{e:#}"), "cache snapshot unusable; reading the bucket"),
        )
        .ok()?;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(records = read.header.records, elapsed_ms, "cache snapshot read");
    Some(read)
}

/// Reads the file in as many runs as there are cores, each through a small buffer of its own (a
/// buffer the size of the file would cost the kernel a quarter of a gigabyte of fresh pages to
/// zero, at a million records).
fn read(path: &Path) -> anyhow::Result<Snapshot> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut line = Vec::new();
    BufReader::new(file).read_until(b'\n', &mut line)?;
    let header: Header = serde_json::from_slice(&line).context("header")?;
    anyhow::ensure!(header.format == FORMAT, "format {} is not {FORMAT}", header.format);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8) as u64;
    let body = line.len() as u64;
    let step = (len - body).div_ceil(threads).max(1);
    let runs: Vec<(u64, u64)> = (0..threads)
        .map(|i| (body + i * step, (body + (i + 1) * step).min(len)))
        .filter(|(s, e)| s < e)
        .collect();
    let decoded: Vec<anyhow::Result<Run>> = std::thread::scope(|scope| {
        let running: Vec<_> =
            runs.iter().map(|&(from, to)| scope.spawn(move || decode(path, from, to, body))).collect();
        running.into_iter().map(|t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))).collect()
    });
    let records = decoded.into_iter().collect::<anyhow::Result<Vec<Run>>>()?;
    let count: usize = records.iter().map(Vec::len).sum();
    anyhow::ensure!(count as u64 == header.records, "{count} records, the header says {}", header.records);
    Ok(Snapshot { header, records })
}

/// The records whose lines start in `from..to` (the body starting at `body`).
fn decode(path: &Path, from: u64, to: u64, body: u64) -> anyhow::Result<Run> {
    let mut file = File::open(path)?;
    // A line starts after a newline: from the byte before `from`, the first newline ends the line
    // that an earlier run reads.
    file.seek(SeekFrom::Start(if from == body { from } else { from - 1 }))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(4096);
    let mut at = from;
    if from != body {
        at += (reader.read_until(b'\n', &mut line)? as u64).saturating_sub(1);
    }
    let mut records = Vec::with_capacity(((to - from) / 200) as usize);
    while at < to {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        at += n as u64;
        let (revision, stored): (u64, StoredPresence) = serde_json::from_slice(&line).context("a record")?;
        let presence = Some(CompactPresence::from(&stored));
        records.push((stored.user_id.into_boxed_str(), Arc::new(Record { revision, presence })));
    }
    Ok(records)
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
