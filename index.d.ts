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
  | 'EEXIST'
  | 'EUNAVAILABLE'
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

/** Where a Redis-backed LockManager keeps its locks. */
export interface RedisOptions {
  /** `redis://[user:password@]host:port/db`. */
  url?: string
  /** Every key and channel starts with it. Default 'lockwright:'. */
  prefix?: string
  /** Bound on opening a connection, in ms. Default 2000. */
  connectTimeout?: number
  /** Bound on one command, in ms. Default 2000. */
  responseTimeout?: number
  /** Exclusive tokens stay above this (after Redis lost its data). Default 0. */
  tokenFloor?: number
}

export interface LockManagerOptions {
  /** Owner label written as `process` in the lock file. Default: the script's file name. */
  owner?: string
  /** Directory for lock files: `<lockDir>/<basename>.lock`. Default: beside the target. */
  lockDir?: string
  /** `'kernel'` (OS advisory locks, the default), `'mkdir'` (proper-lockfile's protocol; exclusive only) or `'redis'` (leases in a Redis server, for several hosts). */
  strategy?: 'kernel' | 'mkdir' | 'redis'
  /** With `strategy: 'redis'`: the server's URL, or its settings. Default: LOCKWRIGHT_REDIS_URL, else redis://127.0.0.1:6379/0. */
  redis?: string | RedisOptions
  /** Default wait in ms for acquire/withLock/acquireSync. Default 30000. */
  timeout?: number
  /** A holder on another host whose heartbeat is older than this (ms) is dead. Default 10000, at least 2000. */
  stale?: number
  /** Heartbeat period in ms, from a native thread. Default stale/2 (stale/3 for Redis leases), and at most that; 0 turns beats off (kernel locks only). */
  heartbeat?: number
  /** Lock the file a symlink names, not the link, as proper-lockfile does. Default true. */
  realpath?: boolean
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
  /** Resolve symlinks in the path for this call. Default: the manager's (true). */
  realpath?: boolean
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
  /** Rejects with ERELEASED when already released. On Redis, the round trip never blocks this thread. */
  release(): Promise<void>
  /** On Redis, blocks this thread for the round trip. */
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
  status(path: string, options?: { lockfilePath?: string }): Promise<LockStatus>
  /** `status` on the calling thread. */
  statusSync(path: string, options?: { lockfilePath?: string }): LockStatus
  /** The status of every lock file in `dir` (default: lockDir; every lock under the prefix for Redis). */
  list(dir?: string): Promise<LockStatus[]>
  /** `list` on the calling thread. */
  listSync(dir?: string): LockStatus[]
  /**
   * Clears dead holders' and dead readers' records (the lock files stay, keeping
   * their fencing token; lock files are never removed). With `dryRun: true`, lists
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
