-- Extends a holder's lease. ARGV: 2 lockId, 3 member, 4 lease ms.
-- Returns {1, new deadline}, {0, 0} when the lease is gone (purged after it ran
-- out, broken by force, or Redis lost it), {-1, ms since it ran out}.
local id, member, lease = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local deadline = redis.call('ZSCORE', KEYS[2], member)
local raw = redis.call('HGET', KEYS[1], id)
if deadline == false or raw == false then
  return {0, 0}
end
deadline = tonumber(deadline)
if deadline <= now then
  -- Ran out: nobody may have seen it yet, but we cannot know; treat it as lost and
  -- clear it so the next waiter need not wait for a purge.
  redis.call('ZREM', KEYS[2], member)
  redis.call('HDEL', KEYS[1], id)
  promote(now)
  return {-1, now - deadline}
end
redis.call('HSET', KEYS[1], id, beaten(raw, now))
redis.call('ZADD', KEYS[2], now + lease, member)
return {1, now + lease}
