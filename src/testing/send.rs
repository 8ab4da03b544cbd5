//! `send` for test files: a request built from Lua values in, the router's response and the records the request
//! wrote (read back from the broker with luka's reading client) out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use mlua::{IntoLuaMulti, Lua, LuaString, Table};

use crate::App;
use crate::context::{Capture, RecordAt};
use crate::kafka::FetchedRecord;

/// The address a test request comes from (`req.remote_addr`).
const TEST_REMOTE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

/// Largest record read back.
const READ_MAX_BYTES: usize = 16 * 1024 * 1024;

/// What the records read back may decompress to.
const READ_MAX_DECODED_BYTES: usize = 4 * READ_MAX_BYTES;

/// The Lua function `raw_send(method, path, {{name, value}...}, body)`, giving `true, status, {{name, value}...},
/// body, records`, or `false` and what went wrong (the prelude raises it at the test's line).
pub fn raw_send(lua: &Lua, app: Arc<App>) -> mlua::Result<mlua::Function> {
    lua.create_async_function(
        move |lua, (method, path, headers, body): (String, String, Vec<Table>, LuaString)| {
            let app = Arc::clone(&app);
            let body = Bytes::copy_from_slice(&body.as_bytes());
            let headers: mlua::Result<Vec<(String, String)>> =
                headers.iter().map(|pair| Ok((pair.get(1)?, pair.get(2)?))).collect();
            async move {
                match exchange(&lua, &app, &method, &path, &headers?, body).await? {
                    Ok((status, headers, body, records)) => (true, status, headers, body, records).into_lua_multi(&lua),
                    Err(message) => (false, message).into_lua_multi(&lua),
                }
            }
        },
    )
}

type Exchanged = (u16, Table, LuaString, Table);

/// One request through the router, and what it wrote; `Err` is a message for the test author.
async fn exchange(
    lua: &Lua,
    app: &Arc<App>,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Bytes,
) -> mlua::Result<Result<Exchanged, String>> {
    let capture = Capture::default();
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let mut request = match request.body(Full::new(body)) {
        Ok(request) => request,
        Err(e) => return Ok(Err(format!("send: not a valid request ({method} {path}): {e}"))),
    };
    request.extensions_mut().insert(capture.clone());
    let response = crate::server::handle(app, request, TEST_REMOTE).await;
    let status = response.status().as_u16();
    let headers = lua.create_table()?;
    for (name, value) in response.headers() {
        let pair = [lua.create_string(name.as_str())?, lua.create_string(value.as_bytes())?];
        headers.push(lua.create_sequence_from(pair)?)?;
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let written = std::mem::take(&mut *capture.0.lock().expect("capture lock poisoned"));
    Ok(match read_back(lua, app, written).await? {
        Ok(records) => Ok((status, headers, lua.create_string(&body)?, records)),
        Err(message) => Err(message),
    })
}

/// Each written record, fetched from its cluster, as a table (`cluster, topic, partition, offset, timestamp, key,
/// value, header_list`).
async fn read_back(lua: &Lua, app: &App, written: Vec<RecordAt>) -> mlua::Result<Result<Table, String>> {
    let records = lua.create_table()?;
    let mut reader = Reader::default();
    for at in written {
        let record = match reader.record(app, &at).await {
            Ok(record) => record,
            Err(why) => {
                return Ok(Err(format!(
                    "send: cannot read back the record written to {}/{} partition {} offset {}: {why}",
                    at.cluster, at.topic, at.partition, at.offset
                )));
            }
        };
        let table = lua.create_table()?;
        table.set("cluster", at.cluster.as_str())?;
        table.set("topic", at.topic.as_str())?;
        table.set("partition", at.partition)?;
        table.set("offset", at.offset)?;
        table.set("timestamp", record.timestamp_ms)?;
        if let Some(key) = &record.key {
            table.set("key", lua.create_string(key)?)?;
        }
        if let Some(value) = &record.value {
            table.set("value", lua.create_string(value)?)?;
        }
        let headers = lua.create_table()?;
        for (name, value) in &record.headers {
            headers.push(lua.create_sequence_from([lua.create_string(name)?, lua.create_string(value)?])?)?;
        }
        table.set("header_list", headers)?;
        records.push(table)?;
    }
    Ok(Ok(records))
}

/// Reads written records back; the records of one request usually sit together in a partition, so one fetch
/// serves all that it returned.
#[derive(Default)]
struct Reader {
    /// The cluster, topic and partition of `fetched`.
    from: Option<(String, String, i32)>,
    fetched: HashMap<i64, FetchedRecord>,
}

impl Reader {
    async fn record(&mut self, app: &App, at: &RecordAt) -> Result<FetchedRecord, String> {
        let from = (at.cluster.clone(), at.topic.clone(), at.partition);
        if self.from.as_ref() == Some(&from)
            && let Some(record) = self.fetched.remove(&at.offset)
        {
            return Ok(record);
        }
        let client = app
            .producer
            .pool()
            .cluster(&at.cluster)
            .await
            .map_err(|e| e.to_string())?;
        let fetched = client
            .fetch(
                &at.topic,
                at.partition,
                at.offset,
                READ_MAX_BYTES,
                READ_MAX_DECODED_BYTES,
                Duration::ZERO,
            )
            .await
            .map_err(|e| e.to_string())?;
        self.fetched = fetched.into_iter().map(|r| (r.offset, r)).collect();
        self.from = Some(from);
        self.fetched
            .remove(&at.offset)
            .ok_or_else(|| "the broker does not have it".to_owned())
    }
}
