import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { IQN_PREFIX } from '../../src/exporters/iqn.js';
import { exportViolations } from '../helpers/crash/invariants.js';
import { EXPORT_CRASH_OPERATIONS } from '../helpers/crash/export-operations.js';
import { CrashHarness } from '../helpers/crash/harness.js';
import { withTgtd } from '../helpers/tgt.js';
import { makeTree, removeTree } from '../helpers/tree.js';

/**
 * The short crash run of the export operations (export, unexport, migration prepare/conclude/revert):
 * real daemon processes exporting to a private tgtd, killed once at each of their fault points;
 * after the restart, besides the tree's invariants, every `.exported` marker has its target and
 * every target its marker (docs/RELIABILITY.md). `npm run soak -- --exports` runs the long version.
 */
describe('crash consistency of exports and migrations (SIGKILL at every fault point, real tgtd)', function () {
  this.timeout(60_000);
  const tgtd = withTgtd();
  let mnt: string;
  let harness: CrashHarness;

  before(async () => {
    mnt = await makeTree({ a: { 'max-volumes': 4 }, b: {} });
    harness = new CrashHarness(mnt, 'process', 2000, { operations: EXPORT_CRASH_OPERATIONS, exports: { controlPort: tgtd().controlPort, portal: tgtd().portal } });
  });
  after(async () => {
    await harness?.close();
    if (mnt) await removeTree(mnt);
  });

  for (const op of EXPORT_CRASH_OPERATIONS)
    for (const point of op.points.filter((p) => !p.startsWith('lock.') || op.name === 'export'))
      it(`${op.name}: killed at ${point}, markers and targets agree after the restart`, async () => {
        const result = await harness.pointTrial(op, point);
        expect(result.violations).to.deep.equal([]);
        expect(result.crashed, `the daemon never reached ${point}`).to.equal(true);
      });

  it('the check sees a target no marker claims, and a marker without its target', async () => {
    // The harness's last daemon reconciles exports every 200 ms and would remove the leaked target: stopped first.
    await harness.close();
    const leaked = `${IQN_PREFIX}${'1'.repeat(32)}`;
    await tgtd().tgtadm(['--op', 'new', '--mode', 'target', '--tid', '900', '--targetname', leaked]);
    // No daemon: its sweep would remove the volume directory this test makes by hand. The check only needs `status`.
    const roots = { roots: ['a', 'b'].map((r) => ({ path: path.join(mnt, r) })) };
    const api = { get: async () => ({ status: 200, body: roots }), post: async () => ({ status: 501, body: null }) };
    try {
      const dir = path.join(mnt, 'b', `vid.${'2'.repeat(32)}.elimg`);
      await fs.mkdir(dir);
      const orphan = `${IQN_PREFIX}${'3'.repeat(32)}`;
      await fs.writeFile(path.join(dir, `${orphan}.exported`), '{}');
      expect((await exportViolations(api, tgtd().controlPort)).sort()).to.deep.equal([
        `the exporter has a target ${leaked} that no marker claims`,
        `the marker of ${orphan} has no target in the exporter`,
      ]);
      await fs.rm(dir, { recursive: true });
    } finally {
      await tgtd().removeTargets();
    }
  });
});
