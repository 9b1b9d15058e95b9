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
// `node benchmark/bench.js ring` runs only the contended rounds against the FIFO ring,
// `node benchmark/bench.js scaling` the same from 2 to 16 processes, and
// `node benchmark/bench.js redis` the Redis section alone.

const { execFileSync, fork } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
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
/** How long the handoff run's waiter is parked before the release. */
const HANDOFF_PAUSE_MS = 2
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
 * The shared counter of the contended runs, rewritten in place through one descriptor.
 * `writeFileSync` would truncate it, and ext4 flushes a truncated file to disk at
 * close: the critical section would then time the disk, for both libraries alike.
 * Beside the count: who wrote it and when, so the next process to hold the lock
 * knows how long the handoff took (its clock is the same: `performance.timeOrigin`).
 */
const COUNTER_WIDTH = 48

function readCounter(fd) {
  const buffer = Buffer.alloc(COUNTER_WIDTH)
  const [value, pid = 0, at = 0] = buffer.toString('utf8', 0, fs.readSync(fd, buffer, 0, COUNTER_WIDTH, 0)).trim().split(/\s+/).map(Number)
  return { value, pid, at }
}

function writeCounter(fd, value) {
  fs.writeSync(fd, `${value} ${process.pid} ${(performance.timeOrigin + performance.now()).toFixed(3)}`.padEnd(COUNTER_WIDTH), 0)
}

/** The critical section: one increment; a handoff from another process is timed into `handoffsUs`. */
function increment(fd, handoffsUs) {
  const { value, pid, at } = readCounter(fd)
  if (pid !== 0 && pid !== process.pid) handoffsUs.push((performance.timeOrigin + performance.now() - at) * 1000)
  writeCounter(fd, value + 1)
}

function newCounter(file) {
  fs.writeFileSync(file, '0'.padEnd(COUNTER_WIDTH))
}

function counted(file) {
  return Number(fs.readFileSync(file, 'utf8').trim().split(/\s+/)[0])
}

/** N processes each run locked increments for a fixed time; returns ops/s and waits. */
async function contended(dir, kind, processes = 4, redisUrl = '', ms = CONTENDED_MS) {
  const file = tempFile(dir, `contended-${kind}.json`)
  newCounter(file)
  const children = Array.from({ length: processes }, () => fork(__filename, ['contender', kind, file, String(ms), redisUrl]))
  const reports = []
  for (const child of children) child.on('message', (m) => reports.push(m))
  await Promise.all(children.map((c) => once(c, 'exit')))
  const waits = reports.flatMap((r) => r.waits).sort((a, b) => a - b)
  const ops = reports.reduce((sum, r) => sum + r.ops, 0)
  if (counted(file) !== ops) throw new Error(`${kind}: counter says ${counted(file)}, processes did ${ops}: exclusion broken`)
  const handoffs = reports.flatMap((r) => r.handoffsUs).sort((a, b) => a - b)
  // How the increments split between the processes: a lock that hands off in order
  // splits them evenly; one whose releaser takes it straight back does not.
  const perProcess = reports.map((r) => r.ops).sort((a, b) => a - b)
  return { processes, opsPerSec: ops / (ms / 1000), waitP50Ms: percentile(waits, 0.5), waitP99Ms: percentile(waits, 0.99), perProcess, handoffP50Us: percentile(handoffs, 0.5) }
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
  const handoffsUs = []
  let ops = 0
  const end = Date.now() + ms
  while (Date.now() < end) {
    const asked = performance.now()
    const release = await locker.lock()
    waits.push(performance.now() - asked)
    increment(counter, handoffsUs)
    ops++
    await release()
  }
  process.send({ ops, waits, handoffsUs })
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
      ring: await tokenRing(dir, CONTENDED_MS, 0, 4, server.url),
    }
  } finally {
    await server.stop()
  }
}

/**
 * The floor of contended runs and of handoff (issue #16): `processes` Node processes
 * pass one token round a ring of FIFOs, and whoever holds it runs the same critical
 * section as a locked increment (which times the hop from the previous holder's
 * write). Nothing but one wake-up per hop, which no lock between processes can beat.
 * `pauseMs` holds the token that long before passing it on, so the next member has
 * been parked a while, as the waiter of the handoff run is.
 *
 * With `redisUrl` the token goes round Redis instead: each member PUBLISHes it on the
 * next one's channel (ioredis, on the event loop). That is the floor of any lock that
 * hands over through that server: one message from the holder, through Redis, to the
 * next holder's event loop, with no script, no queue and no reply awaited.
 */
async function tokenRing(dir, ms, pauseMs = 0, processes = 4, redisUrl = '') {
  const ringDir = fs.mkdtempSync(path.join(dir, 'ring-'))
  const ends = Array.from({ length: processes }, (_, i) => (redisUrl ? `bench:ring:${i}` : path.join(ringDir, `hop-${i}`)))
  if (!redisUrl) for (const fifo of ends) execFileSync('mkfifo', [fifo])
  const file = path.join(ringDir, 'counter')
  newCounter(file)
  const members = ends.map((own, i) => fork(__filename, ['ring-member', own, ends[(i + 1) % processes], file, String(pauseMs), redisUrl]))
  await Promise.all(members.map((m) => once(m, 'message'))) // each has its FIFOs open (or is subscribed)
  const reports = []
  const first = new Promise((resolve) => {
    for (const m of members) m.on('message', (report) => resolve(reports.push(report)))
  })
  const end = Date.now() + ms
  for (const m of members) m.send({ end })
  members[0].send('inject')
  // The member that holds the token when the time is up keeps it; the others wait
  // on their FIFOs until told to stop.
  await first
  for (const m of members) if (m.connected) m.send('stop', () => {}) // gone meanwhile: fine
  await Promise.all(members.map((m) => (m.exitCode === null ? once(m, 'exit') : null)))
  const ops = reports.reduce((sum, r) => sum + r.ops, 0)
  if (counted(file) !== ops) throw new Error(`${redisUrl ? 'Redis' : 'FIFO'} ring: counter says ${counted(file)}, members did ${ops}`)
  fs.rmSync(ringDir, { recursive: true, force: true })
  const hops = reports.flatMap((r) => r.handoffsUs).sort((a, b) => a - b)
  return { processes, opsPerSec: ops / (ms / 1000), hopP50Us: percentile(hops, 0.5), hopP99Us: percentile(hops, 0.99) }
}

/** How a ring member hears the token and passes it on: a FIFO each, or a Redis channel each. */
async function ringHops(own, next, redisUrl) {
  if (redisUrl) {
    const Redis = require('ioredis')
    const listener = new Redis(redisUrl)
    const sender = new Redis(redisUrl)
    await listener.subscribe(own)
    await sender.ping() // connected before the first pass
    return {
      onToken: (handle) => listener.on('message', handle),
      pass: () => sender.publish(next, 't'),
      close: () => (listener.disconnect(), sender.disconnect()),
    }
  }
  // O_RDWR: opening a FIFO for reading alone would block until a writer comes.
  const input = new net.Socket({ fd: fs.openSync(own, fs.constants.O_RDWR | fs.constants.O_NONBLOCK), writable: false })
  const output = fs.openSync(next, fs.constants.O_RDWR)
  const token = Buffer.from('t')
  return { onToken: (handle) => input.on('data', handle), pass: () => fs.writeSync(output, token), close: () => input.destroy() }
}

/** One member of the ring: hears the token, increments, passes it on. */
async function ringMember(own, next, file, pauseMs, redisUrl) {
  const hops = await ringHops(own, next, redisUrl)
  const counter = fs.openSync(file, 'r+')
  const handoffsUs = []
  let ops = 0
  let end = Infinity
  let finished = false
  const pass = hops.pass
  const finish = () => {
    if (finished) return
    finished = true
    process.send({ ops, handoffsUs })
    hops.close()
    process.disconnect()
  }
  hops.onToken(() => {
    if (Date.now() >= end) return finish()
    increment(counter, handoffsUs)
    ops++
    if (pauseMs === 0) return pass()
    setTimeout(() => {
      // The hop is timed from the pass, not from the increment before the pause.
      writeCounter(counter, readCounter(counter).value)
      pass()
    }, pauseMs)
  })
  process.on('message', (m) => {
    if (m === 'inject') pass()
    else if (m === 'stop') finish()
    else end = m.end
  })
  process.send('ready')
}

/** A holder in this process releases; how long until a waiter in another process holds it. */
async function handoff(dir, kind, rounds = HANDOFF_ROUNDS) {
  const file = tempFile(dir, `handoff-${kind}.json`)
  const child = fork(__filename, ['handoff-waiter', kind, file])
  await once(child, 'message')
  const manager = new LockManager({ owner: 'handoff' })
  const latencies = []
  for (let i = 0; i < rounds; i++) {
    const release = kind === 'lockwright'
      ? ((lock) => () => lock.releaseSync())(manager.acquireSync(file))
      : properLockfile.lockSync(file)
    child.send('wait')
    await once(child, 'message') // the waiter has started waiting
    await new Promise((resolve) => setTimeout(resolve, HANDOFF_PAUSE_MS)) // and is parked in its wait
    const released = performance.timeOrigin + performance.now()
    release()
    const [{ acquiredAt }] = await once(child, 'message', { signal: AbortSignal.timeout(10_000) }).catch(() => {
      throw new Error(`${kind} handoff: round ${i}: the waiter never got the lock (${fs.readFileSync(`${file}.lock`, 'utf8').trim()})`)
    })
    latencies.push((acquiredAt - released) * 1000)
  }
  child.kill()
  latencies.sort((a, b) => a - b)
  return { rounds, p50Us: percentile(latencies, 0.5), p99Us: percentile(latencies, 0.99) }
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
  const unmetered = new LockManager({ owner: 'floor', metrics: false })
  const unresolved = new LockManager({ owner: 'floor', realpath: false })
  const file = tempFile(dir, 'floor-cycle.json')
  const perCycleNs = (cycle, count = cycles) => {
    const started = performance.now()
    for (let i = 0; i < count; i++) cycle()
    return ((performance.now() - started) * 1e6) / count
  }
  const perAsyncCycleNs = async (cycle) => {
    const started = performance.now()
    for (let i = 0; i < cycles; i++) await cycle()
    return ((performance.now() - started) * 1e6) / cycles
  }
  const multiples = { floorUs: [], sync: [], withLock: [], syncNoRealpath: [], withLockNoRealpath: [], metricsCost: [] }
  for (let round = 0; round < rounds; round++) {
    const floorDir = fs.mkdtempSync(path.join(dir, `floor-${round}-`))
    const floorNs = native.benchmarkFloors(floorDir, cycles).recordCycle
    const syncNs = perCycleNs(() => manager.acquireSync(file).releaseSync())
    const withLockNs = await perAsyncCycleNs(() => manager.withLock(file, () => {}))
    // Metrics on and off in alternating blocks, so drift in the machine's speed
    // during the round falls on both alike.
    let meteredBlocksNs = 0
    let unmeteredNs = 0
    for (let block = 0; block < 20; block++) {
      meteredBlocksNs += perCycleNs(() => manager.acquireSync(file).releaseSync(), cycles / 20)
      unmeteredNs += perCycleNs(() => unmetered.acquireSync(file).releaseSync(), cycles / 20)
    }
    const syncNoRealpathNs = perCycleNs(() => unresolved.acquireSync(file).releaseSync())
    const withLockNoRealpathNs = await perAsyncCycleNs(() => unresolved.withLock(file, () => {}))
    multiples.floorUs.push(floorNs / 1000)
    multiples.sync.push(syncNs / floorNs)
    multiples.withLock.push(withLockNs / floorNs)
    multiples.syncNoRealpath.push(syncNoRealpathNs / floorNs)
    multiples.withLockNoRealpath.push(withLockNoRealpathNs / floorNs)
    multiples.metricsCost.push(meteredBlocksNs / unmeteredNs - 1)
  }
  return { rounds, ...Object.fromEntries(Object.entries(multiples).map(([name, values]) => [name, spread(values)])) }
}

/**
 * Contended throughput and handoff against their floor, the FIFO ring (issue #16), in
 * the same rounds: each round runs the ring, then lockwright's 4 contending
 * processes and its handoff. Returns min/median/max of each round's multiples:
 * increments per second as a fraction of the ring's (1 or more matches it), and the
 * handoff p50 as a multiple of one ring hop's p50 (target at most 2).
 */
async function ringRounds(dir, rounds = 3) {
  const ms = QUICK ? 500 : 1500
  const handoffs = Math.ceil(HANDOFF_ROUNDS / rounds)
  const found = { ringOpsPerSec: [], hopP50Us: [], parkedHopP50Us: [], throughput: [], handoff: [], parkedHandoff: [] }
  for (let round = 0; round < rounds; round++) {
    const ring = await tokenRing(dir, ms)
    const locked = await contended(dir, 'lockwright', ring.processes, '', ms)
    // Parked: each member waits HANDOFF_PAUSE_MS before it is woken, as handoff()'s waiter does.
    const parkedRing = await tokenRing(dir, handoffs * (HANDOFF_PAUSE_MS + 1), HANDOFF_PAUSE_MS)
    const handed = await handoff(dir, 'lockwright', handoffs)
    found.ringOpsPerSec.push(ring.opsPerSec)
    found.hopP50Us.push(ring.hopP50Us)
    found.parkedHopP50Us.push(parkedRing.hopP50Us)
    found.throughput.push(locked.opsPerSec / ring.opsPerSec)
    found.handoff.push(locked.handoffP50Us / ring.hopP50Us)
    found.parkedHandoff.push(handed.p50Us / parkedRing.hopP50Us)
  }
  return { rounds, ...Object.fromEntries(Object.entries(found).map(([name, values]) => [name, spread(values)])) }
}

/** min/median/max of a few rounds' values. */
function spread(values) {
  const sorted = [...values].sort((a, b) => a - b)
  return { min: sorted[0], median: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1] }
}

/**
 * `node benchmark/bench.js ring`: only the contended rounds against the FIFO ring
 * (`ringRounds`), printed as JSON. For trying a change to the waiting path without
 * the whole run.
 */
async function ringOnly() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockwright-bench-'))
  const found = await ringRounds(dir)
  fs.rmSync(dir, { recursive: true, force: true })
  console.log(JSON.stringify(found, (_key, value) => (typeof value === 'number' ? Number(value.toFixed(2)) : value), 2))
}

/** `node benchmark/bench.js redis`: the Redis section alone, printed as JSON. */
async function redisOnly() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockwright-bench-'))
  const found = await redisBenchmarks(dir)
  fs.rmSync(dir, { recursive: true, force: true })
  if (!found) return
  const { micro, contended: c } = found
  const uncontended = micro['lockwright redis acquire+release'].opsPerSec / micro['redlock lock+unlock'].opsPerSec
  const ofRing = { lockwright: c.lockwright.opsPerSec / found.ring.opsPerSec, redlock: c.redlock.opsPerSec / found.ring.opsPerSec }
  console.log(JSON.stringify({ uncontendedRatio: uncontended, contendedRatio: c.lockwright.opsPerSec / c.redlock.opsPerSec, contendedOfRing: ofRing, ...found }, (_key, value) => (typeof value === 'number' ? Number(value.toFixed(3)) : value), 2))
}

/**
 * `node benchmark/bench.js scaling`: contended increments and handoff against the FIFO
 * ring of the same size, from 2 to 16 processes. Every release wakes every waiting
 * process (inotify cannot wake one), while the ring wakes one: if that herd were what
 * costs, lockwright's share of the ring would fall as processes are added.
 */
async function scaling() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockwright-bench-'))
  const ms = QUICK ? 500 : 1500
  const widths = [10, 14, 16, 18, 16, 10]
  console.log(row(['processes', 'ring incr/s', 'ring hop p50', 'lockwright incr/s', 'handoff p50', 'of ring'], widths))
  for (const processes of [2, 4, 8, 16]) {
    const ring = await tokenRing(dir, ms, 0, processes)
    const locked = await contended(dir, 'lockwright', processes, '', ms)
    console.log(
      row(
        [
          processes,
          ring.opsPerSec.toFixed(0),
          `${ring.hopP50Us.toFixed(0)} us`,
          locked.opsPerSec.toFixed(0),
          `${locked.handoffP50Us.toFixed(0)} us`,
          `${(locked.opsPerSec / ring.opsPerSec).toFixed(2)}x`,
        ],
        widths,
      ),
    )
  }
  fs.rmSync(dir, { recursive: true, force: true })
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockwright-bench-'))
  console.log(`lockwright benchmarks on ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, node ${process.version}${QUICK ? ' (quick)' : ''}\n`)
  const micro = await microBenchmarks(dir)
  const floorDir = fs.mkdtempSync(path.join(dir, 'floors-'))
  const floors = native.benchmarkFloors(floorDir, QUICK ? 2_000 : 20_000)
  const againstFloor = await floorRounds(dir)
  const againstRing = await ringRounds(dir)
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
  const r = againstRing
  console.log(`against the FIFO ring (4 Node processes passing a token through FIFOs, same critical section; ${r.rounds} rounds): ring ${r.ringOpsPerSec.median.toFixed(0)} increments/s, one hop p50 ${r.hopP50Us.median.toFixed(0)} us (${r.parkedHopP50Us.median.toFixed(0)} us to a member parked ${HANDOFF_PAUSE_MS} ms)`)
  console.log(`  contended increments/s: ${x(r.throughput)} the ring's (target 1x or more)`)
  console.log(`  cross-process handoff p50, within the contended run: ${x(r.handoff)} one ring hop (target 2x or less)`)
  console.log(`  cross-process handoff p50 to a waiter parked ${HANDOFF_PAUSE_MS} ms: ${x(r.parkedHandoff)} one ring hop to a parked member (target 2x or less)`)
  console.log(`  with realpath: false (no symlink resolution): acquireSync+releaseSync ${x(againstFloor.syncNoRealpath)}, withLock ${x(againstFloor.withLockNoRealpath)}`)
  const percent = ({ min, median, max }) => `${(median * 100).toFixed(0)}% (min ${(min * 100).toFixed(0)}%, max ${(max * 100).toFixed(0)}%)`
  console.log(`metrics: true costs ${percent(againstFloor.metricsCost)} over metrics: false in the same rounds (target 10% or less)`)
  console.log(`where a sync cycle goes: ${metered.toFixed(1)} us from JavaScript, of which the engine ${us(floors.engineCycle)} us; metrics recording ${((metered - unmetered) * 1000).toFixed(0)} ns (${metered.toFixed(1)} us with, ${unmetered.toFixed(1)} us without)`)
  console.log(`contended waits: lockwright p50 ${contendedLw.waitP50Ms.toFixed(3)} ms, p99 ${contendedLw.waitP99Ms.toFixed(3)} ms; proper-lockfile p50 ${contendedPl.waitP50Ms.toFixed(3)} ms, p99 ${contendedPl.waitP99Ms.toFixed(3)} ms`)
  console.log(`cross-process handoff: lockwright p50 ${handoffLw.p50Us.toFixed(0)} us, p99 ${handoffLw.p99Us.toFixed(0)} us ; proper-lockfile p50 ${handoffPl.p50Us.toFixed(0)} us, p99 ${handoffPl.p99Us.toFixed(0)} us`)
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
    const ring = redis.ring
    console.log(`Redis ring, the floor of a handoff through Redis (4 processes pass a token by PUBLISH through the same server, no lock): ${ring.opsPerSec.toFixed(0)} increments/s, hop p50 ${ring.hopP50Us.toFixed(0)} us`)
    console.log(`  of the Redis ring: lockwright contended ${ratio(lw.opsPerSec, ring.opsPerSec).toFixed(2)}x (handoff p50 ${lw.handoffP50Us.toFixed(0)} us), redlock ${ratio(rl.opsPerSec, ring.opsPerSec).toFixed(2)}x; 3x redlock would be ${ratio(3 * rl.opsPerSec, ring.opsPerSec).toFixed(2)}x`)
  }

  const results = {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, quick: QUICK },
    micro,
    floorsNs: floors,
    againstFloor,
    againstRing,
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
else if (role === 'ring-member') ringMember(args[0], args[1], args[2], Number(args[3]), args[4])
else if (role === 'ring') ringOnly()
else if (role === 'scaling') scaling()
else if (role === 'redis') redisOnly()
else main()
