import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { makeTree, OTHER, OWNER, removeTree, seedCreateBody } from '../helpers/tree.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';

/** The seed's requests (002, "Api Endpoints"), answered in the seed's shapes, against real qemu-img. */
describe('seed API: requests and response shapes', () => {
  let mnt: string;
  let d: TestDaemon;

  beforeEach(async () => {
    mnt = await makeTree({ valid_path_1: { 'max-volumes': 6, 'max-volume-size': '50G', 'max-total-size': '200G', 'file-system': 'default' } });
    d = await startTestDaemon(mnt);
  });
  afterEach(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  it('create answers the seed example with img_format and the new vid', async () => {
    const res = await d.post('create', seedCreateBody()).expect(200);
    expect(res.body.vid).to.match(/^[0-9a-f]{32}$/);
    expect(res.body).to.deep.equal({
      alg: 'no',
      bootable: false,
      bus: 'virtio',
      clonable: false,
      creatorID: OWNER,
      img_format: 'qcow2',
      name: 'test-create',
      private: false,
      readonly: false,
      shareable: false,
      size: 1,
      vid: res.body.vid,
      labels: {},
    });
  });

  it('info answers the seed shape, sizes in bytes, lastUpdated in the seed format', async () => {
    const { vid } = (await d.post('create', seedCreateBody({ size: 4 })).expect(200)).body;
    const res = await d.post('info', { volume_id: vid }).expect(200);
    expect(Object.keys(res.body)).to.include.members([
      'volumeID', 'creatorID', 'size', 'name', 'format', 'private', 'bootable', 'readonly', 'shareable',
      'clonable', 'alg', 'bus', 'cloudinit', 'ceph', 'exported', 'sizeOnDisk', 'lastUpdated',
    ]);
    expect(res.body).to.include({ volumeID: vid, creatorID: OWNER, size: 4_000_000_000, name: 'test-create', format: 'qcow2', exported: false, cloudinit: false, ceph: false });
    expect(res.body.sizeOnDisk).to.be.a('number').greaterThan(0).lessThan(1_000_000);
    expect(res.body.lastUpdated).to.match(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{4}$/);
  });

  it('accessible lists own volumes and public ones, each with own, never others\' private ones', async () => {
    const mine = (await d.post('create', seedCreateBody({ name: 'mine', private: true })).expect(200)).body.vid;
    const theirsPublic = (await d.post('create', seedCreateBody({ creatorID: OTHER, name: 'pub' })).expect(200)).body.vid;
    const theirsPrivate = (await d.post('create', seedCreateBody({ creatorID: OTHER, name: 'priv', private: true })).expect(200)).body.vid;
    const res = await d.post('accessible', { client_uid: OWNER }).expect(200);
    const byId = Object.fromEntries((res.body as Array<{ volumeID: string; own: boolean }>).map((v) => [v.volumeID, v]));
    expect(Object.keys(byId).sort()).to.deep.equal([mine, theirsPublic].sort());
    expect(byId[mine].own).to.equal(true);
    expect(byId[theirsPublic].own).to.equal(false);
    expect(byId[theirsPrivate]).to.equal(undefined);
    await d.post('info', { volume_id: theirsPrivate, client_uid: OWNER }).expect(404);
  });

  it('accessible filters by labels', async () => {
    await d.post('create', seedCreateBody({ name: 'a', labels: { env: 'prod' } })).expect(200);
    await d.post('create', seedCreateBody({ name: 'b', labels: { env: 'dev' } })).expect(200);
    const res = await d.post('accessible', { client_uid: OWNER, labels: { env: 'prod' } }).expect(200);
    expect(res.body.map((v: { name: string }) => v.name)).to.deep.equal(['a']);
  });

  it('update answers the seed update shape and changes meta.json', async () => {
    const { vid } = (await d.post('create', seedCreateBody()).expect(200)).body;
    const body = { vid, creatorID: OWNER, name: 'test-update', private: false, readonly: false, shareable: false, bootable: false, clonable: true, alg: 'cp', bus: 'sata' };
    const res = await d.post('update', body).expect(200);
    expect(res.body).to.deep.equal({ ...body, labels: {} });
    const meta = JSON.parse(await fs.readFile(path.join(mnt, 'valid_path_1', `vid.${vid}.elimg`, 'meta.json'), 'utf8'));
    expect(meta).to.include({ name: 'test-update', clonable: true, alg: 'cp', bus: 'sata', format: 'qcow2', creatorID: OWNER });
  });

  it('resize and convert answer the seed shapes', async () => {
    const { vid } = (await d.post('create', seedCreateBody()).expect(200)).body;
    expect((await d.post('update/resize', { vid, creatorID: OWNER, size: 10 }).expect(200)).body).to.deep.equal({ vid, creatorID: OWNER, size: 10 });
    expect((await d.post('update/convert', { vid, creatorID: OWNER, format: 'raw' }).expect(200)).body).to.deep.equal({ vid, creatorID: OWNER, format: 'raw' });
    expect((await d.post('info', { volume_id: vid }).expect(200)).body).to.include({ size: 10_000_000_000, format: 'raw' });
  });

  it('destroy answers {vid} and the volume is gone from the tree and the index', async () => {
    const { vid } = (await d.post('create', seedCreateBody()).expect(200)).body;
    expect((await d.post('destroy', { volume_id: vid }).expect(200)).body).to.deep.equal({ vid });
    expect(await fs.readdir(path.join(mnt, 'valid_path_1'))).to.deep.equal(['.elemento-bin', 'settings.json']);
    await d.daemon.ctx.purger.idle(); // the bin is emptied after the answer
    expect(await fs.readdir(path.join(mnt, 'valid_path_1', '.elemento-bin'))).to.deep.equal([]);
    await d.post('info', { volume_id: vid }).expect(404);
  });

  it('has and cancreate answer for the controller', async () => {
    const { vid } = (await d.post('create', seedCreateBody()).expect(200)).body;
    expect((await d.post('has', { volume_id: vid }).expect(200)).body).to.deep.equal({ vid, has: true });
    expect((await d.post('has', { volume_id: 'a'.repeat(32) }).expect(200)).body).to.deep.equal({ vid: 'a'.repeat(32), has: false });
    expect((await d.post('cancreate', { size: 10 }).expect(200)).body).to.deep.equal({ size: 10, cancreate: true, roots: 1 });
    expect((await d.post('cancreate', { size: 60 }).expect(200)).body).to.deep.equal({ size: 60, cancreate: false, roots: 0 });
  });

  it('serves /api/v1 as an alias and refuses other versions with the supported list', async () => {
    await d.api.post('/api/v1/accessible').send({ client_uid: OWNER }).expect(200);
    const res = await d.api.post('/api/v2/accessible').send({ client_uid: OWNER }).expect(404);
    expect(res.body).to.deep.equal({ error: "API version 'v2' is not supported; use one of: v1.0, v1", code: 'not_found', supported: ['v1.0', 'v1'] });
  });

  it('status reports roots with their quota use and the tools found', async () => {
    await d.post('create', seedCreateBody({ size: 2 })).expect(200);
    const res = await d.api.get('/api/v1.0/status').expect(200);
    const { bavail, blocks, bsize } = await fs.statfs(path.join(mnt, 'valid_path_1'));
    expect(res.body.roots).to.deep.equal([
      {
        path: path.join(mnt, 'valid_path_1'), fileSystem: 'default', maxVolumes: 6, maxVolumeSize: 50e9, maxTotalSize: 200e9, volumes: 1, usedBytes: 2e9,
        diskSizeBytes: blocks * bsize, diskFreeBytes: res.body.roots[0].diskFreeBytes,
      },
    ]);
    // Other tests write on the same filesystem meanwhile.
    expect(res.body.roots[0].diskFreeBytes).to.be.closeTo(bavail * bsize, 1e9);
    expect(res.body.tools['qemu-img']).to.match(/qemu-img$/);
  });

  it("status asks a filesystem that does not answer once, not at each poll (each stuck statfs holds one of libuv's 4 threads)", async function () {
    this.timeout(20_000);
    const real = fs.statfs;
    let asked = 0;
    let answer: () => void = () => {};
    // A hung network mount: statfs does not return until the mount answers again.
    (fs as { statfs: unknown }).statfs = (...args: Parameters<typeof real>) => {
      asked += 1;
      return new Promise((resolve) => (answer = () => resolve(real(...args))));
    };
    try {
      const polls = await Promise.all([1, 2, 3].map(() => d.api.get('/api/v1.0/status').expect(200)));
      for (const poll of polls) expect(poll.body.roots[0]).to.include({ diskFreeBytes: null, diskSizeBytes: null });
      expect(await d.api.get('/api/v1.0/status').expect(200)).to.have.nested.property('body.roots[0].diskFreeBytes', null);
      expect(asked).to.equal(1);
      answer();
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      (fs as { statfs: unknown }).statfs = real;
    }
    expect((await d.api.get('/api/v1.0/status').expect(200)).body.roots[0].diskFreeBytes).to.be.a('number');
  });
});

describe('ownership', () => {
  let mnt: string;
  let d: TestDaemon;
  let vid: string;

  before(async () => {
    mnt = await makeTree({ a: {} });
    d = await startTestDaemon(mnt);
    vid = (await d.post('create', seedCreateBody({ format: 'raw' })).expect(200)).body.vid;
  });
  after(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  const attempts: Array<[string, (vid: string) => object]> = [
    ['update', (v) => ({ vid: v, creatorID: OTHER, name: 'stolen' })],
    ['update/resize', (v) => ({ vid: v, creatorID: OTHER, size: 2 })],
    ['update/convert', (v) => ({ vid: v, creatorID: OTHER, format: 'qcow2' })],
    ['destroy', (v) => ({ volume_id: v, creatorID: OTHER })],
  ];
  for (const [endpoint, body] of attempts)
    it(`refuses ${endpoint} by another client with 403 and leaves the volume as it was`, async () => {
      const res = await d.post(endpoint, body(vid)).expect(403);
      expect(res.body.error).to.match(/only the creator/);
      expect((await d.post('info', { volume_id: vid }).expect(200)).body).to.include({ name: 'test-create', size: 1e9, format: 'raw' });
    });
});
