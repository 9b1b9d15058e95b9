#!/usr/bin/env node
'use strict'

// `napi build` with the given arguments, after checking that a Rust toolchain is
// there: without one, napi fails with "cargo metadata failed to run", which does not
// say what is missing.

const { spawnSync } = require('node:child_process')
const { dirname, join } = require('node:path')

const cargo = spawnSync('cargo', ['--version'], { stdio: 'ignore' })
if (cargo.error || cargo.status !== 0) {
  console.error(
    'lockwright: Rust toolchain not found (no `cargo` on PATH). Building lockwright from ' +
      'source needs Rust: install it from https://rustup.rs, then run `npm run build` again.',
  )
  process.exit(1)
}

const cliPackage = require.resolve('@napi-rs/cli/package.json')
const cli = join(dirname(cliPackage), require(cliPackage).bin.napi)
const build = spawnSync(process.execPath, [cli, 'build', ...process.argv.slice(2)], { stdio: 'inherit' })
process.exit(build.status ?? 1)
