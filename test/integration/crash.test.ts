import { expect } from 'chai';
import { CrashHarness, seededRandom } from '../helpers/crash/harness.js';
import { CRASH_OPERATIONS } from '../helpers/crash/operations.js';
import { makeTree, removeTree } from '../helpers/tree.js';

/**
 * The short crash run of `npm test`: the real daemon process killed with SIGKILL once at every
 * fault point (see below) and at two random moments, restarted, and the
 * invariants checked (docs/RELIABILITY.md). `npm run soak` runs the long version.
 */
describe('crash consistency (SIGKILL at every fault point, then restart)', function () {
  this.timeout(60_000);
  let mnt: string;
  let harness: CrashHarness;

  before(async () => {
    mnt = await makeTree({ a: { 'max-volumes': 4 }, b: {} });
    harness = new CrashHarness(mnt, 'in-process');
  });
  after(async () => {
    await harness.close();
    await removeTree(mnt);
  });

  // Points shared by every operation (locks, atomic writes) run with the first operation that passes
  // them; an operation whose points all ran before runs at its `shortRun` point. `npm run soak` runs
  // every point of every operation. The export operations run in crash-exports.test.ts.
  const seen = new Set<string>();
  for (const op of CRASH_OPERATIONS) {
    const fresh = op.points.filter((p) => !seen.has(p) && seen.add(p));
    for (const point of fresh.length ? fresh : [op.shortRun ?? op.points[op.points.length - 1]])
      it(`${op.name}: killed at ${point}, the restarted daemon keeps every invariant`, async () => {
        const result = await harness.pointTrial(op, point);
        expect(result.violations).to.deep.equal([]);
        expect(result.crashed, `the daemon never reached ${point}`).to.equal(true);
      });
  }

  const random = seededRandom(6);
  for (let i = 1; i <= 2; i++)
    it(`a stream of operations killed at a random moment (${i}/2) leaves every invariant`, async () => {
      expect((await harness.randomTrial(random)).violations).to.deep.equal([]);
    });
});
