// browser.js: window.basketflow, and the queue handed to sendBeacon when the page is hidden or
// unloading (a fake page: window, document and their event listeners).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { fakeClock, fakeCollector, fakeBeacon, deps, pageView } from './harness.js'

test('init wires visibilitychange (hidden) and pagehide to a beacon, and window.basketflow is set', async () => {
  const listeners = {}
  const on = target => (type, fn) => { (listeners[`${target}:${type}`] ||= []).push(fn) }
  globalThis.window = globalThis
  globalThis.addEventListener = on('window')
  globalThis.document = { visibilityState: 'visible', addEventListener: on('document') }
  const { init, createTracker } = await import('../src/browser.js')
  assert.equal(window.basketflow.init, init)
  assert.equal(window.basketflow.createTracker, createTracker)

  const clock = fakeClock()
  const beacon = fakeBeacon()
  const t = init(deps(clock, fakeCollector(clock), { sendBeacon: beacon.sendBeacon }))
  t.identify('s1')
  const a = t.track('page_viewed', pageView).event_id
  listeners['document:visibilitychange'].forEach(fn => fn()) // still visible: nothing
  assert.equal(beacon.beacons.length, 0)
  document.visibilityState = 'hidden'
  listeners['document:visibilitychange'].forEach(fn => fn())
  const b = t.track('page_viewed', pageView).event_id
  listeners['window:pagehide'].forEach(fn => fn())
  assert.deepEqual(beacon.beacons.map(x => JSON.parse(x.body).map(e => e.event_id)), [[a], [b]])
  assert.equal(t.pending(), 0)
})
