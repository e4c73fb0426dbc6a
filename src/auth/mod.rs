//! Signed connection tokens (docs/auth.md): the key loaded at startup, the check of one
//! token, and why a token is refused.
//!
//! A token is checked once per connection — at the upgrade (`?token=`, `Authorization:
//! Bearer`) or at a `shardcast.v1` client's `hello` — never per message: what it grants is
//! kept by the session (its user id, whether it may publish, when it expires). The one
//! algorithm tokens may use is the key's: a token whose header names another (`none`, HS256
//! against a public key, …) is refused before any signature is computed, which rules out
//! algorithm confusion. Tokens never reach a log line.

pub mod claims;
pub mod key;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

pub use claims::{Claims, Identity, LEEWAY_SECS};

use crate::config::{AuthMode, Config};
use crate::error::TokenKeyError;
use crate::metrics::Counter;

/// Most bytes a token may have; longer ones are refused unread.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why a token (or its absence) was refused. Each is counted in
/// `shardcast_tokens_total{result=…}` and has a one-line text for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--auth required` and no token came.
    Missing,
    /// Over [`MAX_TOKEN_BYTES`].
    TooLarge,
    /// Not three base64url parts with a JSON header.
    Malformed,
    /// The header names an algorithm other than the key's (`none` included).
    Algorithm,
    /// The signature does not verify with the key.
    Signature,
    /// `exp` (plus the leeway) has passed.
    Expired,
    /// `nbf` or `iat` is still to come (beyond the leeway).
    NotYetValid,
    /// A claim is missing (`sub`), of the wrong type, or breaks its rule (`name`).
    Claims,
    /// The token is valid but its `rooms` do not include the room (403, not 401).
    Room,
}

impl Refusal {
    /// Every refusal, in counter order.
    pub const ALL: [Refusal; 9] = [
        Refusal::Missing,
        Refusal::TooLarge,
        Refusal::Malformed,
        Refusal::Algorithm,
        Refusal::Signature,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::Claims,
        Refusal::Room,
    ];

    /// The label in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::TooLarge => "too_large",
            Refusal::Malformed => "malformed",
            Refusal::Algorithm => "algorithm",
            Refusal::Signature => "signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::Claims => "claims",
            Refusal::Room => "room",
        }
    }

    /// The one line the client is told (HTTP body, `error` envelope text).
    pub fn text(self) -> &'static str {
        match self {
            Refusal::Missing => "a token is required",
            Refusal::TooLarge => "token larger than 4096 bytes",
            Refusal::Malformed => "malformed token",
            Refusal::Algorithm => "token algorithm not accepted",
            Refusal::Signature => "bad token signature",
            Refusal::Expired => "token expired",
            Refusal::NotYetValid => "token not yet valid",
            Refusal::Claims => "bad token claims (sub is required; name must be a valid nickname)",
            Refusal::Room => "the token does not allow this room",
        }
    }

    /// The counter of this refusal (`shardcast_tokens_total{result=…}`).
    pub fn counter(self) -> Counter {
        match self {
            Refusal::Missing => Counter::TokenMissing,
            Refusal::TooLarge => Counter::TokenTooLarge,
            Refusal::Malformed => Counter::TokenMalformed,
            Refusal::Algorithm => Counter::TokenAlgorithm,
            Refusal::Signature => Counter::TokenSignature,
            Refusal::Expired => Counter::TokenExpired,
            Refusal::NotYetValid => Counter::TokenNotYetValid,
            Refusal::Claims => Counter::TokenClaims,
            Refusal::Room => Counter::TokenRoom,
        }
    }

    /// Whether the client is not let in for lack of a valid token (401) rather than for what
    /// a valid one forbids (403).
    pub fn unauthorized(self) -> bool {
        self != Refusal::Room
    }
}

/// What a session keeps of its token once it is in: boxed, so that an anonymous session
/// pays one null pointer for it.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The user id, for envelopes and the access log.
    pub user: Arc<str>,
    /// Whether it may send messages (`publish` claim).
    pub publish: bool,
    /// When the connection is closed for expiry (`exp` plus the leeway), if ever.
    pub ends: Option<Instant>,
}

impl Grant {
    /// What a session holding `identity` keeps, `now` being the loop's time.
    pub fn of(identity: &Identity, now: Instant) -> Grant {
        let ends = identity.ends_at.map(|at| {
            let left = at - unix_now();
            now + Duration::try_from_secs_f64(left).unwrap_or(Duration::ZERO)
        });
        Grant {
            user: identity.user.clone(),
            publish: identity.publish,
            ends,
        }
    }
}

/// Seconds since the Unix epoch, now (0 if the clock is before 1970).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Checks tokens against the key given at startup. Immutable, shared by every loop.
pub struct Verifier {
    mode: AuthMode,
    key: DecodingKey,
    algorithm: Algorithm,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key (a secret, with HS256).
        f.debug_struct("Verifier")
            .field("mode", &self.mode)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier `config` asks for: `None` with `--auth off`.
    pub fn load(config: &Config) -> Result<Option<Verifier>, TokenKeyError> {
        match (config.auth, &config.token_key) {
            (AuthMode::Off, _) | (_, None) => Ok(None),
            (mode, Some(file)) => {
                let (key, algorithm) = key::load(file)?;
                Ok(Some(Verifier::new(mode, key, algorithm)))
            }
        }
    }

    /// A verifier of tokens signed with `algorithm`, checked with `key`.
    pub fn new(mode: AuthMode, key: DecodingKey, algorithm: Algorithm) -> Verifier {
        // The signature only: the time claims and the rest are checked by `Claims::check`.
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Verifier {
            mode,
            key,
            algorithm,
            validation,
        }
    }

    /// `optional` or `required`.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Checks `token` now.
    pub fn verify(&self, token: &str) -> Result<Identity, Refusal> {
        self.verify_at(token, unix_now())
    }

    /// Checks `token` at `now` (seconds since the Unix epoch).
    pub fn verify_at(&self, token: &str, now: f64) -> Result<Identity, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::TooLarge);
        }
        if header_algorithm(token)? != self.algorithm {
            return Err(Refusal::Algorithm);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| refusal_for(e.kind()))?;
        data.claims.check(now)
    }
}

/// The algorithm a token's header names; `none` and unknown names are [`Refusal::Algorithm`],
/// anything that is not three base64url parts with a JSON object header is malformed.
fn header_algorithm(token: &str) -> Result<Algorithm, Refusal> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(Refusal::Malformed);
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Refusal::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| Refusal::Malformed)?;
    let name = header
        .as_object()
        .ok_or(Refusal::Malformed)?
        .get("alg")
        .and_then(serde_json::Value::as_str)
        .ok_or(Refusal::Malformed)?;
    name.parse::<Algorithm>().map_err(|_| Refusal::Algorithm)
}

/// What a failure of the signature check (or of decoding after it) means.
fn refusal_for(kind: &jsonwebtoken::errors::ErrorKind) -> Refusal {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::Crypto(_) => {
            Refusal::Signature
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Refusal::Algorithm,
        // The header was read already: a JSON error now is the claims'.
        ErrorKind::Json(_) => Refusal::Claims,
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidSubject => Refusal::Claims,
        _ => Refusal::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: f64 = 1_800_000_000.0;

    fn verifier() -> Verifier {
        Verifier::new(
            AuthMode::Required,
            DecodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
    }

    fn mint(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn a_good_token_gives_its_identity() {
        let token = mint(serde_json::json!({
            "sub": "u1", "name": "ann", "exp": NOW + 60.0, "rooms": ["a"], "publish": false
        }));
        let id = verifier().verify_at(&token, NOW).unwrap();
        assert_eq!((&*id.user, id.name.unwrap().as_str()), ("u1", "ann"));
        assert!(!id.publish);
    }

    #[test]
    fn each_defect_has_its_refusal() {
        let v = verifier();
        let good = mint(serde_json::json!({"sub": "u1"}));
        let (head, rest) = good.split_once('.').unwrap();
        let (payload, signature) = rest.split_once('.').unwrap();
        let none = format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
        let rs = format!("{}.{payload}.{signature}", b64(r#"{"alg":"RS256"}"#));
        let other_key = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u1"}),
            &EncodingKey::from_secret(b"another secret, also 32 bytes long"),
        )
        .unwrap();
        let cases = [
            ("x".repeat(MAX_TOKEN_BYTES + 1), Refusal::TooLarge),
            ("abc".into(), Refusal::Malformed),
            (format!("{head}.{payload}"), Refusal::Malformed),
            (format!("{good}.x"), Refusal::Malformed),
            (format!("!!.{payload}.{signature}"), Refusal::Malformed),
            (
                format!("{}.{payload}.{signature}", b64("[1]")),
                Refusal::Malformed,
            ),
            (none, Refusal::Algorithm),
            (rs, Refusal::Algorithm),
            (other_key, Refusal::Signature),
            (
                format!("{head}.{payload}.{}", b64("nope")),
                Refusal::Signature,
            ),
            (mint(serde_json::json!({"name": "ann"})), Refusal::Claims),
            (
                mint(serde_json::json!({"sub": "u", "rooms": 1})),
                Refusal::Claims,
            ),
            (
                mint(serde_json::json!({"sub": "u", "exp": NOW - 60.0})),
                Refusal::Expired,
            ),
            (
                mint(serde_json::json!({"sub": "u", "nbf": NOW + 60.0})),
                Refusal::NotYetValid,
            ),
        ];
        for (token, refusal) in cases {
            assert_eq!(v.verify_at(&token, NOW).unwrap_err(), refusal, "{token}");
        }
        assert!(v.verify_at(&good, NOW).is_ok());
    }

    #[test]
    fn refusals_have_distinct_names_and_one_line_texts() {
        let mut names: Vec<_> = Refusal::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Refusal::ALL.len());
        for r in Refusal::ALL {
            assert!(!r.text().contains('\n') && r.text().len() < 120);
            assert_eq!(r.unauthorized(), r != Refusal::Room);
            assert_eq!(r.counter().label(), format!("result=\"{}\"", r.name()));
        }
    }
}
