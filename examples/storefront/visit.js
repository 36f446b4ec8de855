#!/usr/bin/env node
// A headless visit of the storefront, for the demo: opens the page in headless Chromium, clicks
// the Add button of N products (the catalog's first N, in order, wrapping around), waits after
// each click for the decision it causes, prints one line per decision the widget shows (kind,
// params, ms from the click to the decision painted: see showDecision in public/storefront.js),
// and saves a screenshot.
//
//   node examples/storefront/visit.js 'http://127.0.0.1:8090/?shopper=demo-shopper' --clicks 3 --screenshot out.png
//
// Options: --clicks N (default 3), --screenshot FILE (default storefront.png), --timeout-ms MS
// (the wait for each click's decision, default 10000), --chromium PATH (default /usr/bin/chromium,
// or STOREFRONT_CHROMIUM).
// Exit status: 0 when at least one decision was shown, 1 when none arrived within the timeout,
// 2 on a usage error or a page that did not start.
import { parseArgs } from 'node:util'
import puppeteer from 'puppeteer-core'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    clicks: { type: 'string', default: '3' },
    screenshot: { type: 'string', default: 'storefront.png' },
    'timeout-ms': { type: 'string', default: '10000' },
    chromium: { type: 'string', default: process.env.STOREFRONT_CHROMIUM || '/usr/bin/chromium' }
  }
})
const clicks = Number(values.clicks)
const timeout = Number(values['timeout-ms'])
if (positionals.length !== 1 || !Number.isInteger(clicks) || clicks < 1 || !(timeout > 0)) {
  console.error('usage: node visit.js URL [--clicks N] [--screenshot out.png] [--timeout-ms 10000] [--chromium /usr/bin/chromium]')
  process.exit(2)
}

const browser = await puppeteer.launch({ executablePath: values.chromium, headless: true, args: ['--no-sandbox'] })
let status = 0
try {
  const page = await browser.newPage()
  await page.setViewport({ width: 1280, height: 900 })
  page.on('pageerror', e => console.error(`page error: ${e.message}`))
  await page.goto(positionals[0])
  await page.waitForFunction(() => window.storefront && window.storefront.phase !== 'loading', { timeout: 30_000 })
  const start = await page.evaluate(() => ({ phase: window.storefront.phase, error: window.storefront.error, shopper: window.storefront.session && window.storefront.session.shopper_id }))
  if (start.phase !== 'ready') throw new Error(`the storefront did not start: ${start.error}`)
  try {
    await page.waitForFunction(() => window.storefront.status === 'live', { timeout })
  } catch {
    console.error(`the decisions stream is not live after ${timeout} ms (status ${await page.evaluate(() => window.storefront.status)}); clicking anyway`)
  }
  console.error(`visiting as ${start.shopper}: ${clicks} click(s)`)
  const shownBefore = await page.evaluate(() => window.storefront.decisions.length)
  const buttons = await page.$$eval('.product button[data-action="add"]', bs => bs.map(b => b.dataset.productId))
  for (let i = 0; i < clicks; i++) {
    const product = buttons[i % buttons.length]
    const n = await page.evaluate(() => window.storefront.events.length)
    await page.click(`.product[data-product-id="${product}"] button[data-action="add"]`)
    await page.waitForFunction(n => window.storefront.events.length > n, { timeout: 5_000 }, n)
    const event = await page.evaluate(() => window.storefront.events.at(-1).event_id)
    try {
      // Its decision painted (the latency is recorded after the paint).
      await page.waitForFunction(id => window.storefront.latencies.some(l => l.event_id === id), { timeout }, event)
    } catch {
      console.error(`click ${i + 1} (add ${product}): no decision within ${timeout} ms`)
    }
  }
  const { decisions, latencies } = await page.evaluate(() => ({ decisions: window.storefront.decisions, latencies: window.storefront.latencies }))
  for (const d of decisions.slice(shownBefore)) {
    const l = latencies.find(x => x.decision_id === d.decision_id)
    console.log(`${d.experience.kind}\t${JSON.stringify(d.experience.params)}\t${l ? `${l.ms.toFixed(1)} ms from click` : 'not caused by a click of this visit'}`)
  }
  await page.screenshot({ path: values.screenshot, fullPage: true })
  console.error(`screenshot: ${values.screenshot}`)
  if (decisions.length === shownBefore) {
    console.error('no decision arrived')
    status = 1
  }
} catch (e) {
  console.error(`visit: ${e.message}`)
  status = 2
} finally {
  await browser.close()
}
process.exit(status)
