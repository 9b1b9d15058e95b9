'use strict'
// The mkdir strategy and the drop-in in shared and hostile places (#11, #12): other
// users in /tmp and in group folders, holders in other PID namespaces, files planted
// beside the lock, a kernel-strategy lock file where the lock directory should be.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
const { spawnSync } = require('node:child_process')
const lockfile = require('lockwright/proper-lockfile')
const { LockManager } = require('../lockwright.js')
const { tempDir, spawnAgent } = require('./helpers.js')

const OURS = 'lockwright/proper-lockfile'
const isRoot = process.getuid?.() === 0
const has = (command) => spawnSync(command, ['--version']).status === 0
const needsRoot = (command) => (!isRoot || !has(command)) && `needs root and ${command}`

function targetIn(dir) {
  const file = join(dir, 'state.json')
  fs.writeFileSync(file, '{}')
  fs.chmodSync(file, 0o666)
  return file
}

test('a live holder in another PID namespace keeps its lock: its PID means nothing here', { skip: needsRoot('unshare') }, async (t) => {
  const dir = tempDir(t)
  const file = targetIn(dir)
  // A container sharing the host name but not the PID namespace: the holder is PID 1
  // there, and PID 1 here is another, live, process.
  const wrap = ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child']
  const holder = spawnAgent(t, { script: 'pl-agent.js', args: [OURS], wrap })
  await holder.call('lock', { file, options: { stale: 60_000 } })
  assert.equal(await lockfile.check(file, { stale: 60_000 }), true)
  await assert.rejects(lockfile.lock(file, { stale: 60_000 }), { code: 'ELOCKED' })
  const status = new LockManager({ strategy: 'mkdir', stale: 60_000 }).status(file)
  assert.deepEqual([status.locked, status.stale, status.owners[0].pid, status.owners[0].alive], [true, false, 1, true])

  // The kernel strategy's status judges owners the same way.
  const kernelHolder = spawnAgent(t, { wrap })
  const other = join(dir, 'other.json')
  await kernelHolder.call('acquire', { path: other })
  const kernel = new LockManager().status(other)
  assert.deepEqual([kernel.locked, kernel.stale, kernel.owners[0].pid, kernel.owners[0].alive], [true, false, 1, true])

  // Once it dies, its lock goes stale by its mtime, as proper-lockfile's would.
  const mortal = spawnAgent(t, { script: 'pl-agent.js', args: [OURS], wrap })
  const third = targetIn(tempDir(t))
  await mortal.call('lock', { file: third, options: { stale: 2000 } })
  mortal.child.kill('SIGKILL')
  await mortal.exited
  const release = await lockfile.lock(third, { stale: 2000, retries: { retries: 40, minTimeout: 100, factor: 1 } })
  await release()
})
