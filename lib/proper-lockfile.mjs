import lockfile from './proper-lockfile.js'

export const { lock, unlock, check, lockSync, unlockSync, checkSync } = lockfile
export default lockfile
