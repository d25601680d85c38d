import { once } from 'node:events';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { daemonPerTest } from '../helpers/daemon.js';
import { pausedDownload as pausedDownloadOf } from '../helpers/download.js';
import { writePattern } from '../helpers/images.js';
import { OWNER, seedCreateBody, waitFor } from '../helpers/tree.js';

const MB = 1024 * 1024;

/** Requests racing on one volume through one daemon: each ends whole, or refused with a 409 naming why. */
describe('concurrent requests on one volume', function () {
  this.timeout(120_000);
  const t = daemonPerTest();

  const pausedDownload = (vid: string) => pausedDownloadOf(t.d.app, vid);

  it('a download under way refuses a snapshot or a resize, which would mix new qcow2 tables into the old bytes', async () => {
    const { vid } = (await t.d.post('create', seedCreateBody({ format: 'qcow2', size: 1 })).expect(200)).body;
    const data = path.join(t.mnt, 'a', `vid.${vid}.elimg`, 'data.qcow2');
    for (let gb = 0; gb < 4; gb++) await writePattern(data, 'qcow2', 0x11 + gb, gb * 250 * MB, 16 * MB);
    const before = await fs.readFile(data);

    const download = await pausedDownload(vid);
    expect(download.status).to.equal(200);
    const refused = `volume ${vid} is being downloaded (1 download(s)) and cannot be`;
    const snapshot = await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: 's1' }).expect(409);
    expect(snapshot.body).to.deep.equal({ error: `${refused} snapshotted until they end: its image would change under them`, code: 'conflict', vid });
    const resize = await t.d.post('update/resize', { vid, creatorID: OWNER, size: 3 }).expect(409);
    expect(resize.body.error).to.equal(`${refused} resized until they end: its image would change under them`);

    const got = await download.resume();
    expect(got.equals(before)).to.equal(true);
    expect(await fs.readFile(data)).to.deep.equal(before);
    await waitFor(async () => (await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: 's1' })).status === 200, 5000, 'the snapshot once the download ended');
    await t.d.post('update/resize', { vid, creatorID: OWNER, size: 3 }).expect(200);
    await execa('qemu-img', ['check', '-q', data]);
  });

  it('a download whose client left while the volume was being looked up does not stay counted: snapshots and resizes are allowed after', async () => {
    const { vid } = (await t.d.post('create', seedCreateBody({ format: 'qcow2', size: 1 })).expect(200)).body;
    // The lookup reads the disk (a stat, the volume directory again): a client may leave meanwhile.
    const index = t.d.daemon.ctx.index;
    const reloadDir = index.reloadDir.bind(index);
    let gone = () => {};
    const left = new Promise<void>((resolve) => (gone = resolve));
    index.reloadDir = async (dir: string) => {
      await left;
      return reloadDir(dir);
    };
    const listener = t.d.app.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const socket = net.connect((listener.address() as AddressInfo).port, '127.0.0.1');
    await once(socket, 'connect');
    socket.on('error', () => undefined);
    socket.write(`GET /api/v1.0/volumes/${vid}/data HTTP/1.1\r\nHost: x\r\n\r\n`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    socket.resetAndDestroy();
    await new Promise((resolve) => setTimeout(resolve, 200));
    gone();
    await new Promise((resolve) => setTimeout(resolve, 200));
    index.reloadDir = reloadDir;
    listener.close();

    await t.d.post('snapshot/create', { vid, creatorID: OWNER, name: 's1' }).expect(200);
    await t.d.post('update/resize', { vid, creatorID: OWNER, size: 2 }).expect(200);
  });

  it('a volume a VM may write is not downloaded (its bytes would move mid-stream), and is not attached writable while a download runs', async () => {
    const { vid } = (await t.d.post('create', seedCreateBody({ format: 'raw', size: 0.1 })).expect(200)).body;
    const dir = path.join(t.mnt, 'a', `vid.${vid}.elimg`);
    await fs.writeFile(path.join(dir, 'data.img'), Buffer.alloc(64 * MB, 0x42));
    const attach = { volume_id: vid, client_uid: OWNER, node: 'node-1', vm_id: 7 };

    const download = await pausedDownload(vid);
    const busy = await t.d.post('attach', attach).expect(409);
    expect(busy.body).to.deep.equal({ error: `volume ${vid} is being downloaded (1 download(s)) and cannot be attached writable until they end: its image would change under them`, code: 'conflict', vid });
    expect((await download.resume()).equals(await fs.readFile(path.join(dir, 'data.img')))).to.equal(true);

    await waitFor(async () => (await t.d.post('attach', attach)).status === 200, 5000, 'the attach once the download ended');
    const refused = await t.d.api.get(`/api/v1.0/volumes/${vid}/data`).expect(409);
    expect(refused.body).to.deep.equal({ error: `volume ${vid} is attached to a VM and cannot be downloaded while writable`, code: 'conflict', vid });
    expect(refused.headers['content-disposition']).to.equal(undefined);
    // Read-only, it holds still under the VM: the download goes on.
    await t.d.post('detach', attach).expect(200);
    await t.d.post('update', { vid, creatorID: OWNER, readonly: true }).expect(200);
    await t.d.post('attach', attach).expect(200);
    await t.d.api.get(`/api/v1.0/volumes/${vid}/data`).expect(200);
  });
});

describe('an operator editing a volume by hand while the daemon has not seen it yet', () => {
  // No watcher: the index keeps what it read, as it does for a moment after any hand edit.
  const t = daemonPerTest({ a: {} }, { watch: false });

  it('meta.json broken or gone under an operation answers 409 naming why, not 500', async () => {
    const { vid } = (await t.d.post('create', seedCreateBody({ format: 'raw', size: 0.1 })).expect(200)).body;
    const meta = path.join(t.mnt, 'a', `vid.${vid}.elimg`, 'meta.json');
    await fs.writeFile(meta, '{bad');
    const broken = { error: `volume ${vid} is broken: meta.json is not valid JSON`, code: 'conflict', vid };
    expect((await t.d.post('update', { vid, creatorID: OWNER, name: 'z' }).expect(409)).body).to.deep.equal(broken);
    expect((await t.d.post('destroy', { volume_id: vid }).expect(409)).body).to.deep.equal(broken);
    expect((await t.d.api.get(`/api/v1.0/volumes/${vid}/data`).expect(409)).body).to.deep.equal(broken);
    const other = (await t.d.post('create', seedCreateBody({ format: 'raw', size: 0.1 })).expect(200)).body.vid;
    await fs.rm(path.join(t.mnt, 'a', `vid.${other}.elimg`, 'meta.json'));
    expect((await t.d.post('clone', { volume_id: other, creatorID: OWNER }).expect(409)).body.error).to.equal(`volume ${other} is broken: meta.json is missing`);
    // Gone altogether (removed by hand, or destroyed since a download looked it up): unknown, not broken.
    await fs.rm(path.join(t.mnt, 'a', `vid.${other}.elimg`), { recursive: true });
    const gone = { error: `volume ${other} does not exist`, code: 'not_found', vid: other };
    expect((await t.d.api.get(`/api/v1.0/volumes/${other}/data`).expect(404)).body).to.deep.equal(gone);
    expect((await t.d.post('update', { vid: other, creatorID: OWNER, name: 'z' }).expect(404)).body).to.deep.equal(gone);
  });
});
