-- The multi-cluster example routes topics to two clusters by name and pattern, for users allowed on them.
-- Run from the repository root: luka --config examples/multi-cluster/config.toml test

local function auth(user)
  return { Authorization = "Basic " .. base64.encode(user .. ":" .. user) }
end

-- POST /produce as `user` (whose password is its name in this example).
local function produce(user, messages)
  return send{ method = "POST", path = "/produce", headers = auth(user), json = messages }
end

test("orders and payments are written to the orders cluster", function()
  for _, topic in ipairs({ "orders", "payments" }) do
    local res = send{ method = "POST", path = "/produce/" .. topic, headers = auth("shop"), json = { value = "v" } }
    eq(res.status, 200, topic)
    eq(#res.records, 1)
    eq(res.records[1].cluster, "orders")
    eq(res.records[1].topic, topic)
    eq(res.records[1].value, "v")
  end
end)

test("events.* topics are written to the analytics cluster", function()
  local res = produce("tracker", { { topic = "events.click", value = "c" }, { topic = "events.view", value = "v" } })
  eq(res.status, 200)
  local where = {}
  for _, record in ipairs(res.records) do
    where[record.topic] = record.cluster
  end
  eq(where, { ["events.click"] = "analytics", ["events.view"] = "analytics" })
end)

test("one request can write to both clusters", function()
  local res = produce("admin", { { topic = "orders", value = "o" }, { topic = "events.click", value = "c" } })
  eq(res.status, 200)
  eq(#res.records, 2)
  eq({ res.records[1].cluster, res.records[2].cluster }, { "orders", "analytics" })
end)

test("a user writes only the topics it is allowed", function()
  local res = send{ method = "POST", path = "/produce/events.click", headers = auth("shop"), json = { value = "x" } }
  eq(res.status, 403)
  eq(#res.records, 0)
end)
