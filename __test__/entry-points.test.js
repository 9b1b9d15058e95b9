'use strict'
// The package's exports map serves both require and import.

const test = require('node:test')
const assert = require('node:assert/strict')

test('require and import give the same LockManager', async () => {
  const cjs = require('lockwright')
  const esm = await import('lockwright')
  assert.equal(typeof cjs.LockManager, 'function')
  assert.equal(esm.LockManager, cjs.LockManager)
  assert.equal(esm.default.LockManager, cjs.LockManager)
  assert.equal(esm.Lock, cjs.Lock)
})
