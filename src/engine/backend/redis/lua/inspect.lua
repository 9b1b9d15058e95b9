-- Read only: {now, holders as [lockId, record, ...], leases as [member, deadline, ...]}.
return {
  now_ms(),
  redis.call('HGETALL', KEYS[1]),
  redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES'),
}
