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

/** EINVAL for a bad argument of a request for the lock on `path`, naming that path. */
function invalidFor(message, path) {
  if (typeof path !== 'string') return lockError('EINVAL', message)
  return lockError('EINVAL', `${message}, for the lock on '${path}'`, path)
}

module.exports = { lockError, invalidFor }
