-- Reserves 1 request and the estimated tokens in every quota window of one user, all or none,
-- and opens one of the user's in-flight slots. Every check is made before anything changes, so a
-- refusal changes nothing.
--
-- KEYS[1]     reservation hash      user:{<userId>}:reservation:<requestId>
-- KEYS[2]     settled marker        user:{<userId>}:settled:<requestId>
-- KEYS[3]     reservation index     sluice:reservation:<requestId>  (-> userId)
-- KEYS[4]     deadline sorted set   sluice:reservations
-- KEYS[5]     open set              user:{<userId>}:in-flight  (request ids of open reservations)
-- KEYS[6..]   one counter per window user:{<userId>}:quota:<window>:<metric>:used:<period>
-- ARGV[1]     request id
-- ARGV[2]     user id
-- ARGV[3]     reserved tokens
-- ARGV[4]     deadline (ms since epoch)
-- ARGV[5]     windows as JSON (returned by expired())
-- ARGV[6]     counters as JSON [[key, metric], ...] (read back by settle.lua)
-- ARGV[7]     most open reservations the user may hold, this one included; -1 = no cap
-- ARGV[8..]   per window, three values: amount, limit, expire-at (ms since epoch)
--
-- Returns {code, detail, used_1, ..., used_n}:
--   0 OK         reserved; used_i are the counters afterwards
--   1 DUPLICATE  this request id was already reserved or settled (by any user); nothing changed
--   2 REFUSED    window `detail` (1-based) would exceed its limit; nothing changed
--   5 IN_FLIGHT  the user already holds `detail` open reservations, the cap; nothing changed
local n = #KEYS - 5
local used = {}
for i = 1, n do
  used[i] = tonumber(redis.call('GET', KEYS[5 + i]) or '0')
end

-- The index outlives settlement as long as the marker does, and catches an id reused by another user.
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  return {1, 0, unpack(used)}
end

local cap = tonumber(ARGV[7])
if cap >= 0 then
  local open = redis.call('SCARD', KEYS[5])
  if open >= cap then return {5, open, unpack(used)} end
end

for i = 1, n do
  local base = 8 + (i - 1) * 3
  if used[i] + tonumber(ARGV[base]) > tonumber(ARGV[base + 1]) then
    return {2, i, unpack(used)}
  end
end

for i = 1, n do
  local base = 8 + (i - 1) * 3
  used[i] = redis.call('INCRBY', KEYS[5 + i], ARGV[base])
  redis.call('PEXPIREAT', KEYS[5 + i], ARGV[base + 2])
end

redis.call('HSET', KEYS[1], 'userId', ARGV[2], 'tokens', ARGV[3], 'deadline', ARGV[4],
  'windows', ARGV[5], 'counters', ARGV[6])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
-- Emptied by settle/release (the sweeper reclaims past the deadline); Redis drops an empty set.
redis.call('SADD', KEYS[5], ARGV[1])
return {0, 0, unpack(used)}
