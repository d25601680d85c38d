import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { Daemon } from '../../src/daemon.js';
import { ExecaRunner, type ToolName } from '../../src/tools/runner.js';
import { daemonPerTest, startTestDaemon } from '../helpers/daemon.js';
import { hasPattern, writePattern } from '../helpers/images.js';
import { makeTree, OTHER, OWNER, removeTree, seedCreateBody, skipBecause, snapshotTree, waitFor } from '../helpers/tree.js';

const MB = 1024 * 1024;
const THIRD = 'abcdefabcdefabcdefabcdefabcdefab';

/** True when `qemu-img compare` finds the two images' guest-visible bytes equal. */
async function sameBytes(a: string, b: string): Promise<boolean> {
  return (await execa('qemu-img', ['compare', '-q', a, b], { reject: false })).exitCode === 0;
}

describe('clone (real cp, rsync, rclone, qemu-img)', () => {
  const t = daemonPerTest({ a: { 'max-volumes': 4 } });
  const volDir = (vid: string) => path.join(t.mnt, 'a', `vid.${vid}.elimg`);
  const dataOf = (vid: string, format = 'qcow2') => path.join(volDir(vid), format === 'raw' ? 'data.img' : 'data.qcow2');


  async function sourceWithData(body: Record<string, unknown> = {}): Promise<string> {
    const format = (body.format as string) ?? 'qcow2';
    const { vid } = (await t.d.post('create', seedCreateBody({ clonable: true, alg: 'cp', size: 0.1, labels: { env: 'prod' }, ...body })).expect(200)).body;
    await writePattern(dataOf(vid, format), format, 0xab, 0, MB);
    await writePattern(dataOf(vid, format), format, 0xcd, 60 * MB, MB);
    return vid;
  }

  for (const alg of ['cp', 'rsync', 'rclone'] as const)
    for (const format of ['raw', 'qcow2'] as const)
      it(`${alg} clones a ${format} volume for the requester: equal bytes, then independent`, async function () {
        if (!t.d.daemon.tools()[alg]) skipBecause(this, `${alg} is not installed`);
        const src = await sourceWithData({ format });
        const res = await t.d.post('clone', { volume_id: src, creatorID: OTHER, name: 'my-copy', alg }).expect(200);
        const vid = res.body.vid as string;
        expect(res.body).to.deep.equal({
          alg: 'cp', bootable: false, bus: 'virtio', clonable: true, creatorID: OTHER, img_format: format, name: 'my-copy',
          private: false, readonly: false, shareable: false, size: 0.1, vid, labels: { env: 'prod' },
        });
        expect(vid).to.match(/^[0-9a-f]{32}$/).and.not.equal(src);
        expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal([path.basename(dataOf(vid, format)), 'meta.json']);
        expect(await sameBytes(dataOf(src, format), dataOf(vid, format))).to.equal(true);

        await writePattern(dataOf(vid, format), format, 0x11, 0, MB);
        expect(await hasPattern(dataOf(src, format), format, 0xab, 0, MB)).to.equal(true);
        await writePattern(dataOf(src, format), format, 0x22, 60 * MB, MB);
        expect(await hasPattern(dataOf(vid, format), format, 0xcd, 60 * MB, MB)).to.equal(true);

        const info = (await t.d.post('info', { volume_id: vid, client_uid: OTHER }).expect(200)).body;
        expect(info).to.include({ creatorID: OTHER, size: 100_000_256, format });
        expect(info.labels).to.deep.equal({ env: 'prod' });
        const mine = (await t.d.post('accessible', { client_uid: OTHER, labels: { env: 'prod' } }).expect(200)).body;
        expect(mine.filter((v: { own: boolean }) => v.own).map((v: { volumeID: string }) => v.volumeID)).to.deep.equal([vid]);
      });

  it('keeps the source private to its owner, takes the request name/privacy/labels, and refuses what may not be cloned', async () => {
    const secret = await sourceWithData({ private: true });
    await t.d.post('clone', { volume_id: secret, creatorID: OTHER }).expect(404);
    const copy = (await t.d.post('clone', { volume_id: secret, creatorID: OWNER, labels: { tier: 'gold' } }).expect(200)).body;
    expect(copy).to.include({ private: true, name: 'test-create', creatorID: OWNER });
    expect(copy.labels).to.deep.equal({ env: 'prod', tier: 'gold' });
    const open = (await t.d.post('clone', { volume_id: secret, creatorID: OWNER, name: 'open-copy', private: false }).expect(200)).body;
    expect(open).to.include({ private: false, name: 'open-copy', creatorID: OWNER });
    expect(JSON.parse(await fs.readFile(path.join(volDir(open.vid), 'meta.json'), 'utf8'))).to.include({ private: false, name: 'open-copy' });
    expect((await t.d.post('info', { volume_id: open.vid, client_uid: OTHER }).expect(200)).body).to.include({ volumeID: open.vid, private: false });

    const fixed = (await t.d.post('create', seedCreateBody({ clonable: false, alg: 'no' })).expect(200)).body.vid;
    const before = await snapshotTree(t.mnt);
    expect((await t.d.post('clone', { volume_id: fixed, creatorID: OWNER }).expect(403)).body).to.deep.equal({
      error: `volume ${fixed} is not clonable`, code: 'forbidden', vid: fixed,
    });
    await t.d.post('clone', { volume_id: secret, creatorID: OWNER, alg: 'no' }).expect(400);
    await t.d.post('clone', { volume_id: secret }).expect(400);
    expect(await snapshotTree(t.mnt)).to.deep.equal(before);
  });

  it("clones a cloud image (cloudinit: true, the seed's own example meta.json) as a template, but not a cloud-init seed ISO", async () => {
    const handMade = async (uid: string, meta: Record<string, unknown>, data: string) => {
      await fs.mkdir(volDir(uid));
      await fs.writeFile(path.join(volDir(uid), 'meta.json'), JSON.stringify(meta));
      await execa('qemu-img', ['create', '-q', '-f', data.endsWith('.qcow2') ? 'qcow2' : 'raw', path.join(volDir(uid), data), '1M']);
      await t.d.daemon.ctx.index.reloadDir(volDir(uid));
    };
    const image = 'c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1';
    await handMade(image, {
      creatorID: OWNER, name: 'cloudinit-ubuntu', private: false, bootable: true, readonly: false, shareable: false,
      clonable: true, alg: 'cp', format: 'qcow2', bus: 'virtio', cloudinit: true, ceph: false,
    }, 'data.qcow2');
    const copy = (await t.d.post('clone', { volume_id: image, creatorID: OTHER, name: 'vm-disk' }).expect(200)).body;
    expect(copy).to.include({ creatorID: OTHER, name: 'vm-disk', bootable: true, img_format: 'qcow2' });
    expect((await t.d.post('info', { volume_id: copy.vid }).expect(200)).body).to.include({ cloudinit: true, bootable: true });

    const seed = 'c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2';
    await handMade(seed, { ...seedCreateBody(), format: 'iso', readonly: true, bus: 'sata', cloudinit: true, clonable: true, alg: 'cp', size: 1024 * 1024 }, 'data.iso');
    const before = await snapshotTree(t.mnt);
    expect((await t.d.post('clone', { volume_id: seed, creatorID: OWNER }).expect(400)).body.error).to.match(/^a cloud-init seed volume cannot be cloned/);
    expect(await snapshotTree(t.mnt)).to.deep.equal(before);
  });

  it('counts clones against the quota (507 when the root is full) and refuses a source exported read-write', async () => {
    const src = await sourceWithData();
    await t.d.post('clone', { volume_id: src, creatorID: OWNER }).expect(200);
    await t.d.post('clone', { volume_id: src, creatorID: OWNER }).expect(200);
    await t.d.post('create', seedCreateBody({ size: 0.01 })).expect(200);
    const full = await t.d.post('clone', { volume_id: src, creatorID: OWNER }).expect(507);
    expect(full.body.code).to.equal('no_room');

    await t.d.post('destroy', { volume_id: (await t.d.post('accessible', { client_uid: OWNER })).body.find((v: { size: number }) => v.size === 10_000_384).volumeID }).expect(200);
    const marker = path.join(volDir(src), `iqn.2004-10.cloud.elemento:01:${'0'.repeat(32)}.exported`);
    await fs.writeFile(marker, '');
    await t.d.daemon.ctx.index.reloadDir(volDir(src));
    expect((await t.d.post('clone', { volume_id: src, creatorID: OWNER }).expect(409)).body.error).to.equal(`volume ${src} is exported and cannot be cloned while writable`);
    // Exported read-only (made read-only before its export: the flag does not change under an export).
    await fs.rm(marker);
    await t.d.post('update', { vid: src, creatorID: OWNER, readonly: true }).expect(200);
    await fs.writeFile(marker, '');
    await t.d.daemon.ctx.index.reloadDir(volDir(src));
    await t.d.post('clone', { volume_id: src, creatorID: OWNER }).expect(200);
  });

  it("refuses (400, before claiming anything) a clone whose labels, the source's and the request's, would be more than a volume may have", async () => {
    const labels = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, 'v']));
    const src = await sourceWithData({ labels });
    const before = await snapshotTree(t.mnt);
    const res = await t.d.post('clone', { volume_id: src, creatorID: OWNER, labels: { x: '1' } }).expect(400);
    expect(res.body).to.deep.equal({ error: "the clone would carry 65 labels (the source's and the request's), more than the 64 a volume may have", code: 'bad_request', field: 'labels' });
    expect(await snapshotTree(t.mnt)).to.deep.equal(before);
    await t.d.post('clone', { volume_id: src, creatorID: OWNER, labels: { k0: 'changed' } }).expect(200);
  });

  it('a cancelled clone job leaves no trace and the source untouched', async () => {
    const src = (await t.d.post('create', seedCreateBody({ clonable: true, alg: 'cp', format: 'raw', size: 1 })).expect(200)).body.vid;
    await writePattern(dataOf(src, 'raw'), 'raw', 0x5a, 0, 768 * MB);
    const before = await snapshotTree(t.mnt);
    const res = await t.d.post('clone', { volume_id: src, creatorID: OWNER, async: true }).expect(202);
    const job = res.body.job as string;
    const cancelled = (await t.d.api.delete(`/api/v1.0/jobs/${job}`).expect(200)).body;
    expect(cancelled).to.include({ id: job, kind: 'clone', vid: src, state: 'cancelled', error: 'cancelled' });
    // The half-made volume left through the root's bin, which it leaves empty.
    expect(await fs.readdir(path.join(t.mnt, 'a', '.elemento-bin'))).to.deep.equal([]);
    const { 'a/.elemento-bin/': _bin, ...after } = await snapshotTree(t.mnt);
    expect(after).to.deep.equal(before);
    expect(await hasPattern(dataOf(src, 'raw'), 'raw', 0x5a, 700 * MB, MB)).to.equal(true);
    expect((await t.d.post('accessible', { client_uid: OWNER }).expect(200)).body.map((v: { volumeID: string }) => v.volumeID)).to.deep.equal([src]);
  });

  it('runs a clone as a job with progress and the create answer as its result', async () => {
    const src = await sourceWithData({ format: 'raw' });
    const job = (await t.d.post('clone', { volume_id: src, creatorID: OWNER, alg: 'cp', async: true }).expect(202)).body.job as string;
    let last: Record<string, unknown> = {};
    await waitFor(async () => {
      last = (await t.d.api.get(`/api/v1.0/jobs/${job}`).expect(200)).body;
      return last.state !== 'running';
    }, 30_000, 'the clone job');
    expect(last).to.include({ kind: 'clone', vid: src, state: 'done', percent: 100 });
    const result = last.result as { vid: string; img_format: string };
    expect(result.img_format).to.equal('raw');
    expect(await sameBytes(dataOf(src, 'raw'), dataOf(result.vid, 'raw'))).to.equal(true);
  });

  it('answers 501 for an algorithm whose tool is not installed, claiming nothing', async () => {
    const src = await sourceWithData();
    const real = new ExecaRunner();
    const without = { run: real.run.bind(real), which: (t: ToolName) => (t === 'rclone' ? null : real.which(t)) };
    const bare = new Daemon(t.d.daemon.config, t.d.daemon.log, without);
    await bare.start();
    try {
      const { createApp } = await import('../../src/api/app.js');
      const supertest = (await import('supertest')).default;
      const before = await snapshotTree(t.mnt);
      const res = await supertest(createApp(bare)).post('/api/v1.0/clone').send({ volume_id: src, creatorID: THIRD, alg: 'rclone' }).expect(501);
      expect(res.body).to.include({ error: 'clone algorithm rclone needs rclone, which is not installed on this storage host', code: 'not_supported' });
      expect(await snapshotTree(t.mnt)).to.deep.equal(before);
    } finally {
      await bare.stop();
    }
  });

  it('a clone cut short by a crash is removed at the next start, and its source unlocked', async () => {
    const tree = await makeTree({ a: {} });
    const DEAD = '0000000000000000000000000000dead';
    try {
      const first = await startTestDaemon(tree);
      const src = (await first.post('create', seedCreateBody({ clonable: true, alg: 'cp', format: 'raw', size: 0.01 })).expect(200)).body.vid;
      await first.stop();
      // What a daemon killed mid-copy leaves: the source's marker, a claimed volume with half its data.
      const srcDir = path.join(tree, 'a', `vid.${src}.elimg`);
      await fs.writeFile(path.join(srcDir, `elemento.clone.${DEAD}.ignore`), '{}');
      const half = path.join(tree, 'a', `vid.${'c'.repeat(32)}.elimg`);
      await fs.mkdir(half);
      await fs.writeFile(path.join(half, 'meta.json'), (await fs.readFile(path.join(srcDir, 'meta.json'), 'utf8')).replace(src, 'c'.repeat(32)));
      await fs.writeFile(path.join(half, `elemento.create.${DEAD}.ignore`), '{}');
      await fs.writeFile(path.join(half, `.data.tmp-${DEAD.slice(0, 12)}.img`), 'half');

      const second = await startTestDaemon(tree);
      try {
        expect((await fs.readdir(path.join(tree, 'a'))).filter((n) => n.startsWith('vid.'))).to.deep.equal([`vid.${src}.elimg`]);
        expect((await fs.readdir(srcDir)).sort()).to.deep.equal(['data.img', 'meta.json']);
        await second.post('clone', { volume_id: src, creatorID: OWNER }).expect(200);
      } finally {
        await second.stop();
      }
    } finally {
      await removeTree(tree);
    }
  });

  it('copies an ISO volume with its isoinfo.json', async () => {
    const iso = 'e'.repeat(32);
    const dir = path.join(t.mnt, 'a', `vid.${iso}.elimg`);
    await fs.mkdir(dir);
    await fs.writeFile(path.join(dir, 'data.iso'), Buffer.alloc(64 * 1024, 7));
    await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify({ volumeID: iso, creatorID: OWNER, name: 'tools', format: 'iso', size: 65536, iso_type: 'tool' }));
    await fs.writeFile(path.join(dir, 'isoinfo.json'), JSON.stringify({ isotype: 'tool', name: 'virtio-win' }));
    await t.d.daemon.ctx.index.reloadDir(dir);
    const copy = (await t.d.post('clone', { volume_id: iso, creatorID: OTHER }).expect(200)).body;
    expect(copy).to.include({ img_format: 'iso', name: 'tools', creatorID: OTHER });
    const copyDir = path.join(t.mnt, 'a', `vid.${copy.vid}.elimg`);
    expect((await fs.readdir(copyDir)).sort()).to.deep.equal(['data.iso', 'isoinfo.json', 'meta.json']);
    expect(await fs.readFile(path.join(copyDir, 'data.iso'))).to.deep.equal(await fs.readFile(path.join(dir, 'data.iso')));
    expect(JSON.parse(await fs.readFile(path.join(copyDir, 'isoinfo.json'), 'utf8'))).to.deep.equal({ isotype: 'tool', name: 'virtio-win' });
    expect((await t.d.post('info', { volume_id: copy.vid }).expect(200)).body).to.include({ iso_type: 'tool', format: 'iso' });
  });
});
