#!/usr/bin/env node
// The retailer's web server of the demo storefront: serves the page, the tracker's modules, and
// the two API routes a real shop's backend would have:
//
//   GET /                     public/index.html (and the other files of public/)
//   GET /tracker/*            the files of tracker/src/ (the tracker is plain ES modules)
//   GET /api/session?shopper  who the page is for: retailer, shopper, the collector's address, the
//                             tracker's (public) event key, and a stream token for the shopper's
//                             decisions (GET /v1/decisions/stream), signed with the stream secret
//                             the retailer shares with the collector
//   GET /api/catalog          the products, from --catalog
//
// In a real shop the backend knows who is logged in; here `?shopper=` stands in for the login
// (without it, --shopper). The stream secret never leaves this process: the page only gets a
// token for its own shopper, valid --token-ttl-s seconds.
//
//   node examples/storefront/server.js --listen 127.0.0.1:8090 --collector http://127.0.0.1:8088 \
//     --retailer retailer-00 --key EVENT_KEY --stream-secret SECRET --catalog catalog.json \
//     [--shopper DEFAULT_SHOPPER] [--token-ttl-s 300]
//
// prints `storefront: http://127.0.0.1:PORT/` on stdout once it listens (port 0: any free port).
// No runtime dependency: node's http, fs and crypto only.
import { createServer } from 'node:http'
import { createHmac } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { extname, join, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const here = fileURLToPath(new URL('.', import.meta.url))
/** Where `/` and the page's files come from. */
export const PUBLIC_DIR = join(here, 'public')
/** Where `/tracker/*` comes from: the tracker's sources, served as they are (ES modules). */
export const TRACKER_DIR = resolve(here, '../../tracker/src')

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8'
}

/**
 * A stream token for `retailerId`'s shopper `shopperId`, valid until `expiresAt` (Unix
 * seconds), as `collector/src/decisions.rs` defines it:
 *
 *   token   = "v1." + hex(payload) + "." + hex(HMAC-SHA256(secret, payload))
 *   payload = retailer_id 0x1F shopper_id 0x1F expires_at (decimal Unix seconds)
 */
export function streamToken (secret, retailerId, shopperId, expiresAt) {
  if (!Number.isSafeInteger(expiresAt) || expiresAt < 0) throw new Error(`expires_at must be Unix seconds, not ${expiresAt}`)
  const payload = Buffer.from(`${retailerId}\x1f${shopperId}\x1f${expiresAt}`, 'utf8')
  const mac = createHmac('sha256', secret).update(payload).digest('hex')
  return `v1.${payload.toString('hex')}.${mac}`
}

/** The file under `root` that `urlPath` names, or null when it would leave `root`. */
function within (root, urlPath) {
  let rel
  try { rel = decodeURIComponent(urlPath) } catch { return null }
  if (rel.includes('\0')) return null
  const file = resolve(root, '.' + (rel.startsWith('/') ? rel : '/' + rel))
  return file === root || file.startsWith(root + sep) ? file : null
}

function send (res, status, type, body, headers = {}) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...headers })
  res.end(body)
}

const json = (res, status, value) => send(res, status, 'application/json; charset=utf-8', JSON.stringify(value))

async function sendFile (res, file, head) {
  try {
    if (!file || !(await stat(file)).isFile()) throw new Error('not a file')
  } catch {
    return json(res, 404, { error: 'not_found' })
  }
  const type = TYPES[extname(file).toLowerCase()] || 'application/octet-stream'
  send(res, 200, type, head ? undefined : await readFile(file))
}

/**
 * Starts the storefront's server. Options:
 * - `listen`: "host:port" (port 0: any free port), default "127.0.0.1:0"
 * - `collector`: the collector's base URL (the page sends events and opens its stream there)
 * - `retailer`, `key`: the retailer id and its tracker (event) key, public by nature
 * - `streamSecret`: the retailer's `[[collector.stream_secrets]]` secret (kept here)
 * - `catalog`: a path to the catalog JSON, or the array itself
 * - `shopper`: the shopper of a session request without `?shopper=`
 * - `tokenTtlS`: the stream tokens' lifetime in seconds (default 300; the collector refuses
 *   more than its `stream_token_max_ttl_s`)
 * - `now`: the clock (ms), for tests
 * Returns `{url, close()}`.
 */
export async function startStorefront ({
  listen = '127.0.0.1:0', collector, retailer, key, streamSecret, catalog, shopper = null,
  tokenTtlS = 300, now = Date.now
} = {}) {
  for (const [name, v] of Object.entries({ collector, retailer, key, streamSecret, catalog })) {
    if (!v) throw new Error(`startStorefront: ${name} is required`)
  }
  if (!Number.isSafeInteger(tokenTtlS) || tokenTtlS < 1) throw new Error(`tokenTtlS must be a whole number of seconds >= 1, not ${tokenTtlS}`)
  const products = Array.isArray(catalog) ? catalog : JSON.parse(readFileSync(catalog, 'utf8'))
  checkCatalog(products)
  const catalogJson = JSON.stringify(products)
  const collectorUrl = collector.replace(/\/+$/, '')

  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://storefront.invalid')
      const head = req.method === 'HEAD'
      if (req.method !== 'GET' && !head) return json(res, 405, { error: 'method_not_allowed' })
      if (url.pathname === '/api/session') {
        const who = url.searchParams.get('shopper') || shopper
        if (!who) return json(res, 400, { error: 'no_shopper', reason: 'give ?shopper= (the demo\'s stand-in for a login) or start the server with --shopper' })
        const expiresAt = Math.floor(now() / 1000) + tokenTtlS
        return json(res, 200, {
          retailer_id: retailer,
          shopper_id: who,
          collector: collectorUrl,
          key,
          stream_token: streamToken(streamSecret, retailer, who, expiresAt),
          expires_at: expiresAt
        })
      }
      if (url.pathname === '/api/catalog') return send(res, 200, 'application/json; charset=utf-8', catalogJson)
      if (url.pathname.startsWith('/tracker/')) return sendFile(res, within(TRACKER_DIR, url.pathname.slice('/tracker'.length)), head)
      if (url.pathname === '/') return sendFile(res, join(PUBLIC_DIR, 'index.html'), head)
      return sendFile(res, within(PUBLIC_DIR, url.pathname), head)
    } catch (e) {
      if (!res.headersSent) json(res, 500, { error: 'internal', reason: String(e && e.message) })
      else res.destroy()
    }
  })
  const colon = listen.lastIndexOf(':')
  const host = listen.slice(0, colon).replace(/^\[|\]$/g, '')
  const port = Number(listen.slice(colon + 1))
  if (colon < 0 || !Number.isInteger(port)) throw new Error(`listen must be host:port, not ${listen}`)
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => { server.off('error', reject); resolve() })
  })
  const address = server.address()
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address
  return {
    url: `http://${shown}:${address.port}/`,
    close: () => new Promise(resolve => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  }
}

/** Throws unless `products` is an array of {product_id, category, brand, unit_price_cents, title}. */
export function checkCatalog (products) {
  if (!Array.isArray(products) || !products.length) throw new Error('the catalog must be a non-empty JSON array')
  const ids = new Set()
  for (const p of products) {
    const where = `catalog entry ${JSON.stringify(p)}`
    for (const k of ['product_id', 'category', 'brand', 'title']) {
      if (typeof p[k] !== 'string' || !p[k]) throw new Error(`${where}: ${k} must be a non-empty string`)
    }
    if (!Number.isSafeInteger(p.unit_price_cents) || p.unit_price_cents < 0) throw new Error(`${where}: unit_price_cents must be an integer >= 0`)
    if (ids.has(p.product_id)) throw new Error(`${where}: product_id appears twice`)
    ids.add(p.product_id)
  }
}

async function main () {
  const { values } = parseArgs({
    options: {
      listen: { type: 'string', default: '127.0.0.1:8090' },
      collector: { type: 'string', default: 'http://127.0.0.1:8088' },
      retailer: { type: 'string', default: 'retailer-00' },
      key: { type: 'string' },
      'stream-secret': { type: 'string' },
      catalog: { type: 'string', default: join(here, 'catalog.json') },
      shopper: { type: 'string' },
      'token-ttl-s': { type: 'string', default: '300' }
    }
  })
  if (!values.key || !values['stream-secret']) {
    console.error('usage: node server.js --key EVENT_KEY --stream-secret SECRET [--listen 127.0.0.1:8090] [--collector http://127.0.0.1:8088] [--retailer retailer-00] [--catalog catalog.json] [--shopper ID] [--token-ttl-s 300]')
    process.exit(2)
  }
  const store = await startStorefront({
    listen: values.listen,
    collector: values.collector,
    retailer: values.retailer,
    key: values.key,
    streamSecret: values['stream-secret'],
    catalog: values.catalog,
    shopper: values.shopper || null,
    tokenTtlS: Number(values['token-ttl-s'])
  })
  console.log(`storefront: ${store.url}`)
  const stop = () => store.close().then(() => process.exit(0))
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch(e => { console.error(`storefront: ${e.message}`); process.exit(1) })
}
