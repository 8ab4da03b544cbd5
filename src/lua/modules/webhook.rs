//! `webhook.verify_github(req, secret)` and `webhook.verify_stripe(req, secret, tolerance_s)`.
//!
//! Both take the `req` table a handler receives (its raw `body` and its headers) and return `true`, or `false`
//! and the reason, so a handler can answer 401 and log why. Signatures are compared in constant time.

use mlua::{Lua, LuaString, Result, Table, Value};
use subtle::ConstantTimeEq;

use super::codec::hmac_sha256;

/// Stripe's own libraries accept signatures up to five minutes old.
const STRIPE_DEFAULT_TOLERANCE_S: i64 = 300;

pub fn module(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    let verify_github = lua.create_function(|lua, (req, secret): (Table, Option<LuaString>)| {
        let Some(secret) = usable(secret) else {
            return refused(lua, "verify_github");
        };
        let (body, header) = body_and_header(&req, "x-hub-signature-256")?;
        Ok(verdict(verify_github(&body, header.as_deref(), &secret.as_bytes_ref())))
    })?;
    table.set("verify_github", raising(lua, verify_github)?)?;
    let verify_stripe = lua.create_function(
        |lua, (req, secret, tolerance): (Table, Option<LuaString>, Option<i64>)| {
            let Some(secret) = usable(secret) else {
                return refused(lua, "verify_stripe");
            };
            let (body, header) = body_and_header(&req, "stripe-signature")?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let tolerance = tolerance.unwrap_or(STRIPE_DEFAULT_TOLERANCE_S);
            Ok(verdict(verify_stripe(
                &body,
                header.as_deref(),
                &secret.as_bytes_ref(),
                now,
                tolerance,
            )))
        },
    )?;
    table.set("verify_stripe", raising(lua, verify_stripe)?)?;
    Ok(table)
}

/// What a verify function's Rust side gives: `(true, verdict, reason)`, or `(false, message)` for an error to raise.
type Given = (bool, Value, Option<&'static str>);

/// Like [`super::raising`], for a verdict of two values: `(true, verdict, reason)` gives the verdict and its reason,
/// and `(false, message)` raises the message as a plain string error at the caller's line.
const RAISE_VERDICT: &str = "local f = ... return function(...) local ok, verdict, reason = f(...) \
                             if ok then return verdict, reason end error(verdict, 2) end";

fn raising(lua: &Lua, f: mlua::Function) -> Result<mlua::Function> {
    lua.load(RAISE_VERDICT).set_name("=luka").call(f)
}

/// A secret anyone could sign with is no secret: with an empty one (an environment variable set to nothing, say),
/// any request signed with an empty key would pass. `None` when there is no usable secret.
fn usable(secret: Option<LuaString>) -> Option<LuaString> {
    secret.filter(|s| !s.as_bytes_ref().is_empty())
}

/// The error raised for a missing or empty secret: the handler's configuration is wrong, not the sender's request.
fn refused(lua: &Lua, function: &str) -> Result<Given> {
    let message = format!(
        "webhook.{function}: the secret is missing or empty (is its environment variable set?); a signature made \
         with an empty key proves nothing"
    );
    Ok((false, Value::String(lua.create_string(message)?), None))
}

fn verdict(result: std::result::Result<(), &'static str>) -> Given {
    match result {
        Ok(()) => (true, Value::Boolean(true), None),
        Err(reason) => (true, Value::Boolean(false), Some(reason)),
    }
}

fn body_and_header(req: &Table, header: &str) -> Result<(Vec<u8>, Option<String>)> {
    let body: Option<LuaString> = req.get("body")?;
    let headers: Option<Table> = req.get("headers")?;
    // Read as bytes: a client may send a header that is not UTF-8, which is a bad signature, not a failure.
    let value = match headers {
        Some(headers) => headers
            .get::<Option<LuaString>>(header)?
            .map(|v| String::from_utf8_lossy(&v.as_bytes_ref()).into_owned()),
        None => None,
    };
    Ok((body.map(|b| b.as_bytes_ref().to_vec()).unwrap_or_default(), value))
}

/// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`.
pub fn verify_github(body: &[u8], header: Option<&str>, secret: &[u8]) -> std::result::Result<(), &'static str> {
    let header = header.ok_or("no X-Hub-Signature-256 header")?;
    let given = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or("X-Hub-Signature-256 does not start with sha256=")?;
    let given = hex::decode(given).map_err(|_| "X-Hub-Signature-256 is not hex")?;
    let expected = hmac_sha256(secret, body);
    if bool::from(expected.ct_eq(&given)) {
        Ok(())
    } else {
        Err("signature does not match")
    }
}

/// `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">[,v1=...]`: any v1 may match, and `t`
/// must be within `tolerance_s` of now.
pub fn verify_stripe(
    body: &[u8],
    header: Option<&str>,
    secret: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> std::result::Result<(), &'static str> {
    let header = header.ok_or("no Stripe-Signature header")?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("Stripe-Signature has no valid t=")?;
    if signatures.is_empty() {
        return Err("Stripe-Signature has no v1 signature");
    }
    let mut signed = timestamp.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    let expected = hmac_sha256(secret, &signed);
    let matched = signatures
        .iter()
        .fold(subtle::Choice::from(0), |acc, s| acc | expected.ct_eq(s));
    if !bool::from(matched) {
        return Err("signature does not match");
    }
    if now_s.abs_diff(timestamp) > tolerance_s.unsigned_abs() {
        return Err("timestamp is outside the tolerance");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signature_of_the_documented_example() {
        // From GitHub's "Validating webhook deliveries" documentation.
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify_github(b"Hello, World!", Some(header), b"It's a Secret to Everybody"),
            Ok(())
        );
        assert!(verify_github(b"Hello, World?", Some(header), b"It's a Secret to Everybody").is_err());
        assert!(verify_github(b"x", None, b"s").is_err());
        assert!(verify_github(b"x", Some("sha1=00"), b"s").is_err());
    }

    #[test]
    fn stripe_accepts_any_v1_within_tolerance() {
        let body = br#"{"id":"evt_1"}"#;
        let good = hex::encode(hmac_sha256(b"whsec", b"1000.{\"id\":\"evt_1\"}"));
        let header = format!("t=1000,v1={},v1={good},v0=ignored", "00".repeat(32));
        assert_eq!(verify_stripe(body, Some(&header), b"whsec", 1100, 300), Ok(()));
        assert_eq!(
            verify_stripe(body, Some(&header), b"whsec", 1400, 300),
            Err("timestamp is outside the tolerance")
        );
        assert_eq!(
            verify_stripe(body, Some(&header), b"other", 1100, 300),
            Err("signature does not match")
        );
        assert!(verify_stripe(body, Some("v1=00"), b"whsec", 1100, 300).is_err());
    }
}
