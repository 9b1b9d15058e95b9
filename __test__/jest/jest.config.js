'use strict'
// Jest's parallel workers (separate processes) serialise access to one shared file
// with lockwright: the "concurrency tests" our users write.
module.exports = {
  rootDir: __dirname,
  testMatch: ['<rootDir>/*.jest.js'],
  maxWorkers: 3,
  // Without cached timings Jest does not switch fast suites to running in band.
  cache: false,
  globalSetup: '<rootDir>/setup.js',
  globalTeardown: '<rootDir>/teardown.js',
}
