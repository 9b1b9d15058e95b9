-- Cleanup. ARGV: 2 '1' for a dry run, 3 '1' to break live holders too.
-- Returns {holders removed, waiters removed}.
local dry, force = ARGV[2] == '1', ARGV[3] == '1'
local now = now_ms()
local dead, late = purge(now, dry)
if force then
  -- After a real purge the zset holds the live ones only; a dry run counts all.
  local rest = redis.call('ZCARD', KEYS[2])
  if dry then
    dead = rest
  else
    redis.call('DEL', KEYS[1], KEYS[2])
    dead = dead + rest
  end
end
if not dry and dead + late > 0 then promote(now) end
return {dead, late}
