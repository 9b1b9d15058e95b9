'use strict'

/**
 * proper-lockfile's API on lockwright, speaking its on-disk protocol: migrating is
 * one changed import, and processes still on proper-lockfile exclude processes on
 * this module. Options, defaults, clamps, error codes and messages are
 * proper-lockfile 4.1.2's. The differences: the mtime heartbeat runs on a native
 * thread (a blocked event loop no longer loses the lock), a holder proven dead (on
 * this host and in this PID namespace) is stale at once, two lockwright processes
 * cannot both win a stale takeover, and nothing is installed that swallows Ctrl-C.
 */

const fs = require('node:fs')
const path = require('node:path')
const retry = require('retry')

const { LockManager } = require('./lock-manager.js')

/** Held locks by canonical file, as proper-lockfile keeps them. */
const locks = {}
/** One mkdir-strategy manager per (stale, update) pair in use. */
const managers = new Map()

function withCode(err, code, extra) {
  return Object.assign(err, { code }, extra)
}

/**
 * proper-lockfile reports a lock lost to an `fs` error (the directory removed: ENOENT)
 * as that error re-coded ECOMPROMISED, its message kept. The native error's message
 * starts with the original code; the original is rebuilt as `err.cause`.
 */
function withCause(err) {
  const original = err?.code === 'ECOMPROMISED' && /^(E[A-Z0-9]+): /.exec(err.message)
  if (original && err.cause === undefined) {
    err.cause = Object.assign(new Error(err.message), { code: original[1], path: err.path })
  }
  return err
}

function lockedError(file) {
  return withCode(new Error('Lock file is already being held'), 'ELOCKED', { file })
}

function normalizeLockOptions(options) {
  const opts = {
    stale: 10000,
    update: null,
    realpath: true,
    retries: 0,
    fs,
    onCompromised: (err) => {
      throw err
    },
    ...options,
  }
  opts.retries = opts.retries || 0
  opts.retries = typeof opts.retries === 'number' ? { retries: opts.retries } : opts.retries
  opts.stale = Math.max(opts.stale || 0, 2000)
  opts.update = opts.update == null ? opts.stale / 2 : opts.update || 0
  opts.update = Math.max(Math.min(opts.update, opts.stale / 2), 1000)
  return opts
}

function normalizeCheckOptions(options) {
  const opts = { stale: 10000, realpath: true, fs, ...options }
  opts.stale = Math.max(opts.stale || 0, 2000)
  return opts
}

/** proper-lockfile's sync API refuses retries: it cannot wait between them. */
function rejectSyncRetries(options) {
  const retries = options?.retries
  if ((typeof retries === 'number' && retries > 0) || (retries && typeof retries.retries === 'number' && retries.retries > 0)) {
    throw withCode(new Error('Cannot use retries with the sync api'), 'ESYNC')
  }
}

/** `options.fs` (graceful-fs, say) is used where proper-lockfile uses it for paths. */
function canonicalSync(file, options) {
  if (!options.realpath) return path.resolve(file)
  const custom = options.fs
  return typeof custom?.realpathSync === 'function' ? custom.realpathSync(file) : fs.realpathSync(file)
}

async function canonical(file, options) {
  if (!options.realpath) return path.resolve(file)
  const custom = options.fs
  if (typeof custom?.realpath !== 'function') return fs.promises.realpath(file)
  return new Promise((resolve, reject) => custom.realpath(file, (err, resolved) => (err ? reject(err) : resolve(resolved))))
}

function lockfileOf(file, options) {
  return options.lockfilePath || `${file}.lock`
}

function managerFor(options) {
  const key = `${options.stale}:${options.update}`
  let manager = managers.get(key)
  if (!manager) {
    manager = new LockManager({ strategy: 'mkdir', stale: options.stale, heartbeat: options.update })
    manager.on('compromised', (err) => compromised(err))
    managers.set(key, manager)
  }
  return manager
}

function compromised(err) {
  const file = Object.keys(locks).find((f) => locks[f].lock.id === err.lockId)
  if (file === undefined) return
  const held = locks[file]
  held.released = true
  delete locks[file]
  held.lock.release().catch(() => {}) // already lost; just forget it
  held.options.onCompromised(withCause(err))
}

/** One attempt; throws ELOCKED when held. */
function attempt(file, options) {
  const lock = managerFor(options).tryAcquire(file, { lockfilePath: lockfileOf(file, options) })
  if (lock === null) throw lockedError(file)
  const held = { lock, options, released: false }
  locks[file] = held
  return held
}

/**
 * The release function `lock` resolves to. `file` is canonical already, so it
 * releases at once: a second call, even one made before the first settles, is then
 * ERELEASED, as with proper-lockfile.
 */
function releaserFor(file, held, sync) {
  const release = () => {
    if (held.released) throw withCode(new Error('Lock is already released'), 'ERELEASED')
    releaseHeld(file)
  }
  return sync ? release : async () => release()
}

async function lock(file, options) {
  const opts = normalizeLockOptions(options)
  const resolved = await canonical(file, opts)
  const operation = retry.operation(opts.retries)
  const held = await new Promise((resolve, reject) => {
    operation.attempt(() => {
      let err = null
      let acquired
      try {
        acquired = attempt(resolved, opts)
      } catch (e) {
        err = e
      }
      if (operation.retry(err)) return
      if (err) reject(operation.mainError())
      else resolve(acquired)
    })
  })
  return releaserFor(resolved, held, false)
}

function lockSync(file, options) {
  rejectSyncRetries(options)
  const opts = normalizeLockOptions(options)
  const resolved = canonicalSync(file, opts)
  return releaserFor(resolved, attempt(resolved, opts), true)
}

function releaseHeld(file) {
  const held = locks[file]
  if (!held) throw withCode(new Error('Lock is not acquired/owned by you'), 'ENOTACQUIRED')
  held.released = true
  delete locks[file]
  try {
    held.lock.releaseSync()
  } catch (err) {
    throw withCause(err)
  }
}

async function unlock(file, options) {
  const opts = { realpath: true, ...options }
  releaseHeld(await canonical(file, opts))
}

function unlockSync(file, options) {
  rejectSyncRetries(options)
  const opts = { realpath: true, ...options }
  releaseHeld(canonicalSync(file, opts))
}

function isLocked(file, options) {
  try {
    // lstat: a symlink planted at the lock's name is judged itself, never followed.
    const stat = fs.lstatSync(lockfileOf(file, options))
    if (stat.mtime.getTime() < Date.now() - options.stale) return false
    // Not a lock directory: proper-lockfile judges it by its mtime alone.
    if (!stat.isDirectory()) return true
  } catch (err) {
    if (err.code === 'ENOENT') return false
    throw err
  }
  // Fresh by its mtime; lockwright also knows a dead holder on this host at once.
  return managerFor({ stale: options.stale, update: Math.max(options.stale / 2, 1000) })
    .statusSync(file, { lockfilePath: lockfileOf(file, options) }).locked
}

async function check(file, options) {
  const opts = normalizeCheckOptions(options)
  return isLocked(await canonical(file, opts), opts)
}

function checkSync(file, options) {
  rejectSyncRetries(options)
  const opts = normalizeCheckOptions(options)
  return isLocked(canonicalSync(file, opts), opts)
}

module.exports = lock
module.exports.lock = lock
module.exports.unlock = unlock
module.exports.lockSync = lockSync
module.exports.unlockSync = unlockSync
module.exports.check = check
module.exports.checkSync = checkSync
