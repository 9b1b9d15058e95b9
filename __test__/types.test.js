'use strict'
// The published types compile against real usage, `await using` included, and in every
// module mode what they compile also runs.

const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const { join } = require('node:path')

test('the public types and the proper-lockfile drop-in types check with tsc --strict', () => {
  const tsc = require.resolve('typescript/bin/tsc')
  try {
    execFileSync(process.execPath, [tsc, '-p', join(__dirname, 'types')], { encoding: 'utf8' })
  } catch (err) {
    assert.fail(`tsc failed:\n${err.stdout}${err.stderr}`)
  }
})

test('the same user code compiles under nodenext (CommonJS and ESM), node10 and bundler, and runs', async (t) => {
  const { tempDir } = require('./helpers.js')
  const { writeTypesProject, linkTypesNode, compileAndRun } = require('./types-project.js')
  const fs = require('node:fs')
  const root = tempDir(t)
  linkTypesNode(root)
  // This checkout, as node_modules/lockwright: no pack, so a type error shows at once.
  fs.symlinkSync(join(__dirname, '..'), join(root, 'node_modules', 'lockwright'), 'dir')
  writeTypesProject(root)
  await compileAndRun(root, { assert })
})
