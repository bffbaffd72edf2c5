//! Parley's tokens: HS256 JSON Web Tokens (RFC 7519), the subset Parley uses.
//!
//! The one implementation every Parley crate signs and verifies with: the node
//! (`auth`), `parley token`, the load tester and the test kit. Pure functions,
//! no I/O: the caller passes the time.
//!
//! Hand-written on `hmac` + `sha2` rather than the `jsonwebtoken` crate: its
//! current releases require a crypto backend that pulls RSA and elliptic-curve
//! code (or a C build of aws-lc) into every build, for an algorithm we never
//! accept. What [`verify`] checks, and in this order: three base64url parts; a
//! header whose `alg` is exactly `HS256` (so `none`, `HS512` and algorithm
//! confusion are refused); the signature, compared in constant time; then the
//! claims: `exp` required and not past (with the caller's leeway), `nbf` (if
//! present) not in the future (same leeway), `sub` present.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header of every token [`sign`] makes (what PyJWT and most libraries write).
const HEADER_JSON: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

/// The claims of a Parley token. `sub` is the username the token speaks for;
/// times are Unix seconds. Serialised in field order, absent options omitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

impl Claims {
    /// Claims for `sub` expiring at `exp` (Unix seconds), without `iat`/`nbf`.
    pub fn new(sub: impl Into<String>, exp: i64) -> Self {
        Self {
            sub: sub.into(),
            exp,
            iat: None,
            nbf: None,
        }
    }

    /// Claims for `sub` issued at `now_s` (Unix seconds) and valid for `ttl`:
    /// what a node issues on login and `parley token` mints.
    pub fn issued(sub: impl Into<String>, now_s: i64, ttl: std::time::Duration) -> Self {
        let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        Self {
            sub: sub.into(),
            exp: now_s.saturating_add(ttl_s),
            iat: Some(now_s),
            nbf: None,
        }
    }
}

/// Why [`verify`] refused a token. The messages are shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, or a header that is not a JSON object with a
    /// string `alg`, or a payload that is not base64url.
    #[error("token is not a JWT")]
    Malformed,
    /// The header's `alg` is not `HS256` (`none`, `HS512`, `RS256`, …).
    #[error("token algorithm must be HS256")]
    WrongAlg,
    /// The signature does not match the secret (other secret, or tampered).
    #[error("token signature is invalid")]
    BadSignature,
    /// The claims carry no `exp`: Parley accepts no token without an expiry.
    #[error("token has no expiry (exp claim)")]
    MissingExp,
    /// `exp` (plus the leeway) is past.
    #[error("token has expired")]
    Expired,
    /// `nbf` (minus the leeway) is still in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// The payload is not the claims object Parley expects (no `sub`, a
    /// non-integer time, …).
    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    /// Never used, but a present `typ` must be a string, as it always had to be.
    #[allow(dead_code)]
    #[serde(default)]
    typ: Option<String>,
}

/// The payload as parsed, before `exp` is known to be there.
#[derive(Deserialize)]
struct RawClaims {
    sub: String,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
}

/// Parses the payload, which must be a JSON object (serde alone would also
/// take an array of the fields in order).
fn parse_claims(payload: &[u8]) -> Result<RawClaims, TokenError> {
    let invalid = |e: serde_json::Error| TokenError::InvalidClaims(e.to_string());
    let value: serde_json::Value = serde_json::from_slice(payload).map_err(invalid)?;
    if !value.is_object() {
        return Err(TokenError::InvalidClaims(
            "the claims are not a JSON object".into(),
        ));
    }
    RawClaims::deserialize(value).map_err(invalid)
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// Signs `claims` with `secret`: `{"alg":"HS256","typ":"JWT"}` header, the
/// claims as compact JSON in field order, HMAC-SHA256 signature, all base64url
/// without padding.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    sign_payload(secret, claims)
}

/// Signs any claims object as [`sign`] does: for tokens with claims beyond
/// [`Claims`] (a node adds a `jti`, so that two tokens issued for one user
/// in the same second differ — and one can be revoked without the other).
/// [`verify`] ignores claims it does not know.
pub fn sign_payload<T: Serialize>(secret: &[u8], claims: &T) -> String {
    let header = URL_SAFE_NO_PAD.encode(HEADER_JSON);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Verifies `token` against `secret` at `now_s` (Unix seconds), tolerating
/// `leeway_s` seconds of clock skew on `exp` and `nbf`, and returns its claims.
pub fn verify(secret: &[u8], token: &str, now_s: i64, leeway_s: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(header_b64)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::WrongAlg);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| TokenError::Malformed)?;
    let mut m = mac(secret);
    m.update(header_b64.as_bytes());
    m.update(b".");
    m.update(payload_b64.as_bytes());
    // `verify_slice` compares in constant time.
    m.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;

    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| TokenError::Malformed)?;
    let raw = parse_claims(&payload)?;
    let exp = raw.exp.ok_or(TokenError::MissingExp)?;
    if exp.saturating_add(leeway_s) <= now_s {
        return Err(TokenError::Expired);
    }
    if raw
        .nbf
        .is_some_and(|nbf| nbf.saturating_sub(leeway_s) > now_s)
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(Claims {
        sub: raw.sub,
        exp,
        iat: raw.iat,
        nbf: raw.nbf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test vectors produced by an independent implementation, PyJWT 2.15.1,
    // with exactly this Python one-liner:
    //
    // python -W ignore -c 'import jwt; c={"sub":"alice","exp":4102444800,"iat":1700000000}; e=jwt.encode; print("\n".join([e(c,"s3cret","HS256"), e({"sub":"alice","exp":1500000000,"iat":1499996400},"s3cret","HS256"), e(c,"not-the-secret","HS256"), e(c,"s3cret","HS512"), e(c,None,"none"), e({"sub":"alice","iat":1700000000},"s3cret","HS256")]))'
    //
    // (one token per line, in the order of the constants below).

    /// The secret the PyJWT vectors are signed with.
    const SECRET: &[u8] = b"s3cret";
    /// `{"sub":"alice","exp":4102444800,"iat":1700000000}` (exp = 2100-01-01), HS256, "s3cret".
    const PYJWT_VALID: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
        eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiaWF0IjoxNzAwMDAwMDAwfQ.\
        _V-Wr7K-bM0H1PKocKWHNU-YuZX3XHGWLlzn2Q-029I";
    /// `{"sub":"alice","exp":1500000000,"iat":1499996400}` (expired in 2017), HS256, "s3cret".
    const PYJWT_EXPIRED: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
        eyJzdWIiOiJhbGljZSIsImV4cCI6MTUwMDAwMDAwMCwiaWF0IjoxNDk5OTk2NDAwfQ.\
        usZ33xYZfdikO6EoaHzCWTPoUZVPkXWC-HWxBY5lcHE";
    /// The valid claims, HS256, signed with "not-the-secret".
    const PYJWT_OTHER_SECRET: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
        eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiaWF0IjoxNzAwMDAwMDAwfQ.\
        sE91EfHzHZWW5t8pfgL2wLxAluJ-xSSSPCoGKsBSAU4";
    /// The valid claims, HS512, "s3cret".
    const PYJWT_HS512: &str = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.\
        eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiaWF0IjoxNzAwMDAwMDAwfQ.\
        IODyJMaTpkXidyVfGz-SjA8PC4heZIAX0pstOsx0FEvNndRJrgonAFXJa5kIsYUtyEvYDr9AYuVRnAE7fq4RdA";
    /// The valid claims, `alg: none` (empty signature).
    const PYJWT_NONE: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
        eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMCwiaWF0IjoxNzAwMDAwMDAwfQ.";
    /// `{"sub":"alice","iat":1700000000}` (no exp), HS256, "s3cret".
    const PYJWT_NO_EXP: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
        eyJzdWIiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMH0.\
        6X6QWkPz9XUvaYYgx3x7c6mdHcg1MSTuE7QBi6tgzXg";

    /// A time when PYJWT_VALID is valid and PYJWT_EXPIRED is not.
    const NOW: i64 = 1_800_000_000;
    const LEEWAY: i64 = 30;

    fn valid_claims() -> Claims {
        Claims {
            sub: "alice".into(),
            exp: 4_102_444_800,
            iat: Some(1_700_000_000),
            nbf: None,
        }
    }

    /// HS256-signs an arbitrary payload, to build tokens `sign` cannot make.
    fn sign_raw(secret: &[u8], header: &[u8], payload: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut m = mac(secret);
        m.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        )
    }

    #[test]
    fn accepts_a_pyjwt_token_and_returns_its_claims() {
        assert_eq!(verify(SECRET, PYJWT_VALID, NOW, LEEWAY), Ok(valid_claims()));
    }

    #[test]
    fn signs_byte_for_byte_what_pyjwt_signs() {
        // Same header bytes (PyJWT sorts header keys: alg, typ) and same claim
        // order (PyJWT keeps the dict's order, ours is the struct's).
        assert_eq!(sign(SECRET, &valid_claims()), PYJWT_VALID);
    }

    #[test]
    fn issued_claims() {
        let c = Claims::issued("alice", 1_700_000_000, std::time::Duration::from_secs(3600));
        assert_eq!(c.exp, 1_700_003_600);
        assert_eq!(c.iat, Some(1_700_000_000));
        assert_eq!(c.nbf, None);
        let c = Claims::issued("alice", 1_700_000_000, std::time::Duration::MAX);
        assert_eq!(c.exp, i64::MAX);
    }

    #[test]
    fn round_trips() {
        let claims = Claims::new("bob", NOW + 60);
        let t = sign(b"secret", &claims);
        assert_eq!(verify(b"secret", &t, NOW, 0), Ok(claims));
        let mut full = valid_claims();
        full.nbf = Some(NOW - 10);
        assert_eq!(verify(b"k", &sign(b"k", &full), NOW, LEEWAY), Ok(full));
    }

    #[test]
    fn extra_claims_are_signed_and_ignored() {
        #[derive(Serialize)]
        struct WithId<'a> {
            #[serde(flatten)]
            claims: &'a Claims,
            jti: &'a str,
        }
        let claims = valid_claims();
        let a = sign_payload(
            SECRET,
            &WithId {
                claims: &claims,
                jti: "a",
            },
        );
        let b = sign_payload(
            SECRET,
            &WithId {
                claims: &claims,
                jti: "b",
            },
        );
        assert_ne!(a, b);
        assert_eq!(verify(SECRET, &a, NOW, LEEWAY), Ok(claims.clone()));
        assert_eq!(verify(SECRET, &b, NOW, LEEWAY), Ok(claims));
    }

    #[test]
    fn refuses_an_expired_pyjwt_token() {
        assert_eq!(
            verify(SECRET, PYJWT_EXPIRED, NOW, LEEWAY),
            Err(TokenError::Expired)
        );
        // ...which was valid until its exp, plus the leeway.
        let claims = verify(SECRET, PYJWT_EXPIRED, 1_500_000_000 + LEEWAY - 1, LEEWAY).unwrap();
        assert_eq!(claims.exp, 1_500_000_000);
        assert_eq!(
            verify(SECRET, PYJWT_EXPIRED, 1_500_000_000 + LEEWAY, LEEWAY),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn refuses_a_token_signed_with_another_secret() {
        assert_eq!(
            verify(SECRET, PYJWT_OTHER_SECRET, NOW, LEEWAY),
            Err(TokenError::BadSignature)
        );
        assert!(verify(b"not-the-secret", PYJWT_OTHER_SECRET, NOW, LEEWAY).is_ok());
        assert_eq!(
            verify(b"other", &sign(SECRET, &valid_claims()), NOW, LEEWAY),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn refuses_tampered_payloads() {
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"mallory","exp":4102444800}"#);
        let parts: Vec<&str> = PYJWT_VALID.split('.').collect();
        let t = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert_eq!(
            verify(SECRET, &t, NOW, LEEWAY),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn refuses_every_algorithm_but_hs256() {
        assert_eq!(
            verify(SECRET, PYJWT_HS512, NOW, LEEWAY),
            Err(TokenError::WrongAlg)
        );
        assert_eq!(
            verify(SECRET, PYJWT_NONE, NOW, LEEWAY),
            Err(TokenError::WrongAlg)
        );
        // Even with a valid HS256 signature, the header must say HS256.
        let lying = sign_raw(
            SECRET,
            br#"{"alg":"hs256"}"#,
            br#"{"sub":"alice","exp":4102444800}"#,
        );
        assert_eq!(
            verify(SECRET, &lying, NOW, LEEWAY),
            Err(TokenError::WrongAlg)
        );
    }

    #[test]
    fn refuses_a_token_without_exp() {
        assert_eq!(
            verify(SECRET, PYJWT_NO_EXP, NOW, LEEWAY),
            Err(TokenError::MissingExp)
        );
    }

    #[test]
    fn refuses_invalid_claims() {
        for payload in [
            &br#"{"exp":4102444800}"#[..],
            br#"{"sub":"alice","exp":"4102444800"}"#,
            br#"{"sub":"alice","exp":4102444800.5}"#,
            br#"["alice"]"#,
            br#"["alice",4102444800]"#,
            b"not json",
        ] {
            let t = sign_raw(SECRET, HEADER_JSON, payload);
            assert!(
                matches!(
                    verify(SECRET, &t, NOW, LEEWAY),
                    Err(TokenError::InvalidClaims(_))
                ),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn not_before_with_leeway() {
        let mut c = Claims::new("alice", 5000);
        c.nbf = Some(2000);
        let t = sign(b"k", &c);
        assert_eq!(
            verify(b"k", &t, 2000 - LEEWAY - 1, LEEWAY),
            Err(TokenError::NotYetValid)
        );
        assert!(verify(b"k", &t, 2000 - LEEWAY, LEEWAY).is_ok());
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let t = sign(b"k", &Claims::new("alice", i64::MAX));
        assert!(verify(b"k", &t, NOW, LEEWAY).is_ok());
        let mut c = Claims::new("alice", i64::MAX);
        c.nbf = Some(i64::MIN);
        assert!(verify(b"k", &sign(b"k", &c), NOW, LEEWAY).is_ok());
    }

    #[test]
    fn refuses_garbage() {
        for t in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.??.**",
            "not a token",
            "..",
            // A valid header and payload with a signature that is not base64url.
            &format!("{}.***", PYJWT_VALID.rsplit_once('.').unwrap().0),
            // Header base64url of something that is not JSON.
            "bm90IGpzb24.eyJzdWIiOiJhbGljZSJ9.AAAA",
            // Header JSON without alg.
            "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJhbGljZSJ9.AAAA",
        ] {
            assert_eq!(
                verify(SECRET, t, NOW, LEEWAY),
                Err(TokenError::Malformed),
                "{t:?}"
            );
        }
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        assert_eq!(TokenError::Malformed.to_string(), "token is not a JWT");
        assert_eq!(
            TokenError::WrongAlg.to_string(),
            "token algorithm must be HS256"
        );
        assert_eq!(
            TokenError::BadSignature.to_string(),
            "token signature is invalid"
        );
        assert_eq!(
            TokenError::MissingExp.to_string(),
            "token has no expiry (exp claim)"
        );
        assert_eq!(TokenError::Expired.to_string(), "token has expired");
    }
}
