import lockwright from './lockwright.js'

export const { LockManager, Lock, writeFileAtomic, writeFileAtomicSync, readJson, updateJson } = lockwright
export default lockwright
