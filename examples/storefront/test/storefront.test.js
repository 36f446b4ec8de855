// The storefront loop in a real browser (issue 21): headless Chromium on the demo storefront,
// against the real stack: `basketflow run` (the graph), `basketflow collect` (the collector),
// Kafka and ClickHouse, in a world of their own (test/world.js: unique topics and database,
// removed at the end). No mocks.
//
//   npm run test:browser --prefix examples/storefront
//
// Needs the stack (scripts/stack up), a built binary (cargo build -p basketflow; BASKETFLOW_BIN
// to choose another), Debian's chromium (STOREFRONT_CHROMIUM to choose another) and kcat.
//
// Every decision expected is derived from the tree below and `advance` in
// dataflows/src/experiences/shopper.rs: the first child of the shopper's node whose conditions
// hold becomes their node, and its experience is decided, caused by that event.
//
//   start ─┬─> pasta (basket_contains category pasta) -> product_recommendation sf-sauce-basil
//          │     └─> cart
//          └─> cart  (basket_value_at_least 1 cent)    -> tension_cart 2000 / 300
//                └─> cart (itself: re-decided on every event while the basket is not empty)
//
// So: page_viewed with an empty basket decides nothing; adding a pasta first decides the
// recommendation; every later event with a non-empty basket (an add, a remove that leaves
// something, a reload's page_viewed) decides a tension cart; a payment empties the basket and decides nothing.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import puppeteer from 'puppeteer-core'
import { join } from 'node:path'
import { readFileSync } from 'node:fs'
import { startWorld, startStorefrontProcess, freePort, until, rows, here } from './world.js'
import { startStorefront, streamToken } from '../server.js'
import { demoTree, TREE_ID, RECOMMENDED, THRESHOLD_CENTS, REWARD_CENTS } from '../tree.js'

const CHROMIUM = process.env.STOREFRONT_CHROMIUM || '/usr/bin/chromium'
const RETAILER = 'retailer-storefront'
const KEY = 'storefront-test-event-key'
const SECRET = 'storefront-test-stream-secret-0123456789abcdef'
const CATALOG_FILE = join(here, 'catalog.json')
const CATALOG = new Map(JSON.parse(readFileSync(CATALOG_FILE, 'utf8')).map(p => [p.product_id, p]))
const THRESHOLD = THRESHOLD_CENTS
const REWARD = REWARD_CENTS
/** The longest a decision may take to show after its click, before a test fails. */
const DECISION_WAIT_MS = 15_000
/** The short-lived tokens of the second storefront (renewal, and a collector stop that
 *  completes: see test c). */
const SHORT_TTL_S = 3

const run = `${process.pid}-${Date.now()}`
const shopperId = name => `sf-${name}-${run}`

/** The tree each test shopper gets (see the top of the file). */
const tree = shopper => demoTree(RETAILER, shopper)

/** `decision_id` as dataflows/src/experiences/shopper.rs computes it: 128-bit FNV-1a over
 *  retailer, shopper, tree, version (8 bytes big-endian), node and event, each part followed
 *  by the byte 0xff, in hex. */
function decisionId (shopper, node, eventId) {
  let h = 0x6c62272e07bb014262b821756295c58dn
  const prime = 0x0000000001000000000000000000013bn
  const mask = (1n << 128n) - 1n
  const version = Buffer.alloc(8)
  version.writeBigUInt64BE(1n)
  for (const part of [Buffer.from(RETAILER), Buffer.from(shopper), Buffer.from(TREE_ID), version, Buffer.from(node), Buffer.from(eventId)]) {
    for (const b of [...part, 0xff]) {
      h ^= BigInt(b)
      h = (h * prime) & mask
    }
  }
  return h.toString(16).padStart(32, '0')
}

const euros = cents => `€${(cents / 100).toFixed(2)}`
const price = id => CATALOG.get(id).unit_price_cents

/** The decision expected for `event` at `node` (kind, params, reasons), as the page holds it. */
function expected (shopper, node, event, basketCents) {
  const rec = node === 'pasta'
  return {
    decision_id: decisionId(shopper, node, event.event_id),
    kind: rec ? 'product_recommendation' : 'tension_cart',
    params: rec ? { product_id: RECOMMENDED } : { threshold_cents: THRESHOLD, reward_cents: REWARD },
    node_id: node,
    reasons: [rec ? 'basket contains category pasta: 1 units (>= 1)' : `basket value ${basketCents} cents (>= 1)`],
    caused_by: event.event_id,
    session_id: event.session_id
  }
}

/** The page's decisions in the same shape as `expected`. */
const shown = page => page.evaluate(() => window.storefront.decisions.map(d => ({
  decision_id: d.decision_id,
  kind: d.experience.kind,
  params: d.experience.params,
  node_id: d.node_id,
  reasons: d.reasons,
  caused_by: d.caused_by.event_id,
  session_id: d.session_id
})))

let world = null
let main = null
let short = null
let browser = null

before(async () => {
  const [mainPort, shortPort] = [await freePort(), await freePort()]
  const origins = [`http://127.0.0.1:${mainPort}`, `http://127.0.0.1:${shortPort}`]
  world = await startWorld({ origins, retailer: RETAILER, key: KEY, streamSecret: SECRET, log: m => console.log(`# ${m}`) })
  const summary = await world.publishTrees(['a', 'b', 'c', 'd-alice', 'd-bob', 'e', 'f'].map(n => tree(shopperId(n))))
  assert.deepEqual(summary, { trees: 7, delivered: 7, failures: 0, topic: world.names.trees })
  // The retailer's backend: the CLI, as a shop would run it...
  main = await startStorefrontProcess(['--listen', `127.0.0.1:${mainPort}`, '--collector', world.collectorUrl,
    '--retailer', RETAILER, '--key', KEY, '--stream-secret', SECRET, '--catalog', CATALOG_FILE], world.dir)
  // ... and one in this process whose tokens live SHORT_TTL_S seconds.
  short = await startStorefront({ listen: `127.0.0.1:${shortPort}`, collector: world.collectorUrl, retailer: RETAILER,
    key: KEY, streamSecret: SECRET, catalog: CATALOG_FILE, tokenTtlS: SHORT_TTL_S })
  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] })
})

after(async () => {
  // Each step on its own: a failure of one must not leave the others running.
  if (browser) await browser.close().catch(e => console.error(`# browser: ${e.message}`))
  if (main) await main.stop().catch(e => console.error(`# storefront: ${e.message}`))
  if (short) await short.close().catch(e => console.error(`# storefront: ${e.message}`))
  if (world) await world.close().catch(e => console.error(`# world: ${e.message}`))
})

/** The uncaught errors of each page (none expected). */
const pageErrors = new WeakMap()

/** A page of `store` for `shopper` in a fresh browser context (its own localStorage), ready:
 *  products shown, page_viewed tracked, the decisions stream live. */
async function open (store, shopper) {
  const context = await browser.createBrowserContext()
  const page = await context.newPage()
  const errors = []
  page.on('pageerror', e => errors.push(e.message))
  pageErrors.set(page, errors)
  await page.goto(`${store}?shopper=${encodeURIComponent(shopper)}`)
  await ready(page)
  return page
}

async function ready (page) {
  await page.waitForFunction(() => window.storefront &&
    (window.storefront.phase === 'failed' || (window.storefront.phase === 'ready' && window.storefront.status === 'live')), { timeout: 30_000 })
  assert.equal(await page.evaluate(() => window.storefront.phase), 'ready', await page.evaluate(() => window.storefront.error))
}

/** Clicks `selector` and returns the event the click tracked. */
async function click (page, selector) {
  const before = await page.evaluate(() => window.storefront.events.length)
  await page.click(selector)
  await page.waitForFunction(n => window.storefront.events.length > n, { timeout: 5_000 }, before)
  return page.evaluate(() => window.storefront.events.at(-1))
}

const addButton = id => `.product[data-product-id="${id}"] button[data-action="add"]`

/** Waits until the widget shows the decision caused by `eventId`; returns the element's text. */
async function decisionShown (page, eventId) {
  const el = await page.waitForSelector(`#decisions .decision[data-caused-by="${eventId}"]`, { timeout: DECISION_WAIT_MS })
  return el.evaluate(e => e.querySelector('.message').innerText.trim())
}

/** Each decision_id appears once in the widget's DOM; returns them, newest first. */
async function widgetIds (page) {
  const ids = await page.$$eval('#decisions .decision', els => els.map(e => e.dataset.decisionId))
  assert.equal(new Set(ids).size, ids.length, `a decision is shown twice: ${ids}`)
  return ids
}

test('a. clicks that add products make the expected decisions appear in the widget, each caused by its click', { timeout: 120_000 }, async t => {
  const shopper = shopperId('a')
  const page = await open(main.url, shopper)
  try {
    // The pasta: its recommendation, the sauce, with an Add button.
    const penne = await click(page, addButton('sf-penne-500g'))
    assert.equal(penne.type, 'product_added')
    assert.deepEqual(penne.product, { product_id: 'sf-penne-500g', category: 'pasta', brand: 'campo-dorato', unit_price_cents: 189 })
    const sauce = CATALOG.get(RECOMMENDED)
    assert.equal(await decisionShown(page, penne.event_id), `${sauce.title} (${sauce.brand}), ${euros(sauce.unit_price_cents)}\nAdd`)
    // The sauce, added from the widget: a tension cart with what is missing.
    const recommended = `#decisions .decision[data-caused-by="${penne.event_id}"] button[data-action="add"]`
    const added = await click(page, recommended)
    assert.equal(added.product.product_id, RECOMMENDED)
    let basket = price('sf-penne-500g') + price(RECOMMENDED)
    assert.equal(await decisionShown(page, added.event_id), `Add ${euros(THRESHOLD - basket)} more to get ${euros(REWARD)} off`)
    const wine = await click(page, addButton('sf-chianti'))
    basket += price('sf-chianti')
    assert.equal(await decisionShown(page, wine.event_id), `Add ${euros(THRESHOLD - basket)} more to get ${euros(REWARD)} off`)
    const oil = await click(page, addButton('sf-olive-oil'))
    const full = basket + price('sf-olive-oil')
    assert.equal(await decisionShown(page, oil.event_id), `Your basket gets ${euros(REWARD)} off`)

    // Exactly these four, in order (a shopper's decisions share one partition: had the page
    // view decided anything, it would have come first).
    assert.deepEqual(await shown(page), [
      expected(shopper, 'pasta', penne),
      expected(shopper, 'cart', added, price('sf-penne-500g') + price(RECOMMENDED)),
      expected(shopper, 'cart', wine, basket),
      expected(shopper, 'cart', oil, full)
    ])
    const ids = [penne, added, wine, oil].map(e => e.event_id)
    assert.deepEqual((await page.evaluate(() => window.storefront.received)).map(r => r.caused_by), ids)
    assert.deepEqual(await widgetIds(page), (await shown(page)).map(d => d.decision_id).reverse())
    assert.equal(await page.$eval('#basket-total', e => Number(e.dataset.cents)), full)

    // The latency of each: from the click to the decision painted in the widget.
    await page.waitForFunction(() => window.storefront.latencies.length === 4, { timeout: 5_000 })
    const latencies = await page.evaluate(() => window.storefront.latencies)
    assert.deepEqual(latencies.map(l => l.event_id), ids)
    for (const l of latencies) {
      assert.ok(l.ms > 0 && l.ms < DECISION_WAIT_MS, `latency ${l.ms}`)
      t.diagnostic(`click -> decision painted: ${l.kind} ${l.ms.toFixed(1)} ms`)
    }
    assert.deepEqual(pageErrors.get(page), [])
  } finally {
    await page.browserContext().close()
  }
})

test('b. a reload keeps the session and the basket; the widget resumes from its last position without repeating a decision', { timeout: 120_000 }, async () => {
  const shopper = shopperId('b')
  const page = await open(main.url, shopper)
  try {
    const penne = await click(page, addButton('sf-penne-500g'))
    await decisionShown(page, penne.event_id)
    const bread = await click(page, addButton('sf-focaccia'))
    await decisionShown(page, bread.event_id)
    const basket = price('sf-penne-500g') + price('sf-focaccia')
    const before = await page.evaluate(() => ({ events: window.storefront.events, last: window.storefront.lastEventId, received: window.storefront.received }))
    assert.equal(before.received.length, 2)
    assert.equal(before.last, before.received[1].id)

    await page.reload()
    await ready(page)
    // The page view of the reload: same session; the basket is back; with a basket, the
    // shopper's node (cart) decides a tension cart, made while the page was away or just after.
    const view = await page.evaluate(() => window.storefront.events[0])
    assert.equal(view.type, 'page_viewed')
    assert.equal(view.session_id, before.events[0].session_id)
    assert.deepEqual(before.events.map(e => e.session_id), [view.session_id, view.session_id, view.session_id])
    assert.deepEqual(await page.$$eval('#basket-lines .line', ls => ls.map(l => [l.dataset.productId, Number(l.dataset.quantity)])),
      [['sf-penne-500g', 1], ['sf-focaccia', 1]])
    assert.equal(await page.$eval('#basket-total', e => Number(e.dataset.cents)), basket)
    await decisionShown(page, view.event_id)
    // The stream reopened from the position the first load reached.
    assert.deepEqual((await page.evaluate(() => window.storefront.opens))[0].last_event_id, before.last)

    const pasta2 = await click(page, addButton('sf-spaghetti-500g'))
    await decisionShown(page, pasta2.event_id)
    // A line removed: product_removed with the line's quantity; the basket is not empty yet.
    const removed = await click(page, '#basket-lines .line[data-product-id="sf-focaccia"] button[data-action="remove"]')
    assert.equal(removed.type, 'product_removed')
    assert.deepEqual([removed.product.product_id, removed.quantity], ['sf-focaccia', 1])
    const left = price('sf-penne-500g') + price('sf-spaghetti-500g')
    assert.equal(await decisionShown(page, removed.event_id), `Add ${euros(THRESHOLD - left)} more to get ${euros(REWARD)} off`)
    assert.deepEqual(await page.$$eval('#basket-lines .line', ls => ls.map(l => l.dataset.productId)), ['sf-penne-500g', 'sf-spaghetti-500g'])
    const decisions = [
      expected(shopper, 'pasta', penne),
      expected(shopper, 'cart', bread, basket),
      expected(shopper, 'cart', view, basket),
      expected(shopper, 'cart', pasta2, basket + price('sf-spaghetti-500g')),
      expected(shopper, 'cart', removed, left)
    ]
    assert.deepEqual(await shown(page), decisions)
    // This load received only what came after its position: nothing the first load had.
    assert.deepEqual((await page.evaluate(() => window.storefront.received)).map(r => r.decision_id),
      decisions.slice(2).map(d => d.decision_id))
    assert.deepEqual(await widgetIds(page), decisions.map(d => d.decision_id).reverse())
    assert.deepEqual(pageErrors.get(page), [])
  } finally {
    await page.browserContext().close()
  }
})

test('e. tokens that expire every few seconds: the page renews its stream before expiry, from its position, and loses or repeats nothing', { timeout: 120_000 }, async t => {
  const shopper = shopperId('e')
  const page = await open(short.url, shopper)
  try {
    const penne = await click(page, addButton('sf-penne-500g'))
    await decisionShown(page, penne.event_id)
    const first = await page.evaluate(() => window.storefront.lastEventId)
    // Two renewals from that position.
    await page.waitForFunction(last => window.storefront.opens.filter(o => o.renewal && o.last_event_id === last).length >= 2,
      { timeout: 4 * SHORT_TTL_S * 1000 }, first)
    const bread = await click(page, addButton('sf-focaccia'))
    await decisionShown(page, bread.event_id)
    const opens = await page.evaluate(() => window.storefront.opens.length)
    await page.waitForFunction(n => window.storefront.opens.length >= n + 2, { timeout: 4 * SHORT_TTL_S * 1000 }, opens)
    const cheese = await click(page, addButton('sf-parmigiano'))
    await decisionShown(page, cheese.event_id)

    const decisions = [
      expected(shopper, 'pasta', penne),
      expected(shopper, 'cart', bread, price('sf-penne-500g') + price('sf-focaccia')),
      expected(shopper, 'cart', cheese, price('sf-penne-500g') + price('sf-focaccia') + price('sf-parmigiano'))
    ]
    assert.deepEqual(await shown(page), decisions)
    assert.deepEqual(await widgetIds(page), decisions.map(d => d.decision_id).reverse())
    // Two streams overlap during a renewal, so one decision may arrive twice; it is shown once.
    const received = await page.evaluate(() => window.storefront.received)
    assert.deepEqual([...new Set(received.map(r => r.decision_id))], decisions.map(d => d.decision_id))
    const status = await page.evaluate(() => ({ opens: window.storefront.opens, status: window.storefront.status }))
    assert.equal(status.status, 'live')
    // Streams opened after an error rather than by a renewal (a renewal slower than its margin
    // lets the old stream expire first: nothing is lost then either, as checked above).
    t.diagnostic(`${status.opens.length} streams: ${status.opens.filter(o => o.renewal).length} renewals, ${status.opens.filter((o, i) => i > 0 && !o.renewal).length} after an error`)
    assert.deepEqual(pageErrors.get(page), [])
  } finally {
    await page.browserContext().close()
  }
})

test('f. a stored position the collector does not know (another deployment\'s topic) is dropped after its refusal, and the page goes live', { timeout: 60_000 }, async () => {
  const shopper = shopperId('f')
  const context = await browser.createBrowserContext()
  const page = await context.newPage()
  try {
    // The storage a page of another deployment left on this origin: partition 7 of a topic that
    // has 2 here (400 bad_last_event_id).
    await page.goto(new URL('/storefront.css', main.url).href)
    await page.evaluate(key => localStorage.setItem(key, JSON.stringify('7:3')), `storefront:${RETAILER}:${shopper}:last-event-id`)
    await page.goto(`${main.url}?shopper=${encodeURIComponent(shopper)}`)
    await ready(page)
    const state = await page.evaluate(() => ({ opens: window.storefront.opens, dropped: window.storefront.positionsDropped, last: window.storefront.lastEventId }))
    assert.deepEqual(state.opens.map(o => o.last_event_id), [...state.opens.slice(0, -1).map(() => '7:3'), null])
    assert.equal(state.dropped, 1)
    assert.equal(state.last, null)
    const penne = await click(page, addButton('sf-penne-500g'))
    await decisionShown(page, penne.event_id)
    assert.deepEqual(await shown(page), [expected(shopper, 'pasta', penne)])
  } finally {
    await context.close()
  }
})

test('d. a page cannot read another shopper\'s decisions: forged, wrongly signed and expired tokens refused; a valid token delivers its own shopper\'s only', { timeout: 120_000 }, async () => {
  const alice = shopperId('d-alice')
  const bob = shopperId('d-bob')
  const pageA = await open(main.url, alice)
  const pageB = await open(main.url, bob)
  try {
    const session = await pageA.evaluate(() => window.storefront.session)
    assert.equal(session.shopper_id, alice)
    const hex = s => Buffer.from(s).toString('hex')
    const now = Math.floor(Date.now() / 1000)
    const tokens = {
      // Alice's own token, the shopper field changed to Bob: the MAC no longer matches.
      forged: session.stream_token.replace(hex(alice), hex(bob)),
      wrongSecret: streamToken('not-the-retailers-stream-secret-0123456789', RETAILER, alice, now + 300),
      expired: streamToken(SECRET, RETAILER, alice, now - 10),
      tooLong: streamToken(SECRET, RETAILER, alice, now + 3600),
      unknownRetailer: streamToken(SECRET, 'another-retailer', alice, now + 300)
    }
    assert.notEqual(tokens.forged, session.stream_token)
    // From the page, as its own fetch sees the answers (the collector allows the page's origin).
    const answers = await pageA.evaluate(async (collector, tokens) => {
      const out = {}
      for (const [name, token] of Object.entries(tokens)) {
        const res = await fetch(`${collector}/v1/decisions/stream${token === null ? '' : '?token=' + encodeURIComponent(token)}`)
        out[name] = [res.status, (await res.json()).error]
      }
      return out
    }, world.collectorUrl, { ...tokens, missing: null })
    const refused = code => [401, code]
    assert.deepEqual(answers, {
      forged: refused('token_bad_signature'),
      wrongSecret: refused('token_bad_signature'),
      expired: refused('token_expired'),
      tooLong: refused('token_too_long'),
      unknownRetailer: refused('token_unknown_retailer'),
      missing: refused('token_missing')
    })
    // An EventSource with the forged token fails for good (no automatic retry of a 401).
    assert.equal(await pageA.evaluate(url => new Promise(resolve => {
      const es = new EventSource(url)
      es.onmessage = () => resolve('message')
      es.onerror = () => resolve(es.readyState === EventSource.CLOSED ? 'closed' : 'retrying')
    }), `${world.collectorUrl}/v1/decisions/stream?token=${encodeURIComponent(tokens.forged)}`), 'closed')
    // A second stream of Alice's on her page, with a valid token: collects what it gets.
    await pageA.evaluate(url => new Promise((resolve, reject) => {
      window.extra = []
      const es = new EventSource(url)
      es.onopen = () => resolve()
      es.onerror = () => reject(new Error('the extra stream failed'))
      es.addEventListener('decision', e => window.extra.push(JSON.parse(e.data)))
    }), `${world.collectorUrl}/v1/decisions/stream?token=${encodeURIComponent(streamToken(SECRET, RETAILER, alice, now + 300))}`)

    // Bob acts first; Alice after Bob's decision was pushed (to Bob): the collector's one reader
    // had handed Bob's decision out before Alice's, so had it reached Alice's streams, it would
    // be there by the time hers is.
    const bobs = await click(pageB, addButton('sf-penne-500g'))
    await decisionShown(pageB, bobs.event_id)
    const alices = await click(pageA, addButton('sf-spaghetti-500g'))
    await decisionShown(pageA, alices.event_id)
    await pageA.waitForFunction(() => window.extra.length >= 1, { timeout: 5_000 })
    assert.deepEqual(await shown(pageA), [expected(alice, 'pasta', alices)])
    assert.deepEqual(await shown(pageB), [expected(bob, 'pasta', bobs)])
    const receivedA = await pageA.evaluate(() => window.storefront.received)
    assert.deepEqual(receivedA.map(r => [r.shopper_id, r.caused_by]), [[alice, alices.event_id]])
    assert.deepEqual((await pageA.evaluate(() => window.extra)).map(d => [d.shopper_id, d.caused_by.event_id]), [[alice, alices.event_id]])
    const receivedB = await pageB.evaluate(() => window.storefront.received)
    assert.deepEqual(receivedB.map(r => [r.shopper_id, r.caused_by]), [[bob, bobs.event_id]])
    assert.deepEqual(pageErrors.get(pageA), [])
    assert.deepEqual(pageErrors.get(pageB), [])
  } finally {
    await pageA.browserContext().close()
    await pageB.browserContext().close()
  }
})

test('c. the collector stopped (SIGTERM) and restarted mid-session: clicks made meanwhile are queued and delivered after; ClickHouse holds the order and one decision per event, nothing lost or doubled', { timeout: 180_000 }, async t => {
  const shopper = shopperId('c')
  // The page holds a decisions stream whose token lives minutes: the collector ends open
  // streams when it stops (the last test pins it), so its graceful stop does not wait for them.
  const page = await open(main.url, shopper)
  try {
    const penne = await click(page, addButton('sf-penne-500g'))
    await decisionShown(page, penne.event_id)
    await page.waitForFunction(() => window.storefront.tracker.pending() === 0, { timeout: 10_000 })

    const stopped = await world.collector.stop('SIGTERM', 30_000)
    t.diagnostic(`the collector stopped ${stopped.ms} ms after SIGTERM (exit ${stopped.code})`)
    assert.equal(stopped.code, 0, `the collector did not stop cleanly: ${JSON.stringify(stopped)}`)
    await page.waitForFunction(() => window.storefront.status !== 'live', { timeout: 10_000 })

    // While it is away: two clicks, queued.
    const bread = await click(page, addButton('sf-focaccia'))
    const cheese = await click(page, addButton('sf-parmigiano'))
    await page.waitForFunction(() => window.storefront.tracker.stats().retries >= 1, { timeout: 10_000 })
    assert.equal(await page.evaluate(() => window.storefront.tracker.pending()), 2)

    await world.startCollector()
    await page.waitForFunction(() => window.storefront.tracker.pending() === 0, { timeout: 20_000 })
    await decisionShown(page, bread.event_id)
    await decisionShown(page, cheese.event_id)
    await page.waitForFunction(() => window.storefront.status === 'live', { timeout: 10_000 })
    const lines = ['sf-penne-500g', 'sf-focaccia', 'sf-parmigiano']
    const total = lines.reduce((sum, id) => sum + price(id), 0)
    const decisions = [
      expected(shopper, 'pasta', penne),
      expected(shopper, 'cart', bread, price('sf-penne-500g') + price('sf-focaccia')),
      expected(shopper, 'cart', cheese, total)
    ]
    assert.deepEqual(await shown(page), decisions)
    assert.deepEqual(await widgetIds(page), decisions.map(d => d.decision_id).reverse())
    // The stream after the outage resumed from the recommendation's position.
    const opens = await page.evaluate(() => window.storefront.opens)
    const recovered = opens.filter(o => !o.renewal).slice(1)
    assert.ok(recovered.length >= 1, 'the page never reopened its stream after an error')
    const recPosition = (await page.evaluate(() => window.storefront.received))
      .find(r => r.decision_id === decisions[0].decision_id).id
    assert.deepEqual([...new Set(recovered.map(o => o.last_event_id))], [recPosition])

    // Pay: the order, then the read models.
    await page.click('#pay')
    const paid = await page.evaluate(() => window.storefront.events.at(-1))
    assert.equal(paid.type, 'order_paid')
    assert.deepEqual(paid.lines, lines.map(id => {
      const { product_id: p, category, brand, unit_price_cents: c } = CATALOG.get(id)
      return { product_id: p, category, brand, unit_price_cents: c, quantity: 1 }
    }))
    assert.equal(paid.total_cents, total)
    assert.equal(await page.$eval('#basket-total', e => Number(e.dataset.cents)), 0)
    assert.equal(await page.$eval('#order-confirmation', e => e.dataset.orderId), paid.order_id)
    await page.waitForFunction(() => window.storefront.tracker.pending() === 0, { timeout: 10_000 })

    const db = world.database
    const q = s => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
    // The payment is the shopper's last event: once its lines are committed, so is everything
    // before it in the partition.
    const orderLines = await until('the order in ClickHouse', async () => {
      const r = await rows(`SELECT product_id, category, toUInt64(quantity) AS quantity, toInt64(revenue_cents) AS revenue_cents, shopper_id, toUInt8(cancelled) AS cancelled
        FROM ${db}.order_lines WHERE retailer_id = ${q(RETAILER)} AND order_id = ${q(paid.order_id)} ORDER BY product_id`)
      return r.length ? r : null
    }, 30_000)
    const sorted = [...lines].sort()
    assert.deepEqual(orderLines.map(r => [r.product_id, r.category, Number(r.quantity), Number(r.revenue_cents), r.shopper_id, Number(r.cancelled)]),
      sorted.map(id => [id, CATALOG.get(id).category, 1, price(id), shopper, 0]))
    const purchases = await rows(`SELECT product_id, toUInt64(quantity) AS quantity, toUInt64(orders) AS orders
      FROM ${db}.shopper_purchases WHERE retailer_id = ${q(RETAILER)} AND shopper_id = ${q(shopper)} ORDER BY product_id`)
    assert.deepEqual(purchases.map(r => [r.product_id, Number(r.quantity), Number(r.orders)]), sorted.map(id => [id, 1, 1]))
    // The only order of this world: sold_products_daily holds exactly its lines.
    const sold = await rows(`SELECT product_id, category, toUInt64(quantity) AS quantity, toInt64(revenue_cents) AS revenue_cents, toUInt64(orders) AS orders
      FROM ${db}.sold_products_daily WHERE retailer_id = ${q(RETAILER)} ORDER BY product_id`)
    assert.deepEqual(sold.map(r => [r.product_id, r.category, Number(r.quantity), Number(r.revenue_cents), Number(r.orders)]),
      sorted.map(id => [id, CATALOG.get(id).category, 1, price(id), 1]))
    // One decision per causing event, and each written once.
    const made = await rows(`SELECT decision_id, kind, node_id, caused_by_event_id FROM ${db}.experience_decisions
      WHERE retailer_id = ${q(RETAILER)} AND shopper_id = ${q(shopper)} ORDER BY caused_by_offset`)
    assert.deepEqual(made.map(r => [r.decision_id, r.kind, r.node_id, r.caused_by_event_id]),
      decisions.map(d => [d.decision_id, d.kind, d.node_id, d.caused_by]))
    const written = await rows(`SELECT decision_id, toUInt64(count()) AS n FROM ${db}.experience_decisions_log
      WHERE retailer_id = ${q(RETAILER)} AND shopper_id = ${q(shopper)} GROUP BY decision_id ORDER BY decision_id`)
    assert.deepEqual(written.map(r => [r.decision_id, Number(r.n)]), decisions.map(d => [d.decision_id, 1]).sort())

    // The events topic: every event the page tracked, once each, as the tracker built it.
    const tracked = await page.evaluate(() => window.storefront.events)
    assert.deepEqual(tracked.map(e => e.type), ['page_viewed', 'product_added', 'product_added', 'product_added', 'order_paid'])
    const stored = await world.eventsOf(shopper)
    assert.deepEqual(stored.map(m => m.value.event_id).sort(), tracked.map(e => e.event_id).sort())
    const byId = new Map(stored.map(m => [m.value.event_id, m.raw]))
    for (const e of tracked) assert.equal(byId.get(e.event_id), JSON.stringify(e))
    assert.deepEqual(pageErrors.get(page), [])
  } finally {
    await page.browserContext().close()
  }
})

test('SIGTERM ends the collector promptly while a page holds a decisions stream with a long-lived token',
  { timeout: 120_000 },
  async t => {
    const page = await open(main.url, shopperId('a'))
    try {
      const stopped = await world.collector.stop('SIGTERM', 10_000)
      t.diagnostic(`stop: ${JSON.stringify(stopped)}`)
      assert.equal(stopped.signal, null, `the collector had not exited 10 s after SIGTERM (killed: ${stopped.signal})`)
      assert.equal(stopped.code, 0)
      // It ends the page's stream at once rather than waiting for its token to expire.
      assert.ok(stopped.ms < 5_000, `the collector took ${stopped.ms} ms to stop`)
      await page.waitForFunction(() => window.storefront.status !== 'live', { timeout: 10_000 })
    } finally {
      await page.browserContext().close()
    }
  })
