// Compiled by types.test.js with tsc --strict; never run. Code written against
// @types/proper-lockfile, with only the import changed.
import lockfile from 'lockwright/proper-lockfile'
import { lock, checkSync, type LockOptions } from 'lockwright/proper-lockfile'
import type * as ProperLockfile from 'proper-lockfile'

async function migrate(): Promise<void> {
  const options: LockOptions = { stale: 5000, retries: { retries: 5, factor: 2, minTimeout: 100 }, realpath: false }
  const release: () => Promise<void> = await lockfile.lock('state.json', options)
  await release()
  const releaseSync: () => void = lockfile.lockSync('state.json', { onCompromised: (err: Error) => console.error(err) })
  releaseSync()
  const held: boolean = checkSync('state.json') || (await lockfile.check('state.json', { stale: 2000 }))
  await lock('other.json', { lockfilePath: 'other.lock' })
  await lockfile.unlock('other.json', { lockfilePath: 'other.lock' })
  console.log(held)
}

// The drop-in is assignable to proper-lockfile's own types.
const asProperLockfile: typeof ProperLockfile = lockfile
void asProperLockfile
void migrate
