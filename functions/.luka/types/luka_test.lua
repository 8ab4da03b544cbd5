---@meta
-- The API of `luka test` files (`*_test.lua`), for lua-language-server. Written by `luka types`.
-- Test files also see the handler modules except `kafka` (`json`, `schema`, `crypto`, `base64`, ...).

---@class luka.TestRequest
---@field method string? Default "GET", or "POST" when a body or json is given.
---@field path string The path (starting with /), with a query string if any: "/events/random?n=3".
---@field headers table<string, string|string[]>? Request headers; a list sends a name several times.
---@field body string? The raw body.
---@field json any? A value sent as a JSON body (with `Content-Type: application/json` unless headers set one); not with body.

---@class luka.TestRecord
---@field cluster string The cluster (config.toml name) it was written to.
---@field topic string
---@field partition integer
---@field offset integer
---@field timestamp integer Milliseconds since the epoch.
---@field key string? Nil for a record without a key.
---@field value string? Nil for a tombstone.
---@field headers table<string, string> By name; repeated names joined with ", ".
---@field header_list string[][] Every header in order, as `{name, value}` pairs.
local TestRecord = {}

--- The value parsed as JSON.
---@return any
function TestRecord:json() end

---@class luka.TestResponse
---@field status integer
---@field headers table<string, string> By name, case-insensitive; repeated names joined with ", ".
---@field body string
---@field records luka.TestRecord[] Every record the request wrote, in order, read back from the broker.
local TestResponse = {}

--- The body parsed as JSON.
---@return any
function TestResponse:json() end

--- Registers a test; `luka test` runs it (unless `--filter` leaves it out) and reports it by `name`.
---@param name string
---@param fn fun()
function test(name, fn) end

--- Sends a request through luka's router (handlers and REST API alike) and waits for the answer.
---@param request luka.TestRequest|string A path alone sends a GET.
---@return luka.TestResponse
function send(request) end

--- Fails the test unless `actual` and `expected` are equal, tables compared deeply; the failure lists each
--- differing path with both values.
---@param actual any
---@param expected any
---@param label string? Named in the failure.
function eq(actual, expected, label) end

--- Fails the test unless `value` is true (neither nil nor false).
---@param value any
---@param label string?
function ok(value, label) end

--- Fails the test unless `text` is a string that matches the Lua `pattern`.
---@param text any
---@param pattern string
---@param label string?
function matches(text, pattern, label) end

--- An environment variable of the `luka test` process.
---@param name string
---@return string?
function getenv(name) end
