'use strict'
// Mutual exclusion between real processes: nothing lost, nobody overlaps.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
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
