-- PUT a presence for a rotating set of users, each with its own token, from TOKENS_FILE
-- ("user token" per line). Each user's request is formatted once, at start: the load generator
-- spends its CPU sending, not building strings.
local requests = {}
local body = '{"status":"online","message":"benchmark","ttl":3600}'
for line in io.lines(os.getenv("TOKENS_FILE")) do
  local user, token = line:match("(%S+) (%S+)")
  local headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
  requests[#requests + 1] = wrk.format("PUT", "/api/v2/presence/" .. user, headers, body)
end
local i = 0
request = function()
  i = i + 1
  return requests[(i % #requests) + 1]
end
