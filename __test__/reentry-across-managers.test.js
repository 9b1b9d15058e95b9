'use strict'
// Re-entry follows the async context across managers: the module-level helpers
// inside a LockManager's withLock use the lock it holds instead of waiting for it.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
const lockwright = require('../index.js')
const { LockManager } = lockwright
const { tempDir, spawnAgent, waitFor } = require('./helpers.js')
const { writerIsWaiting } = require('./fixtures/writer-waiting.js')

test('module-level updateJson and readJson inside a LockManager\'s withLock re-enter its lock', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const manager = new LockManager()
  for (const timeout of [1000, Infinity]) {
    const written = await manager.withLock(file, async () => {
      await lockwright.updateJson(file, (data = { n: 0 }) => ({ n: data.n + 1 }), { timeout })
      return lockwright.readJson(file, { timeout })
    })
    assert.equal(written.n, timeout === Infinity ? 2 : 1)
  }
  // An exclusive lock inside a shared one held by another manager fails at once.
  await assert.rejects(
    manager.withReadLock(file, () => lockwright.updateJson(file, () => ({ n: 0 }), { timeout: Infinity })),
    { code: 'EDEADLK' },
  )
  assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { n: 2 })
})

test('module-level readJson inside withReadLock does not queue behind a waiting writer for its own lock', async (t) => {
  const file = join(tempDir(t), 'state.json')
  fs.writeFileSync(file, '{"n":1}')
  const writer = spawnAgent(t, { owner: 'writer' })
  const manager = new LockManager()
  let written
  const read = await manager.withReadLock(file, async () => {
    written = writer.call('updateJson', { path: file })
    await waitFor(() => writerIsWaiting(`${file}.lock`), { what: 'the writer to queue' })
    return lockwright.readJson(file, { timeout: 1000 })
  })
  assert.deepEqual(read, { n: 1 })
  assert.equal(await written, 1)
})
