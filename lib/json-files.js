'use strict'

/**
 * What users take the lock for: replacing a file so a crash never tears it, and
 * read-modify-write of a JSON state file in one call.
 */

const fs = require('node:fs')

const native = require('./native.js')
const { lockError, invalidFor, checkOptionNames } = require('./errors.js')

const UPDATE_OPTIONS = ['backup', 'space', 'mode', 'timeout', 'signal', 'lockfilePath']

function toBuffer(data, path) {
  if (typeof data === 'string') return Buffer.from(data)
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const message = 'data must be a string, a Buffer or a typed array'
  throw typeof path === 'string' ? lockError('EINVAL', `${message}, writing '${path}'`, path) : lockError('EINVAL', message)
}

/** Temp file, write, fsync, rename, fsync the directory; keeps the file's mode. */
async function writeFileAtomic(path, data, options) {
  return native.writeFileAtomic(path, toBuffer(data, path), options)
}

function writeFileAtomicSync(path, data, options) {
  native.writeFileAtomicSync(path, toBuffer(data, path), options)
}

/** `{ text, data }` of a JSON file; both undefined when it does not exist. */
async function readJsonFile(path) {
  let text
  try {
    text = await fs.promises.readFile(path, 'utf8')
  } catch (err) {
    if (err.code === 'ENOENT') return { text: undefined, data: undefined }
    throw err
  }
  try {
    return { text, data: JSON.parse(text) }
  } catch (err) {
    throw lockError('EJSONPARSE', `${path} is not valid JSON (${err.message}); it was left untouched`, path)
  }
}

/**
 * Reads `path` under a shared lock, or the exclusive one this context already
 * holds. A missing file reads as undefined.
 */
async function readJson(manager, path, options) {
  // proper-lockfile's protocol has no shared locks: there a read takes the lock whole.
  const mode = manager._sharedLocks ? 'shared' : 'exclusive'
  return manager.withLock(path, async () => (await readJsonFile(path)).data, { ...options, mode })
}

/**
 * Under an exclusive lock: reads `path` (missing: undefined), calls `fn(data)` (sync
 * or async), and writes atomically what it returns, or `data` itself when it returns
 * undefined after changing it in place. Resolves to what was written.
 */
async function updateJson(manager, path, fn, options) {
  if (typeof fn !== 'function') throw invalidFor('fn must be a function', path)
  checkOptionNames(options, UPDATE_OPTIONS, path)
  const { backup = false, space = 2, ...lockOptions } = options ?? {}
  if (typeof backup !== 'boolean') throw invalidFor('backup must be a boolean', path)
  // Anything else (a string of other characters, say) would make the file invalid JSON.
  if (!(Number.isInteger(space) && space >= 0) && !(typeof space === 'string' && /^\s*$/.test(space))) {
    throw invalidFor('space must be a non-negative integer or a string of whitespace', path)
  }
  return manager.withLock(
    path,
    async () => {
      const { text, data } = await readJsonFile(path)
      const returned = await fn(data)
      const next = returned === undefined ? data : returned
      if (next === undefined) return undefined
      let json
      try {
        json = JSON.stringify(next, null, space)
      } catch (err) {
        // A BigInt or a circular reference: a TypeError with no code of its own.
        throw invalidFor(`fn returned a value JSON cannot hold (${err.message}); ${path} was left untouched`, path)
      }
      if (typeof json !== 'string') {
        throw invalidFor(`fn returned ${typeof next}, which is not JSON; ${path} was left untouched`, path)
      }
      // The previous content, kept as it was (vectra's backup, aiconfig's --backup).
      if (backup && text !== undefined) await writeFileAtomic(`${path}.bak`, text)
      await writeFileAtomic(path, `${json}\n`)
      return next
    },
    { ...lockOptions, mode: 'exclusive' },
  )
}

module.exports = { writeFileAtomic, writeFileAtomicSync, readJson, updateJson }
