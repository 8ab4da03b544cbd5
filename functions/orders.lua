-- POST /orders with a JSON order → the `orders` topic, as `data` (encoded by the topic's configuration),
-- keyed by the order id so every event of one order lands on the same partition.
---@param req luka.Request
return function(req)
  local order = req:json() -- a body that is not JSON answers 400
  if type(order) ~= "table" then
    return { status = 422, json = { error = "send the order as a JSON object: {\"item\": ..., \"quantity\": ...}" } }
  end
  if type(order.item) ~= "string" or type(order.quantity) ~= "number" or order.quantity < 1 then
    return { status = 422, json = { error = "an order needs item (string) and quantity (number >= 1)" } }
  end
  order.id = order.id or uuid.v4()
  order.received_ms = time.now_ms()

  local result = kafka.produce{
    topic = "orders",
    messages = { { key = order.id, data = order } },
  }
  local written = result.messages[1]
  return { status = 201, json = { id = order.id, partition = written.partition, offset = written.offset } }
end
