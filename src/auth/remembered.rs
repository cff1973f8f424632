//! Tokens verified already, remembered until they expire: a client that writes again with the
//! same token is not verified again (an HMAC, two base64 decodings and a JSON parse: 38,000 of a
//! PUT's 280,000 instructions, measured with callgrind).
//!
//! Only tokens that passed [`super::Authenticator::verify`] in full are remembered, keyed by the
//! whole token (a hit is the very same bytes, so the same signature, claims and answer), with the
//! window in which that answer holds: from `max(iat, nbf)` to `exp`, both widened by the leeway,
//! as the full check would judge them. Outside it the token is verified again, which gives the
//! precise refusal. The secrets are fixed for the life of the authenticator that holds this, so
//! nothing remembered outlives the key that verified it. Bounded by the bytes it holds.

use std::sync::Arc;

use quick_cache::{Weighter, sync::Cache};

use super::{Claims, LEEWAY_SECS, Verified};

/// What the remembered tokens may take, token bytes and subjects included.
const CAPACITY_BYTES: u64 = 8 << 20;
/// Longer tokens are verified every time (they would crowd out the usual ones).
const LONGEST: usize = 4 << 10;
/// Counted per token beside its bytes: the entry, its `Arc`, the table's slot.
const OVERHEAD: u64 = 128;

#[derive(Clone)]
pub(super) struct Remembered {
    tokens: Arc<Cache<Box<str>, Arc<Held>, ByBytes>>,
}

struct Held {
    verified: Verified,
    /// The first and last second (Unix time) in which the token is valid.
    from: u64,
    until: u64,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<Box<str>, Arc<Held>> for ByBytes {
    fn weight(&self, token: &Box<str>, held: &Arc<Held>) -> u64 {
        let rooms: usize = held.verified.rooms.iter().map(String::len).sum();
        (token.len() + held.verified.subject.len() + rooms) as u64 + OVERHEAD
    }
}

impl Remembered {
    pub(super) fn new() -> Self {
        let estimated = (CAPACITY_BYTES / 512) as usize;
        Self { tokens: Arc::new(Cache::with_weighter(estimated, CAPACITY_BYTES, ByBytes)) }
    }

    /// The answer of the full check for `token` at `now`, if it was verified before and that
    /// answer still holds.
    pub(super) fn recall(&self, token: &str, now: u64) -> Option<Verified> {
        let held = self.tokens.get(token)?;
        (held.from <= now && now <= held.until).then(|| held.verified.clone())
    }

    /// Remembers `token`, which the full check found valid with these `claims`.
    pub(super) fn keep(&self, token: &str, claims: &Claims, verified: &Verified) {
        if token.len() > LONGEST {
            return;
        }
        let from = claims.iat.max(claims.nbf.unwrap_or(0)).saturating_sub(LEEWAY_SECS);
        let until = claims.exp.saturating_add(LEEWAY_SECS);
        self.tokens.insert(token.into(), Arc::new(Held { verified: verified.clone(), from, until }));
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.tokens.len()
    }
}
