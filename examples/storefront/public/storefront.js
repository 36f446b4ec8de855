// The demo storefront's page: products, a basket kept across reloads, and a "For you" widget
// that shows the shopper's experience decisions as the graph makes them.
//
//   clicks ──track()──> tracker ──POST /v1/events──> collector ──> Kafka ──> basketflow run
//   widget <──EventSource (SSE "decision")── collector's GET /v1/decisions/stream <── decisions topic
//
// Plain JS, no framework, no build step. Everything the tests and the latency benchmark read is
// on `window.storefront` (see `state` below).

/** What the page did, for tests and the latency benchmark. */
const state = window.storefront = {
  /** Readiness: 'loading', then 'ready' once the products are shown and page_viewed tracked. */
  phase: 'loading',
  /** The stream's status: 'connecting', 'live', 'reconnecting' or 'offline' (see setStatus). */
  status: 'connecting',
  /** event_id of each tracked click -> performance.now() at the start of its handler. */
  clicks: new Map(),
  /** One entry per shown decision caused by a click of this page (see showDecision). */
  latencies: [],
  /** The decisions shown, oldest first (restored after a reload). */
  decisions: [],
  /** Every SSE `decision` this page load received, as sent ({id, decision_id, ...}), shown or not. */
  received: [],
  /** Every event this page load tracked (the objects `track` returned). */
  events: [],
  /** Each stream this page load opened: {last_event_id, expires_at}. */
  opens: [],
  /** The last SSE id received (`partition:offset`), kept across reloads for resuming. */
  lastEventId: null,
  /** How often the collector refused the stored position and the page dropped it. */
  positionsDropped: 0,
  /** The tracker (`init` of tracker/src/browser.js). */
  tracker: null,
  /** The session from /api/session (the token is renewed on every reconnection). */
  session: null,
  /** The catalog by product_id. */
  catalog: new Map(),
  /** The page's basket: product_id -> quantity. */
  basket: new Map(),
  /** The last order paid from this page: {order_id, lines, total_cents}. */
  lastOrder: null
}

const $ = id => document.getElementById(id)
const euros = cents => `€${(cents / 100).toFixed(2)}`
const params = new URLSearchParams(location.search)
const shopperParam = params.get('shopper')

async function getJSON (url) {
  const res = await fetch(url, { cache: 'no-store' })
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${await res.text()}`)
  return res.json()
}

const fetchSession = () => getJSON('/api/session' + (shopperParam ? `?shopper=${encodeURIComponent(shopperParam)}` : ''))

// ---------------------------------------------------------------------------------------------
// Storage: the basket, the decisions shown and the stream's position survive a reload. Keys are
// per retailer and shopper; storage errors (quota, private browsing) are ignored: memory is the
// truth for this page load.

let prefix = 'storefront:'
const load = (k, dflt) => { try { const v = JSON.parse(localStorage.getItem(prefix + k)); return v ?? dflt } catch { return dflt } }
const save = (k, v) => { try { localStorage.setItem(prefix + k, JSON.stringify(v)) } catch {} }

/** Decision ids ever shown to this shopper here: a decision_id is never shown twice, whether it
 *  comes again from a resumed stream, an at-least-once redelivery, or another page load. */
let seen = new Set()
const SEEN_KEPT = 1000
const DECISIONS_KEPT = 50
/** The widget shows the newest decisions only: a long session would otherwise grow the DOM, and
 *  every basket change re-renders the tension carts shown (a page that slowed down with each
 *  click: 64 -> 102 ms click -> visible over 300 clicks, measured by the latency bench). */
const WIDGET_KEPT = 20

// ---------------------------------------------------------------------------------------------
// Tracking.

/** Tracks one event; `t0` (performance.now() at the start of a click's handler) marks a click
 *  whose decisions the latency benchmark measures. */
function track (type, fields, t0) {
  const event = state.tracker.track(type, fields)
  state.events.push(event)
  if (t0 !== undefined) state.clicks.set(event.event_id, t0)
  return event
}

const productFields = p => ({ product_id: p.product_id, category: p.category, brand: p.brand, unit_price_cents: p.unit_price_cents })

function add (productId) {
  const t0 = performance.now()
  const p = state.catalog.get(productId)
  if (!p) return
  track('product_added', { product: productFields(p), quantity: 1 }, t0)
  state.basket.set(productId, (state.basket.get(productId) || 0) + 1)
  basketChanged()
}

function remove (productId) {
  const t0 = performance.now()
  const p = state.catalog.get(productId)
  const quantity = state.basket.get(productId)
  if (!p || !quantity) return
  track('product_removed', { product: productFields(p), quantity }, t0)
  state.basket.delete(productId)
  basketChanged()
}

function pay () {
  const t0 = performance.now()
  const lines = basketLines().map(({ p, quantity }) => ({ ...productFields(p), quantity }))
  if (!lines.length) return
  const random = crypto.getRandomValues(new Uint8Array(8))
  const orderId = 'web-' + [...random].map(b => b.toString(16).padStart(2, '0')).join('')
  const total = basketTotal()
  track('order_paid', { order_id: orderId, lines, total_cents: total }, t0)
  state.lastOrder = { order_id: orderId, lines, total_cents: total }
  state.basket.clear()
  basketChanged()
  const done = $('order-confirmation')
  done.hidden = false
  done.dataset.orderId = orderId
  done.textContent = `Thank you! Order ${orderId} paid: ${euros(total)}.`
}

// ---------------------------------------------------------------------------------------------
// Products and basket.

function basketLines () {
  return [...state.basket].map(([id, quantity]) => ({ p: state.catalog.get(id), quantity })).filter(l => l.p)
}

const basketTotal = () => basketLines().reduce((sum, { p, quantity }) => sum + p.unit_price_cents * quantity, 0)

/** A `tag` element with class `className` (none if empty) holding `text`. */
function make (tag, className, text = '') {
  const e = document.createElement(tag)
  if (className) e.className = className
  e.textContent = text
  return e
}

/** A button that acts on a product: the page's one click handler reads `data-action` and
 *  `data-product-id`. */
function productButton (action, productId, className, label) {
  const button = make('button', className, label)
  button.type = 'button'
  button.dataset.action = action
  button.dataset.productId = productId
  return button
}

function productCard (p) {
  const card = make('article', 'product')
  card.dataset.productId = p.product_id
  card.append(make('h3', '', p.title), make('p', 'brand', p.brand), make('p', 'price', euros(p.unit_price_cents)),
    productButton('add', p.product_id, 'add', 'Add'))
  return card
}

function renderBasket () {
  const list = $('basket-lines')
  list.replaceChildren(...basketLines().map(({ p, quantity }) => {
    const li = make('li', 'line')
    li.dataset.productId = p.product_id
    li.dataset.quantity = quantity
    li.append(make('span', 'title', p.title), make('span', 'qty', `×${quantity}`),
      make('span', 'amount', euros(p.unit_price_cents * quantity)),
      productButton('remove', p.product_id, 'secondary remove', 'Remove'))
    return li
  }))
  const total = basketTotal()
  $('basket-total').textContent = euros(total)
  $('basket-total').dataset.cents = total
  $('pay').disabled = state.basket.size === 0
}

function basketChanged () {
  save('basket', [...state.basket])
  renderBasket()
  // A tension cart's message depends on the basket: "add X more" shrinks as it fills.
  for (const el of document.querySelectorAll('.decision[data-kind="tension_cart"]')) {
    const d = state.decisions.find(x => x.decision_id === el.dataset.decisionId)
    if (d) el.querySelector('.message').replaceWith(message(d))
  }
}

// ---------------------------------------------------------------------------------------------
// The "For you" widget.

const KIND_TITLES = {
  product_recommendation: 'Recommended for you',
  personalized_promotion: 'Your promotion',
  gamified_promotion: 'Play and win',
  tension_cart: 'Almost there',
  game_won: 'You won!'
}

/** The human-readable body of a decision (`vocab/src/tree.rs` `Decision`; the params are those
 *  `trees/src/builder.rs` writes, or any a retailer's own tool chose). */
function message (d) {
  const params = d.experience.params || {}
  const el = make('div', 'message')
  const text = t => el.appendChild(make('p', '', t))
  switch (d.experience.kind) {
    case 'product_recommendation': {
      const p = state.catalog.get(params.product_id)
      if (!p) { text(`Try product ${params.product_id}`); break }
      const row = make('div', 'recommended')
      row.append(make('span', '', `${p.title} (${p.brand}), ${euros(p.unit_price_cents)}`),
        productButton('add', p.product_id, 'add', 'Add'))
      el.append(row)
      break
    }
    case 'tension_cart': {
      const missing = Math.max(0, params.threshold_cents - basketTotal())
      el.dataset.missingCents = missing
      text(missing > 0
        ? `Add ${euros(missing)} more to get ${euros(params.reward_cents)} off`
        : `Your basket gets ${euros(params.reward_cents)} off`)
      break
    }
    case 'personalized_promotion': {
      const products = (params.product_ids || []).map(id => state.catalog.get(id)?.title || id)
      text(`${params.discount_percent}% off ${params.category}${products.length ? ': ' + products.join(', ') : ''}`)
      break
    }
    case 'gamified_promotion':
      text(`Pay this order for a chance to win ${params.prize || 'a prize'}: one in ${params.win_one_in}, up to ${euros(params.max_prize_cents || 0)}`)
      break
    case 'game_won':
      text(`Order ${params.order_id} won ${params.prize || 'the game'}: ${euros(params.prize_cents || 0)}`)
      break
    default:
      text(Object.entries(params).map(([k, v]) => `${k}: ${v}`).join(', '))
  }
  return el
}

function decisionElement (d) {
  const li = make('li', 'decision')
  li.dataset.decisionId = d.decision_id
  li.dataset.kind = d.experience.kind
  li.dataset.causedBy = d.caused_by.event_id
  li.append(make('span', 'kind', KIND_TITLES[d.experience.kind] || d.experience.kind), message(d),
    make('p', 'reasons', (d.reasons || []).join('; ')))
  return li
}

/**
 * Shows `d` at the top of the widget, once per decision_id.
 *
 * The latency of a decision caused by a click of this page: from the start of the click's
 * handler (`state.clicks`, performance.now()) to the first moment the widget's DOM holds the
 * decision AND a frame has been painted after it was inserted. The element is inserted
 * synchronously here; the next requestAnimationFrame callback runs just before that frame's
 * paint, and a setTimeout(0) queued from it runs after the paint. So the measure covers the
 * tracker's queue, the collector, Kafka, the graph, the decisions topic, the SSE push, parsing,
 * rendering and one paint.
 */
function showDecision (d, live) {
  if (seen.has(d.decision_id)) return false
  seen.add(d.decision_id)
  state.decisions.push(d)
  if (state.decisions.length > DECISIONS_KEPT) state.decisions.splice(0, state.decisions.length - DECISIONS_KEPT)
  const shown = $('decisions')
  shown.prepend(decisionElement(d))
  while (shown.children.length > WIDGET_KEPT) shown.lastElementChild.remove()
  if (live) {
    save('seen', [...seen].slice(-SEEN_KEPT))
    save('decisions', state.decisions.slice(-DECISIONS_KEPT))
    const t0 = state.clicks.get(d.caused_by.event_id)
    if (t0 !== undefined) {
      requestAnimationFrame(() => setTimeout(() => {
        state.latencies.push({ event_id: d.caused_by.event_id, decision_id: d.decision_id, kind: d.experience.kind, ms: performance.now() - t0 })
      }, 0))
    }
  }
  return true
}

// ---------------------------------------------------------------------------------------------
// The decisions stream.
//
// The collector ends a stream when its token expires, and refuses (401) a token that has
// expired or is not this shopper's; the browser's own reconnection would reuse the old URL and
// its token. So the page manages its EventSource itself:
//
// - Renewal: shortly before the token expires (a third of its life, at most 30 s, at least
//   1 s before), the page fetches a fresh session and opens a second stream with
//   `last_event_id`; once it is open, the old one is closed. The two overlap, so no decision
//   falls between them (even before the page has a position to resume from); one that both
//   deliver is shown once (by decision_id).
// - Errors (collector down or restarting, 503 while it starts, a refused token, a stream that
//   ended): the page closes the EventSource, fetches a fresh session and opens a new stream
//   with `last_event_id` = the last SSE id it received, so the collector first sends what was
//   committed meanwhile, each decision once. Repeated failures back off: the first retry at
//   once, then 250 ms doubling up to 5 s, jittered.

/** The stream whose end or error makes the page reconnect. */
let current = null
let failures = 0
let retry = null
let renewal = null

function setStatus (status, detail = '') {
  state.status = status
  const el = $('stream-status')
  el.dataset.status = status
  el.textContent = {
    connecting: 'connecting…',
    live: 'live',
    reconnecting: 'reconnecting…',
    offline: `offline, retrying${detail}`
  }[status] || status
}

/** `a` or `b`, whichever SSE id (`partition:offset`) is later; ids of two partitions (the
 *  topic gained partitions) cannot be compared: the newer one received wins. */
function later (a, b) {
  if (!a) return b
  const [pa, oa] = a.split(':').map(Number)
  const [pb, ob] = b.split(':').map(Number)
  return pa === pb && oa > ob ? a : b
}

function onDecision (e) {
  let d
  try { d = JSON.parse(e.data) } catch { return }
  state.received.push({ id: e.lastEventId, decision_id: d.decision_id, retailer_id: d.retailer_id, shopper_id: d.shopper_id, caused_by: d.caused_by && d.caused_by.event_id })
  state.lastEventId = later(state.lastEventId, e.lastEventId)
  save('last-event-id', state.lastEventId)
  // The token names this shopper, so the collector sends nothing else; checked all the same.
  const s = state.session
  if (d.retailer_id !== s.retailer_id || d.shopper_id !== s.shopper_id || !d.experience || !d.caused_by) return
  showDecision(d, true)
}

function streamUrl (session, lastEventId) {
  const url = `${session.collector}/v1/decisions/stream?token=${encodeURIComponent(session.stream_token)}`
  return lastEventId ? `${url}&last_event_id=${encodeURIComponent(lastEventId)}` : url
}

/** Opens a stream with the session's token from the last position received. `renewing`: a
 *  renewal, which replaces the current stream once it is open. */
function openStream (renewing = false) {
  const s = state.session
  const url = streamUrl(s, state.lastEventId)
  state.opens.push({ last_event_id: state.lastEventId, expires_at: s.expires_at, renewal: renewing })
  const es = new EventSource(url)
  if (!renewing) current = es
  es.onopen = () => {
    if (renewing) {
      if (current && current !== es) current.close()
      current = es
    }
    if (current !== es) return
    failures = 0
    setStatus('live')
    scheduleRenewal(s.expires_at)
  }
  es.addEventListener('decision', onDecision)
  es.onerror = () => {
    es.close()
    // A renewal that failed: the current stream goes on until it ends, then reconnects.
    if (current !== es) return
    current = null
    reopenLater()
  }
}

function scheduleRenewal (expiresAt) {
  clearTimeout(renewal)
  const left = expiresAt * 1000 - Date.now()
  const margin = Math.min(30_000, Math.max(1000, left / 3))
  renewal = setTimeout(async () => {
    try {
      state.session = await fetchSession()
    } catch {
      return // the current stream ends at its expiry and the error path takes over
    }
    openStream(true)
  }, Math.max(0, left - margin))
}

function reopenLater () {
  clearTimeout(renewal)
  failures++
  setStatus(failures > 1 ? 'offline' : 'reconnecting', failures > 1 ? ` (${failures - 1})` : '')
  const delay = failures <= 1 ? 0 : Math.min(5000, 250 * 2 ** (failures - 2)) * (0.5 + Math.random() / 2)
  clearTimeout(retry)
  retry = setTimeout(async () => {
    try {
      state.session = await fetchSession()
    } catch {
      return reopenLater()
    }
    if (failures > 1 && state.lastEventId && await positionRefused()) {
      // Resume from nothing rather than retry forever: decisions made meanwhile are lost to
      // this page (the collector's documented limit).
      state.positionsDropped++
      state.lastEventId = null
      save('last-event-id', null)
    }
    openStream()
  }, delay)
}

/**
 * Whether the collector refuses to resume from the page's position, which an EventSource error
 * cannot tell from a network error: 400 `bad_last_event_id` (not a partition of the topic: a
 * position from another deployment), or, after several failures in a row, 503 `unavailable`
 * (the catch-up could not read the partition; README: open a stream without it). Asked with a
 * fetch of the stream's URL, aborted at once when it opens.
 */
async function positionRefused () {
  const ctl = new AbortController()
  try {
    const res = await fetch(streamUrl(state.session, state.lastEventId), { signal: ctl.signal, cache: 'no-store' })
    if (res.ok) return false
    const body = await res.json().catch(() => ({}))
    return res.status === 400 || (res.status === 503 && body.error === 'unavailable' && failures >= 4)
  } catch {
    return false
  } finally {
    ctl.abort()
  }
}

// ---------------------------------------------------------------------------------------------
// Start.

async function start () {
  const [session, catalog] = await Promise.all([fetchSession(), getJSON('/api/catalog')])
  state.session = session
  for (const p of catalog) state.catalog.set(p.product_id, p)
  prefix = `storefront:${session.retailer_id}:${session.shopper_id}:`
  $('shopper-id').textContent = session.shopper_id

  const { init } = await import('/tracker/browser.js')
  // flushIntervalMs 0: a click's event leaves at the next turn of the event loop (the default,
  // 1000 ms, would hold every click up to a second before the collector sees it). Retries of a
  // collector that is away back off from 250 ms to 2 s, so the queue drains soon after it returns.
  state.tracker = init({
    endpoint: session.collector,
    retailerId: session.retailer_id,
    key: session.key,
    flushIntervalMs: 0,
    backoffBaseMs: 250,
    backoffMaxMs: 2000
  })
  // Another shopper logged in on this browser: their session is not this one's.
  let previous = null
  try { previous = localStorage.getItem('storefront:shopper') } catch {}
  if (previous !== null && previous !== session.shopper_id) state.tracker.identify(null)
  try { localStorage.setItem('storefront:shopper', session.shopper_id) } catch {}
  state.tracker.identify(session.shopper_id)

  // What the last page load left: the basket, the decisions shown, the stream's position.
  for (const [id, quantity] of load('basket', [])) if (state.catalog.has(id) && quantity > 0) state.basket.set(id, quantity)
  seen = new Set(load('seen', []))
  for (const d of load('decisions', [])) { seen.delete(d.decision_id); showDecision(d, false) }
  state.lastEventId = load('last-event-id', null)

  $('products').replaceChildren(...catalog.map(productCard))
  document.addEventListener('click', e => {
    const button = e.target.closest('button[data-action]')
    if (!button) return
    if (button.dataset.action === 'add') add(button.dataset.productId)
    else if (button.dataset.action === 'remove') remove(button.dataset.productId)
  })
  $('pay').addEventListener('click', pay)
  renderBasket()

  setStatus('connecting')
  openStream()
  // page_viewed once the stream is open (or after 2 s): on a first visit the page has no stream
  // position yet, so a decision made before the stream subscribed would not reach it.
  const opened = Date.now()
  while (state.status !== 'live' && Date.now() - opened < 2000) await new Promise(resolve => setTimeout(resolve, 10))
  track('page_viewed', { url: location.origin + location.pathname, page_type: 'home' })
  state.phase = 'ready'
}

start().catch(e => {
  state.phase = 'failed'
  state.error = String(e && e.message)
  const el = $('page-error')
  el.hidden = false
  el.textContent = `The storefront could not start: ${state.error}`
})
