'use strict'
// The lockwright command, run as a real process.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { spawn } = require('node:child_process')
const { once } = require('node:events')
const { join } = require('node:path')
const { LockManager } = require('../index.js')
const { tempDir, spawnAgent, runCommand, waitFor } = require('./helpers.js')

const CLI = join(__dirname, '..', 'bin', 'lockwright.js')

function cli(args, options) {
  return runCommand(process.execPath, [CLI, ...args], options)
}

const node = (code) => [process.execPath, '-e', code]

test('with: runs the command holding the lock, exits with its code, releases after', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const check = `const { LockManager } = require(${JSON.stringify(join(__dirname, '..'))});
    const s = new LockManager().statusSync(${JSON.stringify(file)});
    process.exit(s.locked && s.owners[0].process === 'script' ? 7 : 1)`
  const run = await cli(['with', file, '--owner', 'script', '--', ...node(check)])
  assert.equal(run.code, 7, run.stderr)
  assert.equal(new LockManager().statusSync(file).locked, false)
})

test('with: the owner label defaults to the command\'s file name; a command that cannot start exits 127', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  const script = join(dir, 'update-state.sh')
  // The script asks, as another process would, who holds the lock.
  fs.writeFileSync(script, `#!/bin/sh\n"${process.execPath}" -e 'process.stdout.write(new (require(${JSON.stringify(join(__dirname, '..'))}).LockManager)().statusSync(${JSON.stringify(file)}).owners[0].process)'\n`, { mode: 0o755 })
  const run = await cli(['with', file, '--', script])
  assert.equal(run.code, 0, run.stderr)
  assert.equal(run.stdout, 'update-state.sh')
  const missing = await cli(['with', file, '--', join(dir, 'no-such-command')])
  assert.equal(missing.code, 127)
  assert.match(missing.stderr, /cannot run .*no-such-command/)
  assert.equal(new LockManager().statusSync(file).locked, false)
})

test('with: --timeout 0 on a held lock exits 3; a timeout exits 4; --shared holders overlap', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const holder = spawnAgent(t, { owner: 'holder' })
  const held = await holder.call('acquire', { path: file, options: { mode: 'shared' } })
  let run = await cli(['with', file, '--timeout', '0', '--', 'true'])
  assert.equal(run.code, 3)
  assert.match(run.stderr, /locked by holder \(PID/)
  run = await cli(['with', file, '--timeout', '50', '--', 'true'])
  assert.equal(run.code, 4)
  run = await cli(['with', file, '--shared', '--timeout', '0', '--', 'true'])
  assert.equal(run.code, 0, run.stderr)
  await holder.call('release', { lockId: held.id })
})

test('with: forwards signals to the command and reports how it ended', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'state.json')
  const ready = join(dir, 'ready')
  const child = spawn(process.execPath, [CLI, 'with', file, '--', ...node(
    `process.on('SIGTERM', () => process.exit(42)); require('fs').writeFileSync(${JSON.stringify(ready)}, ''); setInterval(() => {}, 1000)`,
  )], { stdio: 'inherit' })
  await waitFor(() => fs.existsSync(ready), { what: 'the command to start' })
  child.kill('SIGTERM')
  const [code] = await once(child, 'exit')
  assert.equal(code, 42)
  assert.equal(new LockManager().statusSync(file).locked, false)
  // Killed by a signal it does not handle: 128 + the signal number, as a shell reports it.
  const killed = await cli(['with', file, '--', 'sh', '-c', 'kill -KILL $$'])
  assert.equal(killed.code, 128 + 9)
})

test('status and cleanup report and sweep a directory; release --force breaks a dead lock', async (t) => {
  const dir = tempDir(t)
  const live = spawnAgent(t, { owner: 'mcp-server' })
  const dead = spawnAgent(t, { owner: 'crashed' })
  const [liveReader, deadReader] = [spawnAgent(t, { owner: 'reader' }), spawnAgent(t, { owner: 'dead-reader' })]
  await live.call('acquire', { path: join(dir, 'a.json') })
  await dead.call('acquire', { path: join(dir, 'b.json') })
  // c.json stays held (shared) by a live reader; a dead reader's record lies beside it.
  await liveReader.call('acquire', { path: join(dir, 'c.json'), options: { mode: 'shared' } })
  await deadReader.call('acquire', { path: join(dir, 'c.json'), options: { mode: 'shared' } })
  for (const agent of [dead, deadReader]) {
    agent.child.kill('SIGKILL')
    await agent.exited
  }

  let run = await cli(['status', dir])
  assert.equal(run.code, 0, run.stderr)
  assert.match(run.stdout, new RegExp(`a\\.json\\.lock: locked \\(exclusive\\)\\n    mcp-server \\(PID ${live.pid} on .+, alive, held`))
  assert.match(run.stdout, /b\.json\.lock: free, stale\n {4}crashed \(PID \d+ on .+, dead/)
  run = await cli(['status', join(dir, 'a.json'), '--json', '--verbose'])
  assert.equal(JSON.parse(run.stdout).owners[0].pid, live.pid)
  // A lock file path, as the listing prints it, names that lock.
  run = await cli(['status', join(dir, 'a.json.lock'), '--json'])
  assert.equal(JSON.parse(run.stdout).owners[0].pid, live.pid)
  run = await cli(['status', join(dir, 'a.json'), '--verbose'])
  assert.match(run.stdout, /lockId=.* token=1 heartbeat=/)

  const deadRecord = fs.readFileSync(join(dir, 'b.json.lock'), 'utf8')
  const withDeadReader = fs.readFileSync(join(dir, 'c.json.lock'), 'utf8')
  run = await cli(['cleanup', dir, '--dry-run', '--json'])
  const dry = JSON.parse(run.stdout)
  assert.equal(dry.kept, 1)
  // A dead writer's record and a dead reader's slot, both inside their lock files:
  // a lock is one file on disk.
  assert.deepEqual(dry.cleared, [join(dir, 'b.json.lock'), join(dir, 'c.json.lock')])
  assert.deepEqual(dry.removed, [])
  // The API's dry run, in the same shape.
  assert.deepEqual(await new LockManager().cleanupStaleLocks(dir, { dryRun: true }), dry)
  assert.equal(fs.readFileSync(join(dir, 'b.json.lock'), 'utf8'), deadRecord)
  assert.equal(fs.readFileSync(join(dir, 'c.json.lock'), 'utf8'), withDeadReader)
  // The real sweep does exactly what the dry run listed.
  run = await cli(['cleanup', dir])
  assert.equal(run.stdout, [`cleared ${dry.cleared[0]}`, `cleared ${dry.cleared[1]}`, '2 cleared, 0 removed, 1 kept\n'].join('\n'))
  assert.doesNotMatch(fs.readFileSync(join(dir, 'c.json.lock'), 'utf8'), /dead-reader/)
  assert.match(fs.readFileSync(join(dir, 'c.json.lock'), 'utf8'), /"process":"reader"/)
  assert.deepEqual(fs.readdirSync(dir).sort(), ['a.json.lock', 'b.json.lock', 'c.json.lock'])
  assert.equal(new LockManager().statusSync(join(dir, 'b.json')).stale, false)
  assert.equal(new LockManager().statusSync(join(dir, 'c.json')).locked, true)

  run = await cli(['release', join(dir, 'a.json'), '--force'])
  assert.equal(run.code, 3)
  assert.match(run.stderr, /cannot be broken/)
  live.child.kill('SIGKILL')
  await live.exited
  run = await cli(['release', join(dir, 'a.json'), '--force'])
  assert.equal(run.code, 0, run.stderr)
  assert.match(run.stdout, /released/)
})

test('help for every command, and usage errors exit 2', async () => {
  for (const command of [[], ['with'], ['status'], ['cleanup'], ['release']]) {
    const run = await cli([...command, '--help'])
    assert.equal(run.code, 0)
    assert.match(run.stdout, /Usage: lockwright/)
  }
  for (const flag of ['--version', '-v']) {
    const run = await cli([flag])
    assert.deepEqual([run.code, run.stdout], [0, `${require('../package.json').version}\n`])
  }
  for (const args of [[], ['bogus'], ['with', 'f'], ['with', 'f', '--timeout', 'soon', '--', 'true'], ['with', 'f', '--timeout', '', '--', 'true'], ['with', 'f', 'g', '--', 'true'], ['release', 'f'], ['status', '--nope']]) {
    const run = await cli(args)
    assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`)
  }
})
