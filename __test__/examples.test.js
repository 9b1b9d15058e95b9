'use strict'
// Every example runs and proves its workflow (each exits non-zero if it does not).

const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const { once } = require('node:events')
const { join } = require('node:path')

const examples = join(__dirname, '..', 'examples')

async function run(command, args) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  const [code] = await once(child, 'exit')
  return { code, stdout, stderr }
}

for (const [file, expected] of [
  ['vectra-index.js', /vectra-style index: 90 of 90 items/],
  ['astrotask-store.js', /Task store is in use by mcp-server \(PID \d+\)/],
  ['flowforge-tasks.js', /100 tasks from 100 concurrent updates, 0 lost, 0 not done/],
  ['gastown-locks.js', /count 90 of 90, CleanStaleLocks removed 1/],
  ['aiconfig-memory.sh', /aiconfig-style shell clients: 60 of 60 writes/],
  ['demo.js', /count 400 of 400 expected/],
]) {
  test(`examples/${file}`, async () => {
    const result = file.endsWith('.sh') ? await run('sh', [join(examples, file)]) : await run(process.execPath, [join(examples, file)])
    assert.equal(result.code, 0, result.stdout + result.stderr)
    assert.match(result.stdout, expected)
  })
}
