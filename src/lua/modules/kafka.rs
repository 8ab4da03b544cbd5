//! `kafka.produce{cluster?, topic?, messages={...}}`: Lua tables in, the shared produce core, a result table out.
//!
//! The call is read and checked whole (field names, types, data/value exclusivity) before the produce core
//! resolves the topic, checks partitions and writes; so one bad message writes nothing. Errors are Lua errors with
//! a plain string message, which a handler may `pcall`. The deprecated single-message form
//! `kafka.produce{topic=, key=, value=}` is the same call with one message.

use std::sync::Arc;

use mlua::{Function, IntoLua, IntoLuaMulti, Lua, MultiValue, Result, Table, Value};

use super::answer;
use crate::config::Config;
use crate::lua::convert::{self, Budget};
use crate::lua::state::{KafkaOutage, Parked, Resume, VmShared, park_token, unlimited};
use crate::produce::{InvalidMessages, Key, Message, Payload, ProduceError, Producer, Written};

pub(crate) const CALL_FIELDS: [&str; 3] = ["cluster", "topic", "messages"];
pub(crate) const MESSAGE_FIELDS: [&str; 6] = ["partition", "key", "data", "value", "headers", "timestamp"];

/// What `kafka.produce` needs from the server.
#[derive(Debug)]
pub struct KafkaContext {
    pub config: Arc<Config>,
    pub producer: Arc<Producer>,
    /// Routes' `records_per_second`, counted per `kafka.produce` call.
    pub limits: Arc<crate::limits::Limits>,
}

impl KafkaContext {
    /// A context with the rate limits `config` sets.
    pub fn new(config: Arc<Config>, producer: Arc<Producer>) -> Arc<Self> {
        let limits = Arc::new(crate::limits::Limits::new(&config));
        Self::with_limits(config, producer, limits)
    }

    pub fn with_limits(config: Arc<Config>, producer: Arc<Producer>, limits: Arc<crate::limits::Limits>) -> Arc<Self> {
        Arc::new(Self {
            config,
            producer,
            limits,
        })
    }

    /// `count` records the current request's function writes now, within the `records_per_second` of the
    /// `[[routes]]` entry that chose it: the handler's error text if not (the refusal is noted on the request, for
    /// its answer's status).
    fn allow(
        &self,
        count: usize,
        request: Option<&Arc<crate::lua::state::RequestState>>,
    ) -> std::result::Result<(), String> {
        let context = crate::context::RequestContext::current();
        let Some(route) = context.as_ref().and_then(|context| context.route()) else {
            return Ok(());
        };
        self.limits.route_records(route, count).map_err(|refused| {
            let message = format!("kafka.produce: {refused}");
            if let Some(request) = request {
                let noted = message.clone();
                request.record(|o| o.records_refused = Some((refused, noted)));
            }
            message
        })
    }
}

/// `kafka.produce` as handlers see it. The common call, one message of a string or number key and a string value or
/// a `data` table, is checked by Lua itself and handed to Rust as plain arguments, and its result table is built by
/// Lua: reading and building tables from Rust costs a protected call per field, which was most of a webhook's
/// produce overhead in the profile.
/// Every other shape goes to the general reader, which reports what is wrong with it.
///
/// Either Rust side checks the call, starts nothing, and parks the coroutine on the produce (see `lua/call.rs`);
/// the Lua side then yields, and is resumed with the outcome: no async machinery runs inside Lua.
const PRODUCE: &str = r#"
local general, one, yield, isyieldable, PARKED = ...
local type, next, error = type, next, error
-- Where Luau cannot pause the handler (called back by a C function such as string.gsub or table.sort, or from a
-- metamethod), the call is refused before anything is started, in words that say why.
local NOT_YIELDABLE = "kafka.produce: it waits for Kafka, so it cannot be called where Lua cannot pause (inside a "
  .. "string.gsub or table.sort callback, or a metamethod); call it from the handler's own code"
local function only_entry(t)
  local n = 0
  for k in next, t do
    n = n + 1
    if n > 1 or k ~= 1 then return nil end
  end
  return t[1]
end
-- The fields are read as the call's keys are walked, raw (as the general reader reads them): a field read by name
-- that is absent misses the compiled code's cache and is looked up again at length, four of them per call.
local function simple(call)
  local cluster, topic, messages
  for k, v in next, call do
    if k == "messages" then messages = v
    elseif k == "topic" then topic = v
    elseif k == "cluster" then cluster = v
    else return nil end
  end
  if type(messages) ~= "table" then return nil end
  local m = only_entry(messages)
  if type(m) ~= "table" then return nil end
  local key, value, data, partition, timestamp
  for k, v in next, m do
    if k == "value" then value = v
    elseif k == "key" then key = v
    elseif k == "data" then data = v
    elseif k == "partition" then partition = v
    elseif k == "timestamp" then timestamp = v
    else return nil end
  end
  -- A string value, or data given as a table (anything else, or both, goes to the general reader).
  local payload = (data == nil and type(value) == "string") or (value == nil and type(data) == "table")
  if not payload or (key ~= nil and type(key) ~= "string" and type(key) ~= "number")
    or (cluster ~= nil and type(cluster) ~= "string") or (topic ~= nil and type(topic) ~= "string")
    or (partition ~= nil and type(partition) ~= "number") or (timestamp ~= nil and type(timestamp) ~= "number") then
    return nil
  end
  return true, cluster, topic, key, value, data, partition, timestamp
end
return function(call)
  if not isyieldable() then error(NOT_YIELDABLE, 2) end
  if type(call) == "table" then
    local one_message, cluster, topic, key, value, data, partition, timestamp = simple(call)
    if one_message then
      local parked, problem = one(cluster, topic, key, value, data, partition, timestamp)
      if not parked then error(problem, 2) end
      -- Resumed by the request's task with the produce's outcome (the key and value when they are not the call's).
      local ok, offset, written_key, written_value, headers
      ok, cluster, topic, partition, offset, written_key, timestamp, written_value, headers = yield(PARKED)
      if not ok then error(cluster, 2) end
      key, value = written_key or key, written_value or value
      return { cluster = cluster, topic = topic, partition = partition, offset = offset, key = key, value = value,
        messages = { { partition = partition, offset = offset, key = key, value = value, headers = headers or {},
          timestamp = timestamp } } }
    end
  end
  local parked, problem = general(call)
  if not parked then error(problem, 2) end
  local ok, r = yield(PARKED)
  if ok then return r end
  error(r, 2)
end
"#;

pub fn module(lua: &Lua, context: Arc<KafkaContext>, shared: Arc<VmShared>) -> Result<Table> {
    lua.set_app_data(NameStrings::default());
    let table = lua.create_table()?;
    let general = {
        let (context, shared) = (Arc::clone(&context), Arc::clone(&shared));
        lua.create_function(move |lua, args: Value| {
            let request = shared.current();
            // Reading the call copies values out of Lua and allocates nothing there: no need for protected calls.
            let call = match args {
                Value::Table(args) => unlimited(lua, 0, || {
                    Ok(read_call(&context.producer, &args, &mut Budget::metered(&shared)))
                })
                .unwrap_or_else(|e| Err(CallError::Invalid(e.to_string()))),
                other => Err(CallError::Invalid(format!(
                    "expected a table: kafka.produce{{topic = \"...\", messages = {{ {{key = ..., value = ...}} }}}}, got {}",
                    type_name(&other)
                ))),
            };
            let messages = match call {
                Ok(messages) => messages,
                Err(CallError::Invalid(e)) => return answer(lua, Err::<Value, _>(format!("kafka.produce: {e}"))),
                Err(CallError::TooMany(e)) => {
                    let message = format!("kafka.produce: {e}");
                    if let Some(request) = &request {
                        request.record(|o| o.too_many = Some(message.clone()));
                    }
                    return answer(lua, Err::<Value, _>(message));
                }
            };
            if let Err(refused) = context.allow(messages.len(), request.as_ref()) {
                return answer(lua, Err::<Value, _>(refused));
            }
            let context = Arc::clone(&context);
            let work = Box::pin(async move {
                let outcome = context.producer.produce_written(messages).await;
                let outcome = outcome.map_err(|e| failure(&e, request));
                Box::new(move |lua: &Lua| {
                    let answered = match outcome {
                        Ok(written) => {
                            let size = written.iter().map(Written::size).sum();
                            answer(lua, Ok(unlimited(lua, size, || result(lua, &written))?))
                        }
                        Err(message) => answer(lua, Err::<Value, _>(message)),
                    };
                    answered?.into_lua_multi(lua)
                }) as Resume
            });
            park(lua, &shared, work)
        })?
    };
    let one = lua.create_function(move |lua, args: OneArgs| {
        let args = OneMessage::from(args);
        let request = shared.current();
        // The handler has its own string key; a generated key, or a number's text, is what the result gives back.
        let key_returned = !matches!(args.key, Some(Value::String(_)));
        // Converting `data` reads Lua tables and allocates nothing there: no need for protected calls.
        let message = unlimited(lua, 0, || {
            Ok(args.into_message(&context.producer, &mut Budget::metered(&shared)))
        })
        .unwrap_or_else(|e| Err(e.to_string()));
        let message = match message {
            Ok(message) => message,
            Err(e) => return answer(lua, Err::<Value, _>(format!("kafka.produce: {e}"))),
        };
        if let Err(refused) = context.allow(1, request.as_ref()) {
            return answer(lua, Err::<Value, _>(refused));
        }
        let context = Arc::clone(&context);
        let work = Box::pin(async move {
            let encoded_value = matches!(message.value, Payload::Data(_) | Payload::Json(_));
            let outcome = context.producer.produce_written(vec![message]).await;
            let outcome = outcome.map_err(|e| failure(&e, request));
            Box::new(move |lua: &Lua| match outcome {
                Ok(mut written) => {
                    let w = written.pop().expect("one message, one result");
                    // Made with the memory limit lifted, as `result` is (under it every string is a protected
                    // call): the record's own key and value, which the request's size bounds, and names from
                    // config.toml.
                    unlimited(lua, w.size(), || {
                        let d = w.delivery;
                        // The caller has its own string key and value; a generated key or a number key's text, and
                        // an encoded value, come back.
                        let key = match (key_returned, w.key) {
                            (true, Some(key)) => Value::String(lua.create_string(key)?),
                            _ => Value::Nil,
                        };
                        let value = match (encoded_value, w.value) {
                            (true, Some(value)) => Value::String(lua.create_string(value)?),
                            _ => Value::Nil,
                        };
                        // The message has none of its own here; what was written may carry the trace context.
                        let headers = if w.headers.is_empty() {
                            Value::Nil
                        } else {
                            Value::Table(headers_table(lua, &w.headers)?)
                        };
                        // Made at its full size: a tuple's conversion grows its list three times on the way.
                        Ok(MultiValue::from_vec(vec![
                            Value::Boolean(true),
                            name_string(lua, &d.cluster)?,
                            name_string(lua, &d.topic)?,
                            d.partition.into_lua(lua)?,
                            d.offset.into_lua(lua)?,
                            key,
                            d.timestamp_ms.into_lua(lua)?,
                            value,
                            headers,
                        ]))
                    })
                }
                Err(message) => (false, message).into_lua_multi(lua),
            }) as Resume
        });
        park(lua, &shared, work)
    })?;
    let coroutine = lua.globals().get::<Table>("coroutine")?;
    let produce: Function = lua.load(PRODUCE).set_name("=kafka.produce").call((
        general,
        one,
        coroutine.get::<Function>("yield")?,
        coroutine.get::<Function>("isyieldable")?,
        Value::LightUserData(park_token()),
    ))?;
    table.set("produce", produce)?;
    Ok(table)
}

/// The Lua strings of the cluster and topic names produces answer with, made once per VM: making (interning) them
/// again for every answer cost about 1% of a webhook request's instructions. At most [`NAMES_KEPT`] (topic patterns
/// can name any number of topics); names past those are made each time.
#[derive(Default)]
struct NameStrings(Vec<(String, mlua::LuaString)>);

const NAMES_KEPT: usize = 64;

fn name_string(lua: &Lua, name: &str) -> Result<Value> {
    let Some(mut names) = lua.app_data_mut::<NameStrings>() else {
        return name.into_lua(lua);
    };
    if let Some((_, made)) = names.0.iter().find(|(kept, _)| kept == name) {
        return Ok(Value::String(made.clone()));
    }
    let made = lua.create_string(name)?;
    if names.0.len() < NAMES_KEPT {
        names.0.push((name.to_owned(), made.clone()));
    }
    Ok(Value::String(made))
}

/// Parks the calling coroutine on `work` (see [`VmShared::park`]): `(true)`, after which the Lua side yields, or
/// `(false, error)` if it cannot be parked.
fn park(lua: &Lua, shared: &VmShared, work: Parked) -> Result<(bool, Value)> {
    match shared.park(lua, work) {
        Ok(()) => Ok((true, Value::Nil)),
        Err(e) => answer(lua, Err::<Value, _>(format!("kafka.produce: {e}"))),
    }
}

/// The arguments of the one-message fast path, already of the right Lua types (the Lua side checked): a string or
/// number `key`, a string `value` or a `data` table.
struct OneMessage {
    cluster: Option<mlua::LuaString>,
    topic: Option<mlua::LuaString>,
    key: Option<Value>,
    value: Option<mlua::LuaString>,
    data: Option<Table>,
    partition: Option<f64>,
    timestamp: Option<f64>,
}

/// [`OneMessage`] as the callback takes it: a tuple, which mlua reads from the Lua stack one argument at a time (a
/// type of our own would be read through a list of every argument made into a value first: about 1% of a webhook
/// request's instructions).
type OneArgs = (
    Option<mlua::LuaString>,
    Option<mlua::LuaString>,
    Option<Value>,
    Option<mlua::LuaString>,
    Option<Table>,
    Option<f64>,
    Option<f64>,
);

impl From<OneArgs> for OneMessage {
    fn from((cluster, topic, key, value, data, partition, timestamp): OneArgs) -> Self {
        Self {
            cluster,
            topic,
            key,
            value,
            data,
            partition,
            timestamp,
        }
    }
}

impl OneMessage {
    fn into_message(self, producer: &Producer, budget: &mut Budget) -> std::result::Result<Message, String> {
        let text = |s: &mlua::LuaString, name: &str| {
            s.to_str_ref()
                .map(|s| s.to_owned())
                .map_err(|_| format!("{name} has the wrong type"))
        };
        let topic = match &self.topic {
            Some(topic) => text(topic, "topic")?,
            None => only_topic(producer.config())?,
        };
        let cluster = self.cluster.as_ref().map(|c| text(c, "cluster")).transpose()?;
        let key = match &self.key {
            None => Key::Random,
            Some(Value::String(key)) => Key::Bytes(bytes(key, budget)?),
            // A number: its JSON text, as the general reader writes a key that is not a string.
            Some(other) => Key::Bytes(
                json_text(other, "key", budget)
                    .map_err(|e| format!("message 1: {e}"))?
                    .into_bytes(),
            ),
        };
        let value = match (&self.value, self.data) {
            (Some(value), _) => Payload::Bytes(Some(bytes(value, budget)?)),
            (None, Some(data)) => data_payload(producer, cluster.as_deref(), &topic, &Value::Table(data), budget)
                .map_err(|e| format!("message 1: {e}"))?,
            (None, None) => unreachable!("the Lua side passes a value or data"),
        };
        Ok(Message {
            topic,
            cluster,
            partition: partition(self.partition).map_err(|e| format!("message 1: {e}"))?,
            key,
            value,
            headers: Vec::new(),
            timestamp_ms: timestamp(self.timestamp).map_err(|e| format!("message 1: {e}"))?,
        })
    }
}

/// The handler's error text for a failed produce; an outage is also noted on the request (for its answer's status).
fn failure(error: &ProduceError, request: Option<Arc<crate::lua::state::RequestState>>) -> String {
    let message = format!("kafka.produce: {error}");
    if let Some(request) = request
        && let Some(kafka) = error.kafka()
        && kafka.class().is_outage()
        && let Some(cluster) = kafka.cluster()
    {
        let outage = KafkaOutage {
            cluster: cluster.to_owned(),
            class: kafka.class(),
            message: message.clone(),
        };
        request.record(|o| o.kafka_outage = Some(outage));
    }
    message
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::LightUserData(p) if p.0.is_null() => "json.null",
        other => other.type_name(),
    }
}

/// Why a `kafka.produce` call was not taken.
enum CallError {
    /// More messages than `[server] max_messages_per_request` (413 if the handler does not catch it).
    TooMany(String),
    /// Anything else wrong with the call (the handler's own mistake: 500 if not caught).
    Invalid(String),
}

impl From<String> for CallError {
    fn from(message: String) -> Self {
        CallError::Invalid(message)
    }
}

fn read_call(producer: &Producer, args: &Table, budget: &mut Budget) -> std::result::Result<Vec<Message>, CallError> {
    let config = producer.config();
    let messages: Option<Table> = field(args, "messages")?;
    let allowed: Vec<&str> = match messages {
        Some(_) => CALL_FIELDS.to_vec(),
        None => CALL_FIELDS.iter().chain(&MESSAGE_FIELDS).copied().collect(),
    };
    convert::check_fields(args, &allowed)?;
    let topic = match field::<String>(args, "topic")? {
        Some(topic) => topic,
        None => only_topic(config)?,
    };
    // Checked before each message takes its copy of it: a name of megabytes, times every message, is copied outside
    // the VM's memory limit.
    if !crate::config::is_valid_topic_name(&topic) {
        return Err(CallError::Invalid(
            crate::produce::ProduceError::InvalidTopicName {
                topic: convert::cut(&topic, 300).into_owned(),
            }
            .to_string(),
        ));
    }
    let cluster: Option<String> = field(args, "cluster")?;
    let Some(list) = messages else {
        // The deprecated single-message form: the message fields sit beside the topic.
        return Ok(vec![read_message(
            producer,
            args,
            &allowed,
            &topic,
            cluster.as_ref(),
            budget,
        )?]);
    };
    let count = list.raw_len();
    let max = config.server.max_messages_per_request;
    if count > max {
        return Err(CallError::TooMany(format!(
            "{count} messages in one call; at most {max} are taken ([server] max_messages_per_request): split them \
             over several calls"
        )));
    }
    // Walked no further than one past the count: a list with gaps has a `#` (a border) far below its entries.
    if count == 0 || list.pairs::<Value, Value>().take(count + 1).count() != count {
        return Err(CallError::Invalid(
            "messages must be a non-empty list of tables: messages = { {key = ..., value = ...} }".into(),
        ));
    }
    // One budget for the whole call: its bytes are copied out of Lua, beyond the VM's memory limit.
    let mut messages = Vec::with_capacity(count);
    let mut invalid = InvalidMessages::default();
    for i in 1..=count {
        let message: Value = list.raw_get(i).map_err(|e| e.to_string())?;
        let read = match message {
            Value::Table(message) => {
                read_message(producer, &message, &MESSAGE_FIELDS, &topic, cluster.as_ref(), budget)
            }
            other => Err(format!("expected a table, got {}", type_name(&other))),
        };
        match read {
            Ok(message) => messages.push(message),
            Err(e) => invalid.add(i, e),
        }
    }
    match invalid.report(count) {
        None => Ok(messages),
        Some(report) => Err(CallError::Invalid(report)),
    }
}

/// With exactly one topic configured (by name, not pattern), `topic` may be left out.
fn only_topic(config: &Config) -> std::result::Result<String, String> {
    match config.topics.as_slice() {
        [only] if only.pattern.is_exact() => Ok(only.pattern.as_str().to_owned()),
        [] => Err("give a topic: topic = \"...\" (config.toml configures none)".into()),
        topics => Err(format!(
            "give a topic: topic = \"...\" (configured: {})",
            topics.iter().map(|t| t.pattern.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn read_message(
    producer: &Producer,
    table: &Table,
    allowed: &[&str],
    topic: &str,
    cluster: Option<&String>,
    budget: &mut Budget,
) -> std::result::Result<Message, String> {
    convert::check_fields(table, allowed)?;
    let partition = partition(field::<f64>(table, "partition")?)?;
    let timestamp_ms = timestamp(field::<f64>(table, "timestamp")?)?;
    let key = match table.raw_get::<Value>("key").map_err(|e| e.to_string())? {
        Value::Nil => Key::Random,
        Value::LightUserData(p) if p.0.is_null() => Key::Null,
        Value::String(s) => Key::Bytes(bytes(&s, budget)?),
        other => Key::Bytes(json_text(&other, "key", budget)?.into_bytes()),
    };
    let data = table.raw_get::<Value>("data").map_err(|e| e.to_string())?;
    let value = table.raw_get::<Value>("value").map_err(|e| e.to_string())?;
    let value = match (data, value) {
        (Value::Nil, Value::Nil) => Payload::Random,
        (data, Value::Nil) => data_payload(producer, cluster.map(String::as_str), topic, &data, budget)?,
        (Value::Nil, value) => Payload::Bytes(value_bytes(&value, budget)?),
        _ => return Err("give data (validated and encoded for the topic) or value (written as is), not both".into()),
    };
    let headers = match field::<Table>(table, "headers")? {
        Some(headers) => read_headers(&headers, budget)?,
        None => Vec::new(),
    };
    Ok(Message {
        topic: topic.to_owned(),
        cluster: cluster.cloned(),
        partition,
        key,
        value,
        headers,
        timestamp_ms,
    })
}

/// `data` as the payload for `topic`: its JSON text where the topic writes that as is, else the value the topic's
/// schema checks and its content type encodes.
fn data_payload(
    producer: &Producer,
    cluster: Option<&str>,
    topic: &str,
    data: &Value,
    budget: &mut Budget,
) -> std::result::Result<Payload, String> {
    let payload = if producer.takes_json_as_is(cluster, topic) {
        convert::encode_within(data, budget).map(Payload::Json)
    } else {
        convert::to_json_within(data, budget).map(Payload::Data)
    };
    payload.map_err(|e| format!("data: {e}"))
}

fn partition(partition: Option<f64>) -> std::result::Result<Option<i32>, String> {
    match partition {
        None => Ok(None),
        Some(p) if p.fract() == 0.0 && (0.0..=f64::from(i32::MAX)).contains(&p) => Ok(Some(p as i32)),
        Some(p) => Err(format!("partition must be an integer from 0 to 2147483647, got {p}")),
    }
}

fn timestamp(timestamp: Option<f64>) -> std::result::Result<Option<i64>, String> {
    match timestamp {
        None => Ok(None),
        Some(t) if t.fract() == 0.0 => Ok(Some(t as i64)),
        Some(t) => Err(format!(
            "timestamp must be an integer number of milliseconds since 1970-01-01T00:00:00Z, got {t}"
        )),
    }
}

/// `value`: strings as their bytes, numbers and booleans as text, tables as JSON, `json.null` as a tombstone.
fn value_bytes(value: &Value, budget: &mut Budget) -> std::result::Result<Option<Vec<u8>>, String> {
    Ok(match value {
        Value::LightUserData(p) if p.0.is_null() => None,
        Value::String(s) => Some(bytes(s, budget)?),
        other => Some(json_text(other, "value", budget)?.into_bytes()),
    })
}

/// A Lua string's bytes, paid for from the call's budget before they are copied.
fn bytes(s: &mlua::LuaString, budget: &mut Budget) -> std::result::Result<Vec<u8>, String> {
    let bytes = s.as_bytes_ref();
    budget.spend(bytes.len())?;
    Ok(bytes.to_vec())
}

fn json_text(value: &Value, name: &str, budget: &mut Budget) -> std::result::Result<String, String> {
    convert::to_json_within(value, budget)
        .map(|json| json.to_string())
        .map_err(|e| format!("{name}: {e}"))
}

/// A name → value table, or a list of `{key=, value=}` (the form for repeated names).
fn read_headers(headers: &Table, budget: &mut Budget) -> std::result::Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    if headers.raw_len() > 0 {
        for entry in headers.sequence_values::<Value>() {
            let Value::Table(entry) = entry.map_err(|e| e.to_string())? else {
                return Err("headers given as a list must hold {key = ..., value = ...} tables".into());
            };
            let name: String = field(&entry, "key")?.ok_or("every header in the list needs key = \"name\"")?;
            budget.spend(name.len())?;
            let value: Value = entry.raw_get("value").map_err(|e| e.to_string())?;
            out.push((name.clone(), header_value(&name, &value, budget)?));
        }
        if out.len() != headers.pairs::<Value, Value>().take(out.len() + 1).count() {
            return Err(
                "headers must be either a list of {key = ..., value = ...} or a name = value table, not both".into(),
            );
        }
        return Ok(out);
    }
    for pair in headers.pairs::<Value, Value>() {
        let (name, value) = pair.map_err(|e| e.to_string())?;
        let Value::String(name) = name else {
            return Err("header names must be strings".into());
        };
        let name = name.to_string_lossy();
        budget.spend(name.len())?;
        out.push((name.clone(), header_value(&name, &value, budget)?));
    }
    out.sort();
    Ok(out)
}

fn header_value(name: &str, value: &Value, budget: &mut Budget) -> std::result::Result<Vec<u8>, String> {
    match value {
        Value::String(s) => bytes(s, budget),
        Value::Number(_) | Value::Integer(_) | Value::Boolean(_) => Ok(json_text(value, name, budget)?.into_bytes()),
        other => Err(format!(
            "header '{name}' must be a string, number or boolean, not a {}",
            other.type_name()
        )),
    }
}

fn field<T: mlua::FromLua>(table: &Table, name: &str) -> std::result::Result<Option<T>, String> {
    table
        .raw_get::<Option<T>>(name)
        .map_err(|_| format!("{name} has the wrong type"))
}

/// `{cluster, topic, messages = {{partition, offset, key, value, headers, timestamp}}}` plus the deprecated
/// `partition, offset, key, value` of the first message. The tables are new and have no metatables, so their fields
/// are set raw: a `set` honours metamethods in a protected call of its own, which made building this answer cost
/// more than the rest of the produce call (profile). The first message's key and value strings serve both places.
fn result(lua: &Lua, written: &[Written]) -> Result<Table> {
    let table = lua.create_table_with_capacity(0, 7)?;
    let messages = lua.create_table_with_capacity(written.len(), 0)?;
    for (i, w) in written.iter().enumerate() {
        let message = lua.create_table_with_capacity(0, 6)?;
        let key = bytes_or_null(lua, w.key.as_deref())?;
        let value = bytes_or_null(lua, w.value.as_deref())?;
        if i == 0 {
            table.raw_set("cluster", name_string(lua, &w.delivery.cluster)?)?;
            table.raw_set("topic", name_string(lua, &w.delivery.topic)?)?;
            table.raw_set("partition", w.delivery.partition)?;
            table.raw_set("offset", w.delivery.offset)?;
            table.raw_set("key", &key)?;
            table.raw_set("value", &value)?;
        }
        message.raw_set("partition", w.delivery.partition)?;
        message.raw_set("offset", w.delivery.offset)?;
        message.raw_set("key", key)?;
        message.raw_set("value", value)?;
        message.raw_set("headers", headers_table(lua, &w.headers)?)?;
        message.raw_set("timestamp", w.delivery.timestamp_ms)?;
        messages.raw_set(i + 1, message)?;
    }
    table.raw_set("messages", messages)?;
    Ok(table)
}

/// `name = value`, or, when a name repeats, the list form `{ {key =, value =}, ... }` in written order (new tables,
/// set raw as in [`result`]).
fn headers_table(lua: &Lua, headers: &[(String, Vec<u8>)]) -> Result<Table> {
    // Each name against those before it only for a few (a trace context's two, say); past that a set: a record of a
    // megabyte can carry 100,000 short headers, and this runs in Rust on the handler's behalf, with no clock checked.
    let repeated = if headers.len() <= 8 {
        (1..headers.len()).any(|i| headers[..i].iter().any(|(earlier, _)| *earlier == headers[i].0))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(headers.len());
        headers.iter().any(|(name, _)| !seen.insert(name.as_str()))
    };
    let table = lua.create_table()?;
    for (i, (name, value)) in headers.iter().enumerate() {
        if repeated {
            let entry = lua.create_table_with_capacity(0, 2)?;
            entry.raw_set("key", name.as_str())?;
            entry.raw_set("value", lua.create_string(value)?)?;
            table.raw_set(i + 1, entry)?;
        } else {
            table.raw_set(name.as_str(), lua.create_string(value)?)?;
        }
    }
    Ok(table)
}

fn bytes_or_null(lua: &Lua, bytes: Option<&[u8]>) -> Result<Value> {
    match bytes {
        Some(bytes) => Ok(Value::String(lua.create_string(bytes)?)),
        None => Ok(Value::NULL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name comes back as itself, whether kept or (past the bound) made again.
    #[test]
    fn name_strings_are_kept_up_to_their_bound_and_always_right() {
        let lua = Lua::new();
        lua.set_app_data(NameStrings::default());
        for _ in 0..2 {
            for i in 0..NAMES_KEPT + 10 {
                let name = format!("topic-{i}");
                let made = name_string(&lua, &name).unwrap();
                assert_eq!(made.as_string().map(|s| s.to_string_lossy()), Some(name));
            }
        }
        assert_eq!(lua.app_data_ref::<NameStrings>().unwrap().0.len(), NAMES_KEPT);
    }
}
