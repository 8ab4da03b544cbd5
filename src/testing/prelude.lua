-- The API `luka test` files see: test, send, eq, ok, matches. Loaded once per run with the Rust side's raw send
-- and the json module; gives back what the runner needs (the registered tests, and a protected call).
local raw_send, json, getenv = ...

local tests = {}

local function test(name, fn)
  if type(name) ~= "string" or type(fn) ~= "function" then
    error("test(name, function() ... end): give the test a name and a function", 2)
  end
  tests[#tests + 1] = { name = name, fn = fn }
end

local IDENT = "^[%a_][%w_]*$"
local MAX_DIFFERENCES = 10
local ONE_LINE = 80

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    return ta < tb
  end
  if ta == "number" or ta == "string" then
    return a < b
  end
  return tostring(a) < tostring(b)
end

local function sorted_keys(...)
  local seen, keys = {}, {}
  for i = 1, select("#", ...) do
    for k in pairs((select(i, ...))) do
      if not seen[k] then
        seen[k] = true
        keys[#keys + 1] = k
      end
    end
  end
  table.sort(keys, key_order)
  return keys
end

local function is_list(t, keys)
  return #keys == #t
end

-- A value as Lua source: keys sorted, short tables on one line, nested ones indented.
local function show(v, indent, seen)
  indent, seen = indent or "", seen or {}
  if type(v) == "string" then
    return string.format("%q", v)
  elseif v == json.null then
    return "json.null"
  elseif type(v) ~= "table" then
    return tostring(v)
  elseif seen[v] then
    return "<cycle>"
  end
  local keys = sorted_keys(v)
  if #keys == 0 then
    return "{}"
  end
  seen[v] = true
  local inner, items, list = indent .. "  ", {}, is_list(v, keys)
  for i, k in ipairs(keys) do
    local shown = show(v[k], inner, seen)
    if list then
      items[i] = shown
    elseif type(k) == "string" and k:match(IDENT) then
      items[i] = k .. " = " .. shown
    else
      items[i] = "[" .. show(k, inner, seen) .. "] = " .. shown
    end
  end
  seen[v] = nil
  local one = "{ " .. table.concat(items, ", ") .. " }"
  if #one <= ONE_LINE and not one:find("\n") then
    return one
  end
  return "{\n" .. inner .. table.concat(items, ",\n" .. inner) .. ",\n" .. indent .. "}"
end

local function path_of(path, k)
  if type(k) == "string" and k:match(IDENT) then
    return path .. "." .. k
  end
  return path .. "[" .. show(k) .. "]"
end

local function lines_of(s)
  local lines = {}
  for line in (s .. "\n"):gmatch("(.-)\n") do
    lines[#lines + 1] = line
  end
  return lines
end

-- Where `actual` and `expected` differ, one line each, at most MAX_DIFFERENCES.
local function differences(actual, expected, path, out)
  if #out >= MAX_DIFFERENCES then
    return
  end
  local where = path == "" and "value" or path:gsub("^%.", "")
  if type(actual) == "table" and type(expected) == "table" then
    for _, k in ipairs(sorted_keys(expected, actual)) do
      local at = path_of(path, k)
      if expected[k] == nil then
        out[#out + 1] = at:gsub("^%.", "") .. ": not expected, got " .. show(actual[k])
      elseif actual[k] == nil then
        out[#out + 1] = at:gsub("^%.", "") .. ": missing, expected " .. show(expected[k])
      else
        differences(actual[k], expected[k], at, out)
      end
    end
  elseif type(actual) == "string" and type(expected) == "string" and (actual .. expected):find("\n") then
    if actual ~= expected then
      local a, e = lines_of(actual), lines_of(expected)
      for i = 1, math.max(#a, #e) do
        if a[i] ~= e[i] then
          out[#out + 1] = where .. ", line " .. i .. ": expected " .. show(e[i]) .. ", got " .. show(a[i])
          break
        end
      end
    end
  elseif actual ~= expected then
    out[#out + 1] = where .. ": expected " .. show(expected) .. ", got " .. show(actual)
  end
end

local function fail(label, lines)
  local text = (label and (tostring(label) .. ": ") or "") .. table.concat(lines, "\n")
  error(text, 3)
end

-- Deep equality; on a difference, fails with each differing path and both values.
local function eq(actual, expected, label)
  local out = {}
  differences(actual, expected, "", out)
  if #out == 0 then
    return
  end
  local lines = { "values differ" }
  for _, d in ipairs(out) do
    lines[#lines + 1] = "  " .. d
  end
  if #out >= MAX_DIFFERENCES then
    lines[#lines + 1] = "  (and maybe more)"
  end
  if type(actual) == "table" or type(expected) == "table" then
    lines[#lines + 1] = "  expected: " .. show(expected, "  ")
    lines[#lines + 1] = "  actual:   " .. show(actual, "  ")
  end
  fail(label, lines)
end

local function ok(value, label)
  if not value then
    fail(label, { "expected a true value, got " .. show(value) })
  end
end

local function matches(text, pattern, label)
  if type(text) ~= "string" or not text:find(pattern) then
    fail(label, { "expected a string matching " .. show(pattern) .. ", got " .. show(text) })
  end
end

-- JSON text to a value; a failure is reported at the test's line, not here.
local function decode(text, what)
  local decoded, value = pcall(json.decode, text)
  if not decoded then
    error(what .. " is not JSON: " .. tostring(value), 3)
  end
  return value
end

local Response = {}
Response.__index = Response
function Response:json()
  return decode(self.body, "the response body")
end

local Record = {}
Record.__index = Record
function Record:json()
  return decode(self.value, "the record's value")
end

-- Header names are case-insensitive: `res.headers["Content-Type"]` finds `content-type`.
local CASELESS = {
  __index = function(map, name)
    if type(name) == "string" then
      return rawget(map, string.lower(name))
    end
    return nil
  end,
}

-- `name -> value`, repeated names joined with ", " (HTTP's rule for combining them); HTTP headers are looked up
-- case-insensitively, record headers (any bytes, as Kafka has them) as they are.
local function header_map(list, caseless)
  local map = caseless and setmetatable({}, CASELESS) or {}
  for _, pair in ipairs(list) do
    local name, value = caseless and string.lower(pair[1]) or pair[1], pair[2]
    local seen = rawget(map, name)
    map[name] = seen and (seen .. ", " .. value) or value
  end
  return map
end

local function send(request)
  if type(request) == "string" then
    request = { path = request }
  end
  if type(request) ~= "table" or type(request.path) ~= "string" or request.path:sub(1, 1) ~= "/" then
    error("send{ method = ..., path = \"/...\", headers = {...}, body = \"...\" or json = {...} }: give a path starting with /", 2)
  end
  if request.body ~= nil and request.json ~= nil then
    error("send: give body (sent as is) or json (encoded), not both", 2)
  end
  local headers, typed = {}, false
  for name, value in pairs(request.headers or {}) do
    local values = type(value) == "table" and value or { value }
    for _, v in ipairs(values) do
      headers[#headers + 1] = { tostring(name), tostring(v) }
    end
    typed = typed or string.lower(tostring(name)) == "content-type"
  end
  local body = request.body
  if request.json ~= nil then
    body = json.encode(request.json)
    if not typed then
      headers[#headers + 1] = { "content-type", "application/json" }
    end
  end
  local method = request.method or (body and "POST" or "GET")
  local sent, status, response_headers, response_body, records =
    raw_send(string.upper(method), request.path, headers, body or "")
  if not sent then
    error(status, 2)
  end
  for _, record in ipairs(records) do
    record.headers = header_map(record.header_list, false)
    setmetatable(record, Record)
  end
  return setmetatable({
    status = status,
    headers = header_map(response_headers, true),
    body = response_body,
    records = records,
  }, Response)
end

-- Runs one test; gives true, or false and the failure as text.
local function run(fn)
  local passed, err = pcall(fn)
  if passed then
    return true
  end
  return false, type(err) == "string" and err or show(err)
end

local function take_tests()
  local taken = tests
  tests = {}
  return taken
end

return { test = test, send = send, eq = eq, ok = ok, matches = matches, getenv = getenv }, run, take_tests
