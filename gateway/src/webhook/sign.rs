//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): `webhook-signature:
//! v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">`, one `v1,` entry per
//! secret (space-separated), so a receiver can rotate secrets without missing a delivery.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
const PREFIX: &str = "whsec_";

/// `TANDEM_WEBHOOK_SECRET`: one or more `whsec_<base64>` keys. `Debug` shows how many, never
/// the keys.
#[derive(Clone, Default)]
pub struct Secrets(Vec<Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} keys)", self.0.len())
    }
}

impl Secrets {
    /// Parses space- or comma-separated `whsec_<base64>` secrets; `Err` says which is bad (by
    /// position, never by value).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (n, secret) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let encoded = secret.strip_prefix(PREFIX).ok_or_else(|| {
                format!(
                    "secret {} does not start with {PREFIX} (whsec_<base64>)",
                    n + 1
                )
            })?;
            let key = STANDARD
                .decode(encoded)
                .map_err(|e| format!("secret {} is not whsec_<base64>: {e}", n + 1))?;
            if key.len() < 16 {
                return Err(format!(
                    "secret {} is {} bytes; use at least 16 (24 to 64 are usual)",
                    n + 1,
                    key.len()
                ));
            }
            keys.push(key);
        }
        Ok(Self(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `webhook-signature` header's value for one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.0
            .iter()
            .map(|key| {
                // HMAC takes keys of any length.
                let mut mac = Hmac::<Sha256>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.to_string().as_bytes());
                mac.update(b".");
                mac.update(body);
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_specification_example() {
        // The example of the Standard Webhooks specification (and its libraries' tests).
        let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secrets.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn one_entry_per_secret_and_bad_secrets_named() {
        let secrets = Secrets::parse(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .unwrap();
        let header = secrets.sign("id", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.split(' ').all(|s| s.starts_with("v1,")));
        assert!(Secrets::parse("hunter2").unwrap_err().contains("secret 1"));
        assert!(Secrets::parse("whsec_!!!").is_err());
        assert!(Secrets::parse("whsec_AAAA").is_err());
        assert!(format!("{secrets:?}").contains("2 keys"));
    }
}
