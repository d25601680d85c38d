import { promises as fs } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { BOOT_ID } from '../../src/store/lock-owner.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { makeTree, OWNER, removeTree, seedCreateBody, waitFor } from '../helpers/tree.js';

const DEAD_OP = '0000000000000000000000000000dead';

/** The pid of a process that has ended (so that no process of this host has it, for now). */
async function deadPid(): Promise<number> {
  const child = execa('true');
  await child;
  return child.pid!;
}

/**
 * The start-up sweep and its later passes: what a daemon killed a moment ago left, with its lock
 * still fresh (a systemd restart), is recovered, never obeyed forever.
 */
describe('the sweep of what a killed daemon left a moment ago', function () {
  this.timeout(30_000);
  let mnt: string;
  let d: TestDaemon | undefined;
  const root = () => path.join(mnt, 'a');

  beforeEach(async () => (mnt = await makeTree({ a: { 'max-volumes': 3 } })));
  afterEach(async () => {
    await d?.stop();
    d = undefined;
    await removeTree(mnt);
  });

  /** A volume made by a daemon that is then stopped, left locked as a killed one leaves it. */
  async function lockedByDeadDaemon(marker: string): Promise<string> {
    d = await startTestDaemon(mnt);
    const { vid } = (await d.post('create', seedCreateBody({ format: 'raw', size: 0.01 })).expect(200)).body;
    await d.stop();
    d = undefined;
    const dir = path.join(root(), `vid.${vid}.elimg`);
    await fs.mkdir(path.join(dir, '.elemento.lock'));
    await fs.writeFile(path.join(dir, `elemento.update.${DEAD_OP}.ignore`), marker);
    return dir;
  }

  it('breaks at once a fresh lock whose marker names a process of this host that no longer runs', async () => {
    const dir = await lockedByDeadDaemon(JSON.stringify({ purpose: 'update', host: hostname(), boot: BOOT_ID, pid: await deadPid() }));
    d = await startTestDaemon(mnt, { lockStaleMs: 10_000 });
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['data.img', 'meta.json']);
  });

  it('breaks at once the lock of a process of this host that died a minute before the restart (its mutex long unrefreshed)', async () => {
    const dir = await lockedByDeadDaemon(JSON.stringify({ purpose: 'update', host: hostname(), boot: BOOT_ID, pid: await deadPid() }));
    const minuteAgo = new Date(Date.now() - 60_000);
    await fs.utimes(path.join(dir, '.elemento.lock'), minuteAgo, minuteAgo);
    d = await startTestDaemon(mnt, { lockStaleMs: 10_000 });
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['data.img', 'meta.json']);
    await d.post('update', { vid: path.basename(dir).split('.')[1], creatorID: OWNER, name: 'after the restart' }).expect(200);
  });

  it('does not break at once a lock of a host that has the same name but not this boot (another host sharing the tree, cloned with its name)', async () => {
    const marker = JSON.stringify({ purpose: 'update', host: hostname(), boot: '00000000-0000-4000-8000-000000000000', pid: await deadPid() });
    const dir = await lockedByDeadDaemon(marker);
    d = await startTestDaemon(mnt, { lockStaleMs: 10_000 });
    await new Promise((r) => setTimeout(r, 1000));
    expect((await fs.readdir(dir)).sort()).to.deep.equal(['.elemento.lock', 'data.img', `elemento.update.${DEAD_OP}.ignore`, 'meta.json']);
  });

  it('does not break a lock whose marker names a process of this host that still runs (another daemon of the host)', async () => {
    const alive = execa('sleep', ['30']);
    try {
      const dir = await lockedByDeadDaemon(JSON.stringify({ purpose: 'update', host: hostname(), boot: BOOT_ID, pid: alive.pid }));
      d = await startTestDaemon(mnt, { lockStaleMs: 10_000 });
      await new Promise((r) => setTimeout(r, 1000));
      expect((await fs.readdir(dir)).sort()).to.deep.equal(['.elemento.lock', 'data.img', `elemento.update.${DEAD_OP}.ignore`, 'meta.json']);
      const refused = await d.post('update', { vid: path.basename(dir).split('.')[1], creatorID: OWNER, name: 'x' }).expect(409);
      expect(refused.body.error).to.equal(`volume ${path.basename(dir).split('.')[1]} is locked by another operation (update)`);
    } finally {
      alive.kill();
      await alive.catch(() => undefined);
    }
  });

  it('recovers a fresh lock whose marker was cut short once it is stale, and does not hold up the other volumes', async () => {
    const cutShort = await lockedByDeadDaemon('');
    const provable = await lockedByDeadDaemon(JSON.stringify({ purpose: 'update', host: hostname(), boot: BOOT_ID, pid: await deadPid() }));
    d = await startTestDaemon(mnt, { lockStaleMs: 2000 });
    expect((await fs.readdir(provable)).sort()).to.deep.equal(['data.img', 'meta.json']);
    await waitFor(async () => (await fs.readdir(cutShort)).length === 2, 8000, 'the stale lock to be recovered');
    expect((await fs.readdir(cutShort)).sort()).to.deep.equal(['data.img', 'meta.json']);
  });

  it('removes a dead claim (a volume directory without meta.json or data) and frees its quota', async () => {
    for (const uid of ['1', '2', '3']) await fs.mkdir(path.join(root(), `vid.${uid.repeat(32)}.elimg`));
    d = await startTestDaemon(mnt, { lockStaleMs: 2000 });
    expect((await d.post('accessible', { client_uid: 'f'.repeat(32) }).expect(200)).body).to.deep.equal([]);
    await waitFor(async () => (await fs.readdir(root())).filter((n) => n.startsWith('vid.')).length === 0, 8000, 'the dead claims to go');
    await d.post('create', seedCreateBody({ format: 'raw', size: 0.01 })).expect(200);
  });

  it("never removes a volume directory holding anything of an operator's, even without meta.json or with a create marker left in it", async () => {
    const handMade = path.join(root(), `vid.${'7'.repeat(32)}.elimg`);
    await fs.mkdir(handMade);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(handMade, 'disk.qcow2'), '10M']);
    await fs.writeFile(path.join(handMade, 'README'), 'copied from host 3, meta.json to write\n');
    const markedBroken = path.join(root(), `vid.${'8'.repeat(32)}.elimg`);
    await fs.mkdir(markedBroken);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(markedBroken, 'data.qcow2'), '10M']);
    await fs.writeFile(path.join(markedBroken, 'meta.json'), '{"volumeID": ');
    await fs.writeFile(path.join(markedBroken, `elemento.create.${DEAD_OP}.ignore`), '');
    const deadClaim = path.join(root(), `vid.${'9'.repeat(32)}.elimg`);
    await fs.mkdir(path.join(deadClaim, '.elemento.lock'), { recursive: true });
    await fs.writeFile(path.join(deadClaim, `elemento.create.${DEAD_OP}.ignore`), '');

    d = await startTestDaemon(mnt, { lockStaleMs: 2000 });
    await waitFor(async () => !(await fs.readdir(root())).includes(path.basename(deadClaim)), 8000, 'the dead claim to go');
    await d.post('info', { volume_id: '8'.repeat(32) }).expect(409);
    await new Promise((r) => setTimeout(r, 2500));
    expect((await fs.readdir(handMade)).sort()).to.deep.equal(['README', 'disk.qcow2']);
    expect((await fs.readdir(markedBroken)).sort()).to.include.members(['data.qcow2', 'meta.json']);
    const broken = (await d.api.get('/api/v1.0/status').expect(200)).body.broken as Array<{ vid: string }>;
    expect(broken.map((b) => b.vid)).to.include.members(['7'.repeat(32), '8'.repeat(32)]);
  });
});
