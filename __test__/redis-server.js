'use strict'
// A private redis-server for one test file (or one test): a free port on 127.0.0.1,
// no persistence, killed when the test ends. Never the shared server on 6379.
//
// When redis-server is not on PATH, `redisSkip()` gives node:test a reason to skip,
// and prints it once; with CI=true a missing server fails the tests instead.

const { spawn } = require('node:child_process')
const net = require('node:net')
const { once } = require('node:events')
const { delimiter, join } = require('node:path')
const { statSync } = require('node:fs')

function redisServerPath() {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && statSync(join(dir, 'redis-server'), { throwIfNoEntry: false })?.isFile()) return join(dir, 'redis-server')
  }
  return null
}

let noticed = false

/**
 * `false` when the Redis tests can run; else why not, for `test(name, { skip })`.
 * With CI=true a missing server is `false` too, so the tests run and fail at
 * `startRedis`, saying why.
 */
function redisSkip() {
  if (redisServerPath() || process.env.CI === 'true') return false
  const reason = 'redis-server is not on PATH: the Redis tests are skipped'
  if (!noticed) process.stderr.write(`${reason}\n`)
  noticed = true
  return reason
}

/** A port nobody listens on right now (the kernel's pick, released at once). */
async function freePort() {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address()
  server.close()
  await once(server, 'close')
  return port
}

/**
 * Sends one command (an array of strings) over a fresh connection and resolves with
 * the raw reply's first line; rejects when nothing answers within `timeoutMs`.
 */
function rawCommand(port, args, { timeoutMs = 2000 } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    let reply = ''
    const done = (err, value) => {
      socket.destroy()
      if (err) reject(err)
      else resolve(value)
    }
    socket.setTimeout(timeoutMs, () => done(new Error(`no reply from 127.0.0.1:${port} within ${timeoutMs} ms`)))
    socket.on('error', (err) => done(err))
    socket.on('connect', () => socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`))
    socket.on('data', (data) => {
      reply += data
      const end = reply.indexOf('\r\n')
      if (end !== -1) done(null, reply.slice(0, end))
    })
  })
}

class RedisServer {
  constructor(port) {
    this.port = port
    this.url = `redis://127.0.0.1:${port}/0`
    this.child = null
    this.exited = null
  }

  /**
   * Starts redis-server on this port and resolves once it answers PING: it logs
   * "Ready to accept connections", then a PING confirms it. Resolves `false` if the
   * server exits first (the port was taken).
   */
  async launch() {
    const path = redisServerPath()
    if (!path) throw new Error('redis-server is not on PATH, and CI=true requires the Redis tests to run')
    const child = spawn(path, ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.child = child
    this.exited = once(child, 'exit')
    let log = ''
    const ready = await new Promise((resolve) => {
      const onData = (data) => {
        log += data
        if (log.includes('Ready to accept connections')) resolve(true)
      }
      child.stdout.on('data', onData)
      child.stderr.on('data', onData)
      child.on('exit', () => resolve(false))
      child.on('error', () => resolve(false))
    })
    child.stdout.resume()
    child.stderr.resume()
    if (!ready) {
      this.child = null
      this.lastLog = log
      return false
    }
    const pong = await rawCommand(this.port, ['PING'])
    if (pong !== '+PONG') throw new Error(`redis-server on ${this.port} answered PING with ${pong}`)
    return true
  }

  /** SIGKILL, as a crash: nothing is saved. Resolves once it is gone. */
  async kill() {
    const child = this.child
    if (!child) return
    this.child = null
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT') // a frozen server dies only once it runs again
      child.kill('SIGKILL')
    }
    await this.exited
  }

  /** Starts again on the same port, empty. */
  async restart() {
    await this.kill()
    if (!(await this.launch())) throw new Error(`redis-server did not start again on ${this.port}: ${this.lastLog}`)
  }

  /** SIGSTOP: a server that accepts connections but never answers. */
  freeze() {
    this.child.kill('SIGSTOP')
  }

  thaw() {
    this.child.kill('SIGCONT')
  }

  /** One command over a raw connection: the reply's first line. */
  command(...args) {
    return rawCommand(this.port, args)
  }
}

/** Every server still running is killed if this process exits without its `after`. */
const running = new Set()
process.on('exit', () => {
  for (const server of running) server.child?.kill('SIGKILL')
})

/**
 * A private server for test context `t` (a test, or the file's `before`), killed
 * when `t` ends. Tries a few ports: another process may take the one we picked
 * before the server binds it.
 */
async function startRedis(t) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const server = new RedisServer(await freePort())
    if (await server.launch()) {
      running.add(server)
      const stop = async () => {
        await server.kill()
        running.delete(server)
      }
      if (t) t.after(stop)
      server.stop = stop
      return server
    }
  }
  throw new Error('redis-server would not start on a free port')
}

module.exports = { redisSkip, startRedis, freePort, rawCommand, redisServerPath }
