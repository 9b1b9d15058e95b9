'use strict'

const { lockError } = require('./errors.js')

/** A held lock. `await using lock = await manager.acquire(path)` releases it at scope end. */
class Lock {
  #manager
  #grant
  #released = false

  constructor(manager, grant) {
    this.#manager = manager
    this.#grant = grant
  }

  /** The locked path, absolute. */
  get path() {
    return this.#grant.path
  }

  get lockfilePath() {
    return this.#grant.lockfilePath
  }

  /** 'exclusive' or 'shared'. */
  get mode() {
    return this.#grant.mode
  }

  /** Unique per grant; also in the lock file's owner record as `lockId`. */
  get id() {
    return this.#grant.lockId
  }

  /** Fencing token: strictly increasing for each exclusive grant of this lock file. */
  get token() {
    return this.#grant.token
  }

  /** When the lock was granted, in milliseconds since the epoch. */
  get acquiredAt() {
    return this.#grant.acquiredAt
  }

  /** True once released, by this object, its manager, or `close()`. */
  get released() {
    return this.#released || !this.#manager._native.isHeld(this.#grant.id)
  }

  /** The manager that granted it. */
  get _manager() {
    return this.#manager
  }

  /** The manager's number for this grant. */
  get _grantId() {
    return this.#grant.id
  }

  releaseSync() {
    this._release(false)
  }

  /** Never holds this thread for a Redis round trip, unlike `releaseSync`. */
  async release() {
    await this._release(true)
  }

  /**
   * Releases; `withoutBlocking`: a Redis release's round trip runs off this thread,
   * and the Promise then returned settles when Redis has answered. Either way the
   * lock is no longer this manager's when this returns.
   */
  _release(withoutBlocking) {
    let pending
    try {
      pending = this.#manager._releaseGrant(this.#grant.id, true, withoutBlocking)
    } catch (err) {
      // The manager no longer knows the grant, so only the lock can name its path.
      if (err.code === 'ERELEASED') throw lockError('ERELEASED', `The lock on ${this.path} is already released`, this.path)
      throw err
    }
    this.#released = true
    return pending
  }

  /** Releases unless already released, so a manual release inside `using` is fine. */
  [Symbol.dispose]() {
    if (!this.released) this.releaseSync()
  }

  async [Symbol.asyncDispose]() {
    if (!this.released) await this._release(true)
  }

  toJSON() {
    const { path, lockfilePath, mode, id, token, acquiredAt } = this
    return { path, lockfilePath, mode, id, token, acquiredAt }
  }
}

module.exports = { Lock }
