import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { startCeph, type CephCluster } from '../helpers/ceph.js';
import { execa } from 'execa';
import { CEPH_CRASH_OPERATIONS } from '../helpers/crash/ceph-operations.js';
import { apiOf, treeViolations } from '../helpers/crash/invariants.js';
import { startTestDaemon } from '../helpers/daemon.js';
import { CrashHarness } from '../helpers/crash/harness.js';
import { makeTree, removeTree, skipBecause } from '../helpers/tree.js';

/**
 * Ceph volumes under SIGKILL: the real daemon process killed at each fault point of create, resize,
 * clone and destroy on Ceph volumes, restarted, and the tree and the pool checked against each other
 * (no image leaked, none lost, sizes agree).
 */
describe('crash consistency of Ceph volumes (SIGKILL at every fault point, real Ceph cluster)', function () {
  this.timeout(120_000);
  let ceph: CephCluster | undefined;
  let cephBase: string;
  let mnt: string;
  let harness: CrashHarness | undefined;

  before(async function () {
    cephBase = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-ceph-crash-'));
    const started = await startCeph(cephBase);
    if (typeof started === 'string') skipBecause(this, started);
    ceph = started;
    mnt = await makeTree({ a: { 'max-volumes': 6 } });
    harness = new CrashHarness(mnt, 'in-process', 2000, { operations: CEPH_CRASH_OPERATIONS, ceph: { conf: ceph.conf, id: ceph.id, pool: ceph.pool } });
  });
  after(async () => {
    await harness?.close();
    if (mnt) await removeTree(mnt);
    await ceph?.stop();
    await fs.rm(cephBase, { recursive: true, force: true });
  });

  for (const op of CEPH_CRASH_OPERATIONS)
    for (const point of op.points)
      it(`${op.name}: killed at ${point}, the tree and the pool agree after the restart`, async () => {
        const result = await harness!.pointTrial(op, point);
        expect(result.violations).to.deep.equal([]);
        expect(result.crashed, `the daemon never reached ${point}`).to.equal(true);
      });

  it('the check sees an image that no volume names', async () => {
    const pool = { conf: ceph!.conf, id: ceph!.id, pool: ceph!.pool };
    const rbd = (...args: string[]) => execa('rbd', ['-c', pool.conf, '--id', pool.id, ...args]);
    await rbd('create', '--size', '1M', `${pool.pool}/elemento-leaked`);
    const d = await startTestDaemon(mnt, { cephPool: pool.pool, cephConf: pool.conf, cephId: pool.id });
    try {
      expect(await treeViolations(apiOf(d), pool)).to.include('the RBD image elemento-leaked belongs to no volume');
    } finally {
      await d.stop();
      await rbd('rm', '--no-progress', `${pool.pool}/elemento-leaked`);
    }
  });
});
