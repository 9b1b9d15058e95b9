'use strict'
// `npm run demo`: several processes update one JSON file at once with updateJson,
// each update a locked read-modify-write written atomically. Without the lock such
// races lose updates; with it the final count is exactly processes x updates.

const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { once } = require('node:events')
const { LockManager } = require('../index.js')

const PROCESSES = 4
const UPDATES = 100

async function worker(file) {
  const manager = new LockManager({ owner: `demo-worker-${process.pid}` })
  for (let i = 0; i < UPDATES; i++) {
    await manager.updateJson(file, (state) => ({
      count: state.count + 1,
      lastWriter: process.pid,
      history: [...state.history.slice(-4), process.pid],
    }))
  }
  process.send({ pid: process.pid, metrics: manager.metrics() })
}

function table(rows) {
  const header = ['process', 'acquisitions', 'contended', 'wait p50 ms', 'wait p99 ms', 'hold p50 ms']
  const lines = [header, ...rows].map((r) => r.map((c, i) => String(c).padStart(i === 0 ? 8 : header[i].length)).join('  '))
  return lines.join('\n')
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockwright-demo-'))
  const file = path.join(dir, 'state.json')
  fs.writeFileSync(file, JSON.stringify({ count: 0, history: [] }))
  console.log(`${PROCESSES} processes x ${UPDATES} updateJson calls on ${file}\n`)
  const started = performance.now()
  const children = Array.from({ length: PROCESSES }, () => fork(__filename, ['worker', file]))
  const reports = []
  for (const child of children) child.on('message', (m) => reports.push(m))
  const codes = await Promise.all(children.map((c) => once(c, 'exit').then(([code]) => code)))
  const elapsed = performance.now() - started
  const state = JSON.parse(fs.readFileSync(file, 'utf8'))
  const expected = PROCESSES * UPDATES
  console.log(JSON.stringify(state))
  console.log()
  const fmt = (n) => n.toFixed(2)
  console.log(table(reports.map(({ pid, metrics: m }) => [pid, m.acquisitions, m.contended, fmt(m.wait.p50), fmt(m.wait.p99), fmt(m.hold.p50)])))
  console.log()
  console.log(`count ${state.count} of ${expected} expected in ${elapsed.toFixed(0)} ms: ${state.count === expected ? 'nothing lost' : 'UPDATES LOST'}`)
  fs.rmSync(dir, { recursive: true, force: true })
  if (state.count !== expected || codes.some((c) => c !== 0)) process.exit(1)
}

if (process.argv[2] === 'worker') worker(process.argv[3])
else main()
