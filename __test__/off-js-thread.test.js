'use strict'
// cleanupStaleLocks, forceRelease, status and list return Promises: their scans and
// process look-ups run on the threadpool, not on the JS thread before the call returns.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const { join } = require('node:path')
const { tempDir, spawnAgent, runScript } = require('./helpers.js')

for (const what of ['cleanup', 'forceRelease', 'status', 'list']) {
  test(`${what} scans and looks up processes off the JS thread`, { skip: process.platform === 'win32' }, async (t) => {
    const dir = tempDir(t)
    const file = join(dir, 'state.json')
    const dead = spawnAgent(t, { owner: 'crashed' })
    await dead.call('acquire', { path: file })
    dead.child.kill('SIGKILL')
    await dead.exited
    const fifo = join(dir, 'pool.fifo')
    execFileSync('mkfifo', [fifo])
    const onDir = what === 'cleanup' || what === 'list'
    const run = await runScript('threadpool-held.js', [what, onDir ? dir : file, fifo], { env: { UV_THREADPOOL_SIZE: '1' } })
    assert.equal(run.code, 0, run.stderr)
    const report = JSON.parse(run.stdout)
    assert.equal(report.recordLeftOnReturn, true, 'the sweep ran on the JS thread before the call returned')
    assert.equal(report.settledWhileBusy, false, 'it settled while the threadpool was busy: the work ran on the JS thread')
    const { result } = report
    if (what === 'cleanup') assert.deepEqual(result.cleared, [`${file}.lock`])
    if (what === 'forceRelease') assert.equal(result, true)
    if (what === 'status') assert.deepEqual([result.locked, result.stale, result.owners[0].process, result.owners[0].alive], [false, true, 'crashed', false])
    if (what === 'list') assert.deepEqual(result.map((s) => [s.lockfilePath, s.stale]), [[`${file}.lock`, true]])
    assert.equal(report.recordLeftAfter, what === 'status' || what === 'list')
  })
}
