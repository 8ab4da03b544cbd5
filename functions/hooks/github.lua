-- GitHub webhook → Kafka.
-- Checks X-Hub-Signature-256 against the secret from config.toml ([[routes]] env), then writes the delivery to
-- the `github-events` topic, keyed by repository so one repository's events stay in order.
---@param req luka.Request
return function(req)
  local ok, why = webhook.verify_github(req, env.GITHUB_WEBHOOK_SECRET)
  if not ok then
    log.warn("rejected a GitHub delivery:", why)
    return { status = 401, json = { error = "invalid signature" } }
  end

  local event = req:json()
  local repository = event.repository and event.repository.full_name or "unknown"
  local result = kafka.produce{
    topic = "github-events",
    messages = {
      {
        key = repository,
        value = req.body, -- the raw payload, byte for byte
        headers = {
          ["github-event"] = req.headers["X-GitHub-Event"] or "unknown",
          ["github-delivery"] = req.headers["X-GitHub-Delivery"] or "",
        },
      },
    },
  }
  local written = result.messages[1]
  return { status = 202, json = { partition = written.partition, offset = written.offset } }
end
