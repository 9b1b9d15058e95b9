'use strict'
// How waiting behaves inside one process: it must not starve Node's own I/O, must
// not grow threads with the number of waiters, and must clean up after itself.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
const { spawn } = require('node:child_process')
const { once } = require('node:events')
const { Worker } = require('node:worker_threads')
const { LockManager } = require('../index.js')
const { tempDir, spawnAgent, runScript } = require('./helpers.js')

function threadCount() {
  return fs.readdirSync('/proc/self/task').length
}

test('32 waiters do not delay fs.promises.readFile', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  fs.writeFileSync(file, '{"ok":true}')
  const agent = spawnAgent(t)
  const held = await agent.call('acquire', { path: file })
  const managers = Array.from({ length: 32 }, () => new LockManager())
  const waits = managers.map((m) => m.withLock(file, async () => {}, { timeout: Infinity }))
  // With waiters parked on libuv's threadpool (4 threads) this read would never run
  // before the release, and the release below waits for it.
  const reads = await Promise.all(Array.from({ length: 8 }, () => fs.promises.readFile(file, 'utf8')))
  assert.ok(reads.every((text) => text === '{"ok":true}'))
  await agent.call('release', { lockId: held.id })
  await Promise.all(waits)
})

test('1000 waiters on 1000 lock files add no threads, and are all served', { skip: process.platform !== 'linux' }, async (t) => {
  const dir = tempDir(t)
  const files = Array.from({ length: 1000 }, (_, i) => join(dir, `f${i}`))
  const holder = new LockManager({ owner: 'holder' })
  // Warm up: the runtime and the watcher start with the first wait.
  const warm = await holder.acquire(join(dir, 'warm'))
  const warmWait = new LockManager().acquire(join(dir, 'warm'))
  await warm.release()
  await (await warmWait).release()

  const held = files.map((f) => holder.tryAcquire(f))
  const before = threadCount()
  const waiters = Array.from({ length: 1000 }, (_, i) => new LockManager().acquire(files[i], { timeout: Infinity }))
  const during = threadCount()
  assert.ok(during - before <= 2, `threads grew from ${before} to ${during} with 1000 waiters`)
  for (const lock of held) await lock.release()
  // Each waiter takes its file in turn and passes it on.
  await Promise.all(waiters.map((w) => w.then((lock) => lock.release())))
  assert.ok(threadCount() - before <= 2)
})

test('a timed-out or aborted wait leaves no watch, queue or lock behind', async (t) => {
  const file = join(tempDir(t), 'a')
  const agent = spawnAgent(t)
  const held = await agent.call('acquire', { path: file })
  const manager = new LockManager()
  for (let i = 0; i < 20; i++) {
    await assert.rejects(manager.acquire(file, { timeout: 1 }), { code: 'ETIMEOUT' })
    const controller = new AbortController()
    const wait = manager.acquire(file, { signal: controller.signal, timeout: Infinity })
    controller.abort()
    await assert.rejects(wait, { code: 'ABORT_ERR' })
  }
  await agent.call('release', { lockId: held.id })
  // The queue for this file is free again: an immediate attempt is not held back.
  const lock = manager.tryAcquire(file)
  assert.ok(lock)
  await lock.release()
})

// A wait on the JS thread runs only when its thread does. If that thread is busy in
// synchronous work past the wait's timeout, the wait has timed out by the time it
// runs again: it must say so, not take the lock (free by then) long after its caller
// gave up on it.
test('a wait whose thread was busy past its timeout times out, even if the lock came free meanwhile', async (t) => {
  const file = join(tempDir(t), 'busy')
  const agent = spawnAgent(t)
  const held = await agent.call('acquire', { path: file })
  const manager = new LockManager()
  const timeout = 100
  const started = performance.now()
  const wait = manager.acquire(file, { timeout })
  const released = agent.call('release', { lockId: held.id })
  // This thread stays busy until the agent has released (its record says so) and the
  // wait's timeout has passed: the lock is free when the wait runs again.
  const lockFile = `${file}.lock`
  while (fs.readFileSync(lockFile, 'utf8').includes('"pid"') || performance.now() - started < 3 * timeout) {}
  await released
  await assert.rejects(wait, { code: 'ETIMEOUT' })
  // Nothing is held, and the queue is free.
  const lock = manager.tryAcquire(file)
  assert.ok(lock)
  await lock.release()
})

// Waits in one process for one file take turns. A wait whose thread is busy cannot
// end itself at its deadline, so the waits behind it (here a worker thread's) count
// its place as gone then, instead of waiting for that thread to run again.
test('a wait behind one whose thread is busy past its timeout gets the lock meanwhile', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'line')
  const granted = join(dir, 'worker-granted')
  const agent = spawnAgent(t)
  const held = await agent.call('acquire', { path: file })
  const manager = new LockManager()
  const timedOut = assert.rejects(manager.acquire(file, { timeout: 100 }), { code: 'ETIMEOUT' })
  // Its wait joins the line behind ours when its thread has started, which it does
  // while this one is busy.
  const worker = new Worker(
    `const { LockManager } = require(${JSON.stringify(join(__dirname, '..', 'index.js'))})
     const { parentPort, workerData } = require('node:worker_threads')
     new LockManager().acquire(workerData.file, { timeout: 20000 }).then(async (lock) => {
       require('node:fs').writeFileSync(workerData.granted, 'yes')
       await lock.release()
     }, (err) => parentPort.postMessage(err.code))`,
    { eval: true, workerData: { file, granted } },
  )
  t.after(() => worker.terminate())
  const released = agent.call('release', { lockId: held.id })
  // This thread stays busy until the worker holds the lock, or 15 s (a watchdog).
  const started = performance.now()
  while (!fs.existsSync(granted) && performance.now() - started < 15_000) {}
  assert.ok(fs.existsSync(granted), 'the worker got the lock while this thread was busy')
  await released
  await timedOut
  await once(worker, 'exit')
})

for (const where of ['the JS thread', 'the wait runtime']) {
  test(`waits on ${where} end every way (granted, timed out, aborted, closed) and keep their place`, async (t) => {
    const asBun = where === 'the wait runtime'
    const run = await runScript('wait-scenarios.js', [tempDir(t), ...(asBun ? ['as-bun'] : [])])
    assert.equal(run.code, 0, run.stderr)
    assert.deepEqual(JSON.parse(run.stdout), {
      granted: 'granted',
      jumpedTheQueue: false,
      firstInLine: 'granted',
      timeout: 'ETIMEOUT',
      abort: 'ABORT_ERR',
      close: 'ABORT_ERR',
      onJsThread: process.platform === 'linux' && !asBun,
    })
  })
}

// A wait on the JS thread is settled by the event loop's own callback, in the turn
// that saw the release. The child below has nothing else to keep it alive (no IPC
// channel, no timer): its pending waits must, as a pending fs call would. Its first
// grant's reaction starts the second wait from inside that callback.
test('a pending wait keeps its process alive, and a wait settled by the loop can start another', async (t) => {
  const dir = tempDir(t)
  const [first, second] = ['first.json', 'second.json'].map((name) => join(dir, name))
  const manager = new LockManager()
  t.after(() => manager.close())
  const held = { first: await manager.acquire(first), second: await manager.acquire(second) }
  const script = `
    const { LockManager } = require(${JSON.stringify(join(__dirname, '..', 'index.js'))})
    const manager = new LockManager()
    manager.acquire(${JSON.stringify(first)}, { timeout: Infinity }).then(async (a) => {
      console.log('granted first')
      const b = await manager.acquire(${JSON.stringify(second)}, { timeout: Infinity })
      console.log('granted second')
      a.release()
      b.release()
    })
    console.log('waiting')
  `
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stderr.on('data', (d) => (stderr += d))
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)))
  child.stdout.on('data', (d) => {
    stdout += d
    // Each release answers the line that says the child waits for it.
    if (stdout.includes('waiting') && !held.first.released) held.first.release()
    if (stdout.includes('granted first') && !held.second.released) held.second.release()
  })
  assert.equal(await exited, 0, stderr)
  assert.deepEqual(stdout.trim().split('\n'), ['waiting', 'granted first', 'granted second'])
})
