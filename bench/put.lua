-- PUT a presence for a rotating set of users, each with its own token, from TOKENS_FILE
-- ("user token" per line).
local entries = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do
  local user, token = line:match("(%S+) (%S+)")
  entries[#entries + 1] = { "/api/v2/presence/" .. user, { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" } }
end
local body = '{"status":"online","message":"benchmark","ttl":3600}'
local i = 0
request = function()
  i = i + 1
  local e = entries[(i % #entries) + 1]
  return wrk.format("PUT", e[1], e[2], body)
end
