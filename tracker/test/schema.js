// A minimal JSON Schema checker for the keywords schema/shopper-event.schema.json uses (and
// only those: an unknown keyword fails loudly, so a schema change cannot pass unnoticed).
import { readFileSync } from 'node:fs'

export const schema = JSON.parse(readFileSync(new URL('../../schema/shopper-event.schema.json', import.meta.url)))

const KNOWN = new Set(['$schema', '$id', 'title', 'description', '$defs', '$ref', 'type', 'required',
  'properties', 'allOf', 'if', 'then', 'enum', 'const', 'minLength', 'maxLength', 'pattern',
  'minimum', 'maximum', 'minItems', 'items', 'format'])

const typeOf = v => v === null ? 'null' : Array.isArray(v) ? 'array'
  : Number.isInteger(v) ? 'integer' : typeof v

/** The errors of `v` against `s` (empty when valid). */
export function errors (v, s = schema, path = '') {
  const out = []
  for (const k of Object.keys(s)) if (!KNOWN.has(k)) throw new Error(`schema keyword ${k} is not understood by test/schema.js`)
  if (s.$ref) {
    const name = s.$ref.replace('#/$defs/', '')
    out.push(...errors(v, schema.$defs[name], path))
  }
  if (s.type) {
    const types = [].concat(s.type)
    const t = typeOf(v)
    if (!types.includes(t) && !(t === 'integer' && types.includes('number'))) {
      out.push(`${path}: ${t} is not ${types.join('|')}`)
      return out
    }
  }
  if (s.enum && !s.enum.includes(v)) out.push(`${path}: not in enum`)
  if ('const' in s && s.const !== v) out.push(`${path}: not ${s.const}`)
  if (typeof v === 'string') {
    const n = [...v].length
    if (s.minLength !== undefined && n < s.minLength) out.push(`${path}: shorter than ${s.minLength}`)
    if (s.maxLength !== undefined && n > s.maxLength) out.push(`${path}: longer than ${s.maxLength}`)
    if (s.pattern && !new RegExp(s.pattern, 'u').test(v)) out.push(`${path}: does not match ${s.pattern}`)
  }
  if (typeof v === 'number') {
    if (s.minimum !== undefined && v < s.minimum) out.push(`${path}: below ${s.minimum}`)
    if (s.maximum !== undefined && v > s.maximum) out.push(`${path}: above ${s.maximum}`)
  }
  if (Array.isArray(v)) {
    if (s.minItems !== undefined && v.length < s.minItems) out.push(`${path}: fewer than ${s.minItems} items`)
    if (s.items) v.forEach((x, i) => out.push(...errors(x, s.items, `${path}[${i}]`)))
  }
  if (typeOf(v) === 'object') {
    for (const k of s.required || []) if (!(k in v)) out.push(`${path}.${k}: required`)
    for (const [k, sub] of Object.entries(s.properties || {})) {
      if (k in v) out.push(...errors(v[k], sub, `${path}.${k}`))
    }
  }
  for (const sub of s.allOf || []) out.push(...errors(v, sub, path))
  if (s.if && errors(v, s.if, path).length === 0 && s.then) out.push(...errors(v, s.then, path))
  return out
}
