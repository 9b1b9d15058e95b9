'use strict'
// The shared resource all test files increment, used by Jest's and Vitest's suites.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const ROUNDS = 40
const FILES = 3

// One directory per checkout: suites of two checkouts running at once must not share it.
const RUN = process.env.LOCKWRIGHT_SUITE_RUN ?? require('node:crypto').createHash('sha256').update(__dirname).digest('hex').slice(0, 12)

function sharedPaths(runner) {
  const dir = path.join(os.tmpdir(), `lockwright-${runner}-shared-${RUN}`)
  return { dir, counter: path.join(dir, 'counter.json'), marker: path.join(dir, 'inside.marker') }
}

function prepare(runner) {
  const { dir, counter } = sharedPaths(runner)
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(counter, JSON.stringify({ count: 0, workers: [] }))
}

/** ROUNDS locked read-modify-writes, with a marker that collides on any overlap. */
async function incrementUnderLock(runner, LockManager) {
  const { counter, marker } = sharedPaths(runner)
  const manager = new LockManager({ owner: `${runner}-worker-${process.pid}` })
  for (let i = 0; i < ROUNDS; i++) {
    await manager.withLock(counter, async () => {
      fs.writeFileSync(marker, String(process.pid), { flag: 'wx' })
      const state = JSON.parse(fs.readFileSync(counter, 'utf8'))
      await new Promise((resolve) => setImmediate(resolve)) // widen the race window
      state.count += 1
      if (!state.workers.includes(process.pid)) state.workers.push(process.pid)
      fs.writeFileSync(counter, JSON.stringify(state))
      fs.unlinkSync(marker)
    }, { timeout: 60_000 })
  }
}

function verify(runner) {
  const { dir, counter } = sharedPaths(runner)
  const state = JSON.parse(fs.readFileSync(counter, 'utf8'))
  fs.rmSync(dir, { recursive: true, force: true })
  if (state.count !== ROUNDS * FILES) throw new Error(`${runner}: count ${state.count}, expected ${ROUNDS * FILES}`)
  if (state.workers.length < 2) throw new Error(`${runner} ran the files in one process: nothing was concurrent`)
  return state
}

module.exports = { prepare, incrementUnderLock, verify, ROUNDS, FILES }
