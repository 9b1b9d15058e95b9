'use strict'

/**
 * Errors raised on the JavaScript side carry the same shape as the native ones:
 * a string `code` and, where one is involved, the `path`.
 */
function lockError(code, message, path) {
  const err = new Error(message)
  err.code = code
  if (path !== undefined) err.path = path
  if (code === 'ABORT_ERR') err.name = 'AbortError'
  return err
}

module.exports = { lockError }
