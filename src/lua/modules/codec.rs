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
    let clock = Arc::clone(clock);
    let encode = lua.create_function(move |lua, value: Value| {
        let json = convert::to_json_within(&value, &mut convert::Budget::metered(&clock)).map(|json| json.to_string());
        answer(lua, json.map_err(|e| format!("json.encode: {e}")))
    })?;
    json.set("encode", raising(lua, encode)?)?;
    let decode = lua.create_function(|lua, text: LuaString| {
        match serde_json::from_slice::<serde_json::Value>(&text.as_bytes()) {
            Ok(value) => answer(lua, Ok(convert::from_json(lua, &value)?)),
            Err(e) => answer(lua, Err::<Value, _>(format!("json.decode: {e}"))),
        }
    })?;
    json.set("decode", raising(lua, decode)?)?;
    Ok(json)
}

pub fn base64(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.set(
        "encode",
        lua.create_function(|_, data: LuaString| Ok(STANDARD.encode(data.as_bytes())))?,
    )?;
    let decode = lua.create_function(|lua, text: LuaString| {
        let bytes = STANDARD
            .decode(text.as_bytes())
            .map_err(|e| format!("base64.decode: {e}"));
        answer(lua, bytes.and_then(|b| lua.create_string(b).map_err(|e| e.to_string())))
    })?;
    table.set("decode", raising(lua, decode)?)?;
    table.set(
        "encode_url",
        lua.create_function(|_, data: LuaString| Ok(URL_SAFE_NO_PAD.encode(data.as_bytes())))?,
    )?;
    let decode_url = lua.create_function(|lua, text: LuaString| {
        // Padding is optional in URL-safe base64 (JWTs omit it), so accept both.
        let lenient = GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let bytes = lenient
            .decode(text.as_bytes())
            .map_err(|e| format!("base64.decode_url: {e}"));
        answer(lua, bytes.and_then(|b| lua.create_string(b).map_err(|e| e.to_string())))
    })?;
    table.set("decode_url", raising(lua, decode_url)?)?;
    Ok(table)
}

pub fn hex(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.set(
        "encode",
        lua.create_function(|_, data: LuaString| Ok(::hex::encode(data.as_bytes())))?,
    )?;
    let decode = lua.create_function(|lua, text: LuaString| {
        let bytes = ::hex::decode(text.as_bytes()).map_err(|e| format!("hex.decode: {e}"));
        answer(lua, bytes.and_then(|b| lua.create_string(b).map_err(|e| e.to_string())))
    })?;
    table.set("decode", raising(lua, decode)?)?;
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
        output(lua, &Sha256::digest(data.as_bytes()), encoding, "sha256")
    })?;
    table.set("sha256", raising(lua, sha256)?)?;
    let hmac = lua.create_function(|lua, (key, data, encoding): (LuaString, LuaString, Option<String>)| {
        output(
            lua,
            &hmac_sha256(&key.as_bytes(), &data.as_bytes()),
            encoding,
            "hmac_sha256",
        )
    })?;
    table.set("hmac_sha256", raising(lua, hmac)?)?;
    // Compares in time that depends only on the lengths, so a signature check leaks nothing about the secret.
    table.set(
        "equals",
        lua.create_function(|_, (a, b): (LuaString, LuaString)| Ok(bool::from(a.as_bytes().ct_eq(&b.as_bytes()))))?,
    )?;
    Ok(table)
}
