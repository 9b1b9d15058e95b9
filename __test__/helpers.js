'use strict'

const { fork, spawn } = require('node:child_process')
const { chmodSync, cpSync, mkdtempSync, readdirSync, rmSync, statSync } = require('node:fs')
const { tmpdir } = require('node:os')
const { join } = require('node:path')
const { once } = require('node:events')

/** A fresh directory, removed when the test ends. */
function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), 'lockwright-test-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/**
 * The package's runtime files (and the test fixtures) copied where any user can read
 * them, for tests that run code as another user (`setpriv`): the checkout itself may
 * sit in a directory only its owner can enter (`mktemp -d` makes them 0700).
 */
function packageForOtherUsers(t) {
  const root = mkdtempSync(join(tmpdir(), 'lockwright-pkg-'))
  t.after(() => rmSync(root, { recursive: true, force: true }))
  const here = join(__dirname, '..')
  const runtime = ['package.json', 'index.js', 'binding.js', 'lib', 'node_modules/retry', '__test__/fixtures']
  for (const entry of [...runtime, ...readdirSync(here).filter((f) => f.endsWith('.node'))]) {
    cpSync(join(here, entry), join(root, entry), { recursive: true })
  }
  const open = (dir) => {
    chmodSync(dir, 0o755)
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) open(join(dir, entry.name))
      else chmodSync(join(dir, entry.name), statSync(join(dir, entry.name)).mode | 0o444)
    }
  }
  open(root)
  return root
}

/**
 * A child process driven over IPC by `fixtures/agent.js`: `call(cmd, args)` sends a
 * command and resolves with its reply, so tests synchronise on what the child did,
 * never on time.
 */
function spawnAgent(t, { owner = 'agent', env = {}, script = 'agent.js', args = [owner], wrap, root = join(__dirname, '..') } = {}) {
  const scriptPath = join(root, '__test__', 'fixtures', script)
  const options = { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }
  // `wrap`: a command that execs node in another setting (`setpriv` as another user,
  // `unshare` in another PID namespace); the IPC channel passes through it.
  const child = wrap
    ? spawn(wrap[0], [...wrap.slice(1), process.execPath, scriptPath, ...args], options)
    : fork(scriptPath, args, options)
  const pending = new Map()
  let nextId = 0
  child.on('message', (msg) => {
    const waiter = pending.get(msg.id)
    if (!waiter) return
    pending.delete(msg.id)
    if (msg.error) waiter.reject(Object.assign(new Error(msg.error.message), msg.error))
    else waiter.resolve(msg.result)
  })
  const exited = once(child, 'exit')
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return {
    child,
    pid: child.pid,
    exited,
    call(cmd, args = {}) {
      const id = ++nextId
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject })
        child.send({ id, cmd, ...args })
      })
    },
  }
}

/** Runs any command to completion; resolves with its exit code and output. */
async function runCommand(command, args = [], { cwd, env } = {}) {
  const child = spawn(command, args, { cwd, env: env && { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  const [code] = await once(child, 'exit')
  return { code, stdout, stderr }
}

/** Runs `script` (a file in fixtures/) to completion; resolves with code, signal and output. */
async function runScript(script, args = [], { env = {} } = {}) {
  const child = fork(join(__dirname, 'fixtures', script), args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  const [code, signal] = await once(child, 'exit')
  return { code, signal, stdout, stderr }
}

/**
 * Resolves once `condition()` is true, checking every few milliseconds: for states
 * another process reaches with no message to tell us (a file it holds, say).
 */
async function waitFor(condition, { timeoutMs = 10_000, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** Tracks whether a promise has settled, without awaiting it. */
function track(promise) {
  const state = { settled: false, promise }
  promise.then(
    () => (state.settled = true),
    () => (state.settled = true),
  )
  return state
}

module.exports = { packageForOtherUsers, tempDir, spawnAgent, runScript, runCommand, waitFor, track }
