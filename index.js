'use strict'

const { LockManager } = require('./lib/lock-manager.js')
const { Lock } = require('./lib/lock.js')
const { writeFileAtomic, writeFileAtomicSync } = require('./lib/json-files.js')

let sharedManager
/** The manager behind the module-level helpers, made on first use. */
function defaultManager() {
  sharedManager ??= new LockManager()
  return sharedManager
}

module.exports = {
  LockManager,
  Lock,
  writeFileAtomic,
  writeFileAtomicSync,
  readJson: (path, options) => defaultManager().readJson(path, options),
  updateJson: (path, fn, options) => defaultManager().updateJson(path, fn, options),
}
