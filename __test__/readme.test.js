'use strict'
// The README's examples, run as written: each fenced block is taken from README.md
// itself, so an example that stops working fails here.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
const { tempDir, runCommand } = require('./helpers.js')
const { LockManager } = require('../index.js')

const root = join(__dirname, '..')
const readme = fs.readFileSync(join(root, 'README.md'), 'utf8')

/** The first fenced block of `lang` after `marker` in the README. */
function block(marker, lang = 'js') {
  const at = readme.indexOf(marker)
  assert.notEqual(at, -1, `README has "${marker}"`)
  return readme.slice(at).match(new RegExp('```' + lang + '\\n([\\s\\S]*?)```'))[1]
}

/**
 * Runs `code` inside an async function in `dir`, after `prelude` (what the example
 * leaves to the reader), with `require('lockwright')` resolving to this checkout.
 */
async function runExample(dir, prelude, code, after = '') {
  if (!fs.existsSync(join(dir, 'node_modules'))) {
    fs.mkdirSync(join(dir, 'node_modules'))
    fs.symlinkSync(root, join(dir, 'node_modules', 'lockwright'), 'dir')
  }
  fs.writeFileSync(join(dir, 'example.js'), `(async () => {\n${prelude}\n${code}\n${after}\n})().catch((err) => {\n  console.error(err)\n  process.exitCode = 1\n})\n`)
  const run = await runCommand(process.execPath, ['example.js'], { cwd: dir })
  assert.equal(run.code, 0, `${code}\n${run.stderr}`)
  return run
}

test('README, Use: withLock, read and write locks, acquire and release', async (t) => {
  const dir = tempDir(t)
  fs.writeFileSync(join(dir, 'tasks.json'), '[]')
  const prelude = "const newTask = 'write docs'; const query = () => 'rows'; const rebuild = () => {}"
  await runExample(dir, prelude, block('## Use'))
  assert.deepEqual(JSON.parse(fs.readFileSync(join(dir, 'tasks.json'), 'utf8')), ['write docs'])
  assert.equal(new LockManager().statusSync(join(dir, 'tasks.json')).locked, false)
})

test('README, Use: `await using`, compiled by TypeScript, runs on this Node and releases at the end of the scope', async (t) => {
  const ts = require('typescript')
  const dir = tempDir(t)
  const code = block('Or let `await using` release the lock')
  // Node 24 runs the syntax itself; TypeScript lowers it for Node 20.
  const { outputText } = ts.transpileModule(`export {}\nasync function scope() {\n${code}\n  return locks.statusSync('tasks.json').locked\n}`, {
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'] },
  })
  const prelude = "const { LockManager } = require('lockwright'); const locks = new LockManager()"
  const after = "if (!(await scope())) throw new Error('not held inside the scope'); if (locks.statusSync('tasks.json').locked) throw new Error('held after the scope')"
  await runExample(dir, `${prelude}\n${outputText}`, '', after)
})

test('README, Atomic files and locked JSON: updateJson on a missing file writes the default, then keeps a backup', async (t) => {
  const dir = tempDir(t)
  const prelude = "const task = 'write docs'; const text = 'report'"
  const code = block('## Atomic files and locked JSON')
  const first = await runExample(dir, prelude, code, 'console.log(JSON.stringify(tasks))')
  assert.equal(first.stdout, '{"tasks":["write docs"]}\n')
  assert.equal(fs.existsSync(join(dir, 'tasks.json.bak')), false)
  assert.equal(fs.readFileSync(join(dir, 'report.txt'), 'utf8'), 'report')
  const second = await runExample(dir, prelude, code, 'console.log(JSON.stringify(tasks))')
  assert.equal(second.stdout, '{"tasks":["write docs","write docs"]}\n')
  assert.deepEqual(JSON.parse(fs.readFileSync(join(dir, 'tasks.json.bak'), 'utf8')), { tasks: ['write docs'] })
})

test('README, Who holds it: status, cleanupStaleLocks and forceRelease are awaited', async (t) => {
  const dir = tempDir(t)
  fs.mkdirSync(join(dir, '.locks'))
  const prelude = "const { LockManager } = require('lockwright'); const locks = new LockManager()"
  const code = block('### Who holds it')
  assert.match(code, /await locks\.cleanupStaleLocks/)
  await runExample(dir, prelude, code)
})

test("README's .gitignore lines hide every file a lock leaves, and not yarn.lock, Cargo.lock or Gemfile.lock", async (t) => {
  const dir = tempDir(t)
  const run = async (...args) => {
    const result = await runCommand('git', args, { cwd: dir })
    assert.equal(result.code, 0, result.stderr)
    return result.stdout
  }
  await run('init', '-q')
  fs.writeFileSync(join(dir, '.gitignore'), block('Files a lock leaves on disk', 'gitignore'))
  for (const name of ['yarn.lock', 'Cargo.lock', 'Gemfile.lock', 'tasks.json']) fs.writeFileSync(join(dir, name), '')
  const kernel = new LockManager()
  const mkdir = new LockManager({ strategy: 'mkdir' })
  t.after(() => Promise.all([kernel.close(), mkdir.close()]))
  // Every kind of file: lock files used by writers, readers and a waiting writer (on
  // Linux all three live in the lock file), and the mkdir protocol's.
  await kernel.acquire(join(dir, 'tasks.json'))
  await kernel.acquire(join(dir, 'index.json'), { mode: 'shared' })
  await assert.rejects(kernel.acquire(join(dir, 'index.json'), { timeout: 20 }), { code: 'ETIMEOUT' })
  await mkdir.acquire(join(dir, 'state.json'))
  const made = fs.readdirSync(dir).filter((f) => f.includes('.lock') && !/^(yarn|Cargo|Gemfile)\.lock$/.test(f))
  const kernelFiles = process.platform === 'linux' ? ['index.json.lock'] : ['index.json.lock.readers', 'index.json.lock.writer-waiting']
  for (const kind of ['tasks.json.lock', ...kernelFiles, 'state.json.lock', 'state.json.lock.owner.json', 'state.json.lock.token']) {
    assert.ok(made.includes(kind), `${kind} among ${made}`)
  }
  const status = await run('status', '--porcelain', '--ignored', '--untracked-files=all')
  for (const file of made) assert.match(status, new RegExp(`^!! ${file.replace(/\./g, '\\.')}`, 'm'), `${file} is ignored:\n${status}`)
  for (const kept of ['yarn.lock', 'Cargo.lock', 'Gemfile.lock', 'tasks.json']) assert.match(status, new RegExp(`^\\?\\? ${kept.replace(/\./g, '\\.')}$`, 'm'))
})
