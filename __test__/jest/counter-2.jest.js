'use strict'
const { LockManager } = require('../../index.js')
const { incrementUnderLock } = require('./shared-resource.js')

test('increments the shared counter under a lockwright lock', async () => {
  await incrementUnderLock('jest', LockManager)
}, 60_000)
