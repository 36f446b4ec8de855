// The events the tracker builds are contract events: they validate against
// schema/shopper-event.schema.json, and calls that would break it throw and send nothing.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createTracker, EVENT_TYPES, uuid } from '../src/tracker.js'
import { errors, schema } from './schema.js'
import { fakeClock, fakeCollector, deps, T0 } from './harness.js'

const product = { product_id: 'p1', category: 'pasta', brand: 'barilla', unit_price_cents: 199 }
const VALID = {
  page_viewed: { url: 'https://shop.example/p/1', page_type: 'product', product_id: 'p1', category: 'pasta' },
  link_clicked: { url: 'https://shop.example/', target_url: 'https://shop.example/p/1', product_id: 'p1' },
  search_performed: { query: 'spaghetti', result_count: 0 },
  product_added: { product, quantity: 1 },
  product_removed: { product: { product_id: 'p1', category: 'pasta', unit_price_cents: 0 }, quantity: 3 },
  order_paid: { order_id: 'o1', lines: [{ product_id: 'p1', category: 'pasta', quantity: 2, unit_price_cents: 199 }], total_cents: 398 },
  order_status_changed: { order_id: 'o1', status: 'cancelled' }
}

// Per type, calls that break the contract, with the message the tracker gives.
const INVALID = {
  page_viewed: [
    [{ page_type: 'home' }, /url is required/],
    [{ url: '', page_type: 'home' }, /url must be a non-empty string/],
    [{ url: 'u', page_type: 'landing' }, /page_type must be one of home\|category/],
    [{ url: 'u', page_type: 'home', product_id: '' }, /product_id must be an id/],
    [{ url: 'u', page_type: 'home', category: 'a\nb' }, /category must be an id/]
  ],
  link_clicked: [
    [{}, /url is required/],
    [{ url: 'u', target_url: 3 }, /target_url must be a string/]
  ],
  search_performed: [
    [{ query: '' }, /query must be a non-empty string/],
    [{ query: 'q', result_count: -1 }, /result_count must be an integer >= 0/],
    [{ query: 'q', result_count: 1.5 }, /result_count must be an integer >= 0/]
  ],
  product_added: [
    [{ product, quantity: 0 }, /quantity must be an integer >= 1, not 0/],
    [{ product, quantity: 1.5 }, /quantity must be an integer >= 1/],
    [{ product, quantity: '2' }, /quantity must be an integer >= 1/],
    [{ product }, /quantity is required/],
    [{ quantity: 1 }, /product must be an object/],
    [{ product: { ...product, unit_price_cents: 1.99 }, quantity: 1 }, /product.unit_price_cents must be an integer number of cents >= 0, not 1.99/],
    [{ product: { ...product, unit_price_cents: -1 }, quantity: 1 }, /product.unit_price_cents must be an integer number of cents/],
    [{ product: { ...product, category: undefined }, quantity: 1 }, /product.category is required/],
    [{ product: { ...product, product_id: 'x'.repeat(129) }, quantity: 1 }, /product.product_id must be an id/]
  ],
  product_removed: [
    [{ product, quantity: -2 }, /quantity must be an integer >= 1/]
  ],
  order_paid: [
    [{ order_id: 'o1', lines: [], total_cents: 0 }, /lines must be a non-empty array/],
    [{ order_id: 'o1', lines: [{ ...product, quantity: 0 }], total_cents: 0 }, /lines\[0\].quantity must be an integer >= 1/],
    [{ order_id: 'o1', lines: [{ ...product, quantity: 1 }] }, /total_cents is required/],
    [{ order_id: 'o1', lines: [{ ...product, quantity: 1 }], total_cents: 3.5 }, /total_cents must be an integer number of cents/],
    [{ order_id: ' ', lines: [{ ...product, quantity: 1 }], total_cents: 1 }, /order_id must be an id/]
  ],
  order_status_changed: [
    [{ order_id: 'o1', status: 'shipped' }, /status must be one of delivered\|cancelled/],
    [{ status: 'delivered' }, /order_id is required/]
  ]
}

function tracker (extra) {
  const clock = fakeClock()
  const collector = fakeCollector(clock)
  const t = createTracker(deps(clock, collector, extra))
  t.identify('loyalty-42')
  return { t, clock, collector }
}

test('the schema covers exactly the types the tracker knows', () => {
  assert.deepEqual(EVENT_TYPES, schema.properties.type.enum)
  assert.deepEqual(Object.keys(VALID), EVENT_TYPES)
  assert.deepEqual(Object.keys(INVALID), EVENT_TYPES)
})

test('every type builds an event with the common fields that validates against the schema', () => {
  const { t } = tracker()
  for (const type of EVENT_TYPES) {
    const e = t.track(type, VALID[type])
    assert.deepEqual(errors(e), [], type)
    assert.equal(e.type, type)
    assert.equal(e.retailer_id, 'retailer-00')
    assert.equal(e.shopper_id, 'loyalty-42')
    assert.equal(e.occurred_at, '2026-12-03T10:00:00.000Z')
    assert.match(e.event_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    assert.deepEqual({ ...e, event_id: 0, type: 0, retailer_id: 0, shopper_id: 0, session_id: 0, occurred_at: 0 },
      { ...VALID[type], event_id: 0, type: 0, retailer_id: 0, shopper_id: 0, session_id: 0, occurred_at: 0 })
  }
  assert.equal(t.pending(), EVENT_TYPES.length)
})

test('occurred_at is RFC 3339 UTC with milliseconds from the injected clock', () => {
  const clock = fakeClock(T0 + 7)
  const t = createTracker(deps(clock, fakeCollector(clock)))
  t.identify('s')
  assert.equal(t.track('search_performed', { query: 'q' }).occurred_at, '2026-12-03T10:00:00.007Z')
})

test('each invalid call throws a clear error, queues nothing, and the schema refuses it too', () => {
  const { t, clock, collector } = tracker()
  for (const type of EVENT_TYPES) {
    for (const [fields, message] of INVALID[type]) {
      assert.throws(() => t.track(type, fields), message, `${type} ${JSON.stringify(fields)}`)
      const event = { event_id: 'e', type, retailer_id: 'r', shopper_id: 's', occurred_at: '2026-12-03T10:00:00.000Z', ...fields }
      assert.notDeepEqual(errors(JSON.parse(JSON.stringify(event))), [], `schema accepts ${type} ${JSON.stringify(fields)}`)
    }
  }
  assert.equal(t.pending(), 0)
  return clock.advance(60_000).then(() => assert.equal(collector.calls.length, 0))
})

test('unknown types, the tracker\'s own fields and calls before identify are refused', () => {
  const clock = fakeClock()
  const t = createTracker(deps(clock, fakeCollector(clock)))
  assert.throws(() => t.track('page_viewed', VALID.page_viewed), /no shopper id: call identify\(shopperId\) first/)
  t.identify('s1')
  assert.throws(() => t.track('cart_viewed', {}), /unknown event type; one of page_viewed\|link_clicked/)
  assert.throws(() => t.track('page_viewed', { ...VALID.page_viewed, event_id: 'mine' }), /event_id is set by the tracker/)
  assert.throws(() => t.track('page_viewed', { ...VALID.page_viewed, occurred_at: 'x' }), /occurred_at is set by the tracker/)
  assert.throws(() => t.identify(''), /basketflow.identify: the shopper id must be/)
  assert.equal(t.pending(), 0)
})

test('an event larger than one request can carry is refused', () => {
  const { t } = tracker()
  assert.throws(() => t.track('search_performed', { query: 'x'.repeat(70_000) }), /the event is 70\d\d\d bytes, over the 65534/)
  assert.equal(t.pending(), 0)
})

test('fields outside the contract pass through (forward compatibility) and still validate', () => {
  const { t } = tracker()
  const e = t.track('page_viewed', { ...VALID.page_viewed, page_title: 'Pasta', context: { locale: 'fr-FR' } })
  assert.equal(e.page_title, 'Pasta')
  assert.deepEqual(errors(e), [])
})

test('uuid falls back to crypto.getRandomValues and gives a v4 UUID', () => {
  const id = uuid({ getRandomValues: a => a.fill(0xff) })
  assert.equal(id, 'ffffffff-ffff-4fff-bfff-ffffffffffff')
  assert.match(uuid(), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
})
