-- Keeps a lease alive if it still holds its slot.
--
-- KEYS[1]  leases sorted set   user:{<userId>}:leases
-- ARGV[1]  lease id
-- ARGV[2]  lease ttl (ms)
--
-- Returns {code}: 0 OK refreshed; 4 UNKNOWN the lease expired or was released
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {4}
end

redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], tonumber(last[2]) - now + 1)
return {0}
