//! Standard Webhooks signatures: the secret (`whsec_<base64>`) and the
//! `webhook-signature` header, `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
//!
//! Owns only the arithmetic of the specification; when to sign and what is sent is
//! `delivery`'s.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a secret as the specification writes it.
const PREFIX: &str = "whsec_";
/// Bytes of a new key: the specification asks for 24 to 64.
const KEY_BYTES: usize = 32;

/// A webhook's signing key. It is a key, not a password: the leader needs it to sign,
/// so it is stored as it is; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A secret that is not `whsec_` and base64.
#[derive(Debug, thiserror::Error)]
#[error("a webhook secret must be whsec_ followed by base64")]
pub(crate) struct BadSecret;

impl Secret {
    /// A fresh random key.
    pub(crate) fn generate() -> Self {
        Secret { key: rand::random::<[u8; KEY_BYTES]>().to_vec() }
    }

    /// Reads `whsec_<base64>`: the key is the decoded part after the prefix.
    ///
    /// # Errors
    /// [`BadSecret`] when the prefix is missing or the rest is not base64.
    pub(crate) fn parse(text: &str) -> Result<Self, BadSecret> {
        let encoded = text.strip_prefix(PREFIX).ok_or(BadSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| BadSecret)?;
        if key.is_empty() {
            return Err(BadSecret);
        }
        Ok(Secret { key })
    }

    /// `whsec_<base64>`, as it is shown once at creation and stored.
    pub(crate) fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// The `webhook-signature` header's value for message `id` sent at `timestamp`
    /// (unix seconds) with `body`.
    pub(crate) fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's published vector (standard-webhooks, libraries' tests).
    #[test]
    fn the_specifications_test_vector_is_signed_exactly() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_signature_changes_with_each_of_id_timestamp_and_body() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let base = secret.sign("msg_1", 10, b"{}");
        assert_ne!(base, secret.sign("msg_2", 10, b"{}"));
        assert_ne!(base, secret.sign("msg_1", 11, b"{}"));
        assert_ne!(base, secret.sign("msg_1", 10, b"{ }"));
    }

    #[test]
    fn generated_secrets_read_back_and_never_show_in_debug() {
        let secret = Secret::generate();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(Secret::parse(&text).unwrap(), secret);
        assert_ne!(Secret::generate(), secret);
        assert_eq!(format!("{secret:?}"), "Secret(…)");
        for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_"] {
            assert!(Secret::parse(bad).is_err(), "{bad}");
        }
    }
}
