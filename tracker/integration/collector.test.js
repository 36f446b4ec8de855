// The tracker against the real collector (`basketflow collect`) and the local broker: a session
// whose collector is stopped and restarted, with a page reload during the outage and a beacon
// at the end; the topic then holds exactly the events tracked, once each, byte for byte.
//
// Needs the stack (scripts/stack up) and a built binary:
//   BASKETFLOW_BIN              default $CARGO_TARGET_DIR/debug/basketflow
//                               (CARGO_TARGET_DIR default ~/.cache/basketflow/target)
//   BASKETFLOW_KAFKA_BROKERS    default 127.0.0.1:$KAFKA_PORT (9092)
//   BASKETFLOW_STACK_DIR        where scripts/stack keeps Kafka (for its admin jars), default .stack
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { tmpdir, homedir } from 'node:os'
import { join } from 'node:path'
import { createTracker, memoryStorage } from '../src/tracker.js'

const repo = new URL('../..', import.meta.url).pathname
const BIN = process.env.BASKETFLOW_BIN ||
  join(process.env.CARGO_TARGET_DIR || join(homedir(), '.cache/basketflow/target'), 'debug/basketflow')
const BROKERS = process.env.BASKETFLOW_KAFKA_BROKERS || `127.0.0.1:${process.env.KAFKA_PORT || 9092}`
const KAFKA_LIBS = join(process.env.BASKETFLOW_STACK_DIR || join(repo, '.stack'), 'kafka/libs')
const RETAILER = 'retailer-it'
const KEY = 'tracker-integration-key'

/** Waits for `cond()` to hold, checking every 25 ms, for at most `ms`. */
async function until (what, cond, ms = 30_000) {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}

async function freePort () {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address()
  server.close()
  return port
}

/** A topic of its own, created now and deleted by `drop()`, in one JVM. */
async function topic (name) {
  const jvm = spawn('java', ['-cp', `${KAFKA_LIBS}/*`, new URL('Topic.java', import.meta.url).pathname, BROKERS, name, '2'],
    { stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  jvm.stdout.on('data', d => { out += d })
  await until(`topic ${name} created`, () => out.includes('created') || jvm.exitCode !== null, 120_000)
  assert.ok(out.includes('created'), `creating ${name} failed`)
  return {
    drop: async () => {
      jvm.stdin.end()
      const timer = setTimeout(() => jvm.kill(), 60_000) // never outlive the test
      if (jvm.exitCode === null) await once(jvm, 'exit')
      clearTimeout(timer)
      assert.match(out, /deleted/)
    }
  }
}

/** `basketflow collect` on `port`; `stop()` sends SIGTERM and waits for the exit. */
async function collector (config, port) {
  // The config file alone: the binary reads BASKETFLOW_<SECTION>_<KEY> overrides and refuses any
  // other BASKETFLOW_ variable (this test's own BASKETFLOW_BIN, BASKETFLOW_STACK_DIR).
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BASKETFLOW_')))
  const child = spawn(BIN, ['collect', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'], env })
  let log = ''
  child.stderr.on('data', d => { log += d })
  try {
    await until('the collector to answer /health', async () => {
      if (child.exitCode !== null) throw new Error(`the collector exited (${child.exitCode}): ${log}`)
      try { return (await fetch(`http://127.0.0.1:${port}/health`)).ok } catch { return false }
    })
  } catch (e) {
    child.kill()
    throw new Error(`${e.message}\n${log}`)
  }
  return { stop: async () => { child.kill('SIGTERM'); if (child.exitCode === null) await once(child, 'exit') } }
}

/** Every message of `name`: [key, value] pairs, read to the end with kcat. */
function read (name) {
  return new Promise((resolve, reject) => execFile('kcat', ['-b', BROKERS, '-C', '-t', name, '-o', 'beginning', '-e', '-q', '-f', '%k\t%s\n'],
    { maxBuffer: 1 << 24 }, (err, stdout) => err ? reject(err) : resolve(stdout.split('\n').filter(Boolean).map(l => l.split('\t')))))
}

/** Timers that a simulated reload can cancel all at once (a closed page runs none). */
function pageTimers () {
  const live = new Set()
  return {
    setTimeout: (fn, ms) => { const id = setTimeout(() => { live.delete(id); fn() }, ms); live.add(id); return id },
    clearTimeout: id => { live.delete(id); clearTimeout(id) },
    close: () => { for (const id of live) clearTimeout(id); live.clear() }
  }
}

test('the collector stopped and restarted mid-session, and a reload during the outage: every event stored once', { timeout: 180_000 }, async () => {
  assert.ok(existsSync(BIN), `no collector binary at ${BIN} (cargo build -p basketflow, or set BASKETFLOW_BIN)`)
  const name = `tracker-it-${process.pid}-${Date.now()}`
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'basketflow-tracker-it-'))
  const config = join(dir, 'basketflow.toml')
  writeFileSync(config, `[kafka]
brokers = "${BROKERS}"

[collector]
listen = "127.0.0.1:${port}"
topic = "${name}"
auth = "keys"
produce_timeout_ms = 5000

[[collector.retailers]]
id = "${RETAILER}"
key_sha256 = "${createHash('sha256').update(KEY).digest('hex')}"
`)
  const t = await topic(name)
  let server = null
  try {
    server = await collector(config, port)
    const storage = memoryStorage()
    const beacons = []
    const page = () => {
      const timers = pageTimers()
      const tracker = createTracker({
        endpoint: `http://127.0.0.1:${port}`,
        retailerId: RETAILER,
        key: KEY,
        storage,
        flushIntervalMs: 20,
        backoffBaseMs: 100,
        backoffMaxMs: 400,
        setTimeout: timers.setTimeout,
        clearTimeout: timers.clearTimeout,
        // Node has no navigator.sendBeacon: what a browser sends for one (text/plain, ?key=).
        sendBeacon: (url, body) => { beacons.push(fetch(url, { method: 'POST', body, headers: { 'content-type': 'text/plain;charset=UTF-8' } })); return true }
      })
      return { tracker, close: timers.close }
    }
    const product = { product_id: 'p1', category: 'pasta', brand: 'b', unit_price_cents: 250 }
    const calls = [
      ['page_viewed', { url: 'https://shop.example/', page_type: 'home' }],
      ['search_performed', { query: 'penne', result_count: 3 }],
      ['link_clicked', { url: 'https://shop.example/s?q=penne', target_url: 'https://shop.example/p/1', product_id: 'p1' }],
      ['product_added', { product, quantity: 2 }],
      ['product_removed', { product, quantity: 1 }],
      ['order_paid', { order_id: 'o1', lines: [{ ...product, quantity: 1 }], total_cents: 250 }],
      ['order_status_changed', { order_id: 'o1', status: 'cancelled' }]
    ]
    const tracked = []
    const first = page()
    first.tracker.identify('shopper-it-1')
    for (const [type, fields] of calls) tracked.push(first.tracker.track(type, fields))
    await first.tracker.flush()
    assert.equal(first.tracker.pending(), 0)
    assert.equal(first.tracker.stats().accepted, 7)

    // The collector goes away mid-session; events wait in the queue.
    await server.stop()
    for (const [type, fields] of calls.slice(0, 3)) tracked.push(first.tracker.track(type, fields))
    await first.tracker.flush()
    assert.equal(first.tracker.pending(), 3)
    assert.ok(first.tracker.stats().retries >= 1)

    // A reload during the outage: the next page finds the queue and the session.
    first.close()
    const second = page()
    assert.equal(second.tracker.pending(), 3)
    for (const [type, fields] of calls.slice(3, 5)) tracked.push(second.tracker.track(type, fields))
    assert.equal(tracked.at(-1).session_id, tracked[0].session_id)
    await second.tracker.flush()
    assert.equal(second.tracker.pending(), 5)

    // The collector comes back: the queue drains by itself (backoff at most 400 ms).
    server = await collector(config, port)
    await until('the queue to drain', () => second.tracker.pending() === 0)
    assert.equal(second.tracker.stats().accepted, 5)
    // Leaving the page: a beacon.
    tracked.push(second.tracker.track(...calls[0]))
    await second.tracker.flush({ beacon: true })
    assert.equal(beacons.length, 1)
    assert.equal((await beacons[0]).status, 200)
    second.close()

    const stored = await read(name)
    const ids = stored.map(([, value]) => JSON.parse(value).event_id)
    assert.equal(new Set(ids).size, ids.length, 'an event was stored twice')
    assert.deepEqual([...ids].sort(), tracked.map(e => e.event_id).sort())
    // Key = shopper_id; value = the bytes the tracker built for the event.
    const byId = new Map(stored.map(([k, v]) => [JSON.parse(v).event_id, [k, v]]))
    for (const e of tracked) assert.deepEqual(byId.get(e.event_id), ['shopper-it-1', JSON.stringify(e)])
    assert.equal(stored.length, 13)
  } finally {
    if (server) await server.stop()
    // A topic left behind is a leak, not a wrong answer: say so without hiding the test's error.
    await t.drop().catch(e => console.error(`topic ${name} was not deleted: ${e.message}`))
  }
})
