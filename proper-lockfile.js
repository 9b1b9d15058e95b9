'use strict'
// `lockwright/proper-lockfile` for resolvers that ignore package.json `exports`:
// TypeScript's `moduleResolution: node`, Jest < 28, older bundlers.
module.exports = require('./lib/proper-lockfile.js')
