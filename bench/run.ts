/**
 * `npm run bench [-- <name>...]`: runs every bench/*.bench.ts (or those whose name contains one of
 * the arguments), one after the other. Each exports a default async function that prints its figures.
 * Benchmarks are not tests: they measure ratios against a baseline run on the same machine, same files.
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const wanted = process.argv.slice(2);
const files = readdirSync(here)
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => wanted.length === 0 || wanted.some((w) => f.includes(w)))
  .sort();

for (const file of files) {
  console.log(`\n## ${file}\n`);
  const mod = (await import(pathToFileURL(path.join(here, file)).href)) as { default: () => Promise<void> };
  await mod.default();
}
process.exit(0);
