-- Tests for events/random.lua (run with `luka test`).

test("n random events are written to `events`, each keyed by 9 lower-case letters", function()
  local res = send("/events/random?n=3")
  eq(res.status, 200)
  local answer = res:json()
  eq(#answer, 3)
  eq(#res.records, 3)
  for i, record in ipairs(res.records) do
    eq(record.topic, "events")
    matches(record.key, "^%l%l%l%l%l%l%l%l%l$")
    eq(answer[i].key, record.key)
    eq(answer[i].offset, record.offset)
    eq(answer[i].value, record:json(), "the answer shows the value written")
  end
end)

test("one event without n", function()
  local res = send("/events/random")
  eq(res.status, 200)
  eq(#res.records, 1)
end)

test("n outside 1..100 is refused and writes nothing", function()
  for _, n in ipairs({ "0", "101", "1.5", "many" }) do
    local res = send("/events/random?n=" .. n)
    eq(res.status, 400, "n=" .. n)
    eq(res:json(), { error = "n must be a whole number from 1 to 100" })
    eq(#res.records, 0)
  end
end)
