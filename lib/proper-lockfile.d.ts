// Types of `require('lockwright/proper-lockfile')`: the same surface as
// @types/proper-lockfile, so code written against proper-lockfile type-checks
// unchanged. The module itself is `lock`, as at runtime; `import` gets
// proper-lockfile.d.mts.

declare namespace lockfile {
  /** The `retry` package's options, as proper-lockfile's `retries` takes them. */
  interface RetryOptions {
    retries?: number | undefined
    factor?: number | undefined
    minTimeout?: number | undefined
    maxTimeout?: number | undefined
    randomize?: boolean | undefined
    forever?: boolean | undefined
    unref?: boolean | undefined
    maxRetryTime?: number | undefined
  }

  interface LockOptions {
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

  interface UnlockOptions {
    realpath?: boolean | undefined
    fs?: any
    lockfilePath?: string | undefined
  }

  interface CheckOptions {
    stale?: number | undefined
    realpath?: boolean | undefined
    fs?: any
    lockfilePath?: string | undefined
  }

  function lock(file: string, options?: LockOptions): Promise<() => Promise<void>>
  function unlock(file: string, options?: UnlockOptions): Promise<void>
  function check(file: string, options?: CheckOptions): Promise<boolean>
  function lockSync(file: string, options?: LockOptions): () => void
  function unlockSync(file: string, options?: UnlockOptions): void
  function checkSync(file: string, options?: CheckOptions): boolean
}

declare function lockfile(file: string, options?: lockfile.LockOptions): Promise<() => Promise<void>>

export = lockfile
