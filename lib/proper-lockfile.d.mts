// Types of `import ... from 'lockwright/proper-lockfile'` (proper-lockfile.mjs): the
// default export is the module itself, callable as `lock`.

import lockfile = require('./proper-lockfile.js')

export type { RetryOptions, LockOptions, UnlockOptions, CheckOptions } from './proper-lockfile.js'
export declare const lock: typeof lockfile.lock
export declare const unlock: typeof lockfile.unlock
export declare const check: typeof lockfile.check
export declare const lockSync: typeof lockfile.lockSync
export declare const unlockSync: typeof lockfile.unlockSync
export declare const checkSync: typeof lockfile.checkSync
export default lockfile
