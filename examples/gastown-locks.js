'use strict'
// Gas Town-style Go-like helpers on lockwright: WithReadLock / WithWriteLock over a
// locks directory (.gastown/locks), and CleanStaleLocks() returning how many dead
// holders' locks it cleaned. Run: node examples/gastown-locks.js

const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { once } = require('node:events')
const { LockManager } = require('../index.js')

function gastown(root) {
  const lockDir = path.join(root, '.gastown', 'locks')
  fs.mkdirSync(lockDir, { recursive: true })
  const locks = new LockManager({ owner: 'gastown', lockDir })
  return {
    WithReadLock: (file, fn) => locks.withReadLock(path.join(root, file), fn),
    WithWriteLock: (file, fn) => locks.withWriteLock(path.join(root, file), fn),
    CleanStaleLocks: async () => {
      const { removed, cleared } = await locks.cleanupStaleLocks()
      return removed.length + cleared.length
    },
  }
}

async function worker(root) {
  const g = gastown(root)
  for (let i = 0; i < 30; i++) {
    await g.WithWriteLock('rigs.json', () => {
      const rigs = JSON.parse(fs.readFileSync(path.join(root, 'rigs.json'), 'utf8'))
      rigs.count++
      fs.writeFileSync(path.join(root, 'rigs.json'), JSON.stringify(rigs))
    })
    await g.WithReadLock('rigs.json', () => JSON.parse(fs.readFileSync(path.join(root, 'rigs.json'), 'utf8')))
  }
  if (process.argv[4] === 'crash') {
    // Dies holding a lock on another file: its record stays behind.
    await g.WithWriteLock('convoy.json', () => process.kill(process.pid, 'SIGKILL'))
  }
}

async function main() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gastown-'))
  fs.writeFileSync(path.join(root, 'rigs.json'), JSON.stringify({ count: 0 }))
  const workers = [fork(__filename, ['worker', root]), fork(__filename, ['worker', root]), fork(__filename, ['worker', root, 'crash'])]
  await Promise.all(workers.map((w) => once(w, 'exit')))
  const g = gastown(root)
  const count = await g.WithReadLock('rigs.json', () => JSON.parse(fs.readFileSync(path.join(root, 'rigs.json'), 'utf8')).count)
  const cleaned = await g.CleanStaleLocks()
  console.log(`gastown-style locks: count ${count} of 90, CleanStaleLocks cleaned ${cleaned} (the crashed worker's convoy lock)`)
  fs.rmSync(root, { recursive: true, force: true })
  if (count !== 90 || cleaned !== 1) process.exit(1)
}

if (process.argv[2] === 'worker') worker(process.argv[3])
else main()
