-- Takes one of a user's concurrent stream slots. Expiries use the server clock so that gateways
-- with skewed clocks agree on which leases are still alive.
--
-- KEYS[1]  leases sorted set (member leaseId, score expiry ms)  user:{<userId>}:leases
-- KEYS[2]  fencing counter                                      user:{<userId>}:lease-fence
-- ARGV[1]  lease id
-- ARGV[2]  slot limit
-- ARGV[3]  lease ttl (ms)
-- ARGV[4]  fencing counter ttl (ms)
--
-- Returns {code, value}:
--   0 OK       value = the new fence (strictly increasing per user)
--   2 REFUSED  value = number of active leases
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)

if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local active = redis.call('ZCARD', KEYS[1])
  if active >= tonumber(ARGV[2]) then return {2, active} end
end

redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], tonumber(last[2]) - now + 1)
local fence = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {0, fence}
