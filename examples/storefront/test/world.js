// An isolated world on the shared stack for the storefront's browser tests: topics and a
// ClickHouse database of its own, `basketflow run` and `basketflow collect` on a config file
// naming them, trees published with `basketflow trees publish`, and everything removed by
// `close()` (processes, topics, database), even after a failure.
//
// Environment:
//   BASKETFLOW_BIN              default $CARGO_TARGET_DIR/debug/basketflow
//                               (CARGO_TARGET_DIR default ~/.cache/basketflow/target)
//   BASKETFLOW_KAFKA_BROKERS    default 127.0.0.1:$KAFKA_PORT (9092)
//   BASKETFLOW_CLICKHOUSE_URL   default http://127.0.0.1:8123
//   BASKETFLOW_STACK_DIR        where scripts/stack keeps Kafka (for its admin jars), default <repo>/.stack
//   STOREFRONT_KEEP=1           keep the world (topics, database, logs) after the run, to look at it
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, writeFileSync, appendFileSync, existsSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { tmpdir, homedir } from 'node:os'
import { join } from 'node:path'

export const repo = new URL('../../..', import.meta.url).pathname.replace(/\/$/, '')
export const here = new URL('..', import.meta.url).pathname.replace(/\/$/, '')
export const BIN = process.env.BASKETFLOW_BIN ||
  join(process.env.CARGO_TARGET_DIR || join(homedir(), '.cache/basketflow/target'), 'debug/basketflow')
export const BROKERS = process.env.BASKETFLOW_KAFKA_BROKERS || `127.0.0.1:${process.env.KAFKA_PORT || 9092}`
export const CLICKHOUSE = (process.env.BASKETFLOW_CLICKHOUSE_URL || 'http://127.0.0.1:8123').replace(/\/$/, '')
const KAFKA_LIBS = join(process.env.BASKETFLOW_STACK_DIR || join(repo, '.stack'), 'kafka/libs')

/** Waits for `cond()` (sync or async) to be truthy, checking every 25 ms, for at most `ms`;
 *  returns its value. */
export async function until (what, cond, ms = 30_000) {
  const end = Date.now() + ms
  for (;;) {
    const v = await cond()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}

export async function freePort () {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address()
  await new Promise(resolve => server.close(resolve))
  return port
}

/** The environment of a basketflow process: the binary reads BASKETFLOW_<SECTION>_<KEY>
 *  overrides and refuses any other BASKETFLOW_ variable (such as BASKETFLOW_BIN), so the
 *  config file alone configures it. */
function binaryEnv () {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BASKETFLOW_')))
}

/** Runs a command to its end; resolves {code, stdout, stderr}. */
export function run (cmd, args, { input, env = process.env, timeoutMs = 120_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', d => { stdout += d })
    child.stderr.on('data', d => { stderr += d })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', e => { clearTimeout(timer); reject(e) })
    child.on('close', code => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
    child.stdin.end(input)
  })
}

/** A ClickHouse query over HTTP; resolves the answer's text, rejects with ClickHouse's error. */
export async function clickhouse (sql) {
  const res = await fetch(`${CLICKHOUSE}/`, { method: 'POST', body: sql })
  const text = await res.text()
  if (!res.ok) throw new Error(`ClickHouse: ${text.trim()} (query: ${sql})`)
  return text
}

/** The rows of a query as objects (JSONEachRow). */
export async function rows (sql) {
  const text = await clickhouse(`${sql} FORMAT JSONEachRow`)
  return text.split('\n').filter(Boolean).map(l => JSON.parse(l))
}

/**
 * A long-running child (`basketflow run`, `collect`, or the storefront's server.js) whose
 * stderr (and stdout) go to a log file; `stop(signal)` sends the signal and waits for the exit,
 * resolving the exit code and how long the exit took.
 */
function child (name, cmd, args, { env, dir, onStdout } = {}) {
  const log = join(dir, `${name}.log`)
  writeFileSync(log, '')
  const proc = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  const text = { all: '' }
  const append = d => { text.all += d; try { appendFileSync(log, d) } catch {} }
  proc.stdout.on('data', d => { append(d); if (onStdout) onStdout(String(d)) })
  proc.stderr.on('data', append)
  const exited = once(proc, 'exit')
  return {
    proc,
    log: () => text.all,
    logFile: log,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    async stop (signal = 'SIGTERM', graceMs = 30_000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return { code: proc.exitCode, ms: 0 }
      const started = Date.now()
      proc.kill(signal)
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs)
      await exited
      clearTimeout(timer)
      return { code: proc.exitCode, signal: proc.signalCode, ms: Date.now() - started }
    }
  }
}

/**
 * Starts a world. `origins`: the storefronts' origins the collector allows (CORS); `retailer`,
 * `key`, `streamSecret`: the retailer, its event key and its stream secret; `name`: the prefix
 * of its topics (`<name>-<pid>-<ms>-events`...) and database (the same with `_`).
 * `partitions`: partitions of the events, trees and decisions topics (default 2; the stack's
 * are 8); `flushIntervalMs`: the graph's `[graph] flush_interval_ms` (default 20, the tests';
 * the binary's own default is 250); `tickMs`: the graph's `[graph] tick_ms` (default: the
 * binary's, 5).
 * Returns {config, names, database, collectorUrl, metricsUrl, graph, collector, startCollector(), publishTrees(trees),
 * eventsOf(shopper), close()}.
 */
export async function startWorld ({ origins, retailer, key, streamSecret, name = 'storefront-test', partitions = 2, flushIntervalMs = 20, tickMs = null, idleMarginMs = null, fetchMinBytes = null, log = () => {} }) {
  if (!existsSync(BIN)) throw new Error(`no basketflow binary at ${BIN} (cargo build -p basketflow, or set BASKETFLOW_BIN)`)
  if (!/^[a-z][a-z0-9-]*$/.test(name)) throw new Error(`a world's name is lower-case letters, digits and -, not ${name}`)
  if (!Number.isInteger(partitions) || partitions < 1) throw new Error(`partitions: a positive integer, not ${partitions}`)
  if (!Number.isInteger(flushIntervalMs) || flushIntervalMs < 1) throw new Error(`flushIntervalMs: a positive integer, not ${flushIntervalMs}`)
  if (tickMs !== null && (!Number.isInteger(tickMs) || tickMs < 1)) throw new Error(`tickMs: a positive integer, not ${tickMs}`)
  if (idleMarginMs !== null && (!Number.isInteger(idleMarginMs) || idleMarginMs < 0)) throw new Error(`idleMarginMs: an integer >= 0, not ${idleMarginMs}`)
  if (fetchMinBytes !== null && (!Number.isInteger(fetchMinBytes) || fetchMinBytes < 1)) throw new Error(`fetchMinBytes: a positive integer, not ${fetchMinBytes}`)
  const stamp = `${process.pid}-${Date.now()}`
  const prefix = `${name}-${stamp}`
  const names = {
    events: `${prefix}-events`,
    trees: `${prefix}-trees`,
    decisions: `${prefix}-decisions`,
    rejected: `${prefix}-rejected`,
    privacy: `${prefix}-privacy`
  }
  const database = `${prefix.replace(/-/g, '_')}`
  const dir = mkdtempSync(join(tmpdir(), 'basketflow-storefront-'))
  const [metricsPort, collectorPort] = [await freePort(), await freePort()]
  const collectorUrl = `http://127.0.0.1:${collectorPort}`
  const config = join(dir, 'basketflow.toml')
  const q = s => JSON.stringify(s)
  writeFileSync(config, `# The storefront browser tests' own world (examples/storefront/test/world.js).
[kafka]
brokers = ${q(BROKERS)}
events_topic = ${q(names.events)}
trees_topic = ${q(names.trees)}
decisions_topic = ${q(names.decisions)}
rejected_topic = ${q(names.rejected)}
privacy_topic = ${q(names.privacy)}
${fetchMinBytes === null ? '' : `fetch_min_bytes = ${fetchMinBytes}\n`}
[clickhouse]
url = ${q(CLICKHOUSE)}
database = ${q(database)}

[graph]
# 20 (the tests'): decisions and ClickHouse rows within tens of milliseconds.
flush_interval_ms = ${flushIntervalMs}
# The graph runs once per world, never restarted: no checkpoints.
checkpoint_interval_ms = 0
${tickMs === null ? '' : `tick_ms = ${tickMs}\n`}${idleMarginMs === null ? '' : `idle_margin_ms = ${idleMarginMs}\n`}
[metrics]
listen = "127.0.0.1:${metricsPort}"

[collector]
listen = "127.0.0.1:${collectorPort}"
auth = "keys"
cors_origins = ${JSON.stringify(origins)}
produce_timeout_ms = 5000

[[collector.retailers]]
id = ${q(retailer)}
key_sha256 = "${createHash('sha256').update(key).digest('hex')}"

[[collector.stream_secrets]]
id = ${q(retailer)}
secret = ${q(streamSecret)}
`)

  const procs = []
  let collector = null
  let created = false
  const world = {
    config,
    dir,
    names,
    database,
    collectorUrl,
    /** The graph's /metrics and /health. */
    metricsUrl: `http://127.0.0.1:${metricsPort}`,
    graph: null,
    get collector () { return collector },

    /** Starts `basketflow collect` and waits until it serves events and decision streams. */
    async startCollector () {
      collector = child(`collect-${procs.length}`, BIN, ['collect', '--config', config], { env: binaryEnv(), dir })
      procs.push(collector)
      await until('the collector to serve decision streams', async () => {
        if (!collector.alive()) throw new Error(`the collector exited: ${collector.log()}`)
        try {
          const health = await (await fetch(`${collectorUrl}/health`)).json()
          return health.decisions_stream === 'ready'
        } catch { return false }
      }, 60_000)
      return collector
    },

    /** Publishes `trees` with `basketflow trees publish`; resolves its JSON summary. */
    async publishTrees (trees) {
      const file = join(dir, `trees-${Date.now()}.jsonl`)
      writeFileSync(file, trees.map(t => JSON.stringify(t)).join('\n') + '\n')
      const r = await run(BIN, ['trees', 'publish', '--config', config, '--file', file], { env: binaryEnv() })
      if (r.code !== 0) throw new Error(`trees publish exited ${r.code}: ${r.stderr}${r.stdout}`)
      return JSON.parse(r.stdout.trim().split('\n').at(-1))
    },

    /** The events topic's messages of `shopper`: [{key, value (parsed), raw}], read to the end. */
    async eventsOf (shopper) {
      const r = await run('kcat', ['-b', BROKERS, '-C', '-t', names.events, '-o', 'beginning', '-e', '-q', '-f', '%k\t%s\n'])
      if (r.code !== 0) throw new Error(`kcat: ${r.stderr}`)
      return r.stdout.split('\n').filter(Boolean).map(l => {
        const tab = l.indexOf('\t')
        return { key: l.slice(0, tab), raw: l.slice(tab + 1), value: JSON.parse(l.slice(tab + 1)) }
      }).filter(m => m.key === shopper)
    },

    /** Stops the processes, deletes the topics and the database. */
    async close () {
      for (const p of procs.reverse()) await p.stop('SIGTERM', 15_000).catch(() => {})
      if (process.env.STOREFRONT_KEEP) {
        log(`kept: config ${config}, database ${database}, topics ${prefix}-*`)
        return
      }
      const problems = []
      if (created) {
        // Every topic of the world, the graph's own (-progress, -checkpoints...) included.
        const r = await run('java', ['-cp', `${KAFKA_LIBS}/*`, join(here, 'test/DeleteTopics.java'), BROKERS, `${prefix}-`])
        if (r.code !== 0) problems.push(`topics ${prefix}-* were not deleted: ${r.stderr}`)
        else log(r.stdout.trim())
      }
      await clickhouse(`DROP DATABASE IF EXISTS ${database}`).catch(e => problems.push(`database ${database} was not dropped: ${e.message}`))
      if (!problems.length) rmSync(dir, { recursive: true, force: true })
      else throw new Error(problems.join('; '))
    }
  }

  try {
    // The topics, as scripts/stack's create_topics makes the shared ones.
    const r = await run('java', ['-cp', `${KAFKA_LIBS}/*`, join(repo, 'scripts/kafka/CreateTopics.java'), BROKERS,
      `${names.events}:${partitions}:delete:LogAppendTime`,
      `${names.trees}:${partitions}:compact:LogAppendTime`,
      `${names.decisions}:${partitions}:delete:CreateTime`,
      `${names.rejected}:1:delete:CreateTime`,
      `${names.privacy}:1:delete:LogAppendTime:-1`])
    created = true
    if (r.code !== 0) throw new Error(`CreateTopics.java exited ${r.code}: ${r.stderr}`)

    world.graph = child('run', BIN, ['run', '--config', config, '-w', '2'], { env: binaryEnv(), dir })
    procs.push(world.graph)
    await world.startCollector()
    // The graph is up once its /health answers (200 caught up).
    await until('the graph to be caught up', async () => {
      if (!world.graph.alive()) throw new Error(`basketflow run exited: ${world.graph.log()}`)
      try { return (await fetch(`http://127.0.0.1:${metricsPort}/health`)).status === 200 } catch { return false }
    }, 120_000)
    return world
  } catch (e) {
    await world.close().catch(c => log(c.message))
    throw e
  }
}

/** Starts examples/storefront/server.js as its own process (the CLI); resolves
 *  {url, stop()} once it printed its address. */
export async function startStorefrontProcess (args, dir) {
  let url = null
  const proc = child(`storefront-${Date.now()}`, process.execPath, [join(here, 'server.js'), ...args], {
    env: process.env,
    dir,
    onStdout: d => { const m = d.match(/storefront: (\S+)/); if (m) url = m[1] }
  })
  await until('the storefront to listen', () => {
    if (!proc.alive()) throw new Error(`server.js exited: ${proc.log()}`)
    return url
  }, 10_000)
  return { url, stop: () => proc.stop('SIGTERM', 5_000), log: proc.log }
}
