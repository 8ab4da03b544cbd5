-- GET / → what this luka serves.
---@param req luka.Request
return function(req)
  return {
    json = {
      service = "luka",
      functions = { "POST /hooks/github", "POST /orders", "GET /events/random?n=5" },
      rest = { "POST /produce/<topic>", "GET /healthz", "GET /readyz" },
    },
  }
end
