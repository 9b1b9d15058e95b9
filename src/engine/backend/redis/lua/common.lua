-- Prepended to every script. KEYS are always, in this order:
-- 1 holders (hash lockId -> record), 2 leases (zset "<m>:lockId" -> deadline ms),
-- 3 token (counter), 4 ticket (counter), 5 queue (zset "<m>:lockId" -> ticket),
-- 6 waiters (zset "<m>:lockId" -> waiter lease deadline). ARGV[1] is the channel.
-- Times are the server's (TIME), so clocks of the hosts never matter.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drops holders whose lease ran out and waiters that stopped renewing their place.
-- Returns how many of each went (unless dry, when it only counts them).
local function purge(now, dry)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  local late = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now)
  if dry then return #dead, #late end
  for _, m in ipairs(dead) do
    redis.call('HDEL', KEYS[1], string.sub(m, 3))
  end
  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
  for _, m in ipairs(late) do
    redis.call('ZREM', KEYS[5], m)
  end
  if #late > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now) end
  return #dead, #late
end

-- Tells the waiters that something changed, and who may go next: the first live
-- waiter when it is a writer (nobody behind it can get in), else '*' (readers go in
-- together). Waiters that are not named stay asleep, so a release costs one
-- attempt, not one per waiter.
local function announce(now)
  purge(now, false)
  local head = redis.call('ZRANGE', KEYS[5], 0, 0)[1]
  if head and string.sub(head, 1, 1) == 'x' then
    redis.call('PUBLISH', ARGV[1], head)
  else
    redis.call('PUBLISH', ARGV[1], '*')
  end
end
