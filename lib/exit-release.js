'use strict'

/**
 * Releases held locks when the process ends: on normal exit, an uncaught exception,
 * SIGINT, SIGTERM and SIGHUP. The kernel would drop the locks anyway; this also
 * clears the owner records, so nobody reads a dead holder's name.
 *
 * Listeners are installed when a lock is first taken, so requiring lockwright
 * changes nothing, and then stay: removing a signal listener while a signal is on
 * its way to it would swallow that signal (Node drops it with the listener), and a
 * process that ignores SIGTERM is worse than a listener that does nothing. With no
 * other listener for the signal, ours releases, removes itself and re-raises the
 * signal, so the process still dies of it (exit 130 for Ctrl-C) exactly as without
 * lockwright. If the application has listeners of its own it handles the signal
 * itself: then we leave the locks to its shutdown and to the exit hook.
 */

const SIGNALS = process.platform === 'win32' ? ['SIGINT'] : ['SIGINT', 'SIGTERM', 'SIGHUP']
const holders = new Set()
let installed = false

function releaseEverything() {
  for (const manager of holders) manager._releaseAllOnExit()
  holders.clear()
}

function onExit() {
  releaseEverything()
}

/**
 * signal-exit (used by proper-lockfile, write-file-atomic and many more) adds one
 * listener per signal and, like us, re-raises only when it is alone. Counted as an
 * application listener, the two would each wait for the other and swallow the
 * signal, so its listeners are not counted: it re-raises once ours is gone. Its
 * shared emitter (v3 on `process`, v4 on a global symbol) counts the copies whose
 * listeners are in place; the emitter itself stays after they are removed.
 */
function signalExitHooks() {
  const loaded = (emitter) => (typeof emitter?.count === 'number' ? emitter.count : 0)
  return loaded(process.__signal_exit_emitter__) + loaded(globalThis[Symbol.for('signal-exit emitter')])
}

function onSignal(signal) {
  if (process.listenerCount(signal) - 1 - signalExitHooks() > 0) return
  releaseEverything()
  uninstall()
  // With our listener gone the signal's default action is back: die of it.
  process.kill(process.pid, signal)
}

function install() {
  installed = true
  process.on('exit', onExit)
  for (const signal of SIGNALS) process.on(signal, onSignal)
}

function uninstall() {
  installed = false
  process.removeListener('exit', onExit)
  for (const signal of SIGNALS) process.removeListener(signal, onSignal)
}

/** A manager now holds at least one lock. */
function holding(manager) {
  holders.add(manager)
  if (!installed) install()
}

/** A manager holds nothing any more. */
function idle(manager) {
  holders.delete(manager)
}

module.exports = { holding, idle }
