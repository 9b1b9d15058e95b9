-- One attempt. ARGV: 2 lockId, 3 mode ('x' or 's'), 4 record head (see `grant`),
-- 5 lease ms, 6 '1' to queue up when refused, 7 token floor.
-- Returns {1, token, lease deadline, now} when granted,
-- {0, ms until the earliest lease ahead of us runs out (-1: none)} when not.
local id, mode, lease, floor = ARGV[2], ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[7])
local member = mode .. ':' .. id
local now = now_ms()

-- Nobody holds it and nobody waits (the common case): nothing to purge or compare.
if redis.call('EXISTS', KEYS[2], KEYS[5]) == 0 then
  local token = next_token(mode, floor)
  grant(member, ARGV[4], token, now, now + lease)
  return {1, token, now + lease, now}
end

local dead, late = purge(now, false)
-- Whoever's turn it is now that the dead are gone gets the lock (perhaps us).
if dead + late > 0 then promote(now) end

-- Already ours: handed to us while we waited (and the message missed), or a retry
-- after a reply that got lost. The same grant again, renewed, so a retry never
-- queues behind its own lease.
if redis.call('ZSCORE', KEYS[2], member) then
  local raw = redis.call('HGET', KEYS[1], id)
  if raw then
    local record = cjson.decode(raw)
    redis.call('HSET', KEYS[1], id, beaten(raw, now))
    redis.call('ZADD', KEYS[2], now + lease, member)
    return {1, record.token, now + lease, record.timestamp}
  end
end

local writer_holds = false
local holders = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, m in ipairs(holders) do
  if string.sub(m, 1, 1) == 'x' then writer_holds = true end
end
-- Waiters ahead of us; a newcomer (not queued) is behind everyone.
local rank = redis.call('ZRANK', KEYS[5], member)
local ahead
if rank == false then
  ahead = redis.call('ZRANGE', KEYS[5], 0, -1)
elseif rank == 0 then
  ahead = {}
else
  ahead = redis.call('ZRANGE', KEYS[5], 0, rank - 1)
end
local writer_ahead = false
for _, m in ipairs(ahead) do
  if string.sub(m, 1, 1) == 'x' then writer_ahead = true end
end

local eligible
if mode == 'x' then
  eligible = #holders == 0 and #ahead == 0
else
  -- A queued writer stops new readers, so writers do not starve.
  eligible = not writer_holds and not writer_ahead
end

if eligible then
  local token = next_token(mode, floor)
  grant(member, ARGV[4], token, now, now + lease)
  redis.call('ZREM', KEYS[5], member)
  redis.call('ZREM', KEYS[6], member)
  redis.call('HDEL', KEYS[7], member)
  return {1, token, now + lease, now}
end

if ARGV[6] == '1' then
  if rank == false then
    redis.call('ZADD', KEYS[5], redis.call('INCR', KEYS[4]), member)
    -- What a release needs to grant it to us without our asking again; its token
    -- must be above our floor too.
    redis.call('HSET', KEYS[7], member, ARGV[4])
    if tonumber(redis.call('GET', KEYS[3]) or '0') < floor then
      redis.call('SET', KEYS[3], floor)
    end
  end
  redis.call('ZADD', KEYS[6], now + lease, member)
end
-- Without a message, the next change comes at the latest when the first lease
-- ahead of us runs out: that is the waiter's fallback timer.
local wake = -1
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then wake = tonumber(first[2]) end
for _, m in ipairs(ahead) do
  local d = redis.call('ZSCORE', KEYS[6], m)
  if d and (wake < 0 or tonumber(d) < wake) then wake = tonumber(d) end
end
if wake < 0 then return {0, -1} end
return {0, wake - now}
