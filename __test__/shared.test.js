'use strict'
// Shared (read) locks across processes, and the writer-preference policy.

const test = require('node:test')
const assert = require('node:assert/strict')
const { join } = require('node:path')
const { LockManager } = require('../index.js')
const { tempDir, spawnAgent, waitFor, track } = require('./helpers.js')
const { writerIsWaiting } = require('./fixtures/writer-waiting.js')

test('readers in different processes hold the lock together', async (t) => {
  const file = join(tempDir(t), 'index.json')
  const [a, b] = [spawnAgent(t, { owner: 'reader-a' }), spawnAgent(t, { owner: 'reader-b' })]
  const ra = await a.call('acquire', { path: file, options: { mode: 'shared', timeout: 0 } })
  const rb = await b.call('acquire', { path: file, options: { mode: 'shared', timeout: 0 } })
  assert.equal(ra.mode, 'shared')
  assert.equal(rb.mode, 'shared')
  const writer = new LockManager({ owner: 'writer' })
  await assert.rejects(writer.acquire(file, { timeout: 0 }), (err) => {
    assert.equal(err.code, 'ELOCKED')
    assert.match(err.message, /2 readers: reader-(a|b) \(PID \d+.*reader-(a|b) \(PID \d+/)
    return true
  })
})

test('a writer waits for every reader, then gets the lock', async (t) => {
  const file = join(tempDir(t), 'index.json')
  const [a, b] = [spawnAgent(t), spawnAgent(t)]
  const ra = await a.call('acquire', { path: file, options: { mode: 'shared' } })
  const rb = await b.call('acquire', { path: file, options: { mode: 'shared' } })
  const writer = new LockManager({ owner: 'writer' })
  const waiting = track(writer.acquire(file, { timeout: 20_000 }))
  await waitFor(() => writerIsWaiting(`${file}.lock`), { what: 'the writer to queue' })
  await a.call('release', { lockId: ra.id })
  assert.equal(waiting.settled, false, 'one reader still holds the lock')
  await b.call('release', { lockId: rb.id })
  const lock = await waiting.promise
  assert.equal(lock.mode, 'exclusive')
  await lock.release()
})

test('a waiting writer holds back new readers, so readers cannot starve it', async (t) => {
  const file = join(tempDir(t), 'index.json')
  const [a, b] = [spawnAgent(t), spawnAgent(t)]
  const ra = await a.call('acquire', { path: file, options: { mode: 'shared' } })
  const writer = new LockManager({ owner: 'writer' })
  const waiting = track(writer.acquire(file, { timeout: 20_000 }))
  await waitFor(() => writerIsWaiting(`${file}.lock`), { what: 'the writer to queue' })
  // The lock is only held shared, yet a new reader is turned away while the writer waits.
  await assert.rejects(b.call('acquire', { path: file, options: { mode: 'shared', timeout: 0 } }), { code: 'ELOCKED' })
  const late = track(b.call('acquire', { path: file, options: { mode: 'shared', timeout: 20_000 } }))
  await a.call('release', { lockId: ra.id })
  const lock = await waiting.promise
  assert.equal(lock.mode, 'exclusive')
  // b answers in order: had the late reader got in, that reply would come before this.
  await b.call('ping')
  assert.equal(late.settled, false)
  await lock.release()
  assert.equal((await late.promise).mode, 'shared')
})

test('a writer gets in while two processes keep taking turns reading', async (t) => {
  const file = join(tempDir(t), 'index.json')
  const readers = [spawnAgent(t), spawnAgent(t)]
  // Each reader asks again before the other releases, so the lock is never free of
  // readers unless they step aside for the queued writer.
  let held = await readers[0].call('acquire', { path: file, options: { mode: 'shared' } })
  let holder = 0
  const writer = new LockManager({ owner: 'writer' })
  const writing = track(writer.acquire(file, { timeout: 30_000 }))
  let turns = 0
  let reply
  while (!writing.settled) {
    const next = 1 - holder
    reply = track(readers[next].call('acquire', { path: file, options: { mode: 'shared', timeout: 30_000 } }))
    await readers[holder].call('release', { lockId: held.id })
    // Either the other reader gets in or the writer does; the writer must, eventually.
    await Promise.race([reply.promise, writing.promise])
    if (writing.settled) break
    held = await reply.promise
    holder = next
    turns++
  }
  const lock = await writing.promise
  assert.equal(lock.mode, 'exclusive')
  assert.equal(reply.settled, false, 'the queued reader waits behind the writer')
  await lock.release()
  assert.equal((await reply.promise).mode, 'shared')
  t.diagnostic(`reader turns before the writer got in: ${turns}`)
})
