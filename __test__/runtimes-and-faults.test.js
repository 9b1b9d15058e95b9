'use strict'
// The addon in worker threads, and the faults a real system throws at it.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { spawn } = require('node:child_process')
const { once } = require('node:events')
const { join } = require('node:path')
const { Worker } = require('node:worker_threads')
const { LockManager } = require('../index.js')
const { tempDir, runScript } = require('./helpers.js')

const workerScript = join(__dirname, 'fixtures', 'worker-thread.js')

test('worker threads load the addon at once and exclude each other', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'counter.txt')
  fs.writeFileSync(file, '0')
  const workers = ['a', 'b', 'c'].map((name) => new Worker(workerScript, { workerData: { name, file, marker: join(dir, 'marker'), rounds: 100 } }))
  await Promise.all(workers.map((w) => once(w, 'message')))
  await Promise.all(workers.map((w) => w.terminate()))
  assert.equal(fs.readFileSync(file, 'utf8'), '300')
})

test('a worker terminated while holding a lock releases it', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const worker = new Worker(workerScript, { workerData: { name: 'holder', task: 'hold', file } })
  await once(worker, 'message')
  const manager = new LockManager()
  assert.equal(manager.tryAcquire(file), null)
  const waiting = manager.acquire(file, { timeout: 10_000 })
  await worker.terminate()
  const lock = await waiting
  await lock.release()
})

test('contended waits run on the waiting JS thread itself, in the main thread and in workers', { skip: process.platform !== 'linux' }, async (t) => {
  const file = join(tempDir(t), 'state.json')
  const holder = new LockManager({ owner: 'holder' })
  let held = await holder.acquire(file)
  // The main thread: another manager's acquire waits here.
  const waiter = new LockManager({ owner: 'waiter' })
  const waiting = waiter.acquire(file, { timeout: 10_000 })
  await held.release()
  await (await waiting).release()
  assert.equal(require('../binding.js').__waitsOnJsThread(), true)
  // A worker: its own event loop, its own waits.
  held = await holder.acquire(file)
  const worker = new Worker(workerScript, { workerData: { name: 'waiter', task: 'wait', file } })
  const [state] = await once(worker, 'message')
  assert.equal(state, 'waiting')
  await held.release()
  const [granted] = await once(worker, 'message')
  assert.deepEqual(granted, { granted: true, onJsThread: true })
  await worker.terminate()
})

test('a worker terminated while waiting takes its wait with it', async (t) => {
  const file = join(tempDir(t), 'state.json')
  const holder = new LockManager({ owner: 'holder' })
  const held = await holder.acquire(file)
  const worker = new Worker(workerScript, { workerData: { name: 'waiter', task: 'wait', file } })
  const [state] = await once(worker, 'message')
  assert.equal(state, 'waiting')
  await worker.terminate()
  await held.release()
  // Nobody took the lock on the dead worker's behalf, and waits here still work.
  const again = holder.tryAcquire(file)
  assert.ok(again, 'the lock is free')
  const waiting = new LockManager({ owner: 'waiter' }).acquire(file, { timeout: 10_000 })
  await again.release()
  await (await waiting).release()
})

/** Runs a fixture with at most 64 descriptors; resolves to the JSON it prints. */
async function underDescriptorLimit(fixture, arg) {
  const child = spawn('sh', ['-c', `ulimit -n 64 && exec "${process.execPath}" "${join(__dirname, 'fixtures', fixture)}" "${arg}"`], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  const [code] = await once(child, 'exit')
  assert.equal(code, 0)
  return JSON.parse(out)
}

test('running out of file descriptors is a typed EMFILE, and the process recovers', { skip: process.platform === 'win32' }, async (t) => {
  const dir = tempDir(t)
  const report = await underDescriptorLimit('fd-exhaustion.js', dir)
  assert.equal(report.code, 'EMFILE')
  assert.ok(report.held > 10 && report.held < 64, `held ${report.held} before EMFILE`)
  assert.match(report.message, /EMFILE.*\.lock'/)
})

test('a heartbeat that cannot open the lock for a while (EMFILE) keeps the lock, as proper-lockfile does', { skip: process.platform === 'win32' }, async (t) => {
  const dir = tempDir(t)
  const report = await underDescriptorLimit('heartbeat-emfile.js', join(dir, 'state.json'))
  assert.ok(report.exhausted > 0)
  assert.deepEqual(report.lost, [])
  assert.equal(report.refreshed, true)
})

test('a directory without write permission is EACCES for an unprivileged user', { skip: process.getuid?.() !== 0 }, async (t) => {
  const dir = tempDir(t)
  fs.chmodSync(dir, 0o755) // root's directory: others may enter, not create
  // The unprivileged user must be able to load the package, and a checkout may sit in
  // a private directory (mktemp -d makes 0700): give it a readable copy.
  const pkg = tempDir(t)
  fs.chmodSync(pkg, 0o755)
  const root = join(__dirname, '..')
  for (const entry of ['package.json', 'index.js', 'binding.js', 'lib', ...fs.readdirSync(root).filter((f) => f.endsWith('.node'))]) {
    fs.cpSync(join(root, entry), join(pkg, entry), { recursive: true })
  }
  const script = `const { LockManager } = require(${JSON.stringify(join(pkg, 'index.js'))});
    new LockManager().acquire(${JSON.stringify(join(dir, 'state.json'))}).then(
      () => console.log('{"acquired":true}'),
      (err) => console.log(JSON.stringify({ code: err.code, path: err.path })))`
  const child = spawn(process.execPath, ['-e', script], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  await once(child, 'exit')
  assert.deepEqual(JSON.parse(out), { code: 'EACCES', path: join(dir, 'state.json.lock') })
  assert.deepEqual(fs.readdirSync(dir), [])
})

test('a Rust panic is an EPANIC error, in a call or in a wait, and Node keeps running', async (t) => {
  const run = await runScript('panic.js', [tempDir(t)])
  assert.equal(run.code, 0, run.stderr)
  const report = JSON.parse(run.stdout)
  assert.equal(report.errors.call.code, 'EPANIC')
  assert.match(report.errors.call.message, /deliberate panic in a call/)
  assert.equal(report.errors.wait.code, 'EPANIC')
  assert.match(report.errors.wait.message, /deliberate panic in a wait/)
  if (process.platform === 'linux') assert.equal(report.errors.jsThreadWait.code, 'EPANIC')
  assert.deepEqual([report.heldAfter, report.releasedAfter], [true, true])
})

test('a lock path of the wrong kind is a typed error for each strategy', async (t) => {
  const dir = tempDir(t)
  fs.mkdirSync(join(dir, 'a.json.lock'))
  // A fresh directory there is proper-lockfile's lock: held, and the message says how to share it.
  await assert.rejects(new LockManager().acquire(join(dir, 'a.json')), { code: 'ELOCKED', message: /proper-lockfile.*strategy: 'mkdir'/ })
  // Not a lockwright lock file: EEXIST, left as it is (a kernel lock file is ENOTDIR,
  // see mkdir-hostile.test.js).
  fs.writeFileSync(join(dir, 'b.json.lock'), 'a file')
  await assert.rejects(new LockManager({ strategy: 'mkdir' }).acquire(join(dir, 'b.json')), { code: 'EEXIST', message: /is not a lock file/ })
  assert.equal(fs.readFileSync(join(dir, 'b.json.lock'), 'utf8'), 'a file')
})

test('garbage at a lock path is not ours: a grant refuses it with EEXIST and leaves it byte for byte', async (t) => {
  const file = join(tempDir(t), 'a.json')
  const garbage = '\u0000\u0001 not json at all {{{'
  fs.writeFileSync(`${file}.lock`, garbage)
  const manager = new LockManager()
  // Not ours to judge (a sweep leaves it alone), and not ours to overwrite.
  assert.deepEqual([manager.statusSync(file).locked, manager.statusSync(file).stale], [false, false])
  await assert.rejects(manager.acquire(file, { timeout: 0 }), {
    code: 'EEXIST',
    message: /a\.json\.lock' exists and is not a lock file.*lockDir.*lockfilePath/,
  })
  assert.equal(fs.readFileSync(`${file}.lock`, 'utf8'), garbage)
  // Once the file is out of the way, the lock works.
  fs.unlinkSync(`${file}.lock`)
  const lock = await manager.acquire(file, { timeout: 0 })
  assert.equal(lock.token, 1)
  await lock.release()
})

test('releasing another process\'s lock by its id is ENOTACQUIRED', async (t) => {
  const file = join(tempDir(t), 'a.json')
  const other = new LockManager()
  const theirs = await other.acquire(file)
  await assert.rejects(new LockManager().release(theirs.id), { code: 'ENOTACQUIRED' })
  assert.equal(theirs.released, false)
  await theirs.release()
})
