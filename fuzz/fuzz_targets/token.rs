//! JWT verification: `parley_protocol::token::verify` with a fixed secret.
//!
//! Asserts, for the input bytes taken as a token (lossy UTF-8), at a fixed
//! time and leeway: no panic; whatever `verify` accepts is
//! three base64url parts whose signature is the HMAC-SHA256 of the first two
//! under the secret (checked here independently, with `hmac` directly), whose
//! header `alg` is `HS256`, whose payload is a JSON object carrying the
//! returned `sub`/`exp`/`iat`/`nbf`, and which is within `exp`/`nbf` at that
//! time; the same token is refused under another secret.
//!
//! Round trips, from the same bytes read as arbitrary claims: `sign` then
//! `verify` returns exactly those claims (or exactly `Expired`/`NotYetValid`
//! when the time says so); another secret gives `BadSignature`; changing any
//! one character of the token makes it refused; and an arbitrary signed
//! payload (any JSON object or value) never panics and is accepted only with
//! a string `sub` and integer `exp`.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use parley_protocol::token::{Claims, TokenError, sign, sign_payload, verify};
use sha2::Sha256;

const SECRET: &[u8] = b"fuzz-secret-0123456789";
const OTHER: &[u8] = b"fuzz-secret-0123456788";
/// The time and leeway the raw-token half checks at (the round trips use
/// arbitrary ones).
const NOW: i64 = 1_800_000_000;
const LEEWAY: i64 = 30;

#[derive(Debug, Arbitrary)]
struct RoundTrip {
    sub: String,
    exp: i64,
    iat: Option<i64>,
    nbf: Option<i64>,
    now: i64,
    leeway: i64,
    /// Which character to change, and to what.
    flip_at: usize,
    flip_to: u8,
    /// An arbitrary extra claim (a node adds `jti`).
    extra: Option<String>,
    /// A whole payload, signed as it is.
    payload: String,
}

fn hmac_ok(secret: &[u8], signing_input: &str, sig: &[u8]) -> bool {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    m.update(signing_input.as_bytes());
    m.verify_slice(sig).is_ok()
}

/// What must hold of a token `verify` accepted.
fn accepted(token: &str, claims: &Claims, now: i64, leeway: i64) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted a token of {} parts", parts.len());
    let sig = URL_SAFE_NO_PAD
        .decode(parts[2])
        .expect("accepted signature is base64url");
    assert!(
        hmac_ok(SECRET, &format!("{}.{}", parts[0], parts[1]), &sig),
        "accepted a token not signed with the secret: {token:?}"
    );
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("header b64"))
            .expect("header JSON");
    assert_eq!(header["alg"], "HS256", "accepted alg {:?}", header["alg"]);
    let payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("payload b64"))
            .expect("payload JSON");
    assert!(
        payload.is_object(),
        "accepted claims that are not an object"
    );
    assert_eq!(payload["sub"].as_str(), Some(claims.sub.as_str()));
    assert_eq!(payload["exp"].as_i64(), Some(claims.exp));
    assert_eq!(payload.get("iat").and_then(|v| v.as_i64()), claims.iat);
    assert_eq!(payload.get("nbf").and_then(|v| v.as_i64()), claims.nbf);
    assert!(
        claims.exp.saturating_add(leeway) > now,
        "accepted an expired token"
    );
    if let Some(nbf) = claims.nbf {
        assert!(
            nbf.saturating_sub(leeway) <= now,
            "accepted a token not valid yet"
        );
    }
    assert_eq!(
        verify(OTHER, token, now, leeway),
        Err(TokenError::BadSignature),
        "accepted under another secret too"
    );
}

fuzz_target!(|data: &[u8]| {
    // 1. The input as a token.
    let token = String::from_utf8_lossy(data);
    if let Ok(claims) = verify(SECRET, &token, NOW, LEEWAY) {
        accepted(&token, &claims, NOW, LEEWAY);
    }

    // 2. The input as claims: sign → verify.
    let Ok(rt) = RoundTrip::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let claims = Claims {
        sub: rt.sub,
        exp: rt.exp,
        iat: rt.iat,
        nbf: rt.nbf,
    };
    let token = sign(SECRET, &claims);
    let expected = if claims.exp.saturating_add(rt.leeway) <= rt.now {
        Err(TokenError::Expired)
    } else if claims
        .nbf
        .is_some_and(|nbf| nbf.saturating_sub(rt.leeway) > rt.now)
    {
        Err(TokenError::NotYetValid)
    } else {
        Ok(claims.clone())
    };
    let got = verify(SECRET, &token, rt.now, rt.leeway);
    assert_eq!(
        got, expected,
        "sign → verify of {claims:?} at {} ± {}",
        rt.now, rt.leeway
    );
    if let Ok(c) = &got {
        accepted(&token, c, rt.now, rt.leeway);
    }
    assert_eq!(
        verify(OTHER, &token, rt.now, rt.leeway),
        Err(TokenError::BadSignature)
    );

    // Any one character changed: refused (the signature covers the base64
    // text, and base64url here has one spelling per byte string).
    let mut bytes = token.clone().into_bytes();
    let i = rt.flip_at % bytes.len();
    const ALPHABET: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
    let to = ALPHABET[usize::from(rt.flip_to) % ALPHABET.len()];
    if bytes[i] != to {
        bytes[i] = to;
        let tampered = String::from_utf8(bytes).expect("ASCII");
        assert!(
            verify(SECRET, &tampered, rt.now, rt.leeway).is_err(),
            "accepted a tampered token: {tampered:?} (from {token:?})"
        );
    }

    // Claims with an extra field (a node's `jti`) verify to the same claims.
    if let Some(jti) = rt.extra {
        #[derive(serde::Serialize)]
        struct WithJti<'a> {
            #[serde(flatten)]
            claims: &'a Claims,
            jti: String,
        }
        let t = sign_payload(
            SECRET,
            &WithJti {
                claims: &claims,
                jti,
            },
        );
        assert_eq!(verify(SECRET, &t, rt.now, rt.leeway), expected);
    }

    // An arbitrary payload, properly signed: only a JSON object with a
    // string `sub` and an integer `exp` in range may pass.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(rt.payload.as_bytes());
    let input = format!("{header}.{payload}");
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(SECRET).expect("any key length");
    m.update(input.as_bytes());
    let t = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    );
    match verify(SECRET, &t, rt.now, rt.leeway) {
        Ok(c) => accepted(&t, &c, rt.now, rt.leeway),
        Err(TokenError::Malformed | TokenError::WrongAlg | TokenError::BadSignature) => {
            panic!("a well-formed HS256 token was refused before its claims: {t}")
        }
        Err(_) => {}
    }
});
