import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import fse from 'fs-extra';
import { execa } from 'execa';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { makeTree, OWNER, removeTree, seedCreateBody, waitFor } from '../helpers/tree.js';

const HAND_MADE = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';

async function makeVolumeByHand(rootDir: string, uid: string, meta: object | string): Promise<string> {
  const staging = path.join(rootDir, '..', `staging-${uid}`);
  await fs.mkdir(staging, { recursive: true });
  await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(staging, 'data.img'), '1M']);
  await fs.writeFile(path.join(staging, 'meta.json'), typeof meta === 'string' ? meta : JSON.stringify(meta));
  const dir = path.join(rootDir, `vid.${uid}.elimg`);
  await fs.rename(staging, dir);
  return dir;
}

describe('the live index', () => {
  let mnt: string;
  let d: TestDaemon;
  const accessibleIds = async () => (await d.post('accessible', { client_uid: OWNER }).expect(200)).body.map((v: { volumeID: string }) => v.volumeID);

  beforeEach(async () => {
    mnt = await makeTree({ a: {}, 'nested/b': {} });
    d = await startTestDaemon(mnt);
  });
  afterEach(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  it('shows a volume copied in by hand within 2 seconds, and drops one removed by hand', async () => {
    const dir = await makeVolumeByHand(path.join(mnt, 'nested', 'b'), HAND_MADE, { creatorID: OWNER, name: 'by-hand', format: 'raw' });
    await waitFor(async () => (await accessibleIds()).includes(HAND_MADE), 2000, 'the hand-made volume');
    const info = (await d.post('info', { volume_id: HAND_MADE }).expect(200)).body;
    expect(info).to.include({ name: 'by-hand', size: 1024 * 1024, format: 'raw', alg: 'cp', bus: 'virtio', private: false });
    await fse.remove(dir);
    await waitFor(async () => !(await accessibleIds()).includes(HAND_MADE), 2000, 'the removed volume to vanish');
    await d.post('info', { volume_id: HAND_MADE }).expect(404);
  });

  it('sees a new root appear when an operator writes its settings.json', async () => {
    await fs.mkdir(path.join(mnt, 'c'));
    await fs.writeFile(path.join(mnt, 'c', 'settings.json'), '{"max-volumes": 1}');
    await waitFor(async () => (await d.api.get('/api/v1.0/status')).body.roots.length === 3, 2000, 'the new root');
  });

  it('marks a volume with a corrupt meta.json as broken, keeps listing the others, never rewrites it', async () => {
    const healthy = (await d.post('create', seedCreateBody()).expect(200)).body.vid;
    const dir = await makeVolumeByHand(path.join(mnt, 'a'), HAND_MADE, '{"creatorID": "ffff');
    await waitFor(async () => (await d.api.get('/api/v1.0/status')).body.broken.length === 1, 2000, 'the broken volume');
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.broken).to.deep.equal([{ vid: HAND_MADE, dir, problem: 'meta.json is not valid JSON' }]);
    expect(await accessibleIds()).to.deep.equal([healthy]);
    const res = await d.post('info', { volume_id: HAND_MADE }).expect(409);
    expect(res.body.error).to.equal(`volume ${HAND_MADE} is broken: meta.json is not valid JSON`);
    await d.post('destroy', { volume_id: HAND_MADE }).expect(409);
    expect(await fs.readFile(path.join(dir, 'meta.json'), 'utf8')).to.equal('{"creatorID": "ffff');
  });

  it('a restarted daemon serves the same volumes', async () => {
    const a = (await d.post('create', seedCreateBody({ name: 'one' })).expect(200)).body.vid;
    const b = (await d.post('create', seedCreateBody({ name: 'two', format: 'raw', private: true })).expect(200)).body.vid;
    const before = (await d.post('accessible', { client_uid: OWNER }).expect(200)).body;
    await d.stop();
    d = await startTestDaemon(mnt);
    const after = (await d.post('accessible', { client_uid: OWNER }).expect(200)).body;
    const byId = (list: Array<{ volumeID: string }>) => Object.fromEntries(list.map((v) => [v.volumeID, v]));
    expect(byId(after)).to.deep.equal(byId(before));
    expect(Object.keys(byId(after)).sort()).to.deep.equal([a, b].sort());
  });

  it('skips an invalid root with its reason and keeps serving the others', async () => {
    await d.stop();
    await fs.mkdir(path.join(mnt, 'bad'));
    await fs.writeFile(path.join(mnt, 'bad', 'settings.json'), '{"max-volumes": "many"}');
    await fs.mkdir(path.join(mnt, 'a', 'inner'));
    await fs.writeFile(path.join(mnt, 'a', 'inner', 'settings.json'), '{}');
    d = await startTestDaemon(mnt);
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.roots.map((r: { path: string }) => r.path)).to.deep.equal([path.join(mnt, 'a'), path.join(mnt, 'nested', 'b')]);
    expect(status.skipped).to.deep.equal([{ path: path.join(mnt, 'bad'), reason: "settings.json is invalid: 'max-volumes' must be integer" }]);
    await d.post('create', seedCreateBody()).expect(200);
  });
});
