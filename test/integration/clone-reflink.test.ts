import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { hasPattern, writePattern } from '../helpers/images.js';
import { OWNER, seedCreateBody, skipBecause } from '../helpers/tree.js';

const MB = 1024 * 1024;
const GB = 1024 * MB;

/** Blocks in use on the filesystem holding `dir`, in bytes, after flushing it. */
async function usedBytes(dir: string): Promise<number> {
  await execa('sync', ['-f', dir]);
  const s = await fs.statfs(dir);
  return (s.blocks - s.bfree) * s.bsize;
}

/**
 * Clones on a real reflink filesystem: an XFS made with `-m reflink=1` in a file and loop-mounted
 * (needs root and the loop driver). A clone shares the source's blocks: whatever its size, it uses
 * no extra space, and it lands in the source's root even when another root has more free quota.
 */
describe('clone on a reflink filesystem (loop-mounted XFS)', function () {
  this.timeout(180_000);
  let work: string;
  let mnt: string;
  let mounted = false;
  let d: TestDaemon | undefined;
  let unavailable: string | null = null;

  before(async () => {
    if (process.getuid?.() !== 0) return void (unavailable = 'loop-mounting an XFS image needs root');
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-xfs-'));
    const image = path.join(work, 'xfs.img');
    mnt = path.join(work, 'mnt');
    await fs.mkdir(mnt);
    try {
      await execa('truncate', ['-s', '4G', image]);
      await execa('mkfs.xfs', ['-q', '-m', 'reflink=1', image]);
      await execa('mount', ['-o', 'loop', image, mnt]);
      mounted = true;
    } catch (err) {
      unavailable = `an XFS image with reflink could not be made and loop-mounted here (${(err as Error).message.split('\n')[0]})`;
      return;
    }
    // a: less free quota than b, so only the reflink preference can put a clone of a's volume in a.
    for (const [root, settings] of [['a', { 'max-total-size': '10T' }], ['b', { 'max-total-size': '20T', 'max-volumes': 1 }]] as const) {
      await fs.mkdir(path.join(mnt, root));
      await fs.writeFile(path.join(mnt, root, 'settings.json'), JSON.stringify(settings));
    }
    d = await startTestDaemon(mnt);
  });

  after(async () => {
    await d?.stop();
    if (mounted) await execa('umount', [mnt]).catch(() => execa('umount', ['-l', mnt]));
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  it('clones a volume holding 2 GB of data with no extra blocks, in the source root', async function () {
    if (unavailable || !d) skipBecause(this, unavailable ?? 'the daemon did not start');
    // The filler takes b's only slot, so the source goes to a; then the filler goes.
    const filler = (await d.post('create', seedCreateBody({ size: 0.01 })).expect(200)).body.vid;
    const src = (await d.post('create', seedCreateBody({ format: 'raw', size: 2.5, clonable: true, alg: 'cp' })).expect(200)).body.vid;
    await d.post('destroy', { volume_id: filler }).expect(200);
    const srcData = path.join(mnt, 'a', `vid.${src}.elimg`, 'data.img');
    for (let i = 0; i < 4; i++) await writePattern(srcData, 'raw', 0x40 + i, i * 512 * MB, 512 * MB);

    const before = await usedBytes(mnt);
    const clone = (await d.post('clone', { volume_id: src, creatorID: OWNER, name: 'big-clone' }).expect(200)).body.vid;
    const grown = (await usedBytes(mnt)) - before;

    const cloneData = path.join(mnt, 'a', `vid.${clone}.elimg`, 'data.img');
    expect((await fs.stat(cloneData)).size).to.equal(2_500_000_256);
    expect(grown, `the clone took ${grown} bytes`).to.be.below(16 * MB);
    for (let i = 0; i < 4; i++) expect(await hasPattern(cloneData, 'raw', 0x40 + i, i * 512 * MB + 100 * MB, MB)).to.equal(true);
    expect(await hasPattern(cloneData, 'raw', 0, 2 * GB + MB, MB)).to.equal(true);

    // Shared blocks are copied on write: the source keeps its bytes.
    await writePattern(cloneData, 'raw', 0x99, 0, MB);
    expect(await hasPattern(srcData, 'raw', 0x40, 0, MB)).to.equal(true);
  });

  it('clones a tiny volume the same way', async function () {
    if (unavailable || !d) skipBecause(this, unavailable ?? 'the daemon did not start');
    const src = (await d.post('create', seedCreateBody({ format: 'qcow2', size: 0.01, clonable: true, alg: 'cp' })).expect(200)).body.vid;
    const srcData = path.join(d.daemon.ctx.index.get(src)!.dir, 'data.qcow2');
    await writePattern(srcData, 'qcow2', 0x77, 0, MB);
    const before = await usedBytes(mnt);
    const clone = (await d.post('clone', { volume_id: src, creatorID: OWNER }).expect(200)).body.vid;
    expect((await usedBytes(mnt)) - before).to.be.below(16 * MB);
    const cloneData = path.join(d.daemon.ctx.index.get(clone)!.dir, 'data.qcow2');
    expect(await hasPattern(cloneData, 'qcow2', 0x77, 0, MB)).to.equal(true);
  });
});
