-- Ends a grant, or a wait that gives up, and hands the lock on to whoever's turn it
-- is now. ARGV: 2 lockId, 3 member.
-- Returns {1, 0} when it held a live lease, {0, 0} when none was there,
-- {-1, ms since it ran out} when the lease had expired unseen.
local id, member = ARGV[2], ARGV[3]
local now = now_ms()
local deadline = redis.call('ZSCORE', KEYS[2], member)
local had = redis.call('HDEL', KEYS[1], id)
redis.call('ZREM', KEYS[2], member)
local queued = 0
if had == 0 then
  -- Not a holder: a wait that gives up leaves the line.
  queued = redis.call('ZREM', KEYS[5], member) + redis.call('ZREM', KEYS[6], member)
  redis.call('HDEL', KEYS[7], member)
end
-- With nobody in line there is nobody to hand it to.
if (had == 1 or deadline ~= false or queued > 0) and redis.call('EXISTS', KEYS[5]) == 1 then
  promote(now)
end
if had == 0 or deadline == false then return {0, 0} end
deadline = tonumber(deadline)
if deadline <= now then return {-1, now - deadline} end
return {1, 0}
