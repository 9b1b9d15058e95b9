/// <reference lib="esnext.disposable" />
// Types of the public API as `require('lockwright')` sees it (index.js): exactly its
// module.exports, so there is no `default` here. `import` gets index.d.mts. The native
// layer's generated types are in binding.d.ts.

import { EventEmitter } from 'node:events'
import type { NativeDistribution, NativeMetrics } from './binding'

export type LockMode = 'exclusive' | 'shared'

/** Codes every lockwright error carries in `err.code`; OS failures keep their errno name. */
export type LockErrorCode =
  | 'ELOCKED'
  | 'ETIMEOUT'
  | 'ABORT_ERR'
  | 'ERELEASED'
  | 'ENOTACQUIRED'
  | 'EDEADLK'
  | 'ECOMPROMISED'
  | 'EJSONPARSE'
  | 'EINVAL'
  | 'EPANIC'
  | 'ENOENT'
  | 'EACCES'
  | 'ENAMETOOLONG'
  | 'ELOOP'
  | (string & {})

export interface LockError extends Error {
  code: LockErrorCode
  /** The path involved, when there is one. */
  path?: string
}

export interface LockManagerOptions {
  /** Owner label written as `process` in the lock file. Default: the script's file name. */
  owner?: string
  /** Directory for lock files: `<lockDir>/<basename>.lock`. Default: beside the target. */
  lockDir?: string
  /** `'kernel'` (OS advisory locks, the default) or `'mkdir'` (proper-lockfile's protocol; exclusive only). */
  strategy?: 'kernel' | 'mkdir'
  /** Default wait in ms for acquire/withLock/acquireSync. Default 30000. */
  timeout?: number
  /** A holder on another host whose heartbeat is older than this (ms) is dead. Default 10000, at least 2000. */
  stale?: number
  /** Heartbeat period in ms, from a native thread. Default stale/2; 0 turns beats off. */
  heartbeat?: number
  /** Record counts and wait/hold times for `metrics()`. Default true. */
  metrics?: boolean
  /** Called when a held lock turns out lost (code ECOMPROMISED); the 'compromised' event fires too. */
  onCompromised?: (err: LockError & { lockId: string }) => void
  /** true or a function: log acquire/wait/release/stale/cleanup events. Also LOCKWRIGHT_DEBUG=1. */
  debug?: boolean | ((line: string) => void)
}

export interface LockOwner {
  pid: number
  host: string
  /** The owner label. */
  process: string
  user: string
  mode: LockMode
  lockId: string
  token: number
  /** When the lock was granted, ms since the epoch. */
  since: number
  heartbeatAgeMs: number
  /** On this host: the PID runs and is the same process. Elsewhere: a fresh heartbeat. */
  alive: boolean
}

export interface LockStatus {
  locked: boolean
  /** Held only by dead owners, or free with a dead owner's or corrupted record left behind. */
  stale: boolean
  mode?: LockMode
  lockfilePath: string
  owners: LockOwner[]
}

/** A time distribution in ms: `{ count, mean, p50, p95, p99, max }`. */
export type Distribution = NativeDistribution

/**
 * `acquisitions, releases, contended` (attempts that found the lock held), `timeouts,
 * aborts, staleCleaned, compromised, heldNow`, and `wait` / `hold` distributions in ms.
 */
export type LockMetrics = NativeMetrics

export interface AcquireOptions {
  /** Default `'exclusive'`. */
  mode?: LockMode
  /** Ms to wait: 0 tries once (ELOCKED), Infinity waits forever. Default: the manager's. */
  timeout?: number
  /** Ends the wait with an AbortError (code ABORT_ERR). */
  signal?: AbortSignal
  /** Use exactly this lock file. */
  lockfilePath?: string
}

export type SyncAcquireOptions = Omit<AcquireOptions, 'signal'>


export declare class Lock implements AsyncDisposable, Disposable {
  private constructor()
  /** The locked path, absolute. */
  readonly path: string
  readonly lockfilePath: string
  readonly mode: LockMode
  /** Unique per grant; also `lockId` in the owner record. */
  readonly id: string
  /** Fencing token: strictly increasing for each exclusive grant of this lock file. */
  readonly token: number
  /** Ms since the epoch when the lock was granted. */
  readonly acquiredAt: number
  /** True once released by this object, its manager, or close(). */
  readonly released: boolean
  /** Rejects with ERELEASED when already released. */
  release(): Promise<void>
  releaseSync(): void
  [Symbol.asyncDispose](): Promise<void>
  [Symbol.dispose](): void
  toJSON(): { path: string; lockfilePath: string; mode: LockMode; id: string; token: number; acquiredAt: number }
}

export declare class LockManager extends EventEmitter {
  constructor(options?: LockManagerOptions)
  readonly owner: string
  acquire(path: string, options?: AcquireOptions): Promise<Lock>
  tryAcquire(path: string, options?: SyncAcquireOptions): Lock | null
  acquireSync(path: string, options?: SyncAcquireOptions): Lock
  withLock<T>(path: string, fn: (lock: Lock) => T | Promise<T>, options?: AcquireOptions): Promise<T>
  withLockSync<T>(path: string, fn: (lock: Lock) => T, options?: SyncAcquireOptions): T
  withReadLock<T>(path: string, fn: (lock: Lock) => T | Promise<T>, options?: Omit<AcquireOptions, 'mode'>): Promise<T>
  withWriteLock<T>(path: string, fn: (lock: Lock) => T | Promise<T>, options?: Omit<AcquireOptions, 'mode'>): Promise<T>
  /** Releases a Lock, a lock id, or every lock this manager holds on a path. */
  release(lockOrIdOrPath: Lock | string): Promise<void>
  /** Ends pending waits (ABORT_ERR) and releases everything held. */
  close(): Promise<void>
  /** Who holds the lock on `path`, in any process, and whether they are alive. */
  status(path: string, options?: { lockfilePath?: string }): LockStatus
  /** The status of every lock file in `dir` (default: lockDir). */
  list(dir?: string): LockStatus[]
  /** Removes dead holders' lock files, corrupted ones and dead readers' records in `dir` (default: lockDir). */
  /**
   * Clears dead holders' records (the files stay, keeping their fencing token) and
   * removes empty lock files and dead readers' records. With `dryRun: true`, lists
   * what it would do and changes nothing.
   */
  cleanupStaleLocks(dir?: string, options?: { dryRun?: boolean }): Promise<{ removed: string[]; cleared: string[]; kept: number }>
  /** Removes a dead holder's leftovers; ELOCKED if a live process holds the kernel lock, even with force. */
  forceRelease(path: string, options?: { force?: boolean; lockfilePath?: string }): Promise<boolean>
  /** Reads a JSON file under a shared lock (or the lock this context holds); undefined if missing. */
  readJson<T = unknown>(path: string, options?: Omit<AcquireOptions, 'mode'>): Promise<T | undefined>
  /** Locked read-modify-write: fn's result (or the data it changed in place) is written atomically. */
  updateJson<T = unknown>(path: string, fn: (data: T | undefined) => T | void | Promise<T | void>, options?: UpdateJsonOptions): Promise<T | undefined>
  metrics(): LockMetrics
  resetMetrics(): void
  on(event: 'compromised', listener: (err: LockError & { lockId: string }) => void): this
}

export interface UpdateJsonOptions extends Omit<AcquireOptions, 'mode'> {
  /** Keep the previous content in `<path>.bak`. */
  backup?: boolean
  /** JSON.stringify indentation. Default 2. */
  space?: number | string
}

export interface WriteFileAtomicOptions {
  /** Mode for a new file (an existing file keeps its own). Default 0o666 less umask. */
  mode?: number
  /** fsync the file and its directory. Default true. */
  fsync?: boolean
}

export type FileData = string | NodeJS.ArrayBufferView

/** Temp file, write, fsync, rename, fsync the directory: old or new content after a crash. */
export declare function writeFileAtomic(path: string, data: FileData, options?: WriteFileAtomicOptions): Promise<void>
export declare function writeFileAtomicSync(path: string, data: FileData, options?: WriteFileAtomicOptions): void
/** `LockManager#readJson` on a default manager. */
export declare function readJson<T = unknown>(path: string, options?: Omit<AcquireOptions, 'mode'>): Promise<T | undefined>
/** `LockManager#updateJson` on a default manager. */
export declare function updateJson<T = unknown>(path: string, fn: (data: T | undefined) => T | void | Promise<T | void>, options?: UpdateJsonOptions): Promise<T | undefined>
