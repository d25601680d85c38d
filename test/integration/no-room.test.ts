import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { apiOf, treeViolations } from '../helpers/crash/invariants.js';
import { makeTree, removeTree, seedCreateBody, skipBecause, waitFor } from '../helpers/tree.js';

/** Mounts a tmpfs of `size` on `dir` (root only); answers why not when it cannot. */
async function mountTmpfs(dir: string, size: string): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root';
  const res = await execa('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { reject: false });
  return res.exitCode === 0 ? null : `mount -t tmpfs failed here: ${res.stderr.trim()}`;
}

async function unmount(dir: string): Promise<void> {
  const res = await execa('umount', [dir], { reject: false });
  if (res.exitCode !== 0) await execa('umount', ['-l', dir], { reject: false });
}

/** No room: a real full filesystem (tmpfs), and a root whose filesystem goes away. */
describe('no room and vanished roots', function () {
  this.timeout(60_000);
  let mnt: string;
  let d: TestDaemon | undefined;
  const mounted: string[] = [];

  beforeEach(async () => (mnt = await makeTree({})));
  afterEach(async () => {
    await d?.stop();
    d = undefined;
    for (const dir of mounted.splice(0)) await unmount(dir);
    await removeTree(mnt);
  });

  async function tmpfsRoot(ctx: Mocha.Context, name: string, settings: object): Promise<string> {
    const dir = path.join(mnt, name);
    await fs.mkdir(dir);
    const why = await mountTmpfs(dir, '20m');
    if (why) skipBecause(ctx, why);
    mounted.push(dir);
    await fs.writeFile(path.join(dir, 'settings.json'), JSON.stringify(settings));
    return dir;
  }

  it('answers 507 when the filesystem is full and leaves no partial volume', async function () {
    const root = await tmpfsRoot(this, 'small', {});
    // Fill the 20 MB filesystem but for 64 KB: meta.json fits, a qcow2 image (about 200 KB) does not.
    const { bavail, bsize } = await fs.statfs(root);
    await fs.writeFile(path.join(root, 'filler'), Buffer.alloc(Number(bavail) * Number(bsize) - 64 * 1024));
    d = await startTestDaemon(mnt);
    // status shows the filesystem nearly full, which quotas alone cannot say (none are set here).
    const [shown] = (await d.api.get('/api/v1.0/status').expect(200)).body.roots;
    expect(shown.diskSizeBytes).to.equal(20 * 1024 * 1024);
    expect(shown.diskFreeBytes).to.be.at.most(64 * 1024);
    const res = await d.post('create', seedCreateBody({ format: 'qcow2', size: 1 }));
    expect(res.status).to.equal(507);
    expect({ ...res.body, request: undefined }).to.deep.equal({ request: undefined, error: 'no room left on the filesystem for the new volume', code: 'no_room' });
    expect((await fs.readdir(root)).filter((n) => n !== '.elemento-bin').sort()).to.deep.equal(['filler', 'settings.json']);
    expect(await fs.readdir(path.join(root, '.elemento-bin')).catch(() => [])).to.deep.equal([]);
    await fs.rm(path.join(root, 'filler'));
    await d.post('create', seedCreateBody({ format: 'qcow2', size: 1 })).expect(200);
  });

  it('reports a root whose filesystem was unmounted as unavailable and never writes into its mount point', async function () {
    await fs.mkdir(path.join(mnt, 'a'));
    await fs.writeFile(path.join(mnt, 'a', 'settings.json'), JSON.stringify({ 'max-total-size': '1G' }));
    const b = await tmpfsRoot(this, 'b', {});
    d = await startTestDaemon(mnt);
    const api = apiOf(d);
    // b (unlimited) is preferred while it is there.
    const inB = (await d.post('create', seedCreateBody({ format: 'raw', size: 0.01 })).expect(200)).body.vid;
    expect(await fs.readdir(b)).to.include(`vid.${inB}.elimg`);
    await unmount(b);
    mounted.splice(mounted.indexOf(b), 1);
    expect(await fs.readdir(b)).to.deep.equal([]);
    // Before the index has noticed, the create goes elsewhere.
    const inA = (await d.post('create', seedCreateBody({ format: 'raw', size: 0.5 })).expect(200)).body.vid;
    expect(await fs.readdir(path.join(mnt, 'a'))).to.include(`vid.${inA}.elimg`);
    await waitFor(async () => (await api.get('status')).body.skipped.length === 1, 5000, 'status to report b');
    expect((await api.get('status')).body.skipped).to.deep.equal([{ path: b, reason: 'unavailable: settings.json is gone (filesystem unmounted?)' }]);
    expect((await api.get('status')).body.roots.map((r: { path: string }) => r.path)).to.deep.equal([path.join(mnt, 'a')]);
    // a is full now: 507, and still nothing in b's empty mount point.
    const full = await d.post('create', seedCreateBody({ format: 'raw', size: 0.6 }));
    expect(full.status).to.equal(507);
    expect(await fs.readdir(b)).to.deep.equal([]);
    expect(await treeViolations(api)).to.deep.equal([]);
  });
});
