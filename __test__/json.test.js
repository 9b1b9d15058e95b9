'use strict'
// Atomic writes and locked JSON read-modify-write.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { fork, spawn } = require('node:child_process')
const { once } = require('node:events')
const { join } = require('node:path')
const { LockManager, writeFileAtomic, writeFileAtomicSync, readJson, updateJson } = require('../index.js')
const { tempDir, spawnAgent, waitFor } = require('./helpers.js')
const { writerIsWaiting } = require('./fixtures/writer-waiting.js')

test('writeFileAtomic replaces content, keeps the mode and leaves no temp file', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  await writeFileAtomic(file, 'one', { mode: 0o640 })
  assert.equal(fs.statSync(file).mode & 0o777, 0o640 & ~process.umask())
  fs.chmodSync(file, 0o600)
  await writeFileAtomic(file, Buffer.from('two'))
  writeFileAtomicSync(file, new Uint8Array([116, 104, 114, 101, 101]), { fsync: false })
  assert.equal(fs.readFileSync(file, 'utf8'), 'three')
  assert.equal(fs.statSync(file).mode & 0o777, 0o600)
  assert.deepEqual(fs.readdirSync(dir), ['state.json'])
})

test('writeFileAtomic: typed errors, nothing left behind', async (t) => {
  const dir = tempDir(t)
  await assert.rejects(writeFileAtomic(join(dir, 'no', 'file'), 'x'), { code: 'ENOENT' })
  await assert.rejects(writeFileAtomic(join(dir, 'f'), 42), { code: 'EINVAL', message: /data must be/ })
  await assert.rejects(writeFileAtomic(join(dir, 'f'), 'x', { mode: -1 }), { code: 'EINVAL', message: /mode/ })
  await assert.rejects(writeFileAtomic(join(dir, 'f'), 'x', { fsync: 'yes' }), { code: 'EINVAL', message: /fsync must be a boolean/ })
  await assert.rejects(writeFileAtomic('', 'x'), { code: 'EINVAL' })
  assert.deepEqual(fs.readdirSync(dir), [])
})

test('writeFileAtomic never touches another writer\'s temp file, whatever its name says', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  // A temp file named by a PID that is dead here may be another host's or container's,
  // still being written.
  const crashed = spawn(process.execPath, ['-e', '0'])
  await once(crashed, 'exit')
  const theirs = join(dir, `.state.json.lockwright-${crashed.pid}-0.tmp`)
  fs.writeFileSync(theirs, '{"half":')
  await writeFileAtomic(file, '{}')
  assert.deepEqual(fs.readdirSync(dir).sort(), [`.state.json.lockwright-${crashed.pid}-0.tmp`, 'state.json'])
  assert.equal(fs.readFileSync(theirs, 'utf8'), '{"half":')
})

test('updateJson: missing file, sync and async fn, in-place changes, backup', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'tasks.json')
  let seen = 'unset'
  assert.deepEqual(await updateJson(file, (data) => { seen = data; return { tasks: [] } }), { tasks: [] })
  assert.equal(seen, undefined)
  await updateJson(file, async (data) => {
    await new Promise((resolve) => setImmediate(resolve))
    data.tasks.push('a') // changed in place, nothing returned
  }, { backup: true })
  assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { tasks: ['a'] })
  assert.deepEqual(JSON.parse(fs.readFileSync(`${file}.bak`, 'utf8')), { tasks: [] })
  assert.deepEqual(await readJson(file), { tasks: ['a'] })
  assert.equal(await readJson(join(dir, 'missing.json')), undefined)
  assert.equal(await updateJson(join(dir, 'untouched.json'), () => undefined), undefined)
  assert.equal(fs.existsSync(join(dir, 'untouched.json')), false)
})

test('invalid JSON is EJSONPARSE naming the file, and the file is left untouched', async (t) => {
  const file = join(tempDir(t), 'broken.json')
  fs.writeFileSync(file, '{"tasks": [')
  let called = false
  await assert.rejects(updateJson(file, () => { called = true }), (err) => {
    assert.equal(err.code, 'EJSONPARSE')
    assert.equal(err.path, file)
    assert.ok(err.message.includes(file))
    return true
  })
  assert.equal(called, false)
  assert.equal(fs.readFileSync(file, 'utf8'), '{"tasks": [')
  await assert.rejects(readJson(file), { code: 'EJSONPARSE' })
  await assert.rejects(updateJson(file, 'not a function'), { code: 'EINVAL' })
})

test('updateJson refuses what would not be JSON, and readJson works with the mkdir strategy', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'tasks.json')
  fs.writeFileSync(file, '{"n":1}')
  for (const returned of [() => {}, Symbol('s')]) {
    await assert.rejects(updateJson(file, () => returned), { code: 'EINVAL', path: file })
  }
  await assert.rejects(updateJson(file, (d) => d, { space: '--' }), { code: 'EINVAL', path: file })
  // JSON.stringify throws a TypeError with no code for these; updateJson's is EINVAL.
  const circular = { n: 2 }
  circular.self = circular
  await assert.rejects(updateJson(file, () => circular), { code: 'EINVAL', path: file, message: /circular/i })
  await assert.rejects(updateJson(file, () => ({ n: 2n })), { code: 'EINVAL', path: file, message: /BigInt/ })
  await assert.rejects(updateJson(file, (d) => d, { bakup: true }), { code: 'EINVAL', path: file, message: /unknown option 'bakup' \(did you mean 'backup'\?\)/ })
  assert.equal(fs.readFileSync(file, 'utf8'), '{"n":1}')
  await updateJson(file, (d) => ({ n: d.n + 1 }), { space: '\t' })
  assert.equal(fs.readFileSync(file, 'utf8'), '{\n\t"n": 2\n}\n')
  const other = join(dir, 'other.json') // one strategy per file
  fs.writeFileSync(other, '{"n":2}')
  const mkdir = new LockManager({ strategy: 'mkdir' })
  assert.deepEqual(await mkdir.readJson(other), { n: 2 })
  assert.deepEqual(await mkdir.updateJson(other, (d) => ({ n: d.n + 1 })), { n: 3 })
})

test('a batch of updateJson calls inside one withLock re-enters; other processes wait for the batch', async (t) => {
  const file = join(tempDir(t), 'tasks.json')
  const manager = new LockManager({ owner: 'batch' })
  const other = spawnAgent(t)
  let otherSaw
  await manager.withLock(file, async () => {
    // The other process queues first; the whole batch must still run before it.
    otherSaw = other.call('updateJson', { path: file })
    await waitFor(() => writerIsWaiting(`${file}.lock`), { what: 'the other process to queue' })
    for (let i = 0; i < 5; i++) await manager.updateJson(file, (d) => ({ n: (d?.n ?? 0) + 1 }))
    assert.deepEqual(await manager.readJson(file), { n: 5 })
  })
  assert.equal(await otherSaw, 5)
  assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { n: 6 })
})

test('SIGKILL in the middle of updateJson, again and again: the file always parses and never goes back', async (t) => {
  const file = join(tempDir(t), 'counter.json')
  let last = 0
  for (let round = 0; round < 25; round++) {
    const child = fork(join(__dirname, 'fixtures', 'json-updater.js'), [file], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    t.after(() => child.kill('SIGKILL'))
    // Let it get going, then kill it at a different point of its loop each round.
    await once(child, 'message')
    for (let i = 0; i < round % 4; i++) await new Promise((resolve) => setImmediate(resolve))
    child.kill('SIGKILL')
    await once(child, 'exit')
    const state = JSON.parse(fs.readFileSync(file, 'utf8')) // throws if torn
    assert.ok(state.count >= last, `count went back from ${last} to ${state.count}`)
    last = state.count
  }
  assert.ok(last >= 25 * 5)
})

test('updateJson calls started side by side inside one withLock take turns and all finish inside it', async (t) => {
  const file = join(tempDir(t), 'tasks.json')
  fs.writeFileSync(file, '{"n":0}')
  const manager = new LockManager()
  // Each update yields between its read and its write, where a sibling could read.
  const addOne = async (d) => {
    await new Promise((resolve) => setImmediate(resolve))
    return { n: d.n + 1 }
  }
  let started
  await manager.withLock(file, async () => {
    await Promise.all(Array.from({ length: 10 }, () => manager.updateJson(file, addOne)))
    // Not awaited: the lock is still released only after it is done.
    started = manager.updateJson(file, async (d) => {
      // Nested inside a re-entered call: its own turn, not behind itself.
      await manager.updateJson(file, addOne)
      return { n: (await manager.readJson(file)).n + 1 }
    })
  })
  assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { n: 12 })
  assert.equal(manager._native.heldCount, 0)
  await started
})

test('an async call made inside withLockSync takes the lock anew once the sync holder lets go', async (t) => {
  const file = join(tempDir(t), 'tasks.json')
  fs.writeFileSync(file, '{"n":0}')
  const manager = new LockManager()
  const outsider = new LockManager()
  // Runs only while somebody holds the lock: the outsider cannot get it.
  const addOneHeld = (d) => {
    assert.equal(outsider.tryAcquire(file), null)
    return { n: d.n + 1 }
  }
  let queued
  // Inside withLockSync nothing async can run before the release.
  manager.withLockSync(file, () => {
    queued = manager.updateJson(file, addOneHeld)
  })
  await queued
  assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { n: 1 })
  assert.equal(manager._native.heldCount, 0)
})
