//! HS256 tokens minted locally with the fleet's shared secret — what an
//! operator's backend does for its users — so a run of 100k users needs no
//! register call (and no argon2 hashing on the node under test).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signer for one secret.
#[derive(Clone)]
pub struct Minter {
    mac: Hmac<Sha256>,
    header: String,
}

impl Minter {
    pub fn new(secret: &[u8]) -> anyhow::Result<Self> {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .map_err(|e| anyhow::anyhow!("unusable JWT secret: {e}"))?;
        Ok(Self {
            mac,
            header: URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        })
    }

    /// A JWT with claims `{"sub": user, "exp": exp}` (exp in Unix seconds).
    pub fn mint(&self, user: &str, exp: i64) -> String {
        let claims = serde_json::json!({ "sub": user, "exp": exp });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{}.{payload}", self.header);
        let mut mac = self.mac.clone();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_hs256_implementation() {
        // Computed with Python's hmac + hashlib for
        // {"exp":4102444800,"sub":"alice"} and the secret "s3cret".
        let expected = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                        eyJleHAiOjQxMDI0NDQ4MDAsInN1YiI6ImFsaWNlIn0.\
                        bNdE5tqJJGPtdazQnpLcZ78sco63JS0Uc0DUStZu_aE";
        let minter = Minter::new(b"s3cret").unwrap();
        assert_eq!(minter.mint("alice", 4_102_444_800), expected);
    }

    #[test]
    fn the_secret_changes_the_signature() {
        let a = Minter::new(b"one").unwrap().mint("alice", 1);
        let b = Minter::new(b"two").unwrap().mint("alice", 1);
        assert_ne!(a, b);
        assert_eq!(
            a.split('.').take(2).collect::<Vec<_>>(),
            b.split('.').take(2).collect::<Vec<_>>()
        );
    }
}
