import fsc, { promises as fs, readdirSync, readFileSync, statSync } from 'node:fs';
import { promisify } from 'node:util';
import path from 'node:path';
import { generateTree, removeDir } from './lib/tree.js';
const tree = await generateTree(10000);
const dirs = tree.volumes.map((v) => path.dirname(v.dataFile));
const rd = promisify(fsc.readdir), rf = promisify(fsc.readFile), st = promisify(fsc.stat);
async function par(fn: (d: string) => Promise<void>) { let next = 0; await Promise.all(Array.from({ length: 64 }, async () => { while (next < dirs.length) await fn(dirs[next++]); })); }
for (let k = 0; k < 3; k++) {
  let t = performance.now();
  for (const d of dirs) { readdirSync(d); const m = JSON.parse(readFileSync(path.join(d, 'meta.json'), 'utf8')); statSync(path.join(d, 'meta.json')); statSync(path.join(d, m.format === 'raw' ? 'data.img' : 'data.qcow2')); }
  const a = performance.now() - t; t = performance.now();
  await par(async (d) => { await fs.readdir(d); const m = JSON.parse(await fs.readFile(path.join(d, 'meta.json'), 'utf8')); await Promise.all([fs.stat(path.join(d, 'meta.json')), fs.stat(path.join(d, m.format === 'raw' ? 'data.img' : 'data.qcow2'))]); });
  const b = performance.now() - t; t = performance.now();
  await par(async (d) => { await rd(d); const m = JSON.parse(await rf(path.join(d, 'meta.json'), 'utf8')); await Promise.all([st(path.join(d, 'meta.json')), st(path.join(d, m.format === 'raw' ? 'data.img' : 'data.qcow2'))]); });
  const c = performance.now() - t;
  console.log(`sync ${a.toFixed(0)} promises ${b.toFixed(0)} callbacks ${c.toFixed(0)}`);
}
await removeDir(tree.mnt);
