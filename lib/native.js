'use strict'

/**
 * The addon, through the loader `napi build` generates (binding.js). When no binary
 * fits this platform, the error says which one was looked for and how to build it,
 * instead of the loader's "npm has a bug related to optional dependencies".
 */

/** The napi-rs platform name: `linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`. */
function platformName() {
  const { platform, arch } = process
  if (platform === 'linux') {
    const glibc = process.report?.getReport?.().header?.glibcVersionRuntime
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

function noBinary(cause) {
  const name = platformName()
  const err = new Error(
    `lockwright has no native binary for this platform (${name}): neither ` +
      `lockwright.${name}.node in the package nor the package lockwright-${name} is installed. ` +
      'Prebuilt binaries: linux-x64-gnu, linux-arm64-gnu, darwin-x64, darwin-arm64, win32-x64-msvc. ' +
      'To build from source (needs a Rust toolchain, https://rustup.rs): in a checkout of ' +
      'lockwright, run `npm install && npm run build`, then install that directory or its `npm pack` tarball.',
  )
  err.code = 'ERR_LOCKWRIGHT_NO_BINARY'
  err.cause = cause
  return err
}

let binding
try {
  binding = require('../binding.js')
} catch (err) {
  if (/Cannot find native binding|Failed to load native binding/.test(err.message)) throw noBinary(err)
  throw err
}

module.exports = binding
