#!/usr/bin/env node
// The shopper's latency, measured where the shopper sits: a click in headless Chromium on the
// demo storefront -> the tracker -> `basketflow collect` -> Kafka -> `basketflow run` -> the
// decision on the decisions topic -> the collector's SSE stream -> the "For you" widget, painted
// (public/storefront.js `showDecision`: from the start of the click's handler to a frame painted
// with the decision in the DOM). Open loop, while the graph carries background traffic from the
// generator at each rate.
//
//   node examples/storefront/bench/latency.js [--rates 0,1000,10000] [--clicks 300]
//     [--click-interval-ms 200] [--warmup-s 5] [--wait-ms 30000] [--partitions 8]
//     [--flush-interval-ms 250] [--tick-ms 5] [--idle-margin-ms 5] [--fetch-min-bytes 1]
//     [--shoppers 10000] [--click-mode dom|mouse]
//     [--out target/bench-storefront/results.json]
//
// One world (test/world.js: its own topics, database, `basketflow run -w 2`, `basketflow
// collect`) for the whole run; per rate a fresh page (its own browser context and shopper, so
// the widget's list starts empty), a `generate --rate R --start now` in the background, a
// warm-up, then N clicks due at start + k * interval whatever happened to the earlier ones
// (each sent over CDP at its due time; the page records each handler's start itself), then a
// bounded wait for every click's decision. Clicks alternate Add and Remove of one product over a
// basket that always holds another one, so every click decides a tension cart (the tree's `cart`
// node loops on itself) and the basket stays bounded. The page's widget keeps its 20 newest
// decisions (WIDGET_KEPT in public/storefront.js).
//
// Needs what the browser tests need (README.md: the stack, the built binaries, Chromium, kcat).
// Everything it started is removed at the end, after a failure or Ctrl-C too.
import { parseArgs } from 'node:util'
import { spawn } from 'node:child_process'
import { readFileSync, readdirSync, mkdirSync, writeFileSync, statSync } from 'node:fs'
import { join, dirname, resolve } from 'node:path'
import { cpus, totalmem } from 'node:os'
import puppeteer from 'puppeteer-core'
import { startWorld, freePort, run, repo, here, BIN, BROKERS } from '../test/world.js'
import { startStorefront } from '../server.js'

const { values } = parseArgs({
  options: {
    rates: { type: 'string', default: '0,1000,10000' },
    clicks: { type: 'string', default: '300' },
    'click-interval-ms': { type: 'string', default: '200' },
    'warmup-s': { type: 'string', default: '5' },
    'wait-ms': { type: 'string', default: '30000' },
    partitions: { type: 'string', default: '8' },
    'flush-interval-ms': { type: 'string', default: '250' },
    'tick-ms': { type: 'string', default: '5' },
    'idle-margin-ms': { type: 'string', default: '5' },
    'fetch-min-bytes': { type: 'string', default: '1' },
    shoppers: { type: 'string', default: '10000' },
    'click-mode': { type: 'string', default: 'dom' },
    'bad-share': { type: 'string', default: '0.03' },
    'duplicate-share': { type: 'string', default: '0.02' },
    out: { type: 'string', default: join(repo, 'target/bench-storefront/results.json') },
    generate: { type: 'string', default: process.env.BASKETFLOW_GENERATE_BIN || join(dirname(BIN), 'generate') },
    chromium: { type: 'string', default: process.env.STOREFRONT_CHROMIUM || '/usr/bin/chromium' }
  }
})
const int = (name, min = 0) => {
  const v = Number(values[name])
  if (!Number.isInteger(v) || v < min) { console.error(`--${name}: an integer >= ${min}, not ${values[name]}`); process.exit(2) }
  return v
}
const rates = values.rates.split(',').map(Number)
if (!rates.length || rates.some(r => !Number.isInteger(r) || r < 0)) { console.error(`--rates: integers >= 0, not ${values.rates}`); process.exit(2) }
if (!['dom', 'mouse'].includes(values['click-mode'])) { console.error(`--click-mode: dom or mouse, not ${values['click-mode']}`); process.exit(2) }
const settings = {
  rates,
  clicks: int('clicks', 1),
  click_interval_ms: int('click-interval-ms', 1),
  warmup_s: int('warmup-s'),
  wait_ms: int('wait-ms', 1),
  partitions: int('partitions', 1),
  flush_interval_ms: int('flush-interval-ms', 1),
  tick_ms: int('tick-ms', 1),
  idle_margin_ms: int('idle-margin-ms'),
  fetch_min_bytes: int('fetch-min-bytes', 1),
  shoppers: int('shoppers', 1),
  click_mode: values['click-mode'],
  bad_share: Number(values['bad-share']),
  duplicate_share: Number(values['duplicate-share']),
  workers: 2,
  binary: BIN,
  generate: values.generate,
  brokers: BROKERS
}

const RETAILER = 'retailer-storefront'
const KEY = 'storefront-bench-event-key'
const SECRET = 'storefront-bench-stream-secret-0123456789abcdef'
const CATALOG_FILE = join(here, 'catalog.json')
/** In the basket from before the first measured click to the end: every measured click leaves
 *  the basket non-empty, so each one decides. Neither is a pasta (no recommendation). */
const KEPT = 'sf-parmigiano'
/** Added by the even clicks, removed by the odd ones. */
const TOGGLED = 'sf-focaccia'
const stamp = `${process.pid}-${Date.now()}`
const shopperOf = i => `sf-bench-${stamp}-${i}`
const log = m => console.error(`# ${m}`)
const sleep = ms => new Promise(resolve => setTimeout(resolve, Math.max(0, ms)))

/** The tree of each bench shopper: `cart` (basket worth at least 1 cent -> tension cart) loops
 *  on itself, so every event with a non-empty basket decides. */
const tree = shopper => ({
  tree_id: 'storefront-bench',
  version: 1,
  retailer_id: RETAILER,
  shopper_id: shopper,
  root: 'start',
  nodes: [
    { id: 'start', children: ['cart'] },
    {
      id: 'cart',
      conditions: [{ basket_value_at_least: { cents: 1 } }],
      experience: { kind: 'tension_cart', params: { threshold_cents: 2000, reward_cents: 300 } },
      children: ['cart']
    }
  ]
})

// ---------------------------------------------------------------------------------------------
// Statistics, CPU and metrics.

/** Nearest-rank percentile of sorted `xs`. */
const pct = (xs, p) => xs.length ? xs[Math.min(xs.length - 1, Math.max(0, Math.ceil(p / 100 * xs.length) - 1))] : null
const round1 = x => x === null || x === undefined ? null : Math.round(x * 10) / 10
function summary (values) {
  const xs = values.filter(x => Number.isFinite(x)).sort((a, b) => a - b)
  if (!xs.length) return { n: 0 }
  return { n: xs.length, p50: round1(pct(xs, 50)), p95: round1(pct(xs, 95)), p99: round1(pct(xs, 99)), max: round1(xs.at(-1)), mean: round1(xs.reduce((a, b) => a + b, 0) / xs.length) }
}

const TICK = 100 // USER_HZ on Linux
/** Machine CPU: [busy, total] jiffies over all cores. */
function machineCpu () {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const total = f.reduce((a, b) => a + b, 0)
  return { busy: total - f[3] - f[4], total }
}
/** Every process's CPU (utime + stime, jiffies), parent and command line, read from /proc. */
function processes () {
  const out = new Map()
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8')
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ')
      out.set(Number(d), { ppid: Number(rest[1]), cpu: Number(rest[11]) + Number(rest[12]), cmd })
    } catch {}
  }
  return out
}
/** CPU seconds of the processes of interest, by group. */
function cpuByGroup (pids) {
  const ps = processes()
  const groupOf = new Map()
  for (const [pid, p] of ps) {
    if (pid === pids.graph) groupOf.set(pid, 'graph')
    else if (pid === pids.collector) groupOf.set(pid, 'collector')
    else if (pid === pids.generate) groupOf.set(pid, 'generate')
    else if (pid === process.pid) groupOf.set(pid, 'bench (node)')
    else if (p.cmd.includes('kafka.Kafka')) groupOf.set(pid, 'kafka')
    else if (p.cmd.includes('clickhouse')) groupOf.set(pid, 'clickhouse')
  }
  // Chromium: the browser and its descendants.
  const inBrowser = pid => { for (let p = pid, n = 0; p > 1 && n < 20; p = ps.get(p)?.ppid, n++) if (p === pids.browser) return true; return false }
  for (const pid of ps.keys()) if (!groupOf.has(pid) && pids.browser && inBrowser(pid)) groupOf.set(pid, 'chromium')
  const g = {}
  let other = 0
  for (const [pid, p] of ps) {
    const name = groupOf.get(pid)
    if (name) g[name] = (g[name] || 0) + p.cpu
    else other += p.cpu
  }
  g.other = other
  return g
}
function cpuDelta (a, b, seconds) {
  const out = {}
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    // A process that exited (or began) in between: its jiffies at the other end are unknown.
    if (a[k] === undefined || b[k] === undefined) continue
    out[k] = Math.round((b[k] - a[k]) / TICK / seconds * 100) // % of one core
  }
  return out
}

/** The graph's /metrics, summed over labels: name -> value. */
async function metrics (url) {
  const text = await (await fetch(`${url}/metrics`)).text()
  const m = {}
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/)
    if (match && !match[1].endsWith('_bucket')) m[match[1]] = (m[match[1]] || 0) + Number(match[3])
  }
  return m
}

// ---------------------------------------------------------------------------------------------
// The page.

/** Runs before the page's own scripts: records when each SSE `decision` reaches the page
 *  (performance.now(), before the page's own listener parses and renders it). */
function receiveHook () {
  const Native = window.EventSource
  const received = window.__benchReceived = new Map()
  window.EventSource = class extends Native {
    constructor (...args) {
      super(...args)
      this.addEventListener('decision', e => {
        const at = performance.now()
        try {
          const id = JSON.parse(e.data).decision_id
          if (!received.has(id)) received.set(id, at)
        } catch {}
      })
    }
  }
}

async function openPage (browser, url, shopper) {
  const context = await browser.createBrowserContext()
  const page = await context.newPage()
  await page.setViewport({ width: 1280, height: 900 })
  const errors = []
  page.on('pageerror', e => errors.push(e.message))
  await page.evaluateOnNewDocument(receiveHook)
  await page.goto(`${url}?shopper=${encodeURIComponent(shopper)}`)
  await page.waitForFunction(() => window.storefront &&
    (window.storefront.phase === 'failed' || (window.storefront.phase === 'ready' && window.storefront.status === 'live')), { timeout: 30_000 })
  const phase = await page.evaluate(() => window.storefront.phase)
  if (phase !== 'ready') throw new Error(`the storefront did not start: ${await page.evaluate(() => window.storefront.error)}`)
  return { page, context, errors }
}

const addButton = id => `.product[data-product-id="${id}"] button[data-action="add"]`
const removeButton = id => `#basket-lines .line[data-product-id="${id}"] button[data-action="remove"]`

// ---------------------------------------------------------------------------------------------
// One rate.

/** Starts the generator at `rate` for `seconds`; resolves {child, done: Promise<summary>}. */
function startGenerate (world, rate, seconds, seed) {
  const args = ['--rate', String(rate), '--events', String(Math.ceil(rate * seconds)), '--start', 'now',
    '--topic', world.names.events, '--brokers', BROKERS, '--shoppers', String(settings.shoppers), '--seed', String(seed),
    '--bad-share', String(settings.bad_share), '--duplicate-share', String(settings.duplicate_share)]
  const child = spawn(settings.generate, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', d => { stderr += d })
  const done = new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', code => {
      const last = stderr.trim().split('\n').filter(l => l.startsWith('{')).at(-1)
      let s = null
      try { s = JSON.parse(last) } catch {}
      if (code !== 0 || !s) reject(new Error(`generate exited ${code}: ${stderr.slice(-2000)}`))
      else resolve(s)
    })
  })
  done.catch(() => {})
  return { child, args, done }
}

async function measureRate (ctx, rate, index) {
  const { world, browser, storefront, pids } = ctx
  const shopper = shopperOf(index)
  const clicks = settings.clicks
  const interval = settings.click_interval_ms
  const clickSeconds = clicks * interval / 1000
  log(`rate ${rate}/s: ${clicks} clicks every ${interval} ms as ${shopper}`)
  const { page, context, errors } = await openPage(browser, storefront.url, shopper)
  let gen = null
  try {
    // The basket's permanent line (its decision is not measured).
    await page.click(addButton(KEPT))
    await page.waitForFunction(() => window.storefront.latencies.length === 1, { timeout: 30_000 })
    const setupIds = new Set(await page.evaluate(() => [...window.storefront.clicks.keys()]))

    // The background, long enough to cover the warm-up, the clicks and the wait for the last
    // decisions (a generator that ends early changes the load the last clicks see).
    if (rate > 0) {
      gen = startGenerate(world, rate, settings.warmup_s + clickSeconds + 10, 1 + index)
      pids.generate = gen.child.pid
    }
    await sleep(settings.warmup_s * 1000)

    const cpu0 = machineCpu()
    const groups0 = cpuByGroup(pids)
    const m0 = await metrics(world.metricsUrl)
    const t0 = performance.now()
    // Sample the graph's lag while the clicks run.
    const lag = { frontier_s: 0, consumer_messages: 0, outputs_committed_s: 0 }
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        try {
          const m = await metrics(world.metricsUrl)
          lag.frontier_s = Math.max(lag.frontier_s, m.basketflow_frontier_lag_seconds || 0)
          lag.consumer_messages = Math.max(lag.consumer_messages, m.basketflow_consumer_lag_messages || 0)
          lag.outputs_committed_s = Math.max(lag.outputs_committed_s, m.basketflow_kafka_outputs_committed_lag_seconds || 0)
        } catch {}
        await sleep(1000)
      }
    })()

    // Open loop: click k is due at start + k * interval, whatever happened to the earlier ones.
    // `dom`: one CDP Runtime.evaluate per click, sent at its due time without waiting for the
    // earlier ones (CDP keeps their order): `button.click()` runs the page's own handler, which
    // records its start. `mouse`: puppeteer's page.click (scroll, box, mouse move/down/up), one
    // after another (two mouse sequences must not interleave), several round trips each. Either
    // way the latency starts at the handler; how late each handler ran is `dispatch_lag_ms`.
    const start = Date.now() + 50
    const dueOf = new Map()
    const failures = []
    const pending = []
    let chain = Promise.resolve()
    for (let k = 0; k < clicks; k++) {
      const at = start + k * interval
      await sleep(at - Date.now())
      const selector = k % 2 === 0 ? addButton(TOGGLED) : removeButton(TOGGLED)
      if (settings.click_mode === 'dom') {
        pending.push(page.evaluate(sel => {
          const button = document.querySelector(sel)
          if (!button) return null
          const n = window.storefront.events.length
          button.click()
          return window.storefront.events.length > n ? window.storefront.events.at(-1).event_id : null
        }, selector).then(id => {
          if (id) dueOf.set(id, at)
          else failures.push(`click ${k}: ${selector} tracked nothing`)
        }, e => failures.push(`click ${k}: ${e.message}`)))
      } else {
        chain = chain.then(async () => {
          const n = await page.evaluate(() => window.storefront.events.length)
          await page.click(selector)
          const id = await page.evaluate(n => window.storefront.events.length > n ? window.storefront.events.at(-1).event_id : null, n)
          if (id) dueOf.set(id, at)
          else failures.push(`click ${k}: ${selector} tracked nothing`)
        }).catch(e => { failures.push(`click ${k}: ${e.message}`) })
      }
    }
    await chain
    await Promise.all(pending)
    const clickEnd = performance.now()
    const cpu1 = machineCpu()
    const groups1 = cpuByGroup(pids)
    const m1 = await metrics(world.metricsUrl)
    sampling = false
    await sampler

    // Every click's decision, within the bound.
    const waitStart = Date.now()
    const measured = () => page.evaluate(() => window.storefront.latencies.length >= window.storefront.clicks.size)
    while (!(await measured()) && Date.now() - waitStart < settings.wait_ms) await sleep(100)

    const data = await page.evaluate(() => ({
      timeOrigin: performance.timeOrigin,
      clicks: [...window.storefront.clicks],
      latencies: window.storefront.latencies,
      received: [...window.__benchReceived],
      events: window.storefront.events.map(e => ({ event_id: e.event_id, type: e.type, occurred_at: e.occurred_at })),
      shown: window.storefront.decisions.length
    }))
    let generated = null
    if (gen) {
      // It was sized to run past the wait; no need to let it finish.
      const timer = setTimeout(() => gen.child.kill('SIGTERM'), 30_000)
      generated = await gen.done.catch(e => ({ error: e.message }))
      clearTimeout(timer)
      pids.generate = null
    }

    const clickList = data.clicks.filter(([id]) => !setupIds.has(id))
    const latencyOf = new Map(data.latencies.map(l => [l.event_id, l]))
    const receivedAt = new Map(data.received)
    const occurredAt = new Map(data.events.map(e => [e.event_id, Date.parse(e.occurred_at)]))
    const perClick = clickList.map(([eventId, handlerAt], k) => {
      const l = latencyOf.get(eventId)
      return {
        k,
        event_id: eventId,
        due_ms: dueOf.get(eventId) ?? null,
        click_ms: data.timeOrigin + handlerAt,
        occurred_ms: occurredAt.get(eventId) ?? null,
        decision_id: l ? l.decision_id : null,
        visible_ms: l ? l.ms : null,
        received_ms: l && receivedAt.has(l.decision_id) ? data.timeOrigin + receivedAt.get(l.decision_id) : null
      }
    })
    const seconds = (clickEnd - t0) / 1000
    const machine = Math.round((cpu1.busy - cpu0.busy) / (cpu1.total - cpu0.total) * 100)
    return {
      rate,
      shopper,
      clicks: clickList.length,
      clicks_due: clicks,
      click_failures: failures,
      page_errors: errors,
      decisions: perClick.filter(c => c.visible_ms !== null).length,
      missing: perClick.filter(c => c.visible_ms === null).length,
      shown_in_widget: data.shown,
      click_phase_s: round1(seconds),
      dispatch_lag_ms: summary(perClick.filter(c => c.due_ms !== null).map(c => c.click_ms - c.due_ms)),
      generate: generated,
      generate_args: gen ? gen.args : null,
      cpu_percent: { machine_of_all_cores: machine, cores: cpus().length, by_group_of_one_core: cpuDelta(groups0, groups1, seconds) },
      graph: {
        messages_consumed: Math.round((m1.basketflow_messages_consumed_total || 0) - (m0.basketflow_messages_consumed_total || 0)),
        events_rejected: Math.round((m1.basketflow_events_rejected_total || 0) - (m0.basketflow_events_rejected_total || 0)),
        messages_clamped: Math.round((m1.basketflow_messages_clamped_total || 0) - (m0.basketflow_messages_clamped_total || 0)),
        decisions: Math.round((m1.basketflow_decisions_total || 0) - (m0.basketflow_decisions_total || 0)),
        max_frontier_lag_s: lag.frontier_s,
        max_consumer_lag_messages: lag.consumer_messages,
        max_outputs_committed_lag_s: lag.outputs_committed_s
      },
      per_click: perClick
    }
  } finally {
    if (gen && gen.child.exitCode === null && gen.child.signalCode === null) gen.child.kill('SIGTERM')
    pids.generate = null
    await context.close().catch(() => {})
  }
}

// ---------------------------------------------------------------------------------------------
// The server side of the same decisions: the decisions topic's records with their stage headers.

async function decisionRecords (world) {
  const r = await run('kcat', ['-b', BROKERS, '-C', '-t', world.names.decisions, '-o', 'beginning', '-e', '-q',
    '-X', 'isolation.level=read_committed', '-f', '%T\t%h\t%s\n'], { timeoutMs: 60_000 })
  if (r.code !== 0) throw new Error(`kcat: ${r.stderr}`)
  const out = new Map()
  for (const line of r.stdout.split('\n').filter(Boolean)) {
    const [ts, headers, ...rest] = line.split('\t')
    const d = JSON.parse(rest.join('\t'))
    const h = Object.fromEntries(headers.split(',').map(kv => { const i = kv.indexOf('='); return [kv.slice(0, i), kv.slice(i + 1)] }))
    out.set(d.decision_id, {
      record_ms: Number(ts),
      time: d.time,
      decided_ms: Number(h['basketflow-decided-ms']),
      handed_ms: Number(h['basketflow-handed-ms']),
      decided_at: d.decided_at,
      caused_by: d.caused_by.event_id
    })
  }
  return out
}

/** Splits each matched click's latency into stages (epoch ms; `time` is the event's broker
 *  append time rounded up to the graph's 5 ms tick). */
function stages (result, records) {
  const s = { click_to_appended: [], appended_to_decided: [], decided_to_handed: [], handed_to_received: [], received_to_visible: [], occurred_to_decided_at: [] }
  let unmatched = 0
  for (const c of result.per_click) {
    if (c.visible_ms === null) continue
    const r = records.get(c.decision_id)
    if (!r || r.caused_by !== c.event_id) { unmatched++; continue }
    Object.assign(c, { appended_ms: r.time, decided_ms: r.decided_ms, handed_ms: r.handed_ms, record_ms: r.record_ms })
    s.click_to_appended.push(r.time - c.click_ms)
    s.appended_to_decided.push(r.decided_ms - r.time)
    s.decided_to_handed.push(r.handed_ms - r.decided_ms)
    // The tracker's occurred_at (the page's Date.now() at track) to the record's decided_at.
    if (c.occurred_ms !== null) s.occurred_to_decided_at.push(Date.parse(r.decided_at) - c.occurred_ms)
    if (c.received_ms !== null) {
      s.handed_to_received.push(c.received_ms - r.handed_ms)
      s.received_to_visible.push(c.click_ms + c.visible_ms - c.received_ms)
    }
  }
  result.stages_ms = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, summary(v)]))
  result.stages_unmatched = unmatched
}

// ---------------------------------------------------------------------------------------------

function table (results) {
  const f = x => x === null || x === undefined ? '-' : String(x)
  const lines = [
    '| background (events/s) | achieved | clicks | decisions | missing | p50 | p95 | p99 | max (ms, click -> visible) | server p50 / p95 (appended -> decided) | handed -> page p50 / p95 | machine CPU |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |'
  ]
  for (const r of results) {
    const v = r.visible_ms
    const achieved = r.generate ? (r.generate.error ? 'failed' : `${r.generate.rate}`) : '-'
    const st = r.stages_ms || {}
    const ad = st.appended_to_decided || {}
    const hr = st.handed_to_received || {}
    lines.push(`| ${r.rate} | ${achieved} | ${r.clicks} | ${r.decisions} | ${r.missing} | ${f(v.p50)} | ${f(v.p95)} | ${f(v.p99)} | ${f(v.max)} | ${f(ad.p50)} / ${f(ad.p95)} | ${f(hr.p50)} / ${f(hr.p95)} | ${r.cpu_percent.machine_of_all_cores}% |`)
  }
  lines.push('', '| background | click -> appended | appended -> decided | decided -> handed | handed -> received | received -> visible |', '| --- | --- | --- | --- | --- | --- |')
  for (const r of results) {
    const st = r.stages_ms || {}
    const c = k => st[k] && st[k].n ? `${st[k].p50} / ${st[k].p95} / ${st[k].p99}` : '-'
    lines.push(`| ${r.rate} | ${c('click_to_appended')} | ${c('appended_to_decided')} | ${c('decided_to_handed')} | ${c('handed_to_received')} | ${c('received_to_visible')} |`)
  }
  return lines.join('\n')
}

async function main () {
  const ctx = { world: null, browser: null, storefront: null, pids: {} }
  let stopping = false
  const cleanup = async () => {
    if (ctx.pids.generate) try { process.kill(ctx.pids.generate, 'SIGTERM') } catch {}
    if (ctx.browser) await ctx.browser.close().catch(e => log(`browser: ${e.message}`))
    if (ctx.storefront) await ctx.storefront.close().catch(e => log(`storefront: ${e.message}`))
    if (ctx.world) await ctx.world.close().catch(e => log(`world: ${e.message}`))
    ctx.browser = ctx.storefront = ctx.world = null
  }
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, async () => {
      if (stopping) return
      stopping = true
      log(`${sig}: cleaning up`)
      await cleanup()
      process.exit(130)
    })
  }
  const began = new Date()
  try {
    const port = await freePort()
    const origin = `http://127.0.0.1:${port}`
    ctx.world = await startWorld({ origins: [origin], retailer: RETAILER, key: KEY, streamSecret: SECRET, name: 'storefront-bench',
      partitions: settings.partitions, flushIntervalMs: settings.flush_interval_ms, tickMs: settings.tick_ms,
      idleMarginMs: settings.idle_margin_ms, fetchMinBytes: settings.fetch_min_bytes, log })
    ctx.pids.graph = ctx.world.graph.proc.pid
    ctx.pids.collector = ctx.world.collector.proc.pid
    const config = readFileSync(ctx.world.config, 'utf8')
    log(`world: topics ${ctx.world.names.events} (${settings.partitions} partitions)..., database ${ctx.world.database}`)
    log(`settings: ${JSON.stringify(settings)}`)
    log(`graph: [graph] flush_interval_ms = ${settings.flush_interval_ms}, tick_ms = ${settings.tick_ms}, idle_margin_ms = ${settings.idle_margin_ms}, checkpoint_interval_ms = 0; [kafka] fetch_min_bytes = ${settings.fetch_min_bytes}; the rest the binary's defaults (delivery exactly_once); basketflow run -w 2`)
    const summaryOfTrees = await ctx.world.publishTrees(rates.map((_, i) => tree(shopperOf(i))))
    if (summaryOfTrees.failures) throw new Error(`trees publish: ${JSON.stringify(summaryOfTrees)}`)
    ctx.storefront = await startStorefront({ listen: `127.0.0.1:${port}`, collector: ctx.world.collectorUrl, retailer: RETAILER,
      key: KEY, streamSecret: SECRET, catalog: CATALOG_FILE })
    ctx.browser = await puppeteer.launch({ executablePath: values.chromium, headless: true, args: ['--no-sandbox'] })
    ctx.pids.browser = ctx.browser.process().pid
    const version = await ctx.browser.version()

    const results = []
    for (const [i, rate] of rates.entries()) {
      const r = await measureRate(ctx, rate, i)
      r.visible_ms = summary(r.per_click.map(c => c.visible_ms).filter(x => x !== null))
      results.push(r)
      log(`rate ${rate}: ${r.decisions}/${r.clicks} decisions, ${r.missing} missing, click -> visible ${JSON.stringify(r.visible_ms)}; generate ${JSON.stringify(r.generate && { rate: r.generate.rate, max_schedule_lag_ms: r.generate.max_schedule_lag_ms, error: r.generate.error })}; CPU ${JSON.stringify(r.cpu_percent)}; graph ${JSON.stringify(r.graph)}`)
    }
    const records = await decisionRecords(ctx.world)
    for (const r of results) stages(r, records)

    const md = table(results)
    console.log(md)
    const out = resolve(values.out)
    mkdirSync(dirname(out), { recursive: true })
    writeFileSync(out, JSON.stringify({
      began: began.toISOString(),
      ended: new Date().toISOString(),
      command: `node examples/storefront/bench/latency.js ${process.argv.slice(2).join(' ')}`.trim(),
      machine: { cores: cpus().length, cpu: cpus()[0].model, memory_gib: Math.round(totalmem() / 2 ** 30) },
      binary_mtime: statSync(BIN).mtime.toISOString(),
      chromium: version,
      settings,
      config,
      table: md,
      results
    }, null, 2) + '\n')
    log(`wrote ${out}`)
  } finally {
    await cleanup()
  }
}

main().catch(e => { console.error(`bench: ${e.stack || e.message}`); process.exitCode = 1 })
