/**
 * `npm run bench`: runs every bench/*.bench.ts one after the other (or only those whose names
 * contain one of the arguments: `npm run bench -- images`). Each exports `default async function`.
 * Benchmarks are not tests: they print figures (ratios against a baseline measured in the same run).
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const dir = path.dirname(fileURLToPath(import.meta.url));
const filters = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
for (const file of files) {
  console.log(`\n=== ${file} ===`);
  const mod = (await import(pathToFileURL(path.join(dir, file)).href)) as { default?: () => Promise<void> };
  if (typeof mod.default === 'function') await mod.default();
}
