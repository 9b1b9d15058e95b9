import lockwright from './index.js'

export const { LockManager, Lock, writeFileAtomic, writeFileAtomicSync, readJson, updateJson } = lockwright
export default lockwright
