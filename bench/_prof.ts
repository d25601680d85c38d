import { configWith } from '../src/config.js';
import { Daemon } from '../src/daemon.js';
import { createLogger } from '../src/log.js';
import { accessibleVolumes } from '../src/volumes/queries.js';
import { generateTree, BENCH_CLIENT, removeDir } from './lib/tree.js';
import etag from 'etag';
const tree = await generateTree(10000);
const d = new Daemon(configWith({ mnt: tree.mnt, logLevel: 'silent', rescanIntervalMs: 0, watch: false }), createLogger({ level: 'silent' }));
let t = performance.now();
await d.start();
console.log('start (no watch)', performance.now() - t);
for (let k = 0; k < 5; k++) {
  t = performance.now();
  const list = accessibleVolumes(d.ctx, BENCH_CLIENT);
  const t1 = performance.now();
  const s = JSON.stringify(list);
  const t2 = performance.now();
  const b = Buffer.from(s);
  const t3 = performance.now();
  etag(b, { weak: true });
  const t4 = performance.now();
  console.log('describe', (t1 - t).toFixed(1), 'stringify', (t2 - t1).toFixed(1), 'buffer', (t3 - t2).toFixed(1), 'etag', (t4 - t3).toFixed(1));
}
console.log('rss', process.memoryUsage().rss / 1e6);
await d.stop();
await removeDir(tree.mnt);
