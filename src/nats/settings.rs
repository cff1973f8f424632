//! Who may change the settings of the streams every node shares (the presence bucket and the
//! audit log), and what a change may not do by accident.
//!
//! Only the center manages them: it creates them, and brings their settings up to date, except
//! that it refuses to lower their replicas or retention unless `nats.allow_settings_reduction`
//! says so (fewer replicas lose fault tolerance; a shorter retention deletes records). A leaf only
//! binds to what the center made, and reports where its own configuration differs.

use std::time::Duration;

use async_nats::jetstream::{self, ErrorCode, context::GetStreamErrorKind, stream};

use super::{CallError, Caller};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingsError {
    #[error(transparent)]
    Call(#[from] CallError),
    /// A leaf found no stream yet: the center has not created it (or is not reachable).
    #[error("`{0}` does not exist yet; the center creates it")]
    NotYet(String),
    /// The configuration would reduce a stream, and the operator did not ask for it.
    #[error("{0}")]
    Refused(String),
}

impl SettingsError {
    /// Worth trying again in a moment (a refusal is not).
    pub(crate) fn transient(&self) -> bool {
        !matches!(self, SettingsError::Refused(_))
    }
}

/// Checks what `authority` may do to the shared stream `name`, given the settings this node's
/// configuration wants. Returns the stream's settings if it exists.
pub(crate) async fn check(
    js: &jetstream::Context,
    caller: &Caller,
    name: &str,
    authority: Authority,
    wanted: SharedStream,
) -> Result<Option<SharedStream>, SettingsError> {
    let existing = current(js, caller, name).await?;
    match (authority, existing) {
        (Authority::Bind, None) => Err(SettingsError::NotYet(name.to_string())),
        (Authority::Bind, Some(existing)) => {
            let differences = differences(existing, wanted);
            if !differences.is_empty() {
                tracing::warn!(
                    stream = name,
                    differences = %differences.join("; "),
                    "the shared stream's settings differ from this node's configuration; the center's settings apply"
                );
            }
            Ok(Some(existing))
        }
        (Authority::Manage { allow_reduction }, Some(existing)) => match reduction(name, existing, wanted) {
            Some(why) if !allow_reduction => Err(SettingsError::Refused(why)),
            _ => Ok(Some(existing)),
        },
        (Authority::Manage { .. }, None) => Ok(None),
    }
}

/// The stream's settings as the server has them now, if it exists.
pub(crate) async fn current(
    js: &jetstream::Context,
    caller: &Caller,
    name: &str,
) -> Result<Option<SharedStream>, CallError> {
    let get = async {
        match js.get_stream(name).await {
            Ok(stream) => Ok(Some(SharedStream::from(&stream.cached_info().config))),
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    };
    caller.bounded("stream_info", get).await
}

/// What a node may do to a shared stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Authority {
    /// Create it, or update it; `allow_reduction` lets an update lower replicas or retention.
    Manage { allow_reduction: bool },
    /// Use it as it is.
    Bind,
}

/// The settings of a shared stream that this node's configuration speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SharedStream {
    pub replicas: usize,
    /// `max_age`; zero means no limit.
    pub retention: Duration,
    /// Messages kept per subject; zero (or less) means no limit.
    pub per_subject: i64,
}

impl From<&stream::Config> for SharedStream {
    fn from(c: &stream::Config) -> Self {
        Self {
            replicas: c.num_replicas.max(1),
            retention: c.max_age,
            per_subject: c.max_messages_per_subject.max(0),
        }
    }
}

/// Whether a limit (0 for none) goes down: finite below the old one, or finite after none.
fn lowers<T: PartialOrd + Default>(existing: T, wanted: T) -> bool {
    let none = T::default();
    wanted != none && (existing == none || wanted < existing)
}

fn retention_text(d: Duration) -> String {
    if d.is_zero() { "unlimited".into() } else { humantime::format_duration(d).to_string() }
}

/// Why updating `existing` to `wanted` would reduce the stream, if it would.
pub(crate) fn reduction(name: &str, existing: SharedStream, wanted: SharedStream) -> Option<String> {
    let shorter =
        !existing.retention.is_zero() && !wanted.retention.is_zero() && wanted.retention < existing.retention
            || existing.retention.is_zero() && !wanted.retention.is_zero();
    let mut why = Vec::new();
    if wanted.replicas < existing.replicas {
        why.push(format!("lower its replicas from {} to {}", existing.replicas, wanted.replicas));
    }
    if shorter {
        why.push(format!(
            "shorten its retention from {} to {} (records older than that would be deleted)",
            retention_text(existing.retention),
            retention_text(wanted.retention)
        ));
    }
    if lowers(existing.per_subject, wanted.per_subject) {
        why.push(format!(
            "keep fewer messages per subject ({} instead of {}; older ones would be deleted)",
            wanted.per_subject,
            if existing.per_subject == 0 {
                "unlimited".to_string()
            } else {
                existing.per_subject.to_string()
            }
        ));
    }
    (!why.is_empty()).then(|| {
        format!(
            "this configuration would {} of `{name}`; refused. Set nats.allow_settings_reduction: true \
             to do it on purpose",
            why.join(" and ")
        )
    })
}

/// Where `existing` differs from what this node's configuration says, for a leaf's warning.
pub(crate) fn differences(existing: SharedStream, configured: SharedStream) -> Vec<String> {
    let mut out = Vec::new();
    if existing.replicas != configured.replicas {
        out.push(format!("replicas {} (configured here: {})", existing.replicas, configured.replicas));
    }
    if existing.per_subject != configured.per_subject {
        out.push(format!(
            "{} per subject (configured here: {})",
            existing.per_subject, configured.per_subject
        ));
    }
    if existing.retention != configured.retention {
        out.push(format!(
            "retention {} (configured here: {})",
            retention_text(existing.retention),
            retention_text(configured.retention)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn shared(replicas: usize, days: u64) -> SharedStream {
        SharedStream { replicas, retention: DAY * days as u32, per_subject: 0 }
    }

    #[test]
    fn lowering_replicas_or_retention_is_a_reduction_raising_them_is_not() {
        assert!(reduction("s", shared(3, 30), shared(1, 30)).unwrap().contains("replicas from 3 to 1"));
        assert!(reduction("s", shared(1, 30), shared(1, 7)).unwrap().contains("retention"));
        assert!(reduction("s", shared(1, 0), shared(1, 7)).is_some(), "unlimited to finite");
        assert!(reduction("s", shared(1, 7), shared(3, 30)).is_none());
        assert!(reduction("s", shared(1, 7), shared(1, 0)).is_none(), "finite to unlimited");
        assert_eq!(differences(shared(3, 30), shared(1, 30)).len(), 1);
        let capped = |n| SharedStream { per_subject: n, ..shared(1, 30) };
        assert!(reduction("s", capped(0), capped(1000)).unwrap().contains("per subject"));
        assert!(reduction("s", capped(1000), capped(500)).is_some());
        assert!(reduction("s", capped(1000), capped(0)).is_none());
    }
}
