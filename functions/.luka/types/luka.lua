---@meta
-- luka's handler API, for lua-language-server. Written by `luka types`; regenerate it after upgrading luka.
-- A handler file returns `function(req) ... return response end`; write `---@param req luka.Request` above it (or
-- `---@type luka.Handler` above `return`) and the editor knows what `req` holds.

---@class luka.Request
---@field method string Upper-case HTTP method, e.g. "POST".
---@field path string The request path, e.g. "/hooks/github".
---@field params table<string, string> Values of `{name}` segments of the route's path.
---@field query table<string, string> Query string values by name (the last of a repeated name).
---@field headers table<string, string> Request headers, repeats joined with ", "; names are case-insensitive (`req.headers["X-Event"]`).
---@field body string The raw body bytes.
---@field remote_addr string The client's address, "ip:port".
---@field user string? The `[[users]]` name, on routes with `auth = true`.
local Request = {}

--- The body parsed as JSON; a body that is not JSON answers 400 unless the handler catches the error with `pcall`.
---@return any
function Request:json() end

---@class luka.Response
---@field status integer? HTTP status, a whole number from 200 to 599; default 200.
---@field headers table<string, string|number|boolean>? Response headers.
---@field body string? The body, as is.
---@field json any? A value sent as JSON (`application/json` unless `headers` sets a Content-Type).

---@alias luka.Handler fun(req: luka.Request): luka.Response|string|nil

---@class luka.ProduceHeader
---@field key string Header name.
---@field value string|number|boolean Header value.

---@class luka.ProduceMessage
---@field partition integer? Partition to write; default: by key (murmur2, as Java's client), or one per call.
---@field key any? A string is written as its bytes, other values as JSON, `json.null` as no key; absent: a random key.
---@field value any? Written as is: string bytes, number or boolean as text, table as JSON, `json.null` as a tombstone.
---@field data any? Structured data, checked against the topic's `value_schema`, encoded by its `content_type`.
---@field headers table<string, string|number|boolean>|luka.ProduceHeader[]? Record headers; the list form may repeat names.
---@field timestamp integer? Milliseconds since the epoch; default now.

---@class luka.ProduceCall
---@field cluster string? Cluster to write to; default: the one the topic is routed to.
---@field topic string? Topic; may be left out when exactly one topic is configured and it is an exact name.
---@field messages luka.ProduceMessage[] The records to write; every one is checked before any is written.

--- The single-message form (deprecated: use `messages = { {...} }`), as older handlers call it.
---@class luka.ProduceOne
---@field cluster string? Cluster to write to; default: the one the topic is routed to.
---@field topic string? Topic; may be left out when exactly one topic is configured and it is an exact name.
---@field partition integer? Partition to write; default: by key (murmur2, as Java's client), or one per call.
---@field key any? A string is written as its bytes, other values as JSON, `json.null` as no key; absent: a random key.
---@field value any? Written as is: string bytes, number or boolean as text, table as JSON, `json.null` as a tombstone.
---@field data any? Structured data, checked against the topic's `value_schema`, encoded by its `content_type`.
---@field headers table<string, string|number|boolean>|luka.ProduceHeader[]? Record headers; the list form may repeat names.
---@field timestamp integer? Milliseconds since the epoch; default now.

---@class luka.Written
---@field partition integer
---@field offset integer
---@field key string|lightuserdata The key as written (`json.null` when none).
---@field value string|lightuserdata The value as written (`json.null` for a tombstone).
---@field headers table<string, string>|luka.ProduceHeader[] As written: by name, or a list when a name repeats.
---@field timestamp integer Milliseconds since the epoch.

---@class luka.ProduceResult
---@field cluster string
---@field topic string
---@field messages luka.Written[] One entry per message, in order.
---@field partition integer The first message's partition (deprecated).
---@field offset integer The first message's offset (deprecated).
---@field key string|lightuserdata The first message's key (deprecated; `json.null` when none).
---@field value string|lightuserdata The first message's value (deprecated; `json.null` for a tombstone).

--- Writing to Kafka.
kafka = {}

--- Writes the messages and waits for `acks=all`; raises a plain-string error (catchable with `pcall`) when a
--- message is invalid or the cluster does not take them.
---@param call luka.ProduceCall
---@return luka.ProduceResult
---@overload fun(call: luka.ProduceOne): luka.ProduceResult
function kafka.produce(call) end

--- JSON text and Lua values.
json = {}

--- JSON null, distinct from `nil`: keeps a key present when encoding, and stands for a null when decoded.
---@type lightuserdata
json.null = nil

--- Lua value to compact JSON text; arrays decoded from JSON stay arrays when re-encoded, even empty.
---@param value any
---@return string
function json.encode(value) end

--- JSON text to a Lua value; raises on invalid JSON.
---@param text string
---@return any
function json.decode(text) end

--- The topics' JSON Schemas (config.toml `value_schema`).
schema = {}

--- Checks `value` against the topic's value schema without producing. Raises an error when the topic is not
--- configured or has no `value_schema`.
---@param topic string
---@param value any
---@return boolean valid
---@return string[]? violations Each `<JSON pointer>: <what was expected>`.
function schema.validate(topic, value) end

--- A random value valid against the topic's value schema.
---@param topic string
---@return any
function schema.random(topic) end

---@alias luka.Encoding "hex"|"base64"|"raw"

--- Hashes and signatures.
crypto = {}

---@param data string
---@param encoding luka.Encoding? Default "hex".
---@return string
function crypto.sha256(data, encoding) end

---@param key string
---@param data string
---@param encoding luka.Encoding? Default "hex".
---@return string
function crypto.hmac_sha256(key, data, encoding) end

--- Compares two strings in time that depends only on their lengths (for signatures).
---@param a string?
---@param b string?
---@return boolean
function crypto.equals(a, b) end

base64 = {}

---@param data string
---@return string
function base64.encode(data) end

--- Raises on invalid input.
---@param text string
---@return string
function base64.decode(text) end

--- URL-safe alphabet, no padding.
---@param data string
---@return string
function base64.encode_url(data) end

--- URL-safe alphabet, padding optional; raises on invalid input.
---@param text string
---@return string
function base64.decode_url(text) end

hex = {}

---@param data string
---@return string
function hex.encode(data) end

--- Raises on invalid input.
---@param text string
---@return string
function hex.decode(text) end

--- Webhook signature checks.
webhook = {}

--- Checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`.
---@param req luka.Request
---@param secret string
---@return boolean ok
---@return string? reason Why not, when not.
function webhook.verify_github(req, secret) end

--- Checks `Stripe-Signature: t=...,v1=...` (HMAC of `t.body`; any v1 may match) within `tolerance_s` (default 300).
---@param req luka.Request
---@param secret string
---@param tolerance_s integer?
---@return boolean ok
---@return string? reason Why not, when not.
function webhook.verify_stripe(req, secret, tolerance_s) end

--- The server's log, tagged with the function's file and the request id.
log = {}

---@param ... any
function log.debug(...) end

---@param ... any
function log.info(...) end

---@param ... any
function log.warn(...) end

---@param ... any
function log.error(...) end

time = {}

--- Milliseconds since the epoch.
---@return number
function time.now_ms() end

uuid = {}

--- A random (version 4) UUID, e.g. "2f6c0e0e-...".
---@return string
function uuid.v4() end

--- `log.info`.
---@param ... any
function print(...) end

--- The route's `env` values from config.toml (`[[routes]] env = {...}`), read-only.
---@type table<string, string>
env = {}
