-- Replaces a reservation by the actual charge, once per request id: applies actual - reserved to
-- every counter the reservation was made in (its own periods, even after a rollover).
--
-- KEYS[1]  reservation hash      user:{<userId>}:reservation:<requestId>
-- KEYS[2]  settled marker        user:{<userId>}:settled:<requestId>
-- KEYS[3]  reservation index     sluice:reservation:<requestId>
-- KEYS[4]  deadline sorted set   sluice:reservations
-- KEYS[5]  open set              user:{<userId>}:in-flight  (the reservation's slot is closed)
-- ARGV[1]  request id
-- ARGV[2]  charged tokens
-- ARGV[3]  charged requests (0 or 1)
-- ARGV[4]  how long the settled marker and the index are kept (ms)
-- ARGV[5]  '1' to release instead: the same adjustment with a charge of 0, but no settled marker
--          and no index are left, so the request id can reserve again
--
-- Returns {code}:
--   0 OK               settled now
--   3 ALREADY_SETTLED  settled before; nothing changed
--   4 UNKNOWN          no reservation and no settled marker
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {3} end
  return {4}
end

local reserved = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
local counters = cjson.decode(redis.call('HGET', KEYS[1], 'counters'))
for _, c in ipairs(counters) do
  local delta
  if c[2] == 'tokens' then delta = tonumber(ARGV[2]) - reserved else delta = tonumber(ARGV[3]) - 1 end
  -- A counter that already expired with its period is not recreated (it would never expire).
  if delta ~= 0 and redis.call('EXISTS', c[1]) == 1 then
    if redis.call('INCRBY', c[1], delta) < 0 then redis.call('SET', c[1], 0, 'KEEPTTL') end
  end
end

redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
return {0}
