'use strict'
// `npm run demo`: several processes update one JSON file at once through
// LockManager.withLock. Without the lock, read-modify-write races lose updates;
// with it, the final count is exactly processes x updates.

const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { once } = require('node:events')
const { LockManager } = require('../lockwright.js')

const PROCESSES = 4
const UPDATES = 100

async function worker(file) {
  const manager = new LockManager({ owner: `demo-worker-${process.pid}` })
  let waitedMs = 0
  for (let i = 0; i < UPDATES; i++) {
    const asked = performance.now()
    await manager.withLock(file, (lock) => {
      waitedMs += performance.now() - asked
      const state = JSON.parse(fs.readFileSync(file, 'utf8'))
      state.count += 1
      state.lastToken = lock.token
      state.lastWriter = process.pid
      fs.writeFileSync(file, JSON.stringify(state, null, 2))
    })
  }
  process.send({ pid: process.pid, waitedMs })
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockwright-demo-'))
  const file = path.join(dir, 'state.json')
  fs.writeFileSync(file, JSON.stringify({ count: 0 }))
  console.log(`${PROCESSES} processes x ${UPDATES} locked updates of ${file}`)
  const started = performance.now()
  const children = Array.from({ length: PROCESSES }, () => fork(__filename, ['worker', file]))
  const reports = []
  for (const child of children) child.on('message', (m) => reports.push(m))
  const codes = await Promise.all(children.map((c) => once(c, 'exit').then(([code]) => code)))
  const elapsed = performance.now() - started
  const state = JSON.parse(fs.readFileSync(file, 'utf8'))
  const expected = PROCESSES * UPDATES
  console.log(JSON.stringify(state, null, 2))
  for (const r of reports) console.log(`  worker ${r.pid}: waited ${r.waitedMs.toFixed(1)} ms in total for the lock`)
  console.log(`count ${state.count} of ${expected} expected in ${elapsed.toFixed(0)} ms: ${state.count === expected ? 'nothing lost' : 'UPDATES LOST'}`)
  fs.rmSync(dir, { recursive: true, force: true })
  if (state.count !== expected || codes.some((c) => c !== 0)) process.exit(1)
}

if (process.argv[2] === 'worker') worker(process.argv[3])
else main()
