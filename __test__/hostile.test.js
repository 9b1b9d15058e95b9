'use strict'
// Locks live in shared places (/tmp, group folders, volumes several containers mount).
// What a careless or hostile neighbour plants next to a lock must never make
// lockwright write, delete, hang or crash: each case runs in a child process under a
// watchdog, and the files a planted link points at must not change.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { spawn, execFileSync } = require('node:child_process')
const { once } = require('node:events')
const { join } = require('node:path')
const { tempDir } = require('./helpers.js')

const OP = join(__dirname, 'fixtures', 'hostile-op.js')
const unix = process.platform !== 'win32'

/** Runs one operation in a child; a child still running after `watchdogMs` is killed and fails the test. */
async function run(op, target, options = {}, { watchdogMs = 15_000 } = {}) {
  const child = spawn(process.execPath, [OP, op, target, JSON.stringify(options)], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  const watchdog = setTimeout(() => child.kill('SIGKILL'), watchdogMs)
  const [code, signal] = await once(child, 'exit')
  clearTimeout(watchdog)
  assert.equal(signal, null, `${op} on ${target} hung or crashed (signal ${signal}); stderr: ${stderr}`)
  assert.equal(code, 0, `${op} on ${target} exited ${code}; stderr: ${stderr}`)
  return JSON.parse(stdout)
}

/** A file and a directory outside the lock's directory, with their state now. */
function victims(t) {
  const outside = tempDir(t)
  const file = join(outside, 'precious.txt')
  fs.writeFileSync(file, 'precious')
  const dir = join(outside, 'precious-dir')
  fs.mkdirSync(dir)
  fs.writeFileSync(join(dir, 'keep.json'), '{"keep":true}')
  const snapshot = () => ({
    file: fs.readFileSync(file, 'utf8'),
    mtime: fs.statSync(file).mtimeMs,
    dir: fs.readdirSync(dir).sort(),
    inDir: fs.readFileSync(join(dir, 'keep.json'), 'utf8'),
  })
  return { file, dir, before: snapshot(), snapshot }
}

const mkfifo = (path) => execFileSync('mkfifo', [path])
const sparse = (path) => {
  fs.closeSync(fs.openSync(path, 'w'))
  fs.truncateSync(path, 2 ** 40) // 1 TiB of nothing, on disk as a few blocks
}

// Where each planted thing goes, and what is asked of lockwright there.
const PLANTS = [
  { at: '.lock', ops: [['acquire'], ['acquireSync', { timeout: 1000 }], ['acquire', { mode: 'shared' }], ['status'], ['updateJson'], ['forceRelease']] },
  { at: '.lock.writer-waiting', ops: [['acquire', { mode: 'shared' }], ['acquire'], ['status']] },
  { at: '.lock.readers', dirLink: true, ops: [['acquire', { mode: 'shared' }], ['status'], ['forceRelease']] },
]

for (const kind of ['symlink', 'fifo', 'sparse']) {
  for (const plant of PLANTS) {
    if (kind !== 'symlink' && plant.dirLink) continue
    test(`a ${kind} planted at <lock>${plant.at.slice(5)} is refused, never followed, opened or read whole`, { skip: !unix }, async (t) => {
      const dir = tempDir(t)
      const target = join(dir, 'a.json')
      const v = victims(t)
      const path = `${target}${plant.at}`
      if (kind === 'symlink') fs.symlinkSync(plant.dirLink ? v.dir : v.file, path)
      if (kind === 'fifo') mkfifo(path)
      if (kind === 'sparse') sparse(path)
      for (const [op, options] of plant.ops) {
        const result = await run(op, target, options)
        if (!result.ok) assert.match(result.code, /^E[A-Z]+$/, `${op}: a typed error, got ${JSON.stringify(result)}`)
        assert.deepEqual(v.snapshot(), v.before, `${op} changed what the planted ${kind} points at`)
      }
      // Sweeping the directory leaves the plant and the victims alone.
      await run('cleanup', target, { dir })
      await run('list', target, { dir })
      assert.deepEqual(v.snapshot(), v.before)
      assert.ok(fs.lstatSync(path), 'the planted thing is still there')
    })
  }
}

test('a lock file that is not a lock (Gemfile.lock, yarn.lock, lockfilePath) is refused with EEXIST and left byte for byte', async (t) => {
  const dir = tempDir(t)
  const gemfileLock = 'GEM\n  remote: https://rubygems.org/\n  specs:\n    rake (13.0.6)\n'
  fs.writeFileSync(join(dir, 'Gemfile.lock'), gemfileLock)
  fs.writeFileSync(join(dir, 'yarn.lock'), '# yarn lockfile v1\n')
  fs.writeFileSync(join(dir, 'state.json'), '{"mine":1}')
  fs.mkdirSync(join(dir, 'app'))
  const cases = [
    ['acquire', join(dir, 'Gemfile')],
    ['acquireSync', join(dir, 'Gemfile'), { timeout: 0 }],
    ['acquire', join(dir, 'Gemfile'), { mode: 'shared' }],
    ['acquire', join(dir, 'yarn')],
    ['acquire', join(dir, 'anything'), { lockfilePath: join(dir, 'state.json') }],
    ['acquire', join(dir, 'app', 'Gemfile'), { manager: { lockDir: dir } }],
  ]
  for (const [op, target, options] of cases) {
    const result = await run(op, target, options)
    assert.equal(result.code, 'EEXIST', `${op} ${target}: ${JSON.stringify(result)}`)
    assert.match(result.message, /exists and is not a lock file.*lockDir.*lockfilePath/)
  }
  assert.equal(fs.readFileSync(join(dir, 'Gemfile.lock'), 'utf8'), gemfileLock)
  assert.equal(fs.readFileSync(join(dir, 'yarn.lock'), 'utf8'), '# yarn lockfile v1\n')
  assert.equal(fs.readFileSync(join(dir, 'state.json'), 'utf8'), '{"mine":1}')
  // The CLI says the same and runs nothing.
  const cli = spawn(process.execPath, [join(__dirname, '..', 'bin', 'lockwright.js'), 'with', join(dir, 'Gemfile'), '--', 'touch', join(dir, 'ran')], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  cli.stderr.on('data', (d) => (stderr += d))
  const [code] = await once(cli, 'exit')
  assert.notEqual(code, 0)
  assert.match(stderr, /not a lock file/)
  assert.equal(fs.existsSync(join(dir, 'ran')), false)
  assert.equal(fs.readFileSync(join(dir, 'Gemfile.lock'), 'utf8'), gemfileLock)
})
