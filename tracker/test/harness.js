// Fakes for the tracker's dependencies: a clock with timers, a collector behind fetch, beacons,
// storage. Time moves only when a test says so.
import { memoryStorage } from '../src/tracker.js'

export const T0 = Date.UTC(2026, 11, 3, 10, 0, 0)

/** Lets every pending promise callback run (fetch answers, the send loop). */
export async function settle () {
  for (let i = 0; i < 20; i++) await new Promise(resolve => setImmediate(resolve))
}

export function fakeClock (start = T0) {
  let t = start
  let seq = 0
  let timers = []
  const clock = {
    now: () => t,
    setTimeout: (fn, ms) => { timers.push({ id: ++seq, at: t + ms, fn }); return seq },
    clearTimeout: id => { timers = timers.filter(x => x.id !== id) },
    /** Moves time forward by `ms`, running the timers due on the way, each at its time. */
    async advance (ms) {
      const end = t + ms
      await settle()
      for (;;) {
        const due = timers.filter(x => x.at <= end).sort((a, b) => a.at - b.at)[0]
        if (!due) break
        timers = timers.filter(x => x !== due)
        t = Math.max(t, due.at)
        due.fn()
        await settle()
      }
      t = end
    },
    pendingTimers: () => timers.map(x => x.at)
  }
  return clock
}

/**
 * A collector behind `fetch`. `answer(events, call)` returns {status, headers, results} or
 * throws (a network error); by default every event is accepted. Each call is recorded with
 * its time, url, headers, raw body and parsed events.
 */
export function fakeCollector (clock, answer = () => ({ status: 200 })) {
  const calls = []
  async function fetch (url, init) {
    const events = JSON.parse(init.body)
    const call = { at: clock.now(), url, init, body: init.body, events }
    calls.push(call)
    const a = answer(events, call, calls.length)
    const results = 'results' in a ? a.results : events.map((_, index) => ({ index, status: a.status === 200 ? 'accepted' : 'failed' }))
    const count = s => (results || []).filter(r => r.status === s).length
    const json = results ? { accepted: count('accepted'), rejected: count('rejected'), failed: count('failed'), results } : { error: 'refused' }
    return new Response(JSON.stringify(json), { status: a.status, headers: a.headers || {} })
  }
  return { fetch, calls }
}

export function fakeBeacon (ok = () => true) {
  const beacons = []
  return { beacons, sendBeacon: (url, body) => { beacons.push({ url, body }); return ok(body) } }
}

/** Options for createTracker with every dependency faked. */
export function deps (clock, collector, extra = {}) {
  const warnings = []
  let n = 0
  return {
    endpoint: 'https://collect.example/',
    retailerId: 'retailer-00',
    key: 'k3y/+=',
    storage: memoryStorage(),
    fetch: collector.fetch,
    sendBeacon: () => { throw new Error('no beacon expected') },
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    // Deterministic ids: e0001, e0002, ... as UUID-shaped strings.
    crypto: { randomUUID: () => `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}` },
    warn: w => warnings.push(w),
    warnings,
    ...extra
  }
}

export const pageView = { url: 'https://shop.example/', page_type: 'home' }
export const added = { product: { product_id: 'p1', category: 'pasta', brand: 'b', unit_price_cents: 199 }, quantity: 2 }
