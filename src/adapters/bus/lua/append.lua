-- append.lua: append events to a request's log, refresh its TTL and publish them live, atomically.
--
-- KEYS[1]  the request's stream            <prefix>:events:{<requestId>}
-- KEYS[2]  the request's sequence counter  <prefix>:events:{<requestId>}:seq
--          (same hash tag, so both keys of a request live on one cluster slot)
-- ARGV[1]  live channel to PUBLISH each event on
-- ARGV[2]  TTL in seconds, applied to both keys on every append
-- ARGV[3]  approximate maximum stream length (XADD MAXLEN ~)
-- ARGV[4…] the events, in order, each a JSON object without "seq" (at least one field: "type")
--
-- Returns the first event's sequence number (integer >= 1); the others follow it one by one. Each
-- stored and published JSON is its argument with "seq" inserted first; the stream entry id is
-- "<seq>-0" so replay is XRANGE from "<n+1>-0".

local n = #ARGV - 3
local last = redis.call('INCRBY', KEYS[2], n)
if last == n and redis.call('EXISTS', KEYS[1]) == 1 then
  -- The counter vanished while the stream survived: continue after the stream's last entry rather
  -- than reuse sequence numbers (and have XADD reject an id lower than the top one).
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #top > 0 then
    last = tonumber(string.match(top[1][1], '^(%d+)')) + n
    redis.call('SET', KEYS[2], last)
  end
end

local first = last - n + 1
for i = 1, n do
  local seq = first + i - 1
  local event = '{"seq":' .. seq .. ',' .. string.sub(ARGV[3 + i], 2)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'e', event)
  redis.call('PUBLISH', ARGV[1], event)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return first
