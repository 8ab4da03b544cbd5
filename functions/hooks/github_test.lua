-- Tests for hooks/github.lua (run with `luka test`).

-- The secret config.toml gives the route: GITHUB_WEBHOOK_SECRET from the environment, else (unset or empty)
-- "dev-secret".
local SECRET = getenv("GITHUB_WEBHOOK_SECRET")
if SECRET == nil or SECRET == "" then SECRET = "dev-secret" end
local BODY = '{"action":"opened","repository":{"full_name":"octo/hello"}}'

local function signed(body, secret)
  return "sha256=" .. crypto.hmac_sha256(secret, body)
end

test("a signed delivery is written byte for byte, keyed by repository", function()
  local res = send{
    method = "POST",
    path = "/hooks/github",
    headers = {
      ["X-Hub-Signature-256"] = signed(BODY, SECRET),
      ["X-GitHub-Event"] = "pull_request",
      ["X-GitHub-Delivery"] = "d-1",
    },
    body = BODY,
  }
  eq(res.status, 202)
  eq(#res.records, 1)
  local record = res.records[1]
  eq(res:json(), { partition = record.partition, offset = record.offset })
  eq(record.topic, "github-events")
  eq(record.key, "octo/hello")
  eq(record.value, BODY)
  eq(record.headers, { ["github-event"] = "pull_request", ["github-delivery"] = "d-1" })
end)

test("a delivery signed with another secret is refused and writes nothing", function()
  local res = send{
    method = "POST",
    path = "/hooks/github",
    headers = { ["X-Hub-Signature-256"] = signed(BODY, SECRET .. "-not") },
    body = BODY,
  }
  eq(res.status, 401)
  eq(res:json(), { error = "invalid signature" })
  eq(#res.records, 0)
end)

test("an unsigned delivery is refused", function()
  local res = send{ method = "POST", path = "/hooks/github", body = BODY }
  eq(res.status, 401)
  eq(#res.records, 0)
end)

test("a delivery without a repository is keyed 'unknown'", function()
  local body = '{"zen":"Keep it logically awesome."}'
  local res = send{
    method = "POST",
    path = "/hooks/github",
    headers = { ["X-Hub-Signature-256"] = signed(body, SECRET), ["X-GitHub-Event"] = "ping" },
    body = body,
  }
  eq(res.status, 202)
  eq(res.records[1].key, "unknown")
  eq(res.records[1].headers["github-event"], "ping")
end)
