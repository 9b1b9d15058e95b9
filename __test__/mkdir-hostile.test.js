'use strict'
// The mkdir strategy and the drop-in in shared and hostile places (#11, #12): other
// users in /tmp and in group folders, holders in other PID namespaces, files planted
// beside the lock, a kernel-strategy lock file where the lock directory should be.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
const { spawnSync } = require('node:child_process')
const lockfile = require('lockwright/proper-lockfile')
const { LockManager } = require('../index.js')
const { packageForOtherUsers, tempDir, spawnAgent, waitFor } = require('./helpers.js')

const OURS = 'lockwright/proper-lockfile'
const isRoot = process.getuid?.() === 0
const has = (command) => spawnSync(command, ['--version']).status === 0
const needsRoot = (command) => (!isRoot || !has(command)) && `needs root and ${command}`

/** Two users without privileges: `nobody`, and a user with no name (uid 65533). */
const A = { uid: 65534, gid: 65534, name: 'nobody' }
const B = { uid: 65533, gid: 65533 }

function targetIn(dir) {
  const file = join(dir, 'state.json')
  fs.writeFileSync(file, '{}')
  fs.chmodSync(file, 0o666)
  return file
}

/** A drop-in agent running as `user` (setpriv), in `groups`, with `umask`. */
function asUser(t, user, { groups = [], umask } = {}) {
  const wrap = ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`]
  wrap.push(groups.length ? `--groups=${groups.join(',')}` : '--clear-groups')
  return spawnAgent(t, { script: 'pl-agent.js', args: [OURS], wrap, root: packageForOtherUsers(t), env: umask ? { PL_AGENT_UMASK: umask } : {} })
}

/** `user` locks `file` and dies holding it (SIGKILL): its directory and record stay. */
async function dieHolding(t, user, file, setting) {
  const agent = asUser(t, user, setting)
  await agent.call('lock', { file })
  agent.child.kill('SIGKILL')
  await agent.exited
}

/** `user` takes the lock (taking over a dead holder's if need be) and releases it. */
async function takeTurn(t, user, file, setting) {
  const agent = asUser(t, user, setting)
  await agent.call('lock', { file })
  await agent.call('unlock', { file })
  agent.child.kill()
}

const lastToken = (file) => JSON.parse(fs.readFileSync(`${file}.lock.token`, 'utf8')).token

test('two users take turns on one lock in a sticky world-writable directory, takeovers of their own dead locks included', { skip: needsRoot('setpriv') }, async (t) => {
  const dir = tempDir(t)
  fs.chmodSync(dir, 0o1777)
  const file = targetIn(dir)
  // Each takes over its own dead lock; B's takeover goes through the guard file A made.
  await dieHolding(t, A, file)
  await takeTurn(t, A, file)
  await dieHolding(t, B, file)
  await takeTurn(t, B, file)
  await takeTurn(t, A, file)
  await takeTurn(t, B, file)
  // One fencing sequence for both users: six grants.
  assert.equal(lastToken(file), 6)
  // In a sticky directory only its owner can remove A's dead lock, as with
  // proper-lockfile: the error says whose it is.
  await dieHolding(t, A, file)
  await assert.rejects(asUser(t, B).call('lock', { file }), (err) => {
    assert.equal(err.code, 'EPERM')
    assert.match(err.message, /belongs to nobody \(uid 65534\)/)
    return true
  })
})

test('two users of one group take turns and take over each other\'s dead locks in a 2775 directory (umask 002)', { skip: needsRoot('setpriv') }, async (t) => {
  const dir = tempDir(t)
  fs.chownSync(dir, 0, A.gid)
  fs.chmodSync(dir, 0o2775)
  const file = targetIn(dir)
  const [a, b] = [{ umask: '002' }, { umask: '002', groups: [A.gid] }]
  await dieHolding(t, A, file, a)
  await takeTurn(t, B, file, b) // B removes A's dead lock
  await dieHolding(t, B, file, b)
  await takeTurn(t, A, file, a) // and A B's, through the guard file B made
  await takeTurn(t, B, file, b)
  await takeTurn(t, A, file, a)
  assert.equal(lastToken(file), 6)
})

test('a live holder in another PID namespace keeps its lock: its PID means nothing here', { skip: needsRoot('unshare') }, async (t) => {
  const dir = tempDir(t)
  const file = targetIn(dir)
  // A container sharing the host name but not the PID namespace: the holder is PID 1
  // there, and PID 1 here is another, live, process.
  const wrap = ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child']
  const holder = spawnAgent(t, { script: 'pl-agent.js', args: [OURS], wrap })
  await holder.call('lock', { file, options: { stale: 60_000 } })
  assert.equal(await lockfile.check(file, { stale: 60_000 }), true)
  await assert.rejects(lockfile.lock(file, { stale: 60_000 }), { code: 'ELOCKED' })
  const status = new LockManager({ strategy: 'mkdir', stale: 60_000 }).statusSync(file)
  assert.deepEqual([status.locked, status.stale, status.owners[0].pid, status.owners[0].alive], [true, false, 1, true])

  // The kernel strategy's status judges owners the same way.
  const kernelHolder = spawnAgent(t, { wrap })
  const other = join(dir, 'other.json')
  await kernelHolder.call('acquire', { path: other })
  const kernel = new LockManager().statusSync(other)
  assert.deepEqual([kernel.locked, kernel.stale, kernel.owners[0].pid, kernel.owners[0].alive], [true, false, 1, true])

  // Once it dies, its lock goes stale by its mtime, as proper-lockfile's would.
  const mortal = spawnAgent(t, { script: 'pl-agent.js', args: [OURS], wrap })
  const third = targetIn(tempDir(t))
  await mortal.call('lock', { file: third, options: { stale: 2000 } })
  mortal.child.kill('SIGKILL')
  await mortal.exited
  const release = await lockfile.lock(third, { stale: 2000, retries: { retries: 40, minTimeout: 100, factor: 1 } })
  await release()
})

/** `promise`, or a failure (the agent killed) if it never settles: a hang must fail. */
async function watchdog(agent, promise, what) {
  let timer
  const hung = new Promise((_, reject) => {
    timer = setTimeout(() => {
      agent.child.kill('SIGKILL')
      reject(new Error(`${what}: no answer in 20 s; blocked`))
    }, 20_000)
  })
  try {
    return await Promise.race([promise, hung])
  } finally {
    clearTimeout(timer)
  }
}

test('symlinks planted beside a lock are never followed, FIFOs never waited on', { skip: process.platform === 'win32' }, async (t) => {
  const dir = tempDir(t)
  const file = targetIn(dir)
  const victim = join(dir, 'victim')
  fs.writeFileSync(victim, 'precious')
  fs.symlinkSync(victim, `${file}.lock.owner.json`)
  const agent = spawnAgent(t, { script: 'pl-agent.js', args: [OURS] })
  // Acquire, a heartbeat (update is at least 1 s), release: the victim is untouched.
  await watchdog(agent, agent.call('lock', { file, options: { stale: 2000, update: 1000 } }), 'lock')
  const before = fs.statSync(`${file}.lock`).mtimeMs
  await waitFor(() => fs.statSync(`${file}.lock`).mtimeMs !== before, { what: 'a heartbeat' })
  await watchdog(agent, agent.call('unlock', { file }), 'unlock')
  assert.equal(fs.readFileSync(victim, 'utf8'), 'precious')

  // A symlinked token file is refused, and no lock is left behind.
  fs.renameSync(`${file}.lock.token`, `${file}.lock.token.real`)
  fs.symlinkSync(victim, `${file}.lock.token`)
  await assert.rejects(watchdog(agent, agent.call('lock', { file }), 'lock'), { code: 'ELOOP' })
  assert.equal(fs.existsSync(`${file}.lock`), false)
  assert.equal(fs.readFileSync(victim, 'utf8'), 'precious')
  fs.renameSync(`${file}.lock.token.real`, `${file}.lock.token`)

  // FIFOs at the record's and the guard's names: a lock, a look, a takeover.
  for (const name of [`${file}.lock.owner.json`, `${file}.lock.takeover`]) {
    fs.rmSync(name, { force: true })
    assert.equal(spawnSync('mkfifo', [name]).status, 0)
  }
  await watchdog(agent, agent.call('lock', { file }), 'lock beside FIFOs')
  assert.equal(await watchdog(agent, agent.call('check', { file }), 'check'), true)
  await watchdog(agent, agent.call('unlock', { file }), 'unlock')
  fs.mkdirSync(`${file}.lock`)
  const old = new Date(Date.now() - 60_000)
  fs.utimesSync(`${file}.lock`, old, old)
  await assert.rejects(watchdog(agent, agent.call('lock', { file }), 'takeover'), { code: 'EEXIST', message: /not a lock file \(a FIFO\)/ })
  assert.ok(fs.statSync(`${file}.lock`).isDirectory())
})

test('a kernel-strategy lock file where the lock directory goes: a typed error naming the protocol mismatch; anything else is left alone', async (t) => {
  const dir = tempDir(t)
  const file = targetIn(dir)
  const kernelHolder = spawnAgent(t)
  await kernelHolder.call('acquire', { path: file })
  const held = fs.readFileSync(`${file}.lock`, 'utf8')
  for (const attempt of [() => lockfile.lock(file), () => new LockManager({ strategy: 'mkdir' }).acquire(file, { timeout: 0 })]) {
    await assert.rejects(attempt(), (err) => {
      assert.equal(err.code, 'ENOTDIR')
      assert.match(err.message, /kernel strategy/)
      assert.match(err.message, /must use the same protocol: strategy 'mkdir' \(or lockwright\/proper-lockfile\) everywhere, or the kernel strategy everywhere/)
      assert.ok(err.message.includes(`${file}.lock`))
      return true
    })
  }
  assert.throws(() => new LockManager({ strategy: 'mkdir' }).statusSync(file), { code: 'ENOTDIR', message: /kernel strategy/ })
  assert.equal(fs.readFileSync(`${file}.lock`, 'utf8'), held)

  const foreign = targetIn(tempDir(t))
  fs.writeFileSync(`${foreign}.lock`, 'version = 4\n')
  await assert.rejects(lockfile.lock(foreign), { code: 'EEXIST', message: /exists and is not a lock file/ })
  assert.equal(fs.readFileSync(`${foreign}.lock`, 'utf8'), 'version = 4\n')
})

test('cleanupStaleLocks and forceRelease never follow a symlinked lock directory', async (t) => {
  const dir = tempDir(t)
  const elsewhere = join(tempDir(t), 'elsewhere.lock')
  fs.mkdirSync(elsewhere) // an old, empty directory: what a stale lock looks like
  const old = new Date(Date.now() - 60_000)
  fs.utimesSync(elsewhere, old, old)
  fs.symlinkSync(elsewhere, join(dir, 'x.json.lock'))
  const manager = new LockManager({ strategy: 'mkdir', lockDir: dir })
  assert.deepEqual(await manager.cleanupStaleLocks(), { removed: [], cleared: [], kept: 0 })
  await assert.rejects(manager.forceRelease(join(dir, 'x.json'), { force: true }), { code: 'EEXIST', message: /a symbolic link/ })
  assert.ok(fs.statSync(elsewhere).isDirectory())
  assert.ok(fs.lstatSync(join(dir, 'x.json.lock')).isSymbolicLink())
  // The drop-in's check judges the symlink itself (fresh), not the old directory.
  assert.equal(lockfile.checkSync(join(dir, 'x.json'), { realpath: false }), true)
})

test('mkdir grants carry strictly increasing fencing tokens, across releases and processes', async (t) => {
  const file = targetIn(tempDir(t))
  const manager = new LockManager({ strategy: 'mkdir' })
  const agent = spawnAgent(t, { env: { LOCKWRIGHT_AGENT_OPTIONS: JSON.stringify({ strategy: 'mkdir' }) } })
  const tokens = []
  for (let round = 0; round < 2; round++) {
    const ours = await manager.acquire(file)
    tokens.push(ours.token)
    await ours.release()
    const theirs = await agent.call('acquire', { path: file })
    tokens.push(theirs.token)
    await agent.call('release', { lockId: theirs.id })
  }
  assert.deepEqual(tokens, [1, 2, 3, 4])
  // A proper-lockfile peer knows nothing of tokens; the sequence goes on after it.
  const release = await require('proper-lockfile').lock(file)
  await release()
  const next = await manager.acquire(file)
  assert.equal(next.token, 5)
  await next.release()
})
