//! The bucket as this node bound it: async-nats' handle, and what the node's own writes to it
//! need beside it.

use async_nats::jetstream::{self, kv};

use crate::nats;

/// The bucket as bound: async-nats' handle (what `Deref` gives), and what a compare-and-set
/// sends with instead of it ([`nats::acked`]).
pub(crate) struct Bucket {
    kv: kv::Store,
    pub(super) client: async_nats::Client,
    /// Where a put of a key goes, but for the key ([`nats::kv_put_prefix`]).
    pub(super) put_to: String,
}

impl Bucket {
    /// `kv`, opened through `js`, whose API prefix is `api`.
    pub(super) fn new(kv: kv::Store, js: &jetstream::Context, api: &str) -> Self {
        Self { put_to: nats::kv_put_prefix(&kv, api), client: js.client(), kv }
    }
}

impl std::ops::Deref for Bucket {
    type Target = kv::Store;
    fn deref(&self) -> &kv::Store {
        &self.kv
    }
}
