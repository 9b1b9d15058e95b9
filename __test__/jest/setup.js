'use strict'
module.exports = () => require('./shared-resource.js').prepare('jest')
