-- Gives a stream slot back.
--
-- KEYS[1]  leases sorted set   user:{<userId>}:leases
-- ARGV[1]  lease id
--
-- Returns {code}: 0 OK (also when the lease had already expired)
redis.call('ZREM', KEYS[1], ARGV[1])
return {0}
