import shared from '../jest/shared-resource.js'

export function setup() {
  shared.prepare('vitest')
}

export function teardown() {
  const state = shared.verify('vitest')
  console.log(`vitest: ${state.count} locked increments from ${state.workers.length} worker processes, none lost`)
}
