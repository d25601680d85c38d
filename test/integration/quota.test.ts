import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execa } from 'execa';
import { makeTree, removeTree, seedCreateBody, skipBecause, waitFor } from '../helpers/tree.js';
import { rootLockWait } from '../../src/store/locks.js';

describe('placement and quotas', () => {
  let mnt: string;
  let d: TestDaemon | undefined;
  afterEach(async () => {
    await d?.stop();
    await removeTree(mnt);
  });

  it('24 concurrent creates on a 5-volume root give exactly 5 volumes and 19 clean refusals', async () => {
    mnt = await makeTree({ a: { 'max-volumes': 5 } });
    d = await startTestDaemon(mnt);
    const results = await Promise.all(Array.from({ length: 24 }, (_, i) => d!.post('create', seedCreateBody({ name: `v${i}`, format: i % 2 ? 'raw' : 'qcow2' }))));
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 507);
    expect(ok).to.have.length(5);
    expect(refused).to.have.length(19);
    for (const r of refused) expect(r.body.error).to.equal('no storage root has room for a volume of 1000000000 bytes');
    const dirs = (await fs.readdir(path.join(mnt, 'a'))).filter((n) => n.startsWith('vid.'));
    expect(dirs.sort()).to.deep.equal(ok.map((r) => `vid.${r.body.vid}.elimg`).sort());
    for (const dir of dirs) expect((await fs.readdir(path.join(mnt, 'a', dir))).filter((f) => !f.startsWith('.'))).to.have.length(2);
  });

  it('a burst of creates on one root waits its turn: none answers 409 "busy" for the others of this daemon', async () => {
    mnt = await makeTree({ a: { 'max-volumes': 50 } });
    d = await startTestDaemon(mnt);
    // The wait for the root's lock shortened as a burst of 200 on 12,500 volumes made it short (30 s).
    const wait = rootLockWait.ms;
    rootLockWait.ms = 100;
    try {
      const results = await Promise.all(Array.from({ length: 60 }, (_, i) => d!.post('create', seedCreateBody({ name: `v${i}`, format: 'raw', size: 0.001 }))));
      expect(results.map((r) => r.status).sort()).to.deep.equal([...Array(50).fill(200), ...Array(10).fill(507)]);
    } finally {
      rootLockWait.ms = wait;
    }
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.roots[0]).to.include({ volumes: 50 });
  });

  it('status and cancreate follow each change of the usage they count once per change of the index', async () => {
    mnt = await makeTree({ a: { 'max-total-size': '10G' }, b: { 'max-total-size': '10G' } });
    d = await startTestDaemon(mnt, { watch: true });
    const owner = seedCreateBody().creatorID;
    const usage = async () => Object.fromEntries((await d!.api.get('/api/v1.0/status').expect(200)).body.roots.map((r: { path: string; volumes: number; usedBytes: number }) => [path.basename(r.path), [r.volumes, r.usedBytes]]));
    const a = (await d.post('create', seedCreateBody({ size: 4, format: 'raw' })).expect(200)).body.vid;
    const b = (await d.post('create', seedCreateBody({ size: 3, format: 'raw' })).expect(200)).body.vid;
    expect(await usage()).to.deep.equal({ a: [1, 4e9], b: [1, 3e9] });
    expect((await d.post('cancreate', { size: 7 }).expect(200)).body).to.include({ roots: 1 });
    await d.post('update/resize', { vid: b, creatorID: owner, size: 5 }).expect(200);
    expect(await usage()).to.deep.equal({ a: [1, 4e9], b: [1, 5e9] });
    expect((await d.post('cancreate', { size: 6 }).expect(200)).body).to.include({ roots: 1 });
    // An operator's copy of a into b: each copy counts in its own root, and a change of the copy is counted.
    const copy = path.join(mnt, 'b', `vid.${a}.elimg`);
    await execa('cp', ['-a', '--sparse=always', path.join(mnt, 'a', `vid.${a}.elimg`), copy]);
    await waitFor(async () => (await usage()).b[0] === 2, 3000, 'the copy counted');
    expect(await usage()).to.deep.equal({ a: [1, 4e9], b: [2, 9e9] });
    const meta = JSON.parse(await fs.readFile(path.join(copy, 'meta.json'), 'utf8'));
    await fs.writeFile(path.join(copy, 'meta.json'), JSON.stringify({ ...meta, size: 1e9 }));
    await fs.truncate(path.join(copy, 'data.img'), 1e9);
    await waitFor(async () => (await usage()).b[1] === 6e9, 3000, 'the smaller copy counted');
    await fs.rm(copy, { recursive: true });
    await waitFor(async () => (await usage()).b[0] === 1, 3000, 'the copy gone');
    await d.post('destroy', { volume_id: a }).expect(200);
    expect(await usage()).to.deep.equal({ a: [0, 0], b: [1, 5e9] });
  });

  it("a root's lock held by another (a peer on the shared tree) answers the creates queued behind each other 409 together, not one wait after another", async () => {
    mnt = await makeTree({ a: {} });
    d = await startTestDaemon(mnt);
    // The peer's mutex, fresh all along (its staleness is judged over ELEMENTO_LOCK_STALE_MS, 10 s).
    await fs.mkdir(path.join(mnt, 'a', '.elemento-root.lock'));
    const wait = rootLockWait.ms;
    rootLockWait.ms = 400;
    try {
      const started = Date.now();
      const results = await Promise.all(Array.from({ length: 12 }, (_, i) => d!.post('create', seedCreateBody({ name: `v${i}`, format: 'raw', size: 0.001 })).then((r) => ({ status: r.status, ms: Date.now() - started }))));
      expect(results.map((r) => r.status)).to.deep.equal(Array(12).fill(409));
      // Each used to wait its own 400 ms once at the head: the last answered after ~5 s.
      expect(Math.max(...results.map((r) => r.ms))).to.be.below(2500);
    } finally {
      rootLockWait.ms = wait;
    }
    // Once the peer is gone, the next create does not inherit the old wait.
    await fs.rm(path.join(mnt, 'a', '.elemento-root.lock'), { recursive: true });
    await d.post('create', seedCreateBody({ name: 'after', format: 'raw', size: 0.001 })).expect(200);
  });

  it('max-total-size holds under concurrent creates and counts every volume', async () => {
    mnt = await makeTree({ a: { 'max-total-size': '3G' } });
    d = await startTestDaemon(mnt);
    const results = await Promise.all(Array.from({ length: 10 }, () => d!.post('create', seedCreateBody({ size: 1 }))));
    expect(results.filter((r) => r.status === 200)).to.have.length(3);
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.roots[0]).to.include({ volumes: 3, usedBytes: 3e9 });
  });

  it('max-total-size holds when a resize and a create race for the same room', async () => {
    mnt = await makeTree({ a: { 'max-total-size': '10G' } });
    d = await startTestDaemon(mnt);
    const owner = seedCreateBody().creatorID;
    for (let round = 0; round < 8; round++) {
      const { vid } = (await d.post('create', seedCreateBody({ size: 4, format: 'raw' })).expect(200)).body;
      const [resize, create] = await Promise.all([d.post('update/resize', { vid, creatorID: owner, size: 8 }), d.post('create', seedCreateBody({ size: 4, format: 'raw' }))]);
      expect([resize.status, create.status].sort(), `round ${round}`).to.deep.equal([200, 507]);
      const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
      expect(status.roots[0].usedBytes).to.equal(8e9);
      for (const v of [vid, create.body.vid].filter(Boolean)) await d.post('destroy', { volume_id: v }).expect(200);
    }
  });

  it('a resize counts only what the volume grows by against max-total-size', async () => {
    mnt = await makeTree({ a: { 'max-total-size': '5G' } });
    d = await startTestDaemon(mnt);
    const { vid } = (await d.post('create', seedCreateBody({ size: 3, format: 'raw' })).expect(200)).body;
    await d.post('update/resize', { vid, creatorID: seedCreateBody().creatorID, size: 5 }).expect(200);
    const past = await d.post('update/resize', { vid, creatorID: seedCreateBody().creatorID, size: 6 }).expect(507);
    expect(past.body.error).to.equal(`the volume cannot grow to 6000000000 bytes: ${path.join(mnt, 'a')} has 0 bytes of quota left`);
    expect((await d.api.get('/api/v1.0/status').expect(200)).body.roots[0]).to.include({ volumes: 1, usedBytes: 5e9 });
    expect((await fs.stat(path.join(mnt, 'a', `vid.${vid}.elimg`, 'data.img'))).size).to.equal(5e9);
  });

  it('max-volume-size refuses a volume too large, and resize past it', async () => {
    mnt = await makeTree({ a: { 'max-volume-size': '2G' } });
    d = await startTestDaemon(mnt);
    const res = await d.post('create', seedCreateBody({ size: 3 })).expect(507);
    expect(res.body.reasons).to.deep.equal([`volumes of ${path.join(mnt, 'a')} may not exceed 2000000000 bytes`]);
    const { vid } = (await d.post('create', seedCreateBody({ size: 1, format: 'raw' })).expect(200)).body;
    await d.post('update/resize', { vid, creatorID: seedCreateBody().creatorID, size: 3 }).expect(507);
    await d.post('update/resize', { vid, creatorID: seedCreateBody().creatorID, size: 2 }).expect(200);
  });

  it('puts a new volume in the root with the most free quota', async () => {
    mnt = await makeTree({ small: { 'max-total-size': '5G' }, 'data/big': { 'max-total-size': '50G' } });
    d = await startTestDaemon(mnt);
    const { vid } = (await d.post('create', seedCreateBody()).expect(200)).body;
    expect(await fs.readdir(path.join(mnt, 'data', 'big'))).to.include(`vid.${vid}.elimg`);
  });

  it('passes over a root mounted read-only: the volume goes to the next root with room', async function () {
    if (process.getuid?.() !== 0) skipBecause(this, 'a read-only bind mount needs root');
    mnt = await makeTree({ small: { 'max-total-size': '5G' }, big: { 'max-total-size': '50G' } });
    const big = path.join(mnt, 'big');
    await execa('mount', ['--bind', big, big]);
    try {
      await execa('mount', ['-o', 'remount,ro,bind', big]);
      d = await startTestDaemon(mnt);
      const { vid } = (await d.post('create', seedCreateBody()).expect(200)).body;
      expect(await fs.readdir(path.join(mnt, 'small'))).to.include(`vid.${vid}.elimg`);
      const full = await d.post('create', seedCreateBody({ size: 5 })).expect(507);
      expect(full.body.reasons).to.include(`${big} cannot be written (EROFS)`);
    } finally {
      await d?.stop();
      d = undefined;
      await execa('umount', [big]);
    }
  });

  it('answers 507 with a reason when no root exists at all', async () => {
    mnt = await makeTree({});
    d = await startTestDaemon(mnt);
    const res = await d.post('create', seedCreateBody()).expect(507);
    expect(res.body.reasons).to.deep.equal(['no storage root is configured']);
  });
});
