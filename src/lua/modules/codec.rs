//! `json`, `base64`, `hex` and `crypto`: pure functions over strings and values.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use mlua::{Lua, LuaString, Result, Table, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use std::sync::Arc;

use super::{answer, raising};
use crate::lua::convert;
use crate::lua::state::VmShared;

pub fn json(lua: &Lua, clock: &Arc<VmShared>) -> Result<Table> {
    let json = lua.create_table()?;
    json.set("null", Value::NULL)?;
    let decode_clock = Arc::clone(clock);
    let clock = Arc::clone(clock);
    let encode = lua.create_function(move |lua, value: Value| {
        let text = convert::encode_within(&value, &mut convert::Budget::metered(&clock));
        match text {
            Ok(text) => answer(lua, Ok(lua.create_string(text)?)),
            Err(e) => answer(lua, Err::<Value, _>(format!("json.encode: {e}"))),
        }
    })?;
    json.set("encode", raising(lua, encode)?)?;
    let decode = lua.create_function(move |lua, text: LuaString| {
        match convert::decode_json(lua, Some(&decode_clock), &text.as_bytes_ref())? {
            Ok(value) => answer(lua, Ok(value)),
            Err(e) => answer(lua, Err::<Value, _>(format!("json.decode: {e}"))),
        }
    })?;
    json.set("decode", raising(lua, decode)?)?;
    Ok(json)
}

/// A `name(text)` Lua function that decodes with `decode`, raising `name: <why>` on bad input.
fn decoder<E: std::fmt::Display>(
    lua: &Lua,
    name: &'static str,
    decode: impl Fn(&[u8]) -> std::result::Result<Vec<u8>, E> + Send + 'static,
) -> Result<mlua::Function> {
    let function = lua.create_function(move |lua, text: LuaString| match decode(&text.as_bytes_ref()) {
        Ok(bytes) => answer(lua, Ok(lua.create_string(bytes)?)),
        Err(e) => answer(lua, Err::<Value, _>(format!("{name}: {e}"))),
    })?;
    raising(lua, function)
}

pub fn base64(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.set(
        "encode",
        lua.create_function(|_, data: LuaString| Ok(STANDARD.encode(data.as_bytes_ref())))?,
    )?;
    table.set("decode", decoder(lua, "base64.decode", |text| STANDARD.decode(text))?)?;
    table.set(
        "encode_url",
        lua.create_function(|_, data: LuaString| Ok(URL_SAFE_NO_PAD.encode(data.as_bytes_ref())))?,
    )?;
    // Padding is optional in URL-safe base64 (JWTs omit it), so accept both.
    let lenient = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    table.set(
        "decode_url",
        decoder(lua, "base64.decode_url", move |text| lenient.decode(text))?,
    )?;
    Ok(table)
}

pub fn hex(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.set(
        "encode",
        lua.create_function(|_, data: LuaString| Ok(::hex::encode(data.as_bytes_ref())))?,
    )?;
    table.set("decode", decoder(lua, "hex.decode", |text| ::hex::decode(text))?)?;
    Ok(table)
}

/// How a digest is returned: `"hex"` (the default), `"base64"` or `"raw"` bytes.
fn output(lua: &Lua, digest: &[u8], encoding: Option<String>, function: &str) -> Result<(bool, Value)> {
    let text = match encoding.as_deref().unwrap_or("hex") {
        "hex" => Ok(lua.create_string(::hex::encode(digest))?),
        "base64" => Ok(lua.create_string(STANDARD.encode(digest))?),
        "raw" => Ok(lua.create_string(digest)?),
        other => Err(format!(
            "crypto.{function}: unknown output '{other}'; use \"hex\", \"base64\" or \"raw\""
        )),
    };
    answer(lua, text)
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub fn crypto(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    let sha256 = lua.create_function(|lua, (data, encoding): (LuaString, Option<String>)| {
        output(lua, &Sha256::digest(data.as_bytes_ref()), encoding, "sha256")
    })?;
    table.set("sha256", raising(lua, sha256)?)?;
    let hmac = lua.create_function(|lua, (key, data, encoding): (LuaString, LuaString, Option<String>)| {
        output(
            lua,
            &hmac_sha256(&key.as_bytes_ref(), &data.as_bytes_ref()),
            encoding,
            "hmac_sha256",
        )
    })?;
    table.set("hmac_sha256", raising(lua, hmac)?)?;
    // Compares in time that depends only on the lengths, so a signature check leaks nothing about the secret. A nil
    // (a header the request did not send, say) equals nothing, another nil included: it was an error, and the
    // request a 500 instead of a refusal.
    table.set(
        "equals",
        lua.create_function(|_, (a, b): (Option<LuaString>, Option<LuaString>)| {
            Ok(match (a, b) {
                (Some(a), Some(b)) => bool::from(a.as_bytes_ref().ct_eq(&b.as_bytes_ref())),
                _ => false,
            })
        })?,
    )?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_round_trip_and_raise_plain_errors() {
        let lua = Lua::new();
        let clock = Arc::new(VmShared::default());
        let globals = lua.globals();
        globals.set("json", json(&lua, &clock).unwrap()).unwrap();
        globals.set("base64", base64(&lua).unwrap()).unwrap();
        globals.set("hex", hex(&lua).unwrap()).unwrap();
        globals.set("crypto", crypto(&lua).unwrap()).unwrap();
        lua.load(
            r#"
            assert(base64.decode(base64.encode("a\0b")) == "a\0b")
            assert(base64.decode_url("_-8") == "\255\239" and base64.encode_url("\255\239") == "_-8")
            assert(hex.encode("\1\255") == "01ff" and hex.decode("01FF") == "\1\255")
            assert(crypto.sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
            assert(crypto.hmac_sha256("key", "The quick brown fox jumps over the lazy dog")
              == "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")
            assert(crypto.sha256("", "base64") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
            assert(crypto.equals("a", "a") and not crypto.equals("a", "b"))
            assert(not crypto.equals(nil, "a") and not crypto.equals("a", nil) and not crypto.equals(nil, nil))
            assert(json.encode({a = {1, 2}, b = json.null}) == '{"a":[1,2],"b":null}')
            assert(json.decode('{"x":[]}').x ~= nil and json.encode(json.decode('[]')) == "[]")
            local ok, err = pcall(hex.decode, "zz")
            assert(not ok and type(err) == "string" and err:find("^hex.decode: "), err)
            ok, err = pcall(json.decode, "{")
            assert(not ok and err:find("^json.decode: "), err)
            ok, err = pcall(crypto.sha256, "x", "rot13")
            assert(not ok and err:find("unknown output 'rot13'"), err)
        "#,
        )
        .exec()
        .unwrap();
    }
}
