import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { PROJECT_ROOT } from './project.js';
import { BadRequestError } from './errors.js';

// ajv-formats is CommonJS: under NodeNext its default export arrives wrapped.
const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

const SCHEMA_DIR = path.join(PROJECT_ROOT, 'schemas');
const BASE_ID = 'https://elemento.cloud/schemas/';

/** Every schema in schemas/, loaded and compiled once when this module is first imported. */
const ajv = new Ajv2020({ allErrors: false, useDefaults: true, coerceTypes: false });
addFormats(ajv);
for (const file of readdirSync(SCHEMA_DIR).filter((f) => f.endsWith('.json')).sort()) {
  ajv.addSchema(JSON.parse(readFileSync(path.join(SCHEMA_DIR, file), 'utf8')));
}
const compiled = new Map<string, ValidateFunction>();

/** How many labels a volume may have (schemas/defs.json), for rules that combine labels from two places. */
export const MAX_LABELS = (ajv.getSchema(`${BASE_ID}defs`)!.schema as { $defs: { labels: { maxProperties: number } } }).$defs.labels.maxProperties;

/** The validator of `schemas/<name>.json` (its `$id` is BASE_ID + name). */
export function validatorFor(name: string): ValidateFunction {
  let fn = compiled.get(name);
  if (!fn) {
    fn = ajv.getSchema(BASE_ID + name);
    if (!fn) throw new Error(`no schema ${name} in ${SCHEMA_DIR}`);
    compiled.set(name, fn);
  }
  return fn;
}

/**
 * Whether `value` passes property `key` of schema `name` on its own (false when the schema has no such
 * property): how a form or query value, which is text, is told apart from one meant as JSON.
 */
export function propertyAccepts(name: string, key: string, value: unknown): boolean {
  const properties = (validatorFor(name).schema as { properties?: Record<string, unknown> }).properties;
  if (!properties || !Object.hasOwn(properties, key)) return false;
  const ref = `${BASE_ID}${name}#/properties/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`;
  let fn = compiled.get(ref);
  if (!fn) {
    // Through a $ref: a property's `default` would be refused at the root of a schema of its own.
    fn = ajv.compile({ $ref: ref });
    compiled.set(ref, fn);
  }
  return fn(value) === true;
}

export function schemaNames(): string[] {
  return Object.keys(ajv.schemas)
    .filter((id) => id.startsWith(BASE_ID))
    .map((id) => id.slice(BASE_ID.length));
}

/** The field an error is about, as a dotted path (`labels.env`), or '' for the whole document. */
function fieldOf(err: ErrorObject): string {
  const at = err.instancePath.replace(/^\//, '').replace(/\//g, '.');
  if (err.keyword === 'required') return [at, (err.params as { missingProperty: string }).missingProperty].filter(Boolean).join('.');
  if (err.keyword === 'additionalProperties')
    return [at, (err.params as { additionalProperty: string }).additionalProperty].filter(Boolean).join('.');
  if (err.propertyName !== undefined) return [at, err.propertyName].filter(Boolean).join('.');
  return at;
}

/** One sentence for the first error, in the seed's words for a missing key. */
export function describeSchemaError(err: ErrorObject): { message: string; field: string } {
  const field = fieldOf(err);
  if (err.keyword === 'required') return { field, message: `request was badly formatted. '${field}'` };
  const what =
    err.keyword === 'additionalProperties' ? 'is not an accepted field' : err.propertyName !== undefined ? 'is not an accepted key' : (err.message ?? 'is invalid');
  return { field, message: `request was badly formatted. '${field || 'body'}' ${what}` };
}

/**
 * Checks `doc` against schema `name` (filling defaults in place) and returns it typed, or throws
 * a BadRequestError naming the first offending field.
 */
export function validateOrThrow<T>(name: string, doc: unknown): T {
  const validate = validatorFor(name);
  if (!validate(doc)) {
    const { message, field } = describeSchemaError(validate.errors![0]);
    throw new BadRequestError(message, { field });
  }
  return doc as T;
}

/** Like validateOrThrow but answers the reason instead of throwing (for files read from the tree). */
export function checkDocument(name: string, doc: unknown): string | null {
  const validate = validatorFor(name);
  if (validate(doc)) return null;
  const err = validate.errors![0];
  const field = fieldOf(err);
  const at = field ? `'${field}' ` : '';
  if (err.keyword === 'required') return `${at}is missing`;
  // An operator fixing the file by hand needs what was found and what may stand there (never a token's).
  const found = name === 'tokens' ? '' : `, not ${shown(valueAt(doc, err.instancePath))}`;
  if (err.keyword === 'enum') return `${at}must be one of ${(err.params as { allowedValues: unknown[] }).allowedValues.join(', ')}${found}`;
  if (err.keyword === 'type') return `${at}${err.message}${found}`;
  return `${at}${err.message}`;
}

/** The value at a JSON pointer of `doc` (ajv's instancePath). */
function valueAt(doc: unknown, pointer: string): unknown {
  let value = doc;
  for (const key of pointer.split('/').slice(1)) value = (value as Record<string, unknown>)?.[key.replace(/~1/g, '/').replace(/~0/g, '~')];
  return value;
}

/** A value as JSON, cut short: enough to find it in the file. */
function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}
