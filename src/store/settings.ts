import { promises as fs } from 'node:fs';
import path from 'node:path';
import { checkDocument, validatorFor } from '../schemas.js';
import { BYTES_PER_GB, decimalBytes, SETTINGS_FILE } from './layout.js';
import { parseTreeJson } from './tree-reader.js';

/** A root's quotas in bytes and counts; absent means unlimited. */
export interface RootSettings {
  maxVolumes?: number;
  maxVolumeSize?: number;
  maxTotalSize?: number;
  fileSystem: 'default' | 'unique';
}

const UNIT: Record<string, number> = { '': BYTES_PER_GB, K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15 };

/** `"50G"`, `"2T"`, `"500M"` (decimal units, as request sizes are) or a number of GB, in bytes. */
export function parseSizeSpec(spec: number | string): number {
  if (typeof spec === 'number') return Math.floor(decimalBytes(spec, BYTES_PER_GB));
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)B?\s*$/i.exec(spec);
  if (!m) throw new Error(`not a size: ${spec}`);
  return Math.floor(decimalBytes(Number(m[1]), UNIT[m[2].toUpperCase()]));
}

const SIZE_KEYS = ['max-volume-size', 'max-total-size'];
const SIZE_FORMS = 'a number of GB or a string such as "50G", "2T" or "500M" (decimal units K, M, G, T, P, an optional B)';

/**
 * Why `doc` is not a settings.json (schemas/settings.json), or null. A misspelt key (`max_volumes`) is
 * refused rather than ignored, which would leave that limit unlimited; a size says the forms it may take.
 */
function settingsProblem(doc: unknown): string | null {
  const problem = checkDocument('settings', doc);
  if (!problem) return null;
  const validate = validatorFor('settings');
  const err = validate.errors![0];
  if (err.keyword === 'additionalProperties') {
    const keys = Object.keys((validate.schema as { properties: object }).properties);
    return `'${(err.params as { additionalProperty: string }).additionalProperty}' is not a key of settings.json (its keys: ${keys.join(', ')})`;
  }
  const key = err.instancePath.slice(1);
  if (SIZE_KEYS.includes(key)) return `'${key}' must be ${SIZE_FORMS}, not ${JSON.stringify((doc as Record<string, unknown>)[key])}`;
  return problem;
}

type SettingsJson = {
  'max-volumes'?: number;
  'max-volume-size'?: number | string;
  'max-total-size'?: number | string;
  'max-size'?: number;
  'file-system': 'default' | 'unique';
};

/** Parses a settings.json text; throws an Error whose message is the reason the root is skipped. */
export function parseSettings(text: string): RootSettings {
  let doc: unknown;
  try {
    doc = parseTreeJson(text);
  } catch (err) {
    throw new Error(`settings.json is not valid JSON (${(err as Error).message})`);
  }
  const problem = settingsProblem(doc);
  if (problem) throw new Error(`settings.json is invalid: ${problem}`);
  const s = doc as SettingsJson;
  const total = s['max-total-size'] ?? s['max-size'];
  return {
    ...(s['max-volumes'] !== undefined ? { maxVolumes: s['max-volumes'] } : {}),
    ...(s['max-volume-size'] !== undefined ? { maxVolumeSize: parseSizeSpec(s['max-volume-size']) } : {}),
    ...(total !== undefined ? { maxTotalSize: parseSizeSpec(total) } : {}),
    fileSystem: s['file-system'],
  };
}

export async function readSettings(rootPath: string): Promise<RootSettings> {
  return parseSettings(await fs.readFile(path.join(rootPath, SETTINGS_FILE), 'utf8'));
}
