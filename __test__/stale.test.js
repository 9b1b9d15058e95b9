'use strict'
// Heartbeats, stale detection, status, cleanup, compromise and metrics, with real
// processes holding, dying and sweeping.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
const { once } = require('node:events')
const { LockManager } = require('../index.js')
const { tempDir, spawnAgent, runScript, waitFor } = require('./helpers.js')
const { writerIsWaiting } = require('./fixtures/writer-waiting.js')
const native = require('../binding.js')

function record(lockfile) {
  return JSON.parse(fs.readFileSync(lockfile, 'utf8'))
}

test('a holder whose event loop is blocked for 3x stale keeps beating and keeps its lock', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'tasks.json')
  const lockfile = `${file}.lock`
  const stale = 2000
  const agent = spawnAgent(t, { owner: 'busy', env: { LOCKWRIGHT_AGENT_OPTIONS: JSON.stringify({ stale }) } })
  await agent.call('acquire', { path: file })
  const observer = new LockManager({ owner: 'observer', stale })
  const [startedFile, stopFile] = [join(dir, 'blocking'), join(dir, 'stop')]
  const blocked = agent.call('blockUntil', { startedFile, stopFile })
  await waitFor(() => fs.existsSync(startedFile), { what: 'the agent to block its event loop' })
  // Every heartbeat rewrites the record: look at the lock at each change, until the
  // beats seen (the holder's own timestamps) span 3x stale.
  const beats = [record(lockfile).heartbeat]
  for await (const _ of fs.promises.watch(lockfile)) {
    const status = observer.statusSync(file)
    assert.equal(status.locked, true)
    assert.equal(status.stale, false)
    assert.equal(status.owners[0].alive, true)
    assert.equal(observer.tryAcquire(file), null)
    const beat = record(lockfile).heartbeat
    if (beat !== beats.at(-1)) beats.push(beat)
    if (beats.at(-1) - beats[0] >= 3 * stale) break
  }
  fs.writeFileSync(stopFile, '')
  assert.equal(await blocked, true)
  // Beats every stale/2 from a native thread while JavaScript was stuck: no gap
  // between two of them reached `stale`, so no other host could call the lock stale.
  const gaps = beats.slice(1).map((beat, i) => beat - beats[i])
  assert.ok(gaps.every((gap) => gap < stale), `heartbeat gaps ${gaps.join(', ')} ms`)
})

test('status names another process holding the lock; a dead holder is stale and cleaned, a live one kept', async (t) => {
  const dir = tempDir(t)
  const [dead, live] = [spawnAgent(t, { owner: 'crashy' }), spawnAgent(t, { owner: 'mcp-server' })]
  await dead.call('acquire', { path: join(dir, 'a.json') })
  await live.call('acquire', { path: join(dir, 'b.json') })
  const manager = new LockManager({ lockDir: dir })
  const held = manager.statusSync(join(dir, 'b.json'))
  assert.equal(held.locked, true)
  assert.equal(held.mode, 'exclusive')
  assert.deepEqual(
    held.owners.map(({ pid, process: name, alive }) => ({ pid, name, alive })),
    [{ pid: live.pid, name: 'mcp-server', alive: true }],
  )
  dead.child.kill('SIGKILL')
  await dead.exited
  const stale = manager.statusSync(join(dir, 'a.json'))
  assert.equal(stale.locked, false)
  assert.equal(stale.stale, true)
  assert.equal(stale.owners[0].pid, dead.pid)
  assert.equal(stale.owners[0].alive, false)
  assert.deepEqual(manager.listSync().map((s) => [s.lockfilePath, s.locked, s.stale]), [
    [join(dir, 'a.json.lock'), false, true],
    [join(dir, 'b.json.lock'), true, false],
  ])
  const deadToken = record(join(dir, 'a.json.lock')).token
  const report = await manager.cleanupStaleLocks()
  assert.deepEqual(report, { removed: [], cleared: [join(dir, 'a.json.lock')], kept: 1 })
  assert.equal(fs.existsSync(join(dir, 'b.json.lock')), true)
  assert.equal(manager.statusSync(join(dir, 'b.json')).owners[0].alive, true)
  assert.equal(manager.metrics().staleCleaned, 1)
  // The dead holder's record is gone but its fencing token stays: the next grant
  // continues the sequence rather than starting again at 1.
  assert.deepEqual(record(join(dir, 'a.json.lock')), { token: deadToken })
  const cleared = manager.statusSync(join(dir, 'a.json'))
  assert.deepEqual([cleared.locked, cleared.stale, cleared.owners], [false, false, []])
  const next = await manager.acquire(join(dir, 'a.json'))
  assert.equal(next.token, deadToken + 1)
  await next.release()
})

test('a reused PID is not mistaken for the holder, nor a wall-clock step for a reused PID', async (t) => {
  const file = join(tempDir(t), 'a.json')
  // No heartbeat, so the doctored record below stays as written.
  const agent = spawnAgent(t, { env: { LOCKWRIGHT_AGENT_OPTIONS: JSON.stringify({ heartbeat: 0 }) } })
  await agent.call('acquire', { path: file })
  const lockfile = `${file}.lock`
  const real = record(lockfile)
  assert.equal(real.pid, agent.pid)
  const manager = new LockManager()
  assert.equal(manager.statusSync(file).owners[0].alive, true)
  // A step of the wall clock moves a start time in seconds since the epoch (boot time
  // plus ticks), not the start in clock ticks: still the holder.
  if (process.platform === 'linux') {
    assert.equal(typeof real.startTicks, 'number')
    fs.writeFileSync(lockfile, JSON.stringify({ ...real, processStart: real.processStart - 3600 }))
    assert.equal(manager.statusSync(file).owners[0].alive, true)
  }
  // The same PID, but a process that started earlier: an older holder's record.
  const earlier = { processStart: real.processStart - 3600, ...(real.startTicks && { startTicks: real.startTicks - 1 }) }
  fs.writeFileSync(lockfile, JSON.stringify({ ...real, ...earlier }))
  const status = manager.statusSync(file)
  assert.equal(status.owners[0].pid, agent.pid)
  assert.equal(status.owners[0].alive, false)
  assert.equal(status.stale, true)
})

test('a sweep keeps every lock file, empty ones too, and other tools\' *.lock files byte for byte', async (t) => {
  const dir = tempDir(t)
  // A sweep of a project root must not touch package managers' lock files.
  const theirs = {
    'Cargo.lock': '# This file is automatically @generated by Cargo.\nversion = 4\n',
    'yarn.lock': '# THIS IS AN AUTOGENERATED FILE.\n"left-pad@^1.3.0":\n  version "1.3.0"\n',
    'package.lock': '{"name":"app","lockfileVersion":3}',
    'torn.lock': '{"pid":12',
  }
  for (const [name, content] of Object.entries(theirs)) fs.writeFileSync(join(dir, name), content)
  // An empty lock file may be open in another process (flock(1), a lockwright waiter)
  // about to lock it: unlinking it would give that process a lock nobody else sees.
  fs.writeFileSync(join(dir, 'empty.lock'), '')
  fs.writeFileSync(join(dir, 'released.lock'), '{"token":3}')
  fs.writeFileSync(join(dir, 'not-a-lock.json'), '{}')
  const manager = new LockManager()
  assert.equal(manager.statusSync(join(dir, 'Cargo')).stale, false)
  assert.equal(manager.statusSync(join(dir, 'empty')).stale, false)
  const report = await manager.cleanupStaleLocks(dir)
  assert.deepEqual(report, { removed: [], cleared: [], kept: 6 })
  for (const [name, content] of Object.entries(theirs)) assert.equal(fs.readFileSync(join(dir, name), 'utf8'), content)
  assert.equal(fs.readFileSync(join(dir, 'empty.lock'), 'utf8'), '')
  assert.equal(await manager.forceRelease(join(dir, 'Cargo')), false)
  assert.equal(fs.readFileSync(join(dir, 'Cargo.lock'), 'utf8'), theirs['Cargo.lock'])
})

test('a sweep racing with acquires never leaves two holders', async (t) => {
  const dir = tempDir(t)
  const counter = join(dir, 'counter.txt')
  fs.writeFileSync(counter, '0')
  const count = () => Number(fs.readFileSync(counter, 'utf8'))
  const workers = Array.from({ length: 3 }, () => runScript('counter-worker.js', [dir, 'until-stopped', 'async']))
  await waitFor(() => count() > 0, { what: 'the workers to start' })
  const sweeper = new LockManager()
  let sweptDeadHolders = 0
  // Holders die holding the lock while the workers wait on it, and sweeps run while
  // the workers take it in turns: a sweep may unlink a dead holder's lock file under
  // the feet of an acquire, and must never let two holders in.
  for (let i = 0; i < 5; i++) {
    const victim = spawnAgent(t, { owner: 'victim' })
    await victim.call('acquire', { path: counter, options: { timeout: 60_000 } })
    victim.child.kill('SIGKILL')
    await victim.exited
    const before = count()
    for (let sweeps = 0; count() === before || sweeps < 20; sweeps++) {
      const report = await sweeper.cleanupStaleLocks(dir)
      sweptDeadHolders += report.removed.length + report.cleared.length
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
  fs.writeFileSync(join(dir, 'stop'), '')
  const runs = await Promise.all(workers)
  for (const run of runs) assert.equal(run.code, 0, run.stderr)
  assert.equal(count(), runs.reduce((sum, run) => sum + Number(run.stdout), 0))
  t.diagnostic(`dead holders' lock files swept mid-run: ${sweptDeadHolders}; rounds: ${runs.map((r) => r.stdout).join(', ')}`)
})

test('a lock file removed under a waiter: the waiter re-opens the path and still excludes', { skip: !native.__waitsOnJsThread() && 'needs waits on the JS thread, which a blocked event loop holds back' }, async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'tasks.json')
  const lockfile = `${file}.lock`
  const holder = spawnAgent(t, { owner: 'holder' })
  const held = await holder.call('acquire', { path: file })
  const waiter = spawnAgent(t, { owner: 'waiter' })
  const waiting = waiter.call('acquire', { path: file, options: { timeout: 60_000 } })
  await waitFor(() => writerIsWaiting(lockfile), { what: 'the waiter to queue' })
  // Hold the waiter back (its wait runs on its JS thread), so the file is gone and
  // the lock free before it looks again: someone ran \`rm\` on the lock file.
  const [startedFile, stopFile] = [join(dir, 'blocking'), join(dir, 'stop')]
  const blocked = waiter.call('blockUntil', { startedFile, stopFile })
  await waitFor(() => fs.existsSync(startedFile), { what: 'the waiter to block' })
  await holder.call('release', { lockId: held.id })
  fs.unlinkSync(lockfile)
  fs.writeFileSync(stopFile, '')
  await blocked
  // The file it waited on is gone: it locks what the path names now, which excludes.
  const lock = await waiting
  const status = new LockManager().statusSync(file)
  assert.deepEqual([status.locked, status.owners[0].pid, status.owners[0].lockId], [true, waiter.pid, lock.id])
  assert.equal(new LockManager().tryAcquire(file), null)
})

test('forceRelease refuses a live kernel lock, even with force, and clears a dead one', async (t) => {
  const file = join(tempDir(t), 'a.json')
  const agent = spawnAgent(t, { owner: 'mcp-server' })
  await agent.call('acquire', { path: file })
  const manager = new LockManager()
  for (const options of [undefined, { force: true }]) {
    await assert.rejects(manager.forceRelease(file, options), (err) => {
      assert.equal(err.code, 'ELOCKED')
      assert.match(err.message, new RegExp(`locked by mcp-server \\(PID ${agent.pid} on .+\\)\\. A kernel lock held by a live process cannot be broken`))
      return true
    })
  }
  agent.child.kill('SIGKILL')
  await agent.exited
  const token = record(`${file}.lock`).token
  assert.equal(await manager.forceRelease(file), true)
  // The dead holder's record is cleared; the file keeps its fencing token.
  assert.deepEqual(record(`${file}.lock`), { token })
  assert.equal(manager.statusSync(file).stale, false)
  assert.equal(await manager.forceRelease(file), false)
})

test('a lock whose file is removed or overwritten is reported compromised, never thrown', async (t) => {
  const dir = tempDir(t)
  const seen = []
  const manager = new LockManager({ heartbeat: 50, onCompromised: (err) => seen.push(['option', err.code]) })
  const events = []
  manager.on('compromised', (err) => events.push(err))

  const removed = await manager.acquire(join(dir, 'a'))
  fs.unlinkSync(removed.lockfilePath)
  const overwritten = await manager.acquire(join(dir, 'b'))
  fs.writeFileSync(overwritten.lockfilePath, JSON.stringify({ pid: 1, host: 'h', process: 'intruder' }))

  await waitFor(() => events.length === 2, { what: 'two compromised events' })
  for (const err of events) assert.equal(err.code, 'ECOMPROMISED')
  assert.deepEqual(new Set(events.map((e) => e.path)), new Set([removed.lockfilePath, overwritten.lockfilePath]))
  assert.deepEqual(new Set(events.map((e) => e.lockId)), new Set([removed.id, overwritten.id]))
  assert.match(events.find((e) => e.lockId === removed.id).message, /removed or replaced/)
  assert.match(events.find((e) => e.lockId === overwritten.id).message, /overwritten/)
  assert.deepEqual(seen, [['option', 'ECOMPROMISED'], ['option', 'ECOMPROMISED']])
  await assert.rejects(removed.release(), { code: 'ECOMPROMISED' })
  await assert.rejects(overwritten.release(), { code: 'ECOMPROMISED' })
  // The intruder's content is left alone.
  assert.equal(record(join(dir, 'b.lock')).process, 'intruder')
  assert.equal(manager.metrics().compromised, 2)
})

test('metrics count a scripted scenario exactly', async (t) => {
  const file = join(tempDir(t), 'a.json')
  const holder = spawnAgent(t)
  const held = await holder.call('acquire', { path: file })
  const manager = new LockManager()
  const waits = Array.from({ length: 3 }, () => manager.withLock(file, () => {}, { timeout: Infinity }))
  await assert.rejects(manager.acquire(file, { timeout: 30 }), { code: 'ETIMEOUT' })
  const controller = new AbortController()
  const aborted = manager.acquire(file, { signal: controller.signal })
  controller.abort()
  await assert.rejects(aborted, { code: 'ABORT_ERR' })
  await holder.call('release', { lockId: held.id })
  await Promise.all(waits)
  const m = manager.metrics()
  assert.deepEqual(
    { acquisitions: m.acquisitions, releases: m.releases, contended: m.contended, timeouts: m.timeouts, aborts: m.aborts, heldNow: m.heldNow },
    { acquisitions: 3, releases: 3, contended: 5, timeouts: 0 + 1, aborts: 1, heldNow: 0 },
  )
  assert.equal(m.wait.count, 3)
  assert.equal(m.hold.count, 3)
  assert.ok(m.wait.p50 > 0 && m.wait.p50 <= m.wait.p95 && m.wait.p95 <= m.wait.p99 && m.wait.p99 <= m.wait.max)
  // FlowForge's getLockMetrics: average wait and total timeouts.
  const flowforge = { averageWaitTime: m.wait.mean, totalTimeouts: m.timeouts }
  assert.ok(flowforge.averageWaitTime > 0)
  manager.resetMetrics()
  assert.equal(manager.metrics().acquisitions, 0)
})

test('metrics: false records nothing but still counts what is held', async (t) => {
  const file = join(tempDir(t), 'a.json')
  const manager = new LockManager({ metrics: false })
  const lock = await manager.acquire(file)
  assert.equal(manager.tryAcquire(file), null)
  let m = manager.metrics()
  assert.deepEqual({ acquisitions: m.acquisitions, contended: m.contended, heldNow: m.heldNow, waits: m.wait.count }, { acquisitions: 0, contended: 0, heldNow: 1, waits: 0 })
  await lock.release()
  m = manager.metrics()
  assert.deepEqual({ releases: m.releases, heldNow: m.heldNow, holds: m.hold.count }, { releases: 0, heldNow: 0, holds: 0 })
  assert.throws(() => new LockManager({ metrics: 'no' }), { code: 'EINVAL', message: /metrics must be a boolean/ })
})

test('LOCKWRIGHT_DEBUG=1 and the debug option log lock events', async (t) => {
  const dir = tempDir(t)
  const run = await runScript('debug-scenario.js', [join(dir, 'a.json')], { env: { LOCKWRIGHT_DEBUG: '1' } })
  assert.equal(run.code, 0, run.stderr)
  assert.match(run.stderr, /lockwright\[\d+\] acquire exclusive .*a\.json token=1/)
  assert.match(run.stderr, /lockwright\[\d+\] release/)
  const lines = []
  const manager = new LockManager({ debug: (line) => lines.push(line) })
  await manager.withLock(join(dir, 'b.json'), () => {})
  await manager.cleanupStaleLocks(dir)
  assert.equal(lines.length, 2)
  assert.match(lines[0], /acquire exclusive/)
})

test('withLock reports a lock lost while fn ran, keeping fn\'s own error as the cause', async (t) => {
  const dir = tempDir(t)
  const manager = new LockManager({ heartbeat: 50 })
  // The compromised event does not keep the process alive; this test waits for it.
  const keepAlive = setInterval(() => {}, 60_000)
  t.after(() => clearInterval(keepAlive))
  const loseLock = async (lock) => {
    const compromised = once(manager, 'compromised')
    fs.unlinkSync(lock.lockfilePath)
    await compromised
  }
  const thrown = await manager
    .withLock(join(dir, 'a'), async (lock) => {
      await loseLock(lock)
      throw new Error('boom')
    })
    .then(() => assert.fail('withLock resolved'), (err) => err)
  assert.equal(thrown.code, 'ECOMPROMISED')
  assert.equal(thrown.cause?.message, 'boom')
  // fn succeeded, but without the lock at the end: the caller must still hear of it.
  const returned = await manager
    .withLock(join(dir, 'b'), async (lock) => {
      await loseLock(lock)
      return 'done'
    })
    .then(() => assert.fail('withLock resolved'), (err) => err)
  assert.equal(returned.code, 'ECOMPROMISED')
  assert.equal(returned.cause, undefined)
  assert.equal(manager._native.heldCount, 0)
})

test('release by path releases every grant on the file even when one was lost', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'index.json')
  const manager = new LockManager({ heartbeat: 50 })
  const keepAlive = setInterval(() => {}, 60_000) // the compromised event does not keep the process alive
  t.after(() => clearInterval(keepAlive))
  const readers = [await manager.acquire(file, { mode: 'shared' }), await manager.acquire(file, { mode: 'shared' })]
  const lost = []
  const bothLost = new Promise((resolve) => manager.on('compromised', (err) => lost.push(err) === 2 && resolve()))
  fs.rmSync(`${file}.lock`)
  await bothLost
  await assert.rejects(manager.release(file), { code: 'ECOMPROMISED' })
  assert.equal(manager._native.heldCount, 0)
  assert.deepEqual(readers.map((r) => r.released), [true, true])
})
