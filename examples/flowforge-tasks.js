'use strict'
// FlowForge-style task scripts on lockwright: tasks.json with its lock in
// .flowforge/.locks/, updateTaskFile(), batchUpdateTasks() (several updates under one
// lock) and getLockMetrics(). Four processes make 25 concurrent updates each.
// Run: node examples/flowforge-tasks.js

const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { once } = require('node:events')
const { LockManager } = require('../index.js')

function taskFiles(root) {
  const lockDir = path.join(root, '.flowforge', '.locks')
  fs.mkdirSync(lockDir, { recursive: true })
  const locks = new LockManager({ owner: `flowforge-${process.pid}`, lockDir, timeout: 60_000 })
  const tasksFile = path.join(root, 'tasks.json')

  return {
    updateTaskFile: (fn) => locks.updateJson(tasksFile, (tasks) => fn(tasks ?? { tasks: [] })),
    /** All updates or none in between: one lock over the batch; each update re-enters it. */
    batchUpdateTasks: (updates) =>
      locks.withLock(tasksFile, async () => {
        for (const update of updates) await locks.updateJson(tasksFile, (tasks) => update(tasks ?? { tasks: [] }))
      }),
    getLockMetrics() {
      const m = locks.metrics()
      return { totalAcquisitions: m.acquisitions, averageWaitTime: m.wait.mean, p99WaitTime: m.wait.p99, totalTimeouts: m.timeouts, contended: m.contended }
    },
  }
}

async function worker(root, name) {
  const flow = taskFiles(root)
  await Promise.all(
    Array.from({ length: 25 }, (_, i) =>
      flow.updateTaskFile((file) => {
        file.tasks.push({ id: `${name}-${i}`, status: 'todo' })
        return file
      }),
    ),
  )
  await flow.batchUpdateTasks([
    (file) => ({ ...file, tasks: file.tasks.map((t) => (t.id.startsWith(`${name}-`) ? { ...t, status: 'done' } : t)) }),
    (file) => ({ ...file, [`finished-${name}`]: true }),
  ])
  process.send(flow.getLockMetrics())
}

async function main() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'flowforge-'))
  const workers = ['w1', 'w2', 'w3', 'w4'].map((name) => fork(__filename, ['worker', root, name]))
  const reports = []
  workers.forEach((w) => w.on('message', (m) => reports.push(m)))
  const codes = await Promise.all(workers.map((w) => once(w, 'exit').then(([c]) => c)))
  const { tasks } = JSON.parse(fs.readFileSync(path.join(root, 'tasks.json'), 'utf8'))
  const lost = 100 - tasks.length
  const notDone = tasks.filter((t) => t.status !== 'done').length
  console.log(`flowforge-style tasks: ${tasks.length} tasks from 100 concurrent updates, ${lost} lost, ${notDone} not done`)
  console.log(`lock file: ${fs.readdirSync(path.join(root, '.flowforge', '.locks')).join(', ')}`)
  for (const r of reports) {
    console.log(`  acquisitions ${r.totalAcquisitions}, contended ${r.contended}, average wait ${r.averageWaitTime.toFixed(2)} ms, p99 ${r.p99WaitTime.toFixed(2)} ms, timeouts ${r.totalTimeouts}`)
  }
  fs.rmSync(root, { recursive: true, force: true })
  if (lost !== 0 || notDone !== 0 || codes.some((c) => c !== 0)) process.exit(1)
}

if (process.argv[2] === 'worker') worker(process.argv[3], process.argv[4])
else main()
