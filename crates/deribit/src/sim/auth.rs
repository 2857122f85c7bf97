//! `public/auth`: `client_credentials`, `client_signature` (HMAC-SHA256 over
//! `"{timestamp}\n{nonce}\n{data}"`, lower-case hex) and `refresh_token`.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::exchange::Exchange;
use super::params::Params;
use super::rng::Rng;
use crate::codes;
use crate::model::{to_ms, AuthResult};
use crate::RpcError;

/// How far a signature's timestamp may be from the server's clock.
const SIGNATURE_WINDOW_MS: u64 = 60_000;
/// Lifetime announced for access tokens.
const EXPIRES_IN_SECS: u64 = 900;

fn invalid(reason: &str) -> RpcError {
    RpcError::new(codes::INVALID_CREDENTIALS).because(reason, None)
}

/// Lower-case hex HMAC-SHA256 of `"{timestamp}\n{nonce}\n{data}"` keyed by `secret`.
pub fn signature(secret: &str, timestamp: u64, nonce: &str, data: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("{timestamp}\n{nonce}\n{data}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks the grant; returns the tokens for the connection.
pub(super) fn authenticate(exchange: &Exchange, params: &Value) -> Result<AuthResult, RpcError> {
    let p = Params(params);
    let scope = p.opt_str("scope")?.unwrap_or("connection").to_owned();
    match p.str("grant_type")? {
        "refresh_token" => {
            let token = p.str("refresh_token")?;
            if !exchange
                .tokens
                .lock()
                .values()
                .any(|refresh| same(refresh, token))
            {
                return Err(RpcError::new(codes::INVALID_TOKEN)
                    .because("unknown refresh token", Some("refresh_token")));
            }
            Ok(issue(exchange, scope))
        }
        grant @ ("client_credentials" | "client_signature") => {
            let (Some(id), Some(secret)) =
                (&exchange.config.client_id, &exchange.config.client_secret)
            else {
                return Err(invalid("this simulator has no API keys configured"));
            };
            if !same(p.str("client_id")?, id) {
                return Err(invalid("unknown client_id"));
            }
            if grant == "client_credentials" {
                if !same(p.str("client_secret")?, secret.expose()) {
                    return Err(invalid("wrong client_secret"));
                }
            } else {
                let timestamp = p.u64("timestamp")?;
                let now = to_ms(std::time::SystemTime::now());
                if now.abs_diff(timestamp) > SIGNATURE_WINDOW_MS {
                    return Err(invalid("timestamp too far from the server's clock"));
                }
                let expected = signature(
                    secret.expose(),
                    timestamp,
                    p.str("nonce")?,
                    p.opt_str("data")?.unwrap_or(""),
                );
                if !same(&p.str("signature")?.to_ascii_lowercase(), &expected) {
                    return Err(invalid("signature does not match"));
                }
            }
            Ok(issue(exchange, scope))
        }
        other => Err(RpcError::new(codes::INVALID_PARAMS)
            .because(format!("unknown grant_type `{other}`"), Some("grant_type"))),
    }
}

/// Checks an HTTP request's `Authorization` header, as Deribit does:
/// `Bearer TOKEN` with a token from `public/auth`, or
/// `deri-hmac-sha256 id=CLIENT_ID,ts=MS,sig=HEX,nonce=NONCE` where `sig` is
/// the lower-case hex HMAC-SHA256, keyed by the client secret, of
/// `"{ts}\n{nonce}\n{METHOD}\n{path?query}\n{body}\n"`.
pub(super) fn authorize_http(
    exchange: &Exchange,
    header: Option<&str>,
    method: &str,
    uri: &str,
    body: &str,
) -> Result<(), RpcError> {
    let unauthorized =
        |why: &str| RpcError::new(codes::INVALID_TOKEN).because(why, Some("Authorization"));
    let Some(header) = header else {
        return Err(unauthorized("no Authorization header"));
    };
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = rest.trim();
        return if exchange.tokens.lock().contains_key(token) {
            Ok(())
        } else {
            Err(unauthorized("unknown or expired access token"))
        };
    }
    if !scheme.eq_ignore_ascii_case("deri-hmac-sha256") {
        return Err(unauthorized("expected Bearer or deri-hmac-sha256"));
    }
    let mut fields = std::collections::HashMap::new();
    for part in rest.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            fields.insert(k.trim(), v.trim());
        }
    }
    let field = |name: &str| {
        fields
            .get(name)
            .copied()
            .ok_or_else(|| unauthorized(&format!("deri-hmac-sha256 without `{name}`")))
    };
    let (id, ts, sig, nonce) = (field("id")?, field("ts")?, field("sig")?, field("nonce")?);
    let (Some(client_id), Some(secret)) =
        (&exchange.config.client_id, &exchange.config.client_secret)
    else {
        return Err(invalid("this simulator has no API keys configured"));
    };
    if !same(id, client_id) {
        return Err(invalid("unknown client_id"));
    }
    let Ok(timestamp) = ts.parse::<u64>() else {
        return Err(unauthorized("`ts` must be milliseconds since the epoch"));
    };
    let now = to_ms(std::time::SystemTime::now());
    if now.abs_diff(timestamp) > SIGNATURE_WINDOW_MS {
        return Err(invalid("timestamp too far from the server's clock"));
    }
    let data = format!("{}\n{uri}\n{body}\n", method.to_ascii_uppercase());
    let expected = signature(secret.expose(), timestamp, nonce, &data);
    if !same(&sig.to_ascii_lowercase(), &expected) {
        return Err(invalid("signature does not match"));
    }
    Ok(())
}

fn issue(exchange: &Exchange, scope: String) -> AuthResult {
    let mut rng = Rng::new(exchange.started.elapsed().as_nanos() as u64 ^ 0x5eed);
    let access = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
    let refresh = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
    exchange
        .tokens
        .lock()
        .insert(access.clone(), refresh.clone());
    AuthResult {
        access_token: access,
        refresh_token: refresh,
        expires_in: EXPIRES_IN_SECS,
        scope,
        token_type: "bearer".into(),
        enabled_features: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex_over_timestamp_nonce_data() {
        // RFC 4231 style check: key "key", message "1\nn\nd".
        let sig = signature("key", 1, "n", "d");
        assert_eq!(sig.len(), 64);
        assert!(sig
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(sig, signature("key", 1, "n", "d"));
        assert_ne!(sig, signature("key", 2, "n", "d"));
        assert_ne!(sig, signature("other", 1, "n", "d"));
    }

    #[test]
    fn comparison_needs_equal_strings() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
