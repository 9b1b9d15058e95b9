// User code that types.test.js compiles under every module mode TypeScript users pick
// (nodenext as CommonJS and as ESM, node10, bundler) and then runs, so the types and the
// runtime cannot drift apart; the consumer test does the same against the packed package.
import lockwright, { LockManager, readJson, updateJson, type LockMetrics } from 'lockwright'
import lockfile, { checkSync, type LockOptions } from 'lockwright/proper-lockfile'
import { strict as assert } from 'node:assert'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

interface Tasks {
  tasks: string[]
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'lockwright-types-'))
  try {
    const file = join(dir, 'tasks.json')
    const locks = new LockManager({ owner: 'types-app' })
    {
      // TypeScript lowers `await using` for targets before ESNext, so this runs on Node 20.
      await using lock = await locks.acquire(file, { mode: 'exclusive', timeout: 1000 })
      const token: number = lock.token
      assert.ok(token > 0)
      assert.equal(locks.statusSync(file).locked, true)
    }
    assert.equal(locks.statusSync(file).locked, false)
    const metrics: LockMetrics = locks.metrics()
    assert.equal(metrics.acquisitions, 1)

    const written = await updateJson<Tasks>(file, (data = { tasks: [] }) => {
      data.tasks.push('a')
      return data
    })
    assert.deepEqual(written, { tasks: ['a'] })
    const tasks = await readJson<Tasks>(file)
    assert.deepEqual(tasks?.tasks, ['a'])
    await locks.withLock(file, () => locks.updateJson<Tasks>(file, (data) => ({ tasks: [...(data?.tasks ?? []), 'b'] })))
    assert.deepEqual(await locks.readJson<Tasks>(file), { tasks: ['a', 'b'] })
    await locks.close()

    // The default import is the module (module.exports, or index.mjs's default), which
    // has no `default` of its own.
    assert.equal(lockwright.LockManager, LockManager)
    // @ts-expect-error: lockwright has no `default` export at runtime
    assert.equal(lockwright.default, undefined)

    // The proper-lockfile drop-in: the module is itself `lock`.
    const state = join(dir, 'state.json')
    writeFileSync(state, '{}')
    const options: LockOptions = { stale: 5000, retries: { retries: 2, minTimeout: 10 } }
    const release = await lockfile(state, options)
    assert.equal(checkSync(state), true)
    await release()
    const releaseSync: () => void = lockfile.lockSync(state)
    releaseSync()
    assert.equal(await lockfile.check(state), false)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  console.log('types-app ok')
}

/** Compiled, never called: `data` is `unknown` unless a type is given, never `any`. */
export async function untypedData(file: string): Promise<void> {
  // @ts-expect-error: data is unknown
  await updateJson(file, (data) => data.tasks)
  const read = await readJson(file)
  // @ts-expect-error: what readJson reads is unknown
  read.tasks
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
