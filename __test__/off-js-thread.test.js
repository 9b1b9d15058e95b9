'use strict'
// cleanupStaleLocks and forceRelease return Promises: their scans and process
// look-ups run on the threadpool, not on the JS thread before the call returns.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const { join } = require('node:path')
const { tempDir, spawnAgent, runScript } = require('./helpers.js')

for (const what of ['cleanup', 'forceRelease']) {
  test(`${what} scans and looks up processes off the JS thread`, { skip: process.platform === 'win32' }, async (t) => {
    const dir = tempDir(t)
    const file = join(dir, 'state.json')
    const dead = spawnAgent(t, { owner: 'crashed' })
    await dead.call('acquire', { path: file })
    dead.child.kill('SIGKILL')
    await dead.exited
    const fifo = join(dir, 'pool.fifo')
    execFileSync('mkfifo', [fifo])
    const run = await runScript('threadpool-held.js', [what, what === 'cleanup' ? dir : file, fifo], { env: { UV_THREADPOOL_SIZE: '1' } })
    assert.equal(run.code, 0, run.stderr)
    const report = JSON.parse(run.stdout)
    assert.equal(report.recordLeftOnReturn, true, 'the sweep ran on the JS thread before the call returned')
    assert.equal(report.recordLeftAfter, false)
    if (what === 'cleanup') assert.deepEqual(report.result.cleared, [`${file}.lock`])
    else assert.equal(report.result, true)
  })
}
