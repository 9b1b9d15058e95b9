'use strict'
// The drop-in: proper-lockfile's API and on-disk protocol, against live
// proper-lockfile processes.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
const lockfile = require('lockwright/proper-lockfile')
const { LockManager } = require('../index.js')
const { tempDir, spawnAgent, runScript, waitFor } = require('./helpers.js')

const REAL = 'proper-lockfile'
const OURS = 'lockwright/proper-lockfile'

function plAgent(t, moduleName) {
  return spawnAgent(t, { script: 'pl-agent.js', args: [moduleName] })
}

function targetFile(t, name = 'state.json') {
  const file = join(tempDir(t), name)
  fs.writeFileSync(file, '{}')
  return file
}

test('the module has proper-lockfile\'s shape, for require and import', async () => {
  assert.equal(typeof lockfile, 'function')
  for (const name of ['lock', 'unlock', 'check', 'lockSync', 'unlockSync', 'checkSync']) {
    assert.equal(typeof lockfile[name], 'function', name)
  }
  assert.equal(lockfile, lockfile.lock)
  const esm = await import('lockwright/proper-lockfile')
  assert.equal(esm.default, lockfile)
  assert.equal(esm.lockSync, lockfile.lockSync)
})

test('the lock is an empty <realpath>.lock directory, removed on release', async (t) => {
  const file = targetFile(t)
  const link = `${file}-link`
  fs.symlinkSync(file, link)
  const release = await lockfile.lock(link)
  assert.ok(fs.statSync(`${file}.lock`).isDirectory())
  assert.deepEqual(fs.readdirSync(`${file}.lock`), [])
  assert.equal(await lockfile.check(file), true)
  await release()
  assert.equal(fs.existsSync(`${file}.lock`), false)
  assert.equal(await lockfile.check(file), false)
})

for (const [holder, contender] of [[REAL, OURS], [OURS, REAL]]) {
  test(`a lock held by ${holder} is ELOCKED for ${contender} in another process`, async (t) => {
    const file = targetFile(t)
    const [h, c] = [plAgent(t, holder), plAgent(t, contender)]
    await h.call('lock', { file })
    await assert.rejects(c.call('lock', { file }), { code: 'ELOCKED', message: 'Lock file is already being held' })
    assert.equal(await c.call('check', { file }), true)
    await h.call('unlock', { file })
    assert.equal(await c.call('check', { file }), false)
    await c.call('lock', { file })
  })
}

for (const [holder, taker] of [[REAL, OURS], [OURS, REAL]]) {
  test(`${taker} takes over a dead ${holder} holder's lock once it goes stale`, async (t) => {
    const file = targetFile(t)
    const dead = plAgent(t, holder)
    await dead.call('lock', { file, options: { stale: 2000 } })
    dead.child.kill('SIGKILL')
    await dead.exited
    // The directory stays with the mtime of its last update; after 2 s it is stale.
    // A lockwright holder's record sits beside it, so proper-lockfile's rmdir works.
    const peer = plAgent(t, taker)
    await peer.call('lock', { file, options: { stale: 2000, retries: { retries: 20, minTimeout: 200, factor: 1 } } })
  })
}

test('a SIGKILLed lockwright holder on this host is stale at once, not after `stale`', async (t) => {
  const file = targetFile(t)
  const dead = plAgent(t, OURS)
  await dead.call('lock', { file, options: { stale: 60_000 } })
  dead.child.kill('SIGKILL')
  await dead.exited
  assert.equal(await lockfile.check(file, { stale: 60_000 }), false)
  const release = await lockfile.lock(file, { stale: 60_000 })
  await release()
})

test('a holder blocked for longer than stale keeps its lock: the mtime is refreshed natively', async (t) => {
  const file = targetFile(t)
  const busy = plAgent(t, OURS)
  await busy.call('lock', { file, options: { stale: 2000 } })
  const blocking = busy.call('block', { ms: 5000 })
  const peer = plAgent(t, REAL)
  // proper-lockfile keeps retrying for longer than the block; it must never get in.
  await assert.rejects(
    peer.call('lock', { file, options: { stale: 2000, retries: { retries: 12, minTimeout: 500, factor: 1 } } }),
    { code: 'ELOCKED' },
  )
  await blocking
})

test('proper-lockfile and lockwright processes incrementing one counter lose nothing', async (t) => {
  const dir = tempDir(t)
  fs.writeFileSync(join(dir, 'counter.txt'), '0')
  const runs = await Promise.all([
    runScript('pl-counter.js', [REAL, dir, '60']),
    runScript('pl-counter.js', [OURS, dir, '60']),
    runScript('pl-counter.js', [REAL, dir, '60']),
    runScript('pl-counter.js', [OURS, dir, '60']),
  ])
  for (const run of runs) assert.equal(run.code, 0, run.stderr)
  assert.equal(Number(fs.readFileSync(join(dir, 'counter.txt'), 'utf8')), 240)
})

test('options: stale and update clamps, retries, realpath, lockfilePath, fs', async (t) => {
  const file = targetFile(t)
  // stale is at least 2000: a lock updated 1 s ago is not stale even with stale: 100.
  fs.mkdirSync(`${file}.lock`)
  const oneSecondAgo = new Date(Date.now() - 1000)
  fs.utimesSync(`${file}.lock`, oneSecondAgo, oneSecondAgo)
  await assert.rejects(lockfile.lock(file, { stale: 100 }), { code: 'ELOCKED' })
  assert.equal(await lockfile.check(file, { stale: 100 }), true)
  const threeSecondsAgo = new Date(Date.now() - 3000)
  fs.utimesSync(`${file}.lock`, threeSecondsAgo, threeSecondsAgo)
  assert.equal(await lockfile.check(file, { stale: 100 }), false)
  const release = await lockfile.lock(file, { stale: 100, update: 1 })
  await release()

  // retries as a number and as an options object: attempts, then ELOCKED.
  const holder = plAgent(t, REAL)
  await holder.call('lock', { file })
  const started = Date.now()
  await assert.rejects(lockfile.lock(file, { retries: { retries: 3, minTimeout: 20, factor: 2 } }), { code: 'ELOCKED' })
  assert.ok(Date.now() - started >= 20 + 40 + 80 - 5, 'waited 20 + 40 + 80 ms between attempts')
  await assert.rejects(lockfile.lock(file, { retries: 2 }), { code: 'ELOCKED' })
  const waiting = lockfile.lock(file, { retries: { retries: 50, minTimeout: 20, factor: 1 } })
  await holder.call('unlock', { file })
  await (await waiting)()

  // realpath: true needs the file; false does not. lockfilePath is used as given.
  await assert.rejects(lockfile.lock(`${file}.missing`), { code: 'ENOENT' })
  const unreal = await lockfile.lock(`${file}.missing`, { realpath: false })
  assert.ok(fs.existsSync(`${file}.missing.lock`))
  await unreal()
  const custom = join(tempDir(t), 'custom.lock')
  const viaPath = await lockfile.lock(file, { lockfilePath: custom, fs: require('node:fs') })
  assert.ok(fs.statSync(custom).isDirectory())
  await lockfile.unlock(file, { lockfilePath: custom })
  assert.equal(fs.existsSync(custom), false)
  await assert.rejects(viaPath(), { code: 'ERELEASED' })

  // A given fs resolves the path, as in proper-lockfile (graceful-fs, say).
  const asked = []
  const tracing = { ...fs, realpath: (p, cb) => (asked.push(p), fs.realpath(p, cb)), realpathSync: (p) => (asked.push(p), fs.realpathSync(p)) }
  await (await lockfile.lock(file, { fs: tracing }))()
  lockfile.lockSync(file, { fs: tracing })()
  assert.deepEqual(asked, [file, file])
  // check on a plain file where the lock directory should be: judged by its mtime.
  fs.writeFileSync(`${file}.lock`, '')
  assert.equal(await lockfile.check(file), true)
  fs.rmSync(`${file}.lock`)
})

test('sync API: lockSync, unlockSync, checkSync and ESYNC', (t) => {
  const file = targetFile(t)
  const release = lockfile.lockSync(file)
  assert.equal(lockfile.checkSync(file), true)
  assert.throws(() => lockfile.lockSync(file), { code: 'ELOCKED', message: 'Lock file is already being held' })
  release()
  assert.throws(() => release(), { code: 'ERELEASED', message: 'Lock is already released' })
  assert.throws(() => lockfile.unlockSync(file), { code: 'ENOTACQUIRED', message: 'Lock is not acquired/owned by you' })
  assert.throws(() => lockfile.lockSync(file, { retries: 1 }), { code: 'ESYNC', message: 'Cannot use retries with the sync api' })
  assert.throws(() => lockfile.lockSync(file, { retries: { retries: 2 } }), { code: 'ESYNC' })
  assert.throws(() => lockfile.unlockSync(file, { retries: 1 }), { code: 'ESYNC' })
  lockfile.lockSync(file, { retries: 0 })
  lockfile.unlockSync(file)
  assert.equal(lockfile.checkSync(file), false)
})

test('errors: ENOTACQUIRED, ERELEASED and onCompromised', async (t) => {
  const file = targetFile(t)
  await assert.rejects(lockfile.unlock(file), { code: 'ENOTACQUIRED', message: 'Lock is not acquired/owned by you' })
  // Lost before the heartbeat (every 30 s here) noticed: the release says so and
  // leaves alone what is there now.
  const lost = await lockfile.lock(file, { stale: 60_000, onCompromised: () => {} })
  fs.rmdirSync(`${file}.lock`)
  fs.mkdirSync(`${file}.lock`) // someone else's now
  await assert.rejects(lost(), { code: 'ECOMPROMISED' })
  assert.ok(fs.existsSync(`${file}.lock`))
  fs.rmdirSync(`${file}.lock`)
  // Two releases at once: the first releases, the second is ERELEASED.
  const twice = await lockfile.lock(file)
  const [first, second] = await Promise.allSettled([twice(), twice()])
  assert.equal(first.status, 'fulfilled')
  assert.equal(second.reason?.code, 'ERELEASED')
  const compromised = []
  const release = await lockfile.lock(file, { update: 1000, onCompromised: (err) => compromised.push(err) })
  // Someone else's touch: the mtime is no longer ours.
  const past = new Date(Date.now() - 5000)
  fs.utimesSync(`${file}.lock`, past, past)
  await new Promise((resolve) => {
    const poll = setInterval(() => compromised.length && (clearInterval(poll), resolve()), 20)
  })
  assert.equal(compromised[0].code, 'ECOMPROMISED')
  assert.equal(compromised[0].message, 'Unable to update lock within the stale threshold')
  await assert.rejects(release(), { code: 'ERELEASED' })
})

test('a lock lost to the removal of its directory is ECOMPROMISED carrying the fs error, as in proper-lockfile', async (t) => {
  const file = targetFile(t)
  const compromised = []
  const release = await lockfile.lock(file, { stale: 2000, update: 1000, onCompromised: (err) => compromised.push(err) })
  fs.rmdirSync(`${file}.lock`)
  await waitFor(() => compromised.length > 0, { what: 'the heartbeat to find the lock gone' })
  const [err] = compromised
  assert.equal(err.code, 'ECOMPROMISED')
  assert.match(err.message, /^ENOENT: .*, stat '.*state\.json\.lock'$/)
  assert.equal(err.cause?.code, 'ENOENT')
  await assert.rejects(release(), { code: 'ERELEASED' })
  // Removed before any heartbeat looked: the release says the same.
  const lost = await lockfile.lock(file, { stale: 60_000, onCompromised: () => {} })
  fs.rmdirSync(`${file}.lock`)
  await assert.rejects(lost(), (e) => {
    assert.equal(e.code, 'ECOMPROMISED')
    assert.match(e.message, /^ENOENT: /)
    assert.equal(e.cause?.code, 'ENOENT')
    return true
  })
})

test('update: false (any falsy update) is the minimum, 1000 ms, and a long update is cut to stale / 2, as in proper-lockfile', async (t) => {
  // Were the lock never refreshed, or every 60 s, it would be stale after 2 s and the
  // proper-lockfile peer, retrying for longer than that, would get in.
  await Promise.all([{ update: false }, { update: 0 }, { update: 60_000 }].map(async (update, i) => {
    const file = targetFile(t, `state-${i}.json`)
    await plAgent(t, OURS).call('lock', { file, options: { stale: 2000, ...update } })
    const peer = plAgent(t, REAL)
    await assert.rejects(
      peer.call('lock', { file, options: { stale: 2000, retries: { retries: 10, minTimeout: 500, factor: 1 } } }),
      { code: 'ELOCKED' },
      `update: ${update.update}`,
    )
  }))
})

test('by default a compromised lock throws, as proper-lockfile does', async (t) => {
  const file = targetFile(t)
  const run = await runScript('pl-compromise.js', [file])
  assert.notEqual(run.code, 0)
  assert.match(run.stderr, /ECOMPROMISED|Unable to update lock/)
})

test('LockManager({ strategy: "mkdir" }) speaks the same protocol and is exclusive only', async (t) => {
  const file = targetFile(t)
  const manager = new LockManager({ strategy: 'mkdir' })
  await assert.rejects(manager.acquire(file, { mode: 'shared' }), { code: 'EINVAL', message: /exclusive locks only/ })
  const peer = plAgent(t, REAL)
  await peer.call('lock', { file })
  await assert.rejects(manager.acquire(file, { timeout: 0 }), { code: 'ELOCKED' })
  assert.equal(manager.statusSync(file).locked, true)
  // Waiting: the peer's rmdir wakes the waiter.
  const waiting = manager.acquire(file, { timeout: 10_000 })
  await peer.call('unlock', { file })
  const lock = await waiting
  assert.ok(fs.statSync(`${file}.lock`).isDirectory())
  assert.equal(manager.statusSync(file).owners[0].pid, process.pid)
  await assert.rejects(peer.call('lock', { file }), { code: 'ELOCKED' })
  await lock.release()
  assert.equal(fs.existsSync(`${file}.lock`), false)
})

test('a held drop-in lock neither keeps its process alive nor outlives it', async (t) => {
  const file = targetFile(t)
  const run = await runScript('pl-exit.js', [file])
  assert.equal(run.code, 0, run.stderr)
  assert.equal(fs.existsSync(`${file}.lock`), false)
})

test('lockwright processes racing to take over one stale lock: exactly one wins', async (t) => {
  const file = targetFile(t)
  const racers = Array.from({ length: 5 }, () => plAgent(t, OURS))
  for (let round = 0; round < 5; round++) {
    // A dead proper-lockfile holder's directory, last updated a minute ago.
    fs.mkdirSync(`${file}.lock`)
    const old = new Date(Date.now() - 60_000)
    fs.utimesSync(`${file}.lock`, old, old)
    const results = await Promise.allSettled(racers.map((r) => r.call('lock', { file })))
    const winners = racers.filter((_, i) => results[i].status === 'fulfilled')
    assert.equal(winners.length, 1, `round ${round}: ${winners.length} winners`)
    for (const result of results) if (result.status === 'rejected') assert.equal(result.reason.code, 'ELOCKED')
    await winners[0].call('unlock', { file })
  }
})

test('with strategy "mkdir", list, cleanupStaleLocks and forceRelease work on lock directories', async (t) => {
  const dir = tempDir(t)
  const live = join(dir, 'live.json')
  const dead = join(dir, 'dead.json')
  fs.writeFileSync(live, '{}')
  fs.writeFileSync(dead, '{}')
  const peer = plAgent(t, REAL)
  await peer.call('lock', { file: live })
  fs.mkdirSync(`${dead}.lock`) // a proper-lockfile holder that died a minute ago
  const old = new Date(Date.now() - 60_000)
  fs.utimesSync(`${dead}.lock`, old, old)
  const manager = new LockManager({ strategy: 'mkdir', lockDir: dir })
  assert.deepEqual(manager.listSync().map((s) => [s.lockfilePath, s.locked, s.stale]), [
    [`${dead}.lock`, false, true],
    [`${live}.lock`, true, false],
  ])
  assert.deepEqual(await manager.cleanupStaleLocks(), { removed: [`${dead}.lock`], cleared: [], kept: 1 })
  await assert.rejects(manager.forceRelease(live), { code: 'ELOCKED', message: /pass force: true/ })
  assert.equal(await manager.forceRelease(live, { force: true }), true)
  assert.equal(fs.existsSync(`${live}.lock`), false)
})
