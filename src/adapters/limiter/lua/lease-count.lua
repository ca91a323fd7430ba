-- Counts a user's live stream slots (leases not yet expired), by the server clock like
-- lease-acquire.lua. Read-only: expired members are left for the next acquire to remove.
--
-- KEYS[1]  leases sorted set   user:{<userId>}:leases
--
-- Returns {0, count}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {0, redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')}
