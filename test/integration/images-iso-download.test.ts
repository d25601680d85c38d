import { promises as fs } from 'node:fs';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { daemonPerTest } from '../helpers/daemon.js';
import { startImageServer } from '../helpers/image-server.js';
import { OTHER, OWNER, removeTree, snapshotTree } from '../helpers/tree.js';

const TOOL_BODY = {
  alg: 'cp', clonable: true, creatorID: OWNER, isotype: 'tool', name: 'virtio-win-driver', os_family: 'windows',
  os_flavour: null, os_version: null, private: false, tool_scope: 'drivers', tool_version: '2021',
};
const OS_BODY = {
  creatorID: OWNER, name: 'dabian-iso', private: false, clonable: true, alg: 'cp', isotype: 'os_generic',
  os_family: 'linux', os_flavour: 'debian', os_version: '12.10', size: 15,
};

describe('ISO volumes and downloads (genisoimage, local HTTP server)', function () {
  this.timeout(60_000);
  let src: string;
  let server: Awaited<ReturnType<typeof startImageServer>>;
  const env = daemonPerTest();
  const volDir = (vid: string) => path.join(env.mnt, 'a', `vid.${vid}.elimg`);

  before(async () => {
    src = await fs.mkdtemp(path.join(os.tmpdir(), 'elemento-iso-'));
    await fs.mkdir(path.join(src, 'content'));
    await fs.writeFile(path.join(src, 'content', 'README.TXT'), 'drivers\n');
    await execa('genisoimage', ['-quiet', '-V', 'VIRTIO', '-J', '-R', '-o', path.join(src, 'tools.iso'), path.join(src, 'content')]);
    await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(src, 'not-an.iso'), '1M']);
    server = await startImageServer(src);
  });
  after(async () => {
    await server.close();
    await removeTree(src);
  });

  it('iso/create (tool) from a URL answers the seed shape and writes isoinfo.json', async () => {
    const res = await env.d.post('iso/create', { ...TOOL_BODY, url: server.url('tools.iso') }).expect(200);
    const { vid } = res.body;
    expect(res.body).to.deep.equal({ ...TOOL_BODY, vid });
    const files = (await fs.readdir(volDir(vid))).sort();
    expect(files).to.deep.equal(['data.iso', 'isoinfo.json', 'meta.json']);
    expect(await fs.readFile(path.join(volDir(vid), 'data.iso'))).to.deep.equal(await fs.readFile(path.join(src, 'tools.iso')));
    expect(JSON.parse(await fs.readFile(path.join(volDir(vid), 'isoinfo.json'), 'utf8'))).to.deep.equal({
      isotype: 'tool', os_family: 'windows', scope: 'drivers', version: '2021',
    });
    const { body: info } = await env.d.post('info', { volume_id: vid }).expect(200);
    const size = (await fs.stat(path.join(src, 'tools.iso'))).size;
    expect(info).to.include({ format: 'iso', iso_type: 'tool', readonly: true, bootable: false, size, bus: 'sata' });
  });

  it('iso/create (os_generic) by upload: bootable, read-only, iso_type in accessible', async () => {
    const res = await env.d.api
      .post('/api/v1.0/iso/create')
      .field('fields', JSON.stringify(OS_BODY))
      .attach('file', path.join(src, 'tools.iso'))
      .expect(200);
    const { vid } = res.body;
    const { size: _size, ...echoed } = OS_BODY;
    expect(res.body).to.deep.equal({ ...echoed, tool_scope: null, tool_version: null, vid });
    expect(JSON.parse(await fs.readFile(path.join(volDir(vid), 'isoinfo.json'), 'utf8'))).to.deep.equal({
      isotype: 'os_generic', os_family: 'linux', os_flavour: 'debian', os_version: '12.10',
    });
    const { body: list } = await env.d.post('accessible', { client_uid: OWNER }).expect(200);
    expect(list).to.have.length(1);
    expect(list[0]).to.include({ volumeID: vid, format: 'iso', iso_type: 'os_generic', bootable: true, readonly: true, shareable: false });
  });

  it('keeps an ISO volume read-only: update refuses readonly false, convert and resize refuse it', async () => {
    const { vid } = (await env.d.post('iso/create', { ...TOOL_BODY, url: server.url('tools.iso') }).expect(200)).body;
    const res = await env.d.post('update', { vid, creatorID: OWNER, readonly: false }).expect(400);
    expect(res.body).to.deep.equal({ error: `volume ${vid} is an ISO image, which is read-only`, code: 'bad_request', field: 'readonly' });
    await env.d.post('update', { vid, creatorID: OWNER, name: 'tools-2021' }).expect(200);
    const before = await snapshotTree(env.mnt);
    for (const [endpoint, body, action] of [['update/convert', { format: 'qcow2' }, 'converted'], ['update/resize', { size: 1 }, 'resized']] as const) {
      const refused = await env.d.post(endpoint, { vid, creatorID: OWNER, ...body }).expect(400);
      expect(refused.body).to.deep.equal({ error: `a volume of format iso cannot be ${action}`, code: 'bad_request', field: 'vid' });
    }
    expect(await snapshotTree(env.mnt)).to.deep.equal(before);
  });

  it('iso/create by upload with one part per field (curl -F): text values stay text where the schema takes text', async () => {
    let req = env.d.api.post('/api/v1.0/iso/create');
    for (const [key, value] of Object.entries({ creatorID: OWNER, name: '2024', isotype: 'os_generic', os_family: 'linux', os_version: '12.10', private: 'true', size: '15' }))
      req = req.field(key, value);
    const res = await req.attach('file', path.join(src, 'tools.iso')).expect(200);
    expect(res.body).to.include({ name: '2024', os_version: '12.10', private: true });
    expect(JSON.parse(await fs.readFile(path.join(volDir(res.body.vid), 'isoinfo.json'), 'utf8'))).to.include({ os_version: '12.10' });
    // The query of a raw-body upload likewise.
    const query = new URLSearchParams({ creatorID: OWNER, name: '2025', isotype: 'tool', os_family: 'windows', tool_version: '2021', clonable: 'false' });
    const raw = await env.d.api.post(`/api/v1.0/iso/create?${query}`).set('Content-Type', 'application/octet-stream').send(await fs.readFile(path.join(src, 'tools.iso'))).expect(200);
    expect(raw.body).to.include({ name: '2025', tool_version: '2021', clonable: false });
  });

  it('refuses content that is not an ISO 9660 image, leaving nothing', async () => {
    const res = await env.d.post('iso/create', { ...TOOL_BODY, url: server.url('not-an.iso') }).expect(400);
    expect(res.body).to.deep.equal({ error: 'the content is not an ISO 9660 image (no CD001 signature in its first volume descriptor)', code: 'bad_request' });
    expect((await fs.readdir(path.join(env.mnt, 'a'))).filter((n) => n.startsWith('vid.'))).to.deep.equal([]);
  });

  it('iso/create without url or upload is a 400 naming url', async () => {
    const res = await env.d.post('iso/create', TOOL_BODY).expect(400);
    expect(res.body).to.deep.equal({ error: "request was badly formatted. 'url'", code: 'bad_request', field: 'url' });
  });

  it('downloads a volume whole and by Range, respecting visibility', async () => {
    const { vid } = (await env.d.post('iso/create', { ...TOOL_BODY, private: true, url: server.url('tools.iso') }).expect(200)).body;
    const iso = await fs.readFile(path.join(src, 'tools.iso'));
    const whole = await env.d.api.get(`/api/v1.0/volumes/${vid}/data?client_uid=${OWNER}`).buffer(true).parse(binary).expect(200);
    expect(whole.headers['accept-ranges']).to.equal('bytes');
    expect(whole.headers['content-length']).to.equal(String(iso.length));
    expect(Buffer.compare(whole.body as Buffer, iso)).to.equal(0);
    const part = await env.d.api.get(`/api/v1.0/volumes/${vid}/data`).set('Range', 'bytes=32768-32775').buffer(true).parse(binary).expect(206);
    expect(part.headers['content-range']).to.equal(`bytes 32768-32775/${iso.length}`);
    expect(Buffer.compare(part.body as Buffer, iso.subarray(32768, 32776))).to.equal(0);
    const hidden = await env.d.api.get(`/api/v1.0/volumes/${vid}/data?client_uid=${OTHER}`).expect(404);
    expect(hidden.body).to.deep.equal({ error: `volume ${vid} does not exist`, code: 'not_found', vid });
  });

  it('answers a range past the end 416 with the size, a changed image 412, as JSON errors that do not look like an image', async () => {
    const { vid } = (await env.d.post('iso/create', { ...TOOL_BODY, url: server.url('tools.iso') }).expect(200)).body;
    const size = (await fs.stat(path.join(src, 'tools.iso'))).size;
    const url = `/api/v1.0/volumes/${vid}/data`;
    const past = await env.d.api.get(url).set('Range', `bytes=${size}-`).expect(416);
    expect(past.headers['content-range']).to.equal(`bytes */${size}`);
    expect(past.headers['content-type']).to.match(/^application\/json/);
    expect(past.headers['content-disposition']).to.equal(undefined);
    expect(past.body).to.deep.equal({ error: `the range asked starts past the end of volume ${vid}'s image (${size} bytes)`, code: 'range_not_satisfiable', size });
    const changed = await env.d.api.get(url).set('If-Match', '"not-this-one"').expect(412);
    expect(changed.headers['content-type']).to.match(/^application\/json/);
    expect(changed.body.code).to.equal('precondition_failed');
    // curl -C - on a complete copy: nothing is written into the user's file.
    const copy = path.join(src, 'copy.iso');
    await fs.copyFile(path.join(src, 'tools.iso'), copy);
    const listener = env.d.app.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    try {
      await execa('curl', ['-s', '-C', '-', '-o', copy, `http://127.0.0.1:${(listener.address() as AddressInfo).port}${url}`], { reject: false });
    } finally {
      listener.close();
    }
    expect((await fs.stat(copy)).size).to.equal(size);
  });
});

/** supertest parser that keeps a binary body as one Buffer. */
function binary(res: unknown, cb: (err: Error | null, body: Buffer) => void) {
  const stream = res as import('node:stream').Readable;
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  stream.on('end', () => cb(null, Buffer.concat(chunks)));
}
