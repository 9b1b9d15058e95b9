'use strict'
// `lockwright with` hands the lock to its command, as flock(1) does: the command
// keeps it when only the wrapper dies.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { spawn } = require('node:child_process')
const { once } = require('node:events')
const { join } = require('node:path')
const { LockManager } = require('../index.js')
const { tempDir, waitFor, runCommand } = require('./helpers.js')

const CLI = join(__dirname, '..', 'bin', 'lockwright.js')

test('with: the command keeps the lock when its wrapper is SIGKILLed, until it ends', { skip: process.platform === 'win32' }, async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  const [started, go] = [join(dir, 'started'), join(dir, 'go')]
  // The command runs until the test creates `go`, or removes its directory (a failed
  // test must not leave it running); polling files is its only signal.
  const command = `const fs = require('fs'); fs.writeFileSync(${JSON.stringify(started)}, '');
    setInterval(() => (fs.existsSync(${JSON.stringify(go)}) || !fs.existsSync(${JSON.stringify(started)})) && process.exit(0), 10)`
  const wrapper = spawn(process.execPath, [CLI, 'with', file, '--', process.execPath, '-e', command], { stdio: 'ignore' })
  await waitFor(() => fs.existsSync(started), { what: 'the command to start' })
  wrapper.kill('SIGKILL')
  await once(wrapper, 'exit')

  const manager = new LockManager({ owner: 'second' })
  assert.equal(manager.tryAcquire(file), null, 'the lock went with the wrapper while its command still runs')
  assert.equal(manager.statusSync(file).locked, true)
  const second = await runCommand(process.execPath, [CLI, 'with', file, '--timeout', '0', '--', 'true'])
  assert.equal(second.code, 3, 'a second `lockwright with` ran beside the command')

  fs.writeFileSync(go, '')
  // The command's exit closes the last descriptor of the lock: the waiter gets it.
  const lock = await manager.acquire(file, { timeout: 30_000 })
  await lock.release()
})

test('with: a normal end still clears the record and leaves the command no lock behind', { skip: process.platform === 'win32' }, async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  // Whatever the command leaves running on the descriptor it inherited (here a loop
  // that ends with the test's directory), the wrapper's release unlocks it.
  const linger = `while [ -d '${dir}' ]; do sleep 0.2; done`
  const run = await runCommand(process.execPath, [CLI, 'with', file, '--', 'sh', '-c', `(${linger}) <&- >&- 2>&- & exit 0`])
  assert.equal(run.code, 0, run.stderr)
  const status = new LockManager().statusSync(file)
  assert.equal(status.locked, false)
  assert.deepEqual(status.owners, [])
  const lock = new LockManager().tryAcquire(file)
  assert.ok(lock, 'a background process the command left kept the lock')
  lock.releaseSync()
})
