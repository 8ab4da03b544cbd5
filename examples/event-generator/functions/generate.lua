-- GET /generate?topic=orders&n=10 → n random events on the topic. Messages without key and value get both
-- generated from the topic's schemas (config.toml), valid against them.
local MAX = 1000

---@param req luka.Request
return function(req)
  local topic = req.query.topic or "orders"
  local n = tonumber(req.query.n or "1")
  if not n or n < 1 or n > MAX or n % 1 ~= 0 then
    return { status = 400, json = { error = "n must be a whole number from 1 to " .. MAX } }
  end
  local messages = table.create(n)
  for i = 1, n do
    messages[i] = {}
  end
  local ok, result = pcall(kafka.produce, { topic = topic, messages = messages })
  if not ok then
    return { status = 400, json = { error = result } }
  end
  local written = table.create(n)
  for i, m in ipairs(result.messages) do
    written[i] = { key = m.key, partition = m.partition, offset = m.offset }
  end
  return { json = { topic = topic, written = written, sample = json.decode(result.value) } }
end
