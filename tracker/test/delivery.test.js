// Delivery: batching, retries, Retry-After, backoff, per-event outcomes, beacons, the queue
// across reloads, the session. Every dependency is faked; time moves only by clock.advance.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createTracker, memoryStorage } from '../src/tracker.js'
import { fakeClock, fakeCollector, fakeBeacon, deps, pageView, T0 } from './harness.js'

const ids = call => call.events.map(e => e.event_id)
const down = () => { throw new TypeError('fetch failed') }

function setup (answer, extra = {}) {
  const clock = fakeClock()
  const collector = fakeCollector(clock, answer)
  const options = deps(clock, collector, extra)
  const t = createTracker(options)
  t.identify('loyalty-42')
  return { t, clock, collector, options, track: () => t.track('page_viewed', pageView).event_id }
}

test('a batch goes to POST {endpoint}/v1/events with the key as a bearer token, keepalive, as JSON', async () => {
  const { clock, collector, track, t } = setup()
  const id = track()
  await clock.advance(1000)
  assert.equal(collector.calls.length, 1)
  const [call] = collector.calls
  assert.equal(call.url, 'https://collect.example/v1/events')
  assert.deepEqual(call.init.headers, { 'content-type': 'application/json', authorization: 'Bearer k3y/+=' })
  assert.equal(call.init.method, 'POST')
  assert.equal(call.init.keepalive, true)
  assert.deepEqual(ids(call), [id])
  assert.deepEqual(t.stats(), { tracked: 1, accepted: 1, rejected: 0, dropped: 0, retries: 0, beaconed: 0, pending: 0 })
})

test('events are batched by time: what was tracked within flushIntervalMs goes in one request', async () => {
  const { clock, collector, track } = setup()
  const a = track()
  await clock.advance(400)
  const b = track()
  await clock.advance(599)
  assert.equal(collector.calls.length, 0)
  await clock.advance(1)
  assert.deepEqual(collector.calls.map(c => [c.at - T0, ids(c)]), [[1000, [a, b]]])
})

test('events are batched by size: a full batch leaves at once, the rest after the interval', async () => {
  const { clock, collector, track } = setup(undefined, { maxBatch: 3 })
  const e = Array.from({ length: 7 }, track)
  await clock.advance(999)
  assert.deepEqual(collector.calls.map(c => [c.at - T0, ids(c)]), [[0, e.slice(0, 3)], [0, e.slice(3, 6)]])
  await clock.advance(1)
  assert.deepEqual(collector.calls.map(c => [c.at - T0, ids(c)]), [[0, e.slice(0, 3)], [0, e.slice(3, 6)], [1000, [e[6]]]])
})

test('a batch is also bounded by bytes (a keepalive request carries at most 64 KiB)', async () => {
  const probe = setup()
  const n = JSON.stringify(probe.t.track('search_performed', { query: 'q'.repeat(300) })).length
  const max = 2 + 2 * n + 1 + Math.floor(n / 2) // two events and their comma fit, three do not
  const { clock, collector, t } = setup(undefined, { maxBatchBytes: max })
  for (let i = 0; i < 5; i++) t.track('search_performed', { query: 'q'.repeat(300) })
  await clock.advance(1000)
  assert.deepEqual(collector.calls.map(c => c.events.length), [2, 2, 1])
  assert.deepEqual(collector.calls.map(c => c.body.length), [2 + 2 * n + 1, 2 + 2 * n + 1, 2 + n])
})

test('a retry re-sends the same event ids, byte for byte', async () => {
  const { clock, collector, track, t } = setup((events, call, n) => n === 1 ? { status: 503, headers: { 'retry-after': '2' } } : { status: 200 })
  const e = [track(), track()]
  await clock.advance(1000)
  await clock.advance(2000)
  assert.equal(collector.calls.length, 2)
  assert.deepEqual(ids(collector.calls[0]), e)
  assert.equal(collector.calls[1].body, collector.calls[0].body)
  assert.equal(t.pending(), 0)
  assert.equal(t.stats().accepted, 2)
  assert.equal(t.stats().retries, 1)
})

test('429 and 503 Retry-After is honoured: the next attempt not before it (seconds or HTTP date)', async () => {
  for (const [status, header, wait] of [[429, '7', 7000], [503, '7', 7000], [503, new Date(T0 + 1000 + 12_000).toUTCString(), 12_000]]) {
    const { clock, collector, track } = setup((events, call, n) => n === 1 ? { status, headers: { 'retry-after': header }, results: status === 429 ? null : undefined } : { status: 200 })
    track()
    await clock.advance(1000)
    await clock.advance(wait - 1)
    assert.equal(collector.calls.length, 1, `${status} ${header}`)
    await clock.advance(1)
    assert.deepEqual(collector.calls.map(c => c.at - T0), [1000, 1000 + wait], `${status} ${header}`)
  }
})

test('a Retry-After shorter than the backoff waits for the backoff', async () => {
  const { clock, collector, track } = setup((events, call, n) => n === 1 ? { status: 503, headers: { 'retry-after': '0' } } : { status: 200 })
  track()
  await clock.advance(1000 + 749)
  assert.equal(collector.calls.length, 1)
  await clock.advance(1)
  assert.deepEqual(collector.calls.map(c => c.at - T0), [1000, 1750]) // 1000 ms * (1/2 + 0.5/2)
})

test('network errors are retried with exponential backoff, jittered, bounded by backoffMaxMs', async () => {
  for (const [r, gaps] of [
    [1, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]],
    [0, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]]
  ]) {
    const { clock, collector, track, t } = setup(down, { random: () => r })
    track()
    await clock.advance(1000 + gaps.reduce((a, b) => a + b))
    const at = collector.calls.map(c => c.at - T0)
    assert.deepEqual(at.slice(1).map((x, i) => x - at[i]), gaps, `random ${r}`)
    assert.equal(t.pending(), 1)
    assert.equal(t.stats().retries, 10)
  }
})

test('only the events the collector reports failed are re-sent; rejected ones are dropped, warned and counted', async () => {
  const answers = [
    events => ({ status: 503, headers: { 'retry-after': '2' }, results: [{ index: 0, status: 'accepted' }, { index: 1, status: 'failed', code: 'unavailable' }, { index: 2, status: 'rejected', code: 'unauthorized', field: 'retailer_id', reason: 'not your retailer' }] }),
    events => ({ status: 200 })
  ]
  const { clock, collector, track, t, options } = setup((events, call, n) => answers[n - 1](events))
  const e = [track(), track(), track()]
  await clock.advance(3000)
  assert.deepEqual(collector.calls.map(ids), [e, [e[1]]])
  assert.equal(collector.calls[1].body, `[${JSON.stringify(collector.calls[0].events[1])}]`)
  assert.deepEqual(t.stats(), { tracked: 3, accepted: 2, rejected: 1, dropped: 0, retries: 1, beaconed: 0, pending: 0 })
  assert.deepEqual(options.warnings, [`basketflow: event ${e[2]} rejected by the collector (HTTP 503): unauthorized: not your retailer`])
})

test('a request refused whole (400 without results, 401, 413) is not retried: dropped, warned, counted', async () => {
  for (const status of [400, 401, 413]) {
    const { clock, collector, track, t, options } = setup(() => ({ status, results: null }))
    track(); track()
    await clock.advance(60_000)
    assert.equal(collector.calls.length, 1)
    assert.deepEqual(t.stats(), { tracked: 2, accepted: 0, rejected: 2, dropped: 0, retries: 0, beaconed: 0, pending: 0 })
    assert.equal(options.warnings.length, 2)
    assert.match(options.warnings[0], new RegExp(`rejected by the collector \\(HTTP ${status}\\): no reason given`))
  }
})

test('the queue survives a reload while the collector is unreachable, and the next page sends it once', async () => {
  const storage = memoryStorage()
  const a = setup(down, { storage })
  const e = [a.track(), a.track(), a.track()]
  await a.clock.advance(1000)
  assert.equal(a.collector.calls.length, 1)
  // Reload: a new tracker over the same storage (the old page's timers are gone with it).
  const b = setup(undefined, { storage })
  assert.equal(b.t.pending(), 3)
  await b.t.flush()
  assert.deepEqual(b.collector.calls.map(ids), [e])
  assert.equal(b.collector.calls[0].body, a.collector.calls[0].body)
  assert.equal(b.t.pending(), 0)
  const c = setup(undefined, { storage })
  assert.equal(c.t.pending(), 0)
})

test('events in flight when the page unloads are re-sent by the next page with the same ids', async () => {
  const storage = memoryStorage()
  const a = setup(() => new Promise(() => {}), { storage, fetch: () => new Promise(() => {}) })
  const e = [a.track(), a.track()]
  await a.clock.advance(1000)
  const b = setup(undefined, { storage })
  await b.t.flush()
  assert.deepEqual(b.collector.calls.map(ids), [e])
})

test('the queue is bounded by count and bytes, dropping the oldest first and counting them', async () => {
  const storage = memoryStorage()
  const { t, track } = setup(down, { storage, maxQueueEvents: 3 })
  const e = Array.from({ length: 5 }, track)
  assert.equal(t.pending(), 3)
  assert.equal(t.stats().dropped, 2)
  const stored = JSON.parse(storage.getItem('basketflow:retailer-00:queue')).map(s => JSON.parse(s).event_id)
  assert.deepEqual(stored, e.slice(2))

  const size = new TextEncoder().encode(storage.getItem('basketflow:retailer-00:queue')).length / 3
  const small = setup(down, { storage, maxQueueBytes: Math.floor(size * 2.5) })
  assert.equal(small.t.pending(), 2) // restored under the new bound: the oldest went
  assert.equal(small.t.stats().dropped, 1)
  const f = small.track()
  const kept = JSON.parse(storage.getItem('basketflow:retailer-00:queue')).map(s => JSON.parse(s).event_id)
  assert.deepEqual(kept, [e[4], f])
  assert.equal(small.t.stats().dropped, 2)
})

test('the session id is kept across reloads and renewed after 30 minutes without activity', async () => {
  const storage = memoryStorage()
  const clock = fakeClock()
  const make = () => {
    const t = createTracker(deps(clock, fakeCollector(clock), { storage }))
    if (!storage.getItem('basketflow:retailer-00:shopper')) t.identify('loyalty-42')
    return () => t.track('page_viewed', pageView).session_id
  }
  const track = make()
  const s1 = track()
  await clock.advance(29 * 60_000)
  assert.equal(make()(), s1) // a reload within the timeout; the shopper id was kept too
  await clock.advance(30 * 60_000) // activity renewed the timeout
  assert.equal(track(), s1)
  await clock.advance(30 * 60_000 + 1)
  const s2 = track()
  assert.notEqual(s2, s1)
  assert.equal(track(), s2)
})

test('identify(null) forgets the shopper and the session', () => {
  const { t, track } = setup()
  const s1 = t.track('page_viewed', pageView).session_id
  t.identify(null)
  assert.throws(track, /no shopper id/)
  t.identify('other')
  const e = t.track('page_viewed', pageView)
  assert.equal(e.shopper_id, 'other')
  assert.notEqual(e.session_id, s1)
})

test('a hidden page hands the queue to sendBeacon: text/plain body, ?key=, batches, then nothing re-sent', async () => {
  const beacon = fakeBeacon()
  const { clock, collector, track, t } = setup(undefined, { sendBeacon: beacon.sendBeacon, maxBatch: 2 })
  const e = [track()]
  await clock.advance(1000)
  e.push(track(), track(), track())
  await t.flush({ beacon: true })
  assert.deepEqual(beacon.beacons.map(b => [b.url, typeof b.body, JSON.parse(b.body).map(x => x.event_id)]), [
    ['https://collect.example/v1/events?key=k3y%2F%2B%3D', 'string', e.slice(1, 3)],
    ['https://collect.example/v1/events?key=k3y%2F%2B%3D', 'string', e.slice(3)]
  ])
  await clock.advance(60_000)
  assert.deepEqual(collector.calls.map(ids), [e.slice(0, 1)])
  assert.deepEqual(t.stats(), { tracked: 4, accepted: 1, rejected: 0, dropped: 0, retries: 0, beaconed: 3, pending: 0 })
})

test('while the collector is unreachable, or the beacon is refused, the events stay queued for fetch', async () => {
  const beacon = fakeBeacon(() => false)
  const s = setup((events, call, n) => n === 1 ? { status: 503, headers: { 'retry-after': '5' } } : { status: 200 }, { sendBeacon: beacon.sendBeacon })
  const e = [s.track()]
  await s.clock.advance(1000)
  s.t.flush({ beacon: true }) // in backoff: no beacon
  assert.equal(beacon.beacons.length, 0)
  await s.clock.advance(5000)
  assert.deepEqual(s.collector.calls.map(ids), [e, e])
  e.push(s.track())
  s.t.flush({ beacon: true }) // the beacon is refused (quota): fetch sends it
  await s.clock.advance(0)
  assert.equal(beacon.beacons.length, 1)
  assert.deepEqual(s.collector.calls.map(ids), [[e[0]], [e[0]], [e[1]]])
  assert.equal(s.t.pending(), 0)
})

test('events already in flight are not put in a beacon', async () => {
  let answer
  const beacon = fakeBeacon()
  const s = setup(undefined, { sendBeacon: beacon.sendBeacon, fetch: (url, init) => new Promise(resolve => { answer = () => resolve(new Response(JSON.stringify({ results: JSON.parse(init.body).map((_, index) => ({ index, status: 'accepted' })) }), { status: 200 })) }) })
  const a = s.track()
  await s.clock.advance(1000) // a is in flight
  const b = s.track()
  s.t.flush({ beacon: true })
  assert.deepEqual(beacon.beacons.map(x => JSON.parse(x.body).map(e => e.event_id)), [[b]])
  answer()
  await s.clock.advance(0)
  assert.equal(s.t.pending(), 0)
  assert.deepEqual(s.t.stats(), { tracked: 2, accepted: 1, rejected: 0, dropped: 0, retries: 0, beaconed: 1, pending: 0 })
  assert.ok(a)
})

test('where reading localStorage throws (storage blocked), the queue lives in memory', async () => {
  Object.defineProperty(globalThis, 'localStorage', { configurable: true, get () { throw new Error('SecurityError') } })
  try {
    const clock = fakeClock()
    const collector = fakeCollector(clock)
    const options = deps(clock, collector)
    delete options.storage
    const t = createTracker(options)
    t.identify('s1')
    const id = t.track('page_viewed', pageView).event_id
    await clock.advance(1000)
    assert.deepEqual(collector.calls.map(ids), [[id]])
  } finally {
    delete globalThis.localStorage
  }
})
