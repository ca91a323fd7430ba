-- Moves an unsettled reservation's deadline.
--
-- KEYS[1]  reservation hash      user:{<userId>}:reservation:<requestId>
-- KEYS[2]  deadline sorted set   sluice:reservations
-- ARGV[1]  request id
-- ARGV[2]  new deadline (ms since epoch)
--
-- Returns {code}: 0 OK extended; 4 UNKNOWN no such unsettled reservation
if redis.call('EXISTS', KEYS[1]) == 0 then return {4} end
redis.call('HSET', KEYS[1], 'deadline', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return {0}
