import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { expect } from 'chai';
import winston from 'winston';
import { rescanPacing } from '../../src/store/index-watch.js';
import { asyncReader } from '../../src/store/tree-reader.js';
import { directoryWatch } from '../../src/store/tree-watcher.js';
import { VolumeIndex } from '../../src/store/volume-index.js';
import { cachedListingBytes, listingCache } from '../../src/volumes/queries.js';
import { daemonPerTest } from '../helpers/daemon.js';
import { makeTree, OTHER, OWNER, removeTree, seedCreateBody, waitFor } from '../helpers/tree.js';

/**
 * What the index's own watcher (one inotify watch per directory) and the cached listing must keep
 * doing exactly as before: see hand-made changes inside a volume and in new directories near the
 * top, answer `accessible` with the very JSON `info` describes, keep unchanged records across rescans.
 */
describe('the index watcher and the cached listing', () => {
  const env = daemonPerTest();

  it('sees a hand edit of an existing volume’s meta.json, and lists the new description', async () => {
    const { vid } = (await env.d.post('create', seedCreateBody({ name: 'before' })).expect(200)).body;
    await env.d.post('accessible', { client_uid: OWNER }).expect(200);
    const file = path.join(env.mnt, 'a', `vid.${vid}.elimg`, 'meta.json');
    const meta = JSON.parse(await fs.readFile(file, 'utf8'));
    await fs.writeFile(file, JSON.stringify({ ...meta, name: 'edited by hand' }));
    await waitFor(async () => (await env.d.post('info', { volume_id: vid }).expect(200)).body.name === 'edited by hand', 2000, 'the edited name');
    const listed = (await env.d.post('accessible', { client_uid: OWNER }).expect(200)).body;
    expect(listed.map((v: { name: string }) => v.name)).to.deep.equal(['edited by hand']);
  });

  it('sees a root made later in a new directory two levels down', async () => {
    await fs.mkdir(path.join(env.mnt, 'later'));
    // The new directory is watched after the rescan its creation causes; only then the root appears in it.
    await waitFor(async () => (await env.d.api.get('/api/v1.0/status')).body.roots.length === 1, 2000, 'status');
    await new Promise((r) => setTimeout(r, 600));
    await fs.mkdir(path.join(env.mnt, 'later', 'pool'));
    await fs.writeFile(path.join(env.mnt, 'later', 'pool', 'settings.json'), '{}');
    await waitFor(async () => (await env.d.api.get('/api/v1.0/status')).body.roots.length === 2, 2000, 'the new root');
  });

  it('answers accessible with each volume as info describes it, plus own, as JSON in UTF-8', async () => {
    const mine = (await env.d.post('create', seedCreateBody({ name: 'é mine', labels: { tier: 'ü' } })).expect(200)).body.vid;
    const theirs = (await env.d.post('create', seedCreateBody({ creatorID: OTHER, name: 'theirs', format: 'raw' })).expect(200)).body.vid;
    const res = await env.d.post('accessible', { client_uid: OWNER }).expect(200);
    expect(res.headers['content-type']).to.equal('application/json; charset=utf-8');
    expect(Number(res.headers['content-length'])).to.equal(Buffer.byteLength(JSON.stringify(res.body)));
    const info = async (vid: string) => (await env.d.post('info', { volume_id: vid }).expect(200)).body;
    const byId = Object.fromEntries(res.body.map((v: { volumeID: string }) => [v.volumeID, v]));
    expect(byId[mine]).to.deep.equal({ ...(await info(mine)), own: true });
    expect(byId[theirs]).to.deep.equal({ ...(await info(theirs)), own: false });
    const none = await env.d.post('accessible', { client_uid: OWNER, labels: { tier: 'none' } }).expect(200);
    expect(none.body).to.deep.equal([]);
  });

  it('keeps the records of unchanged volumes across a full rescan, and replaces a changed one', async () => {
    const a = (await env.d.post('create', seedCreateBody({ name: 'same' })).expect(200)).body.vid;
    const b = (await env.d.post('create', seedCreateBody({ name: 'changes' })).expect(200)).body.vid;
    const { index } = env.d.daemon.ctx;
    const [beforeA, beforeB] = [index.get(a), index.get(b)];
    await env.d.post('update', { vid: b, creatorID: OWNER, name: 'changed' }).expect(200);
    await index.scanAll();
    expect(index.get(a)).to.equal(beforeA);
    expect(index.get(b)).to.not.equal(beforeB);
    expect(index.get(b)!.meta!.name).to.equal('changed');
  });
});

describe('the cached listings of many clients', () => {
  const env = daemonPerTest();
  const max = listingCache.maxBytes;
  afterEach(() => (listingCache.maxBytes = max));

  it('hold at most their budget together (each client seeing 50,000 public volumes has a 20 MB listing), and answer as before', async () => {
    for (let i = 0; i < 40; i++) await env.d.post('create', seedCreateBody({ name: `public ${i}`, format: 'raw', size: 0.001 })).expect(200);
    const clients = Array.from({ length: 30 }, (_, i) => `${'c'.repeat(30)}${String(i).padStart(2, '0')}`);
    const first = (await env.d.post('accessible', { client_uid: clients[0] }).expect(200)).text;
    listingCache.maxBytes = 4 * first.length;
    const { index } = env.d.daemon.ctx;
    for (const client of clients) {
      const listed = (await env.d.post('accessible', { client_uid: client }).expect(200)).text;
      expect(listed).to.equal(first);
      expect(cachedListingBytes(index)).to.be.at.most(4 * first.length);
    }
    // The listing just made is kept even when it alone is over the budget.
    listingCache.maxBytes = 1;
    expect((await env.d.post('accessible', { client_uid: OTHER }).expect(200)).text).to.equal(first);
    expect(cachedListingBytes(index)).to.equal(first.length);
    expect((await env.d.post('accessible', { client_uid: OTHER }).expect(200)).text).to.equal(first);
  });
});

describe('a full rescan while volumes are created and destroyed', () => {
  // No watcher: what the index answers after the rescan is what the rescan and the operations left.
  const env = daemonPerTest({ a: {} }, { watch: false });

  it('keeps what creates and destroys did while it ran (a rescan merges, it does not replace)', async () => {
    const create = async () => (await env.d.post('create', seedCreateBody({ format: 'raw', size: 0.001 })).expect(200)).body.vid as string;
    const [slow, doomed] = [await create(), await create()];
    // The rescan is held inside its read of one volume, after it has listed the root, while the others act.
    const readdir = asyncReader.readdir;
    let reached!: () => void;
    const inside = new Promise<void>((r) => (reached = r));
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    asyncReader.readdir = async (dir) => {
      if (dir.endsWith(`vid.${slow}.elimg`)) {
        reached();
        await held;
      }
      return readdir(dir);
    };
    try {
      const scan = env.d.daemon.ctx.index.scanAll();
      await inside;
      const created = await create();
      await env.d.post('destroy', { volume_id: doomed }).expect(200);
      release();
      await scan;
      await env.d.post('info', { volume_id: created }).expect(200);
      await env.d.post('info', { volume_id: doomed }).expect(404);
      await env.d.post('info', { volume_id: slow }).expect(200);
    } finally {
      asyncReader.readdir = readdir;
      release();
    }
  });
});

describe('a host out of inotify watches', () => {
  const VOLUMES = 1000;
  let mnt: string;
  let index: VolumeIndex | null = null;
  const watch = directoryWatch.watch;
  const fallback = rescanPacing.fallbackMs;
  beforeEach(async () => (mnt = await makeTree({ a: {} })));
  afterEach(async () => {
    directoryWatch.watch = watch;
    rescanPacing.fallbackMs = fallback;
    await index?.close();
    await removeTree(mnt);
  });

  it('says so once (not once per directory), keeps answering, and sees hand edits through rescans even with rescans off', async () => {
    const uids = Array.from({ length: VOLUMES }, (_, i) => i.toString(16).padStart(32, '0'));
    for (const uid of uids) {
      const dir = path.join(mnt, 'a', `vid.${uid}.elimg`);
      await fs.mkdir(dir);
      await fs.writeFile(path.join(dir, 'meta.json'), JSON.stringify({ volumeID: uid, creatorID: OWNER, name: 'v', size: 1048576, format: 'raw' }));
      await fs.writeFile(path.join(dir, 'data.img'), Buffer.alloc(0));
    }
    // As fs.watch answers once max_user_watches is reached: the root and 100 volumes get a watch, the rest ENOSPC.
    let granted = 0;
    directoryWatch.watch = (dir, listener) => {
      if (++granted > 101) throw Object.assign(new Error(`ENOSPC: System limit for number of file watchers reached, watch '${dir}'`), { code: 'ENOSPC' });
      return watch(dir, listener);
    };
    rescanPacing.fallbackMs = 300;
    const lines: Array<Record<string, unknown>> = [];
    const log = winston.createLogger({
      level: 'debug',
      format: winston.format.json(),
      transports: [new winston.transports.Stream({ stream: new Writable({ write: (chunk, _enc, done) => (lines.push(JSON.parse(String(chunk))), done()) }) })],
    });
    index = new VolumeIndex(mnt, log);
    await index.scanAll({ beforeServing: true });
    await index.watch(0);
    expect(index.size).to.equal(VOLUMES);
    // A volume past the limit, edited by hand: only a rescan can see it.
    const last = uids.at(-1)!;
    const file = path.join(mnt, 'a', `vid.${last}.elimg`, 'meta.json');
    await fs.writeFile(file, JSON.stringify({ ...JSON.parse(await fs.readFile(file, 'utf8')), name: 'edited by hand' }));
    await waitFor(async () => index!.get(last)?.meta?.name === 'edited by hand', 10_000, 'the edit seen by a fallback rescan');
    // Each rescan asks again for the watches refused: still refused, and not logged again.
    await waitFor(async () => granted > 2 * VOLUMES, 10_000, 'a second rescan');
    expect(lines.filter((l) => l.level === 'error')).to.deep.equal([]);
    const warnings = lines.filter((l) => l.level === 'warn');
    expect(warnings).to.have.length(1);
    expect(warnings[0].message).to.match(/inotify limit is reached \(ENOSPC\).*raise fs\.inotify\.max_user_watches/);
    expect(warnings[0].unwatchedVolumeDirs).to.equal(VOLUMES - 100);
  });
});
