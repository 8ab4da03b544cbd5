-- Tests for orders.lua (run with `luka test`).

test("an order is written to `orders` as data, keyed by its id", function()
  local res = send{ method = "POST", path = "/orders", json = { item = "book", quantity = 2 } }
  eq(res.status, 201)
  local answer = res:json()
  matches(answer.id, "^%x+%-%x+%-%x+%-%x+%-%x+$")
  eq(#res.records, 1)
  local record = res.records[1]
  eq(record.topic, "orders")
  eq(record.key, answer.id)
  eq({ partition = record.partition, offset = record.offset }, { partition = answer.partition, offset = answer.offset })
  local order = record:json()
  ok(order.received_ms > 0, "received_ms is set")
  order.received_ms = nil
  eq(order, { id = answer.id, item = "book", quantity = 2 })
end)

test("an order keeps the id it is sent with", function()
  local res = send{ method = "POST", path = "/orders", json = { id = "ord-7", item = "pen", quantity = 1 } }
  eq(res.status, 201)
  eq(res.records[1].key, "ord-7")
end)

test("a body that is not an order is refused and writes nothing", function()
  for _, body in ipairs({ "[1, 2]", '{"item": "book"}', '{"item": "book", "quantity": 0}' }) do
    local res = send{ method = "POST", path = "/orders", body = body }
    eq(res.status, 422, body)
    eq(#res.records, 0, body)
  end
  eq(send{ method = "POST", path = "/orders", body = "not json" }.status, 400)
end)

test("only POST is routed", function()
  local res = send("/orders")
  eq(res.status, 405)
  eq(res.headers.allow, "POST")
end)
