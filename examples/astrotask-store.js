'use strict'
// An astrotask-style task store on lockwright: the store holds `.astrotask.lock` while
// open, labelled with who opened it; a second opener gets "in use by mcp-server
// (PID ...)"; `lockStatus()` is the lock-status command, and `{ force: true }` clears
// a crashed holder's lock. Run: node examples/astrotask-store.js

const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { once } = require('node:events')
const { LockManager } = require('../index.js')

class TaskStore {
  constructor(dir, processName) {
    this.dir = dir
    this.lockOptions = { lockfilePath: path.join(dir, '.astrotask.lock'), timeout: 0 }
    this.locks = new LockManager({ owner: processName })
  }

  async open() {
    try {
      this.lock = await this.locks.acquire(path.join(this.dir, 'tasks.json'), this.lockOptions)
    } catch (err) {
      if (err.code !== 'ELOCKED') throw err
      const [owner] = (await this.locks.status(path.join(this.dir, 'tasks.json'), this.lockOptions)).owners
      const who = owner ? `${owner.process} (PID ${owner.pid})` : 'another process'
      throw Object.assign(new Error(`Task store is in use by ${who}. Close it or run lock-status --force if it crashed.`), { code: 'ELOCKED' })
    }
  }

  async close() {
    await this.lock.release()
  }

  /** `astrotask lock-status [--force]` */
  async lockStatus({ force = false } = {}) {
    const target = path.join(this.dir, 'tasks.json')
    const status = await this.locks.status(target, this.lockOptions)
    if (force && !status.locked) await this.locks.forceRelease(target, this.lockOptions)
    return status
  }
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'astrotask-'))
  const server = fork(__filename, ['server', dir])
  await once(server, 'message') // the server has the store open

  const cli = new TaskStore(dir, 'astrotask-cli')
  let refused
  try {
    await cli.open()
  } catch (err) {
    refused = err.message
  }
  const expected = `Task store is in use by mcp-server (PID ${server.pid}).`
  if (!refused?.startsWith(expected)) throw new Error(`unexpected: ${refused}`)
  console.log(`astrotask-style store: ${refused}`)
  const held = await cli.lockStatus()
  console.log(`lock-status: locked=${held.locked} by ${held.owners[0].process} alive=${held.owners[0].alive}`)

  server.kill('SIGKILL') // the server crashes without closing the store
  await once(server, 'exit')
  const after = await cli.lockStatus({ force: true })
  console.log(`after the crash: locked=${after.locked} stale=${after.stale} (cleared with --force)`)
  await cli.open()
  await cli.close()
  fs.rmSync(dir, { recursive: true, force: true })
  if (held.locked !== true || after.locked !== false || after.stale !== true) process.exit(1)
}

if (process.argv[2] === 'server') {
  const store = new TaskStore(process.argv[3], 'mcp-server')
  store.open().then(() => {
    process.send('open')
    setInterval(() => {}, 1000)
  })
} else {
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
}
