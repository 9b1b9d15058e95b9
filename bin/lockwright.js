#!/usr/bin/env node
'use strict'

// The `lockwright` command: the same locks for shell scripts.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const { parseArgs } = require('node:util')

const EXIT = { ok: 0, error: 1, usage: 2, locked: 3, timeout: 4 }

const HELP = {
  main: `Usage: lockwright <command> [options]

Commands:
  with <file> -- <cmd> [args...]   run a command while holding the lock on <file>
  status [file|dir]                who holds a lock, or every lock in a directory
  cleanup [dir]                    remove locks left by dead holders
  release <file> --force           break a lock whose holder is gone

Common options:
  --lock-dir <dir>      keep lock files in <dir> as <basename>.lock
  --strategy <name>     kernel (default), mkdir (proper-lockfile's protocol) or redis
  --redis <url>         locks in Redis (implies --strategy redis), named by keys, not
                        files: redis://host:6379/0. --strategy redis alone takes
                        LOCKWRIGHT_REDIS_URL, else redis://127.0.0.1:6379/0
  -h, --help            help for a command: lockwright <command> --help
  -v, --version         print lockwright's version

Exit codes: 0 ok, 1 error, 2 usage, 3 locked (--timeout 0), 4 timed out;
'with' exits with the command's own code.`,
  with: `Usage: lockwright with <file> [--shared] [--timeout ms] [--owner label] -- <cmd> [args...]
       lockwright with --redis <url> <name> [options] -- <cmd> [args...]

Runs <cmd> holding the lock on <file>, and releases it when <cmd> ends. <cmd> inherits
the lock as its descriptor 3 (kernel strategy, Unix), so it keeps the lock until it
ends even if this wrapper is killed. On Redis this wrapper renews the lease while
<cmd> runs: if the wrapper is killed, the lease runs out after --stale ms.
  --shared          take a shared (read) lock instead of an exclusive one
  --timeout <ms>    how long to wait for the lock (default 30000; 0 tries once; Infinity)
  --owner <label>   owner label shown to others (default: the command's name)
  --stale <ms>      a Redis lease's length, or when a holder on another host counts
                    as dead (default 10000, at least 2000)
Signals (SIGINT, SIGTERM, SIGHUP) are passed on to <cmd>. Exits with <cmd>'s exit code,
128 + the signal number if it was killed, 127 if it could not be started, 3 if locked
with --timeout 0, 4 on timeout.`,
  status: `Usage: lockwright status [file|dir] [--json] [--verbose]
       lockwright status --redis <url> [name] [--json] [--verbose]

Shows who holds the lock on <file>, or every lock in <dir> (default: --lock-dir or .).
A <file> ending in .lock is taken as the lock file itself, as this command lists them.
On Redis: the lock <name>, or every lock under the prefix.
  --json       machine-readable output
  --verbose    also the lock id, token, user and heartbeat age`,
  cleanup: `Usage: lockwright cleanup [dir] [--dry-run] [--json]
       lockwright cleanup --redis <url> [--dry-run] [--json]

Clears the records of holders that died holding a lock in <dir> (default: --lock-dir
or .), keeping each file with its fencing token; removes empty lock files and dead
readers' records. Never touches a held lock, or a *.lock file that is not ours
(Cargo.lock, yarn.lock). On Redis: removes the leases that ran out and the places of
waiters that died, under the prefix.
  --dry-run    list what would be cleared and removed, change nothing
  --json       machine-readable output`,
  release: `Usage: lockwright release <file> --force
       lockwright release --redis <url> <name> [--force]

Breaks the lock on <file> when its holder is gone. A kernel lock held by a live process
cannot be broken (exit 3); with --strategy mkdir, --force breaks even a live holder's.
On Redis, without --force: removes a lease that ran out, and exits 3 while a lease
stands; --force breaks even a live lease (its holder is told ECOMPROMISED).`,
}

class UsageError extends Error {}

function parse(command, args, options) {
  try {
    return parseArgs({
      args,
      allowPositionals: true,
      options: {
        help: { type: 'boolean', short: 'h' },
        'lock-dir': { type: 'string' },
        strategy: { type: 'string' },
        redis: { type: 'string' },
        ...options,
      },
    })
  } catch (err) {
    throw new UsageError(`${err.message}\n\n${HELP[command]}`)
  }
}

/** Whether the locks are in Redis: `--redis <url>` implies it, `--strategy redis` says it. */
function onRedis(values, command) {
  if (values.redis !== undefined && values.strategy !== undefined && values.strategy !== 'redis') {
    throw new UsageError(`--redis goes with --strategy redis, not ${values.strategy}\n\n${HELP[command]}`)
  }
  const redis = values.redis !== undefined || values.strategy === 'redis'
  if (redis && values['lock-dir'] !== undefined) throw new UsageError(`--lock-dir is for lock files: Redis locks are named by keys\n\n${HELP[command]}`)
  return redis
}

function managerFor(values, extra = {}) {
  // Loaded here, not at the top: --help and --version work without the native binary.
  const { LockManager } = require('../index.js')
  const strategy = values.redis === undefined ? values.strategy : 'redis'
  const redis = values.redis === undefined ? {} : { redis: values.redis }
  return new LockManager({ lockDir: values['lock-dir'], strategy, ...redis, ...extra })
}

function describeOwner(owner, verbose) {
  const held = ((Date.now() - owner.since) / 1000).toFixed(1)
  let line = `${owner.process} (PID ${owner.pid} on ${owner.host}, ${owner.alive ? 'alive' : 'dead'}, held ${held} s)`
  if (verbose) line += ` user=${owner.user} lockId=${owner.lockId} token=${owner.token} heartbeat=${owner.heartbeatAgeMs} ms ago`
  return line
}

function describeStatus(status, verbose) {
  const state = status.locked ? `locked (${status.mode})` : 'free'
  const stale = status.stale ? ', stale' : ''
  const owners = status.owners.map((o) => `\n    ${describeOwner(o, verbose)}`).join('')
  return `${status.lockfilePath}: ${state}${stale}${owners}`
}

function timeoutOf(text) {
  return text === undefined ? undefined : msOf(text, '--timeout')
}

function msOf(text, option) {
  const ms = text === 'Infinity' ? Infinity : Number(text)
  // Number('') is 0: an empty value would silently mean "try once".
  if (text.trim() === '' || Number.isNaN(ms)) throw new UsageError(`${option} must be a number of milliseconds or Infinity, got '${text}'`)
  return ms
}

const commands = {
  async with(args) {
    const split = args.indexOf('--')
    if (split === -1 && (args.includes('--help') || args.includes('-h'))) return print(HELP.with)
    if (split === -1) throw new UsageError(`missing '--' before the command\n\n${HELP.with}`)
    const { values, positionals } = parse('with', args.slice(0, split), {
      shared: { type: 'boolean' },
      timeout: { type: 'string' },
      owner: { type: 'string' },
      stale: { type: 'string' },
    })
    if (values.help) return print(HELP.with)
    const [file, ...extra] = positionals
    const [cmd, ...cmdArgs] = args.slice(split + 1)
    if (!file || !cmd) throw new UsageError(HELP.with)
    if (extra.length > 0) throw new UsageError(`one file before '--', got also '${extra.join("', '")}'\n\n${HELP.with}`)
    onRedis(values, 'with')
    const stale = values.stale === undefined ? {} : { stale: msOf(values.stale, '--stale') }
    const manager = managerFor(values, { owner: values.owner ?? require('node:path').basename(cmd), ...stale })
    // A Redis lease lives on this wrapper's heartbeat: if it is lost while the command
    // runs (the wrapper was stopped, Redis was unreachable for a whole lease, someone
    // forced it), say so at once, not only when the release fails at the end.
    let lost = false
    manager.on('compromised', (err) => {
      lost = true
      console.error(`lockwright: ${err.message}`)
    })
    const lock = await manager.acquire(file, { mode: values.shared ? 'shared' : 'exclusive', timeout: timeoutOf(values.timeout) })
    // The command inherits the lock as its descriptor 3, as with flock(1): if this
    // wrapper is killed (SIGKILL, the OOM killer), the lock stays with the command.
    const fd = manager._native.inheritableFd(lock._grantId)
    let child
    try {
      child = spawn(cmd, cmdArgs, { stdio: fd === null ? 'inherit' : ['inherit', 'inherit', 'inherit', fd] })
    } finally {
      if (fd !== null) fs.closeSync(fd)
    }
    // Ctrl-C at a terminal reaches the whole foreground group, the command too: a
    // second SIGINT from us would read as "force quit" to many programs.
    const forward = (signal) => (signal === 'SIGINT' && process.stdin.isTTY ? undefined : child.kill(signal))
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, forward)
    const [code, signal] = await new Promise((resolve) => {
      child.on('error', (err) => {
        console.error(`lockwright: cannot run ${cmd}: ${err.message}`)
        resolve([127, null])
      })
      child.on('exit', (c, s) => resolve([c, s]))
    })
    try {
      await lock.release()
    } catch (err) {
      // The command ran and ended: its exit code is still the answer. A loss already
      // reported is not reported twice.
      if (!(lost && err.code === 'ECOMPROMISED')) console.error(`lockwright: releasing ${file}: ${err.message}`)
    }
    const signalNumber = signal ? require('node:os').constants.signals[signal] : 0
    return signal ? 128 + signalNumber : code
  },

  async status(args) {
    const { values, positionals } = parse('status', args, { json: { type: 'boolean' }, verbose: { type: 'boolean' } })
    if (values.help) return print(HELP.status)
    const manager = managerFor(values)
    if (onRedis(values, 'status')) {
      const name = positionals[0]
      const statuses = name === undefined ? await manager.list() : [await manager.status(name)]
      if (values.json) return print(JSON.stringify(name === undefined ? statuses : statuses[0], null, 2))
      if (statuses.length === 0) return print('no locks in Redis')
      return print(statuses.map((s) => describeStatus(s, values.verbose)).join('\n'))
    }
    const target = positionals[0] ?? values['lock-dir'] ?? '.'
    const isDir = fs.statSync(target, { throwIfNoEntry: false })?.isDirectory() && !(values.strategy === 'mkdir' && target.endsWith('.lock'))
    // A path ending in .lock (as `status <dir>` prints them) names the lock file itself.
    const asLockfile = !isDir && target.endsWith('.lock')
    const statuses = isDir ? await manager.list(target) : [await manager.status(target, asLockfile ? { lockfilePath: target } : undefined)]
    if (values.json) return print(JSON.stringify(isDir ? statuses : statuses[0], null, 2))
    if (statuses.length === 0) return print(`no locks in ${target}`)
    return print(statuses.map((s) => describeStatus(s, values.verbose)).join('\n'))
  },

  async cleanup(args) {
    const { values, positionals } = parse('cleanup', args, { 'dry-run': { type: 'boolean' }, json: { type: 'boolean' } })
    if (values.help) return print(HELP.cleanup)
    const manager = managerFor(values)
    const redis = onRedis(values, 'cleanup')
    if (redis && positionals.length > 0) throw new UsageError(`Redis has no directories: cleanup --redis sweeps every lock under the prefix\n\n${HELP.cleanup}`)
    // Redis: every lock under the prefix, no directory.
    const dir = redis ? undefined : (positionals[0] ?? values['lock-dir'] ?? '.')
    const dryRun = values['dry-run'] === true
    // With --dry-run, the same shape as without: what it would clear and remove.
    const report = await manager.cleanupStaleLocks(dir, { dryRun })
    if (values.json) return print(JSON.stringify(report, null, 2))
    const [clear, remove] = dryRun ? ['would clear', 'would remove'] : ['cleared', 'removed']
    const { cleared, removed } = report
    return print([
      ...cleared.map((p) => `${clear} ${p}`),
      ...removed.map((p) => `${remove} ${p}`),
      `${cleared.length} ${clear}, ${removed.length} ${remove}, ${report.kept} kept`,
    ].join('\n'))
  },

  async release(args) {
    const { values, positionals } = parse('release', args, { force: { type: 'boolean' } })
    if (values.help) return print(HELP.release)
    // On Redis, without --force: only a lease that ran out (a live one is ELOCKED).
    const redis = onRedis(values, 'release')
    if (!positionals[0] || (!values.force && !redis)) throw new UsageError(HELP.release)
    const removed = await managerFor(values).forceRelease(positionals[0], { force: values.force === true })
    return print(removed ? `released ${positionals[0]}` : `${positionals[0]} was not locked`)
  },
}

function print(text) {
  process.stdout.write(`${text}\n`)
  return EXIT.ok
}

async function main(argv) {
  const [command, ...args] = argv
  if (command === '--version' || command === '-v') return print(require('../package.json').version)
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    print(HELP.main)
    return command ? EXIT.ok : EXIT.usage
  }
  if (!Object.hasOwn(commands, command)) throw new UsageError(`unknown command '${command}'\n\n${HELP.main}`)
  return commands[command](args)
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err) => {
    if (err instanceof UsageError) {
      console.error(`lockwright: ${err.message}`)
      process.exitCode = EXIT.usage
      return
    }
    console.error(`lockwright: ${err.message}`)
    process.exitCode = err.code === 'ELOCKED' ? EXIT.locked : err.code === 'ETIMEOUT' ? EXIT.timeout : err.code === 'EINVAL' ? EXIT.usage : EXIT.error
  },
)
