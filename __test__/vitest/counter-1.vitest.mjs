import { test } from 'vitest'
import { LockManager } from 'lockwright'
import shared from '../jest/shared-resource.js'

test('increments the shared counter under a lockwright lock', async () => {
  await shared.incrementUnderLock('vitest', LockManager)
})
