'use strict'
// Mutual exclusion between real processes: nothing lost, nobody overlaps.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
const { LockManager } = require('../index.js')
const { tempDir, runScript } = require('./helpers.js')

async function runCounters(t, processes, rounds, mode) {
  const dir = tempDir(t)
  fs.writeFileSync(join(dir, 'counter.txt'), '0')
  const runs = await Promise.all(
    Array.from({ length: processes }, () => runScript('counter-worker.js', [dir, String(rounds), mode])),
  )
  for (const run of runs) assert.equal(run.code, 0, run.stderr)
  assert.equal(Number(fs.readFileSync(join(dir, 'counter.txt'), 'utf8')), processes * rounds)
  assert.equal(fs.existsSync(join(dir, 'inside.marker')), false)
}

test('4 processes x 250 async increments under withLock lose nothing', async (t) => {
  await runCounters(t, 4, 250, 'async')
})

test('3 processes x 150 increments under withLockSync lose nothing', async (t) => {
  await runCounters(t, 3, 150, 'sync')
})

test('async and sync holders in different processes exclude each other', async (t) => {
  const dir = tempDir(t)
  fs.writeFileSync(join(dir, 'counter.txt'), '0')
  const runs = await Promise.all([
    runScript('counter-worker.js', [dir, '150', 'async']),
    runScript('counter-worker.js', [dir, '150', 'sync']),
    runScript('counter-worker.js', [dir, '150', 'async']),
  ])
  for (const run of runs) assert.equal(run.code, 0, run.stderr)
  assert.equal(Number(fs.readFileSync(join(dir, 'counter.txt'), 'utf8')), 450)
})

test('a release whose unlock fails closes the lock file, so the lock is free for others', async (t) => {
  const { spawnSync, spawn } = require('node:child_process')
  const { once } = require('node:events')
  const dir = tempDir(t)
  const shim = join(dir, 'unlock-fails.so')
  const cc = spawnSync('cc', ['-shared', '-fPIC', '-o', shim, join(__dirname, 'fixtures', 'unlock-fails.c'), '-ldl'])
  if (cc.error || cc.status !== 0) {
    if (process.env.CI === 'true') assert.fail(`cc failed: ${cc.stderr}`)
    t.skip('needs a C compiler for the LD_PRELOAD shim')
    return
  }
  const file = join(dir, 'state.json')
  const code = `const { LockManager } = require(${JSON.stringify(join(__dirname, '..'))});
    const lock = new LockManager().acquireSync(${JSON.stringify(file)}); lock.releaseSync();
    console.log('released'); process.stdin.resume()`
  const child = spawn(process.execPath, ['-e', code], { env: { ...process.env, LD_PRELOAD: shim }, stdio: ['pipe', 'pipe', 'inherit'] })
  t.after(() => child.kill('SIGKILL'))
  const [line] = await once(child.stdout, 'data')
  assert.equal(String(line).trim(), 'released')
  // The holder's process lives on: had its descriptor been kept for reuse after the
  // failed unlock, its lock would still be held.
  const lock = new LockManager().tryAcquire(file)
  assert.notEqual(lock, null, 'the lock stayed held by a descriptor kept after a failed unlock')
  lock.releaseSync()
})
