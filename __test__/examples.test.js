'use strict'
// Every example runs and proves its workflow (each exits non-zero if it does not).

const test = require('node:test')
const assert = require('node:assert/strict')
const { runCommand: run } = require('./helpers.js')
const { join } = require('node:path')
const { redisSkip, startRedis } = require('./redis-server.js')

const examples = join(__dirname, '..', 'examples')

for (const [file, expected] of [
  ['vectra-index.js', /vectra-style index: 90 of 90 items/],
  ['astrotask-store.js', /Task store is in use by mcp-server \(PID \d+\)/],
  ['flowforge-tasks.js', /100 tasks from 100 concurrent updates, 0 lost, 0 not done/],
  ['gastown-locks.js', /count 90 of 90, CleanStaleLocks cleaned 1/],
  ['aiconfig-memory.sh', /aiconfig-style shell clients: 60 of 60 writes/],
  ['demo.js', /count 400 of 400 expected/],
]) {
  test(`examples/${file}`, async () => {
    const result = file.endsWith('.sh') ? await run('sh', [join(examples, file)]) : await run(process.execPath, [join(examples, file)])
    assert.equal(result.code, 0, result.stdout + result.stderr)
    assert.match(result.stdout, expected)
  })
}

// Against a private redis-server; skipped (with a notice) without one, unless CI=true.
test('examples/flowforge-redis.js', { skip: redisSkip() }, async (t) => {
  const server = await startRedis(t)
  const result = await run(process.execPath, [join(examples, 'flowforge-redis.js')], { env: { LOCKWRIGHT_REDIS_URL: server.url } })
  assert.equal(result.code, 0, result.stdout + result.stderr)
  assert.match(result.stdout, /80 tasks from 80 updates on 2 hosts, 0 lost, 0 not done, last fencing token \d+/)
  assert.match(result.stdout, /host-a: acquisitions 41,/)
  assert.match(result.stdout, /locks left in Redis: 0/)
})
