//! HS256 JSON Web Tokens (RFC 7519), the subset Parley uses.
//!
//! Hand-written on `hmac` + `sha2` rather than the `jsonwebtoken` crate: its
//! current releases require a crypto backend that pulls RSA and elliptic-curve
//! code (or a C build of aws-lc) into every build, for an algorithm we never
//! accept. What is verified, and in this order: three base64url parts; a
//! header whose `alg` is exactly `HS256` (so `none` and algorithm confusion are
//! refused); the signature, compared in constant time; then the claims: `exp`
//! required and in the future, `nbf` (if present) in the past, `sub` present.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Clock skew tolerated between the operator's backend and this node.
pub const LEEWAY_S: i64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is not a JWT")]
    Malformed,
    #[error("token algorithm must be HS256")]
    Algorithm,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token claims are invalid: {0}")]
    Claims(String),
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// Signs `claims` with `secret`.
pub fn encode(secret: &[u8], claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Verifies a token against `secret` at time `now` (Unix seconds).
pub fn decode(secret: &[u8], token: &str, now: i64) -> Result<Claims, JwtError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(header_b64)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(JwtError::Malformed)?;
    if header.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| JwtError::Malformed)?;
    let mut m = mac(secret);
    m.update(header_b64.as_bytes());
    m.update(b".");
    m.update(payload_b64.as_bytes());
    m.verify_slice(&signature)
        .map_err(|_| JwtError::Signature)?;

    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| JwtError::Malformed)?;
    let claims: Claims =
        serde_json::from_slice(&payload).map_err(|e| JwtError::Claims(e.to_string()))?;
    if claims.exp + LEEWAY_S <= now {
        return Err(JwtError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf - LEEWAY_S > now) {
        return Err(JwtError::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "alice".into(),
            exp,
            iat: None,
            nbf: None,
        }
    }

    #[test]
    fn round_trip() {
        let t = encode(b"secret", &claims(2000));
        assert_eq!(decode(b"secret", &t, 1000).unwrap().sub, "alice");
    }

    #[test]
    fn known_vector() {
        // Produced independently (PyJWT): {"sub":"alice","exp":4102444800} signed with "s3cret".
        let token = encode(b"s3cret", &claims(4_102_444_800));
        let again = encode(b"s3cret", &claims(4_102_444_800));
        assert_eq!(token, again);
        assert!(token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
    }

    #[test]
    fn rejects_wrong_secret_and_tampering() {
        let t = encode(b"secret", &claims(2000));
        assert_eq!(decode(b"other", &t, 1000), Err(JwtError::Signature));
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"mallory","exp":2000}"#);
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[1] = &forged_payload;
        assert_eq!(
            decode(b"secret", &parts.join("."), 1000),
            Err(JwtError::Signature)
        );
    }

    #[test]
    fn rejects_alg_none_and_garbage() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","exp":9999999999}"#);
        assert_eq!(
            decode(b"secret", &format!("{header}.{payload}."), 0),
            Err(JwtError::Algorithm)
        );
        assert_eq!(decode(b"secret", "", 0), Err(JwtError::Malformed));
        assert_eq!(decode(b"secret", "a.b", 0), Err(JwtError::Malformed));
        assert_eq!(decode(b"secret", "a.b.c.d", 0), Err(JwtError::Malformed));
        assert_eq!(decode(b"secret", "!!.??.**", 0), Err(JwtError::Malformed));
    }

    #[test]
    fn expiry_with_leeway() {
        let t = encode(b"k", &claims(1000));
        assert!(decode(b"k", &t, 1000 + LEEWAY_S - 1).is_ok());
        assert_eq!(decode(b"k", &t, 1000 + LEEWAY_S), Err(JwtError::Expired));
        let mut c = claims(5000);
        c.nbf = Some(2000);
        let t = encode(b"k", &c);
        assert_eq!(decode(b"k", &t, 1000), Err(JwtError::NotYetValid));
        assert!(decode(b"k", &t, 2000).is_ok());
    }

    #[test]
    fn missing_exp_is_rejected() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice"}"#);
        let input = format!("{header}.{payload}");
        let mut m = mac(b"k");
        m.update(input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        assert!(matches!(
            decode(b"k", &format!("{input}.{sig}"), 0),
            Err(JwtError::Claims(_))
        ));
    }
}
