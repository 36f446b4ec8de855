// basketflow tracker: builds contract events in the shopper's browser and delivers them to the
// collector's `POST /v1/events`, at least once, each with one `event_id` for all its attempts
// (the graph de-duplicates by `(retailer_id, event_id)`).
//
// The life of an event:
//   track(type, fields)  validated (contract, PII) -> thrown back at the caller if invalid
//     -> queue (memory, mirrored to storage: survives reloads; bounded by count and bytes,
//        oldest dropped first and counted)
//     -> a batch (maxBatch events or maxBatchBytes, or what is queued after flushIntervalMs)
//     -> fetch(keepalive, Authorization: Bearer KEY)
//        accepted: leaves the queue; rejected: leaves it, warned and counted;
//        failed, 429, 503, 408, 5xx, network error: stays, re-sent after
//        max(Retry-After, exponential backoff with jitter, capped at backoffMaxMs)
//   When the page is hidden or unloading, flush({beacon: true}) hands the queued events to
//   navigator.sendBeacon (text/plain, ?key=KEY: a beacon cannot set headers).
//
// Environment-free: storage, fetch, sendBeacon, clock, timers and randomness are injectable, and
// default to the browser's. `browser.js` wires page visibility and attaches `window.basketflow`.

/** Normalized field names refused when they are the whole name.
 *  Copied from `ingest/src/pii.rs` (EXACT); test/pii.test.js checks that the lists agree. */
export const PII_EXACT = ['name', 'names', 'fullname', 'firstname', 'lastname', 'givenname',
  'familyname', 'middlename', 'maidenname', 'nickname', 'username', 'surname', 'customername',
  'shoppername', 'mail', 'tel', 'mobile', 'fax', 'street', 'city', 'zip', 'zipcode', 'postcode',
  'postalcode', 'dob', 'age', 'sex', 'race', 'religion', 'nationality', 'maritalstatus', 'income',
  'ssn', 'socialsecuritynumber', 'passport', 'passportnumber', 'nationalid', 'ip', 'ipaddress']

/** Stems that make any normalized field name containing them refused.
 *  Copied from `ingest/src/pii.rs` (STEMS); test/pii.test.js checks that the lists agree. */
export const PII_STEMS = ['email', 'phone', 'birth', 'firstname', 'lastname', 'fullname',
  'surname', 'gender', 'ethnic', 'address']

/** Whether a field name denotes identifying data: the rule of `pii_key` in `ingest/src/pii.rs`
 *  (letters and digits only, lower case; an exact name or a stem anywhere). */
export function piiKey (key) {
  const n = key.replace(/[^\p{Alphabetic}\p{N}]/gu, '').toLowerCase()
  return PII_EXACT.includes(n) || PII_STEMS.some(s => n.includes(s))
}

/** Whether a string contains an email address (`looks_like_email` in `ingest/src/pii.rs`). */
export function looksLikeEmail (s) {
  for (const m of s.matchAll(/(?<=[\w.%+-])@([A-Za-z0-9.-]*)/g)) {
    const d = m[1].replace(/\.$/, '')
    const dot = d.lastIndexOf('.')
    if (dot > 0 && /^[A-Za-z]{2,}$/.test(d.slice(dot + 1))) return true
  }
  return false
}

// The contract's fields per type: 'id' (1-128 bytes of printable text), 'text' (non-empty
// string), 'qty' (integer >= 1), 'cents' (integer >= 0), an array of strings (one of them), an
// object (nested fields), [object] (a non-empty list of such objects). '?' = optional (or null).
const PRODUCT = { product_id: 'id', category: 'id', brand: 'id?', unit_price_cents: 'cents' }
const LINE = { ...PRODUCT, quantity: 'qty' }
const CHANGE = { product: PRODUCT, quantity: 'qty' }
const TYPES = {
  page_viewed: {
    url: 'text',
    page_type: ['home', 'category', 'product', 'search', 'basket', 'checkout', 'other'],
    product_id: 'id?',
    category: 'id?'
  },
  link_clicked: { url: 'text', target_url: 'str?', product_id: 'id?' },
  search_performed: { query: 'text', result_count: 'count?' },
  product_added: CHANGE,
  product_removed: CHANGE,
  order_paid: { order_id: 'id', lines: [LINE], total_cents: 'cents' },
  order_status_changed: { order_id: 'id', status: ['delivered', 'cancelled'] }
}
/** The event types of the contract. */
export const EVENT_TYPES = Object.keys(TYPES)
/** Fields the tracker sets itself. */
const COMMON = ['event_id', 'type', 'retailer_id', 'shopper_id', 'session_id', 'occurred_at']
/** The collector refuses a message over this many bytes. */
const MAX_EVENT_BYTES = 65536

const utf8 = s => new TextEncoder().encode(s).length
const isInt = (v, min) => Number.isSafeInteger(v) && v >= min
// Blank, control, separator, invisible and bidirectional characters: the schema's `id` pattern.
// eslint-disable-next-line no-control-regex
const BAD_ID = /^\s*$|[\0-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060\u2066-\u2069\ufeff]/
const isId = v => typeof v === 'string' && !BAD_ID.test(v) && utf8(v) <= 128

/** The reason `value` breaks `spec`, or '' when it conforms. */
function check (spec, v, path) {
  if (typeof spec === 'string') {
    if (spec.endsWith('?')) {
      if (v == null) return ''
      spec = spec.slice(0, -1)
    } else if (v === undefined) return `${path} is required`
    const ok = spec === 'id' ? isId(v)
      : spec === 'text' ? typeof v === 'string' && v !== ''
        : spec === 'str' ? typeof v === 'string'
          : spec === 'qty' ? isInt(v, 1) && v <= 4294967295
            : spec === 'cents' ? isInt(v, 0)
              : isInt(v, 0) // count
    return ok ? '' : `${path} must be ${{ id: 'an id (non-blank printable text, at most 128 bytes)', text: 'a non-empty string', str: 'a string', qty: 'an integer >= 1', cents: 'an integer number of cents >= 0', count: 'an integer >= 0' }[spec]}, not ${JSON.stringify(v)}`
  }
  if (typeof spec[0] === 'string') {
    return spec.includes(v) ? '' : `${path} must be one of ${spec.join('|')}, not ${JSON.stringify(v)}`
  }
  if (Array.isArray(spec)) {
    if (!Array.isArray(v) || !v.length) return `${path} must be a non-empty array`
    for (let i = 0; i < v.length; i++) {
      const e = check(spec[0], v[i], `${path}[${i}]`)
      if (e) return e
    }
    return ''
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return `${path} must be an object`
  for (const k in spec) {
    const e = check(spec[k], v[k], path ? `${path}.${k}` : k)
    if (e) return e
  }
  return ''
}

/** The first identifying key or email-shaped string in `v`, at any depth, or ''. */
function findPii (v, path) {
  if (typeof v === 'string') return looksLikeEmail(v) ? `${path || 'a value'} contains an email address` : ''
  if (v && typeof v === 'object') {
    for (const k in v) {
      const p = path ? `${path}.${k}` : k
      const e = piiKey(k) ? `field "${p}" carries identifying or socio-demographic data` : findPii(v[k], p)
      if (e) return e
    }
  }
  return ''
}

/** A random v4 UUID: crypto.randomUUID when present, else crypto.getRandomValues. */
export function uuid (crypto = globalThis.crypto) {
  if (crypto.randomUUID) return crypto.randomUUID()
  const b = crypto.getRandomValues(new Uint8Array(16))
  b[6] = b[6] & 15 | 64
  b[8] = b[8] & 63 | 128
  const h = [...b].map(x => (x + 256).toString(16).slice(1)).join('')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

/** An in-memory stand-in for localStorage (Node, or a browser that refuses storage). */
export function memoryStorage () {
  const m = new Map()
  return { getItem: k => m.has(k) ? m.get(k) : null, setItem: (k, v) => m.set(k, String(v)), removeItem: k => m.delete(k) }
}

/** The page's localStorage, or memory where reading it throws (storage blocked) or it is absent. */
function localStorageOrMemory () {
  try { return globalThis.localStorage || memoryStorage() } catch { return memoryStorage() }
}

/** Whether an answer's status means "send the same events again later". */
const retryable = s => s === 408 || s === 429 || s >= 500

/**
 * A tracker for one retailer. See README "Tracker (for a retailer's integrator)".
 * Returns `{identify, track, flush, pending, stats}`.
 */
export function createTracker ({
  endpoint, retailerId, key,
  flushIntervalMs = 1000, maxBatch = 50, maxBatchBytes = 65536,
  maxQueueEvents = 1000, maxQueueBytes = 1 << 20,
  sessionTimeoutMs = 30 * 60 * 1000, backoffBaseMs = 1000, backoffMaxMs = 60000,
  storage = localStorageOrMemory(),
  fetch = globalThis.fetch && globalThis.fetch.bind(globalThis),
  sendBeacon = globalThis.navigator && navigator.sendBeacon && navigator.sendBeacon.bind(navigator),
  now = Date.now, random = Math.random,
  setTimeout = globalThis.setTimeout, clearTimeout = globalThis.clearTimeout,
  crypto = globalThis.crypto, warn = console.warn
} = {}) {
  if (!endpoint || !isId(retailerId) || !key) throw new Error('basketflow: createTracker needs endpoint, retailerId and key')
  const url = endpoint.replace(/\/+$/, '') + '/v1/events'
  const prefix = `basketflow:${retailerId}:`
  const load = k => { try { return JSON.parse(storage.getItem(prefix + k)) } catch { return null } }
  // Storage is best effort (quota, private browsing): the queue in memory is the truth.
  const save = (k, v) => { try { storage.setItem(prefix + k, JSON.stringify(v)) } catch {} }
  const counts = { tracked: 0, accepted: 0, rejected: 0, dropped: 0, retries: 0, beaconed: 0 }

  // The queue: {id, s (the event's JSON, sent byte for byte on every attempt), n (its bytes)}.
  let queue = []
  for (const s of load('queue') || []) {
    try { queue.push({ id: JSON.parse(s).event_id, s, n: utf8(s) }) } catch {}
  }
  const inFlight = new Set()
  let shopperId = isId(load('shopper')) ? load('shopper') : null
  let session = load('session')
  let failures = 0
  let retryAt = 0
  let timer = null
  let timerAt = 0
  let running = null
  let drain = false

  const persist = () => save('queue', queue.map(q => q.s))
  function bound () {
    let bytes = queue.reduce((a, q) => a + q.n, 0)
    while (queue.length > maxQueueEvents || bytes > maxQueueBytes) {
      const i = queue.findIndex(q => !inFlight.has(q.id))
      if (i < 0) break
      bytes -= queue.splice(i, 1)[0].n
      counts.dropped++
    }
  }
  bound()

  /** Arms the one timer to flush at `at` (the earlier of two requests wins). */
  function wake (at) {
    if (timer !== null && timerAt <= at) return
    if (timer !== null) clearTimeout(timer)
    timerAt = at
    timer = setTimeout(() => { timer = null; flush() }, Math.max(0, at - now()))
  }

  /** The next batch: queued events not in flight, up to maxBatch events and maxBatchBytes. */
  function take () {
    const batch = []
    let bytes = 2
    for (const q of queue) {
      if (inFlight.has(q.id)) continue
      if (batch.length >= maxBatch || (batch.length && bytes + q.n + 1 > maxBatchBytes)) break
      batch.push(q)
      bytes += q.n + 1
    }
    return batch
  }

  /** Removes `done` from the queue. */
  function settle (done) {
    if (!done.length) return
    const gone = new Set(done.map(q => q.id))
    queue = queue.filter(q => !gone.has(q.id))
    persist()
  }

  /** Sends batches until the queue is empty (or, unless draining, has no full batch) or a
   *  retry must wait; then arms the timer for what is left. */
  async function run () {
    await 0 // `running` is set before the loop starts
    try {
      for (let batch; now() >= retryAt && (batch = take()).length && (drain || batch.length >= maxBatch);) {
        batch.forEach(q => inFlight.add(q.id))
        let res = null
        let body = null
        try {
          res = await fetch(url, {
            method: 'POST',
            keepalive: true,
            headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
            body: `[${batch.map(q => q.s).join(',')}]`
          })
          body = await res.json().catch(() => null)
        } catch {}
        batch.forEach(q => inFlight.delete(q.id))
        const status = res ? res.status : 0
        const again = !res || retryable(status)
        const done = []
        let failed = 0
        const results = body && Array.isArray(body.results) ? body.results : null
        batch.forEach((q, i) => {
          const r = results && results.find(r => r.index === i)
          const st = r ? r.status : again ? 'failed' : res.ok ? 'accepted' : 'rejected'
          if (st === 'failed') return failed++
          done.push(q)
          if (st === 'accepted') return counts.accepted++
          counts.rejected++
          warn(`basketflow: event ${q.id} rejected by the collector (HTTP ${status}): ${r ? r.code + (r.reason ? ': ' + r.reason : '') : 'no reason given'}`)
        })
        settle(done)
        if (failed) {
          counts.retries++
          failures++
          const cap = Math.min(backoffMaxMs, backoffBaseMs * 2 ** (failures - 1))
          let delay = cap / 2 + random() * cap / 2
          const ra = res && res.headers.get('retry-after')
          if (ra) {
            const ms = /^\d+$/.test(ra.trim()) ? ra * 1000 : Date.parse(ra) - now()
            if (ms > delay) delay = ms
          }
          retryAt = now() + delay
        } else {
          failures = 0
        }
      }
    } finally {
      running = null
      drain = false
      if (take().length) wake(now() < retryAt ? retryAt : now() + flushIntervalMs)
    }
  }

  /** Starts the send loop unless it runs; `all`: send partial batches too. */
  function kick (all) {
    if (all) drain = true
    return running || (running = run())
  }

  /** Sends what is queued now; with `{beacon: true}`, by navigator.sendBeacon (page hidden or
   *  unloading). Returns a promise settled when the sending stops (queue empty or waiting). */
  function flush ({ beacon } = {}) {
    if (beacon && sendBeacon && failures === 0) {
      // While the collector answers, the browser takes the events over (they leave the queue);
      // while it does not, they stay in storage for the next page.
      for (let batch; (batch = take()).length;) {
        if (!sendBeacon(`${url}?key=${encodeURIComponent(key)}`, `[${batch.map(q => q.s).join(',')}]`)) break
        counts.beaconed += batch.length
        settle(batch)
      }
    }
    return kick(true)
  }

  /** Sets the shopper id (the retailer's pseudonymous id or loyalty number, never an email);
   *  kept across reloads. `identify(null)` forgets it (log out) and starts a new session. */
  function identify (id) {
    if (id === null) {
      shopperId = session = null
      try { storage.removeItem(prefix + 'shopper'); storage.removeItem(prefix + 'session') } catch {}
      return
    }
    if (!isId(id) || looksLikeEmail(id)) throw new Error(`basketflow.identify: the shopper id must be the retailer's pseudonymous id (non-blank printable text, at most 128 bytes, not an email), not ${JSON.stringify(id)}`)
    shopperId = id
    save('shopper', id)
  }

  /** Builds, validates and queues one event; returns it. Throws (and sends nothing) when the
   *  call breaks the contract or carries identifying data. */
  function track (type, fields = {}) {
    const fail = why => { throw new Error(`basketflow.track(${JSON.stringify(type)}): ${why}`) }
    if (!TYPES[type]) fail(`unknown event type; one of ${EVENT_TYPES.join('|')}`)
    if (shopperId == null) fail('no shopper id: call identify(shopperId) first')
    const reserved = COMMON.find(k => fields && k in fields)
    if (reserved) fail(`${reserved} is set by the tracker`)
    const why = check(TYPES[type], fields, '') || findPii(fields, '')
    if (why) fail(why)
    const t = now()
    session = load('session') || session // other tabs of the site share it
    if (!session || !isId(session.id) || !(t - session.at <= sessionTimeoutMs)) session = { id: uuid(crypto), at: t }
    session.at = t
    save('session', session)
    const event = {
      event_id: uuid(crypto),
      type,
      retailer_id: retailerId,
      shopper_id: shopperId,
      session_id: session.id,
      occurred_at: new Date(t).toISOString(),
      ...fields
    }
    const s = JSON.stringify(event)
    const n = utf8(s)
    if (n > Math.min(MAX_EVENT_BYTES, maxBatchBytes - 2)) fail(`the event is ${n} bytes, over the ${Math.min(MAX_EVENT_BYTES, maxBatchBytes - 2)} a request can carry`)
    queue.push({ id: event.event_id, s, n })
    counts.tracked++
    bound()
    persist()
    if (take().length >= maxBatch) kick(false)
    wake(Math.max(now() + flushIntervalMs, retryAt))
    return event
  }

  return {
    identify,
    track,
    flush,
    /** How many events wait in the queue (including those in flight). */
    pending: () => queue.length,
    /** Counters since the tracker was created: tracked, accepted, rejected (by the collector),
     *  dropped (oldest, over the queue's bounds), retries (attempts answered "later"), beaconed. */
    stats: () => ({ ...counts, pending: queue.length })
  }
}
