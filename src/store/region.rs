//! The region's copy: on a leaf, a mirror of the center's bucket in the leaf's own JetStream
//! domain, on the leaf's disk. NATS keeps it up to date over the leafnode link (and catches it up
//! after an outage by itself); the node only reads it. A leaf that starts, or restarts, while its
//! center is away serves the presences the copy holds, marked stale, and resumes the center's
//! bucket after the copy's last revision (a mirror keeps the center's revisions). See
//! docs/architecture.md, "A region on its own".

use async_nats::jetstream::{
    self,
    stream::{self, External, Source, StorageType},
};

use super::{PresenceStore, StoreError};
use crate::{
    config::{CENTER_DOMAIN, KvConfig},
    nats::Caller,
};

/// Opens the copy, creating the mirror on first start (or bringing its retention up to date).
/// `local` is the leaf's own JetStream (no domain prefix): this needs nothing from the center.
pub(crate) async fn open(
    local: &jetstream::Context,
    cfg: &KvConfig,
    caller: Caller,
) -> Result<PresenceStore, StoreError> {
    caller.bounded("copy_open", local.create_or_update_stream(mirror(cfg))).await?;
    let kv = caller.bounded("copy_open", local.get_key_value(&cfg.bucket)).await?;
    Ok(PresenceStore::bound(kv, local, caller))
}

/// Throws the copy's content away and starts copying again from the first revision: the
/// center's bucket was replaced, and a mirror ignores revisions it believes it already holds.
/// Handles on the copy stay valid (they name the stream).
pub(crate) async fn renew(
    local: &jetstream::Context,
    cfg: &KvConfig,
    caller: &Caller,
) -> Result<(), StoreError> {
    let config = mirror(cfg);
    caller.bounded("copy_delete", local.delete_stream(&config.name)).await?;
    caller.bounded("copy_open", local.create_or_update_stream(config)).await?;
    Ok(())
}

/// The mirror's settings: one revision per key and the bucket's retention, like the center's.
fn mirror(cfg: &KvConfig) -> stream::Config {
    let name = format!("KV_{}", cfg.bucket);
    stream::Config {
        name: name.clone(),
        description: Some("Presence: this region's copy of the center's bucket (a mirror)".into()),
        max_messages_per_subject: 1,
        max_age: cfg.retention,
        storage: StorageType::File,
        num_replicas: 1,
        allow_rollup: true,
        deny_delete: true,
        // Read locally, by this node only: a mirror that answered the bucket's direct gets could
        // serve other nodes an older record than the center holds.
        allow_direct: true,
        mirror_direct: false,
        mirror: Some(Source {
            name,
            external: Some(External {
                api_prefix: format!("$JS.{CENTER_DOMAIN}.API"),
                delivery_prefix: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
