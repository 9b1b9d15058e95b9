'use strict'
// A symlink and the file it names are one lock, as proper-lockfile's `realpath` makes them.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
const { LockManager } = require('../index.js')
const { tempDir, spawnAgent } = require('./helpers.js')

test('a symlink and the file it names are one lock; realpath: false keeps them apart', { skip: process.platform === 'win32' }, async (t) => {
  const dir = tempDir(t)
  const real = fs.realpathSync(dir)
  const file = join(dir, 'state.json')
  const link = join(dir, 'link.json')
  fs.writeFileSync(file, '{}')
  fs.symlinkSync('state.json', link)
  const holder = spawnAgent(t, { owner: 'holder' })
  const held = await holder.call('acquire', { path: file })

  const manager = new LockManager()
  assert.equal(manager.tryAcquire(link), null, 'the link was locked apart from its target')
  await assert.rejects(manager.acquire(link, { timeout: 0 }), { code: 'ELOCKED', message: /locked by holder/ })
  assert.equal(manager.statusSync(link).locked, true)

  // Turned off, per manager or per call, the link has a lock of its own.
  const own = new LockManager({ realpath: false }).tryAcquire(link)
  assert.equal(own.lockfilePath, `${link}.lock`)
  own.releaseSync()
  const perCall = manager.tryAcquire(link, { realpath: false })
  assert.equal(perCall.lockfilePath, `${link}.lock`)
  perCall.releaseSync()

  // A file that does not exist yet is resolved through its directory.
  const via = join(tempDir(t), 'via')
  fs.symlinkSync(dir, via)
  const fresh = manager.tryAcquire(join(via, 'new.json'))
  assert.equal(fresh.lockfilePath, join(real, 'new.json.lock'))
  fresh.releaseSync()

  // lockDir takes the real file's name; lockfilePath is used exactly as given.
  const lockDir = tempDir(t)
  const inDir = new LockManager({ lockDir })
  const inLockDir = inDir.tryAcquire(link)
  assert.equal(inLockDir.lockfilePath, join(lockDir, 'state.json.lock'))
  inLockDir.releaseSync()
  const exact = manager.tryAcquire(link, { lockfilePath: join(dir, 'exact.lock') })
  assert.equal(exact.lockfilePath, join(dir, 'exact.lock'))
  exact.releaseSync()

  await holder.call('release', { lockId: held.id })
  const after = manager.tryAcquire(link)
  assert.equal(after.path, join(real, 'state.json'))
  after.releaseSync()
})

test('a target replaced by atomic writes meanwhile still names its one lock file', async (t) => {
  const { spawn } = require('node:child_process')
  const { once } = require('node:events')
  const dir = tempDir(t)
  const file = join(fs.realpathSync(dir), 'tasks.json')
  fs.writeFileSync(file, '{}')
  // Another process replaces the file by rename, again and again, as writeFileAtomic does.
  const code = `const { writeFileAtomicSync } = require(${JSON.stringify(join(__dirname, '..'))});
    require('node:fs').writeSync(1, 'writing\\n'); for (;;) writeFileAtomicSync(${JSON.stringify(file)}, '{}', { fsync: false })`
  const writer = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.after(() => writer.kill('SIGKILL'))
  await once(writer.stdout, 'data')
  const manager = new LockManager()
  for (let i = 0; i < 3000; i++) {
    const lock = manager.acquireSync(file)
    assert.equal(lock.lockfilePath, `${file}.lock`)
    lock.releaseSync()
  }
  writer.kill('SIGKILL')
  await once(writer, 'exit') // before the directory is removed under it
})

test('each acquire resolves the path as it is now: a retargeted link, a moved directory', { skip: process.platform === 'win32' }, (t) => {
  const root = fs.realpathSync(tempDir(t))
  for (const dir of ['a', 'b']) {
    fs.mkdirSync(join(root, dir))
    fs.writeFileSync(join(root, dir, 'state.json'), '{}')
  }
  const link = join(root, 'current')
  fs.symlinkSync(join(root, 'a'), link)
  const manager = new LockManager()
  const lockfileOf = (path) => {
    const lock = manager.acquireSync(path)
    lock.releaseSync()
    return lock.lockfilePath
  }
  // Resolved once without links on the way and once through one, as a warm-up.
  assert.equal(lockfileOf(join(root, 'a', 'state.json')), join(root, 'a', 'state.json.lock'))
  assert.equal(lockfileOf(join(link, 'state.json')), join(root, 'a', 'state.json.lock'))

  // A deploy-style switch: the link now names b, which holds a file of the same name.
  fs.rmSync(link)
  fs.symlinkSync(join(root, 'b'), link)
  assert.equal(lockfileOf(join(link, 'state.json')), join(root, 'b', 'state.json.lock'))

  // The directory moved and a link left at its old name: the same spelling, another real path.
  fs.renameSync(join(root, 'a'), join(root, 'moved'))
  fs.symlinkSync(join(root, 'moved'), join(root, 'a'))
  assert.equal(lockfileOf(join(root, 'a', 'state.json')), join(root, 'moved', 'state.json.lock'))

  // `..` after a link is the parent of where the link leads (a string: join would fold it).
  fs.mkdirSync(join(root, 'b', 'inner'))
  fs.symlinkSync(join(root, 'b', 'inner'), join(root, 'deep'))
  assert.equal(lockfileOf(`${root}/deep/../state.json`), join(root, 'b', 'state.json.lock'))
  assert.equal(lockfileOf(`${root}/b/inner/../state.json`), join(root, 'b', 'state.json.lock'))
})
