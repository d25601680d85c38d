import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { daemonPerTest } from '../helpers/daemon.js';
import { hasPattern, writePattern } from '../helpers/images.js';
import { OTHER, OWNER, seedCreateBody, snapshotTree } from '../helpers/tree.js';

const MB = 1024 * 1024;
const EXPORT_MARKER = `iqn.2004-10.cloud.elemento:01:${'0'.repeat(32)}.exported`;

describe('snapshots of qcow2 volumes (real qemu-img)', () => {
  const t = daemonPerTest();
  let vid: string;
  let dir: string;
  let data: string;

  beforeEach(async () => {
    vid = (await t.d.post('create', seedCreateBody({ format: 'qcow2', size: 0.1 })).expect(200)).body.vid;
    dir = path.join(t.mnt, 'a', `vid.${vid}.elimg`);
    data = path.join(dir, 'data.qcow2');
  });

  it('create, list, revert (the old bytes come back), delete', async () => {
    await writePattern(data, 'qcow2', 0xaa, 0, MB);
    const created = (await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: 'before-upgrade' }).expect(200)).body;
    expect(created.vid).to.equal(vid);
    expect(created.snapshot).to.include({ id: '1', name: 'before-upgrade' });
    expect(Date.parse(created.snapshot.date)).to.be.closeTo(Date.now(), 60_000);
    expect((await execa('qemu-img', ['snapshot', '-l', data])).stdout).to.match(/before-upgrade/);

    await writePattern(data, 'qcow2', 0xbb, 0, MB);
    await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: 'after' }).expect(200);
    const list = (await t.d.post('snapshot/list', { vid, client_uid: OTHER }).expect(200)).body;
    expect(list).to.deep.equal({ vid, snapshots: [created.snapshot, { id: '2', name: 'after', date: list.snapshots[1].date }] });

    await writePattern(data, 'qcow2', 0xcc, 0, MB);
    const reverted = (await t.d.post('snapshot/revert', { vid, creatorID: OWNER, name: 'before-upgrade' }).expect(200)).body;
    expect(reverted).to.deep.equal({ vid, snapshot: created.snapshot });
    expect(await hasPattern(data, 'qcow2', 0xaa, 0, MB)).to.equal(true);
    await t.d.post('snapshot/revert', { vid, creatorID: OWNER, name: 'after' }).expect(200);
    expect(await hasPattern(data, 'qcow2', 0xbb, 0, MB)).to.equal(true);

    expect((await t.d.post('snapshot/delete', { vid, creatorID: OWNER, name: 'before-upgrade' }).expect(200)).body).to.deep.equal({ vid, deleted: 'before-upgrade' });
    expect((await t.d.post('snapshot/list', { vid }).expect(200)).body.snapshots.map((s: { name: string }) => s.name)).to.deep.equal(['after']);
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['data.qcow2', 'meta.json']);
  });

  it("a clone carries the source's bytes as they are, not its snapshots; convert refuses a volume with snapshots rather than lose them", async () => {
    await writePattern(data, 'qcow2', 0x5e, 0, MB);
    await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: 'withsecret' }).expect(200);
    await writePattern(data, 'qcow2', 0x00, 0, MB);
    await t.d.post('update', { vid, creatorID: OWNER, clonable: true }).expect(200);
    const copy = (await t.d.post('clone', { volume_id: vid, creatorID: OTHER, alg: 'cp' }).expect(200)).body.vid;
    expect((await t.d.post('snapshot/list', { vid: copy, client_uid: OTHER }).expect(200)).body.snapshots).to.deep.equal([]);
    const copyData = path.join(t.mnt, 'a', `vid.${copy}.elimg`, 'data.qcow2');
    expect(await hasPattern(copyData, 'qcow2', 0x00, 0, MB)).to.equal(true);
    expect((await execa('qemu-img', ['snapshot', '-l', copyData])).stdout).to.equal('');

    const before = await snapshotTree(t.mnt);
    const refused = await t.d.post('update/convert', { vid, creatorID: OWNER, format: 'raw' }).expect(409);
    expect(refused.body.error).to.equal(`volume ${vid} has snapshots, which converting would lose: delete them first`);
    expect(await snapshotTree(t.mnt)).to.deep.equal(before);
    await t.d.post('snapshot/delete', { vid, creatorID: OWNER, name: 'withsecret' }).expect(200);
    await t.d.post('update/convert', { vid, creatorID: OWNER, format: 'raw' }).expect(200);
  });

  it('a revert to a snapshot taken before a resize keeps the volume\'s size (qemu-img would shrink it back)', async () => {
    await writePattern(data, 'qcow2', 0x5e, 0, MB);
    await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: 'small' }).expect(200);
    await t.d.post('update/resize', { vid, creatorID: OWNER, size: 0.2 }).expect(200);
    await t.d.post('snapshot/revert', { vid, creatorID: OWNER, name: 'small' }).expect(200);
    expect(JSON.parse((await execa('qemu-img', ['info', '--output=json', data])).stdout)['virtual-size']).to.equal(200_000_000);
    expect((await t.d.post('info', { volume_id: vid }).expect(200)).body.size).to.equal(200_000_000);
    expect(await hasPattern(data, 'qcow2', 0x5e, 0, MB)).to.equal(true);
  });

  it('refuses what it must, changing nothing: names, owners, formats, duplicates, exports, locks', async () => {
    await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: 'one' }).expect(200);
    const raw = (await t.d.post('create', seedCreateBody({ format: 'raw', size: 0.01 })).expect(200)).body.vid;
    const before = await snapshotTree(t.mnt);
    expect((await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: 'one' }).expect(409)).body.error).to.equal(`volume ${vid} already has a snapshot named one`);
    expect((await t.d.post('snapshot/revert', { vid, creatorID: OWNER, name: 'two' }).expect(404)).body.error).to.equal(`volume ${vid} has no snapshot named two`);
    await t.d.post('snapshot/delete', { vid, creatorID: OWNER, name: 'two' }).expect(404);
    await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: '1' }).expect(400);
    await t.d.post('snapshot/create', { vid, creatorID: OWNER }).expect(400);
    await t.d.post('snapshot/create', { vid, creatorID: OTHER, name: 'theirs' }).expect(403);
    expect((await t.d.post('snapshot/create', { vid: raw, creatorID: OWNER, name: 'x' }).expect(400)).body.error).to.equal(`only qcow2 and Ceph volumes have snapshots; volume ${raw} is raw`);
    await t.d.post('snapshot/list', { vid: raw }).expect(400);

    await fs.writeFile(path.join(dir, EXPORT_MARKER), '');
    await t.d.daemon.ctx.index.reloadDir(dir);
    const exported = await t.d.post('snapshot/revert', { vid, creatorID: OWNER, name: 'one' }).expect(409);
    expect(exported.body.error).to.equal(`volume ${vid} is exported and cannot be reverted to a snapshot`);
    await t.d.post('snapshot/list', { vid }).expect(200);
    await fs.rm(path.join(dir, EXPORT_MARKER));

    await fs.writeFile(path.join(dir, `elemento.resize.${'1'.repeat(32)}.ignore`), '{}');
    await fs.mkdir(path.join(dir, '.elemento.lock'));
    expect((await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: 'locked' }).expect(409)).body.error).to.match(/locked by another operation \(resize\)/);
    await fs.rm(path.join(dir, '.elemento.lock'), { recursive: true });
    await fs.rm(path.join(dir, `elemento.resize.${'1'.repeat(32)}.ignore`));
    expect(await snapshotTree(t.mnt)).to.deep.equal(before);
  });

  it('snapshots a read-only volume even while it is exported, but neither reverts nor deletes one under the hypervisor', async () => {
    await t.d.post('update', { vid, creatorID: OWNER, readonly: true }).expect(200);
    await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: 'before' }).expect(200);
    await fs.writeFile(path.join(dir, EXPORT_MARKER), '');
    await t.d.daemon.ctx.index.reloadDir(dir);
    await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: 'frozen' }).expect(200);
    const before = await snapshotTree(t.mnt);
    for (const action of ['revert', 'delete'])
      expect((await t.d.post(`snapshot/${action}`, { vid, creatorID: OWNER, name: 'before' }).expect(409)).body.error).to.match(/^volume [0-9a-f]{32} is exported and cannot be/);
    expect(await snapshotTree(t.mnt)).to.deep.equal(before);
  });
});

describe('transfer of ownership', () => {
  const t = daemonPerTest();
  const NEW = 'abcdefabcdefabcdefabcdefabcdefab';

  const ids = async (client: string, own: boolean) =>
    ((await t.d.post('accessible', { client_uid: client }).expect(200)).body as Array<{ volumeID: string; own: boolean }>)
      .filter((v) => v.own === own)
      .map((v) => v.volumeID);

  for (const endpoint of ['update/transfer', 'transfer'])
    it(`${endpoint} hands a private volume over: the new owner sees and changes it, the old one neither`, async () => {
      const vid = (await t.d.post('create', seedCreateBody({ private: true, labels: { team: 'x' } })).expect(200)).body.vid;
      await t.d.post(endpoint, { vid, creatorID: OTHER, new_creatorID: NEW }).expect(404);
      await t.d.post(endpoint, { vid, creatorID: OWNER }).expect(400);
      const res = await t.d.post(endpoint, { vid, creatorID: OWNER, new_creatorID: NEW.toUpperCase() }).expect(200);
      expect(res.body).to.deep.equal({ vid, creatorID: NEW, previous_creatorID: OWNER, private: true });
      const meta = JSON.parse(await fs.readFile(path.join(t.mnt, 'a', `vid.${vid}.elimg`, 'meta.json'), 'utf8'));
      expect(meta).to.include({ creatorID: NEW, private: true });
      expect(meta.labels).to.deep.equal({ team: 'x' });

      expect(await ids(NEW, true)).to.deep.equal([vid]);
      expect(await ids(OWNER, true)).to.deep.equal([]);
      expect(await ids(OWNER, false)).to.deep.equal([]);
      await t.d.post('info', { volume_id: vid, client_uid: OWNER }).expect(404);
      await t.d.post('update', { vid, creatorID: OWNER, name: 'mine-again' }).expect(404);
      await t.d.post('update', { vid, creatorID: NEW, name: 'now-mine' }).expect(200);
      await t.d.post('destroy', { volume_id: vid, creatorID: OWNER }).expect(404);
    });

  it('a non-private volume stays visible to its former owner, who may no longer change it; the controller may transfer any', async () => {
    const vid = (await t.d.post('create', seedCreateBody()).expect(200)).body.vid;
    await t.d.post('transfer', { vid, creatorID: OWNER, new_creatorID: NEW }).expect(200);
    expect(await ids(OWNER, false)).to.deep.equal([vid]);
    expect((await t.d.post('update', { vid, creatorID: OWNER, name: 'x' }).expect(403)).body.code).to.equal('forbidden');
    await t.d.post('transfer', { vid, creatorID: OWNER, new_creatorID: OWNER }).expect(403);
    // No creatorID: the controller (SPEC §2), which may hand any volume back.
    expect((await t.d.post('update/transfer', { vid, new_creatorID: OWNER }).expect(200)).body.creatorID).to.equal(OWNER);
    await t.d.post('update', { vid, creatorID: OWNER, name: 'back' }).expect(200);
  });

  it('checks the owner again on meta.json read under the lock (a transfer another daemon made is not yet in this index)', async () => {
    const vid = (await t.d.post('create', seedCreateBody({ private: true })).expect(200)).body.vid;
    const file = path.join(t.mnt, 'a', `vid.${vid}.elimg`, 'meta.json');
    const handedOver = JSON.stringify({ ...JSON.parse(await fs.readFile(file, 'utf8')), creatorID: NEW });
    // Written as another daemon's transfer would be, and asked at once, before this daemon's watcher reloads it.
    await fs.writeFile(file, handedOver);
    await t.d.post('destroy', { volume_id: vid, creatorID: OWNER }).expect(404);
    await t.d.post('update', { vid, creatorID: OWNER, private: false, name: 'stolen' }).expect(404);
    expect(await fs.readFile(file, 'utf8')).to.equal(handedOver);
  });

  it('refuses to hand over a volume in use (exported), changing nothing', async () => {
    const vid = (await t.d.post('create', seedCreateBody()).expect(200)).body.vid;
    const dir = path.join(t.mnt, 'a', `vid.${vid}.elimg`);
    await fs.writeFile(path.join(dir, EXPORT_MARKER), '');
    await t.d.daemon.ctx.index.reloadDir(dir);
    const before = await snapshotTree(t.mnt);
    expect((await t.d.post('transfer', { vid, creatorID: OWNER, new_creatorID: NEW }).expect(409)).body).to.deep.equal({
      error: `volume ${vid} is exported and cannot be transferred`, code: 'conflict', vid,
    });
    expect(await snapshotTree(t.mnt)).to.deep.equal(before);
  });
});
