import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { hasPattern, imageInfo, writePattern } from '../helpers/images.js';
import { makeTree, OTHER, OWNER, removeTree, seedCreateBody, snapshotTree, waitFor } from '../helpers/tree.js';

const MB = 1024 * 1024;
const DEAD_OP = '0000000000000000000000000000dead';

/** Linked clones: qcow2 overlays reading through to a base volume, and their compaction. */
describe('linked clones (alg overlay) and overlay/compact (real qemu-img)', () => {
  let mnt: string;
  let d: TestDaemon;
  const volDir = (vid: string) => d.daemon.ctx.index.get(vid)!.dir;
  const meta = async (vid: string) => JSON.parse(await fs.readFile(path.join(volDir(vid), 'meta.json'), 'utf8'));

  beforeEach(async () => {
    mnt = await makeTree({ a: {}, b: {} });
    d = await startTestDaemon(mnt);
  });
  afterEach(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  async function template(format: 'raw' | 'qcow2' = 'raw'): Promise<string> {
    const { vid } = (await d.post('create', seedCreateBody({ format, size: 0.1, clonable: true, alg: 'cp', bootable: true })).expect(200)).body;
    await writePattern(path.join(volDir(vid), format === 'raw' ? 'data.img' : 'data.qcow2'), format, 0x7e, 0, 4 * MB);
    return vid;
  }

  it('makes a chain of overlays with relative backing files, each reading through, the base unchanged', async () => {
    const base = await template('raw');
    const ov1 = (await d.post('clone', { volume_id: base, creatorID: OTHER, alg: 'overlay' }).expect(200)).body;
    expect(ov1).to.include({ img_format: 'qcow2', creatorID: OTHER, alg: 'cp', bootable: true, size: 0.1 });
    expect(volDir(ov1.vid).startsWith(path.dirname(volDir(base)))).to.equal(true);
    const ov1Data = path.join(volDir(ov1.vid), 'data.qcow2');
    expect(await imageInfo(ov1Data)).to.include({ format: 'qcow2', 'virtual-size': 100_000_256, 'backing-filename': `../vid.${base}.elimg/data.img` });
    expect(await meta(ov1.vid)).to.include({ base, format: 'qcow2', creatorID: OTHER });
    expect((await d.post('info', { volume_id: ov1.vid }).expect(200)).body).to.include({ base, format: 'qcow2' });
    expect((await d.post('info', { volume_id: base }).expect(200)).body).to.not.have.property('base');
    expect(await hasPattern(ov1Data, 'qcow2', 0x7e, 0, 4 * MB)).to.equal(true);

    await writePattern(ov1Data, 'qcow2', 0x01, 0, MB);
    const ov2 = (await d.post('clone', { volume_id: ov1.vid, creatorID: OTHER, alg: 'overlay' }).expect(200)).body.vid;
    const ov2Data = path.join(volDir(ov2), 'data.qcow2');
    expect(await meta(ov2)).to.include({ base: ov1.vid });
    expect(await hasPattern(ov2Data, 'qcow2', 0x01, 0, MB)).to.equal(true);
    expect(await hasPattern(ov2Data, 'qcow2', 0x7e, MB, 3 * MB)).to.equal(true);
    expect(await hasPattern(path.join(volDir(base), 'data.img'), 'raw', 0x7e, 0, 4 * MB)).to.equal(true);

    // Compacting the middle of the chain keeps what the top reads.
    await d.post('overlay/compact', { vid: ov1.vid, creatorID: OTHER }).expect(200);
    expect(await hasPattern(ov2Data, 'qcow2', 0x01, 0, MB)).to.equal(true);
    expect(await hasPattern(ov2Data, 'qcow2', 0x7e, MB, 3 * MB)).to.equal(true);
    await d.post('destroy', { volume_id: ov1.vid }).expect(409);

    // A full copy of a linked clone is a linked clone of the same base, wherever it lands.
    const copy = (await d.post('clone', { volume_id: ov2, creatorID: OTHER, alg: 'cp' }).expect(200)).body.vid;
    expect(await meta(copy)).to.include({ base: ov1.vid });
    const copyData = path.join(volDir(copy), 'data.qcow2');
    expect((await imageInfo(copyData))['backing-filename']).to.equal(path.relative(volDir(copy), path.join(volDir(ov1.vid), 'data.qcow2')));
    expect(await hasPattern(copyData, 'qcow2', 0x01, 0, MB)).to.equal(true);
    expect(await hasPattern(copyData, 'qcow2', 0x7e, MB, 3 * MB)).to.equal(true);
  });

  it('refuses to destroy, resize, convert or snapshot a base in use (409), and allows it once the overlays are gone', async () => {
    const base = await template('qcow2');
    const ov = (await d.post('clone', { volume_id: base, creatorID: OWNER, alg: 'overlay' }).expect(200)).body.vid;
    const before = await snapshotTree(mnt);
    const refused = await d.post('destroy', { volume_id: base }).expect(409);
    expect(refused.body).to.deep.equal({
      error: `volume ${base} is the base of 1 linked clone(s) and cannot be destroyed`, code: 'conflict', vid: base, overlays: [ov],
    });
    await d.post('update/resize', { vid: base, creatorID: OWNER, size: 0.2 }).expect(409);
    await d.post('update/convert', { vid: base, creatorID: OWNER, format: 'raw' }).expect(409);
    await d.post('snapshot/create', { vid: base, creatorID: OWNER, name: 'before' }).expect(409);
    expect(await snapshotTree(mnt)).to.deep.equal(before);
    // Metadata is not data: renaming or labelling a base is fine.
    await d.post('update', { vid: base, creatorID: OWNER, name: 'golden', labels: { role: 'template' } }).expect(200);

    await d.post('destroy', { volume_id: ov }).expect(200);
    await d.post('destroy', { volume_id: base }).expect(200);
  });

  it('converting a linked clone to raw flattens it and frees its base', async () => {
    const base = await template('qcow2');
    const ov = (await d.post('clone', { volume_id: base, creatorID: OWNER, alg: 'overlay' }).expect(200)).body.vid;
    await d.post('update/convert', { vid: ov, creatorID: OWNER, format: 'raw' }).expect(200);
    expect(await meta(ov)).to.not.have.property('base');
    await d.post('destroy', { volume_id: base }).expect(200);
    expect(await hasPattern(path.join(volDir(ov), 'data.img'), 'raw', 0x7e, 0, 4 * MB)).to.equal(true);
  });

  it('compacts an overlay into a standalone volume with the same bytes, freeing its base', async () => {
    const base = await template('raw');
    const ov = (await d.post('clone', { volume_id: base, creatorID: OWNER, alg: 'overlay' }).expect(200)).body.vid;
    const ovData = path.join(volDir(ov), 'data.qcow2');
    await writePattern(ovData, 'qcow2', 0x02, 2 * MB, MB);
    await d.post('overlay/compact', { vid: ov, creatorID: OTHER }).expect(403);
    // Its file alone would not be a backup: it names the base as its backing file.
    expect((await d.api.get(`/api/v1.0/volumes/${ov}/data`).expect(409)).body).to.include({ code: 'conflict', base });

    const res = await d.post('overlay/compact', { vid: ov, creatorID: OWNER }).expect(200);
    expect(res.body).to.deep.equal({ vid: ov, creatorID: OWNER, base: null, former_base: base });
    expect(await imageInfo(ovData)).to.not.have.property('backing-filename');
    expect(await meta(ov)).to.not.have.property('base');
    expect((await fs.readdir(volDir(ov))).sort()).to.deep.equal(['data.qcow2', 'meta.json']);
    expect(await hasPattern(ovData, 'qcow2', 0x7e, 0, 2 * MB)).to.equal(true);
    expect(await hasPattern(ovData, 'qcow2', 0x02, 2 * MB, MB)).to.equal(true);

    await d.post('destroy', { volume_id: base }).expect(200);
    expect(await hasPattern(ovData, 'qcow2', 0x7e, 0, 2 * MB)).to.equal(true);
    await d.api.get(`/api/v1.0/volumes/${ov}/data`).expect(200);
    await d.post('overlay/compact', { vid: ov, creatorID: OWNER }).expect(400);
  });

  it('runs compact as a job; a cancelled one leaves the overlay as it was', async () => {
    const base = (await d.post('create', seedCreateBody({ format: 'raw', size: 1, clonable: true, alg: 'cp' })).expect(200)).body.vid;
    await writePattern(path.join(volDir(base), 'data.img'), 'raw', 0x33, 0, 768 * MB);
    const ov = (await d.post('clone', { volume_id: base, creatorID: OWNER, alg: 'overlay' }).expect(200)).body.vid;
    const before = await snapshotTree(mnt);
    const job = (await d.post('overlay/compact', { vid: ov, creatorID: OWNER, async: true }).expect(202)).body.job;
    expect((await d.api.delete(`/api/v1.0/jobs/${job}`).expect(200)).body).to.include({ kind: 'compact', state: 'cancelled' });
    expect(await snapshotTree(mnt)).to.deep.equal(before);

    const again = (await d.post('overlay/compact', { vid: ov, creatorID: OWNER, async: true }).expect(202)).body.job;
    let last: Record<string, unknown> = {};
    await waitFor(async () => (last = (await d.api.get(`/api/v1.0/jobs/${again}`)).body).state !== 'running', 60_000, 'the compact job');
    expect(last).to.include({ state: 'done', percent: 100 });
    expect(await hasPattern(path.join(volDir(ov), 'data.qcow2'), 'qcow2', 0x33, 700 * MB, MB)).to.equal(true);
  });

  it('finishes a compact that died after its data was renamed in (meta.json follows the image)', async () => {
    const base = await template('raw');
    const ov = (await d.post('clone', { volume_id: base, creatorID: OWNER, alg: 'overlay' }).expect(200)).body.vid;
    const dir = volDir(ov);
    await d.stop();
    const flat = path.join(dir, '.data.tmp-0000dead.qcow2');
    await execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', path.join(dir, 'data.qcow2'), flat]);
    await fs.rename(flat, path.join(dir, 'data.qcow2'));
    await fs.writeFile(path.join(dir, `elemento.compact.${DEAD_OP}.ignore`), '{}');
    d = await startTestDaemon(mnt);
    expect(await meta(ov)).to.not.have.property('base');
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['data.qcow2', 'meta.json']);
    await d.post('destroy', { volume_id: base }).expect(200);
    expect(await hasPattern(path.join(dir, 'data.qcow2'), 'qcow2', 0x7e, 0, 4 * MB)).to.equal(true);
  });
});

describe('destroys in parallel of bases whose linked clones the index has not seen yet', () => {
  let mnt: string;
  let d: TestDaemon;
  beforeEach(async () => {
    mnt = await makeTree({ a: {}, b: {} });
    // No watcher: the clones written below by hand (another daemon sharing the tree) stay unknown to the index.
    d = await startTestDaemon(mnt, { watch: false });
  });
  afterEach(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  it('refuses exactly those with a clone (409 naming it) and destroys the others', async () => {
    const bases: string[] = [];
    for (let i = 0; i < 24; i++) bases.push((await d.post('create', seedCreateBody({ format: 'raw', size: 0.001, name: `base${i}` })).expect(200)).body.vid);
    const clones = new Map<string, string>();
    for (const [i, base] of bases.entries()) {
      if (i % 4) continue;
      const uid = `${'c'.repeat(30)}${String(i).padStart(2, '0')}`;
      const dir = path.join(mnt, i % 8 ? 'a' : 'b', `vid.${uid}.elimg`);
      await fs.mkdir(dir);
      await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify({ volumeID: uid, creatorID: OWNER, name: 'clone', size: 1048576, format: 'qcow2', base }));
      await fs.writeFile(path.join(dir, 'data.qcow2'), '');
      clones.set(base, uid);
    }
    const results = await Promise.all(bases.map((vid) => d.post('destroy', { volume_id: vid })));
    for (const [i, res] of results.entries()) {
      const clone = clones.get(bases[i]);
      if (clone) expect([res.status, res.body.overlays]).to.deep.equal([409, [clone]]);
      else expect(res.status).to.equal(200);
    }
    const left = (await fs.readdir(path.join(mnt, 'a'))).concat(await fs.readdir(path.join(mnt, 'b'))).filter((n) => n.startsWith('vid.'));
    expect(left.length).to.equal(bases.length / 4 + clones.size);
  });

  it('sees a clone written by hand after an earlier operation listed its root (a root listing is kept only while the root does not change)', async () => {
    const [b1, b2, b3] = [0, 1, 2].map(() => '');
    const bases = [b1, b2, b3];
    for (let i = 0; i < 3; i++) bases[i] = (await d.post('create', seedCreateBody({ format: 'raw', size: 0.001 })).expect(200)).body.vid;
    // The clones go into the root the operations below leave alone (a resize takes its own root's lock, a mkdir there).
    const root = path.join(mnt, d.daemon.ctx.index.get(bases[0])!.root.endsWith(`${path.sep}a`) ? 'b' : 'a');
    const cloneDir = (n: number) => path.join(root, `vid.${'c'.repeat(31)}${n}.elimg`);
    const writeClone = async (n: number, base: string) => {
      await fs.mkdir(cloneDir(n), { recursive: true });
      await fs.writeFile(path.join(cloneDir(n), 'data.qcow2'), '');
      await fs.writeFile(path.join(cloneDir(n), 'meta.json'), JSON.stringify({ volumeID: `${'c'.repeat(31)}${n}`, creatorID: OWNER, name: 'clone', size: 1048576, format: 'qcow2', base }));
    };
    // A clone being made: its directory is there, its meta.json not yet. The root has not changed for an hour.
    await fs.mkdir(cloneDir(2));
    const hourAgo = new Date(Date.now() - 3600_000);
    await fs.utimes(root, hourAgo, hourAgo);
    for (const other of ['a', 'b']) await fs.utimes(path.join(mnt, other), hourAgo, hourAgo);
    // A resize checks for clones too, and leaves the root's directory as it was (a destroy's rename into the bin would not).
    await d.post('update/resize', { vid: bases[0], creatorID: OWNER, size: 0.002 }).expect(200);
    // meta.json written into the directory the listing saw without one: the root's mtime does not change.
    await writeClone(2, bases[1]);
    expect((await d.post('destroy', { volume_id: bases[1] }).expect(409)).body.overlays).to.deep.equal([`${'c'.repeat(31)}2`]);
    // A new directory, the root's mtime then put back as it was: its ctime still tells.
    const { mtime } = await fs.stat(root);
    await writeClone(3, bases[2]);
    await fs.utimes(root, mtime, mtime);
    expect((await d.post('destroy', { volume_id: bases[2] }).expect(409)).body.overlays).to.deep.equal([`${'c'.repeat(31)}3`]);
  });
});
