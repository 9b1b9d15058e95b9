import lockwright from './lockwright.js'

export const { LockManager, Lock } = lockwright
export default lockwright
