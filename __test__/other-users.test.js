'use strict'
// Locks shared between users and watched by observers: a sticky /tmp-like directory,
// a group folder, a holder without write access, and status loops beside tryAcquire.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { spawn, spawnSync, fork } = require('node:child_process')
const { once } = require('node:events')
const { join } = require('node:path')
const { LockManager } = require('../index.js')
const { packageForOtherUsers, tempDir } = require('./helpers.js')

const canSwitchUsers = process.getuid?.() === 0 && spawnSync('setpriv', ['--version']).status === 0
const GROUP = 4242 // a group both users get for the group-folder case

/** Runs `code` as `uid` (with GROUP among its groups) under `umask`; resolves with its JSON output. */
async function runAs(t, uid, umask, code) {
  const script = `process.umask(0o${umask.toString(8)}); const lw = require(${JSON.stringify(packageForOtherUsers(t))});
    (async () => { ${code} })().then((r) => console.log(JSON.stringify({ ok: true, r })),
      (e) => console.log(JSON.stringify({ ok: false, code: e.code, message: e.message })))`
  const child = spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, `--groups=${GROUP}`, process.execPath, '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (err += d))
  const [status] = await once(child, 'exit')
  assert.equal(status, 0, err)
  return JSON.parse(out)
}

const takeTurn = (target) => `const m = new lw.LockManager({ owner: 'u' + process.getuid() });
  const w = await m.acquire(${JSON.stringify(target)}, { timeout: 5000 }); const token = w.token; await w.release();
  const r = await m.acquire(${JSON.stringify(target)}, { mode: 'shared', timeout: 5000 }); await r.release();
  return token`

for (const [name, mode, umask] of [
  ['a sticky world-writable directory (1777, umask 022)', 0o1777, 0o022],
  ['a group folder (2775, umask 002)', 0o2775, 0o002],
]) {
  test(`two users take turns on one lock in ${name}`, { skip: !canSwitchUsers && 'needs root and setpriv' }, async (t) => {
    const dir = tempDir(t)
    fs.chmodSync(dir, 0o755)
    const shared = join(dir, 'shared')
    fs.mkdirSync(shared)
    fs.chownSync(shared, 0, GROUP)
    fs.chmodSync(shared, mode)
    const target = join(shared, 'tasks.json')
    const tokens = []
    for (const uid of [65534, 1000, 65534, 1000]) {
      const result = await runAs(t, uid, umask, takeTurn(target))
      assert.equal(result.ok, true, `uid ${uid}: ${JSON.stringify(result)}`)
      tokens.push(result.r)
    }
    assert.deepEqual(tokens, [1, 2, 3, 4])
  })
}

test('an EACCES that cannot be avoided names the lock file and its owner', { skip: !canSwitchUsers && 'needs root and setpriv' }, async (t) => {
  const dir = tempDir(t)
  fs.chmodSync(dir, 0o755)
  const target = join(dir, 'private.json')
  await (await new LockManager().acquire(target)).release() // root's file, 0644 in a 0755 directory
  const result = await runAs(t, 65534, 0o022, `await new lw.LockManager().acquire(${JSON.stringify(target)}, { timeout: 0 })`)
  assert.equal(result.code, 'EACCES')
  assert.match(result.message, /private\.json\.lock.*belongs to root \(uid 0\)/)
})

test('status names a holder that could write no record (read access is enough to hold a lock)', { skip: !canSwitchUsers && 'needs root and setpriv' }, async (t) => {
  const dir = tempDir(t)
  fs.chmodSync(dir, 0o755)
  const target = join(dir, 'service.json')
  const lockfile = `${target}.lock`
  await (await new LockManager().acquire(target)).release()
  // flock(1) opens the file read-only: another user can hold root's lock this way.
  const holder = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'flock', lockfile, 'sh', '-c', 'echo held; cat'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  t.after(() => holder.kill('SIGKILL'))
  await once(holder.stdout, 'data')
  const manager = new LockManager()
  const status = manager.statusSync(target)
  assert.equal(status.locked, true)
  assert.equal(status.owners.length, 1)
  assert.match(status.owners[0].user, /uid 65534/)
  await assert.rejects(manager.forceRelease(target, { force: true }), { code: 'ELOCKED', message: /PID \d+/ })
  holder.stdin.end()
  await once(holder, 'exit')
  assert.equal(manager.statusSync(target).locked, false)
})

test('observers (status, list, cleanup in a loop elsewhere) never make a free lock look held', async (t) => {
  const dir = tempDir(t)
  const target = join(dir, 'hot.json')
  const manager = new LockManager()
  await (await manager.acquire(target)).release()
  const observer = fork(join(__dirname, 'fixtures', 'observer-loop.js'), [target], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  t.after(() => observer.kill('SIGKILL'))
  await once(observer, 'message')
  let refused = 0
  const tries = 20_000
  for (let i = 0; i < tries; i++) {
    const lock = manager.tryAcquire(target)
    if (lock === null) refused++
    else lock.releaseSync()
  }
  assert.equal(refused, 0, `${refused} of ${tries} tryAcquire calls on a free lock were refused`)
})
