'use strict'
// What a user installs: the package is packed with a production build of the addon,
// installed from the tarball into a project outside this checkout, and used there the
// ways users do. Only the packed files are there, so a file missing from `files` fails.

const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { join } = require('node:path')
const { tempDir, runCommand } = require('./helpers.js')
const { writeTypesProject, linkTypesNode, compileAndRun } = require('./types-project.js')

const root = join(__dirname, '..')
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const TEST_HOOKS = ['__panicForTest', '__waitsOnJsThread', 'benchmarkFloors']

/** Runs a command and fails the test with its output unless it exits 0. */
async function run(command, args, options) {
  const result = await runCommand(command, args, options)
  assert.equal(result.code, 0, `${command} ${args.join(' ')} failed:\n${result.stdout}${result.stderr}`)
  return result
}

/** The packed tarball, with a production build of the addon in it (this checkout's may have test hooks). */
async function packProduction(t) {
  const work = tempDir(t)
  const build = join(work, 'build')
  // `npm run build`, into a directory of its own: the checkout's binary stays as the suite built it.
  await run(process.execPath, [join(root, 'scripts', 'build.js'), '--platform', '--release', '--output-dir', build, '--js', 'binding.js', '--dts', 'binding.d.ts'], { cwd: root })
  // The generated loader and its types are committed: a build must not change them.
  for (const generated of ['binding.js', 'binding.d.ts']) {
    assert.equal(fs.readFileSync(join(build, generated), 'utf8'), fs.readFileSync(join(root, generated), 'utf8'), `${generated} is not what napi build generates; commit the regenerated one`)
  }
  const [binary] = fs.readdirSync(build).filter((f) => f.endsWith('.node'))
  const packed = await run(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: root })
  const [{ filename, files }] = JSON.parse(packed.stdout)
  assert.ok(files.some((f) => f.path === binary), `${binary} is in the tarball`)
  // The same tarball with the production binary in place of the checkout's.
  const unpacked = join(work, 'unpacked')
  fs.mkdirSync(unpacked)
  await run('tar', ['xzf', join(work, filename), '-C', unpacked])
  fs.copyFileSync(join(build, binary), join(unpacked, 'package', binary))
  const tarball = join(work, 'lockwright-production.tgz')
  await run('tar', ['czf', tarball, '-C', unpacked, 'package'])
  return { tarball, binary }
}

test('the packed package installs into another project and works there: CommonJS, ESM, TypeScript, the CLI', { skip: process.platform === 'win32' && 'uses tar' }, async (t) => {
  const { tarball, binary } = await packProduction(t)
  const app = tempDir(t)
  fs.writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }))
  await run(npm, ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: app })
  const installed = join(app, 'node_modules', 'lockwright')

  // TypeScript in every module mode, compiled and then run: each program uses
  // LockManager, updateJson and the proper-lockfile drop-in.
  linkTypesNode(app)
  writeTypesProject(app)
  await compileAndRun(app, { assert })

  // Plain JavaScript, both module systems.
  fs.writeFileSync(join(app, 'plain.cjs'), `const { LockManager } = require('lockwright'); const lockfile = require('lockwright/proper-lockfile')
const lock = new LockManager().acquireSync(__dirname + '/kernel.json'); lock.releaseSync()
lockfile.lockSync(__filename)(); console.log('cjs ok')`)
  fs.writeFileSync(join(app, 'plain.mjs'), `import { LockManager, updateJson } from 'lockwright'; import lockfile from 'lockwright/proper-lockfile'
const file = new URL('./state.json', import.meta.url).pathname
console.log(JSON.stringify(await updateJson(file, (s = { n: 0 }) => ({ n: s.n + 1 }))))
await new LockManager().withLock(file, () => {}); await (await lockfile(new URL(import.meta.url).pathname))(); console.log('esm ok')`)
  assert.match((await run(process.execPath, ['plain.cjs'], { cwd: app })).stdout, /cjs ok/)
  assert.match((await run(process.execPath, ['plain.mjs'], { cwd: app })).stdout, /\{"n":1\}\nesm ok/)

  const version = await run('npx', ['--no-install', 'lockwright', '--version'], { cwd: app })
  assert.equal(version.stdout, `${require('../package.json').version}\n`)

  // The production build has no test hooks.
  const binding = require(join(installed, 'binding.js'))
  assert.equal(typeof binding.NativeLockManager, 'function')
  for (const hook of TEST_HOOKS) assert.equal(binding[hook], undefined, `${hook} is not in the production build`)

  // Without a binary for this platform: an error that says which and how to build it;
  // the CLI's --help and --version still work.
  const bare = join(app, 'node_modules', 'lockwright-bare')
  fs.cpSync(installed, bare, { recursive: true })
  fs.rmSync(join(bare, binary))
  const platform = binary.replace(/^lockwright\.|\.node$/g, '')
  const missing = await runCommand(process.execPath, ['-e', `try { require(${JSON.stringify(bare)}) } catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })) }`])
  const { code, message } = JSON.parse(missing.stdout)
  assert.equal(code, 'ERR_LOCKWRIGHT_NO_BINARY')
  assert.ok(message.includes(`(${platform})`) && message.includes(`lockwright-${platform}`), message)
  assert.match(message, /npm run build/)
  assert.doesNotMatch(message, /npm has a bug/)
  for (const flag of ['--help', '--version']) await run(process.execPath, [join(bare, 'bin', 'lockwright.js'), flag])
})

test('the test hooks are in the build the suite runs, behind the test-hooks cargo feature', () => {
  // npm test builds with `--features test-hooks`; the test above proves `npm run build` has none.
  const binding = require('../binding.js')
  for (const hook of TEST_HOOKS) assert.equal(typeof binding[hook], 'function', hook)
})

test('the binary names in the missing-binary error are the per-platform packages under npm/', () => {
  const source = fs.readFileSync(join(root, 'lib', 'native.js'), 'utf8')
  const listed = source.match(/Prebuilt binaries: ([^.]+)\./)[1].split(', ').sort()
  assert.deepEqual(listed, fs.readdirSync(join(root, 'npm')).sort())
  for (const dir of listed) {
    const pkg = require(join(root, 'npm', dir, 'package.json'))
    assert.equal(pkg.name, `lockwright-${dir}`)
    assert.equal(pkg.version, require('../package.json').version)
  }
})

test('a build without Rust says so; as `prepare` in `npm install` it lets the install go on', async () => {
  const build = (env, ...args) => runCommand(process.execPath, [join(root, 'scripts', 'build.js'), ...args, '--platform'], { cwd: root, env: { PATH: join(root, 'no-such-dir'), ...env } })
  for (const result of [await build({}), await build({ npm_command: 'pack' }, '--as-prepare')]) {
    assert.equal(result.code, 1)
    assert.match(result.stderr, /Rust toolchain not found/)
    assert.doesNotMatch(result.stderr, /cargo metadata/)
  }
  const install = await build({ npm_command: 'install' }, '--as-prepare')
  assert.equal(install.code, 0)
  assert.match(install.stderr, /Rust toolchain not found, so the addon was not built/)
})
