// `lockwright/proper-lockfile` for TypeScript's `moduleResolution: node` (node10), which
// ignores package.json `exports`.
import lockfile = require('./lib/proper-lockfile.js')
export = lockfile
