import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { startCeph, type CephCluster } from '../helpers/ceph.js';
import { skipBecause } from '../helpers/tree.js';

/** The private Ceph cluster of the tests comes up, takes an RBD image and goes without a trace. */
describe('test Ceph cluster (real ceph-mon, ceph-osd, rbd)', function () {
  this.timeout(120_000);
  let base: string;
  let ceph: CephCluster | undefined;

  before(async function () {
    base = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-ceph-'));
    const started = await startCeph(base);
    if (typeof started === 'string') {
      await fs.rm(base, { recursive: true, force: true });
      skipBecause(this, started);
    }
    ceph = started;
  });
  after(async () => {
    await ceph?.stop();
    if (base) await fs.rm(base, { recursive: true, force: true });
  });

  const rbd = (...args: string[]) => execa('rbd', ['-c', ceph!.conf, '--id', ceph!.id, ...args], { reject: false });

  it('creates, describes and removes an image in the pool', async () => {
    const { pool } = ceph!;
    expect((await rbd('create', '--size', '1048576B', `${pool}/smoke`)).exitCode).to.equal(0);
    const info = JSON.parse((await rbd('info', '--format', 'json', `${pool}/smoke`)).stdout);
    expect(info.size).to.equal(1048576);
    expect(JSON.parse((await rbd('ls', '--format', 'json', pool)).stdout)).to.deep.equal(['smoke']);
    expect((await rbd('rm', '--no-progress', `${pool}/smoke`)).exitCode).to.equal(0);
    expect(JSON.parse((await rbd('ls', '--format', 'json', pool)).stdout)).to.deep.equal([]);
    const missing = await rbd('rm', '--no-progress', `${pool}/smoke`);
    expect(missing.exitCode).to.equal(2);
    expect(missing.stderr).to.contain('No such file or directory');
  });

  it('leaves no daemon once stopped, and clients then fail fast', async () => {
    const conf = ceph!.conf;
    await ceph!.stop();
    ceph = undefined;
    const daemons = await execa('pgrep', ['-a', '-f', conf], { reject: false });
    expect(daemons.stdout).to.equal('');
    const started = Date.now();
    const ls = await execa('rbd', ['-c', conf, '--id', 'admin', 'ls', 'elemento'], { reject: false });
    expect(ls.exitCode).to.equal(110);
    expect(Date.now() - started).to.be.below(10_000);
  });
});
