// Compiled by types.test.js with tsc --strict; never run.
import { LockManager, readJson, updateJson, writeFileAtomic, writeFileAtomicSync, type LockMetrics } from 'lockwright'
async function main() {
  const m = new LockManager({ owner: 'x', stale: 5000, debug: true })
  const quiet = new LockManager({ strategy: 'mkdir', metrics: false })
  await quiet.close()
  await using lock = await m.acquire('a.json', { mode: 'shared', timeout: 100 })
  const t: number = lock.token
  const metrics: LockMetrics = m.metrics()
  const p50: number = metrics.wait.p50
  const s = await m.status('a.json')
  const alive: boolean = s.owners[0].alive && m.statusSync('a.json').locked
  const listed: number = (await m.list('.')).length + m.listSync('.').length
  m.on('compromised', (err) => console.log(err.code, err.lockId))
  const r = await m.cleanupStaleLocks('.')
  console.log(t, p50, alive, listed, r.removed.length)
}
main()

interface Tasks {
  tasks: string[]
}

async function jsonFiles() {
  const written = await updateJson<Tasks>('tasks.json', (data = { tasks: [] }) => {
    data.tasks.push('a')
  }, { backup: true, timeout: 1000 })
  const tasks: Tasks | undefined = await readJson<Tasks>('tasks.json')
  await writeFileAtomic('out.txt', 'text', { mode: 0o600, fsync: false })
  writeFileAtomicSync('out.bin', new Uint8Array([1, 2]))
  console.log(written?.tasks.length, tasks?.tasks.length)
}
void jsonFiles
