'use strict'

const { AsyncLocalStorage } = require('node:async_hooks')
const { EventEmitter } = require('node:events')
const { statSync } = require('node:fs')
const { isAbsolute } = require('node:path')
const { basename } = require('node:path')

const native = require('./native.js')
const { lockError, invalidFor, checkOptionNames } = require('./errors.js')
const exitRelease = require('./exit-release.js')
const jsonFiles = require('./json-files.js')
const { Lock } = require('./lock.js')

/** The owner label when none is given: the running script's name, as `ps` shows it. */
function defaultOwner() {
  const script = process.argv[1]
  return script ? basename(script) : basename(process.argv0 || 'node')
}

function checkFunction(fn, path) {
  if (typeof fn !== 'function') {
    throw invalidFor(`fn must be a function, got ${fn === null ? 'null' : typeof fn}`, path)
  }
}

function checkSignal(signal, path) {
  if (signal === undefined || signal === null) return undefined
  if (typeof signal !== 'object' || typeof signal.aborted !== 'boolean' || typeof signal.addEventListener !== 'function') {
    throw invalidFor('signal must be an AbortSignal', path)
  }
  if (signal.aborted) throw lockError('ABORT_ERR', `The wait for the lock on ${path} was aborted`, path)
  return signal
}

const MANAGER_OPTIONS = ['owner', 'lockDir', 'strategy', 'redis', 'timeout', 'stale', 'heartbeat', 'realpath', 'metrics', 'onCompromised', 'debug']
const ACQUIRE_OPTIONS = ['mode', 'timeout', 'signal', 'lockfilePath', 'realpath']

/** `debug: true`, a function, or LOCKWRIGHT_DEBUG=1: where debug lines go, if anywhere. */
function debugSink(debug) {
  if (typeof debug === 'function') return debug
  if (debug === true || (debug === undefined && /^(1|true|yes)$/i.test(process.env.LOCKWRIGHT_DEBUG ?? ''))) {
    return (line) => process.stderr.write(`${line}\n`)
  }
  if (debug !== undefined && debug !== false) throw lockError('EINVAL', 'debug must be a boolean or a function')
  return null
}

/**
 * A granted lock as plain data, built for the addon: one call with plain values is
 * cheaper than the addon building an object with named properties itself.
 */
function makeGrant(id, token, acquiredAt, lockId, path, lockfilePath, shared) {
  return { id, path, lockfilePath, mode: shared ? 'shared' : 'exclusive', token, lockId, acquiredAt }
}

const NO_FAILURE = Symbol('no failure')

/** The longest delay `setTimeout` takes as given. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * Settles when `previous` (the calls that re-entered a lock before this one) does,
 * or rejects when `timeout` (if positive and countable) passes or `signal` aborts first.
 */
function untilTurn(previous, path, timeout, signal) {
  // Longer than a timer can count (Node cuts such a delay to 1 ms): as good as forever.
  const bounded = timeout > 0 && timeout <= MAX_TIMER_MS
  if (!bounded && !signal) return previous
  return new Promise((resolve, reject) => {
    const end = (err) => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', aborted)
      if (err) reject(err)
      else resolve()
    }
    const timer = bounded ? setTimeout(() => end(lockError('ETIMEOUT', `Timed out after ${timeout} ms waiting for the lock on ${path}: calls that re-entered it before this one have not finished`, path)), timeout) : undefined
    const aborted = () => end(lockError('ABORT_ERR', `The wait for the lock on ${path} was aborted`, path))
    signal?.addEventListener('abort', aborted, { once: true })
    previous.then(() => end())
  })
}

/**
 * Releases the lock `withLock` took. A lock lost while `fn` ran fails the release
 * with ECOMPROMISED, which the caller must see even if `fn` succeeded; if `fn` threw,
 * its error is kept as the `cause`. `withoutBlocking` (async `withLock`): a Redis
 * release's round trip runs off this thread, and a Promise of it is returned.
 */
function releaseAfter(lock, failure, withoutBlocking = false) {
  const failed = (err) => {
    // Released already, by hand or by the manager's close(): nothing left to do.
    // Asked this way, not through `lock.released`, which is one more call into the addon.
    if (err.code === 'ERELEASED') return
    if (failure !== NO_FAILURE) err.cause = failure
    throw err
  }
  try {
    return lock._release(withoutBlocking)?.catch(failed)
  } catch (err) {
    failed(err)
  }
}

/**
 * The level in `held` whose lock file is `lockfile` under another spelling
 * (`d/../f.lock`, a symlinked directory): compared by device and inode, since a
 * lexical clean-up of the path would be wrong across symlinks.
 */
function sameFileIn(held, lockfile) {
  // Redis locks are named by keys, not files: only their own name matches them.
  if (!isAbsolute(lockfile)) return undefined
  const wanted = statSync(lockfile, { bigint: true, throwIfNoEntry: false })
  if (!wanted) return undefined
  for (const level of held.values()) {
    if (!isAbsolute(level.lock.lockfilePath)) continue
    // A held lock file stays put: its identity is read once per level.
    level.file ??= statSync(level.lock.lockfilePath, { bigint: true, throwIfNoEntry: false }) ?? null
    if (level.file && level.file.dev === wanted.dev && level.file.ino === wanted.ino) return level
  }
  return undefined
}

/**
 * Locks held in the current async context, by lock file: what `withLock` re-enters.
 * One store for every manager in the process (every copy of this module too): a
 * lock that one manager holds here is the same kernel lock for all of them, so a
 * call through another (the module-level `updateJson`) must re-enter it, not wait
 * for itself.
 */
const context = (globalThis[Symbol.for('lockwright.context')] ??= new AsyncLocalStorage())

/** A level's `last` until a call re-enters it. */
const NOTHING_PENDING = Promise.resolve()

/** Resolves once every call that re-entered `level` is done, later ones included. */
async function settled(level) {
  for (let last; last !== level.last; ) {
    last = level.last
    await last
  }
}

class LockManager extends EventEmitter {
  #debug

  constructor(options) {
    super()
    if (options !== undefined && options !== null && typeof options !== 'object') {
      throw lockError('EINVAL', `options must be an object, got ${typeof options}`)
    }
    checkOptionNames(options, MANAGER_OPTIONS)
    const owner = options?.owner === undefined ? defaultOwner() : options.owner
    const onCompromised = options?.onCompromised
    if (onCompromised !== undefined && typeof onCompromised !== 'function') {
      throw lockError('EINVAL', 'onCompromised must be a function')
    }
    this.#debug = debugSink(options?.debug)
    this._native = new native.NativeLockManager({ ...options, owner })
    /** proper-lockfile's mkdir protocol has exclusive locks only. */
    this._sharedLocks = options?.strategy !== 'mkdir'
    // A lost lock is reported, never thrown: nothing can catch an error raised from
    // a heartbeat, so throwing would only crash the process.
    this._native.onCompromised(([lockId, code, message, path]) => {
      const err = lockError(code, message, path)
      err.lockId = lockId
      this.#log(`compromised ${lockId}: ${message}`)
      onCompromised?.(err)
      this.emit('compromised', err)
    })
  }

  get owner() {
    return this._native.owner
  }

  /** Resolves once the lock is held; see the README for every option. */
  async acquire(path, options) {
    return this.#acquire(path, options)
  }

  /** The `Lock` at once when the lock is free, else a promise of it. */
  #acquire(path, options) {
    checkOptionNames(options, ACQUIRE_OPTIONS, path)
    const signal = checkSignal(options?.signal, path)
    const canceller = signal ? new native.WaitCanceller() : undefined
    const granted = this._native.acquire(path, options, canceller, makeGrant)
    // Not `instanceof Promise`: under Jest's vm contexts the addon's promise comes from
    // another realm, whose Promise is not this one.
    if (typeof granted.then !== 'function') return this._adopt(granted)
    return this.#waitFor(granted, path, options, signal, canceller)
  }

  async #waitFor(granted, path, options, signal, canceller) {
    this.#log(`wait ${options?.mode ?? 'exclusive'} ${path}`)
    const onAbort = () => canceller.cancel()
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      return this._adopt(await granted)
    } catch (err) {
      this.#log(`${err.code === 'ETIMEOUT' ? 'timeout' : 'failed'} ${path}: ${err.message}`)
      throw err
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /** The lock if it is free now, else `null`; never waits. */
  tryAcquire(path, options) {
    checkOptionNames(options, ACQUIRE_OPTIONS, path)
    const grant = this._native.tryAcquire(path, options, makeGrant)
    return grant === null ? null : this._adopt(grant)
  }

  /** Waits on this thread, up to `timeout`. */
  acquireSync(path, options) {
    checkOptionNames(options, ACQUIRE_OPTIONS, path)
    return this._adopt(this._native.acquireSync(path, options, makeGrant))
  }

  /**
   * Runs `fn(lock)` holding the lock and releases it however `fn` ends. Inside `fn`,
   * another `withLock` on the same file re-enters instead of deadlocking; calls that
   * re-enter side by side take turns, and all finish before the lock is released.
   */
  async withLock(path, fn, options) {
    checkFunction(fn, path)
    const outer = this.#reentry(path, options)
    // A withLockSync level releases before any await could run: take the lock anew.
    if (outer && !outer.sync) return this.#inTurn(outer, fn, path, options)
    // A free lock is taken without a turn of the event loop.
    const pending = this.#acquire(path, options)
    const lock = pending instanceof Lock ? pending : await pending
    const level = { lock, last: NOTHING_PENDING, queued: 0 }
    let failure = NO_FAILURE
    try {
      const result = context.run(this.#withLevel(level), fn, lock)
      // A synchronous `fn` is done: no turn of the event loop before the release.
      return typeof result?.then === 'function' ? await result : result
    } catch (err) {
      failure = err
      throw err
    } finally {
      if (level.last !== NOTHING_PENDING) await settled(level)
      const released = releaseAfter(lock, failure, true)
      if (released) await released
    }
  }

  withLockSync(path, fn, options) {
    checkFunction(fn, path)
    const outer = this.#reentry(path, options)
    if (outer) return fn(outer.lock)
    const lock = this.acquireSync(path, options)
    let failure = NO_FAILURE
    try {
      return context.run(this.#withLevel({ lock, sync: true }), fn, lock)
    } catch (err) {
      failure = err
      throw err
    } finally {
      releaseAfter(lock, failure)
    }
  }

  withReadLock(path, fn, options) {
    return this.withLock(path, fn, { ...options, mode: 'shared' })
  }

  withWriteLock(path, fn, options) {
    return this.withLock(path, fn, { ...options, mode: 'exclusive' })
  }

  /** Reads a JSON file under a shared lock (or the lock this context holds). */
  readJson(path, options) {
    return jsonFiles.readJson(this, path, options)
  }

  /** Read-modify-write of a JSON file under an exclusive lock, written atomically. */
  updateJson(path, fn, options) {
    return jsonFiles.updateJson(this, path, fn, options)
  }

  /** Releases a `Lock`, a lock id, or every lock this manager holds on a path. */
  async release(target) {
    if (target instanceof Lock) {
      // Another manager's lock is not ours to release, even in this process.
      if (target._manager !== this) {
        throw lockError('ENOTACQUIRED', `The lock on ${target.path} is held by another LockManager`, target.path)
      }
      return target.release()
    }
    const held = typeof target === 'string' ? this._native.held().find((g) => g.lockId === target) : undefined
    if (held) return this._releaseGrant(held.id, false, true)
    if (typeof target !== 'string') throw lockError('EINVAL', 'release takes a Lock, a lock id or a path')
    this._native.releasePath(target)
    this._afterRelease()
  }

  /**
   * Who holds the lock on `path` (in any process), and whether they are alive. The
   * records are read and the processes looked up on the threadpool.
   */
  async status(path, options) {
    checkOptionNames(options, ACQUIRE_OPTIONS, path)
    return this.#logStale(await this._native.status(path, options))
  }

  statusSync(path, options) {
    checkOptionNames(options, ACQUIRE_OPTIONS, path)
    return this.#logStale(this._native.statusSync(path, options))
  }

  /** The status of every lock file in `dir` (default: this manager's lockDir). */
  async list(dir) {
    return this._native.list(dir)
  }

  listSync(dir) {
    return this._native.listSync(dir)
  }

  #logStale(status) {
    if (status.stale) this.#log(`stale ${status.lockfilePath}`)
    return status
  }

  /**
   * Removes what dead holders left in `dir` (default: lockDir): lock files whose
   * holder died, corrupted ones, dead readers' records. Never a held lock. With
   * `dryRun`, makes the same checks and lists what it would remove, removing nothing.
   */
  async cleanupStaleLocks(dir, options) {
    if (options !== undefined && (options === null || typeof options !== 'object')) {
      throw lockError('EINVAL', 'options must be an object')
    }
    if (options?.dryRun !== undefined && typeof options.dryRun !== 'boolean') {
      throw lockError('EINVAL', 'dryRun must be a boolean')
    }
    checkOptionNames(options, ['dryRun'])
    const dryRun = options?.dryRun === true
    const report = await this._native.cleanup(dir, dryRun)
    if (!dryRun) {
      for (const path of report.cleared) this.#log(`cleanup cleared ${path}`)
      for (const path of report.removed) this.#log(`cleanup removed ${path}`)
    }
    return report
  }

  /**
   * Breaks the lock on `path` when its holder is gone. A kernel lock held by a live
   * process cannot be broken by anyone else: that is ELOCKED, with `force` or not.
   */
  async forceRelease(path, options) {
    if (options !== undefined && (options === null || typeof options !== 'object')) {
      throw invalidFor('options must be an object', path)
    }
    if (options?.force !== undefined && typeof options.force !== 'boolean') {
      throw invalidFor('force must be a boolean', path)
    }
    checkOptionNames(options, [...ACQUIRE_OPTIONS, 'force'], path)
    const changed = await this._native.forceRelease(path, options, options?.force === true)
    if (changed) this.#log(`force-release cleared the leftovers of ${path}`)
    return changed
  }

  /** Counts and wait/hold time distributions (ms) since creation or `resetMetrics()`. */
  metrics() {
    return this._native.metrics()
  }

  resetMetrics() {
    this._native.resetMetrics()
  }

  /** Ends this manager's waits and releases everything it holds (on Redis, off this thread). */
  async close() {
    const givenBack = this._native.close()
    this._afterRelease()
    await givenBack
  }

  /**
   * The level holding the same lock file in this async context, if any: `{ lock,
   * last }`, where `last` settles when the calls that re-entered it so far are done,
   * or `{ lock, sync: true }` for `withLockSync`, which nothing can queue behind.
   */
  #reentry(path, options) {
    checkOptionNames(options, ACQUIRE_OPTIONS, path)
    const held = context.getStore()
    // Outside every withLock nothing can be re-entered: skip resolving the path,
    // which costs a realpath and a call into the addon.
    if (!held?.size) return undefined
    const lockfile = this._native.lockfileFor(path, options)
    const outer = held.get(lockfile) ?? sameFileIn(held, lockfile)
    if (!outer || outer.lock.released) return undefined
    if (outer.lock.mode === 'shared' && (options?.mode ?? 'exclusive') === 'exclusive') {
      throw lockError('EDEADLK', `${path} is held shared by this context; an exclusive lock inside it would wait for itself`, path)
    }
    return outer
  }

  /**
   * Runs a re-entering `fn` after the ones before it at this level: two read-modify-
   * writes started side by side would otherwise read the same data. Calls `fn` makes
   * form a level of their own, so they never wait for `fn` itself.
   */
  #inTurn(level, fn, path, options) {
    // This context holds the lock, so no other holder is waited for; but the calls
    // ahead may take long, and the call's own signal and finite timeout bound that
    // wait as they bound an acquire. The manager's default timeout does not: the
    // calls ahead are this context's own work, however long a batch runs.
    // `timeout: 0` ("do not wait for another holder") runs in turn.
    const signal = checkSignal(options?.signal, path)
    const timeout = options?.timeout ?? Infinity
    const previous = level.last
    level.queued++
    const turn = level.queued > 1 ? untilTurn(previous, path, timeout, signal) : previous
    const run = turn.then(() => {
      // Released meanwhile (by hand, or just as the outer call ended): not ours to
      // re-enter any more, so take it like any other caller.
      if (level.lock.released) return this.withLock(path, fn, options)
      const inner = { lock: level.lock, last: NOTHING_PENDING, queued: 0 }
      return context.run(this.#withLevel(inner), async () => {
        try {
          return await fn(level.lock)
        } finally {
          if (inner.last !== NOTHING_PENDING) await settled(inner)
        }
      })
    })
    // The next call's turn comes when this one is done, or, if this one gave up
    // before its turn, when the calls before it are.
    const finish = () => {
      level.queued--
    }
    const done = run.then(finish, finish)
    level.last = previous.then(() => done)
    return run
  }

  #withLevel(level) {
    const held = new Map(context.getStore())
    held.set(level.lock.lockfilePath, level)
    return held
  }

  #log(line) {
    this.#debug?.(`lockwright[${process.pid}] ${line}`)
  }

  _adopt(grant) {
    exitRelease.holding(this)
    if (this.#debug) this.#log(`acquire ${grant.mode} ${grant.path} token=${grant.token}`)
    return new Lock(this, grant)
  }

  /**
   * `byLock`: a `Lock` releasing itself, so a grant already gone is ERELEASED.
   * `withoutBlocking`: never holds this thread for a Redis round trip, and returns a
   * Promise that settles when Redis has answered (undefined when done at once).
   */
  _releaseGrant(id, byLock, withoutBlocking = false) {
    let released
    try {
      released = withoutBlocking ? this._native.releaseWithoutBlocking(id, byLock) : this._native.release(id, byLock)
      if (this.#debug) this.#log(`release #${id}`)
    } finally {
      // A count when done at once; the grant is gone from the manager either way.
      this._afterRelease(typeof released === 'number' ? released : undefined)
    }
    return typeof released === 'number' ? undefined : released
  }

  _afterRelease(stillHeld = this._native.heldCount) {
    if (stillHeld === 0) exitRelease.idle(this)
  }

  _releaseAllOnExit() {
    this._native.releaseAll()
  }
}

module.exports = { LockManager, defaultOwner, ACQUIRE_OPTIONS }
