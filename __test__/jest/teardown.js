'use strict'
module.exports = () => {
  const state = require('./shared-resource.js').verify('jest')
  console.log(`\njest: ${state.count} locked increments from ${state.workers.length} worker processes, none lost`)
}
