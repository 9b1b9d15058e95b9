#!/usr/bin/env node
'use strict'

// `napi build` with the given arguments, after checking that a Rust toolchain is
// there: without one, napi fails with "cargo metadata failed to run", which does not
// say what is missing.

const { spawnSync } = require('node:child_process')
const { dirname, join } = require('node:path')

const args = process.argv.slice(2)
const rustMissing = () => {
  const cargo = spawnSync('cargo', ['--version'], { stdio: 'ignore' })
  return cargo.error !== undefined || cargo.status !== 0
}

// As the `prepare` script, which npm runs on `npm install` and `npm ci` in a checkout,
// on `npm pack` and `npm publish`, and when installing from a git URL: build, so the
// checkout, a packed tarball and a git install carry this platform's binary. Except:
// - `npm publish`: the binaries are the per-platform packages `napi prepublish`
//   publishes, and the publishing machine may have no Rust. A binary left in the
//   checkout (after `npm test`, one with the test hooks) is not published either.
// - `npm install`/`npm ci` in a checkout without Rust: say so, and install anyway.
if (args[0] === '--as-prepare') {
  args.shift()
  if (process.env.npm_command === 'publish') {
    const { readdirSync, rmSync } = require('node:fs')
    const root = join(__dirname, '..')
    for (const file of readdirSync(root).filter((f) => /^lockwright\..+\.node$/.test(f))) {
      console.error(`lockwright: publishing without ${file}: the per-platform packages carry the binaries`)
      rmSync(join(root, file))
    }
    process.exit(0)
  }
  if (['install', 'ci'].includes(process.env.npm_command) && rustMissing()) {
    console.error('lockwright: Rust toolchain not found, so the addon was not built; `npm run build` needs Rust (https://rustup.rs).')
    process.exit(0)
  }
}

if (rustMissing()) {
  console.error(
    'lockwright: Rust toolchain not found (no `cargo` on PATH). Building lockwright from ' +
      'source needs Rust: install it from https://rustup.rs, then run `npm run build` again.',
  )
  process.exit(1)
}

const cliPackage = require.resolve('@napi-rs/cli/package.json')
const cli = join(dirname(cliPackage), require(cliPackage).bin.napi)
const build = spawnSync(process.execPath, [cli, 'build', ...args], { stdio: 'inherit' })
process.exit(build.status ?? 1)
