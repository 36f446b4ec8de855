// The tracker stays small: the browser build (src/browser.js bundled, minified by esbuild) is
// under 4 KiB gzipped at level 9. `npm run -s size` prints the figure the README quotes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { gzipSync } from 'node:zlib'
import { build } from 'esbuild'

const BOUND = 4096

test(`the minified, gzipped browser build is under ${BOUND} bytes`, async t => {
  const out = await build({
    entryPoints: [new URL('../src/browser.js', import.meta.url).pathname],
    bundle: true, minify: true, format: 'esm', target: 'es2020', write: false
  })
  const js = out.outputFiles[0].contents
  const gz = gzipSync(js, { level: 9 }).length
  t.diagnostic(`minified ${js.length} bytes, gzipped ${gz} bytes`)
  assert.ok(gz < BOUND, `the tracker is ${gz} bytes gzipped, over ${BOUND}`)
  // The build attaches window.basketflow and carries no runtime dependency.
  assert.match(new TextDecoder().decode(js), /window\.basketflow=/)
  assert.doesNotMatch(new TextDecoder().decode(js), /\brequire\(|from"/)
})
