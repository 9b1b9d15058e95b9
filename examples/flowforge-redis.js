'use strict'
// FlowForge-style task updates from two hosts through one Redis. The lock is the
// Redis name 'flowforge:tasks', not a file: processes on any host share it. The tasks
// live in a store both hosts reach (a directory here, standing in for a shared
// volume or an object store), and every write carries the lock's fencing token:
// the store refuses a write whose token is older than the last it took, so a host
// that lost its lease (stopped, cut off) cannot overwrite its successor's work.
//
// Two "hosts" (processes labelled host-a and host-b) make 40 concurrent updates
// each, then mark their own tasks done in one batch (several updates under one
// lock; each update re-enters it).
// Run: LOCKWRIGHT_REDIS_URL=redis://127.0.0.1:6379/0 node examples/flowforge-redis.js
// (or pass the URL as the first argument). Keys go under a prefix of their own.

const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { once } = require('node:events')
const { LockManager, writeFileAtomicSync } = require('../index.js')

const UPDATES = 40

/** The shared task store: refuses a write fenced by an older token than the last. */
function taskStore(dir) {
  const file = path.join(dir, 'tasks.json')
  const read = () => (fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : { token: 0, tasks: [] })
  return {
    read,
    write(data, token) {
      const last = read().token
      if (token < last) throw Object.assign(new Error(`write fenced off: token ${token} < ${last}`), { code: 'EFENCED' })
      writeFileAtomicSync(file, JSON.stringify({ ...data, token }))
    },
  }
}

function flowforge(redis, host, dir) {
  const locks = new LockManager({ strategy: 'redis', redis, owner: `flowforge@${host}`, timeout: 60_000 })
  const store = taskStore(dir)
  const name = 'flowforge:tasks'
  const updateTaskFile = (fn) =>
    locks.withLock(name, (lock) => {
      store.write(fn(store.read()), lock.token)
    })
  return {
    updateTaskFile,
    /** All updates or none in between: one lease over the batch; each update re-enters it. */
    batchUpdateTasks: (updates) =>
      locks.withLock(name, async () => {
        for (const update of updates) await updateTaskFile(update)
      }),
    getLockMetrics() {
      const m = locks.metrics()
      return { host, totalAcquisitions: m.acquisitions, averageWaitTime: m.wait.mean, p99WaitTime: m.wait.p99 }
    },
    close: () => locks.close(),
  }
}

async function host(redis, name, dir) {
  const flow = flowforge(redis, name, dir)
  await Promise.all(
    Array.from({ length: UPDATES }, (_, i) =>
      flow.updateTaskFile((file) => ({ ...file, tasks: [...file.tasks, { id: `${name}-${i}`, host: name, status: 'todo' }] })),
    ),
  )
  await flow.batchUpdateTasks([
    (file) => ({ ...file, tasks: file.tasks.map((t) => (t.host === name ? { ...t, status: 'done' } : t)) }),
    (file) => ({ ...file, [`finished-${name}`]: true }),
  ])
  process.send(flow.getLockMetrics())
  await flow.close()
}

async function main() {
  const url = process.argv[2] ?? process.env.LOCKWRIGHT_REDIS_URL ?? 'redis://127.0.0.1:6379/0'
  // A prefix of this run's own: the example never touches other applications' keys.
  const redis = { url, prefix: `flowforge-example-${process.pid}:` }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flowforge-redis-'))
  const hosts = ['host-a', 'host-b'].map((name) => fork(__filename, ['host', JSON.stringify(redis), name, dir]))
  const reports = []
  hosts.forEach((h) => h.on('message', (m) => reports.push(m)))
  const codes = await Promise.all(hosts.map((h) => once(h, 'exit').then(([c]) => c)))
  const { tasks, token } = taskStore(dir).read()
  const expected = UPDATES * hosts.length
  const lost = expected - tasks.length
  const notDone = tasks.filter((t) => t.status !== 'done').length
  console.log(`flowforge on Redis: ${tasks.length} tasks from ${expected} updates on 2 hosts, ${lost} lost, ${notDone} not done, last fencing token ${token}`)
  for (const r of reports) {
    console.log(`  ${r.host}: acquisitions ${r.totalAcquisitions}, average wait ${r.averageWaitTime.toFixed(2)} ms, p99 ${r.p99WaitTime.toFixed(2)} ms`)
  }
  // Nothing is left in Redis: every lease was released.
  const left = await new LockManager({ strategy: 'redis', redis }).list()
  console.log(`locks left in Redis: ${left.filter((s) => s.locked).length}`)
  fs.rmSync(dir, { recursive: true, force: true })
  if (lost !== 0 || notDone !== 0 || left.some((s) => s.locked) || codes.some((c) => c !== 0)) process.exit(1)
}

if (process.argv[2] === 'host') host(JSON.parse(process.argv[3]), process.argv[4], process.argv[5])
else main()
