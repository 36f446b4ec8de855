#!/usr/bin/env node
// The whole storefront loop on a running stack, in a world of its own (the browser tests'
// test/world.js): fresh topics and ClickHouse database, `basketflow run -w 2`, `basketflow
// collect` (event key, stream secret, CORS for the storefront), the demo tree published for the
// shopper(s), and the storefront's server. Prints the page's address and runs until Ctrl-C (or
// SIGTERM), then stops everything and deletes the topics and the database. It touches none of
// the stack's shared topics, so it can run next to other work on the same stack.
//
//   node examples/storefront/demo.js [--listen 127.0.0.1:8090] [--shopper demo-shopper ...]
//   node examples/storefront/visit.js 'http://127.0.0.1:8090/?shopper=demo-shopper' --clicks 3 --screenshot out.png
//
// The binary, brokers and ClickHouse are found as the tests find them (BASKETFLOW_BIN, ...:
// see test/world.js).
import { parseArgs } from 'node:util'
import { join } from 'node:path'
import { startWorld, freePort, here } from './test/world.js'
import { startStorefront } from './server.js'
import { demoTree } from './tree.js'

const { values } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1:8090' },
    shopper: { type: 'string', multiple: true, default: ['demo-shopper'] },
    'token-ttl-s': { type: 'string', default: '300' }
  }
})
const RETAILER = 'retailer-demo'
const KEY = 'storefront-demo-event-key'
const SECRET = 'storefront-demo-stream-secret-0123456789abcdef'
// The collector must allow the page's origin, so the port is chosen before it starts.
const [host, port] = values.listen.split(/:(?=\d+$)/)
const listen = Number(port) === 0 ? `${host}:${await freePort()}` : values.listen
const origin = `http://${listen}`

const tree = shopper => demoTree(RETAILER, shopper)
console.error('demo: starting the graph and the collector on fresh topics (a few seconds)…')
const world = await startWorld({ name: 'storefront-demo', origins: [origin], retailer: RETAILER, key: KEY, streamSecret: SECRET, log: m => console.error(`demo: ${m}`) })
let store = null
const stop = async () => {
  console.error('demo: stopping, deleting the topics and the database…')
  if (store) await store.close()
  await world.close().catch(e => console.error(`demo: ${e.message}`))
  process.exit(0)
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
try {
  console.error(`demo: ${JSON.stringify(await world.publishTrees(values.shopper.map(tree)))}`)
  store = await startStorefront({
    listen,
    collector: world.collectorUrl,
    retailer: RETAILER,
    key: KEY,
    streamSecret: SECRET,
    catalog: join(here, 'catalog.json'),
    shopper: values.shopper[0],
    tokenTtlS: Number(values['token-ttl-s'])
  })
  console.error(`demo: config ${world.config} (logs in ${world.dir})`)
  for (const s of values.shopper) console.log(`storefront: ${store.url}?shopper=${encodeURIComponent(s)}`)
  console.error('demo: Ctrl-C to stop')
} catch (e) {
  console.error(`demo: ${e.message}`)
  await stop()
}
