import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { imageInfo } from '../helpers/images.js';
import { makeTree, OWNER, removeTree, seedCreateBody, waitFor } from '../helpers/tree.js';

const DEAD_OP = '0000000000000000000000000000dead';

/**
 * What a daemon killed mid-operation leaves behind, made by hand, and what the next start makes
 * of it: nothing lost, nothing left that blocks the next operation.
 */
describe('recovery of what a crash left', () => {
  let mnt: string;
  let d: TestDaemon | undefined;
  const root = () => path.join(mnt, 'a');

  beforeEach(async () => {
    mnt = await makeTree({ a: { 'max-volumes': 2 } });
  });
  afterEach(async () => {
    await d?.stop();
    d = undefined;
    await removeTree(mnt);
  });

  async function createThenStop(body: Record<string, unknown> = {}): Promise<string> {
    d = await startTestDaemon(mnt);
    const { vid } = (await d.post('create', seedCreateBody(body)).expect(200)).body;
    await d.stop();
    d = undefined;
    return vid;
  }

  it('removes a volume whose create died before its data was published, freeing the quota', async () => {
    const vid = 'd'.repeat(32);
    const dir = path.join(root(), `vid.${vid}.elimg`);
    await fs.mkdir(dir);
    await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify({ volumeID: vid, creatorID: OWNER, size: 1e9, format: 'qcow2' }));
    await fs.writeFile(path.join(dir, `elemento.create.${DEAD_OP}.ignore`), '{}');
    await fs.writeFile(path.join(dir, `.data.tmp-${DEAD_OP.slice(0, 12)}.qcow2`), 'half');
    d = await startTestDaemon(mnt);
    expect(await fs.readdir(root())).to.not.include(`vid.${vid}.elimg`);
    await d.post('create', seedCreateBody()).expect(200);
    await d.post('create', seedCreateBody()).expect(200);
  });

  it("keeps an operator's second data file when the operation that died was no convert (only a convert makes one)", async () => {
    const vid = await createThenStop({ format: 'raw', size: 0.01 });
    const dir = path.join(root(), `vid.${vid}.elimg`);
    await fs.writeFile(path.join(dir, 'data.qcow2'), 'an operator backup');
    await fs.writeFile(path.join(dir, `elemento.update.${DEAD_OP}.ignore`), '{}');
    d = await startTestDaemon(mnt);
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['data.img', 'data.qcow2', 'meta.json']);
    expect(await fs.readFile(path.join(dir, 'data.qcow2'), 'utf8')).to.equal('an operator backup');
  });

  it('finishes a convert that died after the new image was renamed in (meta.json decides)', async () => {
    const vid = await createThenStop({ format: 'raw', size: 0.01 });
    const dir = path.join(root(), `vid.${vid}.elimg`);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', path.join(dir, 'data.img'), path.join(dir, 'data.qcow2')]);
    await fs.writeFile(path.join(dir, `elemento.convert.${DEAD_OP}.ignore`), '{}');
    d = await startTestDaemon(mnt);
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['data.img', 'meta.json']);
    await d.post('update/convert', { vid, creatorID: OWNER, format: 'qcow2' }).expect(200);
  });

  it('corrects meta.json after a resize that died before rewriting it', async () => {
    const vid = await createThenStop({ format: 'qcow2', size: 0.01 });
    const dir = path.join(root(), `vid.${vid}.elimg`);
    await execa('qemu-img', ['resize', '-q', '-f', 'qcow2', path.join(dir, 'data.qcow2'), '20000256']);
    await fs.writeFile(path.join(dir, `elemento.resize.${DEAD_OP}.ignore`), '{}');
    d = await startTestDaemon(mnt);
    expect((await d.post('info', { volume_id: vid }).expect(200)).body.size).to.equal(20000256);
    expect(JSON.parse(await fs.readFile(path.join(dir, 'meta.json'), 'utf8')).size).to.equal(20000256);
  });

  it('recovers a stale lock found at run time instead of obeying it forever, its holder\'s temp files removed', async () => {
    const vid = await createThenStop({ format: 'raw', size: 0.01 });
    const dir = path.join(root(), `vid.${vid}.elimg`);
    d = await startTestDaemon(mnt, { lockStaleMs: 2000 });
    // A dead holder's mutex, refreshed long ago, and its marker. Its mtime was set by the holder's
    // clock, which may be another host's: the lock is stale once it has not changed for lockStaleMs
    // of this daemon's time, so the first request meets it held, and a later one finds it recovered.
    await fs.mkdir(path.join(dir, '.elemento.lock'));
    const old = new Date(Date.now() - 60_000);
    await fs.utimes(path.join(dir, '.elemento.lock'), old, old);
    await fs.writeFile(path.join(dir, `elemento.update.${DEAD_OP}.ignore`), '{}');
    await fs.writeFile(path.join(dir, `.meta.tmp-${DEAD_OP.slice(0, 12)}.json`), '{"half');
    await d.post('update', { vid, creatorID: OWNER, name: 'after-crash' }).expect(409);
    await waitFor(async () => (await d!.post('update', { vid, creatorID: OWNER, name: 'after-crash' })).status === 200, 8000, 'the stale lock to be recovered');
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['data.img', 'meta.json']);
  });

  it('answers 409 while a live operation holds the lock', async () => {
    const vid = await createThenStop({ format: 'raw', size: 0.01 });
    const dir = path.join(root(), `vid.${vid}.elimg`);
    d = await startTestDaemon(mnt);
    const lock = await d.daemon.ctx.locks.acquireVolume(dir, 'convert', vid);
    try {
      await d.daemon.ctx.index.reloadDir(dir);
      const res = await d.post('update', { vid, creatorID: OWNER, name: 'x' }).expect(409);
      expect(res.body.error).to.equal(`volume ${vid} is locked by another operation (convert)`);
      await d.post('destroy', { volume_id: vid }).expect(409);
      expect((await d.post('info', { volume_id: vid }).expect(200)).body.locked).to.equal(true);
    } finally {
      await lock.release();
    }
    await d.post('destroy', { volume_id: vid }).expect(200);
  });

  it('purges the bin and sweeps temp files at start', async () => {
    const vid = await createThenStop({ format: 'raw', size: 0.01 });
    await fs.mkdir(path.join(root(), '.elemento-bin', `vid.${'e'.repeat(32)}.elimg.x`), { recursive: true });
    const dir = path.join(root(), `vid.${vid}.elimg`);
    await fs.writeFile(path.join(dir, '.meta.tmp-abcdef123456.json'), '{');
    d = await startTestDaemon(mnt);
    await d.daemon.ctx.purger.idle(); // the bin's leftovers are purged in the background after the start
    expect(await fs.readdir(path.join(root(), '.elemento-bin'))).to.deep.equal([]);
    expect(await fs.readdir(path.join(root()))).to.deep.equal(['.elemento-bin', 'settings.json', `vid.${vid}.elimg`].sort());
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['data.img', 'meta.json']);
    expect((await imageInfo(path.join(dir, 'data.img'))).format).to.equal('raw');
  });
});
