-- Tests for index.lua (run with `luka test`).

test("GET / lists what this luka serves", function()
  local res = send("/")
  eq(res.status, 200)
  eq(res.headers["content-type"], "application/json")
  local index = res:json()
  eq(index.service, "luka")
  eq(index.functions, { "POST /hooks/github", "POST /orders", "GET /events/random?n=5" })
  eq(#res.records, 0)
end)
