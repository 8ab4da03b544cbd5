-- Tests for generate.lua (run from the repository root: luka --config examples/event-generator/config.toml test).

test("n orders, each valid against the topic's schemas", function()
  local res = send("/generate?topic=orders&n=5")
  eq(res.status, 200)
  local answer = res:json()
  eq(answer.topic, "orders")
  eq(#answer.written, 5)
  eq(#res.records, 5)
  for i, record in ipairs(res.records) do
    eq(record.topic, "orders")
    matches(record.key, "^ord%-%d%d%d%d%d%d$", "the key follows the key schema")
    eq(answer.written[i].key, record.key)
    local valid, violations = schema.validate("orders", record:json())
    eq(violations, nil)
    ok(valid)
  end
end)

test("every topic of the example generates valid events", function()
  for _, topic in ipairs({ "orders", "signups", "readings" }) do
    local res = send("/generate?topic=" .. topic .. "&n=3")
    eq(res.status, 200, topic)
    eq(#res.records, 3, topic)
    for _, record in ipairs(res.records) do
      eq(record.topic, topic)
      ok(schema.validate(topic, record:json()), topic .. " value is valid")
    end
  end
end)

test("an unknown topic or a bad n is refused and writes nothing", function()
  local unknown = send("/generate?topic=nope")
  eq(unknown.status, 400)
  matches(unknown:json().error, "nope")
  eq(#unknown.records, 0)
  for _, n in ipairs({ "0", "1001", "x" }) do
    local res = send("/generate?n=" .. n)
    eq(res.status, 400, "n=" .. n)
    eq(#res.records, 0)
  end
end)
