'use strict'
// `npm run bench`: lockwright against proper-lockfile, side by side in one run on one
// machine, plus the floors (bare kernel calls and the engine alone) and scale runs. Prints a table with
// ratios against the targets and writes benchmark/results.json. Nothing here is a
// test: timings vary with the machine and its load.
//
// The Redis section runs lockwright's strategy 'redis' against redlock (with ioredis)
// on one private redis-server started for the run, never a shared one; it is
// skipped, with a notice, when redis-server is not on PATH.
//
// BENCH_QUICK=1 shortens every run (for a smoke check); BENCH_CYCLES sets the
// number of acquire/release cycles of the memory run (default 1,000,000).

const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { once } = require('node:events')
const { Bench } = require('tinybench')
const properLockfile = require('proper-lockfile')
const native = require('../binding.js')
const { LockManager } = require('../index.js')
const dropIn = require('../lib/proper-lockfile.js')
const { redisServerPath, startRedis } = require('../__test__/redis-server.js')

const QUICK = process.env.BENCH_QUICK === '1'
const BENCH_TIME = QUICK ? 200 : 1500
const CONTENDED_MS = QUICK ? 500 : 3000
const HANDOFF_ROUNDS = QUICK ? 50 : 400
const CYCLES = Number(process.env.BENCH_CYCLES ?? (QUICK ? 20_000 : 1_000_000))
const HELD_AT_ONCE = QUICK ? 1000 : 10_000

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : NaN
}

function tempFile(dir, name) {
  const file = path.join(dir, name)
  fs.writeFileSync(file, '')
  return file
}

async function microBenchmarks(dir) {
  const manager = new LockManager({ owner: 'bench' })
  const unmetered = new LockManager({ owner: 'bench', metrics: false })
  const files = {
    async: tempFile(dir, 'async.json'),
    plAsync: tempFile(dir, 'pl-async.json'),
    sync: tempFile(dir, 'sync.json'),
    unmetered: tempFile(dir, 'unmetered.json'),
    plSync: tempFile(dir, 'pl-sync.json'),
    dropIn: tempFile(dir, 'dropin.json'),
  }
  const bench = new Bench({ time: BENCH_TIME, warmupTime: 200 })
  bench
    .add('lockwright acquire+release (async)', async () => {
      const lock = await manager.acquire(files.async)
      await lock.release()
    })
    .add('proper-lockfile lock+release (async)', async () => {
      const release = await properLockfile.lock(files.plAsync)
      await release()
    })
    .add('lockwright acquireSync+releaseSync', () => {
      manager.acquireSync(files.sync).releaseSync()
    })
    .add('lockwright acquireSync+releaseSync (metrics: false)', () => {
      unmetered.acquireSync(files.unmetered).releaseSync()
    })
    .add('proper-lockfile lockSync+release', () => {
      properLockfile.lockSync(files.plSync)()
    })
    .add('lockwright/proper-lockfile lockSync+release (mkdir protocol)', () => {
      dropIn.lockSync(files.dropIn)()
    })
  await bench.run()
  const result = {}
  for (const task of bench.tasks) {
    result[task.name] = { opsPerSec: task.result.hz, meanUs: task.result.mean * 1000, p99Us: task.result.p99 * 1000 }
  }
  return result
}

/**
 * The shared counter of the contended run, rewritten in place through one descriptor.
 * `writeFileSync` would truncate it, and ext4 flushes a truncated file to disk at
 * close: the critical section would then time the disk, for both libraries alike.
 */
const COUNTER_WIDTH = 16

function readCounter(fd) {
  const buffer = Buffer.alloc(COUNTER_WIDTH)
  return Number(buffer.toString('utf8', 0, fs.readSync(fd, buffer, 0, COUNTER_WIDTH, 0)))
}

function writeCounter(fd, value) {
  fs.writeSync(fd, String(value).padStart(COUNTER_WIDTH, '0'), 0)
}

/** N processes each run locked increments for a fixed time; returns ops/s and waits. */
async function contended(dir, kind, processes = 4, redisUrl = '') {
  const file = tempFile(dir, `contended-${kind}.json`)
  fs.writeFileSync(file, '0'.repeat(COUNTER_WIDTH))
  const children = Array.from({ length: processes }, () => fork(__filename, ['contender', kind, file, String(CONTENDED_MS), redisUrl]))
  const reports = []
  for (const child of children) child.on('message', (m) => reports.push(m))
  await Promise.all(children.map((c) => once(c, 'exit')))
  const waits = reports.flatMap((r) => r.waits).sort((a, b) => a - b)
  const ops = reports.reduce((sum, r) => sum + r.ops, 0)
  const counted = Number(fs.readFileSync(file, 'utf8'))
  if (counted !== ops) throw new Error(`${kind}: counter says ${counted}, processes did ${ops}: exclusion broken`)
  // How the increments split between the processes: a lock that hands off in order
  // splits them evenly; one whose releaser takes it straight back does not.
  const perProcess = reports.map((r) => r.ops).sort((a, b) => a - b)
  return { processes, opsPerSec: ops / (CONTENDED_MS / 1000), waitP50Ms: percentile(waits, 0.5), waitP99Ms: percentile(waits, 0.99), perProcess }
}

/** redlock as the Redis comparison: one server, retrying every 10 ms without jitter, forever. */
const REDLOCK_OPTIONS = { retryCount: -1, retryDelay: 10, retryJitter: 0 }
const REDIS_LEASE_MS = 10_000

function redlockOn(url) {
  const Redis = require('ioredis')
  const Redlock = require('redlock')
  const client = new Redis(url)
  return { redlock: new Redlock([client], REDLOCK_OPTIONS), close: () => client.quit() }
}

/** Each contender's way to lock: resolves with its release. */
function lockerFor(kind, file, redisUrl) {
  if (kind === 'lockwright') {
    const manager = new LockManager({ owner: 'contender' })
    return { lock: () => manager.acquire(file, { timeout: Infinity }).then((lock) => () => lock.release()) }
  }
  if (kind === 'proper-lockfile') {
    // proper-lockfile at its tightest: retry every millisecond, forever.
    const retries = { forever: true, minTimeout: 1, maxTimeout: 1, factor: 1 }
    return { lock: () => properLockfile.lock(file, { retries }) }
  }
  if (kind === 'lockwright-redis') {
    const manager = new LockManager({ owner: 'contender', strategy: 'redis', redis: redisUrl, stale: REDIS_LEASE_MS })
    return { lock: () => manager.acquire('bench:contended', { timeout: Infinity }).then((lock) => () => lock.release()), close: () => manager.close() }
  }
  const { redlock, close } = redlockOn(redisUrl)
  return { lock: () => redlock.lock('bench:redlock-contended', REDIS_LEASE_MS).then((lock) => () => lock.unlock()), close }
}

async function contender(kind, file, ms, redisUrl) {
  const locker = lockerFor(kind, file, redisUrl)
  const counter = fs.openSync(file, 'r+')
  const waits = []
  let ops = 0
  const end = Date.now() + ms
  while (Date.now() < end) {
    const asked = performance.now()
    const release = await locker.lock()
    waits.push(performance.now() - asked)
    writeCounter(counter, readCounter(counter) + 1)
    ops++
    await release()
  }
  process.send({ ops, waits })
  await locker.close?.()
}

/**
 * lockwright's strategy 'redis' against redlock on one private redis-server: an
 * uncontended acquire+release (two round trips each), and 4 processes contending.
 */
async function redisBenchmarks(dir) {
  if (!redisServerPath()) {
    console.log('Redis section skipped: redis-server is not on PATH\n')
    return null
  }
  const server = await startRedis()
  try {
    const manager = new LockManager({ owner: 'bench', strategy: 'redis', redis: server.url, stale: REDIS_LEASE_MS })
    const { redlock, close } = redlockOn(server.url)
    const bench = new Bench({ time: BENCH_TIME, warmupTime: 200 })
    bench
      .add('lockwright redis acquire+release', async () => {
        const lock = await manager.acquire('bench:uncontended')
        await lock.release()
      })
      .add('redlock lock+unlock', async () => {
        const lock = await redlock.lock('bench:redlock-uncontended', REDIS_LEASE_MS)
        await lock.unlock()
      })
    await bench.run()
    await manager.close()
    await close()
    const micro = {}
    for (const task of bench.tasks) {
      micro[task.name] = { opsPerSec: task.result.hz, meanUs: task.result.mean * 1000, p99Us: task.result.p99 * 1000 }
    }
    return {
      server: 'private redis-server on 127.0.0.1',
      redlockOptions: REDLOCK_OPTIONS,
      micro,
      contended: { lockwright: await contended(dir, 'lockwright-redis', 4, server.url), redlock: await contended(dir, 'redlock', 4, server.url) },
    }
  } finally {
    await server.stop()
  }
}

/** A holder in this process releases; how long until a waiter in another process holds it. */
async function handoff(dir, kind) {
  const file = tempFile(dir, `handoff-${kind}.json`)
  const child = fork(__filename, ['handoff-waiter', kind, file])
  await once(child, 'message')
  const manager = new LockManager({ owner: 'handoff' })
  const latencies = []
  for (let i = 0; i < HANDOFF_ROUNDS; i++) {
    const release = kind === 'lockwright'
      ? ((lock) => () => lock.releaseSync())(manager.acquireSync(file))
      : properLockfile.lockSync(file)
    child.send('wait')
    await once(child, 'message') // the waiter has started waiting
    await new Promise((resolve) => setTimeout(resolve, 2)) // and is parked in its wait
    const released = performance.timeOrigin + performance.now()
    release()
    const [{ acquiredAt }] = await once(child, 'message', { signal: AbortSignal.timeout(10_000) }).catch(() => {
      throw new Error(`${kind} handoff: round ${i}: the waiter never got the lock (${fs.readFileSync(`${file}.lock`, 'utf8').trim()})`)
    })
    latencies.push((acquiredAt - released) * 1000)
  }
  child.kill()
  latencies.sort((a, b) => a - b)
  return { rounds: HANDOFF_ROUNDS, p50Us: percentile(latencies, 0.5), p99Us: percentile(latencies, 0.99) }
}

function handoffWaiter(kind, file) {
  const manager = new LockManager({ owner: 'waiter' })
  const retries = { forever: true, minTimeout: 1, maxTimeout: 1, factor: 1 }
  process.on('message', async () => {
    const pending = kind === 'lockwright'
      ? manager.acquire(file, { timeout: Infinity }).then((lock) => () => lock.releaseSync())
      : properLockfile.lock(file, { retries })
    process.send('waiting')
    const release = await pending
    const acquiredAt = performance.timeOrigin + performance.now()
    await release() // proper-lockfile's release is asynchronous: done before we report
    process.send({ acquiredAt })
  })
  process.send('ready')
}

function scale(dir) {
  const manager = new LockManager({ owner: 'scale' })
  const lockDir = fs.mkdtempSync(path.join(dir, 'many-'))
  const fdsBefore = fs.readdirSync('/proc/self/fd').length
  const rssBefore = process.memoryUsage().rss
  let started = performance.now()
  const held = []
  for (let i = 0; i < HELD_AT_ONCE; i++) held.push(manager.acquireSync(path.join(lockDir, `f${i}`)))
  const heldMs = performance.now() - started
  const fdsHeld = fs.readdirSync('/proc/self/fd').length - fdsBefore
  const rssHeld = process.memoryUsage().rss - rssBefore
  for (const lock of held) lock.releaseSync()

  const cycleFile = path.join(dir, 'cycles.json')
  for (let i = 0; i < 10_000; i++) manager.acquireSync(cycleFile).releaseSync() // warm up
  global.gc?.()
  const { rss: rssStart, heapUsed: heapStart } = process.memoryUsage()
  // RSS at each quarter: V8 and malloc grow their pools early on, so a leak shows as
  // growth that goes on, not as the first step.
  const rssQuartersMB = []
  started = performance.now()
  for (let quarter = 0; quarter < 4; quarter++) {
    for (let i = 0; i < CYCLES / 4; i++) manager.acquireSync(cycleFile).releaseSync()
    global.gc?.()
    rssQuartersMB.push(process.memoryUsage().rss / 2 ** 20)
  }
  const cyclesMs = performance.now() - started
  global.gc?.()
  const { rss: rssEnd, heapUsed: heapEnd } = process.memoryUsage()
  return {
    heldAtOnce: { locks: HELD_AT_ONCE, ms: heldMs, fileDescriptors: fdsHeld, fdsPerLock: fdsHeld / HELD_AT_ONCE, rssBytesPerLock: rssHeld / HELD_AT_ONCE },
    cycles: { count: CYCLES, ms: cyclesMs, usPerCycle: (cyclesMs * 1000) / CYCLES, rssStartMB: rssStart / 2 ** 20, rssQuartersMB, rssEndMB: rssEnd / 2 ** 20, heapStartMB: heapStart / 2 ** 20, heapEndMB: heapEnd / 2 ** 20 },
  }
}

function row(cells, widths) {
  return cells.map((c, i) => String(c).padEnd(widths[i])).join('  ')
}

/**
 * The uncontended cycle against its physical floor (issue #16), in the same rounds so
 * machine noise cancels: each round times the Rust floor of a record-keeping cycle
 * (flock, two pwrites, unlock on a kept-open descriptor), then lockwright's
 * acquireSync+releaseSync and withLock(file, () => {}) from JavaScript. Returns each as
 * min/median/max multiples of that round's floor.
 */
async function floorRounds(dir, rounds = 5) {
  const cycles = QUICK ? 5_000 : 50_000
  const manager = new LockManager({ owner: 'floor' })
  const file = tempFile(dir, 'floor-cycle.json')
  const multiples = { sync: [], withLock: [], floorUs: [] }
  for (let round = 0; round < rounds; round++) {
    const floorDir = fs.mkdtempSync(path.join(dir, `floor-${round}-`))
    const floorNs = native.benchmarkFloors(floorDir, cycles).recordCycle
    let started = performance.now()
    for (let i = 0; i < cycles; i++) manager.acquireSync(file).releaseSync()
    const syncNs = ((performance.now() - started) * 1e6) / cycles
    started = performance.now()
    for (let i = 0; i < cycles; i++) await manager.withLock(file, () => {})
    const withLockNs = ((performance.now() - started) * 1e6) / cycles
    multiples.floorUs.push(floorNs / 1000)
    multiples.sync.push(syncNs / floorNs)
    multiples.withLock.push(withLockNs / floorNs)
  }
  const spread = (values) => {
    const sorted = [...values].sort((a, b) => a - b)
    return { min: sorted[0], median: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1] }
  }
  return { rounds, floorUs: spread(multiples.floorUs), sync: spread(multiples.sync), withLock: spread(multiples.withLock) }
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockwright-bench-'))
  console.log(`lockwright benchmarks on ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, node ${process.version}${QUICK ? ' (quick)' : ''}\n`)
  const micro = await microBenchmarks(dir)
  const floorDir = fs.mkdtempSync(path.join(dir, 'floors-'))
  const floors = native.benchmarkFloors(floorDir, QUICK ? 2_000 : 20_000)
  const againstFloor = await floorRounds(dir)
  const contendedLw = await contended(dir, 'lockwright')
  const contendedPl = await contended(dir, 'proper-lockfile')
  const handoffLw = await handoff(dir, 'lockwright')
  const handoffPl = await handoff(dir, 'proper-lockfile')
  const scaled = scale(dir)
  const redis = await redisBenchmarks(dir)
  fs.rmSync(dir, { recursive: true, force: true })

  const ratio = (a, b) => a / b
  const m = (name) => micro[name].opsPerSec
  const comparisons = [
    ['async acquire+release', m('lockwright acquire+release (async)'), m('proper-lockfile lock+release (async)'), 50],
    ['sync acquire+release', m('lockwright acquireSync+releaseSync'), m('proper-lockfile lockSync+release'), 50],
    ['drop-in lockSync (mkdir protocol)', m('lockwright/proper-lockfile lockSync+release (mkdir protocol)'), m('proper-lockfile lockSync+release'), 1.5],
    [`contended, ${contendedLw.processes} processes`, contendedLw.opsPerSec, contendedPl.opsPerSec, 100],
  ]
  const widths = [36, 16, 18, 10, 8, 6]
  console.log(row(['case', 'lockwright ops/s', 'proper-lockfile', 'ratio', 'target', 'met'], widths))
  for (const [name, ours, theirs, target] of comparisons) {
    const r = ratio(ours, theirs)
    console.log(row([name, ours.toFixed(0), theirs.toFixed(0), `${r.toFixed(1)}x`, `${target}x`, r >= target ? 'yes' : 'NO'], widths))
  }
  console.log()
  const us = (ns) => (ns / 1000).toFixed(1)
  const perCycleUs = (name) => 1e6 / m(name)
  const metered = perCycleUs('lockwright acquireSync+releaseSync')
  const unmetered = perCycleUs('lockwright acquireSync+releaseSync (metrics: false)')
  console.log(`floors, timed in Rust: flock lock+unlock ${us(floors.flockPair)} us; mkdir+rmdir ${us(floors.mkdirRmdir)} us; engine acquire+release ${us(floors.engineCycle)} us (kernel), ${us(floors.engineMkdirCycle)} us (mkdir)`)
  const x = ({ min, median, max }) => `${median.toFixed(1)}x (min ${min.toFixed(1)}x, max ${max.toFixed(1)}x)`
  console.log(`against the floor (a record-keeping flock cycle in Rust, ${againstFloor.floorUs.median.toFixed(2)} us; ${againstFloor.rounds} rounds): acquireSync+releaseSync ${x(againstFloor.sync)} (target 3x), withLock ${x(againstFloor.withLock)} (target 5x)`)
  console.log(`where a sync cycle goes: ${metered.toFixed(1)} us from JavaScript, of which the engine ${us(floors.engineCycle)} us; metrics recording ${((metered - unmetered) * 1000).toFixed(0)} ns (${metered.toFixed(1)} us with, ${unmetered.toFixed(1)} us without)`)
  console.log(`contended waits: lockwright p50 ${contendedLw.waitP50Ms.toFixed(3)} ms, p99 ${contendedLw.waitP99Ms.toFixed(3)} ms; proper-lockfile p50 ${contendedPl.waitP50Ms.toFixed(3)} ms, p99 ${contendedPl.waitP99Ms.toFixed(3)} ms`)
  console.log(`cross-process handoff: lockwright p50 ${handoffLw.p50Us.toFixed(0)} us, p99 ${handoffLw.p99Us.toFixed(0)} us (target p50 <= 100 us: ${handoffLw.p50Us <= 100 ? 'yes' : 'NO'}); proper-lockfile p50 ${handoffPl.p50Us.toFixed(0)} us, p99 ${handoffPl.p99Us.toFixed(0)} us`)
  const h = scaled.heldAtOnce
  console.log(`${h.locks} locks held at once: ${h.ms.toFixed(0)} ms to take, ${h.fdsPerLock.toFixed(1)} file descriptors and ${(h.rssBytesPerLock / 1024).toFixed(1)} KiB RSS per lock`)
  const c = scaled.cycles
  console.log(`${c.count} acquireSync/releaseSync cycles: ${c.usPerCycle.toFixed(1)} us each; RSS ${c.rssStartMB.toFixed(1)} MB before, ${c.rssQuartersMB.map((mb) => mb.toFixed(1)).join(' / ')} MB at each quarter; JS heap ${c.heapStartMB.toFixed(1)} MB before, ${c.heapEndMB.toFixed(1)} MB after`)

  const redisComparisons = redis && [
    ['Redis: uncontended acquire+release', redis.micro['lockwright redis acquire+release'].opsPerSec, redis.micro['redlock lock+unlock'].opsPerSec, 1],
    [`Redis: contended, ${redis.contended.lockwright.processes} processes`, redis.contended.lockwright.opsPerSec, redis.contended.redlock.opsPerSec, 3],
  ]
  if (redis) {
    const { lockwright: lw, redlock: rl } = redis.contended
    console.log(`\nRedis (${redis.server}), against redlock ${require('redlock/package.json').version} with ioredis, retryDelay ${REDLOCK_OPTIONS.retryDelay} ms, retryJitter ${REDLOCK_OPTIONS.retryJitter}:`)
    console.log(row(['case', 'lockwright ops/s', 'redlock', 'ratio', 'target', 'met'], widths))
    for (const [name, ours, theirs, target] of redisComparisons) {
      const r = ratio(ours, theirs)
      console.log(row([name, ours.toFixed(0), theirs.toFixed(0), `${r.toFixed(1)}x`, `${target}x`, r >= target ? 'yes' : 'NO'], widths))
    }
    console.log(`contended waits: lockwright p50 ${lw.waitP50Ms.toFixed(3)} ms, p99 ${lw.waitP99Ms.toFixed(3)} ms; redlock p50 ${rl.waitP50Ms.toFixed(3)} ms, p99 ${rl.waitP99Ms.toFixed(3)} ms`)
    console.log(`increments per process: lockwright ${lw.perProcess.join(' / ')}; redlock ${rl.perProcess.join(' / ')}`)
  }

  const results = {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, quick: QUICK },
    micro,
    floorsNs: floors,
    againstFloor,
    contended: { lockwright: contendedLw, properLockfile: contendedPl },
    handoff: { lockwright: handoffLw, properLockfile: handoffPl },
    scale: scaled,
    redis,
    ratios: Object.fromEntries([...comparisons, ...(redisComparisons ?? [])].map(([name, ours, theirs, target]) => [name, { ratio: ratio(ours, theirs), target }])),
  }
  const out = path.join(__dirname, 'results.json')
  fs.writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`)
  console.log(`\nresults written to ${path.relative(process.cwd(), out)}`)
}

const [role, ...args] = process.argv.slice(2)
if (role === 'contender') contender(args[0], args[1], Number(args[2]), args[3])
else if (role === 'handoff-waiter') handoffWaiter(args[0], args[1])
else main()
