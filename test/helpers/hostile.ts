import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import fc from 'fast-check';
import { OTHER, OWNER } from './tree.js';

/**
 * Arbitraries of hostile input for the fuzzer (test/security/fuzz.test.ts), and a raw HTTP client
 * that sends exactly the bytes asked (supertest and fetch tidy up paths and headers).
 */

/** How many runs each property gets: ELEMENTO_FUZZ_RUNS (npm run fuzz) or a small default for npm test. */
export function fuzzRuns(base: number): number {
  const scale = Number(process.env.ELEMENTO_FUZZ_SCALE ?? '1');
  return Math.max(1, Math.round(base * (Number.isFinite(scale) && scale > 0 ? scale : 1)));
}

/** fast-check parameters: a seed from ELEMENTO_FUZZ_SEED replays a failure. */
export function fuzzParams(base: number): fc.Parameters<unknown> {
  const seed = process.env.ELEMENTO_FUZZ_SEED;
  return { numRuns: fuzzRuns(base), ...(seed ? { seed: Number(seed) } : {}), endOnFailure: true };
}

/** Strings that have broken path handling, parsers and shells somewhere. */
export const NASTY_STRINGS = [
  '', ' ', '.', '..', '../', '../../../../etc/passwd', '..\\..\\windows', '%2e%2e', '%2e%2e%2f', '..%2f..%2f', '%252e%252e',
  '\u0000', 'a\u0000b', `${OWNER}\u0000`, `${OWNER}/../x`, `../${OWNER}`, `vid.${OWNER}.elimg`, '/etc/passwd', '~root',
  '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf',
  'NaN', 'Infinity', '-Infinity', '1e308', '-0', '0x10', '1_000', 'null', 'true', 'undefined', '[]', '{}',
  '$(touch /tmp/pwned)', '`id`', '; rm -rf /', '| cat /etc/shadow', '${jndi:ldap://x}', '{{7*7}}', "' OR 1=1 --",
  '\u202e\u0645\u0631\u062d\u0628\u0627', '💾🔥', 'ǅ', '\ud800', 'e\u0301', '\ufeff', '\r\nX-Injected: 1', 'ＡＢＣ',
  'x'.repeat(256), 'x'.repeat(70_000), OWNER, OTHER, OWNER.toUpperCase(), OWNER.slice(1), `${OWNER}0`,
];

export const NASTY_NUMBERS = [
  0, -0, -1, 1, 0.5, 1e-300, 5e-324, 1e-9, 999_999.999_9, 1e6, 1e6 + 1, 17_592, 17_593, 20_000, 1e21, 1e308, -1e308, 2 ** 53, 2 ** 53 + 2, Number.MAX_VALUE, 0.1 + 0.2,
];

/** A value nested `depth` levels deep in arrays and objects. */
export const deeplyNested = (depth: number): unknown => {
  let v: unknown = 'bottom';
  for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { a: v };
  return v;
};

/** An object whose own keys include `__proto__` (a plain assignment would set its prototype). */
export function withOwnKey(target: Record<string, unknown>, key: string, value: unknown): Record<string, unknown> {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
  return target;
}

const protoPayload = fc.constantFrom<unknown>(
  withOwnKey({}, '__proto__', { polluted: 'yes', private: true, creatorID: OTHER }),
  { constructor: { prototype: { polluted: 'yes' } } },
  withOwnKey({ a: 1 }, '__proto__', null),
);

/** Any value a hostile client might put in a field. */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom<unknown>(...NASTY_STRINGS) },
  { weight: 2, arbitrary: fc.constantFrom<unknown>(...NASTY_NUMBERS) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.stringMatching(/^[0-9a-fA-F]{32}$/) },
  { weight: 1, arbitrary: fc.double() },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(true, false, null, [], {}, [OWNER], { a: 'b' }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 2000 }).map(deeplyNested) },
  { weight: 1, arbitrary: protoPayload },
  { weight: 1, arbitrary: fc.dictionary(fc.constantFrom(...NASTY_STRINGS.filter((s) => s.length < 200)), fc.constantFrom<unknown>('x', 1, null, {}), { maxKeys: 4 }) },
);

/** Values of the right kind for some field (names, sizes, flags, labels, enums): they get past the schema. */
export const plausibleValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }),
  fc.double({ min: 1e-9, max: 4, noNaN: true }),
  fc.boolean(),
  fc.dictionary(fc.stringMatching(/^[A-Za-z0-9_.\-/]{1,20}$/), fc.string({ unit: 'grapheme', maxLength: 30 }), { maxKeys: 3 }),
  fc.constantFrom('raw', 'qcow2', 'iso', 'virtio', 'sata', 'cp', 'no', OWNER, OTHER),
);

type SchemaNode = { $ref?: string; type?: string; enum?: unknown[]; pattern?: string; minimum?: number; exclusiveMinimum?: number; maximum?: number; maxLength?: number; properties?: Record<string, SchemaNode> };
const schemaFile = (name: string) => JSON.parse(readFileSync(path.resolve('schemas', `${name}.json`), 'utf8')) as SchemaNode & { $defs?: Record<string, SchemaNode> };

/** Valid values for one node of a JSON Schema (refs into defs.json followed), or plausible ones when it says too little. */
function valuesFor(node: SchemaNode): fc.Arbitrary<unknown> {
  if (node.$ref) return valuesFor(schemaFile('defs').$defs![node.$ref.split('/').pop()!]);
  if (node.enum) return fc.constantFrom(...node.enum);
  if (node.type === 'boolean') return fc.boolean();
  if (node.type === 'string' && node.pattern) return fc.stringMatching(new RegExp(node.pattern));
  if (node.type === 'string') return fc.string({ unit: 'grapheme', minLength: 1, maxLength: Math.min(node.maxLength ?? 40, 40) });
  if (node.type === 'number' || node.type === 'integer') {
    // Small: a valid size reaches qemu-img, and converting a large sparse image still takes seconds.
    const max = Math.min(node.maximum ?? 4, 4);
    const ints = fc.integer({ min: Math.ceil(node.minimum ?? node.exclusiveMinimum ?? 0) + (node.exclusiveMinimum !== undefined ? 1 : 0), max });
    return node.type === 'integer' ? ints : fc.oneof(ints, fc.double({ min: 1e-9, max, noNaN: true }));
  }
  if (node.type === 'object') return fc.dictionary(fc.stringMatching(/^[A-Za-z0-9_.\-/]{1,20}$/), fc.string({ unit: 'grapheme', maxLength: 30 }), { maxKeys: 3 });
  return plausibleValue;
}

/** For each field of schemas/<name>.json, an arbitrary of values that pass the schema. */
export function validFieldValues(schema: string): Record<string, fc.Arbitrary<unknown>> {
  return Object.fromEntries(Object.entries(schemaFile(schema).properties ?? {}).map(([field, node]) => [field, valuesFor(node)]));
}

/** Keys a hostile client might add beside the schema's. */
const hostileKey = fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'volumeID', 'new_creatorID', 'async', 'x'.repeat(300)), fc.string({ maxLength: 12 }));

/**
 * A body for an endpoint: its valid body with fields dropped, replaced and added (from `fields`, the
 * schema's properties, and hostile keys), or something that is not that body at all.
 */
export function hostileBody(valid: Record<string, unknown>, schema: string): fc.Arbitrary<unknown> {
  const fieldValues = validFieldValues(schema);
  const keys = [...new Set([...Object.keys(valid), ...Object.keys(fieldValues)])];
  const mutated = fc
    .record({
      drop: fc.subarray(Object.keys(valid), { maxLength: Math.min(2, Object.keys(valid).length) }),
      set: fc.array(
        fc.tuple(
          keys.length ? fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...keys) }, { weight: 1, arbitrary: hostileKey }) : hostileKey,
          fc.oneof({ weight: 1, arbitrary: plausibleValue }, { weight: 1, arbitrary: hostileValue }),
        ),
        { maxLength: 3 },
      ),
    })
    .map(({ drop, set }) => {
      const body: Record<string, unknown> = { ...valid };
      for (const k of drop) delete body[k];
      for (const [k, v] of set) withOwnKey(body, k, v);
      return body;
    });
  // Bodies that stay valid in shape reach the handlers (and the tree); the others test the refusals.
  const fields = Object.keys(fieldValues);
  const reshaped = fields.length
    ? fc
        .array(fc.constantFrom(...fields).chain((k) => fc.tuple(fc.constant(k), fieldValues[k])), { minLength: 1, maxLength: 3 })
        .map((set) => {
          const body: Record<string, unknown> = { ...valid };
          for (const [k, v] of set) body[k] = v;
          return body;
        })
    : fc.constant(valid);
  return fc.oneof(
    { weight: 4, arbitrary: reshaped },
    { weight: 4, arbitrary: mutated },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
    { weight: 1, arbitrary: hostileValue },
  );
}

/** A path segment a hostile client might send after /api/v1.0/ (already URL-safe). */
export const hostileSegment: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('create', 'info', 'destroy', 'update', 'resize', 'convert', 'jobs', 'status', 'accessible', 'has', 'cancreate', 'v1.0', 'api', 'volumes', 'data', 'files', 'snapshot', 'export'),
  fc.constantFrom('..', '.', '', '%2e%2e', '%2E%2E%2F', '%2f', '%00', '%ff', '%c0%ae%c0%ae', '..%00', '%5c..%5c', '~', '*', ':id', '%3A', '..;', OWNER, `vid.${OWNER}.elimg`),
  fc.string({ unit: 'binary', maxLength: 20 }).map(encodeURIComponent),
);

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Every status line the connection answered (a lying Content-Length can make two). */
  statuses: number[];
}

/**
 * Sends `request` (the whole text or bytes, head and body) to 127.0.0.1:`port` and resolves with
 * the first final response once it is complete or the server closes the connection (null when it
 * closed without answering). The connection is never half-closed: a client that announced more
 * body than it sent keeps waiting, as a real one would.
 */
export function rawRequest(port: number, request: string | Buffer, opts: { timeoutMs?: number } = {}): Promise<RawResponse | null> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let settled = false;
    // Interim answers (100 Continue) are not the answer.
    const received = () => Buffer.concat(chunks).toString('latin1').replace(/^(HTTP\/1\.1 1\d\d [^\r]*\r\n(?:[^\r]+\r\n)*\r\n)+/, '');
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const text = received();
      const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
      if (!statuses.length) return resolve(null);
      const head = text.split('\r\n\r\n')[0];
      const headers: Record<string, string> = {};
      for (const line of head.split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      const length = Number(headers['content-length'] ?? NaN);
      const rest = Buffer.from(text.slice(head.length + 4), 'latin1');
      resolve({ status: statuses[0], headers, body: (Number.isFinite(length) ? rest.subarray(0, length) : rest).toString('utf8'), statuses });
    };
    const timeoutMs = opts.timeoutMs ?? 5000;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      socket.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms to ${String(request).slice(0, 200)}`));
    }, timeoutMs);
    socket.on('data', (c) => {
      chunks.push(c);
      const text = received();
      const end = text.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end));
      if (end >= 0 && length && text.length >= end + 4 + Number(length[1])) finish();
    });
    socket.on('close', finish);
    socket.on('error', finish);
    socket.write(request);
  });
}
