'use strict'
// LockManager's API against locks held by other real processes.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const { join } = require('node:path')
const { LockManager } = require('../index.js')
const { tempDir, spawnAgent, track } = require('./helpers.js')

test('the owner record names pid, host, process, user, mode, lockId and token', async (t) => {
  const file = join(tempDir(t), 'tasks.json')
  const manager = new LockManager({ owner: 'mcp-server' })
  const lock = await manager.acquire(file)
  const record = JSON.parse(fs.readFileSync(`${file}.lock`, 'utf8'))
  assert.equal(record.pid, process.pid)
  assert.equal(record.host, os.hostname())
  assert.equal(record.process, 'mcp-server')
  assert.equal(record.user, os.userInfo().username)
  assert.equal(record.mode, 'exclusive')
  assert.equal(record.lockId, lock.id)
  assert.equal(record.token, lock.token)
  assert.ok(Math.abs(record.timestamp - Date.now()) < 60_000)
  await lock.release()
  // Released: the owner is gone, only the fencing token stays for the next grant.
  assert.deepEqual(JSON.parse(fs.readFileSync(`${file}.lock`, 'utf8')), { token: lock.token })
})

test('lockDir and lockfilePath place the lock file', async (t) => {
  const dir = tempDir(t)
  fs.mkdirSync(join(dir, '.flowforge', '.locks'), { recursive: true })
  const manager = new LockManager({ lockDir: join(dir, '.flowforge', '.locks') })
  const lock = await manager.acquire(join(dir, 'tasks.json'))
  assert.equal(lock.lockfilePath, join(dir, '.flowforge', '.locks', 'tasks.json.lock'))
  assert.ok(fs.existsSync(lock.lockfilePath))
  const explicit = await manager.acquire(join(dir, 'tasks.json'), { lockfilePath: join(dir, 'custom.lock') })
  assert.equal(explicit.lockfilePath, join(dir, 'custom.lock'))
  await manager.close()
})

test('ELOCKED names the holding process; tryAcquire returns null', async (t) => {
  const file = join(tempDir(t), 'tasks.json')
  const agent = spawnAgent(t, { owner: 'mcp-server' })
  await agent.call('acquire', { path: file })
  const manager = new LockManager({ owner: 'cli' })
  assert.equal(manager.tryAcquire(file), null)
  await assert.rejects(manager.acquire(file, { timeout: 0 }), (err) => {
    assert.equal(err.code, 'ELOCKED')
    assert.equal(err.path, file)
    assert.match(err.message, new RegExp(`^${file} is locked by mcp-server \\(PID ${agent.pid} on .+, held \\d+\\.\\d s\\)$`))
    return true
  })
})

test('a wait times out with ETIMEOUT and never takes the lock afterwards', async (t) => {
  const file = join(tempDir(t), 'tasks.json')
  const holder = spawnAgent(t, { owner: 'holder' })
  const later = spawnAgent(t, { owner: 'later' })
  const held = await holder.call('acquire', { path: file })
  const manager = new LockManager()
  const started = Date.now()
  await assert.rejects(manager.acquire(file, { timeout: 80 }), (err) => {
    assert.equal(err.code, 'ETIMEOUT')
    assert.match(err.message, /held by holder \(PID/)
    return true
  })
  assert.ok(Date.now() - started >= 75)
  await holder.call('release', { lockId: held.id })
  // The timed-out waiter must not grab the lock now that it is free.
  assert.ok(await later.call('tryAcquire', { path: file }))
  assert.equal(manager._native.heldCount, 0)
})

test('an AbortSignal ends the wait with AbortError; an aborted signal rejects at once', async (t) => {
  const file = join(tempDir(t), 'tasks.json')
  const holder = spawnAgent(t)
  const later = spawnAgent(t)
  const held = await holder.call('acquire', { path: file })
  const manager = new LockManager()
  const controller = new AbortController()
  const waiting = manager.acquire(file, { signal: controller.signal, timeout: Infinity })
  controller.abort()
  await assert.rejects(waiting, { name: 'AbortError', code: 'ABORT_ERR', path: file })
  await assert.rejects(manager.acquire(file, { signal: AbortSignal.abort() }), { code: 'ABORT_ERR' })
  await holder.call('release', { lockId: held.id })
  assert.ok(await later.call('tryAcquire', { path: file }))
  assert.equal(manager._native.heldCount, 0)
})

test('a second release is ERELEASED; release by id, path and close', async (t) => {
  const dir = tempDir(t)
  const manager = new LockManager()
  const lock = await manager.acquire(join(dir, 'a'))
  await lock.release()
  assert.equal(lock.released, true)
  await assert.rejects(lock.release(), { code: 'ERELEASED', path: lock.path, message: `The lock on ${lock.path} is already released` })
  assert.throws(() => lock.releaseSync(), { code: 'ERELEASED', path: lock.path })

  const byId = await manager.acquire(join(dir, 'b'))
  await manager.release(byId.id)
  assert.equal(byId.released, true)
  await assert.rejects(manager.release(byId.id), { code: 'ENOTACQUIRED' })

  const byPath = await manager.acquire(join(dir, 'c'))
  await manager.release(join(dir, 'c'))
  assert.equal(byPath.released, true)
  await assert.rejects(manager.release(join(dir, 'c')), { code: 'ENOTACQUIRED' })

  const byLock = await manager.acquire(join(dir, 'd'))
  await manager.release(byLock)
  assert.equal(byLock.released, true)

  // Another manager's Lock, even in this process, is not this manager's to release.
  const theirs = await new LockManager().acquire(join(dir, 'h'))
  await assert.rejects(manager.release(theirs), { code: 'ENOTACQUIRED', path: theirs.path })
  assert.equal(theirs.released, false)
  await theirs.release()

  const a = await manager.acquire(join(dir, 'e'))
  const b = await manager.acquire(join(dir, 'f'), { mode: 'shared' })
  await manager.close()
  assert.equal(a.released && b.released, true)
  await assert.rejects(manager.acquire(join(dir, 'g')), { code: 'ABORT_ERR' })
})

test('close() ends a pending wait, which then never takes the lock', async (t) => {
  const file = join(tempDir(t), 'a')
  const holder = new LockManager({ owner: 'holder' })
  const held = await holder.acquire(file)
  const closing = new LockManager({ owner: 'closing' })
  const waiting = closing.acquire(file, { timeout: Infinity })
  await closing.close()
  await assert.rejects(waiting, { code: 'ABORT_ERR', message: /closed while waiting/ })
  await held.release()
  const next = holder.tryAcquire(file)
  assert.ok(next, 'the closed manager took nothing')
  await next.release()
})

test('Symbol.asyncDispose releases, and is harmless after a manual release', async (t) => {
  const file = join(tempDir(t), 'a')
  const manager = new LockManager()
  const lock = await manager.acquire(file)
  await lock[Symbol.asyncDispose]()
  assert.equal(lock.released, true)
  const again = await manager.acquire(file, { timeout: 0 })
  await again.release()
  await again[Symbol.asyncDispose]()
  lock[Symbol.dispose]()
})

test('withLock re-enters in its own async context; unrelated callers still wait', async (t) => {
  const file = join(tempDir(t), 'index')
  const manager = new LockManager()
  const events = []
  let letOuterFinish
  const outerMayFinish = new Promise((resolve) => (letOuterFinish = resolve))
  let outerLocked
  const outerHasLock = new Promise((resolve) => (outerLocked = resolve))
  const outer = manager.withLock(file, async (lock) => {
    events.push('outer-start')
    outerLocked()
    // vectra's beginUpdate: the batch holds the lock while insertItem locks again.
    const inner = await manager.withLock(file, async (innerLock) => {
      assert.equal(innerLock, lock)
      return 'inner-result'
    })
    assert.equal(inner, 'inner-result')
    await manager.withReadLock(file, async () => events.push('nested-read'))
    await outerMayFinish
    events.push('outer-end')
    return 42
  })
  await outerHasLock
  // Outside the outer context: a separate caller, which must wait its turn.
  const unrelated = track(manager.withLock(file, async () => events.push('unrelated')))
  letOuterFinish()
  assert.equal(await outer, 42)
  await unrelated.promise
  assert.deepEqual(events, ['outer-start', 'nested-read', 'outer-end', 'unrelated'])
})

// Calls that re-enter a held lock side by side take turns. The calls ahead may take
// long, so the call's own signal and timeout bound its wait for the turn (not the
// manager's default: the calls ahead are the context's own work); a call that gives
// up neither runs nor lets the ones behind it jump the call still running.
test('a re-entering withLock that must wait its turn honours its own signal and timeout', async (t) => {
  const file = join(tempDir(t), 'turns')
  const manager = new LockManager({ timeout: 50 })
  const ran = []
  await manager.withLock(file, async () => {
    let finishFirst
    const firstMayFinish = new Promise((resolve) => (finishFirst = resolve))
    let firstStarted
    const firstRuns = new Promise((resolve) => (firstStarted = resolve))
    const first = manager.withLock(file, async () => {
      ran.push('first')
      firstStarted()
      await firstMayFinish
    })
    await firstRuns
    const none = async () => ran.push('must not run')
    const controller = new AbortController()
    const aborted = manager.withLock(file, none, { signal: controller.signal })
    const timedOut = manager.withLock(file, none, { timeout: 60 })
    // Longer than a timer can count: as good as forever, not 1 ms.
    const huge = manager.withLock(file, async () => ran.push('huge'), { timeout: 2 ** 31 })
    const byDefault = manager.withLock(file, async () => ran.push('default'))
    // timeout 0 waits for no other holder, and there is none: it runs in turn.
    const inTurn = manager.withLock(file, async () => ran.push('in turn'), { timeout: 0 })
    const last = manager.withLock(file, async () => ran.push('last'))
    await assert.rejects(manager.withLock(file, none, { signal: AbortSignal.abort() }), { code: 'ABORT_ERR' })
    controller.abort()
    await assert.rejects(aborted, { code: 'ABORT_ERR' })
    // 60 ms have passed, more than the manager's 50: the calls without a timeout wait on.
    await assert.rejects(timedOut, { code: 'ETIMEOUT' })
    // The calls that gave up did not let the others start while `first` still runs.
    assert.deepEqual(ran, ['first'])
    finishFirst()
    await Promise.all([first, huge, byDefault, inTurn, last])
  })
  assert.deepEqual(ran, ['first', 'huge', 'default', 'in turn', 'last'])
  assert.equal(manager._native.heldCount, 0)
})

test('withLock releases when fn throws; a nested exclusive inside shared is EDEADLK', async (t) => {
  const file = join(tempDir(t), 'a')
  const manager = new LockManager()
  await assert.rejects(manager.withLock(file, async () => { throw new Error('boom') }), /boom/)
  assert.equal(manager._native.heldCount, 0)
  await manager.withReadLock(file, async () => {
    await assert.rejects(manager.withWriteLock(file, async () => {}), { code: 'EDEADLK' })
  })
  assert.throws(() => manager.withLockSync(file, () => { throw new Error('sync boom') }), /sync boom/)
  assert.equal(manager.withLockSync(file, () => manager.withLockSync(file, () => 'nested')), 'nested')
  assert.equal(manager._native.heldCount, 0)
})

test('acquireSync waits for a release by another process, bounded by its timeout', async (t) => {
  const file = join(tempDir(t), 'a')
  const agent = spawnAgent(t)
  const held = await agent.call('acquire', { path: file })
  const manager = new LockManager()
  assert.throws(() => manager.acquireSync(file, { timeout: 50 }), { code: 'ETIMEOUT' })
  await agent.call('releaseWhenWriterWaits', { lockId: held.id })
  const lock = manager.acquireSync(file, { timeout: 20_000 })
  assert.equal(lock.mode, 'exclusive')
  // Both acquires found the lock held: the second waited, and the first left no trace
  // (a writer-waiting file it kept would have made the agent release too early).
  assert.equal(manager.metrics().contended, 2)
  lock.releaseSync()
})

test('fencing tokens increase across processes and releases', async (t) => {
  const file = join(tempDir(t), 'a')
  const [a, b] = [spawnAgent(t), spawnAgent(t)]
  const first = await a.call('acquire', { path: file })
  await a.call('release', { lockId: first.id })
  const second = await b.call('acquire', { path: file })
  await b.call('release', { lockId: second.id })
  const manager = new LockManager()
  const third = await manager.acquire(file)
  assert.ok(first.token < second.token && second.token < third.token, `${first.token} < ${second.token} < ${third.token}`)
  await third.release()
  const reader = await manager.acquire(file, { mode: 'shared' })
  assert.equal(reader.token, third.token, 'readers see the last exclusive token')
  await reader.release()
})

test('a SIGKILLed holder frees the lock for the next process', async (t) => {
  const file = join(tempDir(t), 'a')
  const agent = spawnAgent(t, { owner: 'doomed' })
  await agent.call('acquire', { path: file })
  const manager = new LockManager()
  const waiting = manager.acquire(file, { timeout: 20_000 })
  agent.child.kill('SIGKILL')
  const lock = await waiting
  assert.equal(lock.mode, 'exclusive')
  await lock.release()
})

test('waiters in one process are served first-come first-served', async (t) => {
  const file = join(tempDir(t), 'a')
  const agent = spawnAgent(t)
  const held = await agent.call('acquire', { path: file })
  const order = []
  const managers = Array.from({ length: 6 }, () => new LockManager())
  const waits = managers.map((manager, i) =>
    manager.withLock(file, async () => order.push(i), { timeout: 20_000 }),
  )
  await agent.call('release', { lockId: held.id })
  await Promise.all(waits)
  assert.deepEqual(order, [0, 1, 2, 3, 4, 5])
})

test('two managers in one process exclude each other like two processes', async (t) => {
  const file = join(tempDir(t), 'a')
  const [m1, m2] = [new LockManager({ owner: 'one' }), new LockManager({ owner: 'two' })]
  const lock = await m1.acquire(file)
  await assert.rejects(m2.acquire(file, { timeout: 0 }), { code: 'ELOCKED', message: /locked by one/ })
  const waiting = m2.acquire(file)
  await lock.release()
  await (await waiting).release()
})

test('a lock granted at once and one granted after a wait describe themselves alike', async (t) => {
  // The addon builds the two differently (a plain-values call, a native object).
  const file = join(tempDir(t), 'tasks.json')
  const manager = new LockManager()
  const describe = (lock) => Object.fromEntries(Object.entries(lock.toJSON()).map(([k, v]) => [k, typeof v]))
  const atOnce = await manager.acquire(file, { mode: 'shared' })
  const sync = manager.tryAcquire(file, { mode: 'shared' })
  const waited = manager.acquire(file)
  atOnce.releaseSync()
  sync.releaseSync()
  const afterWait = await waited
  assert.equal(manager.metrics().contended, 1)
  for (const lock of [atOnce, sync, afterWait]) {
    assert.deepEqual(describe(lock), {
      path: 'string', lockfilePath: 'string', mode: 'string', id: 'string', token: 'number', acquiredAt: 'number',
    })
    assert.equal(lock.path, file)
    assert.equal(lock.lockfilePath, `${file}.lock`)
    assert.ok(Math.abs(lock.acquiredAt - Date.now()) < 60_000)
  }
  assert.deepEqual([atOnce.mode, sync.mode, afterWait.mode], ['shared', 'shared', 'exclusive'])
  assert.ok(afterWait.token > 0)
  afterWait.releaseSync()
  assert.equal(manager._native.heldCount, 0)
})

test('withLock re-enters a lock held under another spelling of the same path', async (t) => {
  const dir = tempDir(t)
  fs.mkdirSync(join(dir, 'sub'))
  fs.symlinkSync(dir, join(dir, 'link'))
  const manager = new LockManager()
  const spellings = [join(dir, 'sub', '..', 'tasks.json'), join(dir, 'link', 'tasks.json')]
  const seen = await manager.withLock(join(dir, 'tasks.json'), async (outer) =>
    // timeout 0: waiting for itself would fail at once with ELOCKED.
    Promise.all(spellings.map((p) => manager.withLock(p, async (inner) => inner === outer, { timeout: 0 }))),
  )
  assert.deepEqual(seen, [true, true])
  assert.equal(manager._native.heldCount, 0)
})
