import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { startCeph, type CephCluster } from '../helpers/ceph.js';
import { daemonPerTest, startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { hasPattern, writePattern } from '../helpers/images.js';
import { startImageServer } from '../helpers/image-server.js';
import { iqnFor } from '../../src/exporters/iqn.js';
import { iscsiUrl, missingIscsiTool, qemuIo, startTgtd } from '../helpers/tgt.js';
import { makeTree, OTHER, OWNER, removeTree, seedCreateBody, skipBecause, snapshotTree, waitFor } from '../helpers/tree.js';

const MB = 1024 * 1024;
const CLUSTER_UNREACHABLE = "the Ceph cluster cannot be reached: it does not answer, or refuses this host's client (ELEMENTO_CEPH_CONF, ELEMENTO_CEPH_ID)";

describe('Ceph volumes on a host without a Ceph pool', () => {
  const t = daemonPerTest();

  it('answers 501 naming the missing configuration, and the tree does not change', async () => {
    const before = await snapshotTree(t.mnt);
    const res = await t.d.post('create', seedCreateBody({ ceph: true, format: 'raw', size: 0.01 })).expect(501);
    expect(res.body).to.include({ error: 'this storage host has no Ceph pool configured (ELEMENTO_CEPH_POOL)', code: 'not_supported' });
    expect(await snapshotTree(t.mnt)).to.deep.equal(before);
  });
});

/** A real single-node Ceph cluster (monitor + memstore OSD), the real `rbd`, and qemu-io on `rbd:` URLs. */
describe('Ceph volumes (real Ceph cluster, rbd, qemu-io)', function () {
  this.timeout(120_000);
  let ceph: CephCluster;
  let cephBase: string;
  let mnt: string;
  let d: TestDaemon;

  before(async function () {
    cephBase = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-ceph-'));
    const started = await startCeph(cephBase);
    if (typeof started === 'string') skipBecause(this, started);
    ceph = started;
  });
  after(async () => {
    await ceph?.stop();
    await fs.rm(cephBase, { recursive: true, force: true });
  });
  const cephConfig = () => ({ cephPool: ceph.pool, cephConf: ceph.conf, cephId: ceph.id });
  beforeEach(async () => {
    mnt = await makeTree({ a: { 'max-volumes': 3 } });
    d = await startTestDaemon(mnt, cephConfig());
  });
  afterEach(async () => {
    await d?.stop();
    await removeTree(mnt);
    // The tests share one cluster: each starts with an empty pool.
    for (const image of await images()) {
      await rbd('snap', 'purge', '--no-progress', `${ceph.pool}/${image}`);
      await rbd('rm', '--no-progress', `${ceph.pool}/${image}`);
    }
  });

  const volDir = (vid: string) => path.join(mnt, 'a', `vid.${vid}.elimg`);
  const imageOf = (vid: string) => `elemento-${vid}`;
  const url = (image: string) => `rbd:${ceph.pool}/${image}:conf=${ceph.conf}:id=${ceph.id}`;
  const rbd = (...args: string[]) => execa('rbd', ['-c', ceph.conf, '--id', ceph.id, ...args], { reject: false });
  const images = async () => (await rbd('ls', ceph.pool)).stdout.split('\n').filter(Boolean);
  const imageSize = async (image: string) => JSON.parse((await rbd('info', '--format', 'json', `${ceph.pool}/${image}`)).stdout).size as number;

  async function create(body: Record<string, unknown> = {}): Promise<string> {
    return (await d.post('create', seedCreateBody({ ceph: true, format: 'raw', size: 0.01, clonable: true, alg: 'cp', ...body })).expect(200)).body.vid;
  }

  it('creates an RBD image of the asked size, with data.rbd naming it; info shows it; bytes go to the cluster', async () => {
    const res = await d.post('create', seedCreateBody({ ceph: true, format: 'raw', size: 0.01, labels: { tier: 'ceph' } })).expect(200);
    const vid = res.body.vid as string;
    expect(res.body).to.include({ img_format: 'rbd', size: 0.01, creatorID: OWNER });
    expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(['data.rbd', 'meta.json']);
    expect(JSON.parse(await fs.readFile(path.join(volDir(vid), 'data.rbd'), 'utf8'))).to.deep.equal({ pool: ceph.pool, image: imageOf(vid) });
    expect(JSON.parse(await fs.readFile(path.join(volDir(vid), 'meta.json'), 'utf8'))).to.include({ format: 'rbd', ceph: true, size: 10_000_384 });
    expect(await imageSize(imageOf(vid))).to.equal(10_000_384);

    const info = (await d.post('info', { volume_id: vid }).expect(200)).body;
    expect(info).to.include({ format: 'rbd', ceph: true, size: 10_000_384 });
    expect(info.rbd).to.deep.equal({ pool: ceph.pool, image: imageOf(vid) });
    expect(info.labels).to.deep.equal({ tier: 'ceph' });
    const listed = (await d.post('accessible', { client_uid: OWNER }).expect(200)).body;
    expect(listed.map((v: { volumeID: string }) => v.volumeID)).to.deep.equal([vid]);

    await writePattern(url(imageOf(vid)), 'raw', 0xab, MB, MB);
    expect(await hasPattern(url(imageOf(vid)), 'raw', 0xab, MB, MB)).to.equal(true);

    expect((await d.api.get('/api/v1.0/status').expect(200)).body.ceph).to.deep.equal({ pool: ceph.pool, conf: ceph.conf, id: ceph.id });
  });

  it('downloads a Ceph volume\'s bytes from its cluster (GET /volumes/<vid>/data), whole, byte for byte as rbd export reads them', async () => {
    const vid = await create();
    await writePattern(url(imageOf(vid)), 'raw', 0x3c, 2 * MB, MB);
    const res = await d.api.get(`/api/v1.0/volumes/${vid}/data`).buffer(true).parse((r, done) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => done(null, Buffer.concat(chunks)));
    }).expect(200);
    expect(res.headers).to.include({ 'content-type': 'application/octet-stream', 'content-length': '10000384', 'x-image-format': 'raw', 'accept-ranges': 'none' });
    const exported = path.join(mnt, 'exported.img');
    await rbd('export', '--no-progress', `${ceph.pool}/${imageOf(vid)}`, exported);
    expect(Buffer.compare(res.body as Buffer, await fs.readFile(exported))).to.equal(0);
    expect((res.body as Buffer).subarray(2 * MB, 3 * MB).every((b) => b === 0x3c)).to.equal(true);
    // A job like a file volume's download (GET /jobs), its bytes counted as rbd export's output left.
    const dl = (await d.api.get(`/api/v1.0/jobs/${res.headers['x-job']}`).expect(200)).body;
    expect(dl).to.include({ kind: 'download', vid, state: 'done', bytes: 10000384, percent: 100 });
    const head = await d.api.head(`/api/v1.0/volumes/${vid}/data`).expect(200);
    expect(head.headers['content-length']).to.equal('10000384');

    // The image gone from the cluster behind the daemon's back: a JSON error saying so, not a short body.
    await rbd('rm', '--no-progress', `${ceph.pool}/${imageOf(vid)}`);
    const broken = await d.api.get(`/api/v1.0/volumes/${vid}/data`).expect(409);
    expect(broken.headers['content-type']).to.match(/json/);
    expect(broken.body.error).to.equal(`volume ${vid} is broken: its RBD image ${ceph.pool}/${imageOf(vid)} does not exist`);
    // Its job failed saying so, not done with no byte sent.
    const refused = (await d.api.get(`/api/v1.0/jobs/${broken.headers['x-job']}`).expect(200)).body;
    expect(refused).to.include({ kind: 'download', vid, state: 'failed', error: broken.body.error });
    const resize = await d.post('update/resize', { vid, creatorID: OWNER, size: 0.02 }).expect(409);
    expect(resize.body.error).to.equal(`the RBD image ${imageOf(vid)} does not exist: the volume is broken`);
  });

  it('counts Ceph volumes in the root quota: the fourth is refused with 507 and leaves no image', async () => {
    for (let i = 0; i < 3; i++) await create();
    const res = await d.post('create', seedCreateBody({ ceph: true, format: 'raw', size: 0.01 })).expect(507);
    expect(res.body.code).to.equal('no_room');
    expect(await images()).to.have.length(3);
  });

  it('grows the image on resize, refuses to shrink it, and refuses convert', async () => {
    const vid = await create();
    await writePattern(url(imageOf(vid)), 'raw', 0xcd, 0, MB);
    await d.post('update/resize', { vid, creatorID: OWNER, size: 0.02 }).expect(200);
    expect(await imageSize(imageOf(vid))).to.equal(20_000_256);
    expect((await d.post('info', { volume_id: vid }).expect(200)).body.size).to.equal(20_000_256);
    expect(await hasPattern(url(imageOf(vid)), 'raw', 0xcd, 0, MB)).to.equal(true);

    const shrink = await d.post('update/resize', { vid, creatorID: OWNER, size: 0.01 }).expect(400);
    expect(shrink.body.error).to.match(/only grow/);
    const convert = await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2' }).expect(400);
    expect(convert.body.error).to.equal('a volume of format rbd cannot be converted');
    expect(await imageSize(imageOf(vid))).to.equal(20_000_256);
    // Grown outside the daemon past what a resize then asks: 409 saying so, and nothing changes.
    await rbd('resize', '--no-progress', '--size', '40000000B', `${ceph.pool}/${imageOf(vid)}`);
    const behind = await d.post('update/resize', { vid, creatorID: OWNER, size: 0.03 }).expect(409);
    expect(behind.body.error).to.equal('the RBD image is larger than the size asked (it was resized outside the daemon): ask at least its size');
    expect(await imageSize(imageOf(vid))).to.equal(40_000_000);
    expect((await d.post('info', { volume_id: vid }).expect(200)).body.size).to.equal(20_000_256);
  });

  it('snapshots a Ceph volume with RBD snapshots: create, list, revert brings the old bytes back, delete; destroy purges them', async () => {
    const vid = await create();
    await writePattern(url(imageOf(vid)), 'raw', 0xaa, 0, MB);
    const made = await d.post('snapshot/create', { vid, creatorID: OWNER, name: 'before' }).expect(200);
    expect(made.body.snapshot).to.include({ name: 'before' });
    expect(new Date(made.body.snapshot.date).getTime()).to.be.closeTo(Date.now(), 60_000);
    await d.post('snapshot/create', { vid, creatorID: OWNER, name: 'before' }).expect(409);
    expect((await rbd('snap', 'ls', `${ceph.pool}/${imageOf(vid)}`)).stdout).to.include('before');

    await writePattern(url(imageOf(vid)), 'raw', 0xbb, 0, MB);
    await d.post('snapshot/revert', { vid, creatorID: OWNER, name: 'before' }).expect(200);
    expect(await hasPattern(url(imageOf(vid)), 'raw', 0xaa, 0, MB)).to.equal(true);
    const listed = (await d.post('snapshot/list', { vid, client_uid: OWNER }).expect(200)).body;
    expect(listed.snapshots.map((s: { name: string }) => s.name)).to.deep.equal(['before']);
    await d.post('snapshot/delete', { vid, creatorID: OWNER, name: 'before' }).expect(200);
    expect((await d.post('snapshot/list', { vid, client_uid: OWNER }).expect(200)).body.snapshots).to.deep.equal([]);

    // An image with snapshots is removed with them when its volume is destroyed.
    await d.post('snapshot/create', { vid, creatorID: OWNER, name: 'kept' }).expect(200);
    await d.post('destroy', { volume_id: vid }).expect(200);
    await d.daemon.ctx.purger.idle();
    expect(await images()).to.deep.equal([]);
  });

  it('a snapshot an operator protected (rbd snap protect): its delete and the volume\'s destroy answer 409 saying so, and nothing changes', async () => {
    const vid = await create();
    await d.post('snapshot/create', { vid, creatorID: OWNER, name: 'golden' }).expect(200);
    await rbd('snap', 'protect', `${ceph.pool}/${imageOf(vid)}@golden`);
    try {
      const del = await d.post('snapshot/delete', { vid, creatorID: OWNER, name: 'golden' }).expect(409);
      expect(del.body.error).to.equal('the RBD snapshot is protected (rbd snap unprotect): it cannot be removed');
      const destroy = await d.post('destroy', { volume_id: vid }).expect(409);
      expect(destroy.body.error).to.equal(`volume ${vid} has a protected RBD snapshot (golden: rbd snap unprotect) and cannot be destroyed`);
      expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(['data.rbd', 'meta.json']);
      expect((await d.post('snapshot/list', { vid, client_uid: OWNER }).expect(200)).body.snapshots.map((s: { name: string }) => s.name)).to.deep.equal(['golden']);
    } finally {
      await rbd('snap', 'unprotect', `${ceph.pool}/${imageOf(vid)}@golden`);
    }
    await d.post('destroy', { volume_id: vid }).expect(200);
    await d.daemon.ctx.purger.idle();
    expect(await images()).to.deep.equal([]);
  });

  it('a revert to a snapshot taken before a resize keeps the volume\'s size (volumes only grow)', async () => {
    const vid = await create();
    await writePattern(url(imageOf(vid)), 'raw', 0x21, 0, MB);
    await d.post('snapshot/create', { vid, creatorID: OWNER, name: 'small' }).expect(200);
    await d.post('update/resize', { vid, creatorID: OWNER, size: 0.02 }).expect(200);
    await d.post('snapshot/revert', { vid, creatorID: OWNER, name: 'small' }).expect(200);
    expect(await imageSize(imageOf(vid))).to.equal(20_000_256);
    expect((await d.post('info', { volume_id: vid }).expect(200)).body.size).to.equal(20_000_256);
    expect(await hasPattern(url(imageOf(vid)), 'raw', 0x21, 0, MB)).to.equal(true);
  });

  it('a pointer copied from another volume makes the copy broken (409), and its destroy never touches the other\'s image', async () => {
    const a = await create();
    const b = await create();
    await fs.copyFile(path.join(volDir(a), 'data.rbd'), path.join(volDir(b), 'data.rbd'));
    await d.daemon.ctx.index.reloadDir(volDir(b));
    const info = await d.post('info', { volume_id: b }).expect(409);
    expect(info.body.error).to.equal(`volume ${b} is broken: data.rbd names the image ${imageOf(a)}, not this volume's ${imageOf(b)}`);
    await d.post('destroy', { volume_id: b }).expect(409);
    // Destroyed by hand (an operator moves it to the bin): the purge removes B's own image, never A's.
    await fs.mkdir(path.join(mnt, 'a', '.elemento-bin'), { recursive: true });
    await fs.rename(volDir(b), path.join(mnt, 'a', '.elemento-bin', `vid.${b}.elimg.${'3'.repeat(32)}`));
    await d.daemon.ctx.purger.now(path.join(mnt, 'a', '.elemento-bin', `vid.${b}.elimg.${'3'.repeat(32)}`));
    expect(await images()).to.deep.equal([imageOf(a)]);
    expect((await d.api.get('/api/v1.0/status').expect(200)).body.purgeFailures).to.deep.equal([]);
  });

  it('a start while the cluster does not answer waits for it once, not once per Ceph volume a crash left to recover; they are recovered once it is back', async () => {
    const vids = [await create(), await create(), await create()];
    await d.stop();
    for (const vid of vids) await fs.writeFile(path.join(volDir(vid), `elemento.resize.${'5'.repeat(32)}.ignore`), '');
    const started = Date.now();
    d = await daemonOnDeadCluster();
    expect(Date.now() - started).to.be.below(18_000);
    await d.stop();
    d = await startTestDaemon(mnt, cephConfig());
    for (const vid of vids) expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(['data.rbd', 'meta.json']);
  });

  it('purges while the cluster does not answer wait for it once, not once per Ceph volume, and never hold up the purge of a file volume', async () => {
    const vids = [await create(), await create(), await create()];
    await d.stop();
    // Destroys that died before their purge.
    const bin = path.join(mnt, 'a', '.elemento-bin');
    await fs.mkdir(bin, { recursive: true });
    for (const vid of vids) await fs.rename(volDir(vid), path.join(bin, `vid.${vid}.elimg.${'9'.repeat(32)}`));
    const fileEntry = path.join(bin, `vid.${'4'.repeat(32)}.elimg.${'9'.repeat(32)}`);
    await fs.mkdir(fileEntry);
    await fs.writeFile(path.join(fileEntry, 'data.img'), 'bytes');
    d = await daemonOnDeadCluster();
    const started = Date.now();
    await d.daemon.ctx.purger.idle();
    expect(Date.now() - started).to.be.below(18_000);
    expect(await fs.readdir(bin)).to.not.include(path.basename(fileEntry));
    expect((await d.api.get('/api/v1.0/status').expect(200)).body.purgeFailures).to.have.length(3);
    await d.stop();
    d = await startTestDaemon(mnt, cephConfig());
    await d.daemon.ctx.purger.idle();
    expect(await fs.readdir(bin)).to.deep.equal([]);
    expect(await images()).to.deep.equal([]);
  });

  it('a pointer edited to name another pool: destroy removes the volume\'s own image from the pool its create recorded too (none is leaked)', async () => {
    const vid = await create();
    await execa('ceph', ['-c', ceph.conf, '--id', ceph.id, 'osd', 'pool', 'create', 'edited', '8']);
    try {
      await rbd('pool', 'init', 'edited');
      await fs.writeFile(path.join(volDir(vid), 'data.rbd'), JSON.stringify({ pool: 'edited', image: imageOf(vid) }));
      await waitFor(async () => (await d.post('info', { volume_id: vid })).body.rbd?.pool === 'edited', 5000, 'the index to read the edited pointer');
      await d.post('destroy', { volume_id: vid }).expect(200);
      await d.daemon.ctx.purger.idle();
      expect(await images()).to.deep.equal([]);
      expect((await d.api.get('/api/v1.0/status').expect(200)).body.purgeFailures).to.deep.equal([]);
    } finally {
      await execa('ceph', ['-c', ceph.conf, '--id', ceph.id, 'osd', 'pool', 'rm', 'edited', 'edited', '--yes-i-really-really-mean-it'], { reject: false });
    }
  });

  it('refuses to destroy a Ceph volume whose image a client has open (a watcher); its purge waits and is retried until it is closed', async () => {
    const vid = await create();
    const holder = execa('qemu-io', ['-f', 'raw', url(imageOf(vid))], { stdin: 'pipe', reject: false });
    try {
      await waitFor(async () => JSON.parse((await rbd('status', '--format', 'json', `${ceph.pool}/${imageOf(vid)}`)).stdout).watchers.length > 0, 10_000, 'a watcher');
      const res = await d.post('destroy', { volume_id: vid }).expect(409);
      expect(res.body.error).to.equal(`volume ${vid} is open by a client of its Ceph image and cannot be destroyed`);
      // Moved to the bin by hand while open: the purge keeps the entry and says so in status.
      const binned = path.join(mnt, 'a', '.elemento-bin', `vid.${vid}.elimg.${'4'.repeat(32)}`);
      await fs.mkdir(path.dirname(binned), { recursive: true });
      await fs.rename(volDir(vid), binned);
      await d.daemon.ctx.purger.now(binned);
      expect((await d.api.get('/api/v1.0/status').expect(200)).body.purgeFailures).to.deep.equal([binned]);
      expect(await images()).to.deep.equal([imageOf(vid)]);
    } finally {
      holder.stdin!.end('quit\n');
      await holder;
    }
    // Closed: the periodic retry removes the image and the entry.
    d.daemon.ctx.purger.retry();
    await d.daemon.ctx.purger.idle();
    expect(await images()).to.deep.equal([]);
    expect((await d.api.get('/api/v1.0/status').expect(200)).body.purgeFailures).to.deep.equal([]);
  });

  it('refuses to revert, or to clone while writable, a Ceph volume whose image a client has open (a watcher): its VM would see bytes change under it', async () => {
    const vid = await create();
    await writePattern(url(imageOf(vid)), 'raw', 0x11, 0, MB);
    await d.post('snapshot/create', { vid, creatorID: OWNER, name: 'before' }).expect(200);
    await writePattern(url(imageOf(vid)), 'raw', 0x22, 0, MB);
    const holder = execa('qemu-io', ['-f', 'raw', url(imageOf(vid))], { stdin: 'pipe', reject: false });
    try {
      await waitFor(async () => JSON.parse((await rbd('status', '--format', 'json', `${ceph.pool}/${imageOf(vid)}`)).stdout).watchers.length > 0, 10_000, 'a watcher');
      const revert = await d.post('snapshot/revert', { vid, creatorID: OWNER, name: 'before' }).expect(409);
      expect(revert.body.error).to.equal(`volume ${vid} is open by a client of its Ceph image and cannot be reverted to a snapshot`);
      expect(await hasPattern(url(imageOf(vid)), 'raw', 0x22, 0, MB)).to.equal(true);
      const clone = await d.post('clone', { volume_id: vid, creatorID: OWNER }).expect(409);
      expect(clone.body.error).to.equal(`volume ${vid} is open by a client of its Ceph image and cannot be cloned while writable`);
      expect(await images()).to.deep.equal([imageOf(vid)]);
      // Snapshots of a running image are what RBD is made for (crash-consistent): still taken.
      await d.post('snapshot/create', { vid, creatorID: OWNER, name: 'live' }).expect(200);
      await d.post('update', { vid, creatorID: OWNER, readonly: true }).expect(200);
      await d.post('clone', { volume_id: vid, creatorID: OWNER }).expect(200);
    } finally {
      holder.stdin!.end('quit\n');
      await holder;
    }
    await d.post('snapshot/revert', { vid, creatorID: OWNER, name: 'before' }).expect(200);
    expect(await hasPattern(url(imageOf(vid)), 'raw', 0x11, 0, MB)).to.equal(true);
  });

  it('two daemons on one tree and one pool: concurrent creates fill the root exactly, concurrent destroys remove each image once', async () => {
    const other = await startTestDaemon(mnt, cephConfig());
    try {
      const body = seedCreateBody({ ceph: true, size: 0.01 });
      const answers = await Promise.all([d, other].flatMap((daemon) => Array.from({ length: 6 }, () => daemon.post('create', body))));
      const made = answers.filter((a) => a.status === 200).map((a) => a.body.vid as string);
      expect(made).to.have.length(3);
      expect(answers.filter((a) => a.status !== 200).map((a) => a.status)).to.deep.equal(Array(9).fill(507));
      expect((await images()).sort()).to.deep.equal(made.map(imageOf).sort());
      for (const daemon of [d, other]) await waitFor(async () => (await daemon.api.get('/api/v1.0/status')).body.volumes === 3, 5000, 'both indexes to see the volumes');
      const destroys = await Promise.all(made.flatMap((vid) => [d, other].map((daemon) => daemon.post('destroy', { volume_id: vid }))));
      for (let i = 0; i < made.length; i++) {
        const [first, second] = destroys.slice(i * 2, i * 2 + 2).map((a) => a.status).sort();
        expect(first).to.equal(200);
        expect([404, 409]).to.include(second);
      }
      await Promise.all([d, other].map((daemon) => daemon.daemon.ctx.purger.idle()));
      expect(await images()).to.deep.equal([]);
    } finally {
      await other.stop();
    }
  });

  it('a Ceph volume is raw whatever format the body names (the seed\'s clients always send one)', async () => {
    const vid = await create({ format: 'qcow2' });
    expect(JSON.parse(await fs.readFile(path.join(volDir(vid), 'meta.json'), 'utf8'))).to.include({ format: 'rbd', ceph: true });
    expect(JSON.parse((await execa('qemu-img', ['info', '--output=json', url(imageOf(vid))])).stdout)).to.include({ format: 'raw', 'virtual-size': 10_000_384 });
  });

  it('imports a qcow2 image from a URL into an RBD image (create/url with ceph): equal bytes, grown to the size asked', async () => {
    const src = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-ceph-src-'));
    const server = await startImageServer(src);
    try {
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(src, 'cloud.qcow2'), '8M']);
      await writePattern(path.join(src, 'cloud.qcow2'), 'qcow2', 0x77, MB, MB);
      const res = await d.post('create/url', { creatorID: OWNER, url: server.url('/cloud.qcow2'), ceph: true, size: 0.016 }).expect(200);
      const vid = res.body.vid as string;
      expect(res.body).to.include({ img_format: 'rbd' });
      expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(['data.rbd', 'meta.json']);
      expect(await imageSize(imageOf(vid))).to.equal(16_000_000);
      expect(await hasPattern(url(imageOf(vid)), 'raw', 0x77, MB, MB)).to.equal(true);
      expect(await hasPattern(url(imageOf(vid)), 'raw', 0, 0, MB)).to.equal(true);
      const gone = await d.post('create/url', { creatorID: OWNER, url: server.url('/missing.qcow2'), ceph: true }).expect(502);
      expect(gone.body.code).to.equal('upstream_failed');
      expect(await images()).to.deep.equal([imageOf(vid)]);
      await d.stop();
      d = await startTestDaemon(mnt, { ...cephConfig(), cephPool: 'no-such-pool' });
      const noPool = await d.post('create/url', { creatorID: OWNER, url: server.url('/cloud.qcow2'), ceph: true }).expect(503);
      expect(noPool.body.error).to.equal('the Ceph pool no-such-pool cannot be opened (it does not exist, or the client may not use it)');
      expect((await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'))).to.deep.equal([`vid.${vid}.elimg`]);
    } finally {
      await server.close();
      await fs.rm(src, { recursive: true, force: true });
    }
  });

  it('destroy removes the directory and, after the answer, the image', async () => {
    const vid = await create();
    await d.post('destroy', { volume_id: vid }).expect(200);
    await d.daemon.ctx.purger.idle();
    expect(await images()).to.deep.equal([]);
    expect((await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'))).to.deep.equal([]);
    expect(await fs.readdir(path.join(mnt, 'a', '.elemento-bin'))).to.deep.equal([]);
  });

  it('a client id the cluster does not know: create answers 503 at once, naming the client configuration as a suspect', async () => {
    await d.stop();
    d = await startTestDaemon(mnt, { ...cephConfig(), cephId: 'nobody' });
    const res = await d.post('create', seedCreateBody({ ceph: true, format: 'raw', size: 0.01 })).expect(503);
    expect(res.body.error).to.equal(CLUSTER_UNREACHABLE);
    expect((await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'))).to.deep.equal([]);
  });

  it('a failed create (the pool does not exist) answers an error and leaves neither directory nor image', async () => {
    await d.stop();
    d = await startTestDaemon(mnt, { ...cephConfig(), cephPool: 'no-such-pool' });
    const res = await d.post('create', seedCreateBody({ ceph: true, format: 'raw', size: 0.01 }));
    expect(res.status).to.equal(503);
    expect(res.body).to.include({ error: 'the Ceph pool no-such-pool cannot be opened (it does not exist, or the client may not use it)', code: 'unavailable' });
    expect((await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'))).to.deep.equal([]);
    expect(await images()).to.deep.equal([]);
  });

  /**
   * A daemon on the tree whose ceph.conf names a monitor nobody listens on, and sets no client timeout
   * (as a production one: a client then waits 300 s): every rbd call waits out its client_mount_timeout (10 s).
   */
  async function daemonOnDeadCluster(overrides: Partial<Parameters<typeof startTestDaemon>[1]> = {}): Promise<TestDaemon> {
    const deadConf = path.join(cephBase, 'dead.conf');
    const conf = (await fs.readFile(ceph.conf, 'utf8')).replace(/^mon host = .*$/m, 'mon host = [v1:127.0.0.1:9]');
    await fs.writeFile(deadConf, conf.replace(/^(client mount timeout|rados mon op timeout|rados osd op timeout) = .*\n/gm, ''));
    return startTestDaemon(mnt, { ...cephConfig(), cephConf: deadConf, ...overrides });
  }

  it('a cluster that does not answer: create fails within its connect timeout with 503, no lock lost, no volume left in the root', async () => {
    await d.stop();
    d = await daemonOnDeadCluster();
    const started = Date.now();
    const res = await d.post('create', seedCreateBody({ ceph: true, format: 'raw', size: 0.01 }));
    expect(res.body).to.include({ error: CLUSTER_UNREACHABLE, code: 'unavailable' });
    expect(res.status).to.equal(503);
    // rbd create, then the purge of the abandoned claim: 10 s each.
    expect(Date.now() - started).to.be.below(25_000);
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.locksCompromised).to.equal(0);
    expect((await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'))).to.deep.equal([]);
  });

  it('clones a Ceph volume inside the cluster: equal bytes, then independent', async () => {
    const src = await create();
    await writePattern(url(imageOf(src)), 'raw', 0xab, 0, MB);
    const res = await d.post('clone', { volume_id: src, creatorID: OTHER, name: 'copy' }).expect(200);
    const vid = res.body.vid as string;
    expect(res.body).to.include({ img_format: 'rbd', creatorID: OTHER, name: 'copy' });
    expect(JSON.parse(await fs.readFile(path.join(volDir(vid), 'data.rbd'), 'utf8'))).to.deep.equal({ pool: ceph.pool, image: imageOf(vid) });
    expect((await execa('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', url(imageOf(src)), url(imageOf(vid))], { reject: false })).exitCode).to.equal(0);
    await writePattern(url(imageOf(vid)), 'raw', 0x11, 0, MB);
    expect(await hasPattern(url(imageOf(src)), 'raw', 0xab, 0, MB)).to.equal(true);
    const rsync = await d.post('clone', { volume_id: src, creatorID: OTHER, alg: 'rsync' }).expect(400);
    expect(rsync.body.error).to.equal('a Ceph volume is cloned inside its cluster (alg cp, an rbd cp), not with rsync');
  });

  it('a Ceph volume whose meta.json says alg rsync is still cloned by a clone that names no alg (rbd cp is its only way)', async () => {
    const src = await create({ alg: 'rsync' });
    const res = await d.post('clone', { volume_id: src, creatorID: OWNER }).expect(200);
    expect(res.body).to.include({ img_format: 'rbd', alg: 'rsync' });
    expect(await images()).to.include(imageOf(res.body.vid));
  });

  it('a create that died between `rbd create` and its pointer is removed at the next start, image included', async () => {
    const vid = await create();
    await d.stop();
    // What a daemon killed before publishing data.rbd leaves: meta.json, the create marker, the image.
    await fs.rm(path.join(volDir(vid), 'data.rbd'));
    await fs.writeFile(path.join(volDir(vid), `elemento.create.${'1'.repeat(32)}.ignore`), '');
    d = await startTestDaemon(mnt, cephConfig());
    await d.daemon.ctx.purger.idle();
    expect(await fs.stat(volDir(vid)).then(() => true, () => false)).to.equal(false);
    expect(await images()).to.deep.equal([]);
  });

  it('a create that died, found while the cluster does not answer: it leaves the root at once, no lock lost, and its image goes once the cluster is back', async () => {
    const vid = await create();
    await d.stop();
    await fs.rm(path.join(volDir(vid), 'data.rbd'));
    await fs.writeFile(path.join(volDir(vid), `elemento.create.${'1'.repeat(32)}.ignore`), '');
    d = await daemonOnDeadCluster();
    expect(await fs.stat(volDir(vid)).then(() => true, () => false)).to.equal(false);
    await d.daemon.ctx.purger.idle();
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.locksCompromised).to.equal(0);
    expect(status.purgeFailures).to.have.length(1);
    await d.stop();
    d = await startTestDaemon(mnt, cephConfig());
    await d.daemon.ctx.purger.idle();
    expect(await images()).to.deep.equal([]);
    expect(await fs.readdir(path.join(mnt, 'a', '.elemento-bin'))).to.deep.equal([]);
  });

  it('a destroy that died before its purge: the next start removes the bin entry and its image', async () => {
    const vid = await create();
    await d.stop();
    const bin = path.join(mnt, 'a', '.elemento-bin');
    await fs.mkdir(bin, { recursive: true });
    await fs.rename(volDir(vid), path.join(bin, `vid.${vid}.elimg.${'2'.repeat(32)}`));
    d = await startTestDaemon(mnt, cephConfig());
    await d.daemon.ctx.purger.idle();
    expect(await fs.readdir(bin)).to.deep.equal([]);
    expect(await images()).to.deep.equal([]);
  });

  it('exporting a Ceph volume while its cluster does not answer: 503 within the rbd timeouts, and tgtd is never asked (it would wait 300 s in its one thread, every LUN with it)', async function () {
    const missing = missingIscsiTool();
    if (missing) skipBecause(this, missing);
    const vid = await create();
    const tgtd = await startTgtd();
    try {
      await d.stop();
      d = await daemonOnDeadCluster({ exporter: 'tgt', tgtControlPort: tgtd.controlPort, iscsiPortal: tgtd.portal });
      const started = Date.now();
      const res = await d.post('export', { volume_id: vid, client_uid: OTHER });
      expect(res.body).to.include({ error: CLUSTER_UNREACHABLE, code: 'unavailable' });
      expect(Date.now() - started).to.be.below(20_000);
      const asked = Date.now();
      expect(await tgtd.targets()).to.deep.equal([]);
      expect(Date.now() - asked).to.be.below(5_000);
      expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(['data.rbd', 'meta.json']);
    } finally {
      await d.stop();
      await tgtd.stop();
    }
  });

  it("leaves alone the RBD targets of another daemon sharing the host's tgtd and the pool (another tree): it never knew their volumes", async function () {
    const missing = missingIscsiTool();
    if (missing) skipBecause(this, missing);
    const tgtd = await startTgtd();
    const otherMnt = await makeTree({ b: {} });
    let other: TestDaemon | undefined;
    try {
      await d.stop();
      const exporting = { ...cephConfig(), exporter: 'tgt' as const, tgtControlPort: tgtd.controlPort, iscsiPortal: tgtd.portal };
      d = await startTestDaemon(mnt, exporting);
      const vid = await create();
      await d.post('export', { volume_id: vid, client_uid: OTHER }).expect(200);
      other = await startTestDaemon(otherMnt, exporting);
      expect(await other.daemon.exports.reconcile()).to.include({ removed: 0 });
      expect(await tgtd.targets()).to.deep.equal([iqnFor(OTHER, vid)]);
    } finally {
      await other?.stop();
      await removeTree(otherMnt);
      await d.stop();
      await tgtd.stop();
    }
  });

  it('exports a Ceph volume over iSCSI through tgt\'s rbd backing store: bytes written by the initiator are in the image; a live migration reaches it from both sides', async function () {
    const missing = missingIscsiTool();
    if (missing) skipBecause(this, missing);
    const tgtd = await startTgtd();
    try {
      await d.stop();
      d = await startTestDaemon(mnt, { ...cephConfig(), exporter: 'tgt', tgtControlPort: tgtd.controlPort, iscsiPortal: tgtd.portal });
      const vid = await create();
      const res = await d.post('export', { volume_id: vid, client_uid: OTHER }).expect(200);
      const iqn = iqnFor(OTHER, vid);
      expect(res.body).to.deep.equal({ vid, client_uid: OTHER, iqn, portal: tgtd.portal, lun: 1, format: 'raw', readonly: false });
      expect((await qemuIo(iscsiUrl(tgtd, iqn), 'raw', `write -P 0x5a ${MB} ${MB}`)).ok).to.equal(true);
      expect(await hasPattern(url(imageOf(vid)), 'raw', 0x5a, MB, MB)).to.equal(true);
      expect((await d.daemon.exports.reconcile())).to.include({ kept: 1, recreated: 0, removed: 0 });
      await d.post('destroy', { volume_id: vid }).expect(409);
      // A live migration to OWNER: both hypervisors reach the image while it runs, the destination alone after.
      await d.post('migration/prepare', { volume_id: vid, client_uid: OWNER, source_client_uid: OTHER }).expect(200);
      expect((await tgtd.targets()).sort()).to.deep.equal([iqn, iqnFor(OWNER, vid)].sort());
      expect((await qemuIo(iscsiUrl(tgtd, iqnFor(OWNER, vid)), 'raw', `read -P 0x5a ${MB} ${MB}`, true)).ok).to.equal(true);
      await d.post('migration/conclude', { volume_id: vid, client_uid: OWNER, source_client_uid: OTHER }).expect(200);
      expect(await tgtd.targets()).to.deep.equal([iqnFor(OWNER, vid)]);
      await d.post('unexport', { volume_id: vid, client_uid: OWNER }).expect(200);
      await d.post('export', { volume_id: vid, client_uid: OTHER }).expect(200);
      // A target whose marker is gone (a withdraw cut between its two steps) is found by its image's name and removed.
      await fs.rm(path.join(volDir(vid), `${iqn}.exported`));
      expect((await d.daemon.exports.reconcile())).to.include({ kept: 0, removed: 1 });
      expect(await tgtd.targets()).to.deep.equal([]);
      await d.post('unexport', { volume_id: vid, client_uid: OTHER }).expect(200);
      // A volume directory the operator removed while exported: no root holds the volume, so its target goes
      // (else tgtd keeps the image open for ever, and the image can never be purged).
      await d.post('export', { volume_id: vid, client_uid: OTHER }).expect(200);
      await fs.rm(volDir(vid), { recursive: true });
      await d.daemon.ctx.index.scanAll();
      expect((await d.daemon.exports.reconcile())).to.include({ kept: 0, removed: 1 });
      expect(await tgtd.targets()).to.deep.equal([]);
    } finally {
      await d.stop();
      await tgtd.stop();
    }
  });
});
