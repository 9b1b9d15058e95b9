'use strict'

/**
 * A scratch TypeScript project that compiles `types/app.ts` as a user would, once per
 * module mode, with `lockwright` resolved from `<root>/node_modules`; used by the types
 * test (lockwright linked to this checkout) and the package test (lockwright installed
 * from the packed tarball).
 */

const fs = require('node:fs')
const { join } = require('node:path')
const { runCommand } = require('./helpers.js')

const COMMON = {
  target: 'ES2022',
  lib: ['ES2022', 'esnext.disposable'],
  types: ['node'],
  strict: true,
  outDir: 'out',
}

/** Each mode: the source file's name (its extension sets CJS or ESM) and compiler options. */
const MODES = {
  'nodenext-cjs': { source: 'app.cts', output: 'app.cjs', options: { module: 'nodenext', moduleResolution: 'nodenext' } },
  'nodenext-esm': { source: 'app.mts', output: 'app.mjs', options: { module: 'nodenext', moduleResolution: 'nodenext' } },
  node10: { source: 'app.ts', output: 'app.js', options: { module: 'commonjs', moduleResolution: 'node10', esModuleInterop: true } },
  bundler: { source: 'app.mts', output: 'app.mjs', options: { module: 'esnext', moduleResolution: 'bundler' } },
}

/** Writes `<root>/<mode>/` for every mode; `root/node_modules` must hold lockwright and @types/node. */
function writeTypesProject(root) {
  const app = fs.readFileSync(join(__dirname, 'types', 'app.ts'), 'utf8')
  for (const [mode, { source, options }] of Object.entries(MODES)) {
    const dir = join(root, mode)
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(join(dir, source), app)
    const tsconfig = { compilerOptions: { ...COMMON, ...options }, files: [source] }
    fs.writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2))
  }
}

/** Links this checkout's @types/node into `root/node_modules`, as a user's project has it. */
function linkTypesNode(root) {
  fs.mkdirSync(join(root, 'node_modules', '@types'), { recursive: true })
  fs.symlinkSync(join(__dirname, '..', 'node_modules', '@types', 'node'), join(root, 'node_modules', '@types', 'node'), 'dir')
}

/**
 * Compiles every mode with `tsc` (with `noEmit`, type checks only), then runs what
 * each emitted; fails with tsc's or the program's output.
 */
async function compileAndRun(root, { assert, noEmit = false, run = !noEmit }) {
  const tsc = require.resolve('typescript/bin/tsc')
  await Promise.all(
    Object.entries(MODES).map(async ([mode, { output }]) => {
      const dir = join(root, mode)
      const compiled = await runCommand(process.execPath, [tsc, '-p', dir, ...(noEmit ? ['--noEmit'] : [])])
      assert.equal(compiled.code, 0, `tsc (${mode}) failed:\n${compiled.stdout}${compiled.stderr}`)
      if (!run) return
      const ran = await runCommand(process.execPath, [join(dir, 'out', output)], { cwd: dir })
      assert.equal(ran.code, 0, `the ${mode} build failed when run:\n${ran.stdout}${ran.stderr}`)
      assert.match(ran.stdout, /types-app ok/)
    }),
  )
}

module.exports = { MODES, writeTypesProject, linkTypesNode, compileAndRun }
