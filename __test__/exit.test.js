'use strict'
// Held locks are released, and their records cleared, however the process ends;
// signals still end the process as they would have.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { fork } = require('node:child_process')
const { once } = require('node:events')
const { join } = require('node:path')
const { LockManager } = require('../index.js')
const { tempDir, runScript } = require('./helpers.js')

const scenario = join(__dirname, 'fixtures', 'exit-scenario.js')

function assertReleased(file) {
  const record = JSON.parse(fs.readFileSync(`${file}.lock`, 'utf8'))
  assert.deepEqual(Object.keys(record), ['token'], 'the owner record was cleared')
  const lock = new LockManager().tryAcquire(file)
  assert.ok(lock, 'the lock is free')
  lock.releaseSync()
}

test('requiring lockwright installs no listeners; the first lock installs them', async (t) => {
  const file = join(tempDir(t), 'a')
  const run = await runScript('exit-scenario.js', [file, 'listeners'])
  assert.equal(run.code, 0, run.stderr)
  const counts = JSON.parse(run.stdout)
  assert.equal(counts.before, '0,0,0,0')
  assert.equal(counts.during, '1,1,1,1')
  // They stay: removing one could swallow a signal already on its way to it.
  assert.equal(counts.after, '1,1,1,1')
})

for (const [ending, expectedCode] of [['exit', 3], ['throw', 1], ['reject', 1], ['idle', 0]]) {
  test(`a lock held at ${ending === 'idle' ? 'the end of the event loop' : `process ${ending}`} is released and cleared`, async (t) => {
    const file = join(tempDir(t), 'a')
    const run = await runScript('exit-scenario.js', [file, ending])
    assert.equal(run.code, expectedCode, run.stderr)
    assertReleased(file)
  })
}

for (const [signal, number] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]]) {
  test(`${signal} releases the lock and still ends the process by ${signal} (exit ${128 + number} in a shell)`, async (t) => {
    const file = join(tempDir(t), 'a')
    const child = fork(scenario, [file, 'wait-for-signal'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    t.after(() => child.kill('SIGKILL'))
    await once(child, 'message')
    child.kill(signal)
    const [code, endedBy] = await once(child, 'exit')
    assert.equal(code, null)
    assert.equal(endedBy, signal)
    assertReleased(file)
  })
}

test('Ctrl-C in a shell gives exit status 130', { skip: process.platform === 'win32' }, async (t) => {
  const file = join(tempDir(t), 'a')
  const { spawn } = require('node:child_process')
  // `sh -c` reports a child killed by SIGINT as 130, as an interactive shell does.
  // The signal goes once the child says it holds the lock (<file>.ready): a record in
  // the lock file comes a moment before the handlers that clear it on a signal.
  const sh = spawn('sh', ['-c', `"${process.execPath}" "${scenario}" "${file}" wait-for-signal & pid=$!; while [ ! -e "${file}.ready" ]; do sleep 0.01; done; kill -INT $pid; wait $pid`], { stdio: 'inherit' })
  const [code] = await once(sh, 'exit')
  assert.equal(code, 130)
  assertReleased(file)
})

test('a signal that lands while locks come and go still ends the process', { timeout: 60_000 }, async (t) => {
  const file = join(tempDir(t), 'a')
  for (let i = 0; i < 20; i++) {
    const child = fork(join(__dirname, 'fixtures', 'lock-churn.js'), [file], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    t.after(() => child.kill('SIGKILL'))
    // Land the signal at a different point of the child's acquire/release loop each
    // time: after 1 to 7 of its cycles.
    for (let cycles = 0; cycles <= i % 7; cycles++) await once(child, 'message')
    child.kill('SIGTERM')
    const [, endedBy] = await once(child, 'exit')
    assert.equal(endedBy, 'SIGTERM')
  }
})

test('a signal-exit loaded and unloaded again does not make the application\'s handler look alone', async (t) => {
  const file = join(tempDir(t), 'a')
  const child = fork(join(__dirname, 'fixtures', 'signal-exit-unloaded.js'), [file], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  t.after(() => child.kill('SIGKILL'))
  await once(child, 'message')
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const [report] = await once(child, 'message')
  assert.deepEqual(report, { handled: 1, held: true })
  const [code, endedBy] = await exited
  assert.deepEqual([code, endedBy], [0, null])
})

test('with signal-exit loaded too (proper-lockfile does), SIGTERM still ends the process', async (t) => {
  const file = join(tempDir(t), 'a')
  const child = fork(join(__dirname, 'fixtures', 'signal-exit-neighbour.js'), [file], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  t.after(() => child.kill('SIGKILL'))
  await once(child, 'message')
  child.kill('SIGTERM')
  const [, endedBy] = await once(child, 'exit')
  assert.equal(endedBy, 'SIGTERM')
  assertReleased(file)
})
