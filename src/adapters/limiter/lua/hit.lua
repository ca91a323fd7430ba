-- Fixed-window counter: the first hit opens a window of ARGV[2] ms; hits beyond the limit inside
-- it are refused until the key expires.
--
-- KEYS[1]  counter   sluice:hit:<key>
-- ARGV[1]  limit
-- ARGV[2]  window (ms)
--
-- Returns {code, retryAfterMs}: 0 OK; 2 REFUSED, retry after the window's remaining time
local hits = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
if hits > tonumber(ARGV[1]) then return {2, ttl} end
return {0, 0}
