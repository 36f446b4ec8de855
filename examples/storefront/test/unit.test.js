// The storefront's server without the stack: the stream token against the collector's own test
// vector, and what each route serves. `npm test` (node:test, under a second).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import { createHmac } from 'node:crypto'
import { startStorefront, streamToken, checkCatalog } from '../server.js'

const repo = new URL('../../..', import.meta.url).pathname
const catalogPath = new URL('../catalog.json', import.meta.url).pathname

test('the stream token is the one collector/src/decisions.rs pins for sign(b"new", "r1", "cust-1", 1_000)', () => {
  // Read the expected string from the Rust test itself, so the two cannot drift apart.
  const rust = readFileSync(`${repo}/collector/src/decisions.rs`, 'utf8')
  const m = rust.match(/let t = sign\(b"new", "r1", "cust-1", 1_000\);[\s\S]*?assert_eq!\(\s*t,\s*"(v1\.[0-9a-f]+\.)\\\s*([0-9a-f]{64})"/)
  assert.ok(m, 'the Rust test vector was not found in collector/src/decisions.rs')
  const expected = m[1] + m[2]
  assert.equal(expected, 'v1.72311f637573742d311f31303030.6793ea20394b175fc424a335bf37aec92bd0a61c24ea2ac1ba19390bbdb0d575')
  assert.equal(streamToken('new', 'r1', 'cust-1', 1000), expected)
  // Another shopper, expiry or secret: another token.
  assert.notEqual(streamToken('new', 'r1', 'cust-2', 1000), expected)
  assert.notEqual(streamToken('new', 'r1', 'cust-1', 1001), expected)
  assert.notEqual(streamToken('old', 'r1', 'cust-1', 1000), expected)
  assert.throws(() => streamToken('new', 'r1', 'cust-1', 1.5), /Unix seconds/)
})

/** GET `path` on `url` without any normalization of the path (fetch would resolve `..`). */
function get (url, path, method = 'GET') {
  const { hostname, port } = new URL(url)
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, method }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', d => { body += d })
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body }))
    })
    req.on('error', reject)
    req.end()
  })
}

test('the routes: the page, the tracker, a session with a token for the shopper, the catalog, and nothing outside the two folders', async () => {
  const store = await startStorefront({
    collector: 'http://127.0.0.1:8088/',
    retailer: 'retailer-00',
    key: 'event-key',
    streamSecret: 'a-stream-secret-of-at-least-32-characters',
    catalog: catalogPath,
    shopper: 'default-shopper',
    tokenTtlS: 300,
    now: () => 1_700_000_000_500
  })
  try {
    assert.match(store.url, /^http:\/\/127\.0\.0\.1:\d+\/$/)
    const page = await get(store.url, '/')
    assert.equal(page.status, 200)
    assert.equal(page.type, 'text/html; charset=utf-8')
    assert.equal(page.body, readFileSync(new URL('../public/index.html', import.meta.url), 'utf8'))
    for (const [path, type] of [['/storefront.js', 'text/javascript; charset=utf-8'], ['/storefront.css', 'text/css; charset=utf-8']]) {
      const r = await get(store.url, path)
      assert.deepEqual([r.status, r.type], [200, type], path)
    }
    const tracker = await get(store.url, '/tracker/browser.js')
    assert.deepEqual([tracker.status, tracker.type], [200, 'text/javascript; charset=utf-8'])
    assert.equal(tracker.body, readFileSync(`${repo}/tracker/src/browser.js`, 'utf8'))
    assert.equal((await get(store.url, '/tracker/tracker.js')).body, readFileSync(`${repo}/tracker/src/tracker.js`, 'utf8'))
    const head = await get(store.url, '/tracker/tracker.js', 'HEAD')
    assert.deepEqual([head.status, head.body], [200, ''])

    // Out of public/ and tracker/src/: refused, however the path is spelled.
    for (const path of ['/../server.js', '/%2e%2e/server.js', '/tracker/../../package.json', '/tracker/%2e%2e/package.json',
      '/tracker/..%2f..%2fpackage.json', '/%2e%2e%2f%2e%2e%2fREADME.md', '/tracker/', '/public', '/nope.js', '/%00', '/%zz']) {
      const r = await get(store.url, path)
      assert.equal(r.status, 404, `${path} answered ${r.status}: ${r.body.slice(0, 60)}`)
    }
    assert.equal((await get(store.url, '/api/session', 'POST')).status, 405)

    const expiresAt = 1_700_000_000 + 300
    const session = await (await fetch(new URL('/api/session?shopper=cust-42', store.url))).json()
    assert.deepEqual(session, {
      retailer_id: 'retailer-00',
      shopper_id: 'cust-42',
      collector: 'http://127.0.0.1:8088',
      key: 'event-key',
      stream_token: streamToken('a-stream-secret-of-at-least-32-characters', 'retailer-00', 'cust-42', expiresAt),
      expires_at: expiresAt
    })
    // The token's MAC, computed independently of streamToken.
    const payload = Buffer.from(`retailer-00\x1fcust-42\x1f${expiresAt}`)
    assert.equal(session.stream_token, `v1.${payload.toString('hex')}.${createHmac('sha256', 'a-stream-secret-of-at-least-32-characters').update(payload).digest('hex')}`)
    const dflt = await (await fetch(new URL('/api/session', store.url))).json()
    assert.equal(dflt.shopper_id, 'default-shopper')

    const catalog = await fetch(new URL('/api/catalog', store.url))
    assert.equal(catalog.headers.get('content-type'), 'application/json; charset=utf-8')
    assert.deepEqual(await catalog.json(), JSON.parse(readFileSync(catalogPath, 'utf8')))
  } finally {
    await store.close()
  }
})

test('without a default shopper, a session needs ?shopper=; a bad catalog is refused at start', async () => {
  const store = await startStorefront({ collector: 'http://c', retailer: 'r', key: 'k', streamSecret: 's', catalog: [{ product_id: 'p', category: 'c', brand: 'b', unit_price_cents: 1, title: 't' }] })
  try {
    const r = await fetch(new URL('/api/session', store.url))
    assert.equal(r.status, 400)
    assert.equal((await r.json()).error, 'no_shopper')
  } finally {
    await store.close()
  }
  assert.throws(() => checkCatalog([]), /non-empty/)
  assert.throws(() => checkCatalog([{ product_id: 'p', category: 'c', brand: 'b', unit_price_cents: 1.5, title: 't' }]), /unit_price_cents/)
  assert.throws(() => checkCatalog([{ product_id: 'p', category: 'c', brand: 'b', unit_price_cents: 1, title: 't' }, { product_id: 'p', category: 'c', brand: 'b', unit_price_cents: 1, title: 't' }]), /twice/)
  await assert.rejects(startStorefront({ collector: 'http://c', retailer: 'r', key: 'k', streamSecret: 's', catalog: [{ product_id: 'p' }] }), /category/)
})
