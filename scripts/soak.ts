/**
 * The crash soak (docs/RELIABILITY.md): kills the real daemon with SIGKILL at every fault point of
 * every operation, `--trials` times each, and at `--random` random moments of a stream of
 * operations, restarting it and checking the invariants after each kill.
 *   npm run soak -- --trials 10 --random 200 --seed 42
 * With `--exports`, the export operations (export, unexport, migration steps) against a private tgtd;
 * with `--ceph`, the Ceph volume operations against a private single-node Ceph cluster (their random
 * streams mix them with the tree operations).
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import fse from 'fs-extra';
import { CrashHarness, seededRandom, type TrialResult } from '../test/helpers/crash/harness.js';
import { EXPORT_CRASH_OPERATIONS } from '../test/helpers/crash/export-operations.js';
import { CRASH_OPERATIONS } from '../test/helpers/crash/operations.js';
import { startTgtd } from '../test/helpers/tgt.js';
import { startCeph, type CephCluster } from '../test/helpers/ceph.js';
import { CEPH_CRASH_OPERATIONS } from '../test/helpers/crash/ceph-operations.js';

const opts = new Command()
  .option('--trials <n>', 'trials per fault point', '3')
  .option('--random <n>', 'random-moment kills', '50')
  .option('--seed <n>', 'seed of the random kills', String(Date.now() % 100000))
  .option('--only <operations>', 'only these operations (comma-separated)')
  .option('--exports', 'the export and migration operations, exporting to a private tgtd')
  .option('--ceph', 'the Ceph volume operations, on a private single-node Ceph cluster')
  .parse()
  .opts();

async function main(): Promise<void> {
  const mnt = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-soak-'));
  for (const [root, settings] of [['a', { 'max-volumes': 4 }], ['b', {}]] as const) {
    await fs.mkdir(path.join(mnt, root));
    await fs.writeFile(path.join(mnt, root, 'settings.json'), JSON.stringify(settings));
  }
  const tgtd = opts.exports ? await startTgtd() : null;
  let ceph: CephCluster | null = null;
  if (opts.ceph) {
    const started = await startCeph(await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-soak-ceph-')));
    if (typeof started === 'string') throw new Error(`--ceph: ${started}`);
    ceph = started;
  }
  const operations = tgtd ? EXPORT_CRASH_OPERATIONS : ceph ? [...CEPH_CRASH_OPERATIONS, ...CRASH_OPERATIONS] : CRASH_OPERATIONS;
  const harness = new CrashHarness(mnt, 'process', 2000, {
    operations,
    ...(tgtd ? { exports: { controlPort: tgtd.controlPort, portal: tgtd.portal } } : {}),
    ...(ceph ? { ceph: { conf: ceph.conf, id: ceph.id, pool: ceph.pool } } : {}),
  });
  const results: TrialResult[] = [];
  const report = (r: TrialResult) => {
    results.push(r);
    const mark = r.violations.length ? 'FAIL' : r.crashed ? 'ok  ' : 'MISS';
    console.log(`${mark} ${r.operation.padEnd(8)} ${r.point.padEnd(48)} ${r.ms} ms${r.violations.map((v) => `\n       ${v}`).join('')}`);
  };
  try {
    // A trial the harness itself could not finish counts as a failure, and the soak goes on.
    const trial = async (operation: string, point: string, run: () => Promise<TrialResult>) =>
      report(await run().catch((err: Error) => ({ operation, point, crashed: true, violations: [`harness error: ${err.message}`], ms: 0 })));
    // With --ceph the point trials are the Ceph operations' (the tree's run without it); the random streams mix all.
    const pointOps = ceph ? CEPH_CRASH_OPERATIONS : operations;
    for (const op of pointOps.filter((o) => !opts.only || String(opts.only).split(',').includes(o.name)))
      for (const point of op.points) for (let i = 0; i < Number(opts.trials); i++) await trial(op.name, point, () => harness.pointTrial(op, point));
    const random = seededRandom(Number(opts.seed));
    for (let i = 0; i < Number(opts.random); i++) await trial('random', '', () => harness.randomTrial(random));
  } finally {
    await harness.close();
    await tgtd?.stop();
    await ceph?.stop();
    if (ceph) await fse.remove(path.dirname(ceph.conf));
    await fse.remove(mnt);
  }
  const failed = results.filter((r) => r.violations.length).length;
  const missed = results.filter((r) => !r.crashed).length;
  console.log(`\nsoak: ${results.length} trials (seed ${opts.seed}), ${failed} with violations, ${missed} where the point was not reached`);
  process.exit(failed || missed ? 1 : 0);
}

void main();
