// Compiled by types.test.js with tsc --strict; never run.
import { LockManager, type LockMetrics } from 'lockwright'
async function main() {
  const m = new LockManager({ owner: 'x', stale: 5000, debug: true })
  await using lock = await m.acquire('a.json', { mode: 'shared', timeout: 100 })
  const t: number = lock.token
  const metrics: LockMetrics = m.metrics()
  const p50: number = metrics.wait.p50
  const s = m.status('a.json')
  const alive: boolean = s.owners[0].alive
  m.on('compromised', (err) => console.log(err.code, err.lockId))
  const r = await m.cleanupStaleLocks('.')
  console.log(t, p50, alive, r.removed.length)
}
main()
