'use strict'
// A vectra-style local index on lockwright. The index lives in <folder>/index.json
// and is guarded by <folder>/.vectra.lock. beginUpdate()/endUpdate() hold one lock
// over a batch of inserts; insertItem() outside a batch locks by itself; a batch
// written with update(fn) may call insertItem, which re-enters the held lock; queries
// take shared locks. Run: node examples/vectra-index.js

const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { once } = require('node:events')
const { LockManager } = require('../index.js')

class LocalIndex {
  #locks = new LockManager({ owner: 'vectra' })
  #batch = null

  constructor(folder) {
    this.file = path.join(folder, 'index.json')
    this.lockOptions = { lockfilePath: path.join(folder, '.vectra.lock'), timeout: 30_000 }
  }

  async beginUpdate() {
    if (this.#batch) throw new Error('an update is already in progress')
    this.#batch = await this.#locks.acquire(this.file, this.lockOptions)
  }

  async endUpdate() {
    const batch = this.#batch
    this.#batch = null
    await batch.release()
  }

  /** Inside beginUpdate/endUpdate the batch's lock covers it; otherwise it locks. */
  async insertItem(item) {
    const insert = (index) => ({ items: [...(index?.items ?? []), item] })
    if (this.#batch) return this.#write(insert)
    return this.#locks.updateJson(this.file, insert, this.lockOptions)
  }

  /** A batch as a function: inserts inside re-enter the lock instead of deadlocking. */
  update(fn) {
    return this.#locks.withLock(this.file, fn, this.lockOptions)
  }

  async queryItems(filter = () => true) {
    const index = await this.#locks.readJson(this.file, this.lockOptions)
    return (index?.items ?? []).filter(filter)
  }

  async #write(change) {
    const index = JSON.parse(await fs.promises.readFile(this.file, 'utf8').catch(() => 'null'))
    fs.writeFileSync(this.file, JSON.stringify(change(index)))
  }
}

async function writer(folder, name) {
  const index = new LocalIndex(folder)
  for (let round = 0; round < 5; round++) {
    await index.beginUpdate()
    for (let i = 0; i < 4; i++) await index.insertItem({ by: name, round, i })
    await index.endUpdate()
    await index.update(async () => {
      await index.insertItem({ by: name, round, nested: true })
    })
    await index.insertItem({ by: name, round, alone: true })
  }
}

async function main() {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'vectra-'))
  const writers = ['a', 'b', 'c'].map((name) => fork(__filename, ['writer', folder, name]))
  const index = new LocalIndex(folder)
  let queries = 0
  let running = writers.length
  writers.forEach((w) => w.on('exit', () => running--))
  while (running > 0) {
    await index.queryItems() // shared lock: never sees a half-written index
    queries++
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  const codes = await Promise.all(writers.map((w) => (w.exitCode === null ? once(w, 'exit').then(([c]) => c) : w.exitCode)))
  const items = await index.queryItems()
  fs.rmSync(folder, { recursive: true, force: true })
  const expected = 3 * 5 * (4 + 1 + 1)
  console.log(`vectra-style index: ${items.length} of ${expected} items after 3 writers, ${queries} queries`)
  if (items.length !== expected || codes.some((c) => c !== 0)) process.exit(1)
}

if (process.argv[2] === 'writer') writer(process.argv[3], process.argv[4])
else main()
