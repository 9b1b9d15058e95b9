'use strict'
// Bad input: a typed error at once, nothing left on disk.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
const { LockManager } = require('../index.js')
const { tempDir } = require('./helpers.js')

const badPaths = [
  [5, 'EINVAL', /path must be a string, got the number 5/],
  [null, 'EINVAL', /path must be a string, got null/],
  [undefined, 'EINVAL', /path must be a string/],
  [{}, 'EINVAL', /path must be a string/],
  ['', 'EINVAL', /non-empty/],
  ['a\0b', 'EINVAL', /NUL byte/],
]

const badOptions = [
  [{ timeout: NaN }, /timeout must be a non-negative number/],
  [{ timeout: -1 }, /timeout must be a non-negative number/],
  [{ timeout: '100' }, /timeout must be a number, got a value of type string/],
  [{ mode: 'bogus' }, /mode must be 'exclusive' or 'shared'/],
  [{ mode: 1 }, /mode must be a string/],
  [{ lockfilePath: 7 }, /lockfilePath must be a string/],
  ['fast', /options must be an object/],
  [{ signal: 'stop' }, /signal must be an AbortSignal/],
  [{ timout: 100 }, /unknown option 'timout' \(did you mean 'timeout'\?\)/],
  [{ mode: 'shared', lockFilePath: 'x.lock' }, /unknown option 'lockFilePath' \(did you mean 'lockfilePath'\?\)/],
]

function assertNothingOnDisk(dir) {
  assert.deepEqual(fs.readdirSync(dir), [])
}

test('bad paths are EINVAL from every entry point', async (t) => {
  const dir = tempDir(t)
  const manager = new LockManager()
  for (const [path, code, message] of badPaths) {
    await assert.rejects(manager.acquire(path), { code, message })
    await assert.rejects(manager.withLock(path, () => {}), { code, message })
    await assert.rejects(manager.withReadLock(path, () => {}), { code, message })
    assert.throws(() => manager.tryAcquire(path), { code, message })
    assert.throws(() => manager.acquireSync(path), { code, message })
    assert.throws(() => manager.withLockSync(path, () => {}), { code, message })
  }
  assertNothingOnDisk(dir)
})

test('too-long paths keep the OS code ENAMETOOLONG and name the path', async (t) => {
  const dir = tempDir(t)
  const manager = new LockManager()
  for (const path of [join(dir, 'x'.repeat(300)), join(dir, 'y'.repeat(200), 'z'.repeat(200)).repeat(12)]) {
    await assert.rejects(manager.acquire(path), (err) => {
      assert.equal(err.code, 'ENAMETOOLONG')
      assert.ok(err.message.includes(path.slice(0, 40)))
      return true
    })
  }
  assertNothingOnDisk(dir)
})

test('a missing directory is ENOENT with the lock file path', async (t) => {
  const dir = tempDir(t)
  const manager = new LockManager()
  await assert.rejects(manager.acquire(join(dir, 'no', 'such', 'file')), (err) => {
    assert.equal(err.code, 'ENOENT')
    assert.equal(err.path, join(dir, 'no', 'such', 'file.lock'))
    return true
  })
  assertNothingOnDisk(dir)
})

test('bad options are EINVAL naming the option', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'a')
  const manager = new LockManager()
  for (const [options, pattern] of badOptions) {
    // Each names the lock it was for too, in the message and as `err.path`.
    const expected = { code: 'EINVAL', path: file, message: new RegExp(`${pattern.source}.*, for the lock on '${file}'`) }
    await assert.rejects(manager.acquire(file, options), expected)
    await assert.rejects(manager.withLock(file, () => {}, options), expected)
    if (options.signal === undefined) {
      assert.throws(() => manager.tryAcquire(file, options), expected)
      assert.throws(() => manager.acquireSync(file, options), expected)
    }
  }
  assertNothingOnDisk(dir)
})

test('withLock needs a function', async (t) => {
  const dir = tempDir(t)
  const manager = new LockManager()
  for (const fn of [undefined, null, 'fn', 5, {}]) {
    await assert.rejects(manager.withLock(join(dir, 'a'), fn), { code: 'EINVAL', path: join(dir, 'a'), message: /fn must be a function/ })
    assert.throws(() => manager.withLockSync(join(dir, 'a'), fn), { code: 'EINVAL' })
  }
  assertNothingOnDisk(dir)
})

test('bad constructor options are EINVAL naming the option', () => {
  const cases = [
    [{ stale: -1 }, /stale must be a finite, non-negative/],
    [{ stale: NaN }, /stale must be a finite, non-negative/],
    [{ heartbeat: 'often' }, /heartbeat must be a number/],
    [{ timeout: NaN }, /timeout must be a non-negative/],
    [{ lockDir: 5 }, /lockDir must be a string/],
    [{ lockDir: '' }, /lockDir must be a non-empty string/],
    [{ owner: 5 }, /owner must be a string/],
    [{ owner: '' }, /owner must be a non-empty string/],
    // 100 characters that JSON writes in six bytes each: too long for the record.
    [{ owner: '\u001b'.repeat(100) }, /owner must take at most 256 bytes as JSON, got 600/],
    [{ strategy: 'nfs' }, /strategy must be 'kernel', 'mkdir' or 'redis'/],
    [{ redis: 'redis://127.0.0.1:6379' }, /the redis option goes with strategy: 'redis'/],
    [{ strategy: 'redis', redis: { url: 5 } }, /url must be a string/],
    [{ stael: 5 }, /unknown option 'stael' \(did you mean 'stale'\?\)/],
    [{ owner: 'x', lockdir: '.' }, /unknown option 'lockdir' \(did you mean 'lockDir'\?\)/],
    ['options', /options must be an object/],
  ]
  for (const [options, message] of cases) {
    assert.throws(() => new LockManager(options), { code: 'EINVAL', message })
  }
})

test('a misspelt option of status, cleanupStaleLocks or forceRelease is EINVAL, and nothing is done', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'a')
  const manager = new LockManager()
  await assert.rejects(manager.status(file, { lockfilepath: 'x' }), { code: 'EINVAL', path: file, message: /unknown option 'lockfilepath' \(did you mean 'lockfilePath'\?\)/ })
  assert.throws(() => manager.statusSync(file, { lockfilepath: 'x' }), { code: 'EINVAL', path: file, message: /unknown option 'lockfilepath' \(did you mean 'lockfilePath'\?\)/ })
  await assert.rejects(manager.cleanupStaleLocks(dir, { dryrun: true }), { code: 'EINVAL', message: /unknown option 'dryrun' \(did you mean 'dryRun'\?\)/ })
  await assert.rejects(manager.forceRelease(file, { froce: true }), { code: 'EINVAL', path: file, message: /unknown option 'froce' \(did you mean 'force'\?\)/ })
  assertNothingOnDisk(dir)
})

test('releasing what is not held is typed', async () => {
  const manager = new LockManager()
  await assert.rejects(manager.release('no-such-lock-id-or-path'), { code: 'ENOTACQUIRED' })
  await assert.rejects(manager.release(42), { code: 'EINVAL' })
  await assert.rejects(manager.release(undefined), { code: 'EINVAL' })
})

test('a bad-input matrix over every public function: each case settles at once with a string code', async (t) => {
  const dir = tempDir(t)
  const lockwright = require('../index.js')
  const lockfile = require('../lib/proper-lockfile.js')
  const manager = new LockManager()
  const badPathsAll = [5, null, undefined, {}, '', 'a\0b', join(dir, 'x'.repeat(300)), join(dir, 'y'.repeat(200), 'z'.repeat(200)).repeat(12)]
  const badNumbers = [NaN, -1, '10', -Infinity]
  const calls = {
    'acquire': (p) => manager.acquire(p),
    'tryAcquire': (p) => manager.tryAcquire(p),
    'acquireSync': (p) => manager.acquireSync(p),
    'withLock': (p) => manager.withLock(p, () => {}),
    'withLockSync': (p) => manager.withLockSync(p, () => {}),
    'status': (p) => manager.status(p),
    'statusSync': (p) => manager.statusSync(p),
    'list': (p) => manager.list(p),
    'listSync': (p) => manager.listSync(p),
    'cleanupStaleLocks': (p) => manager.cleanupStaleLocks(p),
    'forceRelease': (p) => manager.forceRelease(p),
    'release': (p) => manager.release(p),
    'readJson': (p) => lockwright.readJson(p),
    'updateJson': (p) => lockwright.updateJson(p, () => ({})),
    'writeFileAtomic': (p) => lockwright.writeFileAtomic(p, 'x'),
    'writeFileAtomicSync': (p) => lockwright.writeFileAtomicSync(p, 'x'),
    'proper-lockfile lock': (p) => lockfile.lock(p),
    'proper-lockfile lockSync': (p) => lockfile.lockSync(p),
    'proper-lockfile unlock': (p) => lockfile.unlock(p),
    'proper-lockfile check': (p) => lockfile.check(p),
  }
  const outcomes = []
  for (const [name, call] of Object.entries(calls)) {
    for (const bad of badPathsAll) {
      // proper-lockfile resolves '' to the working directory and locks that; so does
      // the drop-in, on purpose.
      if (name.startsWith('proper-lockfile') && bad === '') continue
      let outcome
      try {
        outcome = await call(bad)
      } catch (err) {
        outcome = err
      }
      const label = `${name}(${typeof bad === 'string' ? JSON.stringify(bad.slice(0, 20)) : String(bad)})`
      assert.ok(outcome instanceof Error, `${label} succeeded`)
      assert.equal(typeof outcome.code, 'string', `${label}: ${outcome.message}`)
      outcomes.push(outcome.code)
    }
  }
  for (const timeout of badNumbers) {
    await assert.rejects(manager.acquire(join(dir, 'f'), { timeout }), (err) => typeof err.code === 'string')
    assert.throws(() => new LockManager({ stale: timeout }), { code: 'EINVAL' })
  }
  // Huge is not bad: a timeout of 2^64 ms waits (practically) forever, so it outlasts
  // a holder (read as 0, it would fail at once with ELOCKED).
  const holder = await new LockManager().acquire(join(dir, 'f'))
  const huge = manager.acquire(join(dir, 'f'), { timeout: 2 ** 64 })
  await holder.release()
  await (await huge).release()
  t.diagnostic(`codes seen: ${[...new Set(outcomes)].sort().join(', ')}`)
})

test('a grant whose JavaScript object cannot be made is released, not leaked', async (t) => {
  const file = join(tempDir(t), 'a')
  const manager = new LockManager()
  assert.throws(() => manager._native.acquireSync(file, undefined, () => { throw new Error('no object') }), /no object/)
  assert.throws(() => manager._native.tryAcquire(file, undefined, 'not a function'))
  assert.equal(manager._native.heldCount, 0)
  const lock = new LockManager().tryAcquire(file)
  assert.notEqual(lock, null)
  lock.releaseSync()
})
