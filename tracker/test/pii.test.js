// The tracker refuses identifying data with the server's rule: the lists are copied from
// ingest/src/pii.rs, and this test reads that file to keep them equal, with its test cases.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createTracker, PII_EXACT, PII_STEMS, piiKey, looksLikeEmail } from '../src/tracker.js'
import { fakeClock, fakeCollector, deps, pageView, added } from './harness.js'

const rust = readFileSync(new URL('../../ingest/src/pii.rs', import.meta.url), 'utf8')
const contract = readFileSync(new URL('../../ingest/src/contract.rs', import.meta.url), 'utf8')

/** The string literals of the Rust item that starts with `start`, up to the first `end`. */
function strings (start, end, source = rust) {
  const from = source.indexOf(start)
  assert.ok(from >= 0, `${start} not found in the Rust source`)
  const body = source.slice(from + start.length, source.indexOf(end, from + start.length))
  return [...body.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map(m => JSON.parse(`"${m[1]}"`))
}

test('the PII lists equal those of ingest/src/pii.rs', () => {
  assert.deepEqual(PII_EXACT, strings('const EXACT: &[&str] = &[', '];'))
  assert.deepEqual(PII_STEMS, strings('const STEMS: &[&str] = &[', '];'))
  assert.ok(PII_EXACT.length > 30 && PII_STEMS.length > 5)
})

test('piiKey agrees with the Rust tests\' PII and non-PII names', () => {
  const pii = strings('fn recognises_pii_names_whatever_their_spelling', ']')
  // The Rust test's own names, and the contract's fields it takes from `CONTRACT_FIELDS`.
  const clean = strings('fn contract_fields_and_tracker_context_are_not_pii', ']')
    .concat(strings('pub const CONTRACT_FIELDS', '];', contract))
  assert.ok(pii.length > 20 && clean.length > 30)
  for (const k of pii) assert.equal(piiKey(k), true, k)
  for (const k of clean) assert.equal(piiKey(k), false, k)
  for (const k of ['N_A_M_E', 'Ünterschrift_E-Mail', 'Age']) assert.equal(piiKey(k), true, k)
  for (const k of ['catégorie', 'ΕΜΑΙΛ', 'ＥＭＡＩＬ', 'Âge', 'customer_age', '', '__']) assert.equal(piiKey(k), false, k)
})

test('looksLikeEmail agrees with the Rust tests\' cases', () => {
  for (const s of ['a@b.fr', 'mail me: x_y@sub.domain.com.', 'contact jane.doe+shop@example.co.uk please', 'a@b@c.fr']) {
    assert.equal(looksLikeEmail(s), true, s)
  }
  for (const s of ['a@b', '@b.fr', 'a@.fr', 'a@b.1', 'user@localhost', 'price@2.99', 'https://shop.example/@brand/pasta', '50% @ checkout']) {
    assert.equal(looksLikeEmail(s), false, s)
  }
})

test('identifying fields and email addresses are refused on the client, at any depth, and never sent', async () => {
  const clock = fakeClock()
  const collector = fakeCollector(clock)
  const t = createTracker(deps(clock, collector))
  t.identify('loyalty-42')
  assert.throws(() => t.track('page_viewed', { ...pageView, email: 'x' }), /basketflow.track\("page_viewed"\): field "email" carries identifying or socio-demographic data/)
  assert.throws(() => t.track('page_viewed', { ...pageView, context: { 'First-Name': 'Jo' } }), /field "context.First-Name" carries identifying/)
  assert.throws(() => t.track('product_added', { ...added, product: { ...added.product, birth_date: '1990-01-01' } }), /field "product.birth_date" carries identifying/)
  assert.throws(() => t.track('page_viewed', { ...pageView, tags: [{ gender: 'f' }] }), /field "tags.0.gender" carries identifying/)
  assert.throws(() => t.track('search_performed', { query: 'jo@shop.example' }), /query contains an email address/)
  assert.throws(() => t.identify('jo@shop.example'), /not an email/)
  assert.equal(t.pending(), 0)
  await clock.advance(10_000)
  assert.equal(collector.calls.length, 0)
  // Names that only look alike pass, as on the server.
  t.track('page_viewed', { ...pageView, page_title: 'Pasta', product_title: 'Penne', usage: 'x' })
  assert.equal(t.pending(), 1)
})
