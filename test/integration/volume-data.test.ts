import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { traceFlushes } from '../helpers/flushes.js';
import { hasPattern, imageInfo, writePattern } from '../helpers/images.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { makeTree, OWNER, removeTree, seedCreateBody, skipBecause } from '../helpers/tree.js';

const MB = 1024 * 1024;

/** The tree after each operation, read with the real qemu-img and qemu-io. */
describe('volumes on disk (real qemu-img)', () => {
  let mnt: string;
  let d: TestDaemon;
  const volDir = (vid: string) => path.join(mnt, 'a', `vid.${vid}.elimg`);
  const readMetaFile = async (vid: string) => JSON.parse(await fs.readFile(path.join(volDir(vid), 'meta.json'), 'utf8'));

  beforeEach(async () => {
    mnt = await makeTree({ a: {} });
    d = await startTestDaemon(mnt);
  });
  afterEach(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  for (const format of ['raw', 'qcow2'] as const)
    it(`create makes a ${format} image of the decimal size and a complete meta.json`, async () => {
      const { vid } = (await d.post('create', seedCreateBody({ format, size: 0.5 })).expect(200)).body;
      const files = (await fs.readdir(volDir(vid))).sort();
      const data = format === 'raw' ? 'data.img' : 'data.qcow2';
      expect(files).to.deep.equal([data, 'meta.json'].sort());
      const info = await imageInfo(path.join(volDir(vid), data));
      expect(info.format).to.equal(format);
      expect(info['virtual-size']).to.equal(500_000_256);
      expect(await readMetaFile(vid)).to.deep.equal({
        volumeID: vid,
        creatorID: OWNER,
        name: 'test-create',
        size: 500_000_256,
        format,
        private: false,
        bootable: false,
        readonly: false,
        shareable: false,
        clonable: false,
        alg: 'no',
        bus: 'virtio',
        cloudinit: false,
        ceph: false,
        labels: {},
      });
    });

  for (const format of ['raw', 'qcow2'] as const)
    it(`create flushes the ${format} image before the rename that publishes it, and the volume directory after`, async () => {
      const calls = await traceFlushes(mnt, () => d.post('create', seedCreateBody({ format })).expect(200));
      const publish = calls.findIndex((call) => /^rename \S+ a\/vid\.[0-9a-f]{32}\.elimg\/data\.(img|qcow2)$/.test(call));
      expect(publish, calls.join('\n')).to.be.at.least(0);
      const [, temp, data] = calls[publish].split(' ');
      expect(calls.slice(0, publish)).to.include(`sync ${temp}`);
      expect(calls.slice(publish + 1)).to.include(`sync ${path.dirname(data)}`);
    });

  for (const format of ['raw', 'qcow2'] as const)
    it(`later ${format} creates of the same size (from the blank-image cache) equal a fresh qemu-img create, bytes and allocation`, async () => {
      const data = format === 'raw' ? 'data.img' : 'data.qcow2';
      const size = format === 'raw' ? 0.02 : 0.5; // GB; a raw image is read whole below
      const vids: string[] = [];
      for (let i = 0; i < 3; i++) vids.push((await d.post('create', seedCreateBody({ format, size })).expect(200)).body.vid);
      const bare = path.join(mnt, `bare.${format}`);
      await execa('qemu-img', ['create', '-q', '-f', format, bare, String(size * 1e9)]);
      const bareStat = await fs.stat(bare);
      for (const vid of vids) {
        const file = path.join(volDir(vid), data);
        expect(await fs.readFile(file)).to.deep.equal(await fs.readFile(bare));
        const st = await fs.stat(file);
        expect([st.size, st.blocks]).to.deep.equal([bareStat.size, bareStat.blocks]);
        expect((await execa('qemu-img', ['check', '-q', '-f', format, file], { reject: false })).exitCode).to.be.oneOf([0, 63]);
      }
      // Written into, one volume does not change the next blank one.
      await writePattern(path.join(volDir(vids[0]), data), format, 0xab, 0, MB);
      const next = (await d.post('create', seedCreateBody({ format, size })).expect(200)).body.vid;
      expect(await fs.readFile(path.join(volDir(next), data))).to.deep.equal(await fs.readFile(bare));
    });

  it('data written into a volume survives resize and both converts', async () => {
    const { vid } = (await d.post('create', seedCreateBody({ format: 'qcow2', size: 0.1 })).expect(200)).body;
    await writePattern(path.join(volDir(vid), 'data.qcow2'), 'qcow2', 0xab, 0, MB);
    await writePattern(path.join(volDir(vid), 'data.qcow2'), 'qcow2', 0xcd, 50 * MB, MB);

    await d.post('update/resize', { vid, creatorID: OWNER, size: 0.2 }).expect(200);
    expect((await imageInfo(path.join(volDir(vid), 'data.qcow2')))['virtual-size']).to.equal(200_000_000);
    expect((await readMetaFile(vid)).size).to.equal(200_000_000);

    await d.post('update/convert', { vid, creatorID: OWNER, format: 'raw' }).expect(200);
    expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(['data.img', 'meta.json']);
    expect((await imageInfo(path.join(volDir(vid), 'data.img'))).format).to.equal('raw');
    expect((await readMetaFile(vid)).format).to.equal('raw');
    expect(await hasPattern(path.join(volDir(vid), 'data.img'), 'raw', 0xab, 0, MB)).to.equal(true);
    expect(await hasPattern(path.join(volDir(vid), 'data.img'), 'raw', 0xcd, 50 * MB, MB)).to.equal(true);

    await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2' }).expect(200);
    expect((await fs.readdir(volDir(vid))).sort()).to.deep.equal(['data.qcow2', 'meta.json']);
    expect(await hasPattern(path.join(volDir(vid), 'data.qcow2'), 'qcow2', 0xab, 0, MB)).to.equal(true);
    expect(await hasPattern(path.join(volDir(vid), 'data.qcow2'), 'qcow2', 0xcd, 50 * MB, MB)).to.equal(true);
    expect(await hasPattern(path.join(volDir(vid), 'data.qcow2'), 'qcow2', 0xab, 50 * MB, MB)).to.equal(false);
    // The replaced images left through the root's bin, purged after the answers.
    await d.daemon.ctx.purger.idle();
    expect(await fs.readdir(path.join(mnt, 'a', '.elemento-bin'))).to.deep.equal([]);
  });

  it('refuses to shrink, and a same-size resize or same-format convert changes nothing', async () => {
    const { vid } = (await d.post('create', seedCreateBody({ format: 'raw', size: 0.2 })).expect(200)).body;
    const res = await d.post('update/resize', { vid, creatorID: OWNER, size: 0.1 }).expect(400);
    expect(res.body.error).to.match(/volumes only grow/);
    await d.post('update/resize', { vid, creatorID: OWNER, size: 0.2 }).expect(200);
    await d.post('update/convert', { vid, creatorID: OWNER, format: 'raw' }).expect(200);
    expect((await imageInfo(path.join(volDir(vid), 'data.img')))['virtual-size']).to.equal(200_000_000);
  });

  it('a volume cannot be bootable and shareable, at create or update', async () => {
    await d.post('create', seedCreateBody({ bootable: true, shareable: true })).expect(400);
    const { vid } = (await d.post('create', seedCreateBody({ bootable: true })).expect(200)).body;
    const res = await d.post('update', { vid, creatorID: OWNER, shareable: true }).expect(400);
    expect(res.body).to.deep.equal({ error: 'a volume cannot be both bootable and shareable', code: 'bad_request', field: 'shareable' });
  });

  it('update refuses to change format or cloudinit', async () => {
    const { vid } = (await d.post('create', seedCreateBody({ format: 'raw' })).expect(200)).body;
    expect((await d.post('update', { vid, creatorID: OWNER, format: 'qcow2' }).expect(400)).body.field).to.equal('format');
    expect((await d.post('update', { vid, creatorID: OWNER, cloudinit: true }).expect(400)).body.field).to.equal('cloudinit');
    await d.post('update', { vid, creatorID: OWNER, format: 'raw', name: 'same-format-is-fine' }).expect(200);
  });

  it('a file-system "unique" root gives every image its own ext4 filesystem', async function () {
    if (!d.daemon.tools()['mkfs.ext4']) skipBecause(this, 'mkfs.ext4 (e2fsprogs) is not installed');
    const uniq = await makeTree({ u: { 'file-system': 'unique' } });
    const u = await startTestDaemon(uniq);
    try {
      for (const format of ['raw', 'qcow2']) {
        const { vid } = (await u.post('create', seedCreateBody({ format, size: 0.05 })).expect(200)).body;
        const data = path.join(uniq, 'u', `vid.${vid}.elimg`, format === 'raw' ? 'data.img' : 'data.qcow2');
        expect((await imageInfo(data)).format).to.equal(format);
        // The ext4 superblock magic 0xEF53 sits at byte 1080 of the disk.
        const raw = format === 'raw' ? data : `${data}.check.img`;
        if (format !== 'raw') await (await import('execa')).execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', data, raw]);
        const handle = await fs.open(raw, 'r');
        const buf = Buffer.alloc(2);
        await handle.read(buf, 0, 2, 1080);
        await handle.close();
        expect(buf.readUInt16LE(0)).to.equal(0xef53);
      }
    } finally {
      await u.stop();
      await removeTree(uniq);
    }
  });
});
