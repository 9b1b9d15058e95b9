// Types of the public API as `import` sees it (index.mjs): the named exports, and a
// default export that is index.js's module.exports.

import lockwright = require('./index.js')

export * from './index.js'
export default lockwright
