'use strict'

const { LockManager } = require('./lib/lock-manager.js')
const { Lock } = require('./lib/lock.js')

module.exports = { LockManager, Lock }
