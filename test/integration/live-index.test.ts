import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import fse from 'fs-extra';
import { execa } from 'execa';
import { sweepAgain } from '../../src/store/sweep.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { spawnDaemon, stopDaemon } from '../helpers/process.js';
import { makeTree, OWNER, removeTree, seedCreateBody, snapshotTree, waitFor } from '../helpers/tree.js';

const HAND_MADE = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';

async function makeVolumeByHand(rootDir: string, uid: string, meta: object | string): Promise<string> {
  const staging = path.join(rootDir, '..', `staging-${uid}`);
  await fs.mkdir(staging, { recursive: true });
  await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(staging, 'data.img'), '1M']);
  await fs.writeFile(path.join(staging, 'meta.json'), typeof meta === 'string' ? meta : JSON.stringify(meta));
  const dir = path.join(rootDir, `vid.${uid}.elimg`);
  await fs.rename(staging, dir);
  return dir;
}

describe('the live index', () => {
  let mnt: string;
  let d: TestDaemon;
  const accessibleIds = async () => (await d.post('accessible', { client_uid: OWNER }).expect(200)).body.map((v: { volumeID: string }) => v.volumeID);

  beforeEach(async () => {
    mnt = await makeTree({ a: {}, 'nested/b': {} });
    d = await startTestDaemon(mnt);
  });
  afterEach(async () => {
    await d.stop();
    await removeTree(mnt);
  });

  it('shows a volume copied in by hand within 2 seconds, and drops one removed by hand', async () => {
    const dir = await makeVolumeByHand(path.join(mnt, 'nested', 'b'), HAND_MADE, { creatorID: OWNER, name: 'by-hand', format: 'raw' });
    await waitFor(async () => (await accessibleIds()).includes(HAND_MADE), 2000, 'the hand-made volume');
    const info = (await d.post('info', { volume_id: HAND_MADE }).expect(200)).body;
    expect(info).to.include({ name: 'by-hand', size: 1024 * 1024, format: 'raw', alg: 'cp', bus: 'virtio', private: false });
    await fse.remove(dir);
    await waitFor(async () => !(await accessibleIds()).includes(HAND_MADE), 2000, 'the removed volume to vanish');
    await d.post('info', { volume_id: HAND_MADE }).expect(404);
  });

  it('sees a new root appear when an operator writes its settings.json', async () => {
    await fs.mkdir(path.join(mnt, 'c'));
    await fs.writeFile(path.join(mnt, 'c', 'settings.json'), '{"max-volumes": 1}');
    await waitFor(async () => (await d.api.get('/api/v1.0/status')).body.roots.length === 3, 2000, 'the new root');
  });

  it('marks a volume with a corrupt meta.json as broken, keeps listing the others, never rewrites it', async () => {
    const healthy = (await d.post('create', seedCreateBody()).expect(200)).body.vid;
    const dir = await makeVolumeByHand(path.join(mnt, 'a'), HAND_MADE, '{"creatorID": "ffff');
    await waitFor(async () => (await d.api.get('/api/v1.0/status')).body.broken.length === 1, 2000, 'the broken volume');
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.broken).to.deep.equal([{ vid: HAND_MADE, dir, problem: 'meta.json is not valid JSON' }]);
    expect(await accessibleIds()).to.deep.equal([healthy]);
    const res = await d.post('info', { volume_id: HAND_MADE }).expect(409);
    expect(res.body.error).to.equal(`volume ${HAND_MADE} is broken: meta.json is not valid JSON`);
    await d.post('destroy', { volume_id: HAND_MADE }).expect(409);
    expect(await fs.readFile(path.join(dir, 'meta.json'), 'utf8')).to.equal('{"creatorID": "ffff');
  });

  it('reads a broken volume again before refusing it: a meta.json rewritten in place by hand is served as soon as it is whole', async () => {
    const vid = (await d.post('create', seedCreateBody({ name: 'edited' })).expect(200)).body.vid as string;
    const file = path.join(mnt, 'a', `vid.${vid}.elimg`, 'meta.json');
    const whole = await fs.readFile(file, 'utf8');
    // An editor or `echo >` empties the file before writing it: a watcher's reload may read it empty.
    await fs.writeFile(file, '');
    await waitFor(async () => (await d.api.get('/api/v1.0/status')).body.broken.length === 1, 2000, 'the emptied meta.json');
    await fs.writeFile(file, whole);
    // At once, before the watcher's next reload (it waits 100 ms for more changes).
    expect((await d.post('info', { volume_id: vid }).expect(200)).body).to.include({ name: 'edited' });
  });

  it('a restarted daemon serves the same volumes', async () => {
    const a = (await d.post('create', seedCreateBody({ name: 'one' })).expect(200)).body.vid;
    const b = (await d.post('create', seedCreateBody({ name: 'two', format: 'raw', private: true })).expect(200)).body.vid;
    const before = (await d.post('accessible', { client_uid: OWNER }).expect(200)).body;
    await d.stop();
    d = await startTestDaemon(mnt);
    const after = (await d.post('accessible', { client_uid: OWNER }).expect(200)).body;
    const byId = (list: Array<{ volumeID: string }>) => Object.fromEntries(list.map((v) => [v.volumeID, v]));
    expect(byId(after)).to.deep.equal(byId(before));
    expect(Object.keys(byId(after)).sort()).to.deep.equal([a, b].sort());
  });

  it('skips an invalid root with its reason and keeps serving the others', async () => {
    await d.stop();
    await fs.mkdir(path.join(mnt, 'bad'));
    await fs.writeFile(path.join(mnt, 'bad', 'settings.json'), '{"max-volumes": "many"}');
    await fs.mkdir(path.join(mnt, 'typo'));
    await fs.writeFile(path.join(mnt, 'typo', 'settings.json'), '{"max_volumes": 1}');
    await fs.mkdir(path.join(mnt, 'a', 'inner'));
    await fs.writeFile(path.join(mnt, 'a', 'inner', 'settings.json'), '{}');
    d = await startTestDaemon(mnt);
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.roots.map((r: { path: string }) => r.path)).to.deep.equal([path.join(mnt, 'a'), path.join(mnt, 'nested', 'b')]);
    expect(status.skipped).to.deep.equal([
      { path: path.join(mnt, 'bad'), reason: "settings.json is invalid: 'max-volumes' must be integer, not \"many\"" },
      {
        path: path.join(mnt, 'typo'),
        reason: "settings.json is invalid: 'max_volumes' is not a key of settings.json (its keys: max-volumes, max-volume-size, max-total-size, max-size, file-system)",
      },
    ]);
    await d.post('create', seedCreateBody()).expect(200);
  });

  it('keeps an unavailable root in its place: a settings.json below it does not become a root, and nothing is created there', async () => {
    await fs.mkdir(path.join(mnt, 'a', 'inner'));
    await fs.writeFile(path.join(mnt, 'a', 'inner', 'settings.json'), '{}');
    await d.post('create', seedCreateBody()).expect(200);
    for (const root of ['a', 'nested/b']) await fs.rename(path.join(mnt, root, 'settings.json'), path.join(mnt, root, 'settings.json.away'));
    const gone = 'unavailable: settings.json is gone (filesystem unmounted?)';
    await waitFor(async () => (await d.api.get('/api/v1.0/status')).body.skipped.length === 2, 2000, 'both roots unavailable');
    await d.daemon.ctx.index.scanAll();
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.roots).to.deep.equal([]);
    expect(status.skipped).to.deep.equal([{ path: path.join(mnt, 'a'), reason: gone }, { path: path.join(mnt, 'nested', 'b'), reason: gone }]);
    await d.post('create', seedCreateBody()).expect(507);
    expect(await fs.readdir(path.join(mnt, 'a', 'inner'))).to.deep.equal(['settings.json']);
  });

  it('answers 503 for the volumes of an unavailable root, never 404, and serves them again when it is back', async () => {
    const { vid } = (await d.post('create', seedCreateBody()).expect(200)).body;
    const root = (await fse.pathExists(path.join(mnt, 'a', `vid.${vid}.elimg`))) ? path.join(mnt, 'a') : path.join(mnt, 'nested', 'b');
    await fs.rename(path.join(root, 'settings.json'), path.join(root, 'settings.json.away'));
    await waitFor(async () => (await d.api.get('/api/v1.0/status')).body.skipped.length === 1, 2000, 'the root to be unavailable');
    const error = `volume ${vid} is on storage root ${root}, which is not available (settings.json is gone (filesystem unmounted?))`;
    for (const [endpoint, body] of [
      ['info', { volume_id: vid }],
      ['has', { volume_id: vid }],
      ['destroy', { volume_id: vid }],
      ['update', { vid, creatorID: OWNER, name: 'renamed' }],
    ] as const)
      expect((await d.post(endpoint, body).expect(503)).body, endpoint).to.include({ error, code: 'unavailable', vid });
    expect(await accessibleIds()).to.deep.equal([]);
    expect((await d.post('has', { volume_id: HAND_MADE }).expect(200)).body).to.deep.equal({ vid: HAND_MADE, has: false });
    await fs.rename(path.join(root, 'settings.json.away'), path.join(root, 'settings.json'));
    await waitFor(async () => (await d.post('info', { volume_id: vid })).status === 200, 2000, 'the volume to be served again');
    expect(await accessibleIds()).to.deep.equal([vid]);
  });

  it('says in its log when a root goes unavailable and when it is back (the real process)', async () => {
    await d.stop();
    const daemon = await spawnDaemon(['--mnt', mnt]);
    try {
      const root = path.join(mnt, 'a');
      const logged = (message: string) => daemon.lines.map((l) => JSON.parse(l)).filter((e) => e.message === message && e.path === root);
      await fs.rename(path.join(root, 'settings.json'), path.join(root, 'settings.json.away'));
      await waitFor(() => logged('root skipped').length === 1, 3000, 'the root to be said skipped');
      await fs.rename(path.join(root, 'settings.json.away'), path.join(root, 'settings.json'));
      await waitFor(() => logged('root no longer skipped').length === 1, 3000, 'the root to be said back');
      expect(logged('root no longer skipped')[0]).to.include({ level: 'info', was: 'unavailable: settings.json is gone (filesystem unmounted?)' });
    } finally {
      await stopDaemon(daemon);
      d = await startTestDaemon(mnt);
    }
  });

  it('answers 503 for the volumes of a root whose settings.json is invalid at start', async () => {
    await d.stop();
    await makeVolumeByHand(path.join(mnt, 'a'), HAND_MADE, { creatorID: OWNER, name: 'in a bad root', format: 'raw' });
    await fs.writeFile(path.join(mnt, 'a', 'settings.json'), '{"max-volumes": "many"}');
    d = await startTestDaemon(mnt);
    const res = await d.post('info', { volume_id: HAND_MADE }).expect(503);
    expect(res.body.error).to.equal(`volume ${HAND_MADE} is on storage root ${path.join(mnt, 'a')}, which is not available (settings.json is invalid: 'max-volumes' must be integer, not "many")`);
    await d.post('has', { volume_id: HAND_MADE }).expect(503);
    expect(await accessibleIds()).to.deep.equal([]);
  });

  it('hands a stale create marker that appears while it runs to the sweep, which recovers the volume', async () => {
    const { index, locks } = d.daemon.ctx;
    const reported: string[] = [];
    // What the daemon does with the report (src/daemon.ts): sweep those volumes, then read them again.
    index.onLeftovers((dirs) => {
      reported.push(...dirs);
      void sweepAgain(dirs, locks, d.daemon.log).then(() => Promise.all(dirs.map((dir) => index.reloadDir(dir))));
    });
    const { vid } = (await d.post('create', seedCreateBody({ format: 'raw', size: 0.001 })).expect(200)).body;
    const dir = path.join(mnt, 'a', `vid.${vid}.elimg`);
    const at = (await fse.pathExists(dir)) ? dir : path.join(mnt, 'nested', 'b', `vid.${vid}.elimg`);
    await fs.writeFile(path.join(at, `elemento.create.${'0'.repeat(28)}dead.ignore`), '{}');
    await waitFor(async () => (await d.post('info', { volume_id: vid })).status === 200 && (await fs.readdir(at)).length === 2, 3000, 'the volume recovered');
    expect(reported).to.include(at);
    expect((await fs.readdir(at)).sort()).to.deep.equal(['data.img', 'meta.json']);
    const before = reported.length;
    await index.scanAll();
    expect(reported.length, 'reported again by a rescan').to.equal(before);
    await d.post('update', { vid, creatorID: OWNER, name: 'after' }).expect(200);
  });

  it('counts broken volumes by their data file and upper-case volume directories against the quotas, listed broken', async () => {
    await d.stop();
    await removeTree(mnt);
    mnt = await makeTree({ a: { 'max-volumes': 2 } });
    const root = path.join(mnt, 'a');
    const broken = await makeVolumeByHand(root, HAND_MADE, '{"creatorID": ');
    await fs.truncate(path.join(broken, 'data.img'), 1e9);
    const upper = 'B'.repeat(32);
    const staged = await makeVolumeByHand(root, upper.toLowerCase(), { creatorID: OWNER, format: 'raw' });
    const upperDir = path.join(root, `vid.${upper}.elimg`);
    await fs.rename(staged, upperDir);
    d = await startTestDaemon(mnt);
    const status = (await d.api.get('/api/v1.0/status').expect(200)).body;
    expect(status.broken).to.have.deep.members([
      { vid: HAND_MADE, dir: broken, problem: 'meta.json is not valid JSON' },
      { vid: upper.toLowerCase(), dir: upperDir, problem: `the directory name is not lower case (SPEC §3): rename it vid.${upper.toLowerCase()}.elimg` },
    ]);
    expect(status.roots[0]).to.include({ volumes: 2, usedBytes: 1e9 + 1024 * 1024 });
    await d.post('create', seedCreateBody({ size: 0.001 })).expect(507);
    await d.post('info', { volume_id: upper }).expect(409);
    expect(await fs.readdir(root)).to.have.members(['settings.json', path.basename(broken), path.basename(upperDir)]);
  });

  it('accepts a meta.json whose volumeID is in upper case, and answers it in lower case', async () => {
    await makeVolumeByHand(path.join(mnt, 'a'), HAND_MADE, { volumeID: HAND_MADE.toUpperCase(), creatorID: OWNER.toUpperCase(), format: 'raw' });
    await waitFor(async () => (await accessibleIds()).includes(HAND_MADE), 2000, 'the hand-made volume');
    expect((await d.post('info', { volume_id: HAND_MADE }).expect(200)).body).to.include({ volumeID: HAND_MADE, creatorID: OWNER });
  });

  describe('symbolic links in the tree', () => {
    const LINKED = '8888888888888888888888888888888' + '8';
    let outside: string;
    const brokenOf = async (vid: string) => (await d.api.get('/api/v1.0/status').expect(200)).body.broken.find((b: { vid: string }) => b.vid === vid);

    beforeEach(async () => {
      outside = await fs.mkdtemp(path.join(mnt, '..', 'elemento-outside-'));
    });
    afterEach(async () => removeTree(outside));

    it('marks a volume directory that is a symbolic link broken, and neither writes nor locks through it', async () => {
      await makeVolumeByHand(outside, LINKED, { volumeID: LINKED, creatorID: OWNER, name: 'outside', format: 'raw', size: 1024 * 1024 });
      const target = path.join(outside, `vid.${LINKED}.elimg`);
      const before = await snapshotTree(outside);
      const dir = path.join(mnt, 'a', `vid.${LINKED}.elimg`);
      await fs.symlink(target, dir);
      await waitFor(async () => Boolean(await brokenOf(LINKED)), 2000, 'the linked volume to be listed broken');
      const problem = 'the volume directory is a symbolic link: the daemon never follows one out of its tree';
      expect(await brokenOf(LINKED)).to.deep.equal({ vid: LINKED, dir, problem });
      const update = await d.post('update', { vid: LINKED, creatorID: OWNER, name: 'renamed' }).expect(409);
      expect(update.body).to.deep.equal({ error: `volume ${LINKED} is broken: ${problem}`, code: 'conflict', vid: LINKED });
      await d.post('update/resize', { vid: LINKED, creatorID: OWNER, size: 1 }).expect(409);
      await d.post('destroy', { volume_id: LINKED }).expect(409);
      await d.api.get(`/api/v1.0/volumes/${LINKED}/data`).expect(409);
      expect(await accessibleIds()).to.deep.equal([]);
      expect(await snapshotTree(outside)).to.deep.equal(before);
      expect((await fs.lstat(dir)).isSymbolicLink()).to.equal(true);
    });

    it('never serves a data file that is a symbolic link, nor a meta.json that is one', async () => {
      const secret = path.join(outside, 'secret');
      await fs.writeFile(secret, 'not for clients');
      const dir = await makeVolumeByHand(path.join(mnt, 'a'), HAND_MADE, { creatorID: OWNER, name: 'linked data', format: 'raw', size: 15 });
      await fs.rm(path.join(dir, 'data.img'));
      await fs.symlink(secret, path.join(dir, 'data.img'));
      const other = await makeVolumeByHand(path.join(mnt, 'a'), LINKED, { creatorID: OWNER, name: 'real', format: 'raw' });
      await fs.writeFile(path.join(outside, 'meta.json'), JSON.stringify({ creatorID: OWNER, name: 'outside', format: 'raw' }));
      await fs.rm(path.join(other, 'meta.json'));
      await fs.symlink(path.join(outside, 'meta.json'), path.join(other, 'meta.json'));
      await waitFor(async () => (await d.api.get('/api/v1.0/status')).body.broken.length === 2, 2000, 'both volumes listed broken');
      expect(await brokenOf(HAND_MADE)).to.deep.equal({ vid: HAND_MADE, dir, problem: 'data.img is a symbolic link: the daemon never follows one out of its tree' });
      expect(await brokenOf(LINKED)).to.deep.equal({ vid: LINKED, dir: other, problem: 'meta.json is a symbolic link: the daemon never follows one out of its tree' });
      const res = await d.api.get(`/api/v1.0/volumes/${HAND_MADE}/data`).expect(409);
      expect(res.text).to.not.include('not for clients');
      await d.post('update', { vid: HAND_MADE, creatorID: OWNER, name: 'renamed' }).expect(409);
      expect(await fs.readFile(secret, 'utf8')).to.equal('not for clients');
    });

    it('never sweeps through a linked volume directory: the files it points to stay as they are, and no lock is taken there', async () => {
      const target = path.join(outside, 'looks-like-a-volume');
      await fs.mkdir(target);
      await fs.writeFile(path.join(target, '.disk.tmp-0123456789ab.img'), 'an operator file with a temp-like name');
      await fs.writeFile(path.join(target, 'notes.txt'), 'keep');
      const empty = path.join(outside, 'empty');
      await fs.mkdir(empty);
      const before = await snapshotTree(outside);
      await d.stop();
      await fs.symlink(target, path.join(mnt, 'a', `vid.${LINKED}.elimg`));
      await fs.symlink(empty, path.join(mnt, 'a', `vid.${'7'.repeat(32)}.elimg`));
      d = await startTestDaemon(mnt, { lockStaleMs: 2000 });
      await new Promise((r) => setTimeout(r, 2500)); // past a sweep pass
      expect(await snapshotTree(outside)).to.deep.equal(before);
      expect((await fs.lstat(path.join(mnt, 'a', `vid.${'7'.repeat(32)}.elimg`))).isSymbolicLink()).to.equal(true);
    });

    it('refuses a data file swapped for a link before the index has seen it (checked again under the lock, and before a download)', async () => {
      const { vid } = (await d.post('create', seedCreateBody({ format: 'raw', size: 0.001 })).expect(200)).body;
      const victim = path.join(outside, 'victim.img');
      await fs.writeFile(victim, 'not for clients');
      const data = path.join(mnt, 'a', `vid.${vid}.elimg`, 'data.img');
      await fs.rm(data);
      await fs.symlink(victim, data);
      // At once: the watcher has not told the index yet.
      const resize = await d.post('update/resize', { vid, creatorID: OWNER, size: 0.002 }).expect(409);
      expect(resize.body.error).to.equal(`volume ${vid} is broken: data.img is a symbolic link, which the daemon never follows`);
      expect((await d.api.get(`/api/v1.0/volumes/${vid}/data`).expect(409)).text).to.not.include('not for clients');
      expect(await fs.readFile(victim, 'utf8')).to.equal('not for clients');
    });
  });

  it('answers a volume copied into a second root as broken in both, naming them, until one copy is removed', async () => {
    const { vid } = (await d.post('create', seedCreateBody({ format: 'raw', size: 0.001 })).expect(200)).body;
    const dirs = [path.join(mnt, 'a', `vid.${vid}.elimg`), path.join(mnt, 'nested', 'b', `vid.${vid}.elimg`)];
    const original = (await fse.pathExists(dirs[0])) ? 0 : 1;
    await execa('cp', ['-a', dirs[original], dirs[1 - original]]);
    const problem = `vid ${vid} is in two roots: ${dirs[0]} and ${dirs[1]} (remove all but one)`;
    const broken = async () => (await d.api.get('/api/v1.0/status').expect(200)).body.broken;
    await waitFor(async () => (await broken()).length === 2, 2000, 'both copies listed broken');
    const expectConflict = async () => {
      expect(await broken()).to.deep.equal(dirs.map((dir) => ({ vid, dir, problem })));
      for (let i = 0; i < 3; i++) {
        const info = await d.post('info', { volume_id: vid }).expect(409);
        expect(info.body).to.deep.equal({ error: problem, code: 'conflict', vid, dirs });
      }
      await d.post('update', { vid, creatorID: OWNER, name: 'renamed' }).expect(409);
      await d.post('destroy', { volume_id: vid }).expect(409);
      expect(await accessibleIds()).to.deep.equal([]);
      const usage = (await d.api.get('/api/v1.0/status')).body.roots.map((r: { volumes: number }) => r.volumes);
      expect(usage).to.deep.equal([1, 1]);
    };
    await expectConflict();
    await d.stop();
    d = await startTestDaemon(mnt);
    await expectConflict();
    for (const dir of dirs) expect(await fs.readdir(dir)).to.have.members(['data.img', 'meta.json']);
    await fse.remove(dirs[1 - original]);
    await waitFor(async () => (await d.post('info', { volume_id: vid })).status === 200, 2000, 'the remaining copy');
    expect(await broken()).to.deep.equal([]);
    await d.post('destroy', { volume_id: vid }).expect(200);
    await new Promise((r) => setTimeout(r, 300));
    await d.post('info', { volume_id: vid }).expect(404);
  });
});

