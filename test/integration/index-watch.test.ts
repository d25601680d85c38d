import { promises as fs } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { asyncReader } from '../../src/store/tree-reader.js';
import { daemonPerTest } from '../helpers/daemon.js';
import { OTHER, OWNER, seedCreateBody, waitFor } from '../helpers/tree.js';

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
