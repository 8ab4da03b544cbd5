-- GET /events/random?n=5 → n random events on the `events` topic: no key and no value given, so each gets a
-- random key (9 lower-case letters) and a random value generated for the topic.
-- Sized to the default 50 ms CPU budget per request, even in a debug build (`cargo run`).
local MAX = 100

---@param req luka.Request
return function(req)
  local n = tonumber(req.query.n or "1")
  if not n or n < 1 or n > MAX or n % 1 ~= 0 then
    return { status = 400, json = { error = "n must be a whole number from 1 to " .. MAX } }
  end
  local messages = {}
  for i = 1, n do
    messages[i] = {}
  end
  local result = kafka.produce{ topic = "events", messages = messages }
  local written = {}
  for i, m in ipairs(result.messages) do
    written[i] = { key = m.key, partition = m.partition, offset = m.offset, value = json.decode(m.value) }
  end
  return { json = written }
end
