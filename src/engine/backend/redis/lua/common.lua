-- Prepended to every script. KEYS are always, in this order:
-- 1 holders (hash lockId -> record), 2 leases (zset "<m>:lockId" -> deadline ms),
-- 3 token (counter), 4 ticket (counter), 5 queue (zset "<m>:lockId" -> ticket),
-- 6 waiters (zset "<m>:lockId" -> waiter lease deadline),
-- 7 asks (hash "<m>:lockId" -> a queued waiter's record head, for the grant made
-- for it).
-- ARGV[1] is the channel. Times are the server's (TIME), so clocks of the hosts never
-- matter.

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
    redis.call('HDEL', KEYS[7], m)
  end
  if #late > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now) end
  return #dead, #late
end

-- The next token for a grant in `mode`, never below `floor`: exclusive grants take
-- the counter's next value, shared ones its current value.
local function next_token(mode, floor)
  local current = tonumber(redis.call('GET', KEYS[3]) or '0')
  local token = math.max(current, floor)
  if mode == 'x' then token = token + 1 end
  if token ~= current then redis.call('SET', KEYS[3], token) end
  return token
end

-- Grants `member` its lease until `deadline`, its record being `head` (the client's
-- JSON without its last three fields and closing brace) with the grant's token and
-- time: no JSON decoding on the way.
local function grant(member, head, token, now, deadline)
  local t = string.format('%d', now)
  local record = head .. ',"token":' .. string.format('%d', token) .. ',"timestamp":' .. t .. ',"heartbeat":' .. t .. '}'
  redis.call('HSET', KEYS[1], string.sub(member, 3), record)
  redis.call('ZADD', KEYS[2], deadline, member)
end

-- `raw` (a holder's record) with its heartbeat set to `now`, without decoding it:
-- cjson prints numbers with 14 digits, so a token above 10^14 would come back in
-- exponent form, which no longer reads as the integer it was.
local function beaten(raw, now)
  local record = string.gsub(raw, '"heartbeat":[-%d.eE+]+', '"heartbeat":' .. string.format('%d', now), 1)
  return record
end

-- Hands the lock to the waiters whose turn it is, in this same step: the writer at
-- the head when nobody holds it, or the readers at the head (up to the first writer)
-- when no writer holds it. Each is told on the channel ('=' token ':' now ':'
-- member) and wakes holding it, with no attempt of its own. Its lease runs to its
-- place's deadline, which it renews while it waits: a waiter that died holds the
-- lock no longer than its place would have lasted.
local function promote(now)
  purge(now, false)
  local holders = redis.call('ZRANGE', KEYS[2], 0, -1)
  for _, m in ipairs(holders) do
    if string.sub(m, 1, 1) == 'x' then return end
  end
  local queue = redis.call('ZRANGE', KEYS[5], 0, -1)
  for i, m in ipairs(queue) do
    local mode = string.sub(m, 1, 1)
    if mode == 'x' and (#holders > 0 or i > 1) then return end
    local head = redis.call('HGET', KEYS[7], m)
    local deadline = redis.call('ZSCORE', KEYS[6], m)
    if not head or not deadline then
      -- A place with no record to grant it with: its waiter tries for itself.
      redis.call('PUBLISH', ARGV[1], m)
      return
    end
    local token = next_token(mode, 0)
    grant(m, head, token, now, deadline)
    redis.call('ZREM', KEYS[5], m)
    redis.call('ZREM', KEYS[6], m)
    redis.call('HDEL', KEYS[7], m)
    redis.call('PUBLISH', ARGV[1], '=' .. string.format('%d', token) .. ':' .. string.format('%d', now) .. ':' .. m)
    if mode == 'x' then return end
  end
end
