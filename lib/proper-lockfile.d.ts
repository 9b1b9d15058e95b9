// Types of lockwright/proper-lockfile: the same surface as @types/proper-lockfile, so
// code written against proper-lockfile type-checks unchanged.

/** The `retry` package's options, as proper-lockfile's `retries` takes them. */
export interface RetryOptions {
  retries?: number | undefined
  factor?: number | undefined
  minTimeout?: number | undefined
  maxTimeout?: number | undefined
  randomize?: boolean | undefined
  forever?: boolean | undefined
  unref?: boolean | undefined
  maxRetryTime?: number | undefined
}

export interface LockOptions {
  /** Default 10000, at least 2000. */
  stale?: number | undefined
  /** mtime refresh period. Default stale/2, clamped to [1000, stale/2]; false or 0 means 1000. */
  update?: number | undefined
  /** Default 0. A number of retries, the `retry` package's options, or its explicit list of delays in ms. */
  retries?: number | RetryOptions | number[] | undefined
  /** Default true: the file must exist. */
  realpath?: boolean | undefined
  /** Accepted for compatibility; native code cannot use a custom fs. */
  fs?: any
  /** Default: throw the error. */
  onCompromised?: ((err: Error) => any) | undefined
  /** Default `${file}.lock`. */
  lockfilePath?: string | undefined
}

export interface UnlockOptions {
  realpath?: boolean | undefined
  fs?: any
  lockfilePath?: string | undefined
}

export interface CheckOptions {
  stale?: number | undefined
  realpath?: boolean | undefined
  fs?: any
  lockfilePath?: string | undefined
}

export function lock(file: string, options?: LockOptions): Promise<() => Promise<void>>
export function unlock(file: string, options?: UnlockOptions): Promise<void>
export function check(file: string, options?: CheckOptions): Promise<boolean>
export function lockSync(file: string, options?: LockOptions): () => void
export function unlockSync(file: string, options?: UnlockOptions): void
export function checkSync(file: string, options?: CheckOptions): boolean

declare const lockfile: typeof lock & {
  lock: typeof lock
  unlock: typeof unlock
  check: typeof check
  lockSync: typeof lockSync
  unlockSync: typeof unlockSync
  checkSync: typeof checkSync
}
export default lockfile
