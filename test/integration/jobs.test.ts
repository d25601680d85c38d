import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { hasPattern, writePattern } from '../helpers/images.js';
import { makeTree, OWNER, removeTree, seedCreateBody, waitFor } from '../helpers/tree.js';

describe('jobs', () => {
  let mnt: string;
  let d: TestDaemon;
  let vid: string;
  let dir: string;

  beforeEach(async () => {
    mnt = await makeTree({ a: {} });
    d = await startTestDaemon(mnt);
    vid = (await d.post('create', seedCreateBody({ format: 'raw', size: 1 })).expect(200)).body.vid;
    dir = path.join(mnt, 'a', `vid.${vid}.elimg`);
    await writePattern(path.join(dir, 'data.img'), 'raw', 0x5a, 0, 768 * 1024 * 1024);
  });
  afterEach(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  it('runs convert as a job with async: true: 202, then progress, then done with the seed answer', async () => {
    const res = await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2', async: true }).expect(202);
    const job = res.body.job as string;
    expect(job).to.match(/^[0-9a-f]{32}$/);
    let last: Record<string, unknown> = {};
    await waitFor(async () => {
      last = (await d.api.get(`/api/v1.0/jobs/${job}`).expect(200)).body;
      return last.state !== 'running';
    }, 60_000, 'the convert job');
    expect(last).to.include({ id: job, kind: 'convert', vid, state: 'done', percent: 100 });
    expect(last.result).to.deep.equal({ vid, creatorID: OWNER, format: 'qcow2' });
    expect(await hasPattern(path.join(dir, 'data.qcow2'), 'qcow2', 0x5a, 0, 1024 * 1024)).to.equal(true);
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.jobs.map((j: { id: string }) => j.id)).to.include(job);
  });

  it('cancelling a convert kills qemu-img and leaves no trace, the source untouched', async () => {
    const res = await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2', async: true }).expect(202);
    const cancelled = (await d.api.delete(`/api/v1.0/jobs/${res.body.job}`).expect(200)).body;
    expect(cancelled).to.include({ state: 'cancelled', error: 'cancelled' });
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['data.img', 'meta.json']);
    expect(JSON.parse(await fs.readFile(path.join(dir, 'meta.json'), 'utf8')).format).to.equal('raw');
    expect(await hasPattern(path.join(dir, 'data.img'), 'raw', 0x5a, 700 * 1024 * 1024, 1024 * 1024)).to.equal(true);
    await d.api.delete(`/api/v1.0/jobs/${res.body.job}`).expect(409);
    await d.api.get(`/api/v1.0/jobs/${'0'.repeat(32)}`).expect(404);
  });
});
