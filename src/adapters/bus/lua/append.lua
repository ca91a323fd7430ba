-- append.lua: append one event to a request's log, refresh its TTL and publish it live, atomically.
--
-- KEYS[1]  the request's stream            <prefix>:events:{<requestId>}
-- KEYS[2]  the request's sequence counter  <prefix>:events:{<requestId>}:seq
--          (same hash tag, so both keys of a request live on one cluster slot)
-- ARGV[1]  live channel to PUBLISH the event on
-- ARGV[2]  the event as a JSON object without "seq" (at least one field: it always has "type")
-- ARGV[3]  TTL in seconds, applied to both keys on every append
-- ARGV[4]  approximate maximum stream length (XADD MAXLEN ~)
--
-- Returns the event's sequence number (integer >= 1). The stored and published JSON is ARGV[2]
-- with "seq" inserted first; the stream entry id is "<seq>-0" so replay is XRANGE from "<n+1>-0".

local seq = redis.call('INCR', KEYS[2])
if seq == 1 and redis.call('EXISTS', KEYS[1]) == 1 then
  -- The counter vanished while the stream survived: continue after the stream's last entry rather
  -- than reuse sequence numbers (and have XADD reject an id lower than the top one).
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #top > 0 then
    seq = tonumber(string.match(top[1][1], '^(%d+)')) + 1
    redis.call('SET', KEYS[2], seq)
  end
end

local event = '{"seq":' .. seq .. ',' .. string.sub(ARGV[2], 2)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], seq .. '-0', 'e', event)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[1], event)
return seq
