'use strict'
// strategy 'redis' with real processes and a private redis-server per test file
// (per test where the server itself is killed): exclusion, leases running out under
// a frozen or killed holder, read locks and a waiting writer, Redis going away and
// coming back. Leases are 2 s (`stale: 2000`), so the scenarios where time passing
// is the point stay short.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
const { once } = require('node:events')
const { fork, spawn } = require('node:child_process')
const { LockManager } = require('../index.js')
const { tempDir, spawnAgent, runCommand, waitFor, track } = require('./helpers.js')
const { redisSkip, startRedis, freePort, rawCommand } = require('./redis-server.js')

const skip = redisSkip()
const STALE = 2000
/**
 * A lease runs out at most STALE after its last renewal: "free within the lease" is
 * checked as under two leases, a margin for a loaded machine that still tells it from
 * a wait that ends only at its 10 s timeout.
 */
const LEASE_BOUND = STALE * 2

let shared
test.before(async () => {
  if (!skip) shared = await startRedis()
})
test.after(() => shared?.stop())

/** Manager options for agents and workers on `server`. */
function redisEnv(server) {
  return { LOCKWRIGHT_AGENT_OPTIONS: JSON.stringify({ strategy: 'redis', redis: server.url, stale: STALE }) }
}

function redisAgent(t, server, owner) {
  return spawnAgent(t, { owner, env: redisEnv(server) })
}

/** The next `event` message an agent sends by itself (a lost lock). */
function nextEvent(agent, event) {
  return new Promise((resolve) => {
    const listener = (msg) => {
      if (msg.event !== event) return
      agent.child.off('message', listener)
      resolve(msg)
    }
    agent.child.on('message', listener)
  })
}

/** `promise`, or a failure naming `what` after `ms`: for waits that time bounds. */
async function within(ms, what, promise) {
  let timer
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

test('8 processes x 150 locked increments through one Redis: exact total, never two inside', { skip }, async (t) => {
  const dir = tempDir(t)
  fs.writeFileSync(join(dir, 'counter.txt'), '0')
  const env = { ...process.env, ...redisEnv(shared), LOCKWRIGHT_COUNTER_LOCK: 'counter' }
  const workers = Array.from({ length: 8 }, () => {
    const child = fork(join(__dirname, 'fixtures', 'counter-worker.js'), [dir, '150'], { env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    t.after(() => child.exitCode === null && child.kill('SIGKILL'))
    return once(child, 'exit').then(([code]) => ({ code, out }))
  })
  for (const { code, out } of await Promise.all(workers)) {
    // A holder that found another inside would have thrown EEXIST on the marker.
    assert.equal(code, 0, out)
    assert.equal(out, '150')
  }
  assert.equal(fs.readFileSync(join(dir, 'counter.txt'), 'utf8'), '1200')
  assert.equal(fs.existsSync(join(dir, 'inside.marker')), false)
})

test('a holder frozen past its lease loses the lock to a larger token, and is told when it runs again', { skip }, async (t) => {
  const holder = redisAgent(t, shared, 'frozen')
  const newcomer = redisAgent(t, shared, 'newcomer')
  const held = await holder.call('acquire', { path: 'frozen', options: {} })
  process.kill(holder.pid, 'SIGSTOP')
  t.after(() => holder.child.kill('SIGCONT'))
  // The lease still stands at first: a frozen holder is not dead yet.
  assert.equal(await newcomer.call('tryAcquire', { path: 'frozen' }), null)
  const waited = performance.now()
  const got = await newcomer.call('acquire', { path: 'frozen', options: { timeout: 10_000 } })
  // It got in once the lease ran out, well before its own timeout.
  const ms = performance.now() - waited
  assert.ok(ms < LEASE_BOUND, `granted ${ms} ms after the holder stopped`)
  assert.ok(got.token > held.token, `token ${got.token} after ${held.token}`)

  const told = nextEvent(holder, 'compromised')
  process.kill(holder.pid, 'SIGCONT')
  const { error } = await within(STALE * 2, 'the compromised event', told)
  assert.equal(error.code, 'ECOMPROMISED')
  // Its lease ran out and the newcomer's grant swept it: the message names who has it now.
  assert.match(error.message, /'frozen' \(token \d+\) was lost: .*held by newcomer \(PID \d+/)
  await assert.rejects(holder.call('release', { lockId: held.id }), { code: 'ECOMPROMISED' })
  // The late holder's release left the newcomer's lease alone: it releases cleanly.
  await newcomer.call('release', { lockId: got.id })
})

test('a SIGKILLed holder\'s lock is free within its lease, nobody releasing it', { skip }, async (t) => {
  const holder = redisAgent(t, shared, 'doomed')
  const waiter = redisAgent(t, shared, 'waiter')
  const held = await holder.call('acquire', { path: 'killed', options: {} })
  const waiting = track(waiter.call('acquire', { path: 'killed', options: { timeout: 10_000 } }))
  await waiter.call('ping') // its acquire has started
  assert.equal(waiting.settled, false)
  holder.child.kill('SIGKILL')
  await holder.exited
  const killed = performance.now()
  const got = await waiting.promise
  const ms = performance.now() - killed
  assert.ok(ms < LEASE_BOUND, `granted ${ms} ms after the holder died`)
  assert.ok(got.token > held.token)
  await waiter.call('release', { lockId: got.id })
})

/** How many wait in line for `name` on `server` (the queue's size, read from Redis). */
async function queued(server, name) {
  const reply = await rawCommand(server.port, ['ZCARD', `lockwright:{${name}}:queue`])
  return Number(reply.slice(1))
}

test('a release hands the lock to a SIGKILLed waiter: the next one in line has it within that lease', { skip }, async (t) => {
  const holder = redisAgent(t, shared, 'handoff-holder')
  const doomed = redisAgent(t, shared, 'handoff-doomed')
  const next = redisAgent(t, shared, 'handoff-next')
  const held = await holder.call('acquire', { path: 'handoff:killed', options: {} })
  const lost = track(doomed.call('acquire', { path: 'handoff:killed', options: { timeout: 10_000 } }))
  await waitFor(async () => (await queued(shared, 'handoff:killed')) === 1, { what: 'the doomed waiter in line' })
  const waiting = track(next.call('acquire', { path: 'handoff:killed', options: { timeout: 10_000 } }))
  await waitFor(async () => (await queued(shared, 'handoff:killed')) === 2, { what: 'the next waiter in line' })
  doomed.child.kill('SIGKILL')
  await doomed.exited
  assert.equal(lost.settled, false)
  // The release grants it to the head of the line, dead or not; that grant's lease is
  // the dead waiter's place, renewed at most a third of a lease before it died.
  const released = performance.now()
  await holder.call('release', { lockId: held.id })
  const got = await waiting.promise
  const ms = performance.now() - released
  assert.ok(ms < LEASE_BOUND, `granted ${ms} ms after the release`)
  assert.equal(got.token, held.token + 2, 'the dead waiter\'s grant took the token between')
  await next.call('release', { lockId: got.id })
})

test('a waiter frozen past its place\'s lease after a release handed it the lock waits on when it runs again, and gets the lock', { skip }, async (t) => {
  const holder = redisAgent(t, shared, 'handoff-holder')
  const frozen = redisAgent(t, shared, 'handoff-frozen')
  const held = await holder.call('acquire', { path: 'handoff:frozen', options: {} })
  const waiting = track(frozen.call('acquire', { path: 'handoff:frozen', options: { timeout: 30_000 } }))
  await waitFor(async () => (await queued(shared, 'handoff:frozen')) === 1, { what: 'the waiter in line' })
  process.kill(frozen.pid, 'SIGSTOP')
  t.after(() => frozen.child.kill('SIGCONT'))
  // The release hands the lock to the frozen waiter; that grant lapses with its place.
  await holder.call('release', { lockId: held.id })
  const probe = new LockManager({ strategy: 'redis', redis: shared.url, stale: STALE })
  t.after(() => probe.close())
  await waitFor(async () => !(await probe.status('handoff:frozen')).owners.some((o) => o.alive), { what: 'the handed grant to lapse' })
  process.kill(frozen.pid, 'SIGCONT')
  // Woken by the old message, it finds the grant gone: it waits on (the lock is free,
  // so it gets in at once) instead of failing an acquire it never lost.
  const got = await waiting.promise
  assert.ok(got.token > held.token + 1, `token ${got.token}: the lapsed grant took ${held.token + 1}`)
  await frozen.call('release', { lockId: got.id })
})

test('readers overlap across processes; a queued writer stops new readers and gets in when they leave', { skip }, async (t) => {
  const [readerA, readerB, writer, readerC] = ['reader-a', 'reader-b', 'writer', 'reader-c'].map((owner) => redisAgent(t, shared, owner))
  const a = await readerA.call('acquire', { path: 'index', options: { mode: 'shared' } })
  const b = await readerB.call('tryAcquire', { path: 'index', options: { mode: 'shared' } })
  assert.ok(b, 'a second reader in another process gets in beside the first')
  const observer = new LockManager({ strategy: 'redis', redis: shared.url, stale: STALE })
  t.after(() => observer.close())
  const both = await observer.status('index')
  assert.deepEqual(both.owners.map((o) => o.pid).sort(), [readerA.pid, readerB.pid].sort())
  assert.equal(both.mode, 'shared')

  const writing = track(writer.call('acquire', { path: 'index', options: { timeout: 10_000 } }))
  // Once the writer is queued, a new reader is refused: until then it may still get
  // in, and then leaves again.
  await waitFor(async () => {
    const lock = await readerC.call('tryAcquire', { path: 'index', options: { mode: 'shared' } })
    if (lock) await readerC.call('release', { lockId: lock.id })
    return lock === null
  }, { what: 'a new reader to be refused behind the writer' })
  const reading = track(readerC.call('acquire', { path: 'index', options: { mode: 'shared', timeout: 10_000 } }))
  await readerA.call('release', { lockId: a.id })
  await readerC.call('ping')
  assert.equal(writing.settled, false, 'the writer got in while a reader held the lock')
  await readerB.call('release', { lockId: b.id })
  const w = await writing.promise
  assert.equal(w.mode, 'exclusive')
  assert.equal(reading.settled, false, 'a reader got in beside the writer')
  assert.equal((await observer.status('index')).owners.length, 1)
  await writer.call('release', { lockId: w.id })
  const c = await reading.promise
  assert.equal(c.mode, 'shared')
  await readerC.call('release', { lockId: c.id })
})

test('list and cleanupStaleLocks need no directory on Redis; forceRelease breaks a live lease only with force', { skip }, async (t) => {
  const holder = redisAgent(t, shared, 'inspected')
  const held = await holder.call('acquire', { path: 'inspect:held', options: {} })
  const manager = new LockManager({ strategy: 'redis', redis: shared.url, stale: STALE })
  t.after(() => manager.close())
  const listed = (await manager.list()).find((s) => s.lockfilePath === 'inspect:held')
  assert.equal(listed?.owners[0].pid, holder.pid)
  assert.equal(listed.owners[0].process, 'inspected')
  const report = await manager.cleanupStaleLocks(undefined, { dryRun: true })
  assert.deepEqual([report.cleared, report.removed], [[], []])
  assert.ok(report.kept >= 1)
  await assert.rejects(manager.forceRelease('inspect:held'), { code: 'ELOCKED', message: /inspected \(PID \d+.*live lease/ })
  const told = nextEvent(holder, 'compromised')
  assert.equal(await manager.forceRelease('inspect:held', { force: true }), true)
  const { error } = await within(STALE * 2, 'the compromised event', told)
  assert.equal(error.lockId, held.id)
  assert.equal((await manager.status('inspect:held')).locked, false)
})

test('metrics count an acquire that had to wait on Redis as contended', { skip }, async (t) => {
  const holder = redisAgent(t, shared, 'metrics-holder')
  const held = await holder.call('acquire', { path: 'metrics:contended', options: {} })
  const manager = new LockManager({ strategy: 'redis', redis: shared.url, stale: STALE })
  t.after(() => manager.close())
  // Refused for certain: the holder keeps it until the wait times out.
  await assert.rejects(manager.acquire('metrics:contended', { timeout: 200 }), { code: 'ETIMEOUT' })
  await holder.call('release', { lockId: held.id })
  const metrics = manager.metrics()
  assert.equal(metrics.timeouts, 1)
  assert.equal(metrics.contended, 1)
})

/**
 * A TCP proxy to `server` on this process's event loop: it forwards nothing while
 * that loop is blocked, so whatever reaches Redis through it proves the loop ran.
 */
async function proxyOnThisLoop(t, server) {
  const net = require('node:net')
  const upstreamPort = Number(new URL(server.url).port)
  const proxy = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, '127.0.0.1')
    client.pipe(upstream).pipe(client)
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
  })
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  t.after(() => proxy.close())
  return `redis://127.0.0.1:${proxy.address().port}/0`
}

// An async release must not hold the JavaScript thread for its round trip: a slow
// or stopped server would stall every other thing the process does. Through a proxy
// that runs on the same event loop, a blocking release could not reach Redis at all.
test('release, withLock, asyncDispose and close release without blocking the event loop', { skip }, async (t) => {
  const manager = new LockManager({ strategy: 'redis', redis: await proxyOnThisLoop(t, shared), stale: STALE })
  t.after(() => manager.close())
  const direct = new LockManager({ strategy: 'redis', redis: shared.url, stale: STALE })
  t.after(() => direct.close())
  const lock = await manager.acquire('loop:release', { timeout: 5000 })
  const released = lock.release()
  assert.equal(lock.released, true, 'no longer held once release() returns')
  await released
  assert.ok((await direct.status('loop:release')).owners.length === 0, 'gone from Redis')
  assert.equal(await manager.withLock('loop:with', async (held) => held.token, { timeout: 5000 }), 1)
  assert.equal((await direct.status('loop:with')).owners.length, 0)
  // What `await using` calls at the end of its scope (Node 20 lacks the syntax).
  const scoped = await manager.acquire('loop:using', { timeout: 5000 })
  await scoped[Symbol.asyncDispose]()
  assert.equal((await direct.status('loop:using')).owners.length, 0)
  assert.equal(manager._native.heldCount, 0)
  // close() gives its leases back the same way: the event loop turns while it does
  // (a close that blocked would be done before this turn's setImmediate ran).
  await manager.acquire('loop:close', { timeout: 5000 })
  const closing = manager.close()
  let turned = false
  setImmediate(() => (turned = true))
  await closing
  assert.ok(turned, 'the event loop turned while close() gave the lease back')
  assert.equal((await direct.status('loop:close')).owners.length, 0)
})

test('Redis killed while a lock is held: the holder is told once its lease has run out', { skip }, async (t) => {
  const server = await startRedis(t)
  const holder = redisAgent(t, server, 'cut-off')
  const held = await holder.call('acquire', { path: 'job', options: {} })
  const told = nextEvent(holder, 'compromised')
  await server.kill()
  const killed = performance.now()
  const { error } = await within(STALE * 3, 'the compromised event', told)
  assert.equal(error.code, 'ECOMPROMISED')
  assert.match(error.message, /unreachable until its lease ran out/)
  // Not before the lease could have run out (the last renewal was at most a third
  // of it before the kill).
  assert.ok(performance.now() - killed >= STALE / 2, 'reported before the lease could have run out')
  await assert.rejects(holder.call('release', { lockId: held.id }), { code: 'ECOMPROMISED', message: /unreachable until its lease ran out/ })
})

test('Redis restarted: a wait in progress gets in, the old holder is told, new acquires work with the same manager', { skip }, async (t) => {
  const server = await startRedis(t)
  const manager = new LockManager({ strategy: 'redis', redis: server.url, stale: STALE, owner: 'survivor' })
  t.after(() => manager.close())
  const first = await manager.acquire('before', { timeout: 5000 })
  await first.release()

  const holder = redisAgent(t, server, 'old-holder')
  const held = await holder.call('acquire', { path: 'across', options: {} })
  const waiting = track(manager.acquire('across', { timeout: 15_000 }))
  const told = nextEvent(holder, 'compromised')

  await server.kill()
  await assert.rejects(manager.acquire('down', { timeout: 300 }), { code: 'EUNAVAILABLE' })
  assert.equal(waiting.settled, false)
  await server.restart()

  // Without persistence the old lease is gone: the waiter gets in, the holder learns it.
  const got = await waiting.promise
  assert.equal(got.mode, 'exclusive')
  const { error } = await within(STALE * 3, 'the compromised event', told)
  assert.equal(error.code, 'ECOMPROMISED')
  assert.equal(error.lockId, held.id)
  await got.release()
  const again = await manager.acquire('after', { timeout: 5000 })
  assert.ok(again.token >= 1)
  await again.release()
})

test('nothing listening: EUNAVAILABLE within the acquire\'s timeout, and the process exits by itself', { skip }, async () => {
  const port = await freePort()
  const child = fork(join(__dirname, 'fixtures', 'redis-unavailable.js'), [`redis://127.0.0.1:${port}/0`, '1000'], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  const [code, signal] = await within(10_000, 'the process to exit', once(child, 'exit')).catch((err) => {
    child.kill('SIGKILL')
    throw err
  })
  assert.equal(signal, null)
  assert.equal(code, 0)
  const result = JSON.parse(out)
  for (const call of ['acquire', 'tryAcquire', 'status']) {
    assert.equal(result[call].code, 'EUNAVAILABLE', `${call}: ${JSON.stringify(result[call])}`)
    assert.match(result[call].message, new RegExp(`127\\.0\\.0\\.1:${port}`))
  }
  assert.ok(result.acquire.ms < 1000 + 1000, `acquire failed after ${result.acquire.ms} ms`)
})

const CLI = join(__dirname, '..', 'bin', 'lockwright.js')
const cli = (args, options) => runCommand(process.execPath, [CLI, ...args], options)

/** `node -e` code that exits 7 if `name` is locked on `url` by `owner`, else 1. */
function checkHeldBy(url, name, owner) {
  return `const { LockManager } = require(${JSON.stringify(join(__dirname, '..'))});
    new LockManager({ strategy: 'redis', redis: ${JSON.stringify(url)} }).status(${JSON.stringify(name)})
      .then((s) => process.exit(s.locked && s.owners[0].process === ${JSON.stringify(owner)} ? 7 : 1))`
}

test('CLI with --redis: the command runs holding the lease and its exit code is the answer; --timeout 0 on a held lock exits 3', { skip }, async (t) => {
  const observer = new LockManager({ strategy: 'redis', redis: shared.url, stale: STALE })
  t.after(() => observer.close())
  let run = await cli(['with', '--redis', shared.url, 'cli:job', '--owner', 'script', '--', process.execPath, '-e', checkHeldBy(shared.url, 'cli:job', 'script')])
  assert.equal(run.code, 7, run.stderr)
  assert.equal((await observer.status('cli:job')).locked, false)
  // --strategy redis alone takes the URL from LOCKWRIGHT_REDIS_URL.
  run = await cli(['with', '--strategy', 'redis', 'cli:env', '--', process.execPath, '-e', checkHeldBy(shared.url, 'cli:env', 'node')], { env: { LOCKWRIGHT_REDIS_URL: shared.url } })
  assert.equal(run.code, 7, run.stderr)

  const holder = redisAgent(t, shared, 'holder')
  const held = await holder.call('acquire', { path: 'cli:held', options: {} })
  run = await cli(['with', '--redis', shared.url, 'cli:held', '--timeout', '0', '--', 'true'])
  assert.equal(run.code, 3, run.stderr)
  assert.match(run.stderr, /holder \(PID \d+/)
  await holder.call('release', { lockId: held.id })

  // Nothing listening: an error (exit 1) within the timeout, the command not run.
  const nowhere = `redis://127.0.0.1:${await freePort()}/0`
  run = await cli(['with', '--redis', nowhere, 'cli:job', '--timeout', '500', '--', process.execPath, '-e', 'console.log("ran")'])
  assert.equal(run.code, 1)
  assert.match(run.stderr, /EUNAVAILABLE/)
  assert.equal(run.stdout, '')

  for (const args of [
    ['with', '--redis', shared.url, '--strategy', 'mkdir', 'x', '--', 'true'],
    ['status', '--redis', shared.url, '--lock-dir', '.'],
    ['cleanup', '--redis', shared.url, 'some-dir'],
    ['with', '--redis', shared.url, '--stale', 'soon', 'x', '--', 'true'],
  ]) {
    run = await cli(args)
    assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`)
  }
})

test('CLI on Redis: status, release with and without --force, cleanup; a SIGKILLed wrapper\'s lease runs out after --stale', { skip }, async (t) => {
  const url = shared.url
  const wrapper = spawn(process.execPath, [CLI, 'with', '--redis', url, '--stale', String(STALE), 'cli:orphan', '--owner', 'nightly', '--', process.execPath, '-e', 'console.log(process.pid); setInterval(() => {}, 1000)'], { stdio: ['ignore', 'pipe', 'inherit'] })
  const [line] = await once(wrapper.stdout, 'data')
  const commandPid = Number(String(line).trim())
  t.after(() => {
    wrapper.kill('SIGKILL')
    try {
      process.kill(commandPid, 'SIGKILL')
    } catch {}
  })

  let run = await cli(['status', '--redis', url, 'cli:orphan', '--json'])
  assert.equal(run.code, 0, run.stderr)
  const status = JSON.parse(run.stdout)
  assert.equal(status.locked, true)
  assert.deepEqual([status.owners[0].process, status.owners[0].pid, status.owners[0].alive], ['nightly', wrapper.pid, true])
  run = await cli(['status', '--redis', url])
  assert.match(run.stdout, /^cli:orphan: locked \(exclusive\)\n {4}nightly \(PID \d+ on .*, alive, held/m)
  run = await cli(['release', '--redis', url, 'cli:orphan'])
  assert.equal(run.code, 3, run.stderr)
  assert.match(run.stderr, /nightly \(PID \d+.*live lease/)

  // The wrapper renews the lease; killed, it stops, while its command runs on.
  wrapper.kill('SIGKILL')
  await once(wrapper, 'exit')
  const killed = performance.now()
  const observer = new LockManager({ strategy: 'redis', redis: url, stale: STALE })
  t.after(() => observer.close())
  await waitFor(async () => (await observer.status('cli:orphan')).owners[0]?.alive === false, { timeoutMs: STALE * 3, what: 'the lease to run out' })
  const ms = performance.now() - killed
  assert.ok(ms < LEASE_BOUND, `the lease ran out ${ms} ms after the wrapper died`)
  process.kill(commandPid, 0) // the command still runs: nothing but the lease held the lock

  run = await cli(['cleanup', '--redis', url, '--dry-run', '--json'])
  assert.equal(run.code, 0, run.stderr)
  assert.ok([...JSON.parse(run.stdout).cleared, ...JSON.parse(run.stdout).removed].some((n) => n.includes('cli:orphan')), run.stdout)
  assert.equal((await observer.status('cli:orphan')).owners.length, 1, 'a dry run changes nothing')
  run = await cli(['cleanup', '--redis', url])
  assert.equal(run.code, 0, run.stderr)
  assert.match(run.stdout, /cli:orphan/)
  assert.deepEqual((await observer.status('cli:orphan')).owners, [])

  // --force breaks a live lease, and its holder is told.
  const holder = redisAgent(t, shared, 'forced')
  const held = await holder.call('acquire', { path: 'cli:forced', options: {} })
  const told = nextEvent(holder, 'compromised')
  run = await cli(['release', '--redis', url, 'cli:forced', '--force'])
  assert.equal(run.code, 0, run.stderr)
  assert.equal(run.stdout, 'released cli:forced\n')
  assert.equal((await within(STALE * 2, 'the compromised event', told)).error.lockId, held.id)
})
