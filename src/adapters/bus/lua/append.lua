-- append.lua: append events to a request's log, refresh its TTL and publish them live, atomically;
-- a log ends with exactly one terminal event, after which nothing is appended.
--
-- KEYS[1]  the request's stream            <prefix>:events:{<requestId>}
-- KEYS[2]  the request's sequence counter  <prefix>:events:{<requestId>}:seq
-- KEYS[3]  the request's terminal event    <prefix>:events:{<requestId>}:end (its stored JSON)
--          (same hash tag, so every key of a request lives on one cluster slot)
-- ARGV[1]  live channel to PUBLISH each event on
-- ARGV[2]  TTL in seconds, applied to every key on every append
-- ARGV[3]  approximate maximum stream length (XADD MAXLEN ~)
-- ARGV[4]  "1" if the last event is terminal (completed or error), else "0"
-- ARGV[5…] the events, in order, each a JSON object without "seq" (at least one field: "type")
--
-- Returns the first event's sequence number (integer >= 1); the others follow it one by one. Each
-- stored and published JSON is its argument with "seq" inserted first; the stream entry id is
-- "<seq>-0" so replay is XRANGE from "<n+1>-0".
-- If the log already ended, appends nothing and returns the terminal event's JSON (a string):
-- the caller decides whether that answers its append or refuses it.

local ended = redis.call('GET', KEYS[3])
if ended then return ended end

local n = #ARGV - 4
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
local event
for i = 1, n do
  local seq = first + i - 1
  event = '{"seq":' .. seq .. ',' .. string.sub(ARGV[4 + i], 2)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'e', event)
  redis.call('PUBLISH', ARGV[1], event)
end
if ARGV[4] == '1' then redis.call('SET', KEYS[3], event) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
if ARGV[4] == '1' then redis.call('EXPIRE', KEYS[3], ARGV[2]) end
return first
