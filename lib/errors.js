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

/** Edit distance between two option names. */
function distance(a, b) {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const next = [i]
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    row = next
  }
  return row[b.length]
}

/**
 * EINVAL for a key of `options` that is not in `known`, naming it and the nearest
 * known one: a typo (`stael`) would otherwise be ignored in silence.
 */
function checkOptionNames(options, known, path) {
  if (options === undefined || options === null || typeof options !== 'object') return
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue
    const nearest = known.reduce((best, name) => (distance(key, name) < distance(key, best) ? name : best))
    throw invalidFor(`unknown option '${key}' (did you mean '${nearest}'?)`, path)
  }
}

module.exports = { lockError, invalidFor, checkOptionNames }
