//! Standard Webhooks signatures: `webhook-signature` is `v1,` and the base64 HMAC-SHA256 of
//! `{id}.{timestamp}.{body}` under the endpoint's secret; during a rotation one per secret,
//! space-separated, the current one first.

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::hmac;

use crate::config::{Secret, webhook_secret_bytes};

/// An endpoint's signing keys: the current secret's, and the previous one's during a rotation.
pub(crate) struct Signer {
    keys: Vec<hmac::Key>,
}

impl Signer {
    /// The keys of `secret` and `previous` (checked when the configuration was loaded).
    pub(crate) fn new(secret: &Secret, previous: Option<&Secret>) -> Result<Self, &'static str> {
        let mut keys = Vec::new();
        for secret in std::iter::once(secret).chain(previous) {
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, &webhook_secret_bytes(secret)?));
        }
        Ok(Self { keys })
    }

    /// The `webhook-signature` header of one request.
    pub(crate) fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let signed = |key: &hmac::Key| {
            let mut context = hmac::Context::with_key(key);
            for part in [id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body] {
                context.update(part);
            }
            format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
        };
        self.keys.iter().map(signed).collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_signs_as_published_and_a_rotation_signs_twice() {
        // The example of the Standard Webhooks specification (also svix's test vector).
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        let signer = Signer::new(&secret, None).unwrap();
        let signed = signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let previous = Secret::new(format!("whsec_{}", STANDARD.encode([7u8; 32])));
        let both = Signer::new(&secret, Some(&previous)).unwrap().sign("m", 1, b"{}");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], Signer::new(&secret, None).unwrap().sign("m", 1, b"{}"), "the current first");
        assert!(Signer::new(&Secret::new("whsec_c2hvcnQ=".into()), None).is_err(), "too short");
    }
}
